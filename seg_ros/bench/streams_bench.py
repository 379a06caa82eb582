"""Several streams on one loaded model: `make bench` suite "streams".

    python -m seg_ros.bench --quick --only streams

Engine only (no ROS): one `Model` (registry.load_model) and 1, 2 or 4 streams (`open_stream`),
each with one box-prompted object and its own moving clip (the streams are driven directly:
the session adds ids and locking, not model work).

Rows `streams_memory` (per backend and stream count; each measured in a fresh process):
    weight_bytes          the model's parameter + buffer storage (counted once, whatever the
                          number of streams); parameters likewise.
    state_bytes_per_stream  tensor storage a stream holds after `frames` steps (frames, features,
                          memory bank: `StreamingVideoTracker.held_bytes`; sam2 only).
    rss_load_mb           process RSS growth when loading the model.
    rss_streams_mb        RSS growth from opening the streams and running them (their state,
                          plus whatever the allocator keeps: noisy at these sizes).
    cuda_load_mb, cuda_streams_mb  torch.cuda.memory_allocated after loading, and its growth
                          from the streams, on CUDA only (device "auto"). Not run yet: the
                          machine these rows were measured on has no GPU (the fields are absent).
Rows `streams_throughput`:
    step_ms_median        one stream's step (wall), all streams served in turn.
    round_ms_median       every stream's next frame, in turn (`step` each) or at once
                          (`Model.step_batch`, row mode "batch").
    frames_per_s          streams * 1000 / round_ms_median, all streams together.
                          Sequential and batched rounds alternate on the same streams.
    per_stream_hz         frames_per_s / streams.
    batch_gain            sequential round / batched round (sam2 only; > 1 = the batch helps).

Models: fake, classic, the tiny random-weight SAM 2.1 (seg_ros.testing.tiny_models; 128 px), and
unless --quick the real SAM 2.1-tiny architecture with random weights (1024 px).
"""

from __future__ import annotations

import gc
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import psutil

from seg_ros.engine.backends.base import Backend, Model
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import load_model

WIDTH, HEIGHT = 640, 480
COUNTS = (1, 2, 4)


def _rss_mb() -> float:
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


def _clip(count: int, seed: int) -> list[np.ndarray]:
    """A red square moving over a textured background (one clip per stream)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames = []
    for t in range(count):
        img = np.roll(base, 5 * t, axis=1)
        x0 = 100 + 6 * t
        img[200:280, x0 : x0 + 80] = (230, 40, 40)
        frames.append(img)
    return frames


def _config(name: str, folder: pathlib.Path) -> BackendConfig:
    """BackendConfig of a bench model; SAM 2.1 variants are saved to `folder` first."""
    if name in ("fake", "classic"):
        return BackendConfig(backend=name)
    from seg_ros.testing.tiny_models import random_model, save_model

    arch = {"tiny-sam2": "tiny-sam2", "sam2.1-tiny-random": "sam2.1-tiny"}[name]
    path = folder / name
    if not path.exists():
        save_model(random_model(arch, init_range=0.1), path)
    # "auto": on a CUDA machine the rows are GPU rows (with cuda_* fields).
    return BackendConfig(backend="sam2", model=str(path), device="auto")


def _open(model: Model, clips: list[list[np.ndarray]]) -> list[Backend]:
    """A stream per clip, each on frame 0 of its clip with one box-prompted object."""
    streams = [model.open_stream() for _ in clips]
    box = Prompt(box=np.asarray([100, 200, 180, 280], np.float32))
    for stream, clip in zip(streams, clips, strict=True):
        stream.step(0, clip[0])
        stream.add_prompt(0, 1, box)
    return streams


def _state_bytes(backend: Backend) -> float | None:
    tracker = getattr(backend, "tracker", None)
    return None if tracker is None else float(tracker.held_bytes())


def memory_row(name: str, folder: pathlib.Path, count: int, frames: int) -> dict[str, Any]:
    """One memory row, measured in THIS process: run it in a fresh one (`memory_rows`), where
    RSS starts from the imports alone (a model loaded and freed before would leave its pages
    in the allocator, and the next load would seem free)."""
    import torch

    if name == "tiny-sam2":
        torch.set_num_threads(1)
    config = _config(name, folder)
    clips = [_clip(frames + 1, seed=n) for n in range(count)]  # the input, not the state
    gc.collect()
    before = _rss_mb()
    model = load_model(config)
    loaded = _rss_mb()
    cuda_loaded = model.stats().get("cuda_allocated_mb")
    streams = _open(model, clips)
    for t in range(1, frames + 1):
        for stream, clip in zip(streams, clips, strict=True):
            stream.step(t, clip[t])
    after = _rss_mb()
    stats = model.stats()
    state = [_state_bytes(s) for s in streams]
    row: dict[str, Any] = {
        "name": "streams_memory",
        "backend": name,
        "streams": count,
        "frames": frames,
        "parameters": int(stats.get("parameters", 0)),
        "weight_bytes": int(stats.get("weight_bytes", 0)),
        "rss_load_mb": round(loaded - before, 1),
        "rss_streams_mb": round(after - loaded, 1),
        "device": model.device,
        "torch_threads": torch.get_num_threads(),
    }
    if state[0] is not None:
        row["state_bytes_per_stream"] = int(statistics.mean(s or 0.0 for s in state))
    if cuda_loaded is not None:
        row["cuda_load_mb"] = round(cuda_loaded, 1)
        row["cuda_streams_mb"] = round(stats["cuda_allocated_mb"] - cuda_loaded, 1)
    model.close()  # closes its streams too
    return row


def memory_rows(
    name: str, folder: pathlib.Path, frames: int, counts: tuple[int, ...] = COUNTS
) -> list[dict[str, Any]]:
    """`memory_row` for each stream count, each in a fresh Python process."""
    _config(name, folder)  # saves the model once, before the children load it
    rows = []
    for count in counts:
        code = (
            "import json, pathlib, sys; from seg_ros.bench.streams_bench import memory_row; "
            "print(json.dumps(memory_row(sys.argv[1], pathlib.Path(sys.argv[2]), "
            "int(sys.argv[3]), int(sys.argv[4]))))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, name, str(folder), str(count), str(frames)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory row {name} x{count} failed: {done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def throughput_rows(
    name: str, folder: pathlib.Path, frames: int, counts: tuple[int, ...] = (1, 2, 3, 4)
) -> list[dict[str, Any]]:
    """Sequential rounds (each stream's `step` in turn) and, for sam2, batched rounds
    (`step_batch`) alternating on the same streams, so that both see the same load."""
    batches = name not in ("fake", "classic")
    rows = []
    for count in counts:
        model = load_model(_config(name, folder))
        rounds_needed = 2 * frames if batches else frames
        clips = [_clip(rounds_needed + 1, seed=n) for n in range(count)]
        streams = _open(model, clips)
        step_ms: list[float] = []
        rounds: list[float] = []
        batched: list[float] = []
        for t in range(1, rounds_needed + 1):
            items = [(stream, t, clip[t]) for stream, clip in zip(streams, clips, strict=True)]
            start = time.perf_counter()
            if batches and t % 2 == 0:
                model.step_batch(items)
                batched.append((time.perf_counter() - start) * 1e3)
                continue
            for stream, index, image in items:
                s0 = time.perf_counter()
                stream.step(index, image)
                step_ms.append((time.perf_counter() - s0) * 1e3)
            rounds.append((time.perf_counter() - start) * 1e3)
        round_ms = statistics.median(rounds)
        row: dict[str, Any] = {
            "name": "streams_throughput",
            "backend": name,
            "streams": count,
            "mode": "sequential",
            "rounds": len(rounds),
            "step_ms_median": round(statistics.median(step_ms), 2),
            "round_ms_median": round(round_ms, 2),
            "frames_per_s": round(count * 1e3 / round_ms, 2),
            "per_stream_hz": round(1e3 / round_ms, 2),
            "device": model.device,
        }
        rows.append(row)
        if batched:
            batch_ms = statistics.median(batched)
            rows.append(
                {
                    **row,
                    "mode": "batch",
                    "rounds": len(batched),
                    "step_ms_median": None,
                    "round_ms_median": round(batch_ms, 2),
                    "frames_per_s": round(count * 1e3 / batch_ms, 2),
                    "per_stream_hz": round(1e3 / batch_ms, 2),
                    "batch_gain": round(round_ms / batch_ms, 2),
                }
            )
        model.close()
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    import torch

    names = ["fake", "classic", "tiny-sam2"] + ([] if quick else ["sam2.1-tiny-random"])
    frames = {"fake": 30, "classic": 20, "tiny-sam2": 12, "sam2.1-tiny-random": 2}
    if quick:
        frames = {k: max(4, v // 3) for k, v in frames.items()}
    # The real architecture at 1024 px takes seconds a frame on a CPU: 1 and 2 streams only.
    counts = {"sam2.1-tiny-random": (1, 2)}
    memory_counts = {"sam2.1-tiny-random": (1, 2)}
    rows: list[dict[str, Any]] = []
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        for name in names:
            # Tiny models: thread start-up costs more than their maths (as in the sam2 suite).
            torch.set_num_threads(1 if name == "tiny-sam2" else before)
            try:
                found = throughput_rows(name, folder, frames[name], counts.get(name, (1, 2, 3, 4)))
            finally:
                threads = torch.get_num_threads()
                torch.set_num_threads(before)
            rows += memory_rows(name, folder, frames[name], memory_counts.get(name, COUNTS))
            rows += [{**row, "torch_threads": threads} for row in found]
    return rows
