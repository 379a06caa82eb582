"""Results as frozen dataclasses with numpy masks, and mask helpers (bbox, label image, RLE)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from seg_ros.engine.types import BoolArray


def mask_bbox(mask: BoolArray) -> tuple[int, int, int, int] | None:
    """Tight box of a boolean mask as (x0, y0, x1, y1), x1 / y1 exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def rle_encode(mask: BoolArray) -> list[int]:
    """Column-major run lengths (COCO order), starting with a run of zeros (may be 0)."""
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def rle_decode(runs: list[int], height: int, width: int) -> BoolArray:
    """Inverse of `rle_encode`."""
    if sum(runs) != height * width:
        raise ValueError(f"runs cover {sum(runs)} pixels, expected {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order="F")


@dataclass(frozen=True, eq=False)
class Candidate:
    """One of several masks a model proposes for an ambiguous prompt."""

    mask: BoolArray
    score: float


@dataclass(frozen=True, eq=False)
class ObjectMask:
    """One object on one frame.

    Attributes:
        object_id: stable track id ("1", "2", ...), "" for one-shot results.
        mask_value: the object's pixel value in the frame's label image (0 is background).
        label: open-vocabulary label ("" when none was given).
        score: confidence in [0, 1].
        visible: False while occluded / lost; the mask is then empty.
        mask: (H, W) bool at the source image's resolution.
        candidates: alternatives for an ambiguous prompt, best first (may be empty).
        query: id of the standing query that made the object ("q1", ...; see
            engine/concepts.py), "" for an object made by a prompt or a one-shot `add_text`.
            It stays after the query is removed with keep_objects (where the object came from).
    """

    object_id: str
    mask_value: int
    label: str
    score: float
    visible: bool
    mask: BoolArray
    candidates: tuple[Candidate, ...] = ()
    query: str = ""

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """(x0, y0, x1, y1) pixels, x1 / y1 exclusive; None when the mask is empty."""
        return mask_bbox(self.mask)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True, eq=False)
class FrameResult:
    """Every tracked object on one processed frame."""

    frame_index: int
    stamp_ns: int
    height: int
    width: int
    objects: tuple[ObjectMask, ...]

    def label_image(self) -> npt.NDArray[np.uint16]:
        """(H, W) uint16: pixel = the object's mask_value, 0 = background.

        Where masks overlap, the object with the higher score wins (it is painted last).
        """
        out = np.zeros((self.height, self.width), dtype=np.uint16)
        for obj in sorted(self.objects, key=lambda o: o.score):
            if obj.visible:
                out[obj.mask] = obj.mask_value
        return out

    def get(self, object_id: str) -> ObjectMask | None:
        for obj in self.objects:
            if obj.object_id == object_id:
                return obj
        return None
