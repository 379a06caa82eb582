"""Typed prompt values, validated where they are built.

Coordinates are pixels of the source image: x to the right, y down, origin at the top-left corner
of the top-left pixel (a click on pixel (u, v) is any point in [u, u+1) x [v, v+1)). Boxes are
XYXY (x0, y0, x1, y1) with x0 < x1 and y0 < y1. Masks are boolean HxW arrays of the frame's size.

Kinds compose: one `Prompt` may carry points and a box and a mask (SAM takes them together for one
object), and text to find candidates that the geometric prompts then pick or refine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from seg_ros.engine.errors import PromptError
from seg_ros.engine.types import BoolArray, FloatArray

#: Longest accepted text prompt (characters). CLIP-style tokenizers keep 32-77 tokens anyway.
MAX_TEXT_LENGTH = 256
#: Most points accepted in one prompt: more is a client bug, and the decoder cost grows with it.
MAX_POINTS = 64


def _as_points(points: Any) -> FloatArray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise PromptError(f"points must be an (N, 2) array of pixel x, y; got shape {arr.shape}")
    if arr.shape[0] > MAX_POINTS:
        raise PromptError(f"at most {MAX_POINTS} points per prompt; got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise PromptError("point coordinates must be finite (no NaN or inf)")
    return arr.astype(np.float32)


def _as_labels(labels: Any, n_points: int) -> npt.NDArray[np.int8]:
    arr = np.asarray(labels if labels is not None else np.ones(n_points), dtype=np.float64)
    arr = arr.reshape(-1)
    if arr.shape[0] != n_points:
        raise PromptError(f"got {n_points} points but {arr.shape[0]} point labels")
    if not np.isin(arr, (0, 1)).all():
        raise PromptError("point labels must be 1 (foreground) or 0 (background)")
    return arr.astype(np.int8)


@dataclass(frozen=True, eq=False)
class Prompt:
    """What a user says about one object (or, with text, about a category) on one frame.

    Attributes:
        points: (N, 2) float32 pixel XY, N may be 0.
        point_labels: (N,) int8, 1 = foreground, 0 = background.
        box: (4,) float32 XYXY pixels, or None.
        mask: (H, W) bool of the frame's size (a full mask or a scribble), or None.
        scribble: True when `mask` holds sparse strokes on the object rather than its full extent.
        text: open-vocabulary phrase ("red mug"), or "" for none.
    """

    points: FloatArray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    point_labels: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, np.int8))
    box: FloatArray | None = None
    mask: BoolArray | None = None
    scribble: bool = False
    text: str = ""

    def __post_init__(self) -> None:
        points = _as_points(self.points)
        labels = _as_labels(
            self.point_labels if np.size(self.point_labels) or len(points) == 0 else None,
            len(points),
        )
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "point_labels", labels)
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float64).reshape(-1)
            if box.shape != (4,):
                raise PromptError(f"box must be 4 numbers x0, y0, x1, y1; got {box.shape[0]}")
            if not np.isfinite(box).all():
                raise PromptError("box coordinates must be finite (no NaN or inf)")
            if not (box[0] < box[2] and box[1] < box[3]):
                raise PromptError(
                    f"box must have x0 < x1 and y0 < y1 (XYXY pixels); got {box.tolist()}"
                )
            object.__setattr__(self, "box", box.astype(np.float32))
        if self.mask is not None:
            mask = np.asarray(self.mask)
            if mask.ndim != 2 or mask.shape[0] == 0 or mask.shape[1] == 0:
                raise PromptError(f"mask must be a non-empty (H, W) array; got shape {mask.shape}")
            mask = mask.astype(bool)
            if not mask.any():
                raise PromptError("mask has no foreground pixel")
            object.__setattr__(self, "mask", mask)
        if not isinstance(self.text, str):
            raise PromptError("text must be a string")
        text = " ".join(self.text.split())
        if len(text) > MAX_TEXT_LENGTH:
            raise PromptError(f"text is longer than {MAX_TEXT_LENGTH} characters")
        object.__setattr__(self, "text", text)
        if self.is_empty:
            raise PromptError("a prompt needs at least one point, a box, a mask or a text")

    @property
    def is_empty(self) -> bool:
        return len(self.points) == 0 and self.box is None and self.mask is None and not self.text

    @property
    def has_geometry(self) -> bool:
        """Points, box or mask: something that designates one object."""
        return len(self.points) > 0 or self.box is not None or self.mask is not None

    @property
    def has_foreground_point(self) -> bool:
        return bool((self.point_labels == 1).any())

    def check_fits(self, height: int, width: int) -> None:
        """Raise PromptError unless every coordinate lies on a `height` x `width` frame."""
        if len(self.points):
            xs, ys = self.points[:, 0], self.points[:, 1]
            bad = (xs < 0) | (xs >= width) | (ys < 0) | (ys >= height)
            if bad.any():
                first = self.points[int(np.argmax(bad))].tolist()
                raise PromptError(
                    f"point {first} lies outside the {width}x{height} image "
                    f"(x in [0, {width}), y in [0, {height}))"
                )
        if self.box is not None:
            x0, y0, x1, y1 = self.box.tolist()
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise PromptError(
                    f"box {[x0, y0, x1, y1]} exceeds the {width}x{height} image (XYXY pixels)"
                )
        if self.mask is not None and self.mask.shape != (height, width):
            raise PromptError(
                f"mask is {self.mask.shape[1]}x{self.mask.shape[0]} but the frame is "
                f"{width}x{height}"
            )

    def agreement(self, mask: BoolArray) -> float:
        """How well a candidate mask fits this prompt's geometry (higher is better, <= 0 none):
        +1 per point on the right side of the mask, -1 per point on the wrong side, plus
        2 x IoU with the box and with the mask. Used to pick, among a text's matches, the one
        the geometry designates."""
        score = 0.0
        for (x, y), lab in zip(self.points.tolist(), self.point_labels.tolist(), strict=True):
            score += 1.0 if bool(mask[int(y), int(x)]) == bool(lab) else -1.0
        regions: list[BoolArray] = []
        if self.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in self.box.tolist())
            box = np.zeros(mask.shape, dtype=bool)
            box[y0:y1, x0:x1] = True
            regions.append(box)
        if self.mask is not None:
            regions.append(self.mask)
        for region in regions:
            union = np.count_nonzero(mask | region)
            score += 2.0 * np.count_nonzero(mask & region) / union if union else 0.0
        return score

    def geometry_only(self) -> Prompt:
        """The same prompt without its text (what a tracker that has no text takes)."""
        return Prompt(
            points=self.points,
            point_labels=self.point_labels,
            box=self.box,
            mask=self.mask,
            scribble=self.scribble,
        )
