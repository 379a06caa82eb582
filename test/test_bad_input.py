"""Bad input, exhaustively: hundreds of malformed frames, prompts and requests, systematically made.

Three layers, each where it decides:
  * conversions (no ROS graph, fast): every malformed Image / CompressedImage / mask / stamp /
    prompt field raises ConversionError or PromptError whose text names the problem;
  * the engine session (fake backend): requests that only the session can judge (bounds, ids,
    stamps in memory, capacity, frame size) are refused and change nothing;
  * the real node over DDS (a few nodes from fixtures, many requests to each): every service
    answers success=false with a message naming the problem, every bad frame is dropped, counted
    and warned about, and afterwards the node still answers and the objects tracked before are
    still tracked with the same ids, labels and masks.

`test_the_battery_is_big_enough` counts the cases by category (run with -s to see the table).
"""

from __future__ import annotations

import array
import itertools
import re
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from seg_ros.conversions import (
    ConversionError,
    build_prompt,
    compressed_to_rgb,
    image_to_rgb,
    mask_from_image,
    numpy_to_image,
    stamp_to_ns,
)
from seg_ros.engine import Prompt, SegmentationSession
from seg_ros.engine.backends.fake import FakeBackend, FakeConfig
from seg_ros.engine.errors import (
    CapacityError,
    FrameError,
    NoFrameError,
    PromptError,
    UnknownObjectError,
    UnsupportedPromptError,
)
from seg_ros.testing.graph import (
    NUT_HEIGHT,
    NUT_WIDTH,
    NodeUnderTest,
    RosGraph,
    good_frame,
    start_node_under_test,
    wait_for,
)

W, H = NUT_WIDTH, NUT_HEIGHT
NAN, INF = float("nan"), float("inf")
BIG_TEXT = "x" * 10_000  # 10 kB
#: Bytes per pixel of the colour encodings the node takes.
COLOR_BPP = {"rgb8": 3, "bgr8": 3, "8UC3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8UC1": 1}
UNKNOWN_ENCODINGS = (
    "",
    "rgb",
    "RGB8",
    "bgr16",
    "rgb16",
    "yuv422",
    "bayer_rggb8",
    "jpeg",
    "rgb8 ",
    "8UC4",
    "64FC1",
    "e" * 1000,
)
DEPTH_ENCODINGS = ("mono16", "16UC1", "32FC1")
#: Ids that name no object: not tracked, or not written the way the node writes ids.
BAD_IDS = ("99", "01", "-1", " 1", "1 ", "+1", "abc", "9" * 5000, "1.0", "0x1", "１", "0", "65536")

#: Every case of the battery, by category (filled while the module is collected).
CATEGORIES: Counter[str] = Counter()


def cases(category: str, items: list[Any]) -> list[Any]:
    CATEGORIES[category] += len(items)
    return items


# ------------------------------------------------------------------------------ message makers
def raw_image(
    encoding: str,
    height: int = H,
    width: int = W,
    *,
    step: int | None = None,
    data_len: int | None = None,
    stamp: Time | None = None,
) -> Image:
    """An Image whose fields are exactly as given (nothing is checked): data is zero bytes."""
    bpp = COLOR_BPP.get(encoding, 3)
    step = width * bpp if step is None else step
    size = height * step if data_len is None else data_len
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.header = Header(stamp=stamp or Time(sec=500), frame_id="cam")
    msg.data = array.array("B", bytes(size))
    return msg


def mono(arr: np.ndarray, encoding: str = "mono8") -> Image:
    return numpy_to_image(arr, encoding)


def pts(*xy: tuple[float, float]) -> list[Point]:
    return [Point(x=float(x), y=float(y)) for x, y in xy]


def roi(x: int, y: int, w: int, h: int) -> RegionOfInterest:
    return RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)


# Image defects, each a function of (encoding, bytes per pixel) -> (message, expected text).
def _defects() -> dict[str, Callable[[str, int], tuple[Image, str]]]:
    return {
        "data one byte short": lambda e, b: (
            raw_image(e, data_len=H * W * b - 1),
            "bytes but height * step",
        ),
        "data one byte long": lambda e, b: (
            raw_image(e, data_len=H * W * b + 1),
            "bytes but height * step",
        ),
        "data empty": lambda e, b: (raw_image(e, data_len=0), "bytes but height * step"),
        "data one row short": lambda e, b: (
            raw_image(e, data_len=(H - 1) * W * b),
            "bytes but height * step",
        ),
        "step below width*bpp": lambda e, b: (
            raw_image(e, step=W * b - 1),
            "is less than width * bytes per pixel",
        ),
        "step zero": lambda e, b: (raw_image(e, step=0), "step 0 is less than"),
        "height zero": lambda e, b: (raw_image(e, height=0), "is empty"),
        "width zero": lambda e, b: (raw_image(e, width=0), "is empty"),
        "width 1e6, tiny data": lambda e, b: (
            raw_image(e, width=10**6, data_len=100),
            "exceeds the 16384-pixel limit",
        ),
        "height 1e6, tiny data": lambda e, b: (
            raw_image(e, height=10**6, data_len=100),
            "exceeds the 16384-pixel limit",
        ),
        "width 2^32-1": lambda e, b: (
            raw_image(e, width=2**32 - 1, step=2**32 - 1, data_len=10),
            "exceeds the 16384-pixel limit",
        ),
        "step 2^32-1, tiny data": lambda e, b: (
            raw_image(e, step=2**32 - 1, data_len=10),
            "bytes but height * step",
        ),
        "padded step, tight data": lambda e, b: (
            raw_image(e, step=W * b + 8, data_len=H * W * b),
            "bytes but height * step",
        ),
    }


DEFECTS = _defects()

# ================================================================================ conversions
IMAGE_CASES = cases(
    "image: malformed layout (7 colour encodings x 13 defects)",
    [
        pytest.param(enc, name, id=f"{enc}-{name}")
        for enc, name in itertools.product(COLOR_BPP, DEFECTS)
    ],
)


@pytest.mark.parametrize(("encoding", "defect"), IMAGE_CASES)
def test_malformed_image_layout_is_refused_with_the_reason(encoding: str, defect: str) -> None:
    msg, expected = DEFECTS[defect](encoding, COLOR_BPP[encoding])
    with pytest.raises(ConversionError, match=re.escape(expected)):
        image_to_rgb(msg)


@pytest.mark.parametrize(
    "encoding",
    cases("image: unknown encoding", [pytest.param(e, id=repr(e)[:20]) for e in UNKNOWN_ENCODINGS]),
)
def test_unknown_encoding_is_refused_and_named(encoding: str) -> None:
    with pytest.raises(ConversionError, match="unsupported image encoding") as info:
        image_to_rgb(raw_image(encoding))
    assert "rgb8" in str(info.value)  # the answer lists what is supported


@pytest.mark.parametrize(
    "encoding", cases("image: depth encoding on colour", list(DEPTH_ENCODINGS))
)
def test_depth_encoding_is_not_a_colour_stream(encoding: str) -> None:
    with pytest.raises(ConversionError, match="not a colour image"):
        image_to_rgb(raw_image(encoding, step=W * (4 if encoding == "32FC1" else 2)))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` and whose pixel data is a stub."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _encoded(ext: str, height: int = H, width: int = W) -> bytes:
    rng = np.random.default_rng(3)
    ok, buf = cv2.imencode(ext, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    assert ok
    return bytes(buf.tobytes())


JPEG, PNG = _encoded(".jpg"), _encoded(".png")
PNG16 = bytes(cv2.imencode(".png", np.full((H, W), 4500, np.uint16))[1].tobytes())
COMPRESSED_CASES = cases(
    "compressed: corrupt bytes / wrong format",
    [
        pytest.param("jpeg", b"", "no data", id="empty"),
        pytest.param("jpeg", b"\0", "cannot decode", id="one zero byte"),
        pytest.param("jpeg", b"hello, camera", "cannot decode", id="text bytes"),
        pytest.param(
            "jpeg", np.random.default_rng(1).bytes(5000), "cannot decode", id="random bytes"
        ),
        pytest.param("jpeg", JPEG[:2], "cannot decode", id="jpeg SOI only"),
        pytest.param("jpeg", JPEG[:20], "cannot decode", id="jpeg cut at 20 bytes"),
        pytest.param("jpeg", JPEG[: len(JPEG) // 2], "cannot decode", id="jpeg cut in half"),
        pytest.param("jpeg", b"\0" * 16 + JPEG, "cannot decode", id="jpeg behind junk"),
        pytest.param("png", PNG[:8], "cannot decode", id="png signature only"),
        pytest.param("png", PNG[:40], "cannot decode", id="png cut at 40 bytes"),
        pytest.param("png", PNG[: len(PNG) // 2], "cannot decode", id="png cut in half"),
        pytest.param("png", PNG[:30] + b"\xff" * 8 + PNG[38:], "cannot decode", id="png bad crc"),
        pytest.param("png", _png_header_only(20_000, 20_000), "cannot decode", id="png 20k stub"),
        # A decompression-bomb header: OpenCV refuses it with its own exception type.
        pytest.param("png", _png_header_only(60_000, 60_000), "cannot decode", id="png 60k bomb"),
        pytest.param("compressedDepth", PNG, "compressed depth", id="compressedDepth format"),
        pytest.param("16UC1; compressedDepth png", PNG, "compressed depth", id="depth png format"),
        pytest.param("32FC1; compressedDepth", PNG, "compressed depth", id="depth float format"),
        # A depth image through the plain compressed transport: a 16-bit png that would decode
        # as a grey colour picture; its format names the depth source encoding.
        *[
            pytest.param(f"{enc}; png compressed", PNG16, "not a colour image", id=f"{enc} png")
            for enc in DEPTH_ENCODINGS
        ],
    ],
)


@pytest.mark.parametrize(("fmt", "data", "expected"), COMPRESSED_CASES)
def test_corrupt_compressed_image_is_refused_with_the_reason(
    fmt: str, data: bytes, expected: str
) -> None:
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    with pytest.raises(ConversionError, match=re.escape(expected)):
        compressed_to_rgb(msg)


@pytest.mark.parametrize(
    "fmt",
    cases(
        "compressed: odd format string, valid data",
        ["", "bogus", "png", "tiff", "rgb8; jpeg compressed bgr8", "x" * 300],
    ),
)
def test_format_string_is_advisory_and_content_decides(fmt: str) -> None:
    """image_transport writes many format strings ("rgb8; jpeg compressed bgr8", ...): a jpeg
    with an odd one still decodes to the right size (decoding goes by the bytes)."""
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", JPEG)
    assert compressed_to_rgb(msg).shape == (H, W, 3)


MASK_CASES = cases(
    "mask message: wrong encoding / layout",
    [
        pytest.param(Image(), "image is empty", id="empty"),
        pytest.param(mono(np.ones((H, W, 3), np.uint8), "rgb8"), "single-channel", id="rgb8"),
        pytest.param(mono(np.ones((H, W, 3), np.uint8), "bgr8"), "single-channel", id="bgr8"),
        pytest.param(mono(np.ones((H, W, 4), np.uint8), "rgba8"), "single-channel", id="rgba8"),
        pytest.param(raw_image("", 2, 2), "single-channel", id="no encoding"),
        pytest.param(raw_image("bogus", 2, 2), "single-channel", id="bogus encoding"),
        pytest.param(raw_image("mono8", data_len=H * W - 1), "mask: data has", id="short data"),
        pytest.param(raw_image("mono8", data_len=H * W + 5), "mask: data has", id="long data"),
        pytest.param(raw_image("mono8", step=W - 1), "mask: step", id="step below width"),
        pytest.param(raw_image("mono8", width=10**6, data_len=9), "mask: image of", id="width 1e6"),
        pytest.param(
            raw_image("mono16", step=W, data_len=H * W), "mask: step", id="mono16 step for mono8"
        ),
    ],
)


@pytest.mark.parametrize(("msg", "expected"), MASK_CASES)
def test_malformed_mask_message_is_refused(msg: Image, expected: str) -> None:
    with pytest.raises(ConversionError, match=re.escape(expected)):
        mask_from_image(msg)


PROMPT_FIELD_CASES = cases(
    "prompt fields: NaN/inf, label counts and values, boxes, text",
    [
        pytest.param({"points": pts((NAN, 3))}, "finite", id="x NaN"),
        pytest.param({"points": pts((3, NAN))}, "finite", id="y NaN"),
        pytest.param({"points": pts((INF, 3))}, "finite", id="x inf"),
        pytest.param({"points": pts((3, -INF))}, "finite", id="y -inf"),
        pytest.param({"points": pts((1e39, 3))}, "finite", id="x beyond float32"),
        pytest.param({"points": pts((3, 3), (NAN, NAN))}, "finite", id="second point NaN"),
        pytest.param(
            {"points": pts((3, 3), (4, 4)), "point_labels": [1]}, "2 points but 1", id="2p 1l"
        ),
        pytest.param({"points": pts((3, 3)), "point_labels": [1, 0]}, "1 points but 2", id="1p2l"),
        pytest.param({"point_labels": [1]}, "0 points but 1", id="labels without points"),
        *[
            pytest.param({"points": pts((3, 3)), "point_labels": [v]}, "must be 1", id=f"label {v}")
            for v in (2, -1, 127, -128)
        ],
        pytest.param({"points": pts(*[(1, 1)] * 65)}, "at most 64 points", id="65 points"),
        pytest.param({"box": roi(5, 5, 0, 9)}, "width > 0", id="box width 0"),
        pytest.param({"box": roi(5, 5, 9, 0)}, "width > 0", id="box height 0"),
        pytest.param({"box": roi(0, 0, 0, 0)}, "width > 0", id="box all zero"),
        pytest.param({"text": BIG_TEXT}, "longer than 256", id="text 10 kB"),
        pytest.param({}, "at least one point", id="nothing"),
        pytest.param({"text": " \t\n "}, "at least one point", id="text only whitespace"),
    ],
)


@pytest.mark.parametrize(("fields", "expected"), PROMPT_FIELD_CASES)
def test_malformed_prompt_fields_are_refused(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises((ConversionError, PromptError), match=re.escape(expected)):
        build_prompt(**fields)


@pytest.mark.parametrize(
    "stamp",
    cases(
        "stamp: invalid",
        [
            Time(sec=-1),
            Time(sec=-(2**31)),
            Time(sec=0, nanosec=1_000_000_000),
            Time(sec=5, nanosec=2**32 - 1),
        ],
    ),
)
def test_invalid_stamp_is_refused(stamp: Time) -> None:
    with pytest.raises(ConversionError, match="invalid stamp"):
        stamp_to_ns(stamp)


# ====================================================================================== engine
def engine_frame(value: int = 90, width: int = W, height: int = H) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


@pytest.fixture(scope="module")
def tracked() -> Iterator[SegmentationSession]:
    """A session with two labelled objects and a few frames in memory (stamps 1..3 s)."""
    session = SegmentationSession(FakeBackend(FakeConfig(memory_frames=3)), max_objects=4)
    for sec in (1, 2, 3):
        session.step(engine_frame(), stamp_ns=sec * 10**9)
    session.add_prompt(Prompt(points=[[10, 10]]), label="keep-a")
    session.add_prompt(Prompt(box=[30, 20, 50, 40]), label="keep-b")
    yield session
    session.close()


def snapshot(session: SegmentationSession) -> list[tuple[str, str, int]]:
    """Ids, labels and mask areas of the tracked objects on the latest result."""
    latest = session.latest
    assert latest is not None
    return [(o.object_id, o.label, o.area) for o in latest.objects]


def _mask(height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[:4, :4] = True
    return mask


ENGINE_PROMPT_CASES = cases(
    "engine: prompt outside / wrong size / bad id / bad label / bad stamp",
    [
        # points and boxes outside the image
        *[
            pytest.param({"prompt": Prompt(points=[xy])}, PromptError, "outside", id=f"point {xy}")
            for xy in ([W, 5], [-0.01, 5], [5, H], [5, -1], [1e9, 1e9], [-1e9, 5], [W + 0.5, H])
        ],
        *[
            pytest.param({"prompt": Prompt(box=b)}, PromptError, "exceeds", id=f"box {b}")
            for b in ([-1, 0, 10, 10], [0, -5, 10, 10], [50, 5, W + 1, 10], [5, 5, 10, H + 1])
        ],
        pytest.param(
            {"prompt": Prompt(box=[0, 0, 1e9, 1e9])}, PromptError, "exceeds", id="box 1e9"
        ),
        # masks of the wrong size
        *[
            pytest.param(
                {"prompt": Prompt(mask=_mask(h, w))},
                PromptError,
                f"frame is {W}x{H}",
                id=f"mask {w}x{h}",
            )
            for h, w in ((H - 1, W), (H, W + 1), (W, H), (1, 1), (2 * H, 2 * W))
        ],
        # unknown / malformed ids
        *[
            pytest.param(
                {"prompt": Prompt(points=[[5, 5]]), "object_id": bad},
                UnknownObjectError,
                "unknown object id",
                id=f"id {bad[:8]!r}",
            )
            for bad in BAD_IDS
        ],
        pytest.param(
            {"prompt": Prompt(points=[[5, 5]]), "label": BIG_TEXT},
            PromptError,
            "label is longer",
            id="label 10 kB",
        ),
        # stamps that name no frame in memory
        pytest.param(
            {"prompt": Prompt(points=[[5, 5]]), "stamp_ns": 1},
            PromptError,
            "no frame with stamp",
            id="stamp far past",
        ),
        pytest.param(
            {"prompt": Prompt(points=[[5, 5]]), "stamp_ns": 2**62},
            PromptError,
            "no frame with stamp",
            id="stamp far future",
        ),
        pytest.param(
            {"prompt": Prompt(points=[[5, 5]]), "stamp_ns": 3 * 10**9 + 1},
            PromptError,
            "no frame with stamp",
            id="stamp 1 ns off",
        ),
        pytest.param(
            {"prompt": Prompt(points=[[5, 5]]), "multimask": True, "object_id": "abc"},
            UnknownObjectError,
            "unknown object id",
            id="multimask + bad id",
        ),
        pytest.param(
            {"prompt": Prompt(text="mug")}, PromptError, "needs points", id="text-only add_prompt"
        ),
        pytest.param(
            {"prompt": Prompt(points=[[5, 5]], text="mug")},
            UnsupportedPromptError,
            "no text prompts",
            id="text + point on a backend without text",
        ),
    ],
)


@pytest.mark.parametrize(("kwargs", "error", "expected"), ENGINE_PROMPT_CASES)
def test_engine_refuses_prompt_and_changes_nothing(
    tracked: SegmentationSession, kwargs: dict[str, Any], error: type[Exception], expected: str
) -> None:
    before = snapshot(tracked)
    with pytest.raises(error, match=re.escape(expected)):
        tracked.add_prompt(**kwargs)
    assert snapshot(tracked) == before == [("1", "keep-a", 421), ("2", "keep-b", 400)]


ENGINE_OTHER_CASES = cases(
    "engine: remove / text / segment / frames",
    [
        *[
            pytest.param("remove", {"object_id": bad}, UnknownObjectError, "unknown", id=f"rm {b}")
            for b, bad in enumerate(("", *BAD_IDS))
        ],
        pytest.param("add_text", {"text": ""}, PromptError, "text is empty", id="text empty"),
        pytest.param("add_text", {"text": " \n"}, PromptError, "text is empty", id="text blank"),
        pytest.param("add_text", {"text": BIG_TEXT}, PromptError, "longer than", id="text 10kB"),
        pytest.param("add_text", {"text": "mug"}, UnsupportedPromptError, "sam3", id="text fake"),
        *[
            pytest.param(
                "add_text",
                {"text": "mug", "score_threshold": v},
                PromptError,
                "score_threshold must be in",
                id=f"text thr {v}",
            )
            for v in (NAN, -0.1, 1.5, INF, -INF)
        ],
        pytest.param(
            "add_text", {"text": "mug", "max_objects": -1}, PromptError, ">= 0", id="text max -1"
        ),
        pytest.param(
            "segment",
            {"prompt": Prompt(mask=_mask(H + 1, W))},
            PromptError,
            "frame is",
            id="segment mask size",
        ),
        pytest.param(
            "segment",
            {"prompt": Prompt(points=[[5, 5]]), "image": np.zeros((H, W), np.uint8)},
            FrameError,
            "RGB uint8",
            id="segment grey image",
        ),
        pytest.param(
            "segment",
            {"prompt": Prompt(points=[[5, 5]]), "score_threshold": NAN},
            PromptError,
            "score_threshold",
            id="segment thr NaN",
        ),
        pytest.param(
            "segment",
            {"prompt": Prompt(points=[[W + 5, 5]])},
            PromptError,
            "outside",
            id="segment point outside",
        ),
        # frames
        *[
            pytest.param("step", {"image": img}, FrameError, text, id=name)
            for name, img, text in (
                ("float32 frame", np.zeros((H, W, 3), np.float32), "RGB uint8"),
                ("uint16 frame", np.zeros((H, W, 3), np.uint16), "RGB uint8"),
                ("grey frame", np.zeros((H, W), np.uint8), "RGB uint8"),
                ("4-channel frame", np.zeros((H, W, 4), np.uint8), "RGB uint8"),
                ("2-channel frame", np.zeros((H, W, 2), np.uint8), "RGB uint8"),
                ("1x1 frame", np.zeros((1, 1, 3), np.uint8), "too small"),
                ("0-row frame", np.zeros((0, W, 3), np.uint8), "too small"),
                ("list frame", [[[0, 0, 0]]], "numpy array"),
                ("size change", engine_frame(width=W * 2), "reset to change resolution"),
                ("4D frame", np.zeros((1, H, W, 3), np.uint8), "RGB uint8"),
            )
        ],
    ],
)


@pytest.mark.parametrize(("call", "kwargs", "error", "expected"), ENGINE_OTHER_CASES)
def test_engine_refuses_request_and_changes_nothing(
    tracked: SegmentationSession,
    call: str,
    kwargs: dict[str, Any],
    error: type[Exception],
    expected: str,
) -> None:
    before = snapshot(tracked)
    index = tracked.frame_index
    method = {"remove": tracked.remove_object}.get(call) or getattr(tracked, call)
    with pytest.raises(error, match=re.escape(expected)):
        method(**kwargs)
    assert snapshot(tracked) == before and tracked.frame_index == index


def test_engine_capacity_and_prompts_before_the_first_frame() -> None:
    session = SegmentationSession(FakeBackend(), max_objects=2)
    for call in (
        lambda: session.add_prompt(Prompt(points=[[1, 1]])),
        lambda: session.add_prompt(Prompt(box=[1, 1, 5, 5]), label="x"),
        lambda: session.add_text("mug"),
        lambda: session.segment(Prompt(points=[[1, 1]])),
    ):
        with pytest.raises(NoFrameError, match="no frame"):
            call()
    session.step(engine_frame())
    session.add_prompt(Prompt(points=[[5, 5]]), label="a")
    session.add_prompt(Prompt(points=[[20, 20]]), label="b")
    for _ in range(3):  # more objects than max_objects, again and again
        with pytest.raises(CapacityError, match="max_objects=2"):
            session.add_prompt(Prompt(points=[[30, 30]]))
    # Refused requests did not burn ids: the next free id follows the live ones.
    session.remove_object("2")
    assert session.add_prompt(Prompt(points=[[30, 30]])).object_id == "3"
    assert [(o.object_id, o.label) for o in session.step(engine_frame()).objects] == [
        ("1", "a"),
        ("3", ""),
    ]


# Counted here, not when the test runs: the table must not depend on which tests ran before it.
CATEGORIES["engine: before the first frame / capacity"] += 4 + 3


# ===================================================================================== the node
# Each group of graph tests gets its own node from a fixture, so any test passes alone and in any
# order: `fresh` has never seen a frame; `kept` tracks KEEP, and its tests only send what the node
# must refuse or drop (they assert that KEEP is untouched), plus one test that adds and removes
# one object; tests that change what a node tracks start their own (`kept_alone`).
KEEP = [("1", "keep-a"), ("2", "keep-b")]


def keep_objects(nut: NodeUnderTest) -> NodeUnderTest:
    """Give a fresh node the objects the battery must not disturb; check they are tracked."""
    nut.send_until_output(1)
    a = nut.call("add_points", points=pts((10, 10)), label="keep-a")
    b = nut.call("add_box", box=roi(30, 20, 20, 20), label="keep-b")
    assert a.success and b.success, (a.message, b.message)
    out = nut.send_until_output(2)
    assert [(i.id, i.label, i.visible) for i in out.instances] == [
        ("1", "keep-a", True),
        ("2", "keep-b", True),
    ]
    return nut


def _assert_refused(nut: NodeUnderTest, srv: str, fields: dict[str, Any], expected: str) -> None:
    res = nut.call(srv, **fields)
    assert not res.success, (srv, res.message)
    assert expected in res.message, res.message


@pytest.fixture(scope="module")
def fresh() -> Iterator[NodeUnderTest]:
    graph = RosGraph()
    try:
        yield start_node_under_test(graph, namespace="/fresh", max_objects=4)
    finally:
        graph.close()


@pytest.fixture(scope="module")
def kept() -> Iterator[NodeUnderTest]:
    graph = RosGraph()
    try:
        yield keep_objects(start_node_under_test(graph, namespace="/kept", max_objects=4))
    finally:
        graph.close()


@pytest.fixture
def kept_alone(ros_graph: RosGraph) -> NodeUnderTest:
    return keep_objects(start_node_under_test(ros_graph, namespace="/alone", max_objects=4))


BEFORE_FRAME_CASES = cases(
    "node: prompts before the first frame",
    [
        pytest.param("add_points", {"points": pts((5, 5))}, "no frame", id="add_points"),
        pytest.param("add_box", {"box": roi(1, 1, 5, 5)}, "no frame", id="add_box"),
        pytest.param(
            "add_mask", {"mask": mono(_mask(H, W).astype(np.uint8) * 255)}, "no frame", id="mask"
        ),
        pytest.param("add_text", {"text": "mug"}, "no frame", id="add_text"),
        pytest.param("segment", {"points": pts((5, 5))}, "no frame", id="segment latest"),
        pytest.param("remove_object", {"object_id": "1"}, "unknown object id", id="remove"),
    ],
)


@pytest.mark.graph
@pytest.mark.parametrize(("srv", "fields", "expected"), BEFORE_FRAME_CASES)
def test_node_refuses_prompts_before_the_first_frame(
    fresh: NodeUnderTest, srv: str, fields: dict[str, Any], expected: str
) -> None:
    _assert_refused(fresh, srv, fields, expected)
    assert fresh.tracked() == []


@pytest.mark.graph
def test_node_tracks_the_objects_the_battery_must_not_disturb(ros_graph: RosGraph) -> None:
    keep_objects(start_node_under_test(ros_graph, namespace="/keep", max_objects=4))


def _bad_ids(srv: str, extra: dict[str, Any]) -> list[Any]:
    return [
        pytest.param(srv, {"object_id": bad, **extra}, "unknown object id", id=f"{srv} id {b}")
        for b, bad in enumerate(BAD_IDS)
    ]


GOOD_MASK = _mask(H, W).astype(np.uint8) * 255
SERVICE_CASES = cases(
    "node: malformed service requests",
    [
        # ---- add_points
        pytest.param("add_points", {}, "at least one point", id="points none"),
        *[
            pytest.param("add_points", {"points": pts(xy)}, "outside", id=f"point {xy}")
            for xy in ((W, 5), (-1, 5), (5, H), (5, -0.5), (1e9, 5), (W + 0.5, H + 0.5))
        ],
        *[
            pytest.param("add_points", {"points": pts(xy)}, "finite", id=f"point {xy}")
            for xy in ((NAN, 5), (5, NAN), (INF, 5), (5, -INF), (1e39, 5))
        ],
        pytest.param(
            "add_points",
            {"points": pts((5, 5), (6, 6)), "point_labels": [1]},
            "2 points but 1 point labels",
            id="2 points 1 label",
        ),
        pytest.param(
            "add_points",
            {"points": pts((5, 5)), "point_labels": [1, 1, 0]},
            "1 points but 3 point labels",
            id="1 point 3 labels",
        ),
        pytest.param(
            "add_points", {"point_labels": [1]}, "0 points but 1", id="labels without points"
        ),
        *[
            pytest.param(
                "add_points",
                {"points": pts((5, 5)), "point_labels": [v]},
                "labels must be 1",
                id=f"label {v}",
            )
            for v in (2, -1, 127, -128)
        ],
        pytest.param("add_points", {"points": pts(*[(5, 5)] * 65)}, "at most 64", id="65 points"),
        pytest.param(
            "add_points", {"points": pts((5, 5)), "label": BIG_TEXT}, "label is longer", id="10kB"
        ),
        *[
            pytest.param(
                "add_points",
                {"points": pts((5, 5)), "stamp": stamp},
                text,
                id=f"stamp {stamp.sec}.{stamp.nanosec}",
            )
            for stamp, text in (
                (Time(sec=1, nanosec=5), "no frame with stamp"),
                (Time(sec=0, nanosec=1), "no frame with stamp"),
                (Time(sec=2**31 - 1), "no frame with stamp"),
                (Time(sec=-3), "invalid stamp"),
                (Time(sec=1, nanosec=1_000_000_000), "invalid stamp"),
                (Time(sec=1, nanosec=2**32 - 1), "invalid stamp"),
            )
        ],
        *_bad_ids("add_points", {"points": pts((5, 5))}),
        pytest.param(
            "add_points",
            {"object_id": "abc", "points": pts((5, 5)), "multimask": True},
            "unknown object id",
            id="multimask bad id",
        ),
        # ---- add_box
        *[
            pytest.param("add_box", {"box": box}, text, id=f"box {n}")
            for n, (box, text) in enumerate(
                (
                    (roi(0, 0, 0, 0), "width > 0"),
                    (roi(5, 5, 0, 9), "width > 0"),
                    (roi(5, 5, 9, 0), "width > 0"),
                    (roi(50, 5, 20, 9), "exceeds"),
                    (roi(5, 40, 9, 20), "exceeds"),
                    (roi(W, H, 1, 1), "exceeds"),
                    (roi(10**6, 0, 5, 5), "exceeds"),
                    (roi(0, 0, 2**32 - 1, 2**32 - 1), "exceeds"),
                )
            )
        ],
        pytest.param(
            "add_box",
            {"box": roi(5, 5, 9, 9), "points": pts((NAN, 5))},
            "finite",
            id="box + NaN point",
        ),
        pytest.param(
            "add_box",
            {"box": roi(5, 5, 9, 9), "points": pts((6, 6)), "point_labels": [1, 0]},
            "1 points but 2",
            id="box + label mismatch",
        ),
        pytest.param(
            "add_box",
            {"box": roi(5, 5, 9, 9), "points": pts((W + 1, 6))},
            "outside",
            id="box + point outside",
        ),
        pytest.param(
            "add_box", {"box": roi(5, 5, 9, 9), "label": BIG_TEXT}, "label is longer", id="10kB"
        ),
        *_bad_ids("add_box", {"box": roi(5, 5, 9, 9)})[:5],
        # ---- add_mask
        pytest.param("add_mask", {"mask": Image()}, "mask: image is empty", id="mask empty"),
        *[
            pytest.param("add_mask", {"mask": msg}, "single-channel", id=f"mask {enc!r}")
            for enc, msg in (
                ("rgb8", mono(np.ones((H, W, 3), np.uint8), "rgb8")),
                ("bgra8", mono(np.ones((H, W, 4), np.uint8), "bgra8")),
                ("", raw_image("", 2, 2)),
                ("bogus", raw_image("bogus", 2, 2)),
            )
        ],
        *[
            pytest.param(
                "add_mask",
                {"mask": mono(_mask(h, w).astype(np.uint8) * 255)},
                f"frame is {W}x{H}",
                id=f"mask {w}x{h}",
            )
            for h, w in ((H - 1, W), (H, W + 1), (W, H), (2, 2))
        ],
        pytest.param(
            "add_mask", {"mask": mono(np.zeros((H, W), np.uint8))}, "no foreground", id="all zero"
        ),
        pytest.param(
            "add_mask",
            {"mask": raw_image("mono8", data_len=H * W - 1)},
            "mask: data has",
            id="mask short data",
        ),
        pytest.param(
            "add_mask", {"mask": raw_image("mono8", step=W - 1)}, "mask: step", id="mask step"
        ),
        pytest.param(
            "add_mask",
            {"mask": raw_image("mono8", width=10**6, data_len=9)},
            "exceeds",
            id="mask width 1e6",
        ),
        pytest.param(
            "add_mask",
            {"mask": mono(GOOD_MASK), "object_id": "01"},
            "unknown object id",
            id="mask id 01",
        ),
        pytest.param(
            "add_mask", {"mask": mono(GOOD_MASK), "label": BIG_TEXT}, "label is longer", id="10kB"
        ),
        # ---- add_text (the fake backend has no text; input is checked before that)
        pytest.param("add_text", {"text": ""}, "text is empty", id="text empty"),
        pytest.param("add_text", {"text": " \t "}, "text is empty", id="text blank"),
        pytest.param("add_text", {"text": BIG_TEXT}, "longer than 256", id="text 10kB"),
        pytest.param("add_text", {"text": "mug"}, "no text prompts", id="text on fake"),
        *[
            pytest.param(
                "add_text",
                {"text": "mug", "score_threshold": v},
                "score_threshold must be in",
                id=f"text threshold {v}",
            )
            for v in (NAN, -0.5, 1.5, INF)
        ],
        # ---- remove_object
        pytest.param("remove_object", {"object_id": ""}, "unknown object id", id="rm empty"),
        *_bad_ids("remove_object", {}),
        # ---- segment (one-shot on the latest frame or on a sent image)
        pytest.param("segment", {}, "at least one point", id="segment nothing"),
        pytest.param("segment", {"points": pts((W, 1))}, "outside", id="segment point outside"),
        pytest.param("segment", {"points": pts((NAN, 1))}, "finite", id="segment NaN"),
        pytest.param(
            "segment",
            {"points": pts((1, 1)), "point_labels": [3]},
            "labels must be 1",
            id="segment label 3",
        ),
        pytest.param(
            "segment",
            {"points": pts((1, 1)), "point_labels": [1, 1]},
            "1 points but 2",
            id="segment label count",
        ),
        pytest.param("segment", {"box": roi(50, 0, 20, 5)}, "exceeds", id="segment box out"),
        pytest.param(
            "segment", {"mask": mono(_mask(H + 1, W).astype(np.uint8))}, "frame is", id="seg mask"
        ),
        pytest.param(
            "segment",
            {"mask": mono(np.ones((H, W, 3), np.uint8), "rgb8")},
            "single-channel",
            id="segment rgb mask",
        ),
        pytest.param(
            "segment",
            {"image": good_frame(9, 30, 30), "points": pts((40, 5))},
            "outside the 30x30 image",
            id="segment point outside the sent image",
        ),
        pytest.param("segment", {"text": "mug"}, "no text prompts", id="segment text"),
        pytest.param("segment", {"text": BIG_TEXT}, "longer than 256", id="segment text 10kB"),
        pytest.param(
            "segment",
            {"points": pts((1, 1)), "score_threshold": NAN},
            "score_threshold",
            id="segment threshold NaN",
        ),
        *[
            pytest.param("segment", {"image": img, "points": pts((1, 1))}, text, id=f"image {n}")
            for n, (img, text) in enumerate(
                (
                    (raw_image("yuv422"), "unsupported image encoding"),
                    (raw_image("16UC1", step=2 * W), "not a colour image"),
                    (raw_image("rgb8", data_len=10), "bytes but height * step"),
                    (raw_image("rgb8", width=10**6, data_len=10), "exceeds"),
                    (raw_image("rgb8", step=W), "is less than"),
                    (raw_image("rgb8", 1, 1), "too small"),
                )
            )
        ],
    ],
)


@pytest.mark.graph
@pytest.mark.parametrize(("srv", "fields", "expected"), SERVICE_CASES)
def test_node_refuses_malformed_request_and_keeps_its_objects(
    kept: NodeUnderTest, srv: str, fields: dict[str, Any], expected: str
) -> None:
    _assert_refused(kept, srv, fields, expected)
    assert kept.tracked() == KEEP


def _quiet(nut: NodeUnderTest) -> bool:
    """No frame arrived or finished for a while: the next one the test sends is alone."""
    stats = nut.node.stats

    def counts() -> tuple[int, int, int, int]:
        return (stats.received, stats.processed, stats.dropped, stats.failed)

    seen = counts()
    return wait_for(lambda: counts() != seen, 0.15) is False


FRAME_CASES = cases(
    "node: bad frames over DDS",
    [
        *[
            pytest.param(*DEFECTS[name]("bgr8", 3), id=f"bgr8 {name}")
            for name in DEFECTS
            if "2^32" not in name and "1e6" not in name
        ],
        # Huge declared sizes with tiny data, made here (the message builder checks nothing).
        pytest.param(raw_image("bgr8", width=10**6, data_len=100), "exceeds", id="width 1e6"),
        pytest.param(raw_image("bgr8", height=10**6, data_len=100), "exceeds", id="height 1e6"),
        pytest.param(
            raw_image("bgr8", width=2**32 - 1, step=2**32 - 1, data_len=10),
            "exceeds",
            id="width 2^32-1",
        ),
        pytest.param(
            raw_image("bgr8", step=2**32 - 1, data_len=10), "height * step", id="step 2^32-1"
        ),
        *[
            pytest.param(raw_image(e), "unsupported image encoding", id=f"encoding {e[:10]!r}")
            for e in UNKNOWN_ENCODINGS
        ],
        *[
            pytest.param(raw_image(e, step=4 * W), "not a colour image", id=f"depth {e}")
            for e in DEPTH_ENCODINGS
        ],
        pytest.param(good_frame(7, width=2 * W), "reset to change resolution", id="size change"),
        pytest.param(good_frame(7, height=H // 2), "reset to change resolution", id="size change"),
        pytest.param(raw_image("rgb8", 1, 1), "too small", id="1x1 frame"),
        pytest.param(raw_image("rgb8", 1, W), "too small", id="1-row frame"),
        pytest.param(good_frame(7, nanosec=1_000_000_000), "invalid stamp", id="nanosec 1e9"),
        pytest.param(raw_image("rgb8", stamp=Time(sec=-5)), "invalid stamp", id="negative stamp"),
    ],
)


@pytest.mark.graph
@pytest.mark.parametrize(("msg", "expected"), FRAME_CASES)
def test_node_drops_bad_frame_with_a_warning_and_a_count(
    kept: NodeUnderTest, msg: Image, expected: str
) -> None:
    stats = kept.node.stats
    assert wait_for(lambda: _quiet(kept), timeout=10.0)
    failed, processed, warned = stats.failed, stats.processed, len(kept.warnings)
    kept.image.publish(msg)
    assert wait_for(lambda: stats.failed == failed + 1, timeout=5.0), stats
    assert stats.processed == processed
    assert len(kept.warnings) == warned + 1
    assert "frame dropped" in kept.warnings[-1] and expected in kept.warnings[-1], kept.warnings[-1]
    assert kept.tracked() == KEEP


@pytest.mark.graph
@pytest.mark.parametrize(
    ("fmt", "data", "expected"),
    cases("node: corrupt compressed frames", list(COMPRESSED_CASES)),
)
def test_node_drops_corrupt_compressed_frame(
    kept: NodeUnderTest, fmt: str, data: bytes, expected: str
) -> None:
    """The node's own frame path (process_frame) on compressed input, without a second node."""
    stats = kept.node.stats
    assert wait_for(lambda: _quiet(kept), timeout=10.0)
    failed, warned = stats.failed, len(kept.warnings)
    msg = CompressedImage(header=Header(stamp=Time(sec=8), frame_id="cam"), format=fmt)
    msg.data = array.array("B", data)
    kept.direct_frames += 1
    assert kept.node.process_frame(msg) is None
    assert stats.failed == failed + 1
    assert expected in kept.warnings[warned], kept.warnings[warned:]
    assert kept.tracked() == KEEP


@pytest.mark.graph
def test_node_takes_frames_stamped_far_in_the_past_and_future(kept_alone: NodeUnderTest) -> None:
    """Odd but valid stamps are the camera's business: processed, echoed, and promptable."""
    for stamp in (Time(sec=0, nanosec=1), Time(sec=2**31 - 1, nanosec=999_999_999)):
        assert wait_for(lambda: _quiet(kept_alone), timeout=10.0)
        kept_alone.image.publish(good_frame(stamp.sec, nanosec=stamp.nanosec))
        assert wait_for(
            lambda s=stamp: any(  # type: ignore[misc]
                (m.header.stamp.sec, m.header.stamp.nanosec) == (s.sec, s.nanosec)
                for m in kept_alone.received
            )
        )
        res = kept_alone.call("add_points", object_id="1", points=pts((10, 10)), stamp=stamp)
        assert res.success and res.object_id == "1", res.message
        assert (res.instance.mask.header.stamp.sec, res.instance.label) == (stamp.sec, "keep-a")
    assert kept_alone.tracked() == KEEP


CATEGORIES["node: valid odd stamps (accepted)"] += 2


@pytest.mark.graph
def test_node_refuses_more_objects_than_max_objects(kept_alone: NodeUnderTest) -> None:
    kept_alone.send_until_output(20)
    extra = [kept_alone.call("add_points", points=pts((40 + i, 30))) for i in range(2)]
    assert [r.object_id for r in extra] == ["3", "4"], [r.message for r in extra]
    for request in (
        ("add_points", {"points": pts((5, 40))}),
        ("add_box", {"box": roi(1, 1, 5, 5)}),
        ("add_mask", {"mask": mono(GOOD_MASK)}),
    ):
        res = kept_alone.call(request[0], **request[1])
        assert not res.success and "max_objects=4" in res.message, res.message
    for object_id in ("3", "4"):
        assert kept_alone.call("remove_object", object_id=object_id).success
    for object_id in ("3", "4"):  # duplicate removal: already gone
        res = kept_alone.call("remove_object", object_id=object_id)
        assert not res.success and f"unknown object id '{object_id}'" in res.message
    assert kept_alone.tracked() == KEEP
    res = kept_alone.call("add_points", points=pts((50, 40)), label="new")
    assert res.success and res.object_id == "5", res.message  # ids 3, 4 were used and removed
    assert kept_alone.call("remove_object", object_id="5").success
    assert kept_alone.tracked() == KEEP


CATEGORIES["node: more objects than max_objects"] += 3
CATEGORIES["node: duplicate removal"] += 2


@pytest.mark.graph
def test_node_still_answers_and_tracks_the_same_objects_afterwards(kept: NodeUnderTest) -> None:
    out = kept.send_until_output(30)
    assert [(i.id, i.label, i.visible, i.mask_value) for i in out.instances] == [
        ("1", "keep-a", True, 1),
        ("2", "keep-b", True, 2),
    ]
    box = out.instances[1].bbox
    assert (box.x_offset, box.y_offset, box.width, box.height) == (30, 20, 20, 20)
    res = kept.call("segment", points=pts((5, 5)))
    assert res.success and res.header.stamp.sec == 30, res.message
    res = kept.call("add_points", points=pts((50, 40)), label="new")
    # The first id after KEEP's: the battery's refused requests burnt none.
    assert res.success and res.object_id == "3", res.message
    assert kept.call("remove_object", object_id="3").success
    stats = kept.node.stats
    # Every frame was processed, dropped as stale or failed (counted): none vanished.
    assert wait_for(lambda: _quiet(kept))
    assert stats.received + kept.direct_frames == stats.processed + stats.dropped + stats.failed


def test_the_battery_is_big_enough() -> None:
    """The battery's size by category (printed with -s); at least 200 malformed inputs."""
    width = max(len(k) for k in CATEGORIES)
    for name, count in sorted(CATEGORIES.items()):
        print(f"{name:<{width}}  {count:4d}")
    total = sum(CATEGORIES.values())
    print(f"{'total':<{width}}  {total:4d}")
    assert total >= 200
