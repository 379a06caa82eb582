"""SAM 2.1 / EdgeTAM backend timings on random-weight models (seg_ros.testing.tiny_models).

No weights can be downloaded here: models are built from configs with random weights. Timings
depend on the architecture and sizes only (not on the weight values), except that the object-score
head is biased so objects are "present" and every stage runs as with a real checkpoint.

Rows (one JSON object each, medians in milliseconds):
- per model and input size: image encoder, prompt on a processed frame (decoder side only, a new
  object and a refinement), full tracking step with 1 / 4 / 8 objects (steady state: every
  object's memory window full), fps with one object, peak CUDA memory on a GPU;
- everything: a 32x32 grid of clicks on the latest frame's cached features (segment everything)
  next to one tracking step of one object, and their ratio;
- references: `add_reference` (a box on a 640x480 image that is not a frame: encoder + decoder
  + memory encoder), the bytes one reference holds, and a tracking step of an object known only
  from a reference next to one of a prompted object (steady state, same memory window);
- memory: RSS growth of the bounded tracker over >= 1000 frames next to the library's own
  unbounded session over the same frames (tiny config at 128 px so it fits the CPU budget);
- text (the `text_detector` path): the open-vocabulary detector's pass on a 640x480 frame, and
  `detect()` in all (detector + SAM 2's decoder on each box, on the frame's cached features),
  for the tiny and the real detector architectures; rows a GPU fills say "not run" without one.

    python -m seg_ros.bench --only sam2 [--quick]
"""

from __future__ import annotations

import gc
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from seg_ros.testing.tiny_models import CONFIGS, random_model

# ---------------------------------------------------------------------- measurements
SOURCE_HEIGHT, SOURCE_WIDTH = 480, 640  # camera frames: preprocessing and mask upsampling count


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000.0, 2)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: Any, fn: Callable[[], Any]) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _fill_window(backend: Any, obj: int, frame: int) -> int:
    """Fill `obj`'s memory window with copies of its output on `frame` (bench-only shortcut).

    A step's cost depends on how much memory each object attends to, not on its content: copying
    one tracked frame into the whole window reaches the steady state without paying
    num_maskmem - 1 warm-up steps (minutes per model on a CPU). Returns the next frame index.
    """
    tracker = backend.tracker
    tracked = tracker.lib.tracked_outputs(tracker._idx(obj))
    window = max(tracker.memory.memory_frames, tracker.memory.pointer_frames)
    entry = tracked[frame]
    # Renumber: the real frame becomes the newest of a full window of identical frames.
    for k in range(1, window + 1):
        tracked[frame + k] = dict(entry)
        tracker._tracked.setdefault(obj, set()).add(frame + k)
    return frame + window + 1


def _copy_memory(backend: Any, source: int, targets: list[int]) -> None:
    """Give `targets` the tracked-frame memory of `source` (same shortcut, more objects)."""
    tracker = backend.tracker
    src = tracker.lib.tracked_outputs(tracker._idx(source))
    for obj in targets:
        tracked = tracker.lib.tracked_outputs(tracker._idx(obj))
        tracked.clear()
        tracked.update({k: dict(v) for k, v in src.items()})
        tracker._tracked[obj] = set(tracker._tracked.get(source, set()))


def bench_model(
    name: str,
    input_size: int,
    device: str,
    repeats: int,
    batch_objects: bool | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """Encoder, prompt and step timings of one random-weight model at one input size.

    `threads` > 0 sets torch's CPU threads for this row (restored after): tiny models spend
    more in thread hand-offs than in maths, 5x more on a busy 2-core machine.
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _bench_model(name, input_size, device, repeats, batch_objects)
    finally:
        torch.set_num_threads(before)


def _bench_model(
    name: str, input_size: int, device: str, repeats: int, batch_objects: bool | None
) -> dict[str, Any]:
    import torch

    from seg_ros.engine.backends.sam2 import Sam2Backend, Sam2Options
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.prompts import Prompt
    from seg_ros.engine.sam.loading import resolve_device

    dev = resolve_device(device)
    model = random_model(name, input_size).to(dev)
    config = BackendConfig(backend="sam2", device=str(dev))
    backend = Sam2Backend(model, config, Sam2Options(batch_objects=batch_objects))
    tracker = backend.tracker
    rng = np.random.default_rng(0)

    def image() -> np.ndarray:
        return rng.integers(0, 256, (SOURCE_HEIGHT, SOURCE_WIDTH, 3), dtype=np.uint8)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    size = tracker.image_size
    pixels = torch.randn(1, 3, size, size, device=dev, dtype=tracker.dtype)
    encode = model.get_image_features
    with torch.inference_mode():
        encode(pixels)  # warm-up
        encoder = [_timed(dev, lambda: encode(pixels)) for _ in range(repeats)]
    frame = 0
    backend.step(frame, image())
    click = Prompt(points=np.array([[320.0, 240.0]], np.float32), point_labels=np.ones(1, np.int8))
    backend.add_prompt(frame, 1, click)
    frame += 1
    backend.step(frame, image())  # one real tracked frame, then a full window of its copies
    frame = _fill_window(backend, 1, frame) - 1
    steps = {}
    one = []
    for _ in range(repeats):
        frame += 1
        one.append(_timed(dev, lambda f=frame: backend.step(f, image())))  # type: ignore[misc]
    steps[1] = one
    # Prompts on the frame just processed: a new object (no memory) and a refinement (memory).
    prompt_new, prompt_refine = [], []
    refine = Prompt(
        points=np.array([[330.0, 250.0]], np.float32), point_labels=np.zeros(1, np.int8)
    )
    for k in range(repeats):
        obj = 100 + k
        prompt_new.append(_timed(dev, lambda o=obj: backend.add_prompt(frame, o, click)))  # type: ignore[misc]
        backend.remove_object(obj)
        prompt_refine.append(_timed(dev, lambda: backend.add_prompt(frame, 1, refine)))
    for count in (4, 8):
        new = [o for o in range(2, count + 1) if o not in tracker.object_ids]
        for obj in new:
            xy = [float(40 + 60 * obj % SOURCE_WIDTH), float(30 + 50 * obj % SOURCE_HEIGHT)]
            backend.add_prompt(
                frame,
                obj,
                Prompt(points=np.array([xy], np.float32), point_labels=np.ones(1, np.int8)),
            )
        _copy_memory(backend, 1, new)
        timings = []
        for _ in range(repeats):
            frame += 1
            timings.append(_timed(dev, lambda f=frame: backend.step(f, image())))  # type: ignore[misc]
        steps[count] = timings
    row: dict[str, Any] = {
        "model": f"{name} (random weights)",
        "input_size": size,
        "device": dev.type,
        "threads": torch.get_num_threads(),
        "batch_objects": tracker.batch_objects,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "encoder_ms": _median_ms(encoder),
        "prompt_ms": _median_ms(prompt_new),
        "prompt_refine_ms": _median_ms(prompt_refine),
        "step_ms_1obj": _median_ms(steps[1]),
        "step_ms_4obj": _median_ms(steps[4]),
        "step_ms_8obj": _median_ms(steps[8]),
        "fps_1obj": round(1.0 / statistics.median(steps[1]), 2),
        "source_size": f"{SOURCE_WIDTH}x{SOURCE_HEIGHT}",
        "repeats": repeats,
    }
    if dev.type == "cuda":
        row["cuda_max_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    backend.close()
    gc.collect()
    return row


def bench_everything(
    name: str,
    input_size: int,
    device: str,
    repeats: int,
    chunk: int = 64,
    default_thresholds: bool = False,
    coarse_to_fine: bool = False,
) -> dict[str, Any]:
    """Segment everything (32x32 grid on the latest frame's cached features) vs one tracking
    step of one object in steady state (the issue's target: ratio <= 3).
    `coarse_to_fine`: the option that skips grid points inside kept masks (not SAM's answer).

    Thresholds at zero by default: every candidate reaches NMS and the source-size upsampling
    (the filters' worst case). `default_thresholds` uses SAM's 0.88 / 0.95 instead (random
    weights then usually keep no mask: the row is the decoder's cost alone).
    """
    import torch

    from seg_ros.engine.backends.sam2 import Sam2Backend, Sam2Options
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.prompts import Prompt
    from seg_ros.engine.sam.everything import EverythingOptions
    from seg_ros.engine.sam.loading import resolve_device

    dev = resolve_device(device)
    model = random_model(name, input_size).to(dev)
    backend = Sam2Backend(model, BackendConfig(backend="sam2", device=str(dev)), Sam2Options())
    rng = np.random.default_rng(0)

    def image() -> np.ndarray:
        return rng.integers(0, 256, (SOURCE_HEIGHT, SOURCE_WIDTH, 3), dtype=np.uint8)

    backend.step(0, image())
    click = Prompt(points=np.array([[320.0, 240.0]], np.float32), point_labels=np.ones(1, np.int8))
    backend.add_prompt(0, 1, click)
    backend.step(1, image())
    frame = _fill_window(backend, 1, 1) - 1
    steps = []
    for _ in range(repeats):
        frame += 1
        steps.append(_timed(dev, lambda f=frame: backend.step(f, image())))  # type: ignore[misc]
    options = EverythingOptions(points_per_side=32, chunk=chunk, coarse_to_fine=coarse_to_fine)
    if not default_thresholds:
        options = replace(options, pred_iou_threshold=0.0, stability_threshold=0.0)
    everything = [
        _timed(dev, lambda: backend.segment_everything(frame, options)) for _ in range(repeats)
    ]
    kept = len(backend.segment_everything(frame, options))
    row: dict[str, Any] = {
        "model": f"{name} (random weights)",
        "input_size": backend.tracker.image_size,
        "device": dev.type,
        "threads": torch.get_num_threads(),
        "grid": "32x32",
        "thresholds": "0.88/0.95" if default_thresholds else "0/0",
        "coarse_to_fine": coarse_to_fine,
        "kept": kept,
        "chunk": chunk,
        "step_ms_1obj": _median_ms(steps),
        "everything_ms": _median_ms(everything),
        "everything_over_step": round(statistics.median(everything) / statistics.median(steps), 2),
        "repeats": repeats,
    }
    backend.close()
    gc.collect()
    return row


def bench_references(
    name: str, input_size: int, device: str, repeats: int, threads: int = 0
) -> dict[str, Any]:
    """`add_reference` and a step of a reference-only object vs a prompted one (see the module
    docstring); `threads` as `bench_model`."""
    import torch

    from seg_ros.engine.backends.sam2 import Sam2Backend, Sam2Options
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.prompts import Prompt
    from seg_ros.engine.sam.loading import resolve_device

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    model = random_model(name, input_size).to(dev)
    backend = Sam2Backend(model, BackendConfig(backend="sam2", device=str(dev)), Sam2Options())
    tracker = backend.tracker
    rng = np.random.default_rng(0)

    def image() -> np.ndarray:
        return rng.integers(0, 256, (SOURCE_HEIGHT, SOURCE_WIDTH, 3), dtype=np.uint8)

    try:
        photo = image()
        box = Prompt(box=np.array([200.0, 150.0, 440.0, 330.0], np.float32))
        backend.add_reference(100, photo, box)  # warm-up
        backend.remove_object(100)
        held = tracker.held_bytes()
        adds = []
        for k in range(repeats):
            adds.append(_timed(dev, lambda o=101 + k: backend.add_reference(o, photo, box)))  # type: ignore[misc]
        reference_bytes = (tracker.held_bytes() - held) / repeats
        for k in range(repeats):
            backend.remove_object(101 + k)
        steps: dict[str, list[float]] = {}
        frame = 0
        for kind in ("reference", "prompted"):
            frame += 1
            backend.step(frame, image())
            if kind == "reference":
                backend.add_reference(1, photo, box)
            else:
                backend.remove_object(1)
                click = Prompt(points=np.array([[320.0, 240.0]], np.float32))
                backend.add_prompt(frame, 1, click)
            frame += 1
            backend.step(frame, image())  # one real tracked frame, then a full window of copies
            frame = _fill_window(backend, 1, frame) - 1
            timings = []
            for _ in range(repeats):
                frame += 1
                timings.append(_timed(dev, lambda f=frame: backend.step(f, image())))  # type: ignore[misc]
            steps[kind] = timings
        return {
            "suite": "sam2 references",
            "model": f"{name} (random weights)",
            "input_size": tracker.image_size,
            "device": dev.type,
            "threads": torch.get_num_threads(),
            "reference_image": f"{SOURCE_WIDTH}x{SOURCE_HEIGHT}",
            "add_reference_ms": _median_ms(adds),
            "reference_kb": round(reference_bytes / 1024, 1),
            "step_ms_reference_obj": _median_ms(steps["reference"]),
            "step_ms_prompted_obj": _median_ms(steps["prompted"]),
            "repeats": repeats,
        }
    finally:
        backend.close()
        gc.collect()
        torch.set_num_threads(before)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _memory_child(
    name: str, frames: int, objects: int, device: str, library: bool, threads: int = 0
) -> dict[str, float]:
    """One memory run in a fresh process: the bounded tracker, or the library's own session.

    Returns RSS growth after a warm-up and the bytes of tensors each keeps (frames, features,
    outputs), which unlike RSS does not depend on what the allocator retains. `threads` > 0
    sets torch's CPU threads (this process only).
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    from seg_ros.engine.sam.adapter import session_class_for
    from seg_ros.engine.sam.loading import resolve_device
    from seg_ros.engine.sam.tracker import StreamingVideoTracker, tensor_bytes

    dev = resolve_device(device)
    model = random_model(name).to(dev)
    size = int(model.config.image_size)
    generator = torch.Generator().manual_seed(0)
    warm = min(100, frames // 4)
    clicks = [(size * (k + 1) / (objects + 1), size / 2) for k in range(objects)]

    def pixels() -> torch.Tensor:
        return torch.randn(1, 3, size, size, generator=generator).to(dev)

    base_rss = base_held = 0.0
    start = time.perf_counter()
    if library:
        # The library's own streaming session, driven as its documentation does.
        session = session_class_for(model)(inference_device=dev, dtype=torch.float32)
        for obj, xy in enumerate(clicks, start=1):
            session.add_point_inputs(
                session.obj_id_to_idx(obj),
                0,
                {
                    "point_coords": torch.tensor([[[xy]]], dtype=torch.float32),
                    "point_labels": torch.tensor([[[1]]], dtype=torch.int32),
                },
            )
        session.obj_with_new_inputs = list(range(1, objects + 1))

        def held() -> float:
            return (
                tensor_bytes(
                    session.processed_frames,
                    session.cache._vision_features,
                    session.output_dict_per_obj,
                )
                / 2**20
            )

        with torch.inference_mode():
            for t in range(frames):
                model(session, frame=pixels()[0], frame_idx=t)
                if t == warm:
                    gc.collect()
                    base_rss, base_held = _rss_mb(), held()
    else:
        tracker = StreamingVideoTracker(model)
        tracker.step(0, pixels())
        for obj, xy in enumerate(clicks, start=1):
            tracker.add_prompt(0, obj, points=[xy], labels=[1])

        def held() -> float:
            return tracker.held_bytes() / 2**20

        for t in range(1, frames):
            tracker.step(t, pixels())
            if t == warm:
                gc.collect()
                base_rss, base_held = _rss_mb(), held()
    gc.collect()
    return {
        "rss_growth_mb": round(_rss_mb() - base_rss, 1),
        "held_mb_at_warmup": round(base_held, 2),
        "held_mb_at_end": round(held(), 2),
        "ms_per_frame": round((time.perf_counter() - start) / frames * 1000.0, 2),
        "warmup_frames": warm,
    }


def bench_memory(name: str, frames: int, objects: int, device: str) -> dict[str, Any]:
    """RSS and held tensors over `frames` frames: bounded tracker vs the library's session.

    Each run gets a fresh process: RSS in a long-lived process mostly shows what the allocator
    kept from earlier work, and hides growth.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results = {}
    for library in (False, True):
        with context.Pool(1) as pool:
            results[library] = pool.apply(_memory_child, (name, frames, objects, device, library))
    bounded, unbounded = results[False], results[True]
    return {
        "model": f"{name} (random weights)",
        "input_size": int(CONFIGS[name]().image_size),
        "objects": objects,
        "rss_frames": frames,
        "rss_growth_mb": bounded["rss_growth_mb"],
        "held_mb": [bounded["held_mb_at_warmup"], bounded["held_mb_at_end"]],
        "bounded_ms_per_frame": bounded["ms_per_frame"],
        "library_rss_growth_mb": unbounded["rss_growth_mb"],
        "library_held_mb": [unbounded["held_mb_at_warmup"], unbounded["held_mb_at_end"]],
        "note": (
            f"growth from frame {bounded['warmup_frames']} to {frames}, each run in a fresh "
            "process; held_mb = tensors kept [at warm-up, at end]; tiny config to fit the CPU "
            "time budget"
        ),
    }


def bench_text(
    detector: str,
    detector_size: str,
    name: str,
    input_size: int,
    device: str,
    repeats: int,
    boxes: int = 4,
    shortest_edge: int = 0,
) -> dict[str, Any]:
    """The text path of the sam2 backend: detector ms per frame and `detect()` in all.

    `shortest_edge` > 0 resizes frames to it for a Grounding DINO detector (the
    `detector_shortest_edge` option; 0 = the checkpoint's 800 px).

    The frame is encoded first (as when something is tracked), so `detect_ms` is the detector
    plus `boxes` decoder calls; random weights give boxes above threshold 0 (capped at `boxes`).
    `detector_size` "real" is the real architecture (Grounding DINO tiny: Swin-T, 900 queries,
    800-pixel shortest edge; OWLv2 base: ViT-B/16 at 960 px) with a small vocabulary (the text
    encoder's cost does not depend on the vocabulary size).
    """
    import tempfile

    import torch

    from seg_ros.engine.backends.sam2 import Sam2Backend, Sam2Options
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.sam.loading import resolve_device
    from seg_ros.engine.sam.open_vocab import OpenVocabDetector
    from seg_ros.testing.tiny_detector import build_detector

    row: dict[str, Any] = {
        "suite": "sam2 text",
        "detector": f"{detector} {detector_size} (random weights)",
        "model": f"{name} (random weights)",
        "device": device,
    }
    if device.startswith("cuda") and not torch.cuda.is_available():
        row["status"] = "not run (no GPU here)"
        return row
    dev = resolve_device(device)
    with tempfile.TemporaryDirectory() as vocab:
        det_model, processor = build_detector(pathlib.Path(vocab), detector, detector_size)
    found = OpenVocabDetector(det_model.to(dev), processor, shortest_edge=shortest_edge)
    model = random_model(name, input_size).to(dev)
    options = Sam2Options(detector_threshold=0.0)
    backend = Sam2Backend(model, BackendConfig(backend="sam2", device=str(dev)), options, found)
    rng = np.random.default_rng(0)
    text = "person. red mug"
    detector_ms, detect_ms, counts = [], [], []
    for frame in range(repeats + 1):
        image = rng.integers(0, 256, (SOURCE_HEIGHT, SOURCE_WIDTH, 3), dtype=np.uint8)
        backend.step(frame, image)
        backend.tracker.frame_features(frame)  # encoded, as while objects are tracked
        only = _timed(dev, lambda im=image: found(im, text, 0.0, boxes))  # type: ignore[misc]
        whole = _timed(dev, lambda f=frame: counts.append(len(backend.detect(f, text, 0.0, boxes))))  # type: ignore[misc]
        if frame:  # the first pass warms the allocator and kernels up
            detector_ms.append(only)
            detect_ms.append(whole)
    row.update(
        {
            "device": dev.type,
            "threads": torch.get_num_threads(),
            "source": f"{SOURCE_WIDTH}x{SOURCE_HEIGHT}",
            "detector_input": "x".join(str(v) for v in _detector_input(found)),
            "input_size": backend.tracker.image_size,
            "detector_params_m": round(sum(p.numel() for p in det_model.parameters()) / 1e6, 1),
            "boxes": int(statistics.median(counts)),
            "detector_ms": _median_ms(detector_ms),
            "detect_ms": _median_ms(detect_ms),
            "encoder_calls_per_frame": backend.tracker.counters["encoder_calls"] / (repeats + 1),
            "repeats": repeats,
        }
    )
    backend.close()
    gc.collect()
    return row


def _detector_input(detector: Any) -> tuple[int, ...]:
    """The detector's input (H, W) for a source frame, from its own image processor."""
    image = np.zeros((SOURCE_HEIGHT, SOURCE_WIDTH, 3), np.uint8)
    pixels = detector.processor.image_processor(
        images=image, return_tensors="pt", **detector._size
    )["pixel_values"]
    return tuple(int(v) for v in pixels.shape[-2:])


def run_text(quick: bool = False, device: str = "auto") -> list[dict[str, Any]]:
    """The text rows: tiny detectors always; the real architectures unless `quick`; GPU rows."""
    rows = [
        bench_text("grounding-dino", "tiny", "tiny-sam2", 128, device, 3 if quick else 5),
        bench_text("owlv2", "tiny", "tiny-edgetam", 128, device, 3 if quick else 5),
    ]
    if quick:
        return rows
    for det in ("grounding-dino", "owlv2"):
        rows.append(bench_text(det, "real", "sam2.1-tiny", 1024, device, 2))
    # The camera frame at its own size (480) instead of upsampled to 800 px.
    rows.append(bench_text("grounding-dino", "real", "sam2.1-tiny", 1024, device, 2, 4, 480))
    from seg_ros.engine.sam.loading import resolve_device

    if resolve_device(device).type != "cuda":  # the rows a GPU machine fills
        for det in ("grounding-dino", "owlv2"):
            rows.append(bench_text(det, "real", "sam2.1-tiny", 1024, "cuda", 5))
    return rows


def run(quick: bool = False, device: str = "auto") -> list[dict[str, Any]]:
    """Every row of this suite. Full: SAM 2.1-tiny and EdgeTAM shapes at 512 and 1024 px."""
    rows: list[dict[str, Any]] = []
    if quick:
        for name in ("tiny-sam2", "tiny-edgetam"):
            for size in (128, 256):
                rows.append(bench_model(name, size, device, repeats=3, threads=1))
        rows.append(bench_model("tiny-sam2", 128, device, repeats=3, batch_objects=True, threads=1))
        rows.append(bench_everything("tiny-sam2", 128, device, repeats=2))
        rows.append(bench_references("tiny-sam2", 128, device, repeats=3, threads=1))
        rows.append(bench_memory("tiny-sam2", frames=300, objects=2, device=device))
        rows.extend(run_text(quick=True, device=device))
        return rows
    for name in ("edgetam", "sam2.1-tiny"):
        for size in (512, 1024):
            rows.append(bench_model(name, size, device, repeats=3 if size == 512 else 2))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
    # Objects batched through one memory-attention + decoder call (the CUDA default) vs one by one.
    rows.append(bench_model("edgetam", 512, device, repeats=3, batch_objects=True))
    rows.append(bench_model("sam2.1-tiny", 512, device, repeats=3, batch_objects=True))
    rows.append(bench_model("tiny-sam2", 128, device, repeats=5, threads=1))
    # Segment everything: 32x32 grid on cached features vs one tracking step.
    for defaults in (False, True):
        rows.append(bench_everything("tiny-sam2", 128, device, 3, default_thresholds=defaults))
        rows.append(bench_everything("sam2.1-tiny", 512, device, 2, default_thresholds=defaults))
    # The coarse-to-fine option at thresholds 0 (random weights keep nothing at SAM's).
    rows.append(bench_everything("tiny-sam2", 128, device, 3, coarse_to_fine=True))
    rows.append(bench_everything("sam2.1-tiny", 512, device, 2, coarse_to_fine=True))
    # References: add_reference, and a reference-only object's step vs a prompted one's.
    rows.append(bench_references("tiny-sam2", 128, device, repeats=5, threads=1))
    rows.append(bench_references("sam2.1-tiny", 1024, device, repeats=2))
    rows.append(bench_memory("tiny-sam2", frames=1000, objects=2, device=device))
    rows.append(bench_memory("tiny-edgetam", frames=1000, objects=2, device=device))
    rows.extend(run_text(device=device))
    return rows
