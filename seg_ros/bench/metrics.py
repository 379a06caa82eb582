"""Video object segmentation metrics, DAVIS conventions: J (region), F (boundary), J&F.

J is the intersection over union of a predicted and a ground-truth mask; two empty masks agree
perfectly (J = 1: the object was correctly reported absent).

F is the boundary F-measure of DAVIS (Perazzi et al., CVPR 2016): the one-pixel boundaries of
both masks are compared, a predicted boundary pixel counts as correct when a ground-truth
boundary pixel lies within `bound_pix` of it (and the other way round for recall), with
`bound_pix` from `bound_th`: a value >= 1 is pixels, a value < 1 is a fraction of the image
diagonal, rounded up (DAVIS default 0.008: 7 pixels at 640x480). Empty-vs-empty is F = 1; one
empty boundary against a non-empty one gives F = 0.

Per object, a sequence's J (F) is the mean over the scored frames; per sequence, the mean over
objects; J&F is the mean of J and F.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from seg_ros.engine.types import BoolArray

#: DAVIS's boundary tolerance: a fraction of the image diagonal.
DAVIS_BOUND_TH = 0.008


def _check_pair(pred: BoolArray, gt: BoolArray) -> tuple[BoolArray, BoolArray]:
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    if p.shape != g.shape or p.ndim != 2:
        raise ValueError(f"masks must be two (H, W) arrays of one shape; got {p.shape}, {g.shape}")
    return p, g


def jaccard(pred: BoolArray, gt: BoolArray) -> float:
    """Region similarity J: |pred & gt| / |pred | gt|; 1.0 when both are empty."""
    p, g = _check_pair(pred, gt)
    union = int(np.count_nonzero(p | g))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(p & g)) / union


def boundary(mask: BoolArray) -> BoolArray:
    """One-pixel boundary of a mask, DAVIS's `seg2bmap` at equal size.

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour
    inside the image; the image border itself is never a boundary (as in DAVIS).
    """
    m = np.asarray(mask).astype(bool)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down[:-1, :] = m[1:, :]
    diag[:-1, :-1] = m[1:, 1:]
    b = (m ^ right) | (m ^ down) | (m ^ diag)
    b[-1, :] = m[-1, :] ^ right[-1, :]
    b[:, -1] = m[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def bound_pixels(shape: tuple[int, int], bound_th: float = DAVIS_BOUND_TH) -> int:
    """The boundary tolerance in pixels for an image of `shape` (H, W)."""
    if bound_th <= 0:
        raise ValueError("bound_th must be > 0")
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def _disk(radius: int) -> npt.NDArray[np.uint8]:
    """Structuring element: every offset with dx^2 + dy^2 <= radius^2 (skimage's disk)."""
    r = np.arange(-radius, radius + 1)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).astype(np.uint8)


def f_measure(pred: BoolArray, gt: BoolArray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """Boundary F-measure F of `pred` against `gt` (see the module docstring)."""
    p, g = _check_pair(pred, gt)
    bp, bg = boundary(p), boundary(g)
    n_p, n_g = int(np.count_nonzero(bp)), int(np.count_nonzero(bg))
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    kernel = _disk(bound_pixels(p.shape, bound_th))
    g_dil = cv2.dilate(bg.astype(np.uint8), kernel).astype(bool)
    p_dil = cv2.dilate(bp.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(bp & g_dil) / n_p
    recall = np.count_nonzero(bg & p_dil) / n_g
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


@dataclass
class ObjectScore:
    """Per-frame J and F of one object; `j`, `f`, `jf` are the means over its scored frames."""

    j_frames: list[float] = field(default_factory=list)
    f_frames: list[float] = field(default_factory=list)

    def add(self, pred: BoolArray, gt: BoolArray, bound_th: float = DAVIS_BOUND_TH) -> None:
        self.j_frames.append(jaccard(pred, gt))
        self.f_frames.append(f_measure(pred, gt, bound_th))

    @property
    def frames(self) -> int:
        return len(self.j_frames)

    @property
    def j(self) -> float:
        return float(np.mean(self.j_frames)) if self.j_frames else float("nan")

    @property
    def f(self) -> float:
        return float(np.mean(self.f_frames)) if self.f_frames else float("nan")

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


@dataclass
class SequenceScore:
    """Scores of every object of one sequence. J, F, J&F are means over objects (DAVIS)."""

    objects: dict[int, ObjectScore] = field(default_factory=dict)
    bound_th: float = DAVIS_BOUND_TH

    def add_frame(
        self, preds: Mapping[int, BoolArray], gts: Mapping[int, BoolArray], objects: Iterable[int]
    ) -> None:
        """Score one frame for `objects` (ids present in `gts`); a missing prediction is empty."""
        for obj in objects:
            gt = gts[obj]
            pred = preds.get(obj)
            if pred is None:
                pred = np.zeros_like(gt, dtype=bool)
            self.objects.setdefault(obj, ObjectScore()).add(pred, gt, self.bound_th)

    @property
    def j(self) -> float:
        return _mean(o.j for o in self.objects.values())

    @property
    def f(self) -> float:
        return _mean(o.f for o in self.objects.values())

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")
