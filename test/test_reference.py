"""A reference from another image (issue 14): the session's bookkeeping (fake backend), the
classic backend finding the object on synthetic scenes with exact ground truth, and the
`reference` benchmark's protocol on a hand-made DAVIS folder. The floor on the DAVIS dev clips
(skipped where they are absent) comes from `python -m seg_ros.bench.reference_bench`."""

from __future__ import annotations

import pathlib
from typing import Any

import cv2
import numpy as np
import pytest

from seg_ros.bench import davis, reference_bench
from seg_ros.bench.metrics import jaccard
from seg_ros.engine import (
    FrameError,
    Prompt,
    PromptError,
    SegmentationSession,
    UnknownObjectError,
    UnsupportedPromptError,
)
from seg_ros.engine.backends.base import MAX_REFERENCES, Capabilities
from seg_ros.engine.backends.classic import ClassicBackend
from seg_ros.engine.backends.fake import FakeBackend
from seg_ros.engine.errors import BackendError, CapacityError
from seg_ros.testing.faults import FaultyBackend
from seg_ros.tools.synthetic import Key, ObjectSpec, SequenceSpec, SyntheticSequence

H, W = 48, 64
RED = (220, 30, 30)


def grey(value: int = 90, height: int = H, width: int = W) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def with_square(image: np.ndarray, x0: int, y0: int, side: int = 8) -> np.ndarray:
    out = image.copy()
    out[y0 : y0 + side, x0 : x0 + side] = RED
    return out


def reference_image() -> tuple[np.ndarray, np.ndarray]:
    """A 'photo' of another size than the stream: the red square at its top left, and its mask."""
    image = with_square(grey(60, 30, 40), 2, 3, 6)
    mask = np.zeros((30, 40), bool)
    mask[3:9, 2:8] = True
    return image, mask


# ------------------------------------------------------------------ session (fake backend)
def test_reference_object_is_listed_not_visible_until_found_then_tracked() -> None:
    session = SegmentationSession(FakeBackend(), max_objects=3)
    image, mask = reference_image()
    # Before the first frame: the object exists at once, with its id and label.
    res = session.add_reference(image, Prompt(mask=mask), label="red box")
    assert (res.object_id, res.reference, res.label) == ("1", 1, "red box")
    np.testing.assert_array_equal(res.mask, mask)  # the region on the reference image
    assert res.score == 1.0 and session.object_ids == ["1"] and session.references("1") == [1]
    for k in range(3):  # the object is not in the stream yet
        obj = session.step(grey(), stamp_ns=k + 1).get("1")
        assert obj is not None and not obj.visible and obj.label == "red box"
        assert not obj.mask.any()
    found = session.step(with_square(grey(), 40, 30), stamp_ns=10).get("1")
    assert found is not None and found.visible and found.bbox == (40, 30, 48, 38)
    assert found.label == "red box" and found.mask_value == 1


def test_reference_counts_against_max_objects_and_keeps_ids_apart() -> None:
    session = SegmentationSession(FakeBackend(), max_objects=2)
    image, mask = reference_image()
    session.step(grey(), stamp_ns=1)
    prompted = session.add_prompt(Prompt(box=[0, 0, 10, 10]))
    by_ref = session.add_reference(image, Prompt(mask=mask))
    assert (prompted.object_id, by_ref.object_id) == ("1", "2")
    # The latest frame's result lists it (not visible) at once.
    latest = session.latest
    assert latest is not None and [o.object_id for o in latest.objects] == ["1", "2"]
    assert not latest.objects[1].visible
    with pytest.raises(CapacityError):
        session.add_reference(image, Prompt(mask=mask))
    assert session.object_ids == ["1", "2"]


def test_references_of_one_object_are_bounded_and_removable() -> None:
    session = SegmentationSession(FakeBackend())
    image, mask = reference_image()
    obj = session.add_reference(image, Prompt(mask=mask)).object_id
    for expected in range(2, MAX_REFERENCES + 3):
        res = session.add_reference(image, Prompt(box=[2, 3, 8, 9]), obj)
        assert (res.object_id, res.reference) == (obj, expected)
    # The oldest are forgotten beyond MAX_REFERENCES.
    kept = list(range(3, MAX_REFERENCES + 3))
    assert session.references(obj) == kept
    assert session.remove_reference(obj, kept[0]) == [kept[0]]
    with pytest.raises(PromptError, match="no reference 1 "):
        session.remove_reference(obj, 1)
    # Not found yet, its references are all that can find it: removing them all is refused,
    # nothing removed (remove the object instead), as on SAM.
    with pytest.raises(PromptError, match="remove the object instead"):
        session.remove_reference(obj)
    assert session.references(obj) == kept[1:]
    # Found and followed, it no longer needs them.
    assert session.step(with_square(grey(), 4, 4)).objects[0].visible
    assert session.remove_reference(obj) == kept[1:]  # 0 = all of them
    assert session.references(obj) == [] and session.object_ids == [obj]  # the object stays
    with pytest.raises(PromptError, match="has no references"):
        session.remove_reference(obj)
    assert session.step(with_square(grey(), 5, 5)).objects[0].visible


def test_a_reference_on_a_tracked_object_keeps_it_tracked() -> None:
    session = SegmentationSession(FakeBackend())
    session.step(grey(), stamp_ns=1)
    obj = session.add_prompt(Prompt(box=[0, 0, 10, 10])).object_id
    image, mask = reference_image()
    res = session.add_reference(image, Prompt(mask=mask), obj, label="renamed")
    assert res.object_id == obj and session.label_of(obj) == "renamed"
    tracked = session.step(grey(), stamp_ns=2).get(obj)
    assert tracked is not None and tracked.visible and tracked.bbox == (0, 0, 10, 10)


def test_bad_references_are_refused_and_change_nothing() -> None:
    session = SegmentationSession(FakeBackend(), max_objects=4)
    image, mask = reference_image()
    session.step(grey(), stamp_ns=1)
    kept = session.add_prompt(Prompt(box=[0, 0, 10, 10])).object_id
    before = session.object_ids

    with pytest.raises(PromptError, match="outside the 40x30"):
        session.add_reference(image, Prompt(points=[[45, 5]]))
    with pytest.raises(PromptError, match="mask is 64x48 but the frame is 40x30"):
        session.add_reference(image, Prompt(mask=np.ones((H, W), bool)))
    with pytest.raises(PromptError, match="no text"):
        session.add_reference(image, Prompt(text="red box"))
    with pytest.raises(FrameError, match="RGB uint8"):
        session.add_reference(image[..., 0], Prompt(mask=mask))
    with pytest.raises(PromptError, match="label is longer"):
        session.add_reference(image, Prompt(mask=mask), label="x" * 300)
    with pytest.raises(UnknownObjectError, match="unknown object id '7'"):
        session.add_reference(image, Prompt(mask=mask), "7")
    with pytest.raises(UnknownObjectError):
        session.remove_reference("7", 1)
    with pytest.raises(UnsupportedPromptError, match="multimask"):
        classic = SegmentationSession(ClassicBackend())
        classic.add_reference(image, Prompt(mask=mask), multimask=True)
    assert session.object_ids == before
    assert session.step(grey(), stamp_ns=2).get(kept) is not None


def test_a_backend_without_references_refuses_naming_those_that_have_them() -> None:
    class NoReferences(FakeBackend):
        capabilities = Capabilities(multimask=True)

    session = SegmentationSession(NoReferences())
    image, mask = reference_image()
    with pytest.raises(UnsupportedPromptError, match=r"'fake' backend cannot.*classic, sam2, sam3"):
        session.add_reference(image, Prompt(mask=mask))
    assert session.object_ids == []


def test_a_failing_backend_leaves_no_object_and_the_id_free() -> None:
    faulty = FaultyBackend(FakeBackend())
    session = SegmentationSession(faulty)
    image, mask = reference_image()
    faulty.fail_next("add_reference")
    with pytest.raises(BackendError):
        session.add_reference(image, Prompt(mask=mask))
    assert session.object_ids == []
    assert session.add_reference(image, Prompt(mask=mask)).object_id == "1"


def test_remove_object_and_reset_forget_references() -> None:
    backend = FakeBackend()
    session = SegmentationSession(backend)
    image, mask = reference_image()
    obj = session.add_reference(image, Prompt(mask=mask)).object_id
    session.remove_object(obj)
    assert backend.references(int(obj)) == []
    obj = session.add_reference(image, Prompt(mask=mask)).object_id
    session.reset()
    assert session.object_ids == [] and backend.references(int(obj)) == []
    assert session.step(with_square(grey(), 4, 4)).objects == ()


# ------------------------------------------------------------------ classic backend
_BG = ((90, 96, 88), (160, 156, 140))
STAR = ObjectSpec("star", 0.2, "checker", ((230, 200, 40), (250, 240, 150)), (Key(0, 0.3, 0.5),))
ELLIPSE = ObjectSpec(
    "ellipse",
    0.15,
    "stripes",
    ((30, 60, 190), (90, 160, 230)),
    (Key(0, 0.25, 0.3, 1.0, 30),),
    aspect=0.6,
)


def _photo() -> tuple[np.ndarray, np.ndarray]:
    """The reference: the yellow star alone on noise, 640x480."""
    spec = SequenceSpec("photo", 1, (STAR,), background="noise", bg_colors=_BG, seed=3)
    frame = SyntheticSequence(spec, 640, 480).frame(0)
    return frame.image, frame.masks[1]


def _stream(with_star: bool, frames: int = 16, colors: Any = STAR.colors) -> SyntheticSequence:
    """320x240 (another size than the photo): a blue ellipse all along; the star (when
    `with_star`, in `colors`) off-frame for the first quarter, then in at the right, turned by
    10 degrees (the matched filter takes the reference's silhouette as it is: at 20 it is not
    found)."""
    star = ObjectSpec(
        "star",
        0.2,
        "checker",
        colors,
        (Key(0, 1.4, 0.6, 1.0, 10), Key(0.25, 1.4, 0.6, 1.0, 10), Key(0.6, 0.7, 0.6, 1.0, 10)),
    )
    objects = (ELLIPSE, star) if with_star else (ELLIPSE,)
    spec = SequenceSpec("live", frames, objects, background="noise", bg_colors=_BG, seed=8)
    return SyntheticSequence(spec, 320, 240)


def test_classic_finds_the_object_of_a_reference_where_it_appears_and_tracks_it() -> None:
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    photo, truth = _photo()
    res = session.add_reference(photo, Prompt(mask=truth), label="star")
    np.testing.assert_array_equal(res.mask, truth)  # a mask prompt is taken as it is
    seq = _stream(with_star=True)
    seen: list[float | None] = []
    appears = -1
    for k in range(seq.spec.num_frames):
        frame = seq.frame(k)
        obj = session.step(frame.image, stamp_ns=k + 1).get(res.object_id)
        assert obj is not None and obj.label == "star"
        star = frame.masks[2]
        if appears < 0 and star.any():
            appears = k
        if not star.any():  # not in the stream yet: listed, not visible
            assert not obj.visible, k
        if obj.visible:
            assert jaccard(obj.mask, frame.masks[1]) < 0.05  # never on the ellipse
        seen.append(round(jaccard(obj.mask, star), 2) if obj.visible else None)
    # Measured: in from frame 6, found on frame 7 (J 1.0, 0.77, 0.92, then >= 0.98).
    assert appears > 3
    first = next(k for k, j in enumerate(seen) if j is not None)
    assert first <= appears + 2, seen
    after = seen[first:]
    assert None not in after, seen  # once found, followed
    assert min(j for j in after[2:] if j is not None) >= 0.8, seen


@pytest.mark.parametrize(
    "colors",
    [
        pytest.param(None, id="absent"),
        # The same star, checkered in green: the shape alone does not make it the object.
        pytest.param(((40, 170, 60), (150, 230, 150)), id="same shape other colours"),
    ],
)
def test_classic_takes_no_look_alike_of_another_colour(colors: Any) -> None:
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    photo, truth = _photo()
    obj = session.add_reference(photo, Prompt(box=np.asarray(_box(truth), np.float32))).object_id
    seq = _stream(with_star=colors is not None, frames=12, colors=colors or STAR.colors)
    for k in range(seq.spec.num_frames):
        found = session.step(seq.frame(k).image, stamp_ns=k + 1).get(obj)
        assert found is not None and not found.visible, k


def test_classic_refinds_a_lost_object_anywhere_from_its_reference() -> None:
    """An object prompted on the stream, with a reference: after it leaves for two frames and
    comes back on the other side (60 % of the frame away: its own search looks within about
    2 x its size), the reference finds it. Without the reference it stays lost (checked)."""
    backend = ClassicBackend()
    session = SegmentationSession(backend, score_threshold=0.5)
    photo, truth = _photo()
    spec = SequenceSpec(
        "jump",
        12,
        (
            ObjectSpec(
                "star",
                0.2,
                "checker",
                STAR.colors,
                (Key(0, 0.2, 0.5), Key(0.3, 0.2, 0.5), Key(0.31, -0.5, 0.5), Key(0.45, -0.5, 0.5),
                 Key(0.46, 0.8, 0.45), Key(1.0, 0.8, 0.45)),
            ),
        ),
        background="noise",
        bg_colors=_BG,
        seed=5,
    )  # fmt: skip
    seq = SyntheticSequence(spec, 320, 240)
    first = seq.frame(0)
    session.step(first.image, stamp_ns=1)
    obj = session.add_prompt(Prompt(mask=first.masks[1])).object_id
    session.add_reference(photo, Prompt(mask=truth), obj)
    states = []
    for k in range(1, seq.spec.num_frames):
        frame = seq.frame(k)
        out = session.step(frame.image, stamp_ns=k + 1).get(obj)
        assert out is not None
        states.append(round(jaccard(out.mask, frame.masks[1]), 2) if out.visible else None)
    assert None in states, states  # it was lost while away
    assert states[-1] is not None and states[-1] >= 0.7, states


def test_classic_references_are_bounded_removable_and_refused_when_empty() -> None:
    backend = ClassicBackend()
    photo, truth = _photo()
    for _ in range(MAX_REFERENCES + 1):
        backend.add_reference(5, photo, Prompt(mask=truth))
    assert backend.references(5) == list(range(2, MAX_REFERENCES + 2))
    backend.remove_reference(5, 3)
    with pytest.raises(PromptError, match="references: 2, 4, 5"):
        backend.remove_reference(5, 3)
    # A box GrabCut segments on the photo; the answer is at the photo's size.
    out = backend.add_reference(6, photo, Prompt(box=np.asarray(_box(truth), np.float32)))
    assert out.mask.shape == truth.shape and jaccard(out.mask, truth) >= 0.8
    assert 0.5 <= out.score <= 1.0
    flat = grey(128, 64, 64)
    with pytest.raises(PromptError):  # a click GrabCut finds nothing on
        backend.add_reference(7, flat, Prompt(points=[[1, 1]], point_labels=[0]))
    assert backend.references(7) == []
    backend.remove_object(5)
    assert backend.references(5) == []


#: Two shades of one colour bin of the classic backend's Lab histogram (L 200 and 226 of 255,
#: the same a, b): a pink pillow and the lighter pink wall behind it, 42 RGB levels apart.
_PINK, _WALL = (223, 186, 176), (249, 215, 204)


def _pillow_scene(look_alike: bool, pillow: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """320x240 grey (noise sigma 3): the 'pillow', a 40 x 40 square of `_PINK` (when `pillow`),
    against a strip of `_WALL` on its right; with `look_alike`, a square of `_WALL` of the
    pillow's size elsewhere, on clear grey, so that it stands out more than the pillow does.
    Returns the image and the pillow's mask."""
    rng = np.random.default_rng(seed)
    image = np.empty((240, 320, 3), np.float32)
    image[:] = (90, 96, 88)
    truth = np.zeros((240, 320), bool)
    if pillow:
        truth[100:140, 200:240] = True
        image[truth] = _PINK
    image[90:150, 240:256] = _WALL
    if look_alike:
        image[100:140, 40:80] = _WALL
    image += rng.normal(0.0, 3.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), truth


@pytest.mark.parametrize("pillow", [True, False], ids=["present", "absent"])
def test_classic_takes_no_look_alike_of_another_shade_that_stands_out_more(pillow: bool) -> None:
    """The bedroom failure on a hand-made scene: the reference shows the pillow by its mask
    (the wall strip beside it); on the stream the pillow is where it was, and a square of the
    wall's shade stands out more on the matched filter (1.37x the reference's contrast against
    the pillow's 1.00x: the strip lies in the pillow's ring) and passes every histogram gate
    (one colour bin for both shades). The colour mixtures learnt on the reference put that
    shade in the background: the pillow is found, the square never taken, also when the
    pillow is not there. Before the mixture gate the square was taken on the first frame and
    followed (J with it 0.8, then 1.0)."""
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    reference, mask = _pillow_scene(look_alike=False, pillow=True, seed=1)
    obj = session.add_reference(reference, Prompt(mask=mask)).object_id
    square = np.zeros((240, 320), bool)
    square[100:140, 40:80] = True
    for k in range(6):
        image, truth = _pillow_scene(look_alike=True, pillow=pillow, seed=10 + k)
        found = session.step(image, stamp_ns=k + 1).get(obj)
        assert found is not None
        if found.visible:
            assert not (found.mask & square).any(), f"frame {k}: taken on the look-alike"
        if pillow:  # measured: J 0.89, then 0.88
            assert found.visible and jaccard(found.mask, truth) >= 0.8, k
        else:
            assert not found.visible, k


_BEDROOM = pathlib.Path(__file__).resolve().parents[1] / "data" / "bedroom.mp4"
#: data/README.md's boxes on frame 0 of the clip (x0, y0, x1, y1 pixels of 960x540).
_BEDROOM_BOXES = {
    "girl": (310, 0, 515, 400),
    "boy": (145, 135, 295, 400),
    "pillow": (530, 288, 680, 412),
}


def _bedroom_frames(last: int) -> list[np.ndarray]:
    """Clip frames 0..`last` (RGB uint8 540x960x3); skips when the clip cannot be decoded."""
    capture = cv2.VideoCapture(str(_BEDROOM))
    frames = []
    while len(frames) <= last:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    if len(frames) <= last:
        pytest.skip(f"could not decode {last + 1} frames of {_BEDROOM} (got {len(frames)})")
    return frames


@pytest.mark.skipif(not _BEDROOM.is_file(), reason=f"bedroom clip not found at {_BEDROOM}")
def test_classic_finds_the_bedroom_pillow_on_itself_not_on_a_wall_of_its_colours() -> None:
    """References from frame 0 of the shipped clip (the three boxes), the stream from frame 40
    (the camera has barely moved; the pillow has not): the pillow is found on frame 40 where it
    is, not on the patch of pink wall under the window, left of the girl, that scored higher
    on the matched filter and passed the histogram gates (Bhattacharyya 0.98: the Lab
    histogram's bins cannot tell the two pinks apart; GrabCut's colour mixtures can). The boy,
    hidden behind the girl over these frames, is not "found" (on that wall patch he was, on
    frame 63, at 0.61 of his reference's contrast)."""
    frames = _bedroom_frames(70)
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    ids = {
        name: session.add_reference(frames[0], Prompt(box=np.asarray(box, np.float32))).object_id
        for name, box in _BEDROOM_BOXES.items()
    }
    x0, y0, x1, y1 = _BEDROOM_BOXES["pillow"]
    where = np.zeros(frames[0].shape[:2], bool)
    where[y0 - 30 : y1 + 30, x0 - 30 : x1 + 30] = True  # its box, and the camera's drift
    for i in range(40, 71):
        result = session.step(frames[i], stamp_ns=i + 1)
        pillow, boy = result.get(ids["pillow"]), result.get(ids["boy"])
        assert pillow is not None and boy is not None
        if i == 40:
            assert pillow.visible, "the pillow is in view, unmoved: it is found at once"
            inside = float((pillow.mask & where).sum()) / max(1, int(pillow.mask.sum()))
            assert inside >= 0.9, f"frame 40: {inside:.2f} of the pillow's mask on it"
        assert not boy.visible, f"frame {i}: the hidden boy reported at {boy.bbox}"


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ------------------------------------------------------------------ benchmark protocol
def _write_clip(root: pathlib.Path, frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    img_dir = root / "JPEGImages" / "480p" / "toy"
    ann_dir = root / "Annotations" / "480p" / "toy"
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for i, (image, mask) in enumerate(frames):
        # PNG: lossless, so the fake finds exactly the reference's colour.
        path = img_dir / f"{i:05d}.jpg"
        cv2.imwrite(str(path.with_suffix(".png")), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        path.with_suffix(".png").rename(path)
        cv2.imwrite(str(ann_dir / f"{i:05d}.png"), mask.astype(np.uint8) * 255)


def test_bench_protocol_on_a_hand_made_clip(tmp_path: pathlib.Path) -> None:
    """Fake backend (found where the reference's colour is, then stays put): every number of a
    row is known. Frame 0 = reference; stream from frame 2; the square appears on frame 4 and
    then moves by half its size on frame 5 (the fake stays: J 1/3), frame 6 is left out."""

    def square(x0: int) -> tuple[np.ndarray, np.ndarray]:
        mask = np.zeros((H, W), bool)
        if x0 >= 0:
            mask[10:18, x0 : x0 + 8] = True
        return with_square(grey(), x0, 10) if x0 >= 0 else grey(), mask

    _write_clip(tmp_path, [square(4), square(-1), square(-1), square(-1), square(30),
                           square(34), square(-1)])  # fmt: skip
    (seq,) = davis.list_sequences(tmp_path)
    row = reference_bench.evaluate(seq, start=2, backend="fake")
    assert row["found"] == 1 and row["frames_to_find"] == [2] and row["wrong_finds"] == 0
    # Scored frames 2..5: empty/empty 1, 1, then 1 and 1/3 after it is found.
    assert row["J_found"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    assert row["J_stream"] == pytest.approx((1 + 1 + 1 + 1 / 3) / 4, abs=1e-4)
    assert row["frames"] == 5
    rows = reference_bench.run(tmp_path, starts=[2], backend="fake", prompted=False)
    assert rows[-1]["bench"] == "reference_mean" and rows[-1]["found"] == 1
    with pytest.raises(ValueError, match="start must be"):
        reference_bench.evaluate(seq, start=6, backend="fake")


def test_bench_counts_a_find_on_the_wrong_thing(tmp_path: pathlib.Path) -> None:
    def frame(red_at: int | None, truth_at: int | None) -> tuple[np.ndarray, np.ndarray]:
        image = grey() if red_at is None else with_square(grey(), red_at, 10)
        mask = np.zeros((H, W), bool)
        if truth_at is not None:
            mask[30:38, truth_at : truth_at + 8] = True
        return image, mask

    # The reference's colour shows up on frame 2, away from where the truth says the object is.
    ref = frame(4, None)
    ref[1][10:18, 4:12] = True
    _write_clip(tmp_path, [ref, frame(None, None), frame(40, 10), frame(40, 10), frame(None, 10)])
    (seq,) = davis.list_sequences(tmp_path)
    row = reference_bench.evaluate(seq, start=1, backend="fake", prompted=False)
    assert row["found"] == 1 and row["wrong_finds"] == 1 and row["J_found"] == 0.0


def test_bench_skips_without_data(tmp_path: pathlib.Path) -> None:
    (row,) = reference_bench.run(tmp_path / "absent")
    assert "skipped" in row and "absent" in row["skipped"]


DEV = davis.DEFAULT_DIR


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEV / "JPEGImages" / "480p").is_dir(),
    reason=f"DAVIS dev subset not found at {DEV} (set SEG_ROS_DAVIS; reference floor not checked)",
)
def test_classic_finds_dev_objects_from_a_reference_of_frame_0_and_not_absent_ones() -> None:
    # Measured (2-core CPU, shipped defaults), stream from frame 10: 6/6 found, median 0 frames
    # to find, J_found 0.532, 0 wrong finds; searched for in the 5 other clips (30 pairs, the
    # object absent): no pair with a find (1 before the colour-mixture gate).
    rows = reference_bench.run(DEV, starts=[10], prompted=False)
    (mean,) = [r for r in rows if r["bench"] == "reference_mean"]
    assert mean["found"] >= 5 and mean["frames_to_find_median"] <= 2
    assert mean["J_found"] >= 0.48 and mean["wrong_finds"] <= 1
    (gone,) = [r for r in rows if r["bench"] == "reference_absent"]
    assert gone["pairs"] == 30 and gone["pairs_with_find"] <= 3
