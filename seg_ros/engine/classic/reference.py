"""References for the classic backend: an object shown on another image, found by its look.

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

* colour evidence: each pixel's bin under the reference's object histogram against a
  background of half the reference image's rest, half the frame's own colours (what the
  frame is full of is not the object), centred on 0; pixels of followed objects count as
  background;
* a centre-surround matched filter of the reference's silhouette (mean evidence inside it
  minus that of a ring around it), scaled by the ratio of the two images' sizes (a reference
  from a camera of another resolution), gives the places where a region of the object's
  colours and shape stands out; its strongest `CANDIDATES` peaks (apart by at least half the
  silhouette) are tried in turn, and only while they reach `CONTRAST` x the filter's answer on
  the reference itself (the object absent, something merely of its colours scores lower);
* a peak's silhouette is re-segmented there (`ClassicBackend._resegment`: colour + shape
  prior) and taken when the region's area is 0.3-3x the expected one, its confidence reaches
  `reacquire_confidence` and its colour histogram matches the reference's (Bhattacharyya
  coefficient >= `SIMILARITY`, stricter than a re-acquisition's) and its pixels are explained
  by the reference's GrabCut colour mixtures (object against background, full RGB covariances)
  about as well as the reference region's were (`AGREEMENT`): the histogram's coarse bins put
  a pink pillow and a pink wall in one colour, the mixtures do not; the peaks are tried
  strongest first and the first that convinces is taken;
* the region grows by one GrabCut around it with the colour models learnt on the reference
  frozen, kept when it convinces as much.

The silhouette is matched as it is: an object turned by more than about 10 degrees, seen from
another side or much bigger / smaller than the reference suggests is not found (measured on a
synthetic star: found turned 10 degrees, not 20).

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
import numpy.typing as npt

from seg_ros.engine.backends.base import MAX_REFERENCES, ReferenceOutput
from seg_ros.engine.classic import ops
from seg_ros.engine.errors import PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.types import BoolArray, FloatArray, RgbImage

if TYPE_CHECKING:  # the backend imports this module
    from seg_ros.engine.backends.classic import ClassicBackend, _Frame, _Track

#: Peaks of the matched filter tried per reference and frame, strongest first.
CANDIDATES = 3
#: A found region may be this many times the expected area (and at least 0.3 of it).
MAX_AREA = 3.0
#: Colour similarity (Bhattacharyya coefficient with the reference's histogram) a find needs:
#: with no position to go by, more than a re-acquisition's `reacquire_similarity` (0.8). On the
#: DAVIS dev subset the right finds had 0.95-0.99, wrong ones passed at 0.81-0.82 (drift-chicane
#: from frame 10: a find on the wrong car); 0.85 made that 0 wrong finds, J_found 0.470 -> 0.541.
SIMILARITY = 0.85
#: A peak of the matched filter must reach this fraction of the reference's own contrast (the
#: filter's answer at the object's place on its reference image). On the DAVIS dev subset,
#: each clip's frame-0 reference searched for in every other clip (30 pairs, frames 10-39, the
#: object absent): 11 pairs had a find without it (first peaks at 0.18-0.55 of the contrast, one
#: at 0.89); with 0.6, 1. The right first finds were at 0.72-1.31. 0.65, in that gap: on the
#: bedroom clip the boy (hidden behind the girl from frame ~40, his reference's box took in
#: white bedding) was "found" on frame 63 on a patch of white wall at 0.61 and held there; at
#: 0.65 he is found on frame 168, on himself (on 167 before the mixture gate, while the
#: pillow's wrong find covered that wall patch; dev: the same finds, 0 absent pairs).
CONTRAST = 0.65
#: Share of the frame's own colours in the background model the evidence is computed with (the
#: rest: the reference image's background). Colours the frame is full of are not the object's,
#: whatever the reference's background had (DAVIS dev, the earlier component search: J_found
#: 0.402 -> 0.418 from frame 10, 0.314 -> 0.421 from frame 20).
LIVE_BACKGROUND = 0.5
#: The region found grows by one GrabCut in its box enlarged by this fraction of its size, with
#: the colour models learnt on the reference frozen: the search's region is where the colours
#: are surest, not the whole object (a camel's shaded belly; dev J_found 0.346 -> 0.418).
GROW = 0.25
#: A region found must have at least this share of its pixels better explained by the
#: reference's object colour mixture (GrabCut's RGB Gaussians, learnt on the reference) than by
#: its background's, relative to the share the reference region itself has. The Lab histogram
#: (4 lightness bins) cannot tell a pink pillow from a pink wall; the mixtures' full RGB
#: covariances can (bedroom clip: the pillow's region 0.94-0.95 of its pixels, its reference
#: region 0.97, the wall patch that won 0.10). On the DAVIS dev subset the right finds had
#: 0.63-1.02 of their reference's share, the candidates of absent objects that passed every
#: other gate 0.27-0.31 (camel's reference on dance-twirl: the one absent pair with a find,
#: now none).
AGREEMENT = 0.5


@dataclass(frozen=True, eq=False)
class Reference:
    """One reference of one object: its appearance model as learnt on the reference image.

    Attributes:
        reference: its id within the object (from 1).
        model: the track `_new_track` made of the region on the reference image (histograms
            `fg`, `bg`, `local_bg`, area `ref_area` in working pixels of that image, `ref_fit`).
        pixels: working-resolution pixel count of the reference image (its area scales the
            expected size on a frame of another size).
        silhouette: the region on the reference image (working resolution), cropped to its box.
        contrast: how much the region stands out there: the matched filter's answer at its own
            place on the reference image (see `References.match`).
        mixtures: GrabCut's colour mixtures (background, object) learnt on the reference
            image around the region (None when they could not be learnt).
        agreement: share of the region's pixels the object mixture explains better than the
            background's, on the reference image (what a find is compared with: `AGREEMENT`).
    """

    reference: int
    model: _Track
    pixels: int
    silhouette: BoolArray
    contrast: float
    mixtures: ops.GrabCutModels | None
    agreement: float


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
        x0, y0, x1, y1 = ops.mask_box(mask) or (0, 0, 1, 1)
        silhouette = mask[y0:y1, x0:x1].copy()
        # The filter's answer at the region's own place: the kernel over the evidence there.
        kernel = _kernel(silhouette)
        pad = (kernel.shape[0] - silhouette.shape[0]) // 2
        window = np.pad(_evidence(model, frame), pad)[y0 : y1 + 2 * pad, x0 : x1 + 2 * pad]
        contrast = float(np.sum(window * kernel))
        mixtures = model.gmm
        if mixtures is None:  # the backend tracks without them (refine="colour"): learn them
            rx0, ry0, rx1, ry1 = backend._model_roi(mask, frame)
            mixtures = ops.grabcut_models(frame.rgb[ry0:ry1, rx0:rx1], mask[ry0:ry1, rx0:rx1])
        agreement = _agreement(mixtures, frame.rgb, mask) if mixtures is not None else 0.0
        refs.append(
            Reference(number, model, int(mask.size), silhouette, contrast, mixtures, agreement)
        )
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
        """The region of `frame` that convinces as `ref`'s object (module docstring), or None.

        `occupied`: working-resolution pixels of followed objects (never taken)."""
        height, width = frame.shape
        # Sizes scale with the ratio of the two images' areas (working pixels).
        area_ratio = height * width / max(ref.pixels, 1)
        expected = ref.model.ref_area * area_ratio
        if expected < 4:
            return None
        # The reference's model, at the size it should have here.
        model = replace(ref.model, ref_area=expected, lost=False)
        evidence = _evidence(model, frame)
        evidence[occupied] = -0.5
        silhouette = ref.silhouette
        scale = math.sqrt(area_ratio)
        if abs(scale - 1.0) > 0.02:
            size = (
                max(1, int(round(silhouette.shape[1] * scale))),
                max(1, int(round(silhouette.shape[0] * scale))),
            )
            small = cv2.resize(silhouette.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
            silhouette = small.astype(bool)
        kernel = _kernel(silhouette)
        score = cv2.filter2D(evidence, -1, kernel, borderType=cv2.BORDER_CONSTANT)
        th, tw = kernel.shape
        pad = (th - silhouette.shape[0]) // 2
        ys, xs = np.nonzero(np.pad(silhouette, pad))
        best: Found | None = None
        for _ in range(CANDIDATES):
            cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)
            if score[cy, cx] <= max(0.0, CONTRAST * ref.contrast):
                break  # nothing there stands out as the object did on its reference
            # The next peak lies at least half the silhouette away (non-maximum suppression).
            score[
                max(0, cy - th // 2) : cy + th // 2 + 1, max(0, cx - tw // 2) : cx + tw // 2 + 1
            ] = -1
            py, px = ys + int(cy) - th // 2, xs + int(cx) - tw // 2
            keep = (py >= 0) & (py < height) & (px >= 0) & (px < width)
            placed = np.zeros((height, width), bool)
            placed[py[keep], px[keep]] = True
            placed &= ~occupied
            found = (
                self._check(ref, model, frame, placed, occupied, expected) if placed.any() else None
            )
            if found is not None:
                best = found  # the strongest peak that convinces
                break
        if best is None:
            return None
        grown = self._grow(ref, frame, best.mask, occupied)
        if grown is None:
            return best
        # The grown region must convince as much as the search's did.
        again = self._check(ref, model, frame, grown, occupied, expected, resegment=False)
        if again is not None and again.similarity >= best.similarity - 0.02:
            return again
        return best

    def _check(
        self,
        ref: Reference,
        model: _Track,
        frame: _Frame,
        region: BoolArray,
        occupied: BoolArray,
        expected: float,
        resegment: bool = True,
    ) -> Found | None:
        """`region` (re-segmented by the backend's colour + shape prior first, when asked) as
        `ref`'s object, if it passes the re-acquisition thresholds: area 0.3-3x `expected`,
        confidence >= `reacquire_confidence`, colour similarity >= `SIMILARITY`."""
        mask = region
        if resegment:
            result = self.backend._resegment(model, frame, region)
            if result is None:
                return None
            mask = result[0]
        mask = mask & ~occupied
        if not 0.3 <= float(np.count_nonzero(mask)) / expected <= MAX_AREA:
            return None
        confidence = self.backend._confidence(model, frame, mask)
        if confidence < self.backend.config.reacquire_confidence:
            return None
        similarity = float(np.sum(np.sqrt(ops.histogram(frame.bins, mask) * model.fg)))
        if similarity < max(SIMILARITY, self.backend.config.reacquire_similarity):
            return None
        # The histogram's coarse bins share a colour with much of a room; the mixtures' finer
        # colours must agree too (`AGREEMENT`).
        mixtures = ref.mixtures
        if mixtures is not None and _agreement(mixtures, frame.rgb, mask) < (
            AGREEMENT * ref.agreement
        ):
            return None
        return Found(mask, confidence, similarity, ref.reference)

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


def _evidence(model: _Track, frame: _Frame) -> FloatArray:
    """Per-pixel colour evidence of `model`'s object on `frame`, centred: > 0 where a pixel's
    colour is more the object's than the background's (float32 H x W, in (-0.5, 0.5))."""
    live = ops.normalize(frame.counts_all)
    bg = (1 - LIVE_BACKGROUND) * model.bg + LIVE_BACKGROUND * live
    evidence: FloatArray = ops.ratio_lut(model.fg, bg)[frame.bins] - np.float32(0.5)
    return evidence


def _kernel(silhouette: BoolArray) -> FloatArray:
    """The matched filter of a silhouette (float32, its shape padded by the ring's width on
    each side): the mean over the silhouette minus the mean over a ring around it (a region of
    the object's colours, of its shape, standing out). Not blurred: a soft kernel (Gaussian of
    0.05 x its size) let a synthetic star turned by 20 degrees be found, but the DAVIS dev
    absent-object pairs with a find went 1 -> 4 of 30. Turned by 10 degrees it is found."""
    pad = max(3, int(0.15 * max(silhouette.shape)))
    inside = np.pad(silhouette, pad)
    ring = ops.dilate(inside, pad) & ~inside
    n_in = float(max(1, int(np.count_nonzero(inside))))
    n_ring = float(max(1, int(np.count_nonzero(ring))))
    kernel: FloatArray = inside.astype(np.float32) / n_in - ring.astype(np.float32) / n_ring
    return kernel


def _mixture_density(model: npt.NDArray[np.float64], pixels: npt.NDArray[np.float64]) -> FloatArray:
    """Density (up to the constant (2 pi)^-1.5 both models share) of an OpenCV GrabCut colour
    mixture at `pixels` (float N x 3, the image's channel order: RGB here). `model`: GrabCut's
    1 x 65 float64 array (5 weights, 5 x 3 means, 5 x 3 x 3 covariances, as grabcut.cpp lays
    them out). Components with weight 0 or a singular covariance are skipped."""
    flat = np.asarray(model, np.float64).reshape(-1)
    weights, means, covs = flat[:5], flat[5:20].reshape(5, 3), flat[20:65].reshape(5, 3, 3)
    density = np.zeros(len(pixels), np.float64)
    for k in range(5):
        det = float(np.linalg.det(covs[k]))
        if weights[k] <= 0 or det <= 1e-12:
            continue
        d = pixels - means[k]
        mahalanobis = np.einsum("ni,ij,nj->n", d, np.linalg.inv(covs[k]), d)
        density += weights[k] * np.exp(-0.5 * mahalanobis) / math.sqrt(det)
    out: FloatArray = density.astype(np.float32)
    return out


def _agreement(models: ops.GrabCutModels, rgb: RgbImage, mask: BoolArray) -> float:
    """Share of `mask`'s pixels of `rgb` (RGB uint8 H x W x 3) whose colour is more likely
    under the object's mixture than under the background's (`models`: background, object, as
    `ops.grabcut_models` returns them). 0 for an empty mask."""
    pixels = rgb[mask].astype(np.float64)
    if len(pixels) == 0:
        return 0.0
    bgd, fgd = models
    return float(np.mean(_mixture_density(fgd, pixels) > _mixture_density(bgd, pixels)))
