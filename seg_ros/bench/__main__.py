"""`make bench`: every benchmark this machine can run, one JSON object per line on stdout.

    python -m seg_ros.bench [--quick] [--davis DIR]
        [--only node,cameras,streams,robot,quality,davis,reference,soak,sam2,sam3,concepts]

Each suite runs in turn; one that fails prints a row with "error" and the others still run.
Timings are medians in milliseconds; rss growth in MB. A row with `"ok": false` missed a bound it
checks (e.g. the node's latencies under a slow model): the exit status is then 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

SUITES = (
    "node",
    "cameras",
    "streams",
    "robot",
    "quality",
    "davis",
    "reference",
    "soak",
    "sam2",
    "sam3",
    "concepts",
)


def _suite(name: str, quick: bool, davis: str = "") -> Callable[[], list[dict[str, Any]]]:
    if name == "node":
        mod = importlib.import_module("seg_ros.bench.node_bench")
        frames = 100 if quick else 300
        return lambda: [
            *mod.run(backend="fake", width=1280, height=720, frames=frames),
            *mod.slow_model_rows(),
        ]
    if name == "cameras":
        mod = importlib.import_module("seg_ros.bench.cameras_bench")
        return lambda: mod.run(quick=quick)
    if name == "streams":
        mod = importlib.import_module("seg_ros.bench.streams_bench")
        return lambda: mod.run(quick=quick)
    if name == "robot":
        mod = importlib.import_module("seg_ros.bench.robot_bench")
        return lambda: mod.run(width=640, height=480, frames=50 if quick else 200)
    if name == "quality":
        mod = importlib.import_module("seg_ros.bench.quality")
        return lambda: mod.run(backends=["classic"], quick=quick)
    if name == "davis":
        # Real footage (DAVIS layout); quick: the first 30 frames of each sequence.
        mod = importlib.import_module("seg_ros.bench.davis")
        return lambda: mod.run(davis or None, max_frames=30 if quick else 0)
    if name == "reference":
        # An object shown on DAVIS frame 0, searched for from frame 10 (and 20) on; quick: 10.
        mod = importlib.import_module("seg_ros.bench.reference_bench")
        return lambda: mod.run(davis or None, starts=(10,) if quick else (10, 20))
    if name == "soak":
        mod = importlib.import_module("seg_ros.bench.soak")
        return lambda: [
            mod.run_soak(backend="fake", frames=2_000 if quick else 20_000).row(),
            mod.run_soak(
                backend="classic", frames=300 if quick else 3_000, width=160, height=120
            ).row(),
        ]
    if name == "sam2":
        mod = importlib.import_module("seg_ros.bench.sam2_bench")
        return lambda: mod.run(quick=quick)
    if name == "sam3":
        mod = importlib.import_module("seg_ros.bench.sam3_bench")
        return lambda: mod.run(quick=quick)
    if name == "concepts":
        # Standing queries: detect + step per path; the real architectures unless quick.
        mod = importlib.import_module("seg_ros.bench.concepts_bench")
        return lambda: mod.run(quick=quick)
    raise ValueError(f"unknown suite '{name}'; choose from {', '.join(SUITES)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes in all")
    parser.add_argument("--only", default=",".join(SUITES), help="comma-separated suites")
    parser.add_argument(
        "--davis",
        default="",
        help="DAVIS-layout folder for the davis and reference suites (default: "
        "../shared/datasets/davis2016-dev beside the checkout; a skip row when absent)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    failed = 0
    host = {"host": platform.node(), "python": platform.python_version()}
    for name in names:
        start = time.perf_counter()
        try:
            rows = _suite(name, args.quick, args.davis)()
        except Exception as exc:  # one suite's failure must not hide the others' numbers
            failed += 1
            traceback.print_exc(file=sys.stderr)
            rows = [{"error": f"{type(exc).__name__}: {exc}"}]
        failed += any(row.get("ok") is False for row in rows)
        for row in rows:
            print(json.dumps({"suite": name, **row, **host}), flush=True)
        print(
            json.dumps({"suite": name, "suite_seconds": round(time.perf_counter() - start, 1)}),
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
