"""The davis benchmark (real footage) and the classic backend on it.

The protocol is checked on a hand-made DAVIS folder whose scores are known exactly. The floors
on the dev subset (`$SEG_ROS_DAVIS`, else `../shared/datasets/davis2016-dev` beside the
checkout; skipped, saying so, where it is absent) come from `python -m seg_ros.bench.davis` on
this 2-core CPU with the shipped defaults; each states its measurement. The failure modes seen
on real footage (leak into the background, a jump to a distant look-alike, an identity swap
between touching objects) have one regression test each, built from real frames.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest

from seg_ros.bench import davis
from seg_ros.engine import Prompt, SegmentationSession
from seg_ros.engine.backends.classic import ClassicBackend, ClassicConfig
from seg_ros.engine.results import ObjectMask

DEV = davis.DEFAULT_DIR
needs_dev = pytest.mark.skipif(
    not (DEV / "JPEGImages" / "480p").is_dir(),
    reason=f"DAVIS dev subset not found at {DEV} (set SEG_ROS_DAVIS; real-footage floors not "
    "checked)",
)


def _square(h: int, w: int, x0: int, side: int = 20, y0: int = 20) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def _write_davis(root: pathlib.Path, masks: list[np.ndarray]) -> None:
    img_dir = root / "JPEGImages" / "480p" / "toy"
    ann_dir = root / "Annotations" / "480p" / "toy"
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for i, m in enumerate(masks):
        img = np.full((*m.shape, 3), 60, np.uint8)
        img[m] = (220, 40, 40)
        cv2.imwrite(str(img_dir / f"{i:05d}.jpg"), img)
        cv2.imwrite(str(ann_dir / f"{i:05d}.png"), m.astype(np.uint8) * 255)


def test_protocol_scores_frames_after_the_first_leaving_out_the_last(
    tmp_path: pathlib.Path,
) -> None:
    # The fake backend keeps a mask prompt where it was given: the scores are known exactly.
    h, w = 80, 100
    still, half, gone = _square(h, w, 10), _square(h, w, 20), np.zeros((h, w), bool)
    # frame 0: prompt; 1: same place (J 1); 2: shifted by half (J 1/3); 3: same (J 1);
    # 4 (last): absent, which would score 0 were it counted.
    _write_davis(tmp_path, [still, still, half, still, gone])
    (seq,) = davis.list_sequences(tmp_path)
    assert len(seq) == 5
    res = davis.evaluate(seq, "mask", backend="fake")
    assert res["J"] == pytest.approx((1 + 1 / 3 + 1) / 3, abs=1e-4)
    assert 0.0 < res["F"] < 1.0 and res["objects"] == 1 and res["frames"] == 5
    assert res["wrong_reacquired"] == 0 and res["lost_frames"] == 0
    # Box and click prompts are built from frame 0's mask.
    box = davis.prompt_for("box", still)
    assert box.box is not None and box.box.tolist() == [10, 20, 30, 40]
    click = davis.prompt_for("click", still)
    assert still[int(click.points[0][1]), int(click.points[0][0])]


def test_starts_every_averages_runs_prompted_on_later_frames(tmp_path: pathlib.Path) -> None:
    """`--starts-every K`: a sequence run from every K-th frame that leaves `MIN_TRACKED` frames
    after it, prompted with the truth there, scores averaged over the starts. The fake backend
    keeps the prompt's square where it was given, so every run's score is known."""
    h, w = 80, 100
    a, b = _square(h, w, 10), _square(h, w, 20)  # J(a, b) = 1/3
    masks = [a, a, b, b, a, b, a, a, a, a, a, a, a, a]  # 14 frames: starts 0 and 2 (K = 2)
    _write_davis(tmp_path, masks)
    (seq,) = davis.list_sequences(tmp_path)
    third = 1 / 3

    def expected(start: int) -> float:
        scored = masks[start + 1 : -1]  # after the prompt, leaving out the last frame
        return float(np.mean([1.0 if m is masks[start] else third for m in scored]))

    run0 = davis.evaluate(seq, "mask", backend="fake")
    run2 = davis.evaluate(seq, "mask", backend="fake", start=2)
    assert run0["J"] == pytest.approx(expected(0), abs=1e-4)
    assert run2["J"] == pytest.approx(expected(2), abs=1e-4) and run2["frames"] == 12
    rows = davis.run(tmp_path, prompts=("mask",), backend="fake", starts_every=2)
    (row,) = [r for r in rows if r["bench"] == "davis"]
    assert row["starts"] == 2 and row["J"] == pytest.approx((run0["J"] + run2["J"]) / 2, abs=2e-4)
    (mean,) = [r for r in rows if r["bench"] == "davis_mean"]
    assert mean["starts_every"] == 2
    # With --max-frames K + 1 each run tracks K frames (restarts from the truth every K).
    short = davis.evaluate(seq, "mask", backend="fake", max_frames=4, start=2)
    assert short["frames"] == 4 and short["J"] == pytest.approx((third + 1) / 2, abs=1e-4)
    # A start on which no object is in view prompts nothing: it is not a run.
    gone = np.zeros((h, w), bool)
    _write_davis(tmp_path / "gap", [a, a, gone, b, a, b, a, a, a, a, a, a, a, a])
    rows = davis.run(tmp_path / "gap", prompts=("mask",), backend="fake", starts_every=2)
    (row,) = [r for r in rows if r["bench"] == "davis"]
    assert row["starts"] == 1 and row["J"] == row["J"], row  # J not NaN


def test_frames_drawn_on_the_wrong_thing_are_counted(tmp_path: pathlib.Path) -> None:
    """`wrong_frames`: frames on which the object is reported visible with less than 10 % of
    its mask on the truth, or drawn while the truth is empty. The fake backend keeps drawing
    the prompt's square where it was given: on the object (frames 1 and 5), off it once the
    object moved away (2 and 3: 0 % on it), 12.5 % of it on the object (4: not wrong), and on
    frame 6, where the object is out of view."""
    h, w = 80, 100
    at, away, quarter = _square(h, w, 10), _square(h, w, 60), _square(h, w, 25, y0=30)
    gone = np.zeros((h, w), bool)
    _write_davis(tmp_path, [at, at, away, away, quarter, at, gone, at])
    (seq,) = davis.list_sequences(tmp_path)
    res = davis.evaluate(seq, "mask", backend="fake")
    assert res["wrong_frames"] == 3, res
    assert res["lost_frames"] == 0 and res["wrong_reacquired"] == 0, res


def test_annotations_binary_and_multi_object(tmp_path: pathlib.Path) -> None:
    ann = np.zeros((10, 10), np.uint8)
    ann[1:3, 1:3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), ann)
    objs = davis.read_objects(tmp_path / "a.png")
    assert list(objs) == [1] and int(objs[1].sum()) == 4
    ann[5:7, 5:9] = 2
    ann[1:3, 1:3] = 1
    cv2.imwrite(str(tmp_path / "b.png"), ann)
    objs = davis.read_objects(tmp_path / "b.png")
    assert sorted(objs) == [1, 2] and int(objs[2].sum()) == 8


def test_dataset_folder_comes_from_the_environment_first(tmp_path: pathlib.Path) -> None:
    """SEG_ROS_DAVIS names the folder before the default (a worktree has no ../shared)."""
    code = "from seg_ros.bench import davis; print(davis.DEFAULT_DIR)"
    env = {**os.environ, "SEG_ROS_DAVIS": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(tmp_path)
    env.pop("SEG_ROS_DAVIS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip().endswith("shared/datasets/davis2016-dev"), out.stdout


def test_missing_folder_gives_a_skip_row(tmp_path: pathlib.Path) -> None:
    rows = davis.run(tmp_path / "nothing")
    assert len(rows) == 1 and "skipped" in rows[0] and "--davis" in rows[0]["skipped"]
    with pytest.raises(FileNotFoundError):
        davis.list_sequences(tmp_path)


# ---------------------------------------------------------------------------- dev floors
# Quick subset, first 30 frames, shipped defaults (measured J, issue 10 round 3, motion cue on):
# blackswan mask 0.834, box 0.703; drift-chicane mask 0.595; dance-twirl mask 0.70 (round 2,
# before the motion cue: 0.864, 0.419, 0.493; dance-twirl's mask spread over the crowd). Floors
# ~0.1 below (OpenCV builds and BLAS differ a little), never below the earlier ones.
@needs_dev
@pytest.mark.parametrize(
    ("sequence", "prompt", "floor"),
    [
        # Round 8 (GrabCut's trims of what colour let in without claiming it, the outline
        # snapped to colour edges): blackswan mask 0.834 -> 0.893, box 0.700 -> 0.824 (the
        # water behind the swan no longer taken in).
        ("blackswan", "mask", 0.85),
        ("blackswan", "box", 0.76),
        ("drift-chicane", "mask", 0.49),
        ("dance-twirl", "mask", 0.60),
        # Issue 10 round 5 (prompts settled by motion, click leak replaced by a box around it):
        # camel box 0.746, click 0.746 (before: the click's mask covered the sand, 0.16),
        # dance-twirl box 0.701, libby click 0.532.
        ("camel", "box", 0.64),
        ("camel", "click", 0.64),
        ("dance-twirl", "box", 0.60),
        ("libby", "click", 0.43),
    ],
)
def test_dev_quick_floor(sequence: str, prompt: str, floor: float) -> None:
    (seq,) = davis.list_sequences(DEV, [sequence])
    res = davis.evaluate(seq, prompt, max_frames=30)
    assert res["J"] > floor, res
    assert res["wrong_reacquired"] == 0, res


# Full dev subset (6 clips, all frames), means measured (issue 10 round 3, motion cue, tight box
# cuts): mask J 0.572 F 0.560, box J 0.522, click J 0.214 (round 4, re-acquisition by colour
# histogram: 0.587 F 0.578, 0.523, 0.214; round 2: 0.440, 0.291, 0.170; round 5, box and
# click settled by motion on the 5 frames after the prompt, a click's leak replaced by a box
# around it: 0.587, box 0.542 F 0.524, click 0.459 F 0.427; round 6, a lost part regrown
# beyond the band: mask 0.600 F 0.592, box 0.534 F 0.508, click 0.457 F 0.428; round 7, a mask
# slipped onto the background lost: mask 0.614 F 0.598, box 0.531 F 0.498, click 0.459 F 0.425;
# the targets, 0.70 / 0.60 / 0.50, are NOT reached). Floors ~0.05 below.
@needs_dev
@pytest.mark.slow
@pytest.mark.parametrize(("prompt", "floor"), [("mask", 0.55), ("box", 0.48), ("click", 0.40)])
def test_dev_full_floor(prompt: str, floor: float) -> None:
    rows = davis.run(DEV, prompts=(prompt,))
    (mean,) = [r for r in rows if r["bench"] == "davis_mean"]
    assert mean["sequences"] == 6 and mean["J"] > floor, rows


# ---------------------------------------------------------------------------- failure modes
@needs_dev
@pytest.mark.parametrize("prompt", ["mask", "box"])
def test_no_wrong_reacquisition_behind_the_trees(prompt: str) -> None:
    """bmx-trees: the rider goes behind tree trunks and is lost; round 3 "found" him again on
    the trunks' and the path's look-alike patches (IoU 0 with the truth), twice with each of
    these prompts (mask J 0.190). A candidate must match his colour histogram (not only have
    some of his colours) and a plausible size: measured no wrong one, mask J 0.282, box 0.131
    (round 3: 0.127). Round 7: when he passes behind a trunk his mask used to stay on the red
    graffiti behind him, moving with the panning camera (drawn on the wrong thing on 18 frames
    with the mask prompt, 27 with the box); a mask that stops moving unlike the background
    within three frames has slipped onto it and is lost: 0 and 0, mask J 0.352."""
    (seq,) = davis.list_sequences(DEV, ["bmx-trees"])
    res = davis.evaluate(seq, prompt)
    assert res["wrong_reacquired"] == 0, res
    assert res["wrong_frames"] == 0, res
    if prompt == "mask":
        assert res["J"] > 0.24, res


@needs_dev
def test_dog_past_the_poles_is_taken_back() -> None:
    """libby, mask prompt, all 49 frames: the dog runs behind thin poles; the part coming out
    on a pole's far side came from behind it (the flow cannot carry it) and lies beyond the
    band: without regrowing (`regrow_reach` 0) the mask stayed on the near side, on the
    dog's back half (J 0.348); with it the parts that have the dog's colours and move like it
    are taken back (J 0.418, no re-acquisition)."""
    (seq,) = davis.list_sequences(DEV, ["libby"])
    res = davis.evaluate(seq, "mask")
    assert res["J"] > 0.38, res
    assert res["wrong_reacquired"] == 0, res


def _tracked(
    name: str, frames: int = 30, config: ClassicConfig | None = None
) -> Iterator[tuple[int, ObjectMask, np.ndarray, Any]]:
    """Track one clip's object from frame 0's ground-truth mask: (index, the object, its truth,
    the image) for every later frame."""
    (seq,) = davis.list_sequences(DEV, [name])
    session = SegmentationSession(ClassicBackend(config), score_threshold=0.5)
    obj_id = ""
    for i, (image, gts) in enumerate(seq.frames(frames)):
        result = session.step(image, stamp_ns=i + 1)
        if i == 0:
            obj_id = session.add_prompt(Prompt(mask=gts[1])).object_id
            continue
        obj = result.get(obj_id)
        assert obj is not None
        yield i, obj, gts[1], image


@needs_dev
def test_no_leak_into_the_background() -> None:
    """camel on a sand-coloured fence and ground (the baseline covered 7x the camel): the
    mask stays near the object's size. Measured over 30 frames: at most 1.51x the truth."""
    for i, obj, gt, _ in _tracked("camel"):
        if obj.visible:
            assert obj.mask.sum() < 2.0 * gt.sum(), f"frame {i}"


@needs_dev
def test_no_leak_that_moves_with_the_background() -> None:
    """dance-twirl: the camera pans with the dancer, the crowd behind her slides by; a mask
    leaked onto the crowd was dragged along by the flow and grew (motion cue off, first 30
    frames: up to 2.32x the truth, 47 % of the mask farther than 0.05 x the diagonal from it).
    What moves like the background is cut: measured at most 1.16x, nothing that far."""
    far_px = 0.05 * float(np.hypot(480, 854))
    for i, obj, gt, _ in _tracked("dance-twirl"):
        assert obj.visible, f"frame {i}"
        assert obj.mask.sum() < 1.5 * gt.sum(), f"frame {i}"
        dist = cv2.distanceTransform((~gt).astype(np.uint8), cv2.DIST_L2, 3)
        far = np.count_nonzero(obj.mask & (dist > far_px)) / max(1, np.count_nonzero(obj.mask))
        assert far < 0.05, f"frame {i}: {far:.2f} of the mask far from the dancer"


@needs_dev
@pytest.mark.parametrize("refine", ["colour", "grabcut"])
def test_no_jump_to_a_distant_look_alike(refine: str) -> None:
    """A tracked object moves with its pixels: between two frames its mask's centre moves at
    most a small part of the frame (measured on blackswan, camel, dance-twirl, bmx-trees:
    <= 37 px at 854x480, 38 with `refine: grabcut`; a jump to a look-alike elsewhere is
    hundreds)."""
    for name in ("blackswan", "dance-twirl"):
        prev = None
        for i, obj, _, image in _tracked(name, config=ClassicConfig(refine=refine)):
            if not obj.visible:
                prev = None
                continue
            ys, xs = np.nonzero(obj.mask)
            centre = np.array([xs.mean(), ys.mean()])
            if prev is not None:
                assert np.hypot(*(centre - prev)) < 0.08 * np.hypot(*image.shape[:2]), (name, i)
            prev = centre


@needs_dev
def test_touching_objects_keep_their_identity() -> None:
    """The swan split into two touching objects (front and back half): every pixel belongs
    to at most one, and neither takes the other's side (the baseline's children-on-a-bed
    failure, on real frames)."""
    (seq,) = davis.list_sequences(DEV, ["blackswan"])
    session = SegmentationSession(ClassicBackend(), score_threshold=0.5)
    for i, (image, gts) in enumerate(seq.frames(30)):
        result = session.step(image, stamp_ns=i + 1)
        gt = gts[1]
        if i == 0:
            mid = int(np.median(np.nonzero(gt)[1]))
            left, right = gt.copy(), gt.copy()
            left[:, mid:] = False
            right[:, :mid] = False
            a = session.add_prompt(Prompt(mask=left)).object_id
            b = session.add_prompt(Prompt(mask=right)).object_id
            continue
        oa, ob = result.get(a), result.get(b)
        assert oa is not None and ob is not None and oa.visible and ob.visible, i
        assert not (oa.mask & ob.mask).any(), f"frame {i}: a pixel in both objects"
        # Measured: the halves' centres stay ~150 px apart (246 vs 422 -> 235 vs 398).
        xa, xb = np.nonzero(oa.mask)[1].mean(), np.nonzero(ob.mask)[1].mean()
        assert xb - xa > 80, f"frame {i}: the halves merged or swapped ({xa:.0f}, {xb:.0f})"
