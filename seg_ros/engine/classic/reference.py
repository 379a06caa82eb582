"""References for the classic backend: an object shown on another image, found by its colours.

`ClassicBackend.add_reference` gives the object's region on a reference image (a photo, another
camera, a frame saved earlier) to `References.add`: the region is segmented from the prompt as a
prompt on a frame would be (`ClassicBackend._segment_prompt`), and its appearance model is
learnt there exactly as a track's is (`ClassicBackend._new_track`: Lab colour histogram of the
object, of the rest of the image, of a ring around it; GrabCut's colour models). Nothing of it
is a frame of the stream: it never enters the frame history and stays until removed (at most
`MAX_REFERENCES` per object, the oldest forgotten).

On every frame (`References.search`, called by the backend's step after its own search for
lost tracks), each object that has references and is not being followed (never found yet, or
lost) is looked for anywhere on the frame. A lost track's own search (`ClassicBackend._search`)
looks near where the object was; here no position is known, so the evidence must carry it
alone, with the thresholds of a re-acquisition:

* the reference's colour evidence (`fg / (fg + bg)` per bin) on the frame, blurred at the
  object's expected size, gives candidate regions (> 0.6), pixels of followed objects excluded;
* the expected size is the reference area scaled by the ratio of the two images' areas (a
  reference from a camera of another resolution); a candidate of 0.25-3x it is plausible;
* the best `CANDIDATES` by mean evidence are re-segmented (`ClassicBackend._resegment`) and
  one is taken only when its confidence reaches `reacquire_confidence`, its re-segmented area
  is 0.3-3x the expected one and its colour histogram matches the reference's (Bhattacharyya
  coefficient >= `reacquire_similarity`);
* the best one grows by one GrabCut around it with the colour models learnt on the reference
  frozen (the search's region is the part whose colours are surest), kept when it convinces as
  much.

The object found becomes an ordinary track on that frame (its colour models learnt there: the
stream's light and background), followed by optical flow as any prompted object; when it is
lost again, its own search and the references' both look for it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from seg_ros.engine.backends.base import MAX_REFERENCES, ReferenceOutput
from seg_ros.engine.classic import ops
from seg_ros.engine.errors import PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.types import BoolArray, RgbImage

if TYPE_CHECKING:  # the backend imports this module
    from seg_ros.engine.backends.classic import ClassicBackend, _Frame, _Track

#: Candidate regions re-segmented per reference and frame (the best by mean colour evidence).
CANDIDATES = 3
#: A candidate region may be this many times the expected area (and at least 0.25 of it).
MAX_AREA = 3.0
#: Smoothed colour evidence a pixel needs to be part of a candidate region.
EVIDENCE = 0.6
#: Share of the frame's own colours in the background model the candidates are found with
#: (the rest: the reference image's background). Colours the frame is full of are not the
#: object's, whatever the reference's background had: DAVIS dev J 0.402 -> 0.418 from frame
#: 10, 0.314 -> 0.421 from frame 20 (with the growth below).
LIVE_BACKGROUND = 0.5
#: The found region grows by one GrabCut in its box enlarged by this fraction of its size, with
#: the colour models learnt on the reference frozen: the search's region is the part of the
#: object whose colours are the surest (a camel's shaded belly); DAVIS dev J 0.346 -> 0.418.
GROW = 0.25


@dataclass(frozen=True, eq=False)
class Reference:
    """One reference of one object: its appearance model as learnt on the reference image.

    Attributes:
        reference: its id within the object (from 1).
        model: the track `_new_track` made of the region on the reference image (histograms
            `fg`, `bg`, `local_bg`, area `ref_area` in working pixels of that image, `ref_fit`).
        pixels: working-resolution pixel count of the reference image (its area scales the
            expected size on a frame of another size).
    """

    reference: int
    model: _Track
    pixels: int


@dataclass(frozen=True, eq=False)
class Found:
    """A reference's match on a frame (working resolution)."""

    mask: BoolArray
    confidence: float
    similarity: float
    reference: int


class References:
    """One classic stream's references, per object (see the module docstring)."""

    def __init__(self, backend: ClassicBackend, limit: int = MAX_REFERENCES) -> None:
        if limit < 1:
            raise ValueError("an object keeps at least one reference")
        self.backend = backend
        self.limit = limit
        self._refs: dict[int, deque[Reference]] = {}
        self._next: dict[int, int] = {}

    # ------------------------------------------------------------------ memory
    def add(self, obj: int, image: RgbImage, prompt: Prompt) -> ReferenceOutput:
        """Learn the region `prompt` designates on `image` (RGB uint8 HxWx3, any size) as a
        reference of `obj`. The answer's mask is at `image`'s size. Nothing changes on failure."""
        backend = self.backend
        frame = backend._prepare(image)
        mask, full_mask, confidence = backend._segment_prompt(frame, prompt, None, -1)
        if not mask.any():
            raise PromptError("the prompt designates no region on the reference image")
        model = backend._new_track(frame, mask, confidence, None, prompt, -1)
        number = self._next.get(obj, 1)
        refs = self._refs.setdefault(obj, deque(maxlen=self.limit))
        refs.append(Reference(number, model, int(mask.size)))
        self._next[obj] = number + 1
        full = full_mask if full_mask is not None else backend._upscale(mask, frame)
        return ReferenceOutput(number, full, backend._score(confidence))

    def remove(self, obj: int, reference: int) -> None:
        """Forget one reference; PromptError naming the ones `obj` keeps when it has no such."""
        refs = self._refs.get(obj, deque())
        kept = [r for r in refs if r.reference != reference]
        if len(kept) == len(refs):
            known = ", ".join(str(r.reference) for r in refs) or "none"
            raise PromptError(f"object {obj} has no reference {reference} (references: {known})")
        if kept:
            self._refs[obj] = deque(kept, maxlen=self.limit)
        else:
            del self._refs[obj]

    def ids(self, obj: int) -> list[int]:
        return [r.reference for r in self._refs.get(obj, ())]

    def drop(self, obj: int) -> None:
        """The object is gone: its references too (and its id count)."""
        self._refs.pop(obj, None)
        self._next.pop(obj, None)

    def clear(self) -> None:
        self._refs.clear()
        self._next.clear()

    def __len__(self) -> int:
        return sum(len(r) for r in self._refs.values())

    # ------------------------------------------------------------------ search
    def search(self, frame: _Frame, frame_index: int, occupied: BoolArray) -> list[int]:
        """Look on `frame` for every object with references that is not followed (no track, or
        a lost one); each one found becomes a track (replacing the lost one). `occupied`:
        working-resolution pixels of the followed objects (updated with those found). Returns
        the objects found."""
        backend = self.backend
        found: list[int] = []
        for obj, refs in self._refs.items():
            track = backend._tracks.get(obj)
            if track is not None and not track.lost:
                continue
            matches = [m for m in (self.match(ref, frame, occupied) for ref in refs) if m]
            if not matches:
                continue
            best = max(matches, key=lambda m: m.confidence * m.similarity)
            prompt = Prompt(mask=best.mask)
            new = backend._new_track(frame, best.mask, best.confidence, None, prompt, frame_index)
            if new.lost:
                continue
            backend._tracks[obj] = new
            occupied |= best.mask
            found.append(obj)
        return found

    def match(self, ref: Reference, frame: _Frame, occupied: BoolArray) -> Found | None:
        """The region of `frame` that convinces as `ref`'s object (module docstring), or None."""
        cfg = self.backend.config
        height, width = frame.shape
        expected = ref.model.ref_area * (height * width) / max(ref.pixels, 1)
        if expected < 4:
            return None
        # The reference's model, at the size it should have here; its mask is the candidate.
        model = replace(ref.model, ref_area=expected, lost=False)
        live = ops.normalize(frame.counts_all)
        bg = (1 - LIVE_BACKGROUND) * model.bg + LIVE_BACKGROUND * live
        lut = ops.ratio_lut(model.fg, bg)
        evidence = lut[frame.bins]
        evidence[occupied] = 0.0
        k = max(3, int(math.sqrt(expected) / 3) | 1)
        smooth = cv2.blur(evidence, (k, k))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(
            (smooth > EVIDENCE).astype(np.uint8), connectivity=8
        )
        if n <= 1:
            return None
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        sums = np.bincount(labels.reshape(-1), weights=smooth.reshape(-1), minlength=n)[1:]
        means = sums / np.maximum(areas, 1)
        q = areas / expected
        plausible = np.flatnonzero((q >= 0.25) & (q <= MAX_AREA))
        best: Found | None = None
        for i in plausible[np.argsort(-means[plausible])][:CANDIDATES]:
            candidate = labels == 1 + int(i)
            result = self.backend._resegment(model, frame, candidate)
            if result is None:
                continue
            mask = result[0] & ~occupied
            area_q = float(np.count_nonzero(mask)) / expected
            if not 0.3 <= area_q <= MAX_AREA:
                continue
            confidence = self.backend._confidence(model, frame, mask)
            if confidence < cfg.reacquire_confidence:
                continue
            similarity = float(np.sum(np.sqrt(ops.histogram(frame.bins, mask) * model.fg)))
            if similarity < cfg.reacquire_similarity:
                continue
            if best is None or confidence * similarity > best.confidence * best.similarity:
                best = Found(mask, confidence, similarity, ref.reference)
        if best is None:
            return None
        grown = self._grow(ref, frame, best.mask, occupied)
        if grown is None:
            return best
        # The grown region must convince as much as the search's did.
        confidence = self.backend._confidence(model, frame, grown)
        similarity = float(np.sum(np.sqrt(ops.histogram(frame.bins, grown) * model.fg)))
        area_q = float(np.count_nonzero(grown)) / expected
        if (
            confidence >= cfg.reacquire_confidence
            and similarity >= best.similarity - 0.02
            and 0.3 <= area_q <= MAX_AREA
        ):
            return Found(grown, confidence, similarity, ref.reference)
        return best

    def _grow(
        self, ref: Reference, frame: _Frame, mask: BoolArray, occupied: BoolArray
    ) -> BoolArray | None:
        """One GrabCut around a found region with the reference's colour models frozen: the
        region (one pixel in) is sure object, its box enlarged by `GROW` probably background,
        the rest and the followed objects sure background. None when it cannot run."""
        box = ops.mask_box(mask)
        if box is None or ref.model.gmm is None:
            return None
        height, width = frame.shape
        size = max(box[2] - box[0], box[3] - box[1])
        inner = ops.expand_box(box, max(4, int(GROW * size)), width, height)
        x0, y0, x1, y1 = ops.expand_box(inner, 6, width, height)
        labels = np.full((y1 - y0, x1 - x0), cv2.GC_BGD, np.uint8)
        labels[inner[1] - y0 : inner[3] - y0, inner[0] - x0 : inner[2] - x0] = cv2.GC_PR_BGD
        local = mask[y0:y1, x0:x1]
        core = ops.erode(local, 2)
        labels[local] = cv2.GC_PR_FGD
        labels[core] = cv2.GC_FGD
        labels[occupied[y0:y1, x0:x1]] = cv2.GC_BGD
        crop = np.ascontiguousarray(frame.rgb[y0:y1, x0:x1])
        out = ops.grabcut(crop, labels, 1, ref.model.gmm)
        if out is None:
            return None
        cut = (out == cv2.GC_FGD) | (out == cv2.GC_PR_FGD)
        cut = ops.fill_holes(ops.keep_components(cut, core if core.any() else None, 0.15))
        grown = np.zeros((height, width), bool)
        grown[y0:y1, x0:x1] = cut
        return grown
