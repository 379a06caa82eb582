"""Shared by the transformers backends: device / dtype choice, safe loading, image preprocessing.

Nothing here runs at import time: torch is imported by the functions that need it, so the engine
(and the classic backend) import without torch installed.
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from seg_ros.engine.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

#: ImageNet statistics, as the SAM 2 / SAM 3 image processors normalise (RGB order).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def preprocess(
    image: npt.NDArray[np.uint8],
    size: int,
    device: torch.device,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 (1, 3, size, size), resized to a square, normalised.

    The transformers SAM 2 / SAM 3 image processors' path, step for step, so the result is the
    processor's to the bit (tested): the uint8 image is resized with antialiased bilinear
    interpolation IN uint8 (torchvision's native uint8 kernel on a CPU; on a GPU float, rounded
    back to uint8, as torchvision does there), then normalised with mean and std scaled by 255
    (the processor's fused rescale + normalise). Resizing in float without the uint8 rounding
    differed by up to 0.00875 (320x256 -> 256). Needs no torchvision at run time. SAM 3 passes
    its own mean / std.
    """
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    tensor = tensor.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) uint8, channels-last strides
    if tuple(tensor.shape[-2:]) != (size, size):
        if tensor.device.type == "cpu":
            tensor = F.interpolate(
                tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        else:  # no uint8 kernel: torchvision resizes in float and rounds back to uint8
            tensor = F.interpolate(
                tensor.float(),
                size=(size, size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            tensor = tensor.round_().to(torch.uint8)
    # The processor's rescale factor is 1/255, fused into mean and std as * (1 / (1 / 255)).
    scale = 1.0 / (1.0 / 255.0)
    mean_t = (torch.tensor(mean, device=device) * scale).view(1, 3, 1, 1)
    std_t = (torch.tensor(std, device=device) * scale).view(1, 3, 1, 1)
    return tensor.to(torch.float32).sub_(mean_t).div_(std_t)


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


def to_model_xy(
    points: npt.NDArray[np.float32], height: int, width: int, size: int
) -> list[tuple[float, float]]:
    """(N, 2) source pixel XY -> the model's square input frame of `size` pixels.

    Scales like the SAM 2 / SAM 3 processors (x * size / width, y * size / height); the prompt
    encoder then adds half a pixel to reach the pixel centre.
    """
    sx, sy = size / float(width), size / float(height)
    return [(float(x) * sx, float(y) * sy) for x, y in np.asarray(points).reshape(-1, 2).tolist()]


def mask_to_input(mask: npt.NDArray[np.bool_], size: int, device: torch.device) -> torch.Tensor:
    """(H, W) bool mask -> (size, size) float32 {0, 1}, as the SAM 2 video processor resizes.

    Bilinear with antialiasing, then >= 0.5.
    """
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).to(device)
    tensor = tensor[None, None]
    if tuple(tensor.shape[-2:]) != (size, size):
        tensor = F.interpolate(
            tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        tensor = (tensor >= 0.5).float()
    return tensor[0, 0]


def logits_to_masks(logits: torch.Tensor, height: int, width: int) -> npt.NDArray[np.bool_]:
    """(N, h, w) mask logits -> (N, height, width) bool at the source resolution (logit > 0).

    Bilinear upsampling in float32 on the logits' device, as the processors' post_process_masks.
    """
    import torch.nn.functional as F

    if logits.shape[0] == 0:
        return np.zeros((0, height, width), dtype=bool)
    up = F.interpolate(
        logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )
    result: npt.NDArray[np.bool_] = (up[:, 0] > 0).cpu().numpy()
    return result
