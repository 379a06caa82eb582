"""Pure transforms between the engine's world and a SAM model's square input frame.

Source images are RGB uint8 (H, W, 3); prompts are in source pixels (XY); masks are bool (H, W)
at the source resolution. The model sees a square of `size` pixels, its masks come out as
low-resolution logits. Each function states the processor step it reproduces (tested to the bit
in test/test_sam_loading.py and test/test_sam2.py). torch is imported by the functions that use
it: importing this module is free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

#: ImageNet statistics, as the SAM 2 / SAM 3 image processors normalise (RGB order).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def logits_to_masks(
    logits: torch.Tensor, height: int, width: int, chunk: int = 16
) -> npt.NDArray[np.bool_]:
    """(N, h, w) mask logits -> (N, height, width) bool at the source resolution (logit > 0).

    Bilinear upsampling in float32 on the logits' device, as the processors' post_process_masks.
    `chunk` masks at a time: bilinear is per plane, so the answer is the same, and the float
    intermediate stays small (hundreds of segment-everything masks at 640x480 would be
    1.2 MB each; 16 at a time ran 1.7 s -> 1.25 s for 562 masks on one CPU thread).
    """
    import torch.nn.functional as F

    result: npt.NDArray[np.bool_] = np.zeros((logits.shape[0], height, width), dtype=bool)
    for start in range(0, logits.shape[0], chunk):
        up = F.interpolate(
            logits[start : start + chunk, None].float(),
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )
        result[start : start + chunk] = (up[:, 0] > 0).cpu().numpy()
    return result


def scribble_points(mask: npt.NDArray[np.bool_], count: int) -> npt.NDArray[np.float32]:
    """Up to `count` pixel XY spread over a scribble (farthest-point sampling, deterministic)."""
    ys, xs = np.nonzero(mask)
    pixels = np.stack([xs, ys], axis=1).astype(np.float32)
    if len(pixels) > 4096:  # a subsample keeps this O(count * 4096)
        pixels = pixels[np.linspace(0, len(pixels) - 1, 4096).astype(int)]
    # Start from the stroke pixel nearest the strokes' centroid, then take the farthest each time.
    chosen = [int(np.argmin(((pixels - pixels.mean(axis=0)) ** 2).sum(axis=1)))]
    distance = ((pixels - pixels[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < min(count, len(pixels)):
        nxt = int(np.argmax(distance))
        if distance[nxt] == 0:
            break
        chosen.append(nxt)
        distance = np.minimum(distance, ((pixels - pixels[nxt]) ** 2).sum(axis=1))
    return pixels[chosen]
