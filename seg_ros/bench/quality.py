"""Tracking quality on the synthetic sequences: J, F, J&F per sequence and backend, and speed.

Each backend runs through a `SegmentationSession` (as the node does), frame by frame. Every
object is prompted on its first visible frame, either with its ground-truth box ("box") or with
one click at its most interior pixel ("point"). Scored frames are those after each object's
prompt frame (the prompted frame itself is given, as in DAVIS); a frame where the object is
absent scores 1 only if the backend reports it absent too.

    python -m seg_ros.bench.quality [--quick] [--backend classic --backend fake]
        [--model sam2=/opt/models/sam2.1-hiera-tiny]

Backends that need a model (sam2, sam3) run only when one is given; otherwise a "skipped" row.
Rows: {"bench": "quality", backend, sequence, prompt, J, F, JF, fps, ...}, one "quality_mean"
row per backend and prompt kind, and "speed" rows (classic fps at 640x480 with 1-3 objects).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from seg_ros.bench.metrics import SequenceScore
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession
from seg_ros.tools.synthetic import (
    SEQUENCES,
    SyntheticSequence,
    box_of,
    interior_point,
    make_sequence,
)

#: Backends that cannot run without weights.
NEEDS_MODEL = ("sam2", "sam3")
PROMPTS = ("box", "point")
#: The session threshold of the shipped config/seg_ros.yaml.
SCORE_THRESHOLD = 0.5


def _prompt_for(kind: str, gt: np.ndarray) -> Prompt:
    if kind == "box":
        box = box_of(gt)
        assert box is not None
        return Prompt(box=np.asarray(box, np.float32))
    point = interior_point(gt)
    assert point is not None
    return Prompt(points=np.array([point], np.float32), point_labels=np.ones(1, np.int8))


def evaluate(
    seq: SyntheticSequence,
    backend: str,
    prompt_kind: str,
    model: str = "",
    objects: list[int] | None = None,
) -> dict[str, Any]:
    """Run one backend over one sequence; return its scores and timings."""
    if prompt_kind not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}")
    ids = objects or seq.object_ids
    session = SegmentationSession(
        build_backend(BackendConfig(backend=backend, model=model)),
        max_objects=max(8, len(ids)),
        score_threshold=SCORE_THRESHOLD,
    )
    score = SequenceScore()
    prompted: dict[int, str] = {}  # ground-truth id -> session object id
    step_ms: list[float] = []
    prompt_ms: list[float] = []
    try:
        for frame in seq:
            start = time.perf_counter()
            result = session.step(frame.image, stamp_ns=frame.index + 1)
            step_ms.append((time.perf_counter() - start) * 1000)
            preds: dict[int, np.ndarray] = {}
            for gt_id, obj_id in prompted.items():
                obj = result.get(obj_id)
                if obj is not None and obj.visible:
                    preds[gt_id] = obj.mask
            score.add_frame(preds, frame.masks, list(prompted))
            for gt_id in ids:
                if gt_id in prompted or frame.masks[gt_id].sum() < 64:
                    continue
                start = time.perf_counter()
                res = session.add_prompt(_prompt_for(prompt_kind, frame.masks[gt_id]))
                prompt_ms.append((time.perf_counter() - start) * 1000)
                prompted[gt_id] = res.object_id
    finally:
        session.close()
    # The first frame's step is cheaper (no object yet, no flow): leave it out of the speed.
    timed = step_ms[1:] or step_ms
    p50 = statistics.median(timed)
    return {
        "J": round(score.j, 4),
        "F": round(score.f, 4),
        "JF": round(score.jf, 4),
        "per_object": {
            str(k): {"J": round(v.j, 4), "F": round(v.f, 4), "frames": v.frames}
            for k, v in sorted(score.objects.items())
        },
        "fps": round(1000.0 / p50, 1) if p50 > 0 else None,
        "step_ms_p50": round(p50, 2),
        "step_ms_p90": round(float(np.percentile(timed, 90)), 2),
        "prompt_ms_p50": round(statistics.median(prompt_ms), 1) if prompt_ms else None,
        "frames": len(seq),
        "objects": len(ids),
    }


def speed(width: int = 640, height: int = 480, frames: int = 60) -> list[dict[str, Any]]:
    """Classic backend step time with 1, 2 and 3 objects (the 'crowd' sequence)."""
    rows = []
    seq = make_sequence("crowd", width, height, num_frames=frames)
    for n in (1, 2, 3):
        res = evaluate(seq, "classic", "box", objects=seq.object_ids[:n])
        rows.append(
            {
                "bench": "speed",
                "backend": "classic",
                "input": f"{width}x{height}",
                "objects": n,
                "fps": res["fps"],
                "step_ms_p50": res["step_ms_p50"],
                "step_ms_p90": res["step_ms_p90"],
                "frames": frames,
            }
        )
    return rows


def run(
    backends: list[str],
    quick: bool,
    models: dict[str, str] | None = None,
    width: int = 640,
    height: int = 480,
) -> list[dict[str, Any]]:
    """Every requested backend (plus "fake" as the no-tracking baseline) on every sequence."""
    models = models or {}
    names = list(dict.fromkeys([*backends, "fake"]))
    frames = 30 if quick else 0  # quick: the same motion squeezed into 30 frames
    rows: list[dict[str, Any]] = []
    for backend in names:
        if backend in NEEDS_MODEL and not models.get(backend):
            rows.append(
                {"bench": "quality", "backend": backend, "skipped": "no model given (--model)"}
            )
            continue
        for kind in PROMPTS:
            results = []
            for name in SEQUENCES:
                seq = make_sequence(name, width, height, num_frames=frames)
                res = evaluate(seq, backend, kind, models.get(backend, ""))
                results.append(res)
                rows.append(
                    {
                        "bench": "quality",
                        "backend": backend,
                        "sequence": name,
                        "prompt": kind,
                        "input": f"{width}x{height}",
                        **res,
                    }
                )
            rows.append(
                {
                    "bench": "quality_mean",
                    "backend": backend,
                    "prompt": kind,
                    "input": f"{width}x{height}",
                    "sequences": len(results),
                    "J": round(float(np.mean([r["J"] for r in results])), 4),
                    "F": round(float(np.mean([r["F"] for r in results])), 4),
                    "JF": round(float(np.mean([r["JF"] for r in results])), 4),
                    "fps_median": float(np.median([r["fps"] for r in results])),
                }
            )
    if "classic" in names:
        rows += speed(width, height, frames=40 if quick else 80)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", action="append", default=None, help="repeatable")
    parser.add_argument("--model", action="append", default=[], help="backend=path, repeatable")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    models = {}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--model takes backend=path; got '{item}'")
        models[name] = path
    width, height = (int(v) for v in args.size.lower().split("x"))
    for row in run(args.backend or ["classic"], args.quick, models, width, height):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
