"""The classic (OpenCV) backend on synthetic scenes with exact ground truth.

Prompts must follow object boundaries (not return the prompt's box or a disc around the click),
tracking must keep up with moving objects, report them lost while hidden and find them again.
Floors on J are set from the measured quality benchmark (`python -m seg_ros.bench.quality`,
same sequences, same prompts, same code path); each one says its measurement and margin.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from seg_ros.bench.metrics import jaccard
from seg_ros.bench.quality import evaluate
from seg_ros.engine import (
    FrameResult,
    Prompt,
    PromptError,
    SegmentationSession,
    UnsupportedPromptError,
)
from seg_ros.engine.backends.classic import ClassicBackend, ClassicConfig, build
from seg_ros.engine.classic import ops
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.registry import build_backend
from seg_ros.tools.synthetic import (
    Key,
    ObjectSpec,
    SequenceSpec,
    SyntheticFrame,
    SyntheticSequence,
    box_of,
    interior_point,
    make_sequence,
)

_BG = ((90, 96, 88), (160, 156, 140))


def _scene(objects: tuple[ObjectSpec, ...], seed: int) -> SyntheticFrame:
    spec = SequenceSpec("still", 1, objects, background="noise", bg_colors=_BG, seed=seed)
    return SyntheticSequence(spec, 640, 480).frame(0)


@pytest.fixture(scope="module")
def distinct() -> SyntheticFrame:
    """A yellow checker star and a blue striped ellipse, apart, on a grey noise background."""
    return _scene(
        (
            ObjectSpec(
                "star", 0.2, "checker", ((230, 200, 40), (250, 240, 150)), (Key(0, 0.32, 0.5),)
            ),
            ObjectSpec(
                "ellipse",
                0.13,
                "stripes",
                ((30, 60, 190), (90, 160, 230)),
                (Key(0, 0.75, 0.45, 1.0, 30),),
                aspect=0.6,
            ),
        ),
        seed=11,
    )


@pytest.fixture(scope="module")
def pair() -> SyntheticFrame:
    """Two touching red objects of similar colours: the box (2) in front of the ellipse (1)."""
    return _scene(
        (
            ObjectSpec(
                "ellipse", 0.14, "noise", ((200, 40, 40), (240, 120, 70)), (Key(0, 0.4, 0.5),)
            ),
            ObjectSpec(
                "rect",
                0.12,
                "stripes",
                ((190, 50, 45), (230, 100, 80)),
                (Key(0, 0.56, 0.5),),
                depth=1,
            ),
        ),
        seed=9,
    )


def _session(frame: SyntheticFrame) -> SegmentationSession:
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    session.step(frame.image, stamp_ns=1)
    return session


def _box_mask(gt: np.ndarray) -> np.ndarray:
    box = box_of(gt)
    assert box is not None
    out = np.zeros_like(gt)
    out[box[1] : box[3], box[0] : box[2]] = True
    return out


def _disc(shape: tuple[int, ...], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2


# ---------------------------------------------------------------------------- prompts
def test_box_prompt_follows_the_outline_not_the_box(distinct: SyntheticFrame) -> None:
    session = _session(distinct)
    star = distinct.masks[1]
    res = session.add_prompt(Prompt(box=box_of(star)), label="star")
    assert res.object.visible and res.object.label == "star"
    # A star fills ~55% of its box; a mask that follows its spikes scores far above that.
    assert jaccard(_box_mask(star), star) < 0.65
    assert jaccard(res.object.mask, star) > 0.9
    assert res.object.score >= 0.5


def test_point_prompt_grows_to_the_whole_object(distinct: SyntheticFrame) -> None:
    session = _session(distinct)
    for gt in (distinct.masks[1], distinct.masks[2]):
        point = interior_point(gt)
        assert point is not None
        res = session.add_prompt(Prompt(points=[point]))
        # The object is found whole (a disc around the click would be a small fraction).
        assert jaccard(_disc(gt.shape, point, 20), gt) < 0.25
        assert jaccard(res.object.mask, gt) > 0.88


def test_scribble_seeds_the_object_and_full_mask_is_taken_as_is(
    distinct: SyntheticFrame,
) -> None:
    session = _session(distinct)
    ellipse = distinct.masks[2]
    stroke = np.zeros(ellipse.shape, np.uint8)
    x, y = interior_point(ellipse) or (0.0, 0.0)
    cv2.line(stroke, (int(x) - 25, int(y) + 12), (int(x) + 25, int(y) - 12), 1, 3)
    stroke = stroke.astype(bool) & ellipse
    assert stroke.sum() < 0.05 * ellipse.sum()
    res = session.add_prompt(Prompt(mask=stroke, scribble=True))
    assert jaccard(res.object.mask, ellipse) > 0.88
    assert res.object.mask[stroke].all()  # scribbled pixels are definite foreground
    # A full mask is the object, pixel for pixel.
    full = session.add_prompt(Prompt(mask=distinct.masks[1]))
    np.testing.assert_array_equal(full.object.mask, distinct.masks[1])
    assert full.object.score == 1.0
    # A rough mask with a click is a first guess that the image corrects.
    star = distinct.masks[1]
    rough = cv2.dilate(star.astype(np.uint8), np.ones((21, 21), np.uint8)).astype(bool)
    fixed = session.add_prompt(Prompt(mask=rough, points=[interior_point(star)]))
    assert jaccard(rough, star) < 0.7 and jaccard(fixed.object.mask, star) > 0.93


def test_background_point_refines_and_foreground_points_join(pair: SyntheticFrame) -> None:
    ellipse, box = pair.masks[1], pair.masks[2]
    pe, pb = interior_point(ellipse), interior_point(box)
    assert pe is not None and pb is not None
    session = _session(pair)
    first = session.add_prompt(Prompt(points=[pe]))
    leak = int((first.object.mask & box).sum())
    # Refinement: the same click plus a background click on the neighbour (as a user does).
    refined = session.add_prompt(
        Prompt(points=[pe, pb], point_labels=[1, 0]), object_id=first.object_id
    )
    assert refined.object_id == first.object_id
    assert int((refined.object.mask & box).sum()) < 0.5 * leak
    assert jaccard(refined.object.mask, ellipse) > jaccard(first.object.mask, ellipse)
    assert jaccard(refined.object.mask, ellipse) > 0.93
    # Two foreground clicks, one on each, take both.
    both = session.add_prompt(Prompt(points=[pe, pb], point_labels=[1, 1]))
    assert jaccard(both.object.mask, ellipse | box) > 0.9


def test_one_shot_segment_leaves_tracking_alone(distinct: SyntheticFrame) -> None:
    session = _session(distinct)
    tracked = session.add_prompt(Prompt(box=box_of(distinct.masks[2])))
    out = session.segment(Prompt(box=box_of(distinct.masks[1])))
    assert len(out) == 1 and out[0].object_id == ""
    assert jaccard(out[0].mask, distinct.masks[1]) > 0.9
    # On a given image too, and the tracked object is unchanged.
    other = session.segment(Prompt(points=[interior_point(distinct.masks[2])]), distinct.image)
    assert jaccard(other[0].mask, distinct.masks[2]) > 0.88
    assert session.object_ids == [tracked.object_id]
    latest = session.latest
    assert latest is not None
    obj = latest.get(tracked.object_id)
    assert obj is not None and np.array_equal(obj.mask, tracked.object.mask)


# ---------------------------------------------------------------------------- tracking
# Floors from the quality benchmark at 640x480 (measured on this 2-core CPU; the algorithm is
# deterministic, margins cover other OpenCV builds): box prompt, J / J&F per sequence
#   translate     J 0.966  J&F 0.982   -> floor J 0.90
#   occlusion     J 0.943  J&F 0.954   -> floor J 0.85 (the hidden frames cost the most)
#   exit_reenter  J 0.958  J&F 0.970   -> floor J 0.85
#   point prompts score within 0.01 of box prompts on these three -> the same floors.
# The fake backend (masks stay where prompted) scores J 0.15 / 0.45 / 0.11 with boxes on them:
# the floors are far above what a non-tracker gets.
@pytest.mark.parametrize(
    ("sequence", "prompt", "floor"),
    [
        ("translate", "box", 0.90),
        ("translate", "point", 0.90),
        ("occlusion", "box", 0.85),
        ("exit_reenter", "box", 0.85),
    ],
)
def test_tracking_quality_floor(sequence: str, prompt: str, floor: float) -> None:
    res = evaluate(make_sequence(sequence), "classic", prompt)
    assert res["J"] > floor, res
    assert res["F"] > floor, res


def _run(
    name: str, config: ClassicConfig | None = None
) -> tuple[SyntheticSequence, list[dict[int, tuple[bool, float, float]]]]:
    """Track every object of `name` prompted by box on its first frame; per frame and object:
    (reported visible, J, ground-truth area fraction of the object's full area)."""
    seq = make_sequence(name)
    session = SegmentationSession(ClassicBackend(config), score_threshold=0.5)
    ids: dict[int, str] = {}
    log = []
    for frame in seq:
        result = session.step(frame.image, stamp_ns=frame.index + 1)
        row = {}
        for gt_id, obj_id in ids.items():
            obj = result.get(obj_id)
            assert obj is not None
            gt = frame.masks[gt_id]
            pred = obj.mask if obj.visible else np.zeros_like(gt)
            assert obj.visible == (obj.score >= 0.5)  # scores are calibrated on 0.5
            full = max(1, int(frame.full_masks[gt_id].sum()))
            row[gt_id] = (obj.visible, jaccard(pred, gt), gt.sum() / full)
        log.append(row)
        for gt_id in seq.object_ids:
            if gt_id not in ids and frame.masks[gt_id].sum() >= 64:
                ids[gt_id] = session.add_prompt(Prompt(box=box_of(frame.masks[gt_id]))).object_id
    return seq, log


def test_occluded_object_is_reported_lost_then_reacquired() -> None:
    _, log = _run("occlusion")
    ball = [row[1] for row in log if 1 in row]
    hidden = [vis for vis, _, frac in ball if frac == 0.0]
    assert len(hidden) >= 5  # the sequence hides the ball for several frames
    assert not any(hidden)  # never reported visible while fully hidden
    first_hidden = next(i for i, (_, _, frac) in enumerate(ball) if frac == 0.0)
    back = [(vis, j) for vis, j, frac in ball[first_hidden:] if frac > 0.8]
    assert back and all(vis for vis, _ in back[2:])  # re-acquired within two frames
    assert np.mean([j for _, j in back[2:]]) > 0.9
    # The occluder in front is tracked throughout.
    assert all(row[2][0] and row[2][1] > 0.9 for row in log if 2 in row)


# GrabCut in the band (`refine: grabcut`) once stuck at J 0.71 after the exit (its cut began
# from the flow's prediction, so the part lost at the border stayed sure background).
@pytest.mark.parametrize("refine", ["colour", "grabcut"])
def test_object_leaving_the_frame_is_lost_and_found_when_it_returns(refine: str) -> None:
    _, log = _run("exit_reenter", ClassicConfig(refine=refine))
    blob = [row[1] for row in log if 1 in row]
    outside = [vis for vis, _, frac in blob if frac == 0.0]
    assert len(outside) >= 10 and not any(outside)
    last = blob[-5:]
    assert all(vis and j > 0.85 for vis, j, _ in last)


def test_refining_while_streaming_and_removing() -> None:
    seq = make_sequence("translate", 320, 240, num_frames=20)
    # One kept frame (memory_frames=1): the history holds the latest frame only.
    session = SegmentationSession(build_backend(BackendConfig(backend="classic", memory_frames=1)))
    frames = list(seq)
    session.step(frames[0].image, stamp_ns=1)
    gt1 = frames[0].masks[1]
    a = session.add_prompt(Prompt(points=[interior_point(gt1)]))
    b = session.add_prompt(Prompt(box=box_of(frames[0].masks[2])))
    for f in frames[1:10]:
        session.step(f.image, stamp_ns=f.index + 1)
    f = frames[9]
    # A background click next to object 1 on a later frame refines it in place.
    box = box_of(f.masks[1])
    assert box is not None
    outside = (max(0.0, box[0] - 6.0), (box[1] + box[3]) / 2)
    res = session.add_prompt(
        Prompt(points=[interior_point(f.masks[1]), outside], point_labels=[1, 0]),
        object_id=a.object_id,
    )
    assert jaccard(res.object.mask, f.masks[1]) > 0.85
    for f in frames[10:]:
        result = session.step(f.image, stamp_ns=f.index + 1)
    assert jaccard(result.get(a.object_id).mask, frames[-1].masks[1]) > 0.85  # type: ignore[union-attr]
    session.remove_object(b.object_id)
    assert session.object_ids == [a.object_id]
    stats = session.backend.stats()
    assert stats["objects"] == 1.0 and stats["frames_in_memory"] == 1.0
    session.reset()
    assert session.backend.stats()["objects"] == 0.0


# ---------------------------------------------------------------------------- refusals
def test_text_is_refused_naming_the_text_backends(distinct: SyntheticFrame) -> None:
    session = _session(distinct)
    with pytest.raises(UnsupportedPromptError, match=r"no text prompts.*sam3"):
        session.add_text("yellow star")
    with pytest.raises(UnsupportedPromptError, match="sam3"):
        session.segment(Prompt(text="star"))
    with pytest.raises(UnsupportedPromptError, match="multimask"):
        session.add_prompt(Prompt(points=[[10, 10]]), multimask=True)
    assert session.object_ids == []


def test_bad_prompts_are_refused_and_change_nothing(distinct: SyntheticFrame) -> None:
    # One kept frame: a prompt stamped on the previous frame is no longer in memory.
    session = SegmentationSession(ClassicBackend(ClassicConfig(history_frames=1)))
    session.step(distinct.image, stamp_ns=1)
    kept = session.add_prompt(Prompt(box=box_of(distinct.masks[1])))
    with pytest.raises(PromptError, match="foreground point"):
        session.add_prompt(Prompt(points=[[50, 50]], point_labels=[0]))
    with pytest.raises(PromptError, match="outside"):
        session.add_prompt(Prompt(points=[[700, 50]]))
    session.step(distinct.image, stamp_ns=2)
    with pytest.raises(PromptError, match="no frame with stamp 1"):
        session.add_prompt(Prompt(points=[[50, 50]]), stamp_ns=1)
    assert session.object_ids == [kept.object_id]
    backend = session.backend
    with pytest.raises(PromptError, match="not in memory"):
        backend.add_prompt(0, 99, Prompt(points=[[5, 5]]))


def test_config_and_registry() -> None:
    backend = build_backend(BackendConfig(backend="classic", input_size=256))
    assert isinstance(backend, ClassicBackend) and backend.config.work_size == 256
    # Prompts may be stamped on a recent frame (issue 11, finding 4): 30 kept by default.
    assert backend.memory_frames == 30 and backend.capabilities.past_frames
    with pytest.raises(ValueError, match="unknown classic backend options"):
        build(BackendConfig(backend="classic", options={"gpu": True}))
    with pytest.raises(ValueError, match="flow_preset"):
        ClassicConfig(flow_preset="slow")
    with pytest.raises(ValueError, match="work_size"):
        ClassicConfig(work_size=8)
    with pytest.raises(ValueError, match="refine"):
        ClassicConfig(refine="snake")
    with pytest.raises(ValueError, match="grabcut_agree"):
        ClassicConfig(grabcut_agree=1.5)
    with pytest.raises(ValueError, match="settle_frames"):
        ClassicConfig(settle_frames=-1)
    with pytest.raises(ValueError, match="still_after"):
        ClassicConfig(still_after=0)


def test_tiny_and_odd_frames_do_not_break_tracking() -> None:
    rng = np.random.default_rng(0)
    session = SegmentationSession(ClassicBackend())
    image = rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)
    session.step(image)
    res = session.add_prompt(Prompt(box=[1, 1, 6, 5]))
    assert res.object.mask.shape == (6, 9)
    for _ in range(3):
        out = session.step(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8))
        assert out.objects[0].mask.shape == (6, 9)
        assert 0.0 <= out.objects[0].score <= 1.0


# ---------------------------------------------------------------------------- past frames
def test_prompt_on_a_recent_past_frame_is_carried_to_the_latest() -> None:
    """A box drawn on a frame the user saw a moment ago (issue 11, finding 4): the object is
    segmented there and brought forward, not refused and not left where it was."""
    frames = list(make_sequence("translate", 320, 240, num_frames=40))

    def track_from(prompt_frame: int, settle: int = 5) -> tuple[SegmentationSession, list[float]]:
        config = ClassicConfig(history_frames=20, settle_frames=settle)
        session = SegmentationSession(ClassicBackend(config))
        for frame in frames[:21]:
            session.step(frame.image, stamp_ns=1000 + frame.index)
        box = box_of(frames[prompt_frame].masks[1])
        res = session.add_prompt(Prompt(box=box), stamp_ns=1000 + prompt_frame)
        # The answer shows the object on the prompted frame.
        assert res.frame_index == prompt_frame and res.object.visible
        assert jaccard(res.object.mask, frames[prompt_frame].masks[1]) > 0.8
        js = []
        for frame in frames[21:30]:
            out = session.step(frame.image, stamp_ns=1000 + frame.index).get(res.object_id)
            assert out is not None
            js.append(jaccard(out.mask, frame.masks[1]) if out.visible else 0.0)
        return session, js

    session, past = track_from(5)  # 15 frames back
    # The same object boxed on the latest frame, not settled by motion: settling on the frames
    # after the prompt (here the kept ones, for the past box) lifts the latest box's mean J
    # 0.63 -> 0.79 on this sequence, and leaves the past box's at 0.63.
    _, latest = track_from(20, settle=0)
    # Brought forward: it tracks as well as a box on the latest frame would (the sequence has
    # its own hard frames: J 0.37..0.86 either way), far from the stale box's place.
    assert np.mean(past) > np.mean(latest) - 0.05 and np.mean(past) > 0.5, (past, latest)
    assert jaccard(_box_mask(frames[5].masks[1]), frames[21].masks[1]) < 0.2
    # The history is bounded: a frame older than it is refused with a clear message.
    with pytest.raises(PromptError, match="no frame with stamp 1001"):
        session.add_prompt(Prompt(box=box_of(frames[1].masks[1])), stamp_ns=1001)
    assert session.backend.memory_frames == 20
    assert session.backend.stats()["frames_in_memory"] == 20.0


def test_history_frames_comes_from_memory_frames_and_is_validated() -> None:
    assert build(BackendConfig(backend="classic", memory_frames=7)).memory_frames == 7
    assert build(BackendConfig(backend="classic")).memory_frames == 30
    with pytest.raises(ValueError, match="history_frames"):
        ClassicConfig(history_frames=0)


def _vanishing_object_beside_a_part_look_alike(
    config: ClassicConfig,
) -> list[tuple[int, bool, float]]:
    """A disc, red above and blue below, moves right over a textured background and vanishes
    on frame 12; beside it sits a red disc of the same size: the object's colours, but only
    some of them. Per frame after the prompt: (index, reported visible, the mask's share on
    the look-alike)."""
    rng = np.random.default_rng(3)
    h, w = 240, 320
    texture = rng.integers(90, 160, (h // 8, w // 8, 3)).astype(np.uint8)
    background = cv2.resize(texture, (w, h), interpolation=cv2.INTER_NEAREST)
    look_alike = _disc((h, w), (200.0, 120.0), 14)
    yy = np.mgrid[:h, :w][0]
    session = SegmentationSession(ClassicBackend(config), score_threshold=0.5)
    obj_id, rows = "", []
    for i in range(30):
        image = background.copy()
        image[look_alike] = (200, 30, 30)
        disc = _disc((h, w), (120.0 + 3 * i, 120.0), 14)
        if i < 12:
            image[disc & (yy < 120)] = (200, 30, 30)
            image[disc & (yy >= 120)] = (30, 30, 200)
        noise = rng.integers(-3, 4, image.shape)
        image = np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        result = session.step(image, stamp_ns=i + 1)
        if i == 0:
            obj_id = session.add_prompt(Prompt(mask=disc)).object_id
            continue
        obj = result.get(obj_id)
        assert obj is not None
        on = float((obj.mask & look_alike).sum()) / max(1, int(obj.mask.sum()))
        rows.append((i, obj.visible, on))
    return rows


def test_lost_object_is_not_reacquired_on_a_region_of_only_some_of_its_colours() -> None:
    """The bedroom failure (the boy, white shirt and dark sleeves, lost behind the girl and
    then "found" on a dark cushion) on a hand-made scene: every pixel of the look-alike has
    one of the object's colours, but not in the object's proportions (Bhattacharyya
    coefficient ~0.7 < `reacquire_similarity` 0.8): it is refused and the object stays lost,
    its id kept. Without the check the same scene re-acquires on the look-alike."""
    rows = _vanishing_object_beside_a_part_look_alike(ClassicConfig())
    assert all(vis and on == 0.0 for i, vis, on in rows if i < 12)  # tracked, not confused
    assert not any(vis for i, vis, _ in rows if i >= 13), rows
    unguarded = _vanishing_object_beside_a_part_look_alike(ClassicConfig(reacquire_similarity=0))
    assert any(vis and on > 0.5 for i, vis, on in unguarded if i >= 13), unguarded


def test_reacquisition_options_are_validated() -> None:
    with pytest.raises(ValueError, match="reacquire_similarity"):
        ClassicConfig(reacquire_similarity=1.5)


_BEDROOM = pathlib.Path(__file__).resolve().parents[1] / "data" / "bedroom.mp4"

#: The dark cushion right of the girl on the bedroom clip at 640x360 (x0, y0, x1, y1), read off
#: clip frames 60-90; the boy's colour model (his dark sleeve) matches it.
_CUSHION = (250, 215, 300, 272)


def _on_cushion(mask: np.ndarray) -> float:
    """Fraction of `mask` (640x360 bool) inside `_CUSHION`."""
    x0, y0, x1, y1 = _CUSHION
    return float(np.count_nonzero(mask[y0:y1, x0:x1])) / max(1, int(np.count_nonzero(mask)))


def test_a_refused_lookalike_does_not_keep_the_object_out_of_its_place() -> None:
    """Lost (hidden), then a look-alike where it was (only its dark colour: refused for its
    colour distribution and remembered), then the object itself back at that place. The
    look-alike region changed (its right half turned white): it is forgotten and the object is
    re-acquired at once. Before, the memory kept the object out of that place for as long as it
    stayed lost (never re-found on these 8 frames)."""
    rng = np.random.default_rng(7)

    def frame(kind: str) -> np.ndarray:
        image = np.clip(rng.normal(140, 6, (120, 160, 3)), 0, 255).astype(np.uint8)
        if kind in ("object", "lookalike"):
            image[40:70, 60:90] = (20, 30, 120)  # dark blue
        if kind == "object":
            image[40:70, 75:90] = (235, 235, 235)  # with a white half
        return image

    session = SegmentationSession(ClassicBackend(ClassicConfig(settle_frames=0)))
    plan = ["object"] * 3 + ["none"] * 4 + ["lookalike"] + ["object"] * 8
    seen = []
    for i, kind in enumerate(plan):
        out = session.step(frame(kind), stamp_ns=i + 1)
        if i == 0:
            box = np.array([58, 38, 92, 72], np.float32)
            obj = session.add_prompt(Prompt(box=box)).object_id
            continue
        res = out.get(obj)
        assert res is not None
        seen.append(res.visible)
    assert seen[:2] == [True, True] and not any(seen[2:7]), seen  # lost; look-alike refused
    assert all(seen[8:]), seen  # back at its place: found again


@pytest.mark.skipif(not _BEDROOM.is_file(), reason=f"bedroom clip not found at {_BEDROOM}")
def test_masks_hold_still_on_a_held_frame() -> None:
    """The demo's three prompts on the clip's first frame, then that frame again 30 times (a
    still scene, a camera re-sending a frame): nothing changes, so no mask does. Before, each
    step refined the same image again and the masks crept into look-alike background a band
    a frame: the pillow over the bed sheet and the wall 6,524 -> 11,896 px, the boy into the
    curtain 10,388 -> 14,968 px, in 38 frames. One pixel of motion afterwards is followed."""
    from seg_ros.tools.demo_camera import ClipReader, clip_plan

    plan = clip_plan(640)
    first = ClipReader(str(_BEDROOM), 640).next()
    session = SegmentationSession(ClassicBackend())
    session.step(first, stamp_ns=1)
    ids = [
        session.add_prompt(Prompt(box=np.array([x, y, x + w, y + h], np.float32))).object_id
        for x, y, w, h in [plan["box"], *plan["extra_boxes"]]
    ]
    after_one = session.step(first, stamp_ns=2)
    for i in range(30):
        out = session.step(first, stamp_ns=3 + i)
    for obj in ids:
        a, b = after_one.get(obj), out.get(obj)
        assert a is not None and b is not None and a.visible and b.visible
        assert np.array_equal(a.mask, b.mask), (obj, int(a.mask.sum()), int(b.mask.sum()))
    # The scene shifted by 4 source pixels: refined again, the masks move with it.
    moved = session.step(np.roll(first, 4, axis=1), stamp_ns=40)
    for obj in ids:
        a, m = after_one.get(obj), moved.get(obj)
        assert a is not None and m is not None and m.visible
        assert not np.array_equal(a.mask, m.mask)
        assert jaccard(np.roll(a.mask, 4, axis=1), m.mask) > 0.8


@pytest.mark.slow
@pytest.mark.skipif(not _BEDROOM.is_file(), reason=f"bedroom clip not found at {_BEDROOM}")
def test_bedroom_boy_is_not_reacquired_on_the_cushion() -> None:
    """The demo's prompts (demo_camera.clip_plan) on the shipped clip, every frame, engine
    only: while the boy is hidden behind the girl (from clip frame ~31) he is reported lost;
    where he is reported visible again, his mask lies left of the girl's right edge, where he
    is (measured: his centre x <= 185 px at 640 wide before the loss; the cushion is at ~270).
    Was re-acquired on the cushion on frame 68 (its colours are his sleeves': the click's mask
    was his blue sleeve, 1184 px, and its histogram matched the cushion's at 0.80). Since the
    click is settled by motion his mask on frame 1 is his sleeve and head (2788 px; still not
    the whole boy), his colour model is no longer the cushion's, he is lost behind the girl
    from frame ~38 and not drawn again. Through the node (`make demo`, 90 frames) he is still
    re-found on a dark pillow near the girl's legs at the end of the clip: not fixed there.
    Since `occluded_fraction` he is lost on frame 31 (shrunk beside the girl) and re-found on
    frame 71 on his own sleeve, beside her legs at x 236 (seen on the image: he crawls out to
    her right), then lost again on 76: the test asks that he is never drawn mostly on the
    dark cushion (`_CUSHION`), rather than left of x 230."""
    from seg_ros.tools.demo_camera import ClipReader, clip_plan

    plan = clip_plan(640)
    reader = ClipReader(str(_BEDROOM), 640)
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    boy = ""
    for i in range(90):
        result = session.step(reader.next(), stamp_ns=i + 1)
        if i == 0:
            point = np.array([plan["point"]], np.float32)
            boy = session.add_prompt(
                Prompt(points=point, point_labels=np.ones(1, np.int8))
            ).object_id
            for x, y, bw, bh in [plan["box"], *plan["extra_boxes"]]:
                session.add_prompt(Prompt(box=np.array([x, y, x + bw, y + bh], np.float32)))
            continue
        obj = result.get(boy)
        assert obj is not None
        if obj.visible:
            on = _on_cushion(obj.mask)
            assert on < 0.5, f"clip frame {i}: 'boy' drawn on the cushion ({on:.2f} of him)"


def _wall(rng: np.random.Generator, height: int, width: int, sigma: float = 25) -> np.ndarray:
    """A still textured grey wall (RGB uint8): noise around 128 (`sigma`), blurred."""
    wall = np.clip(rng.normal(128, sigma, (height, width, 1)), 0, 255).repeat(3, axis=2)
    return cv2.GaussianBlur(wall.astype(np.uint8), (5, 5), 0)


def _textured(
    rng: np.random.Generator, colour: tuple[int, int, int], height: int, width: int
) -> np.ndarray:
    """A patch of `colour` with +-20 of noise per channel (RGB uint8)."""
    noise = rng.integers(-20, 20, (height, width, 3))
    return np.clip(np.full((height, width, 3), colour, np.int64) + noise, 0, 255).astype(np.uint8)


def _two_tone_clip(frames: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, truth) of a textured grey wall and an object moving right over it by 3 px a
    frame: its left half red, its right half a textured blue-grey (a shirt and trousers: a
    click on the red gives the red, the colour region of the click; its motion shows the
    whole)."""
    rng = np.random.default_rng(3)
    h, w = 240, 320
    wall = _wall(rng, h, w, 30)
    grey = np.clip(rng.normal(128, 30, (80, 100, 1)), 0, 255).repeat(3, axis=2).astype(np.uint8)
    patch = cv2.GaussianBlur(grey, (5, 5), 0)
    patch[..., 2] = np.clip(patch[..., 2].astype(int) + 60, 0, 255)  # blue-grey
    patch[:, :50] = (200, 40, 40)
    patch[:, :50] = np.clip(patch[:, :50].astype(int) + rng.integers(-15, 15, (80, 50, 3)), 0, 255)
    out = []
    for i in range(frames):
        x0, y0 = 60 + 3 * i, 80
        image = wall.copy()
        image[y0 : y0 + 80, x0 : x0 + 100] = patch
        truth = np.zeros((h, w), bool)
        truth[y0 : y0 + 80, x0 : x0 + 100] = True
        out.append((image, truth))
    return out


def _click_on_the_red_half(frames: list[tuple[np.ndarray, np.ndarray]], settle: int) -> list[float]:
    """J against the truth on every frame after the first, clicked on its red half there."""
    session = SegmentationSession(ClassicBackend(ClassicConfig(settle_frames=settle)))
    js = []
    for i, (image, truth) in enumerate(frames):
        out = session.step(image, stamp_ns=i + 1)
        if i == 0:
            obj = session.add_prompt(Prompt(points=[[85.0, 120.0]])).object_id
            continue
        res = out.get(obj)
        assert res is not None and res.visible, i
        js.append(jaccard(res.mask, truth))
    return js


@pytest.mark.parametrize("settle", [0, 5])
def test_click_settles_to_what_moves_with_it(settle: int) -> None:
    """A click on the red half gives the red half (its colour region); the frames after the
    click show that the blue-grey half beside it moves with it: settling by motion takes the
    whole object, without it the red half is tracked alone. Measured: J 0.5 on every frame
    unsettled; settled 0.5 at the click, 1.0 from the next frame on."""
    js = _click_on_the_red_half(_two_tone_clip(), settle)
    if settle:
        assert js[-1] > 0.85, js
    else:
        assert js[-1] < 0.65, js  # the red half alone: the settling is what makes it whole


def test_settling_does_not_learn_the_background_where_the_object_left() -> None:
    """A boxed object on a still camera, then gone (only sensor noise moves): the first frames
    with "motion" are the noise where it was. Settling must not re-learn the object's colours
    from that background (it did: a phantom object drawn on the empty place at score ~1.0 for
    as long as the stream ran); the object is reported lost instead."""
    rng = np.random.default_rng(5)

    def frame(with_object: bool) -> np.ndarray:
        image = np.clip(rng.normal(120, 12, (120, 160, 3)), 0, 255).astype(np.uint8)
        if with_object:
            stripes = np.where((np.arange(30) // 5) % 2 == 0, 220, 30).astype(np.uint8)
            image[40:70, 60:90] = np.stack([stripes[None, :].repeat(30, 0)] * 3, axis=2)
        return image

    session = SegmentationSession(ClassicBackend())
    object_frame = frame(True)
    session.step(object_frame, stamp_ns=1)
    obj = session.add_prompt(Prompt(box=np.array([58, 38, 92, 72], np.float32))).object_id
    first = session.step(object_frame, stamp_ns=2).get(obj)
    assert first is not None and first.visible
    seen = []
    for i in range(10):
        res = session.step(frame(False), stamp_ns=3 + i).get(obj)
        assert res is not None
        seen.append(res.visible)
    assert not any(seen[2:]), seen


@pytest.mark.parametrize("held", [10, 95])
def test_settling_waits_out_a_still_opening(held: int) -> None:
    """The same click with the first frame held first (a camera re-sending one frame, a still
    scene before anything moves): held frames show nothing new, so settling waits for motion
    and takes the whole object once it moves; it gives up after `_SETTLE_PATIENCE` (90) still
    frames. Before, the 5 settling frames were spent on the held copies: J 0.5 throughout."""
    from seg_ros.engine.backends.classic import _SETTLE_PATIENCE

    clip = _two_tone_clip()
    js = _click_on_the_red_half([clip[0]] * held + clip, 5)
    assert max(js[: held - 1]) < 0.65, js  # held: the red half, nothing settled yet
    if held < _SETTLE_PATIENCE:
        assert js[-1] > 0.85, js
    else:
        assert js[-1] < 0.65, js  # gave up waiting: the red half tracked alone


def _bedroom_demo(
    frames: int,
) -> Iterator[tuple[int, FrameResult, dict[str, str]]]:
    """The paced demo's run at engine level (classic backend, shipped defaults, the clip at
    640 wide): 60 still frames (`hold_first_s` 4 at 15 fps), the boy's click on processed
    frame 3, the girl's and the pillow's boxes on 6, the boy's refinement (click + background
    point) on 12, all stamped on the first frame; then the clip. Yields (processed frame index,
    its result, the object ids by name so far)."""
    from seg_ros.tools.demo_camera import ClipReader, clip_plan

    plan = clip_plan(640)
    reader = ClipReader(str(_BEDROOM), 640)
    first = reader.next()
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    px, py = plan["point"]
    click = np.array([[px, py]], np.float32)
    ids: dict[str, str] = {}
    for i in range(frames):
        result = session.step(first if i < 60 else reader.next(), stamp_ns=i + 1)
        if i == 3:
            prompt = Prompt(points=click, point_labels=np.ones(1, np.int8))
            ids["boy"] = session.add_prompt(prompt, stamp_ns=1).object_id
        elif i == 6:
            for name, (x, y, bw, bh) in zip(
                ("girl", "pillow"), [plan["box"], *plan["extra_boxes"]], strict=True
            ):
                box = np.array([x, y, x + bw, y + bh], np.float32)
                ids[name] = session.add_prompt(Prompt(box=box), stamp_ns=1).object_id
        elif i == 12:
            bx, by = plan["background_point"]
            points = np.array([[px, py], [bx, by]], np.float32)
            prompt = Prompt(points=points, point_labels=np.array([1, 0], np.int8))
            session.add_prompt(prompt, object_id=ids["boy"], stamp_ns=1)
        yield i, result, dict(ids)


@pytest.mark.skipif(not _BEDROOM.is_file(), reason=f"bedroom clip not found at {_BEDROOM}")
def test_bedroom_demo_boy_hidden_is_lost_not_redrawn() -> None:
    """The paced demo's run at engine level: 60 still frames (`hold_first_s` 4 at 15 fps), the
    boy's click on processed frame 3, the girl's and the pillow's boxes on 6, the boy's
    refinement (click + background point) on 12, all stamped on the first frame; then the
    clip. His mask is his dark sleeve (about 1200 px at 640 wide). Before the fix: on frame 89
    he was still drawn as 44 pixels on the girl's legs (score 0.60; now lost when he shrinks
    below `occluded_fraction` of his area touching her), and on frames 127-146 on the dark
    cushion by her feet at x 261-268 (similarity 0.80-0.86 after 35 frames refused there at
    0.70-0.78: a refused look-alike is now never taken for him while he is lost).
    Wherever he is drawn, he is not mostly on the cushion (`_CUSHION`) and more than a remnant
    (>= 10 % of his first mask)."""
    boy, first_area, visible = "", 0, 0
    for i, result, ids in _bedroom_demo(150):
        boy = ids.get("boy", "")
        obj = result.get(boy)
        if i < 13 or obj is None:
            continue
        if not first_area:
            first_area = int(np.count_nonzero(obj.mask))
            assert obj.visible and first_area > 500, first_area
        if obj.visible:
            visible += 1
            on, area = _on_cushion(obj.mask), int(np.count_nonzero(obj.mask))
            assert on < 0.5, f"frame {i}: 'boy' drawn on the cushion ({on:.2f} of him)"
            assert area >= 0.1 * first_area, f"frame {i}: 'boy' is {area} px"
    assert visible >= 70, visible  # held until he goes behind the girl (frame ~87)


def test_guided_filter_pulls_a_mask_edge_onto_the_colour_edge() -> None:
    """`ops.guided_filter` (`snap_radius`): a mask whose edge lies 2 pixels either side of
    where a red region meets a green one ends, filtered (radius 4) with the image as guide and
    thresholded, within a pixel of the colour edge, and one on it stays there; on a flat image
    it stays where it was. The windows' covariances inverted by cofactors match a direct
    solve."""
    rng = np.random.default_rng(0)
    image = np.zeros((40, 60, 3), np.float32)
    image[:, :30] = (0.8, 0.2, 0.2)
    image[:, 30:] = (0.2, 0.7, 0.3)
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    flat = np.full((40, 60, 3), 0.5, np.float32) + rng.normal(0, 0.02, (40, 60, 3))
    for edge in (28, 30, 32):
        mask = np.zeros((40, 60), np.float32)
        mask[:, :edge] = 1.0
        widths = np.count_nonzero(ops.guided_filter(image, mask, 4, 1e-3) > 0.5, axis=1)
        assert np.all(np.abs(widths - 30) <= (0 if edge == 30 else 1)), (edge, widths)
        widths = np.count_nonzero(
            ops.guided_filter(flat.astype(np.float32), mask, 4, 1e-3) > 0.5, axis=1
        )
        assert np.all(widths == edge), (edge, widths)
    # Against the textbook form (a 3 x 3 solve in every window).
    size = (9, 9)

    def mean(x: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT))

    soft = rng.random((40, 60)).astype(np.float32)
    mu = mean(image)
    cov = mean(image * soft[..., None]) - mu * mean(soft)[..., None]
    var = np.empty((40, 60, 3, 3), np.float32)
    for i in range(3):
        for j in range(3):
            var[..., i, j] = mean(image[..., i] * image[..., j]) - mu[..., i] * mu[..., j]
    var += 1e-3 * np.eye(3, dtype=np.float32)
    a = np.linalg.solve(var, cov[..., None])[..., 0]
    b = mean(soft) - (a * mu).sum(-1)
    direct = (mean(a) * image).sum(-1) + mean(b)
    assert np.abs(ops.guided_filter(image, soft, 4, 1e-3) - direct).max() < 1e-4


def _still_then_moving(
    still: int, moving: int, speed: float = 3.0, halt: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, truth) of a textured orange square (60 x 60 at 480 x 300) on a textured grey
    wall, the camera panning by a third of a pixel a frame (sub-pixel motions, as a handheld
    camera's): the square still on the wall for `still` frames, then moving right by `speed`
    pixels a frame, then still again for `halt` frames."""
    rng = np.random.default_rng(3)
    wall = _wall(rng, 400, 640)
    square = _textured(rng, (220, 120, 40), 60, 60)
    out = []
    for t in range(still + moving + halt):
        x = 200 + speed * min(moving, max(0, t - still + 1))
        scene, truth = wall.copy(), np.zeros((400, 640), bool)
        xi = int(round(x))
        scene[150:210, xi : xi + 60] = square
        truth[150:210, xi : xi + 60] = True
        pan = np.float32([[1, 0, -60 - t / 3], [0, 1, -50 - t / 5]])
        image = cv2.warpAffine(scene, pan, (480, 300), flags=cv2.INTER_LINEAR)
        moved = cv2.warpAffine(truth.astype(np.uint8) * 255, pan, (480, 300)) > 127
        out.append((image, moved))
    return out


def test_a_still_object_is_anchored_and_followed_when_it_moves() -> None:
    """An object moving with its background for `still_after` frames is carried from a
    keyframe (`still_anchor`: the bedroom pillow, see below); when it starts to move it is
    followed by the flow again."""
    clip = _still_then_moving(still=30, moving=20)
    backend = ClassicBackend(ClassicConfig(work_size=0))
    js = []
    for t, (image, truth) in enumerate(clip):
        out = backend.step(t, image)
        if t == 0:
            backend.add_prompt(0, 1, Prompt(mask=truth))
            continue
        if t == 29:
            assert backend._tracks[1].anchor is not None  # still since frame 0
        assert out[1].visible, f"frame {t}: lost"
        js.append(jaccard(out[1].mask, truth))
    assert backend._tracks[1].anchor is None  # it moves: no longer anchored
    assert min(js[:29]) > 0.9, js[:29]
    assert min(js[29:]) > 0.8, js[29:]


def test_a_mover_coming_to_rest_is_not_anchored() -> None:
    """An object seen moving clearly unlike its background is never anchored: a mover whose
    mask comes to rest on the background has more often slipped off its object (the bedroom
    boy's mask left on the curtain at the frame's edge, anchored there for 60 frames in one
    run of the demo) than stopped, and refinement keeps deciding what it is."""
    clip = _still_then_moving(still=1, moving=12, speed=8.0, halt=30)
    backend = ClassicBackend(ClassicConfig(work_size=0))
    for t, (image, truth) in enumerate(clip):
        out = backend.step(t, image)
        if t == 0:
            backend.add_prompt(0, 1, Prompt(mask=truth))
            continue
        assert backend._tracks[1].anchor is None, f"frame {t}: anchored"
    assert jaccard(out[1].mask, clip[-1][1]) > 0.8


#: The pillow on the bedroom clip at 640x360 (x0, y0, x1, y1), read off the clip at two
#: processed frames of `_bedroom_demo` (clip frames 140 and 230: the camera has moved since).
_PILLOW = {199: (350, 218, 445, 300), 289: (350, 202, 440, 282)}


@pytest.mark.slow
@pytest.mark.skipif(not _BEDROOM.is_file(), reason=f"bedroom clip not found at {_BEDROOM}")
def test_bedroom_demo_pillow_stays_on_the_pillow() -> None:
    """The pillow (boxed on the still first frame) lies on a bed sheet and against a wall of
    its colours, and moves only with the camera. Before: refined by colour every frame, its
    mask spread over the sheet and the wall (6.7k -> 19k pixels by processed frame 290, a
    third of it on the pillow); carried by the flow alone it slid up onto the wall (the
    flow's sub-pixel motions fall a little short each frame). Anchored to a keyframe
    (`still_anchor`) it stays on the pillow: nearly all of it inside the pillow's box, and
    most of the box covered."""
    pillow = ""
    for i, result, ids in _bedroom_demo(max(_PILLOW) + 1):
        pillow = ids.get("pillow", pillow)
        if i not in _PILLOW:
            continue
        obj = result.get(pillow)
        assert obj is not None and obj.visible, f"frame {i}: the pillow is not drawn"
        x0, y0, x1, y1 = _PILLOW[i]
        area = int(np.count_nonzero(obj.mask))
        inside = int(np.count_nonzero(obj.mask[y0 - 8 : y1 + 8, x0 - 8 : x1 + 8]))
        covered = np.count_nonzero(obj.mask[y0:y1, x0:x1]) / ((x1 - x0) * (y1 - y0))
        assert inside >= 0.9 * area, f"frame {i}: {area - inside} of {area} px off the pillow"
        assert covered >= 0.6, f"frame {i}: {covered:.2f} of the pillow's box covered"


def _behind_a_pole(frames: int = 24) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, truth) of a textured orange object (80 x 50) moving right by 4 px a frame
    over a still textured grey wall, behind a thin green pole (6 px, x 170-175) in front of
    everything: from frame ~10 its front comes out on the pole's far side."""
    rng = np.random.default_rng(5)
    h, w = 240, 320
    wall = _wall(rng, h, w, 30)
    body = np.full((50, 80, 3), (210, 120, 40), np.int64) + rng.integers(-25, 25, (50, 80, 3))
    body = cv2.GaussianBlur(np.clip(body, 0, 255).astype(np.uint8), (3, 3), 0)
    out = []
    for i in range(frames):
        x0, y0 = 60 + 4 * i, 95
        image = wall.copy()
        image[y0 : y0 + 50, x0 : x0 + 80] = body
        truth = np.zeros((h, w), bool)
        truth[y0 : y0 + 50, x0 : x0 + 80] = True
        image[:, 170:176] = (60, 110, 70)
        truth[:, 170:176] = False
        out.append((image, truth))
    return out


@pytest.mark.parametrize("reach", [0.0, 0.3, 1.0])
def test_part_coming_out_from_behind_a_thin_occluder_is_taken_back(reach: float) -> None:
    """The flow cannot carry the part of the object that comes out on the far side of the
    pole (its pixels came from behind the pole) and the band cannot reach across the pole:
    without regrowing the mask stays on the near side and J decays to 0.24 by the last frame;
    with it (`regrow_reach` 0.3, and the default 1.0) the part that has the object's colours
    and moves like it is taken back: J 0.78 at its lowest, 1.0 from frame 16 on."""
    session = SegmentationSession(ClassicBackend(ClassicConfig(regrow_reach=reach)))
    js = []
    for i, (image, truth) in enumerate(_behind_a_pole()):
        out = session.step(image, stamp_ns=i + 1)
        if i == 0:
            obj = session.add_prompt(Prompt(mask=truth)).object_id
            continue
        res = out.get(obj)
        assert res is not None and res.visible, i
        js.append(jaccard(res.mask, truth))
    if reach:
        assert min(js) > 0.7 and js[-1] > 0.9, js
    else:
        assert js[-1] < 0.5, js  # the near side alone: regrowing is what takes the part back


def test_regrow_reach_is_validated() -> None:
    with pytest.raises(ValueError, match="regrow_reach"):
        ClassicConfig(regrow_reach=-0.1)


def _slip_scene(
    frames: int = 30, gone: tuple[int, int] = (10, 22)
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, truth) of a camera panning right by 5 px a frame over a textured grey wall
    with a textured orange patch painted on it, following a textured orange object (60 x 40,
    still in the image at x 130-190, y 100-140): the patch passes behind the object. On the
    frames in `gone` the object is out of view (as behind a tree) just as the patch is where it
    was: the object's look-alike, moving with the background."""
    rng = np.random.default_rng(11)
    h, w = 240, 320
    world_w = w + 5 * frames + 10
    wall = _wall(rng, h, world_w, 30)

    def orange(height: int, width: int) -> np.ndarray:
        tex = np.full((height, width, 3), (210, 120, 40), np.int64)
        tex += rng.integers(-25, 25, (height, width, 3))
        return cv2.GaussianBlur(np.clip(tex, 0, 255).astype(np.uint8), (3, 3), 0)

    # The patch reaches the object's place (x 130 in the image) on frame gone[0].
    px = 130 + 5 * gone[0]
    wall[95:145, px : px + 70] = orange(50, 70)
    body = orange(40, 60)
    out = []
    for i in range(frames):
        image = np.ascontiguousarray(wall[:, 5 * i : 5 * i + w])
        truth = np.zeros((h, w), bool)
        if not gone[0] <= i < gone[1]:
            image[100:140, 130:190] = body
            truth[100:140, 130:190] = True
        out.append((image, truth))
    return out


@pytest.mark.parametrize("check", [False, True])
def test_a_mask_slipped_onto_the_background_is_lost_not_drawn(check: bool) -> None:
    """The object moves 5 px a frame against the panning background; when it leaves the view
    its mask is left on the orange patch behind it, which has its colours and moves with the
    background. Without the check the patch is drawn as the object on every frame it is away
    (a J of 0); with it (`slip_check`, the default) the object is reported lost within three
    frames, the patch is never taken for it (it moves like the background while the camera
    moves) and the object is found again when it is back."""
    session = SegmentationSession(ClassicBackend(ClassicConfig(slip_check=check)))
    drawn_away, back = 0, []
    for i, (image, truth) in enumerate(_slip_scene()):
        out = session.step(image, stamp_ns=i + 1)
        if i == 0:
            obj = session.add_prompt(Prompt(mask=truth)).object_id
            continue
        res = out.get(obj)
        visible = res is not None and res.visible
        if not truth.any():
            drawn_away += int(visible)
        elif i >= 22:
            back.append(jaccard(res.mask, truth) if visible and res is not None else 0.0)
    if check:
        assert drawn_away <= 2, drawn_away
        assert max(back) > 0.8, back  # found again once it is back
    else:
        assert drawn_away >= 10, drawn_away  # the patch drawn as the object


@pytest.mark.skipif(not _BEDROOM.is_file(), reason=f"bedroom clip not found at {_BEDROOM}")
def test_bedroom_demo_boy_standing_is_his_not_the_girls() -> None:
    """Processed frames 246-258 of the demo's run: the boy stands on the bed at the left (his
    mask x < 170 on the 640-wide frame), the girl jumps at the centre right. Before the
    reference-area bound, his reference area had compounded from 290 to 8,100 px (the flow's
    noisy zoom on a jumping child), so his real mask looked like a remnant: he was lost and the
    girl's mask spread over his head and shorts (1,800-2,300 of her pixels left of x 170 on
    246-252). Now he is drawn and she keeps off him."""
    boy_seen, checked = 0, 0
    for i, result, ids in _bedroom_demo(259):
        if i < 246 or i % 3:
            continue
        checked += 1
        boy, girl = result.get(ids["boy"]), result.get(ids["girl"])
        assert girl is not None and girl.visible, i
        spread = int(np.count_nonzero(girl.mask[:, :170]))
        assert spread < 300, f"frame {i}: {spread} of the girl's pixels on the boy"
        if boy is not None and boy.visible:
            boy_seen += 1
            assert np.count_nonzero(boy.mask[:, 170:]) < 0.1 * np.count_nonzero(boy.mask), i
    assert checked == 5 and boy_seen >= 4, (checked, boy_seen)


def _head_and_body(frames: int = 34) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(RGB image, A's body, B) of two objects on a still textured grey wall: A, an orange
    body (50 x 60) with a blue head (30 x 24) on top, moving right 2 px a frame; B, a blue
    square (30 x 30, the head's colours) 60 px left of the head, still until frame 8, then
    out of view until frame 28, when it is back where it was."""
    rng = np.random.default_rng(3)
    h, w = 240, 320
    wall = _wall(rng, h, w)
    body, head, square = (
        _textured(rng, (220, 120, 40), 60, 50),
        _textured(rng, (40, 70, 200), 24, 30),
        _textured(rng, (40, 70, 200), 30, 30),
    )
    out = []
    for i in range(frames):
        image = wall.copy()
        x = 150 + 2 * i
        image[120:180, x : x + 50] = body
        image[96:120, x + 10 : x + 40] = head
        a = np.zeros((h, w), bool)
        a[120:180, x : x + 50] = True
        b = np.zeros((h, w), bool)
        if not 8 <= i < 28:
            image[100:130, 100:130] = square
            b[100:130, 100:130] = True
        out.append((image, a, b))
    return out


def test_a_lost_object_is_not_refound_on_a_part_of_its_neighbour() -> None:
    """B (blue) is lost while out of view; A's head has B's colours and is outside A's mask
    (A was prompted on its orange body only), right beside it, and moves with it. That head is
    not B: B is reported lost until it is back, then found where it is."""
    session = SegmentationSession(ClassicBackend())
    for i, (image, a, b) in enumerate(_head_and_body()):
        out = session.step(image, stamp_ns=i + 1)
        if i == 0:
            id_a = session.add_prompt(Prompt(mask=a)).object_id
            id_b = session.add_prompt(Prompt(mask=b)).object_id
            continue
        res_b = out.get(id_b)
        assert res_b is not None
        if 9 <= i < 28:
            assert not res_b.visible, f"frame {i}: B drawn ({np.count_nonzero(res_b.mask)} px)"
        elif i >= 30:
            assert res_b.visible and jaccard(res_b.mask, b) > 0.7, i
        res_a = out.get(id_a)
        assert res_a is not None and res_a.visible, i


def test_regrowing_does_not_take_where_a_lost_object_may_be() -> None:
    """A (orange, moving right 3 px a frame) is prompted with a mask that also takes in wall
    beside it, so it soon looks shrunk and regrows; B (blue, to its right) is lost when it
    leaves the view on frame 3. From frame 6 an untracked orange object C moves along with A
    40 px to its right, where B was: far from A (more than `_REGROW_NEAR` of its size) and
    where B may come back. C is not taken into A's mask (before: it was, from frame 7)."""
    rng = np.random.default_rng(8)
    h, w = 240, 360
    wall = _wall(rng, h, w)
    body, twin = _textured(rng, (220, 120, 40), 50, 40), _textured(rng, (220, 120, 40), 40, 30)
    square = _textured(rng, (40, 70, 200), 30, 30)
    session = SegmentationSession(ClassicBackend())
    for i in range(16):
        image = wall.copy()
        x = 60 + 3 * i
        image[100:150, x : x + 40] = body
        a = np.zeros((h, w), bool)
        a[100:150, x : x + 40] = True
        c = np.zeros((h, w), bool)
        if i < 3:
            image[105:135, 150:180] = square
        if i >= 6:
            cx = x + 80
            image[105:145, cx : cx + 30] = twin
            c[105:145, cx : cx + 30] = True
        out = session.step(image, stamp_ns=i + 1)
        if i == 0:
            prompt_a = a.copy()
            prompt_a[100:150, x + 40 : x + 70] = True  # A's prompt takes in wall beside it
            id_a = session.add_prompt(Prompt(mask=prompt_a)).object_id
            b = np.zeros((h, w), bool)
            b[105:135, 150:180] = True
            session.add_prompt(Prompt(mask=b))
            continue
        res = out.get(id_a)
        assert res is not None and res.visible, i
        taken = int(np.count_nonzero(res.mask & c))
        assert taken <= 0.1 * np.count_nonzero(c), f"frame {i}: {taken} px of C"


def test_a_lost_object_beside_a_still_one_is_refound() -> None:
    """A cup beside a laptop: B (blue) touches A (orange), both still on a still wall; B is
    covered (wall texture over it) on frames 5-10 and lost, then back. Motion tells nothing
    beside a still object, so B is found again by its colours (the guard against taking a
    part of a moving neighbour stays out of it)."""
    rng = np.random.default_rng(4)
    h, w = 200, 280
    wall = _wall(rng, h, w)
    scene = wall.copy()
    scene[70:130, 80:140] = _textured(rng, (220, 120, 40), 60, 60)
    scene[80:120, 140:180] = _textured(rng, (40, 70, 200), 40, 40)
    a = np.zeros((h, w), bool)
    a[70:130, 80:140] = True
    b = np.zeros((h, w), bool)
    b[80:120, 140:180] = True
    session = SegmentationSession(ClassicBackend())
    seen_lost, found_back = False, False
    for i in range(20):
        image = scene.copy()
        if 5 <= i <= 10:
            image[80:120, 140:180] = wall[80:120, 140:180]
        out = session.step(image, stamp_ns=i + 1)
        if i == 0:
            session.add_prompt(Prompt(mask=a))
            id_b = session.add_prompt(Prompt(mask=b)).object_id
            continue
        res = out.get(id_b)
        assert res is not None
        if 6 <= i <= 10:
            seen_lost |= not res.visible
        elif i >= 13:
            found_back |= res.visible and jaccard(res.mask, b) > 0.7
    assert seen_lost and found_back, (seen_lost, found_back)
