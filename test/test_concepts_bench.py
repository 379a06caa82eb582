"""The `concepts` bench suite (seg_ros/bench/concepts_bench.py) on the tiny random-weight paths:
every row is there, the derived per-frame cost is step + detect / N, and the measured check ran
the detector exactly on the frames a standing query every N frames is due."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("torchvision") is None, reason="SAM 3 needs torchvision"
    ),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.mark.parametrize("path", ["sam3", "sam2.1+mm-grounding-dino"])
def test_rows_of_one_tiny_path(path: str) -> None:
    from seg_ros.bench import concepts_bench as bench

    rows = bench.bench_path(path, "tiny", "cpu", repeats=1, measure=True)
    by = {(r["metric"], r.get("objects"), r.get("every_n")): r for r in rows}
    detect, cold = by[("detect", None, None)], by[("detect_cold", None, None)]
    assert 1 <= detect["detections"] <= bench.MAX_DETECTIONS
    for count in bench.OBJECT_COUNTS:
        step = by[("track_step", count, None)]
        for every_n in bench.EVERY_N:
            derived = by[("per_frame", count, every_n)]
            cost = cold if count == 0 else detect
            assert derived["cpu_ms"] == pytest.approx(
                step["cpu_ms"] + cost["cpu_ms"] / every_n, abs=0.02
            )
    for every_n in bench.EVERY_N:
        measured = by[("concept_step", 1, every_n)]
        assert measured["errors"] == 0
        # N = 1: every timed frame; else once in the window (the query's first detection, on
        # the frame it was added, is outside it).
        assert measured["detections_run"] == (measured["frames"] if every_n == 1 else 1)
        assert measured["cpu_ms"] > 0.0


def test_gpu_rows_say_not_run_without_cuda() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the rows run")
    from seg_ros.bench import concepts_bench as bench

    assert bench.bench_path("sam3", "real", "cuda", 5, measure=True) == [
        {
            "path": "sam3",
            "arch": "real (random weights)",
            "device": "cuda",
            "status": "not run (no GPU here)",
        }
    ]
