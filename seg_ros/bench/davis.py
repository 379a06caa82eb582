"""Tracking quality on real footage: any DAVIS-layout folder, semi-supervised protocol.

    python -m seg_ros.bench.davis [--davis DIR] [--prompt mask --prompt box --prompt click]
        [--sequence blackswan ...] [--max-frames N] [--starts-every K] [--option key=value ...]

Layout (DAVIS 2016 / 2017): `JPEGImages/480p/<seq>/00000.jpg ...` and
`Annotations/480p/<seq>/00000.png ...` (0 = background; DAVIS 2016: 255 = the object; a
multi-object annotation is split into one object per value).

Protocol (DAVIS, Perazzi et al. 2016): every object is prompted on frame 0 through a
`SegmentationSession` (as the node does) with its ground-truth mask ("mask"), the box of that
mask ("box") or one click at its most interior pixel, the maximum of the distance transform
("click"); every later frame is tracked without help. J and F (`seg_ros.bench.metrics`, F with
a tolerance of 0.008 x the image diagonal) are averaged over the frames after the first, leaving
out the last (DAVIS), then over objects, then over sequences. A frame where the backend reports
the object not visible scores as an empty prediction.

`--starts-every K` (not DAVIS's protocol; for development): each sequence is run from every
K-th frame (the truth there as the prompt) that leaves at least `MIN_TRACKED` frames after it,
and its scores are averaged over those starts. On six clips a mean is decided by a few loss and
re-acquisition events, which a small change flips one way or the other; over many starts it
measures the tracker, not the events. With `--max-frames K+1` each run tracks K frames: restarts
from the truth every K frames (a protocol without losses).

Identity and re-acquisition are counted too: `lost_frames` (frames reported not visible while
the object is in the ground truth), `reacquired` (not visible -> visible transitions),
`wrong_reacquired` (those whose first mask overlaps the ground truth with IoU < 0.1: drawn on
the wrong thing) and `wrong_frames` (frames on which the object is reported visible with less
than 10 % of its mask on the truth: drawn on the wrong thing, however it got there).

Rows: {"bench": "davis", sequence, prompt, J, F, JF, fps, ...} per sequence and prompt,
{"bench": "davis_mean", prompt, J, F, JF, ...} per prompt, {"bench": "davis_speed",
objects, fps, ...} for 1 and 3 objects (classic); or one {"bench": "davis",
"skipped": reason} row when the folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from seg_ros.bench.metrics import SequenceScore, jaccard
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession
from seg_ros.tools.synthetic import box_of, interior_point

PROMPTS = ("mask", "box", "click")
#: The session threshold of the shipped config/seg_ros.yaml.
SCORE_THRESHOLD = 0.5
#: Environment variable naming the DAVIS-layout folder to use before the default (a git
#: worktree has no ../shared beside it: SEG_ROS_DAVIS=/path/to/davis2016-dev).
ENV_VAR = "SEG_ROS_DAVIS"
#: The dev subset: $SEG_ROS_DAVIS when set, else beside a source checkout (CI has ../shared
#: next to the clone).
DEFAULT_DIR = (
    pathlib.Path(os.environ[ENV_VAR]).expanduser()
    if os.environ.get(ENV_VAR)
    else pathlib.Path(__file__).resolve().parents[2].parent / "shared/datasets/davis2016-dev"
)
#: A re-acquisition whose first mask overlaps the truth less than this is a wrong one.
WRONG_IOU = 0.1
#: A frame on which the object is drawn with less than this fraction of its mask on the truth
#: (or drawn while it is not in the frame) is drawn on the wrong thing (`wrong_frames`).
WRONG_PRECISION = 0.1
#: `--starts-every`: a start leaves at least this many frames after it.
MIN_TRACKED = 10


def davis_root(
    davis_dir: str | pathlib.Path | None, bench: str
) -> tuple[pathlib.Path, dict[str, Any] | None]:
    """The DAVIS-layout folder a suite reads (`davis_dir`, else the default) and, when it is
    absent, the skip row that suite prints instead."""
    root = pathlib.Path(davis_dir) if davis_dir else DEFAULT_DIR
    if (root / "JPEGImages" / "480p").is_dir():
        return root, None
    why = f"no DAVIS-layout folder at {root} (pass --davis DIR or set {ENV_VAR})"
    return root, {"bench": bench, "skipped": why}


@dataclass(frozen=True)
class DavisSequence:
    """One sequence of a DAVIS-layout folder: frame and annotation paths, read lazily."""

    name: str
    images: tuple[pathlib.Path, ...]
    annotations: tuple[pathlib.Path, ...]

    def __len__(self) -> int:
        return len(self.images)

    def frames(
        self, limit: int = 0, first: int = 0
    ) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray]]]:
        """(RGB uint8 HxWx3, {object value: bool HxW mask}) per frame from frame `first`, at
        most `limit` of them."""
        end = len(self.images) if limit <= 0 else min(first + limit, len(self.images))
        for i in range(first, end):
            yield read_rgb(self.images[i]), read_objects(self.annotations[i])


def read_rgb(path: pathlib.Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def read_objects(path: pathlib.Path) -> dict[int, np.ndarray]:
    """{object value: mask}; a binary (0 / 255) annotation is object 1."""
    ann = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if ann is None:
        raise ValueError(f"cannot read annotation {path}")
    if ann.ndim == 3:
        ann = ann[..., 0]
    values = [int(v) for v in np.unique(ann) if v != 0]
    if values == [255]:
        return {1: ann == 255}
    return {v: ann == v for v in values}


def list_sequences(root: pathlib.Path, names: list[str] | None = None) -> list[DavisSequence]:
    """Every sequence of a DAVIS-layout folder (or the named ones), sorted by name."""
    img_root = root / "JPEGImages" / "480p"
    ann_root = root / "Annotations" / "480p"
    if not img_root.is_dir() or not ann_root.is_dir():
        raise FileNotFoundError(f"{root} has no JPEGImages/480p and Annotations/480p")
    found = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    if names:
        missing = sorted(set(names) - set(found))
        if missing:
            raise FileNotFoundError(f"sequences {missing} not in {root}")
        found = [n for n in found if n in names]
    out = []
    for name in found:
        images = tuple(sorted((img_root / name).glob("*.jpg")))
        anns = tuple(ann_root / name / (p.stem + ".png") for p in images)
        if not images or not anns[0].is_file():
            continue
        out.append(DavisSequence(name, images, anns))
    return out


def prompt_for(kind: str, gt: np.ndarray) -> Prompt:
    """The frame-0 prompt of one object: its mask, its box or one interior click."""
    if kind == "mask":
        return Prompt(mask=gt)
    if kind == "box":
        box = box_of(gt)
        if box is None:
            raise ValueError("empty ground truth")
        return Prompt(box=np.asarray(box, np.float32))
    if kind == "click":
        point = interior_point(gt)
        if point is None:
            raise ValueError("empty ground truth")
        return Prompt(points=np.array([point], np.float32), point_labels=np.ones(1, np.int8))
    raise ValueError(f"prompt must be one of {PROMPTS}; got '{kind}'")


def evaluate(
    seq: DavisSequence,
    prompt_kind: str,
    backend: str = "classic",
    options: dict[str, Any] | None = None,
    max_frames: int = 0,
    model: str = "",
    start: int = 0,
) -> dict[str, Any]:
    """Run one backend over one sequence from frame `start` (prompted there; `max_frames`
    frames from it at most); its scores, identity counts and timings."""
    session = SegmentationSession(
        build_backend(BackendConfig(backend=backend, model=model, options=dict(options or {}))),
        max_objects=16,
        score_threshold=SCORE_THRESHOLD,
    )
    score = SequenceScore()
    ids: dict[int, str] = {}
    step_ms: list[float] = []
    was_visible: dict[int, bool] = {}
    lost_frames = reacquired = wrong = wrong_frames = 0
    left = len(seq) - start
    n = left if max_frames <= 0 else min(max_frames, left)
    try:
        for index, (image, gts) in enumerate(seq.frames(n, start)):
            begun = time.perf_counter()
            result = session.step(image, stamp_ns=index + 1)
            elapsed = (time.perf_counter() - begun) * 1000
            if index == 0:
                for value, gt in gts.items():
                    if gt.any():
                        ids[value] = session.add_prompt(prompt_for(prompt_kind, gt)).object_id
                        was_visible[value] = True
                continue
            step_ms.append(elapsed)
            preds: dict[int, np.ndarray] = {}
            for value, obj_id in ids.items():
                obj = result.get(obj_id)
                visible = obj is not None and obj.visible
                gt = gts.get(value, np.zeros(image.shape[:2], bool))
                if visible:
                    assert obj is not None
                    preds[value] = obj.mask
                    drawn = int(np.count_nonzero(obj.mask))
                    on = int(np.count_nonzero(obj.mask & gt))
                    wrong_frames += int(drawn > 0 and on < WRONG_PRECISION * drawn)
                    if not was_visible[value]:
                        reacquired += 1
                        wrong += int(jaccard(obj.mask, gt) < WRONG_IOU)
                elif gt.any():
                    lost_frames += 1
                was_visible[value] = visible
            if index < n - 1:  # DAVIS leaves out the last frame
                full = {v: gts.get(v, np.zeros(image.shape[:2], bool)) for v in ids}
                score.add_frame(preds, full, list(ids))
    finally:
        session.close()
    p50 = statistics.median(step_ms) if step_ms else 0.0
    return {
        "J": round(score.j, 4),
        "F": round(score.f, 4),
        "JF": round(score.jf, 4),
        "fps": round(1000.0 / p50, 1) if p50 > 0 else None,
        "step_ms_p50": round(p50, 2),
        "step_ms_p90": round(float(np.percentile(step_ms, 90)), 2) if step_ms else None,
        "frames": n,
        "objects": len(ids),
        "lost_frames": lost_frames,
        "reacquired": reacquired,
        "wrong_reacquired": wrong,
        "wrong_frames": wrong_frames,
    }


def run(
    davis_dir: str | pathlib.Path | None = None,
    prompts: tuple[str, ...] | list[str] = PROMPTS,
    sequences: list[str] | None = None,
    max_frames: int = 0,
    options: dict[str, Any] | None = None,
    backend: str = "classic",
    starts_every: int = 0,
) -> list[dict[str, Any]]:
    """Rows for every sequence and prompt kind, and the means; a skip row without data.
    `starts_every` > 0: every sequence's scores averaged over starts on every such frame."""
    root, skipped = davis_root(davis_dir, "davis")
    if skipped:
        return [skipped]
    seqs = list_sequences(root, sequences)
    rows: list[dict[str, Any]] = []
    for kind in prompts:
        results = []
        for seq in seqs:
            if starts_every > 0:
                res = _over_starts(seq, kind, backend, options, max_frames, starts_every)
            else:
                res = evaluate(seq, kind, backend, options, max_frames)
            results.append(res)
            rows.append({"bench": "davis", "backend": backend, "sequence": seq.name,
                         "prompt": kind, **res})  # fmt: skip
        if not results:
            continue
        rows.append(
            {
                "bench": "davis_mean",
                "backend": backend,
                "prompt": kind,
                "dataset": str(root.name),
                "sequences": len(results),
                "max_frames": max_frames,
                "starts_every": starts_every,
                "J": round(float(np.mean([r["J"] for r in results])), 4),
                "F": round(float(np.mean([r["F"] for r in results])), 4),
                "JF": round(float(np.mean([r["JF"] for r in results])), 4),
                "fps_median": float(np.median([r["fps"] for r in results if r["fps"]])),
                "wrong_reacquired": int(sum(r["wrong_reacquired"] for r in results)),
                "reacquired": int(sum(r["reacquired"] for r in results)),
                "wrong_frames": int(sum(r["wrong_frames"] for r in results)),
            }
        )
    if backend == "classic" and seqs:
        rows += speed(seqs[0], options, max_frames)
    return rows


def _over_starts(
    seq: DavisSequence,
    kind: str,
    backend: str,
    options: dict[str, Any] | None,
    max_frames: int,
    every: int,
) -> dict[str, Any]:
    """`evaluate` from every `every`-th frame leaving `MIN_TRACKED` after it (at least frame
    0) on which an object is in view: scores averaged over the starts, fps their median,
    counts summed."""
    starts = list(range(0, max(1, len(seq) - MIN_TRACKED), every))
    runs = [evaluate(seq, kind, backend, options, max_frames, start=s) for s in starts]
    runs = [r for r in runs if r["objects"]] or runs[:1]  # nothing to prompt: no run
    out: dict[str, Any] = {"starts": len(runs)}
    for key in ("J", "F", "JF"):
        out[key] = round(float(np.mean([r[key] for r in runs])), 4)
    fps = [r["fps"] for r in runs if r["fps"]]
    out["fps"] = round(float(np.median(fps)), 1) if fps else None
    out["frames"] = int(sum(r["frames"] for r in runs))
    out["objects"] = runs[0]["objects"]
    for key in ("lost_frames", "reacquired", "wrong_reacquired", "wrong_frames"):
        out[key] = int(sum(r[key] for r in runs))
    return out


def speed(
    seq: DavisSequence, options: dict[str, Any] | None = None, max_frames: int = 0
) -> list[dict[str, Any]]:
    """Step time with 1 and 3 objects at the footage's own size (DAVIS 480p: 854x480).

    Object 1 is the sequence's own (mask prompt); objects 2 and 3 are boxes on two fixed
    background regions (upper left and upper right, a fifth of the frame each), tracked like
    any object: what three prompted objects cost."""
    rows = []
    n = len(seq) if max_frames <= 0 else min(max_frames, len(seq))
    for count in (1, 3):
        session = SegmentationSession(
            build_backend(BackendConfig(backend="classic", options=dict(options or {}))),
            score_threshold=SCORE_THRESHOLD,
        )
        step_ms = []
        size = ""
        try:
            for index, (image, gts) in enumerate(seq.frames(n)):
                start = time.perf_counter()
                session.step(image, stamp_ns=index + 1)
                if index > 0:
                    step_ms.append((time.perf_counter() - start) * 1000)
                    continue
                h, w = image.shape[:2]
                size = f"{w}x{h}"
                session.add_prompt(Prompt(mask=next(iter(gts.values()))))
                for x0 in (0.05, 0.75)[: count - 1]:
                    box = (int(x0 * w), int(0.05 * h), int((x0 + 0.2) * w), int(0.3 * h))
                    session.add_prompt(Prompt(box=np.asarray(box, np.float32)))
        finally:
            session.close()
        p50 = statistics.median(step_ms)
        rows.append({"bench": "davis_speed", "sequence": seq.name, "input": size,
                     "objects": count, "fps": round(1000.0 / p50, 1),
                     "step_ms_p50": round(p50, 2),
                     "step_ms_p90": round(float(np.percentile(step_ms, 90)), 2)})  # fmt: skip
    return rows


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--option takes key=value; got '{text}'")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--davis", default="", help=f"DAVIS-layout folder (default ${ENV_VAR}, else {DEFAULT_DIR})"
    )
    parser.add_argument("--prompt", action="append", choices=PROMPTS, default=None)
    parser.add_argument("--sequence", action="append", default=None)
    parser.add_argument("--max-frames", type=int, default=0, help="first N frames (0 = all)")
    parser.add_argument("--starts-every", type=int, default=0,
                        help="average runs from every K-th frame (0: frame 0 only)")  # fmt: skip
    parser.add_argument("--backend", default="classic")
    parser.add_argument("--option", action="append", type=_parse_option, default=[],
                        help="backend option key=value (JSON value), repeatable")  # fmt: skip
    args = parser.parse_args(argv)
    rows = run(
        args.davis or None,
        tuple(args.prompt or PROMPTS),
        args.sequence,
        args.max_frames,
        dict(args.option),
        args.backend,
        args.starts_every,
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
