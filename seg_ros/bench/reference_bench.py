"""A reference from another image, on real footage: how often and how fast the object is found.

    python -m seg_ros.bench.reference_bench [--davis DIR] [--start 10 --start 20]
        [--sequence blackswan ...] [--backend classic] [--option key=value ...]

Protocol, per DAVIS-layout sequence and object: the reference is frame 0 with the object's
ground-truth mask, given to `SegmentationSession.add_reference` as an external image before the
stream starts (as `~/add_reference` does); the stream is the sequence from frame `start` on
(the object has moved), with no prompt. Per object:

* `found`: whether it was ever reported visible; `frames_to_find`: frames of the stream before
  the first visible one (0 = found on the first frame);
* `J_found`: mean J from the first visible frame to the end (DAVIS leaves out the last frame;
  a frame where it is not visible scores as an empty prediction);
* `J_stream`: mean J over the whole stream (the frames before it is found score as empty
  predictions: 0 where the object is in the truth);
* `J_prompted`: the same frames tracked from the ground-truth mask given as a prompt on frame
  `start` (the seg_ros davis protocol from there): what finding it by reference costs;
* `wrong_finds`: frames where the object became visible (first find or re-find) with IoU < 0.1
  against the truth (found on the wrong thing).

Absent objects (`absent`): each sequence's frame-0 reference searched for in every other
sequence (frames `start` .. `start` + 29), where the object is not: `pairs_with_find` counts
the pairs where anything was reported visible (all wrong), `visible_frames` the frames.

Rows: {"bench": "reference", sequence, start, ...} per sequence and start, {"bench":
"reference_mean", start, found, ...} per start, one {"bench": "reference_absent", ...}; one
{"bench": "reference", "skipped": reason} row when the folder is absent.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time
from typing import Any

import numpy as np

from seg_ros.bench.davis import (
    DEFAULT_DIR,
    ENV_VAR,
    SCORE_THRESHOLD,
    WRONG_IOU,
    DavisSequence,
    _parse_option,
    davis_root,
    list_sequences,
    read_objects,
    read_rgb,
)
from seg_ros.bench.metrics import jaccard
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession

#: Where the stream starts by default (frames after the reference frame 0).
STARTS = (10, 20)


def _session(backend: str, options: dict[str, Any] | None, model: str) -> SegmentationSession:
    config = BackendConfig(backend=backend, model=model, options=dict(options or {}))
    return SegmentationSession(
        build_backend(config), max_objects=16, score_threshold=SCORE_THRESHOLD
    )


def evaluate(
    seq: DavisSequence,
    start: int = 10,
    backend: str = "classic",
    options: dict[str, Any] | None = None,
    model: str = "",
    prompted: bool = True,
) -> dict[str, Any]:
    """One sequence: reference = frame 0 + its truth; stream = frames `start`.. (see module)."""
    if not 0 < start < len(seq) - 1:
        raise ValueError(f"start must be in 1..{len(seq) - 2} for {seq.name}; got {start}")
    reference = read_rgb(seq.images[0])
    truths = {v: m for v, m in read_objects(seq.annotations[0]).items() if m.any()}
    session = _session(backend, options, model)
    step_ms: list[float] = []
    ids: dict[int, str] = {}
    found_at: dict[int, int] = {}
    scores: dict[int, list[float]] = {v: [] for v in truths}
    visible_before = dict.fromkeys(truths, False)
    wrong = 0
    last = len(seq) - 1  # DAVIS leaves out the last frame
    try:
        for value, gt in truths.items():
            ids[value] = session.add_reference(reference, Prompt(mask=gt)).object_id
        for index in range(start, last + 1):
            image = read_rgb(seq.images[index])
            gts = read_objects(seq.annotations[index])
            t0 = time.perf_counter()
            result = session.step(image, stamp_ns=index + 1)
            step_ms.append((time.perf_counter() - t0) * 1000)
            for value, obj_id in ids.items():
                obj = result.get(obj_id)
                gt = gts.get(value, np.zeros(image.shape[:2], bool))
                visible = obj is not None and obj.visible
                pred = obj.mask if visible and obj is not None else np.zeros_like(gt)
                if visible and not visible_before[value]:
                    found_at.setdefault(value, index - start)
                    wrong += int(jaccard(pred, gt) < WRONG_IOU)
                visible_before[value] = visible
                if index < last:
                    scores[value].append(jaccard(pred, gt))
    finally:
        session.close()
    found = [v for v in truths if v in found_at]
    j_found = [float(np.mean(scores[v][found_at[v] :])) for v in found]
    row: dict[str, Any] = {
        "objects": len(truths),
        "found": len(found),
        "frames_to_find": [found_at.get(v) for v in truths],
        "J_found": round(float(np.mean(j_found)), 4) if j_found else None,
        "J_stream": round(float(np.mean([np.mean(s) for s in scores.values()])), 4),
        "wrong_finds": wrong,
        "frames": last - start + 1,
        "step_ms_p50": round(statistics.median(step_ms), 2),
    }
    if prompted:
        row["J_prompted"] = _prompted(seq, start, backend, options, model)
    return row


def _prompted(
    seq: DavisSequence, start: int, backend: str, options: dict[str, Any] | None, model: str
) -> float:
    """Mean J over frames start+1 .. last-1, every object prompted with its truth on `start`."""
    session = _session(backend, options, model)
    last = len(seq) - 1
    per: dict[int, list[float]] = {}
    ids: dict[int, str] = {}
    try:
        for index in range(start, last):
            image = read_rgb(seq.images[index])
            gts = read_objects(seq.annotations[index])
            result = session.step(image, stamp_ns=index + 1)
            if index == start:
                for value, gt in gts.items():
                    if gt.any():
                        ids[value] = session.add_prompt(Prompt(mask=gt)).object_id
                        per[value] = []
                continue
            for value, obj_id in ids.items():
                obj = result.get(obj_id)
                gt = gts.get(value, np.zeros(image.shape[:2], bool))
                pred = obj.mask if obj is not None and obj.visible else np.zeros_like(gt)
                per[value].append(jaccard(pred, gt))
    finally:
        session.close()
    return round(float(np.mean([np.mean(s) for s in per.values() if s])), 4) if per else 0.0


def absent(
    seqs: list[DavisSequence],
    start: int = 10,
    frames: int = 30,
    backend: str = "classic",
    options: dict[str, Any] | None = None,
    model: str = "",
) -> dict[str, Any]:
    """Every sequence's frame-0 reference searched for in every other sequence (module doc)."""
    pairs = found = visible = 0
    step_ms: list[float] = []
    for ref_seq in seqs:
        reference = read_rgb(ref_seq.images[0])
        truths = [m for m in read_objects(ref_seq.annotations[0]).values() if m.any()]
        for seq in seqs:
            if seq is ref_seq:
                continue
            session = _session(backend, options, model)
            try:
                ids = [session.add_reference(reference, Prompt(mask=gt)).object_id for gt in truths]
                seen = 0
                for index in range(start, min(len(seq), start + frames)):
                    image = read_rgb(seq.images[index])
                    t0 = time.perf_counter()
                    result = session.step(image, stamp_ns=index + 1)
                    step_ms.append((time.perf_counter() - t0) * 1000)
                    seen += sum(1 for i in ids if (o := result.get(i)) is not None and o.visible)
            finally:
                session.close()
            pairs += 1
            found += int(seen > 0)
            visible += seen
    return {
        "bench": "reference_absent",
        "backend": backend,
        "start": start,
        "pairs": pairs,
        "pairs_with_find": found,
        "visible_frames": visible,
        "frames_per_pair": frames,
        # What searching costs while the object is not there (every frame, all of the frame).
        "step_ms_p50": round(statistics.median(step_ms), 2) if step_ms else None,
    }


def run(
    davis_dir: str | pathlib.Path | None = None,
    starts: tuple[int, ...] | list[int] = STARTS,
    sequences: list[str] | None = None,
    options: dict[str, Any] | None = None,
    backend: str = "classic",
    model: str = "",
    prompted: bool = True,
    with_absent: bool = True,
) -> list[dict[str, Any]]:
    """Rows for every sequence and start, the means and the absent-object row; a skip row
    without data."""
    root, skipped = davis_root(davis_dir, "reference")
    if skipped:
        return [skipped]
    seqs = list_sequences(root, sequences)
    rows: list[dict[str, Any]] = []
    for start in starts:
        results = []
        for seq in seqs:
            res = evaluate(seq, start, backend, options, model, prompted)
            results.append(res)
            rows.append({"bench": "reference", "backend": backend, "sequence": seq.name,
                         "start": start, **res})  # fmt: skip
        if not results:
            continue
        waits = [f for r in results for f in r["frames_to_find"] if f is not None]
        j_found = [r["J_found"] for r in results if r["J_found"] is not None]
        mean: dict[str, Any] = {
            "bench": "reference_mean",
            "backend": backend,
            "start": start,
            "dataset": root.name,
            "sequences": len(results),
            "objects": sum(r["objects"] for r in results),
            "found": sum(r["found"] for r in results),
            "frames_to_find_median": float(np.median(waits)) if waits else None,
            "J_found": round(float(np.mean(j_found)), 4) if j_found else None,
            "J_stream": round(float(np.mean([r["J_stream"] for r in results])), 4),
            "wrong_finds": sum(r["wrong_finds"] for r in results),
        }
        if prompted:
            mean["J_prompted"] = round(float(np.mean([r["J_prompted"] for r in results])), 4)
        rows.append(mean)
    if len(seqs) > 1 and with_absent:
        rows.append(absent(seqs, starts[0] if starts else 10, 30, backend, options, model))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--davis", default="", help=f"DAVIS-layout folder (default ${ENV_VAR}, else {DEFAULT_DIR})"
    )
    parser.add_argument("--start", action="append", type=int, default=None)
    parser.add_argument("--sequence", action="append", default=None)
    parser.add_argument("--backend", default="classic")
    parser.add_argument("--model", default="", help="weights for a model backend (sam2, sam3)")
    parser.add_argument("--no-prompted", action="store_true", help="skip the J_prompted pass")
    parser.add_argument("--no-absent", action="store_true", help="skip the absent-object pass")
    parser.add_argument("--option", action="append", type=_parse_option, default=[],
                        help="backend option key=value (JSON value), repeatable")  # fmt: skip
    args = parser.parse_args(argv)
    rows = run(
        args.davis or None,
        tuple(args.start or STARTS),
        args.sequence,
        dict(args.option),
        args.backend,
        args.model,
        not args.no_prompted,
        not args.no_absent,
    )
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
