"""Random-weight SAM 3 checkpoints for the tests and the benchmarks (nothing downloaded).

`write_random_checkpoint` builds a `Sam3VideoModel` from a size preset with random weights and
writes a folder with the layout of facebook/sam3: config.json (model_type "sam3_video",
detector_config + tracker_config), model.safetensors, and a tiny CLIP BPE tokenizer (vocab.json +
merges.txt), so it loads through the backend's real loading code. `TINY` (the tests' preset) is a
112-pixel input, an 8 x 8 patch grid, a 32-wide ViT and text encoder, 8 detector queries, a
3-slot memory.

Random weights are biased so that tests mean something: the presence head says "present", the
scoring head's projections are scaled so query scores spread over (0, 1) and depend on the text,
and the tracker's object-score head says "visible". `tiny_sam3(absent=True)` flips the presence
head: no text ever matches.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass
from typing import Any

#: Source frames in the tests are this size (not square, not the model's: resizing is exercised).
HEIGHT, WIDTH = 60, 80


def moving_square(n: int, seed: int = 0) -> list[Any]:
    """`n` RGB uint8 (HEIGHT, WIDTH, 3) frames: a red square moving 3 px a frame to the right on a
    noisy gradient (the tests' smooth scene)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    base = np.stack([xx * 3, yy * 4, (xx + yy) * 2], axis=-1).astype(np.float64)
    frames = []
    for t in range(n):
        img = base + rng.normal(0, 4, base.shape)
        img[20:40, 10 + 3 * t : 30 + 3 * t] = (230, 40, 40)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


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


def tiny_sam3(folder: pathlib.Path, *, absent: bool = False, seed: int = 0) -> pathlib.Path:
    """Write a tiny SAM 3 checkpoint into `folder` and return it."""
    return write_random_checkpoint(folder, TINY, seed=seed, presence_bias=-12.0 if absent else 4.0)


def without_tokenizer(source: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    """A copy of `source` without its tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


def with_model_type(source: pathlib.Path, folder: pathlib.Path, model_type: str) -> pathlib.Path:
    """A copy of `source` whose config.json claims another architecture."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    return folder
