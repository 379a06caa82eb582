"""SAM 3 backend timings, and the random-weight checkpoints they (and the tests) use.

No weights can be downloaded here, so `write_random_checkpoint` builds a `Sam3VideoModel` from a
config preset with random weights, biased so that detections and tracked objects actually pass
thresholds, and writes it as a real checkpoint folder (config.json + model.safetensors + a tiny
CLIP BPE tokenizer vocab.json / merges.txt) that loads through the backend's normal code path.

    python -m seg_ros.bench --only sam3 [--quick]
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Sam3Preset:
    """Sizes of a random SAM 3 (detector + tracker). `image_size` must be a multiple of 14 (the
    patch) whose patch grid is a multiple of `window`."""

    name: str
    image_size: int
    vit_hidden: int
    vit_layers: int
    vit_heads: int
    window: int
    hidden: int  # FPN, DETR, geometry, mask decoder, tracker width
    heads: int
    text_hidden: int
    text_layers: int
    queries: int
    num_maskmem: int = 3


#: Tests: a 32-wide ViT and text encoder on a 112-pixel input (an 8 x 8 patch grid). The FPN /
#: decoders / tracker are 128 wide, as SAM 3's own are wider than its 64-channel memories: the
#: library's memory attention takes 64-channel memories whatever the config, and object pointers
#: are split into 64-channel tokens (a 64-wide tracker keeps them whole, a shape the bounded
#: tracker does not expect).
TINY = Sam3Preset("tiny", 112, 32, 2, 2, 4, 128, 2, 32, 1, 8)
#: A larger stand-in for CPU timings: 448-pixel input (32 x 32 grid), 256-wide decoders.
SMALL = Sam3Preset("small", 448, 256, 4, 4, 8, 128, 4, 128, 2, 50, num_maskmem=7)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte-level BPE alphabet: each byte -> one printable unicode character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


#: Words the tiny tokenizer knows whole (a merge chain each); anything else splits to bytes.
TOKENIZER_WORDS = ("red", "mug", "cup", "person", "box", "cat")


def write_tokenizer(folder: pathlib.Path, words: tuple[str, ...] = TOKENIZER_WORDS) -> int:
    """Write a tiny CLIP BPE tokenizer (vocab.json + merges.txt); return its vocabulary size.

    The vocabulary is the 256 byte symbols, their end-of-word forms, one merge chain per word of
    `words`, and CLIP's <|startoftext|> / <|endoftext|>.
    """
    alphabet = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in alphabet + [s + "</w>" for s in alphabet]:
        vocab[symbol] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in words:
        left = word[0]
        for i, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if i == len(word) - 1 else "")
            merges.append((left, right))
            left = left + right
            vocab.setdefault(left, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in dict.fromkeys(merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    return len(vocab)


def preset_config(preset: Sam3Preset, vocab_size: int) -> dict[str, Any]:
    """A `Sam3VideoConfig` as a dict (what config.json holds) for `preset`."""
    size, h = preset.image_size, preset.hidden
    grid = size // 14
    backbone = {
        "model_type": "sam3_vit_model",
        "hidden_size": preset.vit_hidden,
        "intermediate_size": 2 * preset.vit_hidden,
        "num_hidden_layers": preset.vit_layers,
        "num_attention_heads": preset.vit_heads,
        "image_size": size,
        "patch_size": 14,
        "window_size": preset.window,
        "global_attn_indexes": [preset.vit_layers - 1],
        "pretrain_image_size": size,
    }
    vision = {
        "model_type": "sam3_vision_model",
        "backbone_config": backbone,
        "fpn_hidden_size": h,
        "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
    }
    detector = {
        "model_type": "sam3",
        "vision_config": vision,
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": vocab_size,
            "hidden_size": preset.text_hidden,
            "intermediate_size": 2 * preset.text_hidden,
            "projection_dim": preset.text_hidden,
            "num_hidden_layers": preset.text_layers,
            "num_attention_heads": preset.heads,
            "max_position_embeddings": 32,
            "bos_token_id": vocab_size - 2,
            "eos_token_id": vocab_size - 1,
            "pad_token_id": vocab_size - 1,
        },
        "geometry_encoder_config": {
            "hidden_size": h,
            "num_layers": 1,
            "num_attention_heads": preset.heads,
            "intermediate_size": 2 * h,
        },
        "detr_encoder_config": {
            "hidden_size": h,
            "num_layers": 1,
            "num_attention_heads": preset.heads,
            "intermediate_size": 2 * h,
        },
        "detr_decoder_config": {
            "hidden_size": h,
            "num_layers": 2,
            "num_queries": preset.queries,
            "num_attention_heads": preset.heads,
            "intermediate_size": 2 * h,
        },
        "mask_decoder_config": {
            "hidden_size": h,
            "num_upsampling_stages": 3,
            "num_attention_heads": preset.heads,
        },
    }
    tracker = {
        "model_type": "sam3_tracker_video",
        "vision_config": vision,
        "prompt_encoder_config": {
            "hidden_size": h,
            "image_size": size,
            "patch_size": 14,
            "mask_input_channels": 8,
        },
        "mask_decoder_config": {
            "hidden_size": h,
            "mlp_dim": 2 * h,
            "num_attention_heads": preset.heads,
            "iou_head_hidden_dim": h,
        },
        "image_size": size,
        "num_maskmem": preset.num_maskmem,
        "memory_attention_hidden_size": h,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 2 * h,
        "memory_attention_rope_feat_sizes": [grid, grid],
        "memory_encoder_hidden_size": h,
        # The library wires the memory attention for 64-channel memories whatever the config.
        "memory_encoder_output_channels": 64,
        "mask_downsampler_embed_dim": h,
        "memory_fuser_embed_dim": h,
        "memory_fuser_intermediate_dim": 2 * h,
        "memory_fuser_num_layers": 1,
    }
    return {
        "model_type": "sam3_video",
        "detector_config": detector,
        "tracker_config": tracker,
        "low_res_mask_size": 4 * grid,
    }


def write_random_checkpoint(
    folder: str | pathlib.Path,
    preset: Sam3Preset = TINY,
    *,
    seed: int = 0,
    presence_bias: float = 4.0,
    score_gain: float = 8.0,
    object_score_bias: float = 4.0,
    tokenizer: bool = True,
) -> pathlib.Path:
    """Build a random `Sam3VideoModel` for `preset` and save it as a checkpoint folder.

    Random weights say "nothing here" (presence and object scores near 0.5, logits near 0), so:
    `presence_bias` is added to the presence head's output bias (sigmoid(4) = 0.98), the query and
    text projections of the scoring head are scaled by `score_gain` so that query scores spread
    over (0, 1) and depend on the text, and `object_score_bias` makes the tracker see its objects.
    """
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(folder) if tokenizer else 600
    torch.manual_seed(seed)
    config = Sam3VideoConfig(**preset_config(preset, vocab_size))
    model = Sam3VideoModel(config).eval()
    with torch.no_grad():
        detr = model.detector_model.detr_decoder
        last = detr.presence_head.layer3 or detr.presence_head.layer2
        last.bias.add_(presence_bias)
        scoring = model.detector_model.dot_product_scoring
        scoring.query_proj.weight.mul_(score_gain)
        scoring.text_proj.weight.mul_(score_gain)
        head = model.tracker_model.mask_decoder.pred_obj_score_head.proj_out
        head.bias.add_(object_score_bias)
    model.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------- benchmark
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

    from seg_ros.engine.backends.sam3 import Sam3Backend
    from seg_ros.engine.sam.detector import load_tokenizer

    write_tokenizer(folder)  # token ids of the tiny vocabulary are valid ids of the real one
    torch.manual_seed(0)
    model = Sam3VideoModel(Sam3VideoConfig()).eval()
    return Sam3Backend(model, load_tokenizer(str(folder)))


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
    row("segment_point", _timed(lambda: session.segment(Prompt(points=centre)), repeats))

    def prompt() -> None:
        result = session.add_prompt(Prompt(points=centre))
        session.remove_object(result.object_id)

    row("prompt_point", _timed(prompt, repeats))
    for n, count in enumerate(counts):
        if n:  # the first sweep starts on the frame already encoded
            session.reset()
            session.step(frames[0])
        for k in range(count):
            x = FRAME_WIDTH * (k + 1) / (count + 1)
            session.add_prompt(Prompt(points=[[x, FRAME_HEIGHT / 2]]))
        session.step(frames[1])  # the first tracked frame differs (no tracked memory yet)
        cursor = iter(frames[2:])
        runs, steps = backend.stats()["backbone_runs"], len(frames) - 2
        timing = _timed(lambda it=cursor: session.step(next(it)), repeats)
        steps -= len(list(cursor))
        per_frame = (backend.stats()["backbone_runs"] - runs) / steps
        row("track_step", timing, objects=count, backbone_runs_per_frame=per_frame)
    backend.close()
    return rows


__all__ = [
    "SMALL",
    "TINY",
    "Sam3Preset",
    "preset_config",
    "run",
    "write_random_checkpoint",
    "write_tokenizer",
]
