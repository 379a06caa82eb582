"""Message <-> numpy conversions: round trips, row padding, byte order, malformed messages."""

from __future__ import annotations

import array
import math

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from seg_ros import conversions
from seg_ros.conversions import (
    ConversionError,
    build_prompt,
    candidate_instances,
    compressed_to_rgb,
    frame_to_msg,
    image_to_numpy,
    image_to_rgb,
    instance_to_msg,
    mask_from_image,
    ns_to_stamp,
    numpy_to_image,
    roi_to_box,
    stamp_to_ns,
)
from seg_ros.engine import PromptError
from seg_ros.engine.results import Candidate, FrameResult, ObjectMask

H, W = 7, 5  # odd sizes: padding and byte order bugs show up
RNG = np.random.default_rng(0)

# encoding -> a random array of that layout
SAMPLES = {
    "rgb8": RNG.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "bgr8": RNG.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "rgba8": RNG.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "bgra8": RNG.integers(0, 256, (H, W, 4), dtype=np.uint8),
    "mono8": RNG.integers(0, 256, (H, W), dtype=np.uint8),
    "8UC1": RNG.integers(0, 256, (H, W), dtype=np.uint8),
    "8UC3": RNG.integers(0, 256, (H, W, 3), dtype=np.uint8),
    "mono16": RNG.integers(0, 65536, (H, W), dtype=np.uint16),
    "16UC1": RNG.integers(0, 65536, (H, W), dtype=np.uint16),
    "32FC1": RNG.standard_normal((H, W)).astype(np.float32),
}


def raw_image(arr: np.ndarray, encoding: str, *, pad: int = 0, big_endian: bool = False) -> Image:
    """An Image built by hand (not by the code under test): `pad` bytes after every row."""
    dt = arr.dtype.newbyteorder(">" if big_endian else "<")
    rows = np.ascontiguousarray(arr.astype(dt)).view(np.uint8).reshape(arr.shape[0], -1)
    padded = np.concatenate([rows, np.full((arr.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=arr.shape[0], width=arr.shape[1], encoding=encoding)
    msg.is_bigendian = int(big_endian)
    msg.step = padded.shape[1]
    msg.data = array.array("B", padded.tobytes())
    return msg


@pytest.mark.parametrize("encoding", sorted(SAMPLES))
@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("big_endian", [False, True])
def test_every_encoding_reads_with_padding_and_byte_order(
    encoding: str, pad: int, big_endian: bool
) -> None:
    arr = SAMPLES[encoding]
    out = image_to_numpy(raw_image(arr, encoding, pad=pad, big_endian=big_endian))
    assert out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("encoding", sorted(SAMPLES))
def test_numpy_to_image_round_trip(encoding: str) -> None:
    arr = SAMPLES[encoding]
    header = Header(frame_id="cam", stamp=Time(sec=3, nanosec=4))
    msg = numpy_to_image(arr, encoding, header)
    assert (msg.height, msg.width, msg.encoding) == (H, W, encoding)
    assert msg.step == W * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    assert len(msg.data) == msg.height * msg.step
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 3
    np.testing.assert_array_equal(image_to_numpy(msg), arr)


def test_numpy_to_image_takes_non_contiguous_arrays_and_refuses_mismatches() -> None:
    arr = SAMPLES["bgr8"][:, ::2]  # strided view
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(arr, "bgr8")), arr)
    with pytest.raises(ConversionError, match="uint16"):
        numpy_to_image(SAMPLES["mono8"], "mono16")
    with pytest.raises(ConversionError, match=r"\(H, W, 3\)"):
        numpy_to_image(SAMPLES["mono8"], "bgr8")
    with pytest.raises(ConversionError, match="unsupported"):
        numpy_to_image(SAMPLES["mono8"], "yuv422")


def test_unpadded_image_is_a_view_of_the_message_data() -> None:
    msg = raw_image(SAMPLES["rgb8"], "rgb8")
    out = image_to_numpy(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
@pytest.mark.parametrize("pad", [0, 2])
def test_colour_encodings_to_rgb(encoding: str, pad: int) -> None:
    arr = SAMPLES[encoding]
    rgb = image_to_rgb(raw_image(arr, encoding, pad=pad))
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    expected = arr[..., :3] if encoding.startswith("rgb") else arr[..., 2::-1]
    np.testing.assert_array_equal(rgb, expected)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_to_rgb_replicates_the_channel(encoding: str) -> None:
    arr = SAMPLES[encoding]
    rgb = image_to_rgb(raw_image(arr, encoding, pad=1))
    np.testing.assert_array_equal(rgb, np.repeat(arr[..., None], 3, axis=2))


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_depth_encodings_are_refused_for_the_colour_stream(encoding: str) -> None:
    with pytest.raises(ConversionError, match="not a colour image"):
        image_to_rgb(raw_image(SAMPLES[encoding], encoding))


def _msg(**fields: object) -> Image:
    msg = raw_image(SAMPLES["rgb8"], "rgb8")
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"encoding": "yuv999"}, "unsupported image encoding 'yuv999'"),
        ({"encoding": ""}, "unsupported image encoding"),
        ({"data": array.array("B", bytes(H * W * 3 - 1))}, "data has 104 bytes"),
        ({"data": array.array("B", bytes(H * W * 3 + 1))}, "data has 106 bytes"),
        ({"data": array.array("B")}, "data has 0 bytes"),
        ({"step": W * 3 - 1}, "step 14 is less than"),
        ({"height": 0, "data": array.array("B")}, "empty"),
        ({"width": 0, "step": 0}, "empty"),
        ({"width": 100_000, "step": 300_000}, "limit"),
    ],
)
def test_malformed_images_raise_conversion_error(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        image_to_rgb(_msg(**fields))
    assert issubclass(ConversionError, ValueError)


def test_odd_step_for_16_bit_data_still_reads() -> None:
    arr = SAMPLES["mono16"]
    np.testing.assert_array_equal(image_to_numpy(raw_image(arr, "mono16", pad=1)), arr)


def test_cv_bridge_extends_encodings_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bridge:
        def imgmsg_to_cv2(self, msg: Image, desired_encoding: str) -> np.ndarray:
            assert desired_encoding == "rgb8"
            if msg.encoding != "yuv422":
                raise TypeError("bad")
            return np.zeros((2, 3, 3), np.uint8)

    monkeypatch.setattr(conversions, "_BRIDGE", Bridge())
    assert image_to_rgb(_msg(encoding="yuv422")).shape == (2, 3, 3)
    with pytest.raises(ConversionError, match="cannot convert 'bayer"):
        image_to_rgb(_msg(encoding="bayer_rggb8"))
    monkeypatch.setattr(conversions, "_BRIDGE", None)
    with pytest.raises(ConversionError, match="unsupported"):
        image_to_rgb(_msg(encoding="yuv422"))


# ---------------------------------------------------------------------------- compressed
def _compressed(rgb: np.ndarray, fmt: str) -> CompressedImage:
    ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(format=fmt, data=array.array("B", buf.tobytes()))


def test_png_decodes_exactly_and_jpeg_closely() -> None:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:32] = (0, 255, 0)
    rgb[:, 32:] = (0, 0, 255)
    np.testing.assert_array_equal(compressed_to_rgb(_compressed(rgb, "png")), rgb)
    jpeg = compressed_to_rgb(_compressed(rgb, "jpeg"))
    assert jpeg.shape == rgb.shape
    assert np.abs(jpeg.astype(int) - rgb).mean() < 8  # colour order right: red stays red
    grey = CompressedImage(format="png")
    _, buf = cv2.imencode(".png", np.full((4, 6), 77, np.uint8))
    grey.data = array.array("B", buf.tobytes())
    np.testing.assert_array_equal(compressed_to_rgb(grey), np.full((4, 6, 3), 77, np.uint8))


@pytest.mark.parametrize(
    ("fmt", "data", "match"),
    [
        ("jpeg", b"", "no data"),
        ("jpeg", b"not an image at all", "cannot decode"),
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(20), "cannot decode"),
        ("16UC1; compressedDepth png", b"\x00" * 20, "compressed depth"),
    ],
)
def test_bad_compressed_images_raise(fmt: str, data: bytes, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        compressed_to_rgb(CompressedImage(format=fmt, data=array.array("B", data)))


# ---------------------------------------------------------------------------- masks, prompts
def test_mask_from_image() -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[2:4, 1:3] = 255
    out = mask_from_image(raw_image(mask, "mono8", pad=2))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask > 0)
    with pytest.raises(ConversionError, match="single-channel"):
        mask_from_image(raw_image(SAMPLES["rgb8"], "rgb8"))


def test_build_prompt_combines_every_kind() -> None:
    mask = np.zeros((H, W), np.uint8)
    mask[1, 1] = 255
    prompt = build_prompt(
        points=[Point(x=1.5, y=2.0, z=9.0), Point(x=3.0, y=4.0)],
        point_labels=array.array("b", [1, 0]),
        box=RegionOfInterest(x_offset=1, y_offset=2, width=3, height=4),
        mask=raw_image(mask, "mono8"),
        scribble=True,
        text="  red   mug ",
    )
    np.testing.assert_array_equal(prompt.points, [[1.5, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(prompt.point_labels, [1, 0])
    assert prompt.box is not None
    np.testing.assert_array_equal(prompt.box, [1, 2, 4, 6])
    assert prompt.mask is not None and prompt.mask.sum() == 1 and prompt.scribble
    assert prompt.text == "red mug"
    # Labels may be left out: every point is then foreground.
    only = build_prompt(points=[Point(x=1.0, y=1.0)])
    np.testing.assert_array_equal(only.point_labels, [1])


def test_build_prompt_errors() -> None:
    with pytest.raises(PromptError, match="at least one"):
        build_prompt()
    with pytest.raises(PromptError, match="labels"):
        build_prompt(points=[Point(x=1.0, y=1.0)], point_labels=[1, 0])
    with pytest.raises(PromptError, match="finite"):
        build_prompt(points=[Point(x=math.nan, y=1.0)])
    with pytest.raises(ConversionError, match="width > 0"):
        build_prompt(box=RegionOfInterest(x_offset=1, y_offset=2, width=0, height=4))
    with pytest.raises(ConversionError, match="single-channel"):
        build_prompt(mask=raw_image(SAMPLES["rgb8"], "rgb8"))


def test_roi_and_stamps() -> None:
    np.testing.assert_array_equal(
        roi_to_box(RegionOfInterest(x_offset=10, y_offset=20, width=30, height=40)),
        [10, 20, 40, 60],
    )
    assert stamp_to_ns(Time(sec=2, nanosec=5)) == 2_000_000_005
    assert stamp_to_ns(Time()) == 0
    back = ns_to_stamp(2_000_000_005)
    assert (back.sec, back.nanosec) == (2, 5)
    with pytest.raises(ConversionError, match="invalid stamp"):
        stamp_to_ns(Time(sec=-1))


# ---------------------------------------------------------------------------- instances
def _object(value: int, mask: np.ndarray, **kw: object) -> ObjectMask:
    fields: dict[str, object] = {
        "object_id": str(value),
        "mask_value": value,
        "label": "mug",
        "score": 0.75,
        "visible": bool(mask.any()),
        "mask": mask,
    }
    fields.update(kw)
    return ObjectMask(**fields)  # type: ignore[arg-type]


def test_instance_bbox_and_cropped_mask_with_source_header() -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:17] = True
    mask[6, 10] = False
    header = Header(frame_id="cam", stamp=Time(sec=7, nanosec=8))
    inst = instance_to_msg(_object(3, mask), header)
    assert (inst.id, inst.label, inst.mask_value, inst.visible) == ("3", "mug", 3, True)
    assert inst.score == pytest.approx(0.75)
    box = inst.bbox
    assert (box.x_offset, box.y_offset, box.width, box.height) == (10, 5, 7, 4)
    assert inst.mask.encoding == "mono8" and inst.mask.header.frame_id == "cam"
    assert inst.mask.header.stamp.sec == 7
    crop = image_to_numpy(inst.mask)
    assert crop.shape == (4, 7) and set(np.unique(crop)) == {0, 255}
    np.testing.assert_array_equal(crop > 0, mask[5:9, 10:17])
    assert all(math.isnan(v) for v in (inst.centroid.x, inst.centroid.y, inst.centroid.z))
    assert all(math.isnan(v) for v in (inst.extent.x, inst.extent.y, inst.extent.z))


def test_hidden_object_has_empty_mask_and_zero_box() -> None:
    inst = instance_to_msg(_object(1, np.zeros((20, 30), bool)), Header(frame_id="cam"))
    assert not inst.visible
    assert (inst.bbox.width, inst.bbox.height, inst.mask.height, inst.mask.width) == (0, 0, 0, 0)
    assert inst.mask.header.frame_id == "cam" and inst.mask.encoding == "mono8"


def test_locate_hook_fills_3d_fields() -> None:
    mask = np.ones((4, 4), bool)
    seen: list[str] = []

    def locate(obj: ObjectMask) -> tuple[Point, Vector3] | None:
        seen.append(obj.object_id)
        return Point(x=1.0, y=2.0, z=3.0), Vector3(x=0.1, y=0.2, z=0.3)

    result = FrameResult(0, 5, 4, 4, (_object(1, mask), _object(2, mask)))
    msg = frame_to_msg(result, Header(frame_id="cam"), locate=locate)
    assert seen == ["1", "2"]
    assert (msg.height, msg.width, msg.header.frame_id) == (4, 4, "cam")
    assert [i.id for i in msg.instances] == ["1", "2"]
    assert msg.instances[0].centroid.z == 3.0 and msg.instances[1].extent.x == 0.1


def test_candidates_become_instances_of_the_same_object() -> None:
    big = np.ones((6, 6), bool)
    small = np.zeros((6, 6), bool)
    small[2:4, 2:4] = True
    obj = _object(2, big, candidates=(Candidate(big, 0.9), Candidate(small, 0.6)))
    out = candidate_instances(obj, Header())
    assert [(i.id, i.mask_value) for i in out] == [("2", 2), ("2", 2)]
    assert [round(i.score, 2) for i in out] == [0.9, 0.6]
    assert (out[1].bbox.width, out[1].bbox.height) == (2, 2)


def test_segment_everything_request_defaults_are_sams_generator() -> None:
    """An empty request (`ros2 service call ... "{track: true}"`) gets SAM's thresholds, not 0
    (which kept every candidate: hundreds of masks, refused under max_objects with track)."""
    from seg_ros.conversions import everything_options
    from seg_ros.engine.sam.everything import EverythingOptions
    from seg_ros.srv import SegmentEverything

    assert everything_options(SegmentEverything.Request(track=True)) == EverythingOptions()
    req = SegmentEverything.Request(
        points_per_side=8,
        pred_iou_threshold=0.0,
        stability_threshold=0.5,
        min_area=100,
        coarse_to_fine=True,
    )
    assert everything_options(req) == EverythingOptions(
        points_per_side=8,
        pred_iou_threshold=0.0,
        stability_threshold=0.5,
        min_area=100,
        coarse_to_fine=True,
    )
    with pytest.raises(ValueError, match="min_area"):
        everything_options(SegmentEverything.Request(min_area=-1))
