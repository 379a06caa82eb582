"""Tiny random-weight SAM 2.1 / EdgeTAM video models for tests (configs in seg_ros.bench).

The configs (`seg_ros.bench.sam2_bench.tiny_sam2_config` / `tiny_edgetam_config`) keep the real
architectures (Hiera or RepViT backbone, FPN, memory attention with RoPE, memory encoder,
EdgeTAM's perceiver resampler) with small widths and few layers, so a frame takes milliseconds on
a CPU. Nothing is downloaded: timm builds `repvit_m1` from code with `pretrained=False`.

Random weights usually make the object-score head say "no object", which fills every mask with
-1024 and makes comparisons vacuous; `bias_object_scores` shifts that head so objects are present.
"""

from __future__ import annotations

import pathlib
from typing import Any

from seg_ros.bench.sam2_bench import (
    TINY_IMAGE_SIZE,
    bias_object_scores,
    random_model,
    tiny_edgetam_config,
    tiny_sam2_config,
)

__all__ = [
    "TINY_IMAGE_SIZE",
    "bias_object_scores",
    "build_model",
    "save_model",
    "save_tiny",
    "tiny_edgetam_config",
    "tiny_sam2_config",
]


def build_model(kind: str, seed: int = 0, object_bias: float = 2.0, init_range: float = 0.1) -> Any:
    """A tiny random-weight video model ("sam2" or "edgetam") in eval mode.

    `init_range` is the weights' std: the library's 0.02 gives logits ~1e-3 (comparisons at
    atol 1e-5 would mean little); 0.1 gives O(1) logits, 0.2 O(10) and objects that come and go.
    `object_bias` is added to the object-score logit (see `bias_object_scores`).
    """
    if kind not in ("sam2", "edgetam"):
        raise ValueError(f"unknown tiny model kind '{kind}'")
    return random_model(f"tiny-{kind}", seed=seed, init_range=init_range, object_bias=object_bias)


def save_model(model: Any, folder: pathlib.Path) -> pathlib.Path:
    """save_pretrained with safetensors; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_tiny(kind: str, folder: pathlib.Path, seed: int = 0, **kwargs: Any) -> pathlib.Path:
    """Build (`build_model` kwargs) and save a tiny model into `folder` (config + safetensors)."""
    return save_model(build_model(kind, seed, **kwargs), folder)
