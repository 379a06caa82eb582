"""Loading for the transformers backends: device / dtype choice, safe weight loading, configs.

The pure tensor / array transforms (preprocessing, coordinates, masks) are in transforms.py, as
segment-anything keeps `utils/transforms.py` apart from `build_sam.py`. Nothing here runs at
import time: torch is imported by the functions that need it, so the engine (and the classic
backend) import without torch installed.
"""

from __future__ import annotations

import gc
import json
import math
import pathlib
from typing import TYPE_CHECKING, Any

from seg_ros.engine.errors import ModelLoadError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu. Asking for cuda without one is an error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device '{device}' was asked for but no CUDA device is available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Compute dtype. Half precision on the CPU is slow and poorly supported: refuse it."""
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise ModelLoadError(f"dtype must be one of {sorted(table)}; got '{dtype}'")
    if device.type == "cpu" and dtype != "float32":
        raise ModelLoadError(f"dtype {dtype} needs a GPU; use float32 on the CPU")
    return table[dtype]


def read_model_type(source: str) -> str | None:
    """model_type from a local folder's config.json; None for a hub id (checked after loading)."""
    path = pathlib.Path(source).expanduser()
    if not path.exists():
        return None
    if not path.is_dir():
        raise ModelLoadError(
            f"model '{path}' is a file; give the folder that holds config.json and *.safetensors"
        )
    config = path / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"model folder '{path}' has no config.json")
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"'{config}' is not valid JSON: {exc}") from exc
    model_type = data.get("model_type") if isinstance(data, dict) else None
    return str(model_type) if model_type else None


def looks_like_local_path(source: str) -> bool:
    """A path (absolute, relative or ~) rather than a hub id 'org/name'."""
    return source.startswith(("/", "./", "../", "~")) or pathlib.Path(source).expanduser().exists()


def load_pretrained(
    model_cls: Any,
    source: str,
    *,
    model_types: tuple[str, ...],
    device: torch.device,
    dtype: torch.dtype,
    offline: bool = True,
    config: Any = None,
) -> Any:
    """Load `model_cls` from a local folder or a hub id, refusing anything unsafe or wrong.

    Only safetensors weights are accepted (`use_safetensors=True`): a pickle is never unpickled.
    By default nothing is downloaded (`offline`): fetch checkpoints with `seg-ros-download`.
    `config` (optional) replaces the checkpoint's config, e.g. one resized to another input size.
    Raises ModelLoadError with the reason for a missing folder, a missing / truncated / corrupt
    weight file, or a checkpoint of another architecture than `model_types`.
    """
    if not source:
        raise ModelLoadError("no model given: set the 'model' parameter to a folder or hub id")
    path = pathlib.Path(source).expanduser()
    if looks_like_local_path(source):
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise ModelLoadError(f"model folder '{path}' {what}")
        if not any(path.glob("*.safetensors")):
            raise ModelLoadError(
                f"model folder '{path}' has no *.safetensors weights (pickled weights are refused)"
            )
    model_type = read_model_type(source)
    if model_type is not None and model_type not in model_types:
        raise ModelLoadError(
            f"'{source}' holds a '{model_type}' model; this backend loads {', '.join(model_types)}"
        )
    extra: dict[str, Any] = {} if config is None else {"config": config}
    try:
        model, info = model_cls.from_pretrained(
            str(path) if path.exists() else source,
            dtype=dtype,
            use_safetensors=True,
            local_files_only=offline,
            output_loading_info=True,
            **extra,
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many types for bad checkpoints
        reason = f"{type(exc).__name__}: {exc}"
        if "ignore_mismatched_sizes" in reason:  # its text points at a report in the log only
            reason = (
                "the weights' tensor shapes do not fit config.json (weights of another "
                "architecture or size)"
            )
        raise ModelLoadError(f"could not load '{source}': {reason}") from exc
    loaded_type = getattr(getattr(model, "config", None), "model_type", None)
    if loaded_type not in model_types:
        raise ModelLoadError(
            f"'{source}' loaded as '{loaded_type}'; this backend needs {', '.join(model_types)}"
        )
    # transformers fills tensors a checkpoint lacks with random values and only logs it: a
    # partial or mismatched checkpoint would then "work" and segment garbage. Refuse it.
    missing = sorted((info or {}).get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:5]) + (
            f", ... ({len(missing)} in all)" if len(missing) > 5 else ""
        )
        raise ModelLoadError(
            f"'{source}' lacks weights the model needs ({shown}): an incomplete checkpoint or one "
            "of another variant; fetch it again with seg-ros-download"
        )
    return model.to(device).eval()


def model_type_of(source: str, offline: bool = True) -> str:
    """model_type of a checkpoint: a local folder's config.json, else the hub cache's.

    Raises ModelLoadError when there is no model, the folder has no config, or a hub id is not
    in the local cache (offline) or cannot be fetched.
    """
    if not source:
        raise ModelLoadError("no model given: set the 'model' parameter to a folder or hub id")
    model_type = read_model_type(source)
    if model_type is not None:
        return model_type
    if looks_like_local_path(source):
        path = pathlib.Path(source).expanduser()
        if not path.exists():
            raise ModelLoadError(f"model folder '{path}' does not exist")
        raise ModelLoadError(f"'{path / 'config.json'}' names no model_type")
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(source, local_files_only=offline)
    except Exception as exc:  # OSError for a missing cache entry, ValueError for bad configs
        where = "in the local Hugging Face cache" if offline else "on the hub"
        raise ModelLoadError(
            f"'{source}' is not a local folder and was not found {where} "
            f"({type(exc).__name__}); fetch it first: seg-ros-download {source} --out <folder>"
        ) from exc
    return str(config.model_type)


def resized_config(config: Any, size: int) -> Any:
    """A copy of a SAM 2-family video config for another (square) input size.

    Every size derived from the input (feature maps, RoPE grid of the memory attention, prompt
    encoder frame) scales with it. Refuses (ModelLoadError) a size that does not divide evenly.
    The learned position embeddings interpolate (Hiera's `pos_embed` is bicubic-resized; the
    prompt encoder normalises coordinates; RoPE is recomputed), so the weights still apply,
    though the model was trained at its own size: accuracy is best there.
    """
    config = config.__class__.from_dict(config.to_dict())
    native = int(config.image_size)

    def scaled(value: int, what: str) -> int:
        if (value * size) % native:
            raise ModelLoadError(
                f"input_size {size} does not scale the model's {what} ({value} at {native} px) "
                f"to whole cells; use a multiple of {native // math.gcd(native, value)} or 0"
            )
        return value * size // native

    vision = config.vision_config
    vision.backbone_feature_sizes = [
        [scaled(int(v), "feature maps") for v in level] for level in vision.backbone_feature_sizes
    ]
    config.memory_attention_rope_feat_sizes = [
        scaled(int(v), "memory attention grid") for v in config.memory_attention_rope_feat_sizes
    ]
    config.prompt_encoder_config.image_size = size
    backbone = getattr(vision, "backbone_config", None)
    if backbone is not None and getattr(backbone, "image_size", None) is not None:
        backbone.image_size = [size, size]
    config.image_size = size
    return config


def release_memory(device: torch.device) -> None:
    """Give the memory of dropped tensors back: collect cycles, then empty CUDA's cache.

    Called by a backend's `close()` once it dropped its model and memory bank: the CUDA caching
    allocator keeps freed blocks reserved for this process until `empty_cache`, so other
    processes (and a model loaded next) would not get them.
    """
    gc.collect()
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
