"""Random-weight SAM 2.1 / EdgeTAM video models for the tests and the benchmarks.

The tiny configs (`tiny_sam2_config` / `tiny_edgetam_config`) keep the real architectures (Hiera
or RepViT backbone, FPN, memory attention with RoPE, memory encoder, EdgeTAM's perceiver
resampler) with small widths and few layers, so a frame takes milliseconds on a CPU; `CONFIGS`
also names the real architectures (random weights, for timings). Nothing is downloaded: timm
builds `repvit_m1` from code with `pretrained=False`.

Random weights usually make the object-score head say "no object", which fills every mask with
-1024 and makes comparisons vacuous; `bias_object_scores` shifts that head so objects are present.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

#: Side of the tiny models' square input (pixels). Features: 32, 16 and 8 cells a side.
TINY_IMAGE_SIZE = 128


def _memory_kwargs(image_size: int, hidden: int) -> dict[str, Any]:
    """Memory attention / encoder sizes shared by the two tiny configs."""
    return {
        "image_size": image_size,
        "memory_attention_hidden_size": hidden,
        "memory_attention_num_layers": 2,
        "memory_attention_rope_feat_sizes": [image_size // 16, image_size // 16],
        "memory_encoder_hidden_size": hidden,
        "mask_downsampler_embed_dim": hidden,
        "memory_fuser_embed_dim": hidden,
        "memory_fuser_intermediate_dim": 2 * hidden,
        # Dropout would make two runs differ if a test forgot eval(); keep it off anyway.
        "memory_attention_dropout": 0.0,
        "memory_attention_rope_dropout": 0.0,
    }


def tiny_sam2_config(image_size: int = TINY_IMAGE_SIZE, hidden: int = 128) -> Any:
    """A `Sam2VideoConfig`: 4-stage Hiera of widths 16..128, 128-wide heads.

    The heads must be wider than the library's fixed 64-wide memory (it splits object pointers
    into 64-wide tokens; equal widths crash in transformers 5.23).
    """
    from transformers import Sam2VideoConfig
    from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig, Sam2VisionConfig
    from transformers.models.sam2_video.configuration_sam2_video import (
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
    )

    widths = [16, 32, 64, 128]
    backbone = Sam2HieraDetConfig(
        hidden_size=widths[0],
        embed_dim_per_stage=widths,
        blocks_per_stage=[1, 1, 2, 1],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[4, 4],
        image_size=[image_size, image_size],
    )
    s = image_size
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=widths[::-1],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=hidden,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(
            hidden_size=hidden, image_size=image_size, patch_size=16
        ),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=hidden
        ),
        memory_attention_feed_forward_hidden_size=64,
        **_memory_kwargs(image_size, hidden),
    )


def tiny_edgetam_config(image_size: int = TINY_IMAGE_SIZE, hidden: int = 128) -> Any:
    """An `EdgeTamVideoConfig` with a 4-stage RepViT (timm `repvit_m1`, widths 8..64, depth 1)."""
    from transformers import EdgeTamVideoConfig, TimmWrapperConfig
    from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig
    from transformers.models.edgetam_video.configuration_edgetam_video import (
        EdgeTamVideoMaskDecoderConfig,
        EdgeTamVideoPromptEncoderConfig,
    )

    widths = [8, 16, 32, 64]
    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        model_args={
            "in_chans": 3,
            "features_only": True,
            "out_indices": [0, 1, 2, 3],
            "embed_dim": tuple(widths),
            "depth": (1, 1, 1, 1),
        },
    )
    s = image_size
    vision = EdgeTamVisionConfig(
        backbone_config=backbone,
        backbone_channel_list=widths[::-1],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=hidden,
    )
    return EdgeTamVideoConfig(
        vision_config=vision,
        prompt_encoder_config=EdgeTamVideoPromptEncoderConfig(
            hidden_size=hidden, image_size=image_size, patch_size=16
        ),
        mask_decoder_config=EdgeTamVideoMaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=hidden
        ),
        memory_attention_mlp_hidden_size=64,
        # 16 1-D latents + a 4x4 grid of 2-D latents per memory frame.
        perceiver_resampler_num_latents=16,
        perceiver_resampler_num_latents_2d=16,
        perceiver_resampler_hidden_size=64,
        perceiver_resampler_mlp_intermediate_size=64,
        perceiver_resampler_num_layers=1,
        memory_attention_rope_k_sizes=[4, 4],
        **_memory_kwargs(image_size, hidden),
    )


def sam21_tiny_config() -> Any:
    """SAM 2.1 hiera-tiny's architecture (transformers' Sam2VideoConfig defaults), 1024 px."""
    from transformers import Sam2VideoConfig

    return Sam2VideoConfig()


def edgetam_config() -> Any:
    """EdgeTAM's architecture (RepViT-M1 backbone through timm), 1024 px.

    `EdgeTamVideoConfig()` alone builds a ResNet-50 backbone (a typo in its default timm
    arguments), so the RepViT-M1 backbone is named explicitly.
    """
    from transformers import EdgeTamVideoConfig, TimmWrapperConfig
    from transformers.models.edgetam.configuration_edgetam import EdgeTamVisionConfig

    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
    )
    return EdgeTamVideoConfig(vision_config=EdgeTamVisionConfig(backbone_config=backbone))


#: model name -> config builder (its own input size).
CONFIGS: dict[str, Callable[[], Any]] = {
    "tiny-sam2": tiny_sam2_config,
    "tiny-edgetam": tiny_edgetam_config,
    "sam2.1-tiny": sam21_tiny_config,
    "edgetam": edgetam_config,
}


def bias_object_scores(model: Any, bias: float) -> None:
    """Shift the object-score head so random weights report objects present (logit ~ +bias).

    The head's last layer bias feeds the object score logit directly; without this, random
    weights give logits around 0 and masks often filled with the -1024 "no object" value.
    """
    import torch

    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(bias)


def random_model(
    name: str,
    input_size: int = 0,
    *,
    seed: int = 0,
    init_range: float | None = None,
    object_bias: float = 2.0,
) -> Any:
    """A random-weight video model from `CONFIGS`, resized to `input_size` (0 = its own), eval.

    `init_range` overrides the weights' std (the library's 0.02 gives logits ~1e-3).
    """
    import torch
    from transformers import EdgeTamVideoModel, Sam2VideoModel

    from seg_ros.engine.sam.loading import resized_config

    config = CONFIGS[name]()
    if input_size and input_size != int(config.image_size):
        config = resized_config(config, input_size)
    if init_range is not None:
        config.initializer_range = init_range
    torch.manual_seed(seed)
    model_cls = EdgeTamVideoModel if config.model_type == "edgetam_video" else Sam2VideoModel
    model = model_cls(config)
    bias_object_scores(model, object_bias)
    return model.eval()


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
