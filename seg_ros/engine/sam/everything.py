"""Segment everything: the filters of SAM's automatic mask generator, as pure tensor functions.

A grid of single positive clicks goes through the prompt encoder and the mask decoder on one
frame's cached features (`StreamingVideoTracker.segment_everything`); each click gives K = 3
candidate masks. These functions keep the good ones, as segment-anything's generator does:
predicted IoU above a threshold, stable under a shift of the logit threshold, not too small,
and not a duplicate of a better mask (mask NMS, SAM 3's `mask_nms`). Everything here works on
low-resolution logits (h, w) in the model's square input; callers scale areas from the source.

torch is imported by the functions that use it: importing this module is free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EverythingOptions:
    """Thresholds of segment-everything (defaults: segment-anything's generator, except NMS).

    Attributes:
        points_per_side: the click grid is points_per_side x points_per_side (32 -> 1024 clicks).
        pred_iou_threshold: keep masks whose predicted IoU is at least this (SAM: 0.88).
        stability_threshold: keep masks whose stability score is at least this (SAM: 0.95).
        stability_offset: logit offset of the stability score (SAM: 1.0).
        min_area: smallest kept mask, in low-resolution mask pixels (callers convert).
        nms_iou: a mask overlapping a better kept one above this mask IoU is dropped (SAM uses
            box NMS at 0.7; masks are what we return, so mask IoU is the honest measure).
        chunk: clicks per decoder call (memory ~ chunk x the top-level features).
        coarse_to_fine: click the grid in three passes (every 4th point of each row and column,
            then every 2nd, then the rest: `grid_levels`) and skip a point that falls inside a
            mask already kept (filters and NMS passed). Fewer decoder passes where objects are
            large, but not the same answer: a skipped click would have proposed the parts of
            the object it lies in (SAM's multimask whole / part / subpart), so part-level masks
            are fewer. Off by default (SAM's generator clicks every point).
    """

    points_per_side: int = 32
    pred_iou_threshold: float = 0.88
    stability_threshold: float = 0.95
    stability_offset: float = 1.0
    min_area: int = 0
    nms_iou: float = 0.7
    chunk: int = 64
    coarse_to_fine: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.points_per_side <= 128:
            raise ValueError(f"points_per_side must be in [1, 128], got {self.points_per_side}")
        for name in ("pred_iou_threshold", "stability_threshold", "nms_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.stability_offset < 0.0:
            raise ValueError(f"stability_offset must be >= 0, got {self.stability_offset}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {self.min_area}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")


def grid_points(points_per_side: int, size: float) -> torch.Tensor:
    """(n*n, 2) float32 XY click centres of an n x n grid over a `size` x `size` square.

    Cell centres, row-major (x fastest), as segment-anything's `build_point_grid` scaled.
    """
    import torch

    offset = 1.0 / (2 * points_per_side)
    side = torch.linspace(offset, 1.0 - offset, points_per_side, dtype=torch.float32)
    ys, xs = torch.meshgrid(side, side, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) * float(size)


def grid_levels(points_per_side: int) -> list[list[int]]:
    """Indices of `grid_points` in coarse-to-fine passes: the points whose row and column i have
    i % 4 == 2 (every 4th, centred), then i % 2 == 0 (every 2nd, a superset) not yet listed,
    then the rest. Together every index once, each level in row-major order."""
    n = points_per_side
    levels: list[list[int]] = []
    seen: set[int] = set()
    for stride, offset in ((4, 2), (2, 0), (1, 0)):
        on = [i for i in range(n) if i % stride == offset]
        level = [row * n + col for row in on for col in on if row * n + col not in seen]
        seen.update(level)
        if level:
            levels.append(level)
    return levels


def stability_scores(logits: torch.Tensor, offset: float) -> torch.Tensor:
    """(N,) IoU of each mask thresholded at +offset and at -offset (logits (N, h, w)).

    The +offset mask lies inside the -offset one, so the IoU is a ratio of areas; an empty
    -offset mask scores 0 (nothing to be stable about).
    """
    inner = (logits > offset).flatten(1).sum(dim=1).float()
    outer = (logits > -offset).flatten(1).sum(dim=1).float()
    return (inner / outer.clamp(min=1.0)) * (outer > 0)


def passes_filters(
    logits: torch.Tensor, pred_iou: torch.Tensor, options: EverythingOptions
) -> torch.Tensor:
    """(N,) bool: predicted IoU, stability and area thresholds, each mask on its own.

    Per mask, so a chunk can be filtered as soon as the decoder returns it (the candidates of
    a 32x32 grid at 512 px are 3,072 x 128 x 128 logits: 200 MB kept for nothing otherwise).
    """
    logits = logits.float()
    pred = pred_iou.float().reshape(-1)
    return (
        (pred >= options.pred_iou_threshold)
        & (stability_scores(logits, options.stability_offset) >= options.stability_threshold)
        & ((logits > 0).flatten(1).sum(dim=1) >= max(1, options.min_area))
    )


def keep_masks(
    logits: torch.Tensor, pred_iou: torch.Tensor, options: EverythingOptions
) -> list[int]:
    """Indices of the masks the generator keeps, best predicted IoU first.

    `passes_filters`, then mask NMS among the survivors (what `segment_everything` does chunk
    by chunk; this one-shot form is the definition the tests compare against).

    Args:
        logits: (N, h, w) mask logits (> 0 is the object).
        pred_iou: (N,) the decoder's predicted IoU of each mask.
        options: the thresholds.
    """
    import torch

    from seg_ros.engine.sam.detector import mask_nms

    if logits.shape[0] == 0:
        return []
    candidates = torch.nonzero(passes_filters(logits, pred_iou, options)).reshape(-1)
    if candidates.numel() == 0:
        return []
    binary = logits[candidates].float() > 0
    pred = pred_iou.float().reshape(-1)[candidates]
    kept = mask_nms(binary.cpu(), pred.cpu(), options.nms_iou)
    return [int(candidates[i]) for i in kept]
