"""Cost per frame of a standing query ("live concepts"), SAM 3 and the light path, random weights.

    python -m seg_ros.bench --only concepts [--quick]

A standing query runs the backend's `detect` every N-th frame on the frame the tracker just
stepped, so its cost per frame is the tracker's step with the K objects tracked plus the
detection amortised over N. Rows (one JSON object each, milliseconds; `ms` wall, `cpu_ms` this
process's CPU time, the steadier figure on a shared machine):

- `detect`: `Backend.detect` on a frame whose image features are cached (a detection frame
  while objects are tracked: the encoder ran in the step); `detect_cold`: on a frame not yet
  encoded (nothing tracked: a lazy stream skips the encoder in the step, so the detection pays
  it). Random weights score anything: the threshold is 0 and detections are capped at
  MAX_DETECTIONS (`detections`: the count); SAM 3 upsamples each mask, the light path runs
  SAM 2's decoder once per box.
- `track_step`: the session's step with K = 0, 1, 4 clicked objects and no query, once every
  object's memory window is full (`warm_frames` steps first; not for the one-sample rows).
- `per_frame` (derived): track_step(K) + detect / N for N = 1, 5, 15 (K = 0: detect_cold / N).
- `concept_step` (measured, tiny models): K clicked objects and a standing query detecting every
  N-th frame (new_instance_threshold 1: it adds no object, so K stays K), mean over frames: the
  check of the derived rows (the difference is the association, a few ms at 640x480).

On a CPU torch runs one thread (`threads`): on a shared 2-core machine more threads make the
numbers noisier, not smaller.

Paths: `sam3` (its detector reads the frame's shared ViT output) and `sam2.1+mm-grounding-dino`
(the `text_detector` light path: the detector on the image, SAM 2's decoder on each box).
Architectures: `tiny` (the test configs) always; `real` (random weights at the real sizes: SAM 3's
848M parameters at 1008 px, 35-70 s a ViT pass on a 2-core CPU; SAM 2.1-tiny at 1024 px with
MM-Grounding-DINO's Swin-T, 900 queries, 800-pixel shortest edge) unless --quick, one sample of
each timing; `cuda`: the real architectures on a GPU, or rows that say "not run" without one.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np

#: Camera frames of the benchmark (VGA): preprocessing and mask upsampling count.
FRAME_HEIGHT, FRAME_WIDTH = 480, 640
#: Objects tracked while the step is timed.
OBJECT_COUNTS = (0, 1, 4)
#: Detection every N-th frame.
EVERY_N = (1, 5, 15)
#: Detections per `detect` call: random weights return every query above the threshold (0).
MAX_DETECTIONS = 4
DETECT_THRESHOLD = 0.0
TEXT = "person"
PATHS = ("sam3", "sam2.1+mm-grounding-dino")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: Any, fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median wall and CPU milliseconds of `fn` over `repeats` calls (one warm-up if > 1)."""
    if repeats > 1:
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {
        "ms": round(1000.0 * statistics.median(wall), 2),
        "cpu_ms": round(1000.0 * statistics.median(cpu), 2),
    }


def _build(path: str, arch: str, device: str, folder: pathlib.Path) -> tuple[Any, float]:
    """The backend of `path` at `arch` ("tiny" or "real") on `device`; and its parameters (M)."""
    import torch

    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.sam.loading import resolve_device

    dev = resolve_device(device)
    if path == "sam3":
        from transformers import Sam3VideoConfig, Sam3VideoModel

        from seg_ros.engine.backends.sam3 import Sam3Model
        from seg_ros.engine.registry import build_backend
        from seg_ros.engine.sam.detector import load_tokenizer
        from seg_ros.testing.tiny_sam3 import TINY, write_random_checkpoint, write_tokenizer

        if arch == "tiny":
            write_random_checkpoint(folder, TINY)
            built: Any = build_backend(
                BackendConfig(backend="sam3", model=str(folder), device=device)
            )
            return built, sum(p.numel() for p in built.model.parameters()) / 1e6
        write_tokenizer(folder)  # the tiny vocabulary's ids are valid ids of the real one
        torch.manual_seed(0)
        model = Sam3VideoModel(Sam3VideoConfig()).eval().to(dev)
        stream = Sam3Model(model, load_tokenizer(str(folder))).open_stream()
        stream.owns_model = True  # one stream, one model: closing it frees the weights
        return stream, sum(p.numel() for p in model.parameters()) / 1e6
    from seg_ros.engine.backends.sam2 import Sam2Backend, Sam2Options
    from seg_ros.engine.sam.open_vocab import OpenVocabDetector
    from seg_ros.testing.tiny_detector import build_detector
    from seg_ros.testing.tiny_models import random_model

    det_model, processor = build_detector(folder, "mm-grounding-dino", arch)
    detector = OpenVocabDetector(det_model.to(dev), processor)
    sam = random_model("tiny-sam2", 128) if arch == "tiny" else random_model("sam2.1-tiny", 1024)
    options = Sam2Options(detector_threshold=DETECT_THRESHOLD)
    backend = Sam2Backend(
        sam.to(dev), BackendConfig(backend="sam2", device=str(dev)), options, detector
    )
    params = sum(p.numel() for p in sam.parameters()) + sum(
        p.numel() for p in det_model.parameters()
    )
    return backend, params / 1e6


def _capped(backend: Any) -> Callable[..., Any]:
    """`backend.detect` with at most MAX_DETECTIONS (what the `detect` rows time): a standing
    query asks for every detection, and random weights find dozens to hundreds."""
    detect = backend.detect

    def capped(frame: int, text: str, threshold: float, limit: int, **kw: Any) -> Any:
        return detect(frame, text, threshold, min(limit or MAX_DETECTIONS, MAX_DETECTIONS), **kw)

    return capped


def bench_path(
    path: str, arch: str, device: str, repeats: int, measure: bool
) -> list[dict[str, Any]]:
    """Every row of one path at one architecture (see the module docstring)."""
    import torch

    from seg_ros.engine.concepts import QueryOptions
    from seg_ros.engine.prompts import Prompt
    from seg_ros.engine.sam.loading import resolve_device
    from seg_ros.engine.session import SegmentationSession

    base: dict[str, Any] = {"path": path, "arch": f"{arch} (random weights)", "device": device}
    if device.startswith("cuda") and not torch.cuda.is_available():
        return [{**base, "status": "not run (no GPU here)"}]
    dev = resolve_device(device)
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
        for _ in range(max(repeats, 2) + 1)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        backend, params_m = _build(path, arch, device, pathlib.Path(tmp))
        load_s = time.perf_counter() - start
    base.update(
        {
            "device": dev.type,
            "params_m": round(params_m, 1),
            "frame": f"{FRAME_WIDTH}x{FRAME_HEIGHT}",
            "threads": torch.get_num_threads(),
            # Other work on the machine slows every number down: the 1-minute load at the start.
            "load_avg": round(os.getloadavg()[0], 2),
            "repeats": repeats,
        }
    )
    # Steady state: every object's memory window full before timing (one-sample rows: skipped,
    # the image encoder dominates them).
    warm_frames = int(backend.memory_frames) + 1 if repeats > 1 else 0
    base["warm_frames"] = warm_frames
    rows: list[dict[str, Any]] = [{**base, "metric": "load_s", "value": round(load_s, 2)}]
    session = SegmentationSession(backend, max_objects=8, score_threshold=DETECT_THRESHOLD)
    detect = _capped(backend)

    # Detection on a frame not encoded yet (nothing tracked: lazy step), then on the same frame.
    cold_samples = []
    for k in range(repeats):
        session.reset()
        session.step(frames[k])
        index = session.frame_index
        cold_samples.append(_timed(dev, partial(detect, index, TEXT, DETECT_THRESHOLD, 0), 1))
    cold = {m: round(statistics.median(s[m] for s in cold_samples), 2) for m in ("ms", "cpu_ms")}
    found = detect(index, TEXT, DETECT_THRESHOLD, 0)
    warm = _timed(dev, lambda: detect(index, TEXT, DETECT_THRESHOLD, 0), repeats)
    rows.append({**base, "metric": "detect_cold", **cold, "detections": len(found)})
    rows.append({**base, "metric": "detect", **warm, "detections": len(found)})

    steps: dict[int, dict[str, float]] = {}
    for count in OBJECT_COUNTS:
        cursor = _tracking(session, frames, count, warm_frames, Prompt)
        steps[count] = _timed(dev, partial(_step_next, session, cursor), repeats)
        rows.append({**base, "metric": "track_step", "objects": count, **steps[count]})
    for count in OBJECT_COUNTS:
        detection = cold if count == 0 else warm
        for every_n in EVERY_N:
            derived = {
                m: round(steps[count][m] + detection[m] / every_n, 2) for m in ("ms", "cpu_ms")
            }
            rows.append(
                {**base, "metric": "per_frame", "objects": count, "every_n": every_n, **derived}
            )
    if measure:
        backend.detect = detect  # the session's detections capped as in the `detect` rows
        for every_n in EVERY_N:
            cursor = _tracking(session, frames, 1, warm_frames, Prompt)
            rows.append(_measured(session, cursor, base, dev, every_n, QueryOptions))
    session.close()
    backend.close()
    gc.collect()
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress: a path can take minutes
    return rows


def _step_next(session: Any, cursor: Iterator[np.ndarray]) -> Any:
    return session.step(next(cursor))


def _tracking(
    session: Any, frames: list[np.ndarray], count: int, warm_frames: int, prompt_cls: Any
) -> Iterator[np.ndarray]:
    """A fresh session tracking `count` clicked objects after `warm_frames` steps; returns the
    endless frame iterator to go on with."""
    session.reset()
    for query in session.queries:
        session.remove_query(query.query_id, keep_objects=False)
    cursor = itertools.cycle(frames)
    session.step(next(cursor))
    for k in range(count):
        x = FRAME_WIDTH * (k + 1) / (count + 1)
        session.add_prompt(prompt_cls(points=np.array([[x, FRAME_HEIGHT / 2]], np.float32)))
    for _ in range(warm_frames):
        session.step(next(cursor))
    return cursor


def _measured(
    session: Any,
    cursor: Iterator[np.ndarray],
    base: dict[str, Any],
    dev: Any,
    every_n: int,
    query_options: Any,
) -> dict[str, Any]:
    """The tracked objects and a standing query every `every_n` frames, mean over `every_n`
    frames (5 for every_n 1): the amortised cost, the tracker's step included."""
    # Added now, it detects on the latest frame at once (not timed), then on every every_n-th.
    session.add_query(TEXT, query_options(every_n=every_n, new_instance_threshold=1.0))
    before = session.queries[0].stats.detections_run
    count = max(every_n, 5)
    wall = cpu = 0.0
    objects = 0
    for _ in range(count):
        _sync(dev)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = session.step(next(cursor))
        _sync(dev)
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        objects = max(objects, len(result.objects))
    stats = session.queries[0].stats
    return {
        **base,
        "metric": "concept_step",
        "objects": objects,
        "every_n": every_n,
        "ms": round(1000.0 * wall / count, 2),
        "cpu_ms": round(1000.0 * cpu / count, 2),
        "detections_run": stats.detections_run - before,
        "frames": count,
        "errors": stats.errors,
    }


def run(quick: bool = False, device: str = "auto") -> list[dict[str, Any]]:
    """Tiny paths always (with the measured check); the real architectures unless `quick`; the
    GPU rows (real architectures on CUDA) where one is present, else rows saying not run."""
    import torch

    from seg_ros.engine.sam.loading import resolve_device

    cuda = resolve_device(device).type == "cuda"
    threads = torch.get_num_threads()
    if not cuda:
        torch.set_num_threads(1)
    try:
        return _run(quick, device, cuda)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool, device: str, cuda: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in PATHS:
        rows.extend(bench_path(path, "tiny", device, 3 if quick else 5, measure=True))
    for path in PATHS:
        if cuda:  # seconds there: the real architectures with the measured check
            rows.extend(bench_path(path, "real", device, 5, measure=True))
        elif not quick:  # a minute a ViT pass on a CPU: one sample, no measured rows
            rows.extend(bench_path(path, "real", device, 1, measure=False))
        if not cuda:  # the rows a GPU machine fills
            rows.extend(bench_path(path, "real", "cuda", 5, measure=True))
    return rows
