"""SAM 3 backend timings on random-weight checkpoints (seg_ros.testing.tiny_sam3).

No weights can be downloaded here, so the checkpoints are built from size presets with random
weights, biased so that detections and tracked objects actually pass thresholds, and written as
real checkpoint folders that load through the backend's normal code path.

    python -m seg_ros.bench --only sam3 [--quick]
"""

from __future__ import annotations

import os
import pathlib
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from seg_ros.testing.tiny_sam3 import SMALL, TINY, write_random_checkpoint, write_tokenizer

#: Source frames of the benchmark (a VGA camera).
FRAME_HEIGHT, FRAME_WIDTH = 480, 640
#: Object counts the tracking step is timed with.
OBJECT_COUNTS = (1, 2, 4)


def run(quick: bool) -> list[dict[str, Any]]:
    """SAM 3 backend timings on this machine, random weights, median milliseconds.

    --quick: the tiny test model. Full run: also SMALL (448 px) and the real SAM 3 architecture
    (Sam3VideoConfig() = facebook/sam3's, 840M-parameter ViT at 1008 px) built with random
    weights in memory: on this 2-core CPU one backbone pass takes 35-70 s, so that model gets
    one sample of each timing, one object, and three backbone passes in all (~4 minutes).
    """
    rows: list[dict[str, Any]] = []
    rows.extend(_bench(TINY.name, repeats=3 if quick else 7, counts=OBJECT_COUNTS))
    rows.extend(control_rows(frames=20 if quick else 60))
    if not quick:
        rows.extend(_bench(SMALL.name, repeats=3, counts=OBJECT_COUNTS))
        rows.extend(_bench("full", repeats=1, counts=(1,)))
    return rows


def _median_ms(samples: list[float]) -> float:
    return round(1000.0 * statistics.median(samples), 2)


def _timed(fn: Any, repeats: int) -> dict[str, float]:
    """Median wall-clock and CPU (this process, all threads) milliseconds of `fn`.

    CPU time is what the work costs whatever else runs on the machine; wall time is what a
    caller waits (on a shared machine it includes waiting for a core).
    """
    if repeats > 1:
        fn()  # warm-up: first calls allocate and pick kernels (not for the slow full model)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"ms": _median_ms(wall), "cpu_ms": _median_ms(cpu)}


def _backend(name: str, folder: pathlib.Path) -> Any:
    """The backend for a preset: through the real loading code, or (full size) built in memory."""
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.registry import build_backend

    if name != "full":
        preset = TINY if name == TINY.name else SMALL
        write_random_checkpoint(folder, preset)
        config = BackendConfig(backend="sam3", model=str(folder), device="cpu")
        return build_backend(config)
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    from seg_ros.engine.backends.sam3 import Sam3Model
    from seg_ros.engine.sam.detector import load_tokenizer

    write_tokenizer(folder)  # token ids of the tiny vocabulary are valid ids of the real one
    torch.manual_seed(0)
    model = Sam3VideoModel(Sam3VideoConfig()).eval()
    stream = Sam3Model(model, load_tokenizer(str(folder))).open_stream()
    stream.owns_model = True  # one stream, one model: closing it frees the weights
    return stream


def _bench(name: str, repeats: int, counts: tuple[int, ...]) -> list[dict[str, Any]]:
    import torch

    from seg_ros.engine.prompts import Prompt
    from seg_ros.engine.session import SegmentationSession

    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8)
        for _ in range(repeats + 3)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        backend = _backend(name, pathlib.Path(tmp))
        load_s = time.perf_counter() - start
    base = {
        "model": name,
        "input_size": backend.image_size,
        "frame": f"{FRAME_WIDTH}x{FRAME_HEIGHT}",
        "threads": torch.get_num_threads(),
        "device": str(backend.device),
        # Other work on the machine slows every number down: the 1-minute load at the start.
        "load_avg": round(os.getloadavg()[0], 2),
    }
    rows: list[dict[str, Any]] = [{**base, "metric": "load_s", "value": round(load_s, 2)}]

    def row(metric: str, timing: dict[str, float], **extra: Any) -> None:
        rows.append({**base, "metric": metric, **timing, "repeats": repeats, **extra})

    session = SegmentationSession(backend, max_objects=max(counts) + 1, score_threshold=0.0)
    # Idle frames: preprocessing only (lazy encoding), no backbone pass.
    row("idle_step", _timed(lambda: session.step(frames[0]), repeats))
    index = session.frame_index
    pixels = backend.backbones.frames[index].pixels
    # The frame's first backbone pass (memoised: everything below on this frame reuses it).
    start, start_cpu = time.perf_counter(), time.process_time()
    backend.backbones.hidden(index)
    first = {
        "ms": _median_ms([time.perf_counter() - start]),
        "cpu_ms": _median_ms([time.process_time() - start_cpu]),
    }
    encoder = _timed(lambda: backend.backbones.run(pixels), repeats) if repeats > 1 else first
    row("encoder", encoder)
    backend.detect(index, "red mug", 0.5, 0)  # text encoded and cached
    row("detect_text", _timed(lambda: backend.detect(index, "red mug", 0.5, 0), repeats))
    row("text_encode", _timed(lambda: (backend.text.clear(), backend.text("red mug")), repeats))
    centre = [[FRAME_WIDTH / 2, FRAME_HEIGHT / 2]]
    row(
        "segment_point",
        _timed(lambda: session.segment(Prompt(points=np.asarray(centre, np.float32))), repeats),
    )

    def prompt() -> None:
        result = session.add_prompt(Prompt(points=np.asarray(centre, np.float32)))
        session.remove_object(result.object_id)

    row("prompt_point", _timed(prompt, repeats))
    for n, count in enumerate(counts):
        if n:  # the first sweep starts on the frame already encoded
            session.reset()
            session.step(frames[0])
        for k in range(count):
            x = FRAME_WIDTH * (k + 1) / (count + 1)
            session.add_prompt(Prompt(points=np.array([[x, FRAME_HEIGHT / 2]], np.float32)))
        session.step(frames[1])  # the first tracked frame differs (no tracked memory yet)
        cursor = iter(frames[2:])
        runs, steps = backend.stats()["backbone_runs"], len(frames) - 2
        timing = _timed(lambda it=cursor: session.step(next(it)), repeats)
        steps -= len(list(cursor))
        per_frame = (backend.stats()["backbone_runs"] - runs) / steps
        row("track_step", timing, objects=count, backbone_runs_per_frame=per_frame)
    if name != "full":  # a minute a frame there: the rows above give its cost (README)
        rows.extend(_concept_rows(session, frames, base, max(counts)))
    backend.close()
    return rows


#: Standing-query rows: detection every n-th frame; 0 = the baseline, the same objects tracked
#: with the query removed (tracking only), over the same frames.
CONCEPT_EVERY_N = (0, 1, 5)
#: Frames timed per row (a multiple of every n: the mean is the amortised cost).
CONCEPT_FRAMES = 10


def _concept_rows(
    session: Any, frames: list[np.ndarray], base: dict[str, Any], max_new: int
) -> list[dict[str, Any]]:
    """Cost per frame with a standing query ("red mug"): the tracker's step with the K objects
    the query tracks, plus the detector (on the frame's cached backbone output) every n-th frame.

    Mean, not median, over CONCEPT_FRAMES consecutive frames: with n > 1 most frames run no
    detector, and the mean is the cost amortised over n.
    """
    from seg_ros.engine.concepts import QueryOptions

    backend = session.backend
    rows = []
    for every_n in CONCEPT_EVERY_N:
        session.reset()
        for query in session.queries:
            session.remove_query(query.query_id, keep_objects=False)
        session.step(frames[0])
        options = QueryOptions(every_n=max(1, every_n), max_new_per_frame=max_new)
        query = session.add_query("red mug", options)
        session.step(frames[1])  # the first tracked frame differs (no tracked memory yet)
        if every_n == 0:
            session.remove_query(query.query_id, keep_objects=True)
        before = backend.stats()
        detects = sum(q.stats.detections_run for q in session.queries)
        wall, cpu, objects = 0.0, 0.0, 0
        for k in range(CONCEPT_FRAMES):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = session.step(frames[2 + k % (len(frames) - 2)])
            wall += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            objects += len(result.objects)
        after = backend.stats()
        rows.append(
            {
                **base,
                "metric": "concept_step",
                "every_n": every_n,
                "ms": round(1000.0 * wall / CONCEPT_FRAMES, 2),
                "cpu_ms": round(1000.0 * cpu / CONCEPT_FRAMES, 2),
                "objects_mean": round(objects / CONCEPT_FRAMES, 2),
                "detect_runs_per_frame": (
                    sum(q.stats.detections_run for q in session.queries) - detects
                )
                / CONCEPT_FRAMES,
                "backbone_runs_per_frame": (after["backbone_runs"] - before["backbone_runs"])
                / CONCEPT_FRAMES,
                "frames": CONCEPT_FRAMES,
            }
        )
    return rows


def _rss_mb() -> float:
    """Resident memory now (MB; /proc: ru_maxrss would only give the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def control_rows(frames: int) -> list[dict[str, Any]]:
    """A standing query next to transformers' own `Sam3VideoModel` streaming session (the
    control), on the tiny random-weight model, the same `frames` 60 x 80 frames, text "red mug":
    ms per frame, RSS growth per frame after a 5-frame warm-up, frames each one still holds.

    The library's session keeps every processed frame and every object's outputs (sam3 #169:
    ~10 MB a frame at 1008 px); the session here keeps `memory_frames`. Sam3Video's own outputs
    here are random-weight detections too: its object count is reported, not compared.
    """
    import torch
    from transformers import Sam3VideoModel
    from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

    from seg_ros.engine.concepts import QueryOptions
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.registry import build_backend
    from seg_ros.engine.sam.detector import load_tokenizer, preprocess
    from seg_ros.engine.session import SegmentationSession
    from seg_ros.testing.tiny_sam3 import HEIGHT, WIDTH

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(frames)]
    warm = min(5, frames // 2)
    rows: list[dict[str, Any]] = []
    base = {"model": TINY.name, "frames": frames, "frame": f"{WIDTH}x{HEIGHT}"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        write_random_checkpoint(folder, TINY)
        # Ours: a standing query, detection every frame (as Sam3Video detects every frame).
        backend = build_backend(BackendConfig(backend="sam3", model=str(folder), device="cpu"))
        session = SegmentationSession(backend, max_objects=16, score_threshold=0.5)
        session.add_query("red mug", QueryOptions(every_n=1))

        def ours(image: np.ndarray) -> int:
            return len(session.step(image).objects)

        rows.append({**base, **_stream(ours, images, warm), "metric": "concept_stream"})
        rows[-1]["frames_held"] = backend.stats()["frames_in_memory"]
        backend.close()
        # The control: the library's streaming session with the same text.
        model = Sam3VideoModel.from_pretrained(str(folder), use_safetensors=True).eval()
        tokenizer = load_tokenizer(str(folder))
        library = Sam3VideoInferenceSession(
            inference_device="cpu",
            video_storage_device="cpu",
            inference_state_device="cpu",
            dtype=torch.float32,
        )
        prompt_id = library.add_prompt("red mug")
        encoded = tokenizer("red mug", return_tensors="pt", padding="max_length", max_length=32)
        library.prompt_input_ids[prompt_id] = encoded.input_ids
        library.prompt_attention_masks[prompt_id] = encoded.attention_mask
        size = int(model.config.detector_config.vision_config.backbone_config.image_size)

        def theirs(image: np.ndarray) -> int:
            pixels = preprocess(image, size, torch.device("cpu"), torch.float32)
            with torch.inference_mode():
                out = model(inference_session=library, frame=pixels[0])
            return len(out.object_ids)

        rows.append({**base, **_stream(theirs, images, warm), "metric": "sam3video_stream_control"})
        rows[-1]["frames_held"] = float(len(library.processed_frames or {}))
    return rows


def _stream(step: Any, images: list[np.ndarray], warm: int) -> dict[str, Any]:
    for image in images[:warm]:
        step(image)
    rss0, start = _rss_mb(), time.perf_counter()
    objects = [step(image) for image in images[warm:]]
    timed = len(images) - warm
    return {
        "ms": round(1000.0 * (time.perf_counter() - start) / timed, 2),
        "rss_mb_per_frame": round((_rss_mb() - rss0) / timed, 3),
        "objects_last": objects[-1],
        "objects_max": max(objects),
    }
