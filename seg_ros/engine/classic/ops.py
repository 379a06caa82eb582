"""Image operations of the classic backend: colour models, GrabCut from prompts, mask tracking.

Pure functions on numpy arrays (OpenCV inside), no state: `classic.py` keeps the per-object
state and calls these. Every image here is at the backend's *working* resolution; coordinates
are pixels of that resolution (x right, y down).

Colour model: pixels are quantised in CIE Lab (8-bit OpenCV Lab) to 4 x 16 x 16 bins: coarse in
lightness, fine in chroma, so that a change of light moves few pixels across bins. A model is a
normalised, lightly smoothed histogram (float32, `N_BINS`). The foreground / background ratio
`fg / (fg + bg)` of a pixel's bin is its colour evidence of belonging to the object.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from seg_ros.engine.types import BinImage, BoolArray, FloatArray, RgbImage

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; x1 / y1 exclusive

L_BINS, A_BINS, B_BINS = 4, 16, 16
N_BINS = L_BINS * A_BINS * B_BINS
#: Evidence is kept away from 0 and 1: a single bin must never veto the shape prior.
_EPS = 0.03


# ------------------------------------------------------------------------------ colour model
def color_bins(rgb: RgbImage) -> BinImage:
    """Colour bin index (int32, H x W) of every pixel of an RGB uint8 image."""
    return bins_of_lab(np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB), dtype=np.uint8))


def bins_of_lab(lab: npt.NDArray[np.uint8]) -> BinImage:
    """Colour bin index (int32, H x W) of every pixel of an 8-bit OpenCV Lab image."""
    l_q = lab[..., 0] >> 6  # 256 / L_BINS = 64
    a_q = lab[..., 1] >> 4
    b_q = lab[..., 2] >> 4
    out: BinImage = (
        l_q.astype(np.int32) * (A_BINS * B_BINS) + a_q.astype(np.int32) * B_BINS + b_q
    ).astype(np.int32)
    return out


def _smooth(hist: FloatArray) -> FloatArray:
    """Blur a histogram by one bin along each chroma axis (sparse samples generalise)."""
    h = hist.reshape(L_BINS, A_BINS, B_BINS)
    out = h * 0.5
    out[:, 1:, :] += 0.125 * h[:, :-1, :]
    out[:, :-1, :] += 0.125 * h[:, 1:, :]
    out[:, :, 1:] += 0.125 * h[:, :, :-1]
    out[:, :, :-1] += 0.125 * h[:, :, 1:]
    return out.reshape(-1).astype(np.float32)


def counts(bins: BinImage, where: BoolArray | None = None) -> FloatArray:
    """Raw bin counts (float32, N_BINS) of the pixels `where` is True (all when None)."""
    sample = bins.reshape(-1) if where is None else bins[where]
    out: FloatArray = np.bincount(sample, minlength=N_BINS).astype(np.float32)
    return out


def normalize(raw: FloatArray) -> FloatArray:
    """Counts -> a smoothed histogram summing to 1 (uniform when there is no count)."""
    total = float(raw.sum())
    if total <= 0:
        return np.full(N_BINS, 1.0 / N_BINS, np.float32)
    smooth = _smooth(raw) + 1e-3 / N_BINS * total
    out: FloatArray = (smooth / smooth.sum()).astype(np.float32)
    return out


def histogram(bins: BinImage, where: BoolArray | None = None) -> FloatArray:
    """Normalised, smoothed colour histogram of the pixels `where` is True (all when None).

    An empty selection gives the uniform histogram (no information)."""
    return normalize(counts(bins, where))


def mean_evidence(lut: FloatArray, bins: BinImage, mask: BoolArray) -> float:
    """Mean per-bin evidence `lut` over the pixels of `mask` (0 when empty)."""
    sample = bins[mask]
    return float(lut[sample].mean()) if sample.size else 0.0


def ratio_lut(fg: FloatArray, bg: FloatArray) -> FloatArray:
    """Per-bin colour evidence fg / (fg + bg), clipped to [_EPS, 1 - _EPS]."""
    r = fg / np.maximum(fg + bg, 1e-12)
    out: FloatArray = np.clip(r, _EPS, 1 - _EPS).astype(np.float32)
    return out


# ------------------------------------------------------------------------------ geometry
def clip_box(box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def expand_box(box: Box, margin: int, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return clip_box((x0 - margin, y0 - margin, x1 + margin, y1 + margin), width, height)


def mask_box(mask: BoolArray) -> Box | None:
    """Tight box of a mask, x1 / y1 exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def disc(radius: int) -> npt.NDArray[np.uint8]:
    """A filled disc structuring element of the given radius (>= 0)."""
    r = max(0, int(radius))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return np.asarray(kernel, dtype=np.uint8)


def dilate(mask: BoolArray, radius: int) -> BoolArray:
    if radius <= 0:
        return mask.copy()
    return cv2.dilate(mask.astype(np.uint8), disc(radius)).astype(bool)


def erode(mask: BoolArray, radius: int) -> BoolArray:
    if radius <= 0:
        return mask.copy()
    return cv2.erode(mask.astype(np.uint8), disc(radius)).astype(bool)


def fill_holes(mask: BoolArray) -> BoolArray:
    """The mask with every background region that does not touch the border filled."""
    if not mask.any():
        return mask
    inv = np.pad(~mask, 1, constant_values=True).astype(np.uint8)
    cv2.floodFill(inv, None, (0, 0), 0)  # background reachable from outside -> 0
    out: BoolArray = mask | inv[1:-1, 1:-1].astype(bool)
    return out


def keep_components(
    mask: BoolArray, seeds: BoolArray | None, min_fraction: float = 0.0
) -> BoolArray:
    """The connected components of `mask` that touch `seeds`; without any, the largest one.

    Kept components smaller than `min_fraction` of the largest kept one are dropped (clutter).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    keep = np.zeros(n, dtype=bool)
    if seeds is not None and seeds.any():
        keep[np.unique(labels[seeds & mask])] = True
        keep[0] = False
    if not keep.any():
        keep[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))] = True
    if min_fraction > 0:
        areas = stats[:, cv2.CC_STAT_AREA]
        keep &= areas >= min_fraction * int(areas[keep].max())
    out: BoolArray = keep[labels]
    return out


def touches_border(mask: BoolArray, box: Box, width: int, height: int) -> bool:
    """Whether `mask` (box-local) reaches a side of `box` that lies inside the image."""
    x0, y0, x1, y1 = box
    return bool(
        (x0 > 0 and mask[:, 0].any())
        or (y0 > 0 and mask[0, :].any())
        or (x1 < width and mask[:, -1].any())
        or (y1 < height and mask[-1, :].any())
    )


# ------------------------------------------------------------------------------ GrabCut
@dataclass(frozen=True)
class Seeds:
    """Hard constraints of a prompt at working resolution (full-frame bool masks)."""

    fg: BoolArray
    bg: BoolArray

    @staticmethod
    def empty(height: int, width: int) -> Seeds:
        z = np.zeros((height, width), dtype=bool)
        return Seeds(z, z.copy())

    def union(self, other: Seeds) -> Seeds:
        return Seeds(self.fg | other.fg, self.bg | other.bg)


def point_seeds(
    points: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int8],
    height: int,
    width: int,
    radius: int,
) -> Seeds:
    """Discs of `radius` around foreground (1) and background (0) points (working pixels)."""
    fg = np.zeros((height, width), np.uint8)
    bg = np.zeros((height, width), np.uint8)
    for (x, y), lab in zip(points.tolist(), labels.tolist(), strict=True):
        c = (min(width - 1, int(x)), min(height - 1, int(y)))
        cv2.circle(fg if lab == 1 else bg, c, radius, 1, -1)
    bgm = bg.astype(bool)
    return Seeds(fg.astype(bool) & ~bgm, bgm)


GrabCutModels = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def grabcut(
    rgb: RgbImage,
    labels: npt.NDArray[np.uint8],
    iterations: int,
    models: GrabCutModels | None = None,
) -> npt.NDArray[np.uint8] | None:
    """OpenCV GrabCut initialised from a GC_* label image; the final labels, or None when the
    labels hold no foreground or no background sample (GrabCut cannot learn its models).
    With `models` (background, foreground: see grabcut_models) one cut with those models
    frozen, none learnt."""
    fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not fg.any() or fg.all() or labels.shape[0] < 2 or labels.shape[1] < 2:
        return None
    out = labels.copy()
    if models is not None:
        try:
            cv2.grabCut(
                rgb, out, None, models[0].copy(), models[1].copy(), 1, cv2.GC_EVAL_FREEZE_MODEL
            )  # type: ignore[call-overload]
        except cv2.error:
            return None
        return out
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    # GrabCut seeds its colour models with k-means from OpenCV's (thread-local) RNG: seeding it
    # makes a prompt's mask reproducible.
    cv2.setRNGSeed(12345)
    try:
        cv2.grabCut(rgb, out, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error:  # degenerate colour samples (e.g. fewer pixels than GMM components)
        return None
    return out


def grabcut_models(rgb: RgbImage, mask: BoolArray) -> GrabCutModels | None:
    """GrabCut's colour models (background, foreground Gaussian mixtures) learnt from `mask`
    against the rest of `rgb`; None when either side is empty or degenerate."""
    if not mask.any() or mask.all():
        return None
    labels = np.where(mask, cv2.GC_PR_FGD, cv2.GC_BGD).astype(np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(12345)
    try:
        cv2.grabCut(np.ascontiguousarray(rgb), labels, None, bgd, fgd, 0, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    except cv2.error:
        return None
    return bgd, fgd


def _result(labels: npt.NDArray[np.uint8]) -> BoolArray:
    out: BoolArray = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return out


def segment_box(rgb: RgbImage, box: Box, seeds: Seeds, iterations: int) -> BoolArray:
    """GrabCut in a box: outside is background, inside probably foreground, seeds are hard.

    The colour models learn from a margin around the box, so the background model knows what
    surrounds the object. Returns the full-frame mask.
    """
    height, width = rgb.shape[:2]
    x0, y0, x1, y1 = clip_box(box, width, height)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return np.zeros((height, width), bool)
    margin = max(6, int(0.25 * max(x1 - x0, y1 - y0)))
    rx0, ry0, rx1, ry1 = expand_box((x0, y0, x1, y1), margin, width, height)
    labels = np.full((ry1 - ry0, rx1 - rx0), cv2.GC_BGD, np.uint8)
    labels[y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0] = cv2.GC_PR_FGD
    sl = np.s_[ry0:ry1, rx0:rx1]
    labels[seeds.fg[sl]] = cv2.GC_FGD
    labels[seeds.bg[sl]] = cv2.GC_BGD
    crop = np.ascontiguousarray(rgb[sl])
    inner = (x0 - rx0, y0 - ry0, x1 - rx0, y1 - ry0)
    mask = np.zeros((height, width), bool)
    # A box drawn around an object touches it on all four sides ("tightness"). GrabCut on a
    # low-contrast object (its colours also in the surroundings) often collapses onto a part
    # (a head, a shirt, a patch of fur) touching one or two, and its result changes a lot with
    # the number of iterations. Tried in turn: GrabCut after `iterations`, 2 and 1 iterations,
    # then the colour-ratio guess (box against its ring); the first "tight" one (touching >= 3
    # sides, filling 20-95 % of the box) is taken; failing all, the one touching most sides,
    # then filling most.
    best: tuple[tuple[float, float, float], BoolArray] | None = None
    for count in sorted({iterations, min(iterations, 2), 1}, reverse=True):
        out = grabcut(crop, labels, count)
        if out is None:
            continue
        local = fill_holes(_components(_result(out), seeds.fg[sl])) & ~seeds.bg[sl]
        key = _tightness_key(local, inner)
        if key[0] > 0:
            mask[sl] = local  # the first tight cut (most iterations: follows edges best)
            return mask
        if best is None or key > best[0]:
            best = (key, local)
    ring = labels == cv2.GC_BGD
    b = bins_of_lab(np.asarray(cv2.cvtColor(crop, cv2.COLOR_RGB2LAB), dtype=np.uint8))
    lut = ratio_lut(histogram(b, ~ring), histogram(b, ring))
    guess = (cv2.GaussianBlur(lut[b], (5, 5), 0) > 0.5) & ~ring
    local = fill_holes(_components(guess, seeds.fg[sl])) & ~seeds.bg[sl]
    key = _tightness_key(local, inner)
    if best is None or key > best[0]:
        best = (key, local)
    mask[sl] = best[1]
    return mask


def _tightness_key(mask: BoolArray, box: Box) -> tuple[float, float, float]:
    """(1 when tight: >= 3 sides touched and 20-95 % of the box filled, sides, fill)."""
    sides, fill = _tightness(mask, box)
    return float(sides >= 3 and 0.2 <= fill <= 0.95), float(sides), fill


def _components(mask: BoolArray, seeds: BoolArray) -> BoolArray:
    """The components touching the seeds, or without seeds every component at least a
    fifth of the largest (a pole in front of a dog splits it in two)."""
    if seeds.any():
        return keep_components(mask, seeds)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0
    keep = areas >= 0.2 * areas.max()
    keep[0] = False
    out: BoolArray = keep[labels]
    return out


def _tightness(mask: BoolArray, box: Box) -> tuple[int, float]:
    """(sides of `box` the mask comes within 4 % of the box's size of, fraction of the box it
    fills)."""
    x0, y0, x1, y1 = box
    inside = mask[y0:y1, x0:x1]
    bb = mask_box(inside)
    if bb is None:
        return 0, 0.0
    w, h = x1 - x0, y1 - y0
    tx, ty = max(1, int(0.04 * w)), max(1, int(0.04 * h))
    sides = int(bb[0] <= tx) + int(bb[1] <= ty) + int(bb[2] >= w - tx) + int(bb[3] >= h - ty)
    return sides, float(np.count_nonzero(inside)) / float(max(1, w * h))


def segment_seeds(
    rgb: RgbImage,
    bins: BinImage,
    seeds: Seeds,
    iterations: int,
    prior: BoolArray | None = None,
    window: int = 0,
) -> BoolArray:
    """GrabCut from sparse seeds (clicks, scribbles), optionally around a prior mask.

    Without a prior, the initial foreground guess is the region around the foreground seeds
    whose colours resemble the seeds' more than the window border's. The window (a square of
    half-side `window` around the seeds) grows while the result runs into its inner sides, so
    large objects are found whole. With a prior (a refinement), the prior is the initial guess
    and the seeds correct it.
    """
    height, width = bins.shape
    if window <= 0:
        window = max(12, int(0.28 * min(height, width)))
    focus = seeds.fg if prior is None else (prior | seeds.fg | seeds.bg)
    fbox = mask_box(focus)
    if fbox is None:
        return np.zeros((height, width), bool)
    result = np.zeros((height, width), bool)
    for _ in range(3):
        if prior is None:
            cx, cy = (fbox[0] + fbox[2]) // 2, (fbox[1] + fbox[3]) // 2
            half_w = max(window, (fbox[2] - fbox[0]) // 2 + window // 2)
            half_h = max(window, (fbox[3] - fbox[1]) // 2 + window // 2)
            roi = clip_box((cx - half_w, cy - half_h, cx + half_w, cy + half_h), width, height)
        else:
            margin = max(6, int(0.35 * max(fbox[2] - fbox[0], fbox[3] - fbox[1])))
            roi = expand_box(fbox, margin, width, height)
        x0, y0, x1, y1 = roi
        sl = np.s_[y0:y1, x0:x1]
        b = bins[sl]
        fg_seed, bg_seed = seeds.fg[sl], seeds.bg[sl]
        border = np.zeros(b.shape, bool)
        t = 3
        if x0 > 0:
            border[:, :t] = True
        if y0 > 0:
            border[:t, :] = True
        if x1 < width:
            border[:, -t:] = True
        if y1 < height:
            border[-t:, :] = True
        if prior is None:
            guess = _color_guess(b, fg_seed, bg_seed | border)
        else:
            guess = prior[sl] & ~_bg_click_regions(b, prior[sl], bg_seed)
        labels = np.where(guess, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        labels[border & ~guess] = cv2.GC_BGD
        labels[fg_seed] = cv2.GC_FGD
        labels[bg_seed] = cv2.GC_BGD
        out = grabcut(np.ascontiguousarray(rgb[sl]), labels, iterations)
        local = guess if out is None else _result(out)
        local = fill_holes(keep_components(local, fg_seed if fg_seed.any() else guess))
        if np.count_nonzero(local) < 0.3 * np.count_nonzero(guess):
            # GrabCut collapsed onto the seeds (a poor k-means start on few colours): the
            # colour guess is the better answer.
            local = fill_holes(keep_components(guess, fg_seed if fg_seed.any() else guess))
        local &= ~bg_seed
        result = np.zeros((height, width), bool)
        result[sl] = local
        if prior is not None or not touches_border(local, roi, width, height):
            break
        window = int(window * 1.8)
    return result


def _color_guess(bins: BinImage, fg_seed: BoolArray, bg_sample: BoolArray) -> BoolArray:
    """Pixels connected to the foreground seeds whose colour favours the seeds' over the
    background sample's (smoothed evidence > 0.5)."""
    if not fg_seed.any():
        return np.zeros(bins.shape, bool)
    # Sample colours a little around each click: one pixel's colour says little on a texture.
    sample = dilate(fg_seed, 2) & ~bg_sample
    lut = ratio_lut(histogram(bins, sample), histogram(bins, bg_sample))
    evidence = cv2.GaussianBlur(lut[bins], (5, 5), 0)
    guess = evidence > 0.5
    guess = cv2.morphologyEx(guess.astype(np.uint8), cv2.MORPH_OPEN, disc(1)).astype(bool)
    guess |= fg_seed
    return keep_components(guess, fg_seed) | fg_seed


def _bg_click_regions(bins: BinImage, prior: BoolArray, bg_seed: BoolArray) -> BoolArray:
    """Parts of `prior` a background click designates: connected to the click, coloured like
    the click's neighbourhood rather than like the rest of the prior."""
    inside = bg_seed & prior
    if not inside.any():
        return np.zeros(prior.shape, bool)
    sample = dilate(inside, 2) & prior
    lut = ratio_lut(histogram(bins, sample), histogram(bins, prior & ~sample))
    evidence = cv2.GaussianBlur(lut[bins], (5, 5), 0)
    region = (evidence > 0.5) & prior
    return keep_components(region | inside, inside)


# ------------------------------------------------------------------------------ tracking
@dataclass(frozen=True)
class Motion:
    """A similarity transform (2 x 3 float32, working pixels) and how well the flow agreed."""

    matrix: FloatArray
    inlier_ratio: float


def estimate_motion(mask: BoolArray, flow: FloatArray, max_points: int = 400) -> Motion:
    """Fit a similarity transform to the dense flow sampled inside `mask` (RANSAC).

    Samples come from the mask's interior (one pixel in), where flow is not smeared across the
    object's edge. With too few samples or no consensus the median flow is a translation.
    """
    identity = Motion(np.array([[1, 0, 0], [0, 1, 0]], np.float32), 0.0)
    box = mask_box(mask)
    if box is None:
        return identity
    x0, y0, x1, y1 = box
    local = mask[y0:y1, x0:x1]
    core = erode(local, 1)
    if np.count_nonzero(core) < 12:
        core = local
    ys, xs = np.nonzero(core)
    step = max(1, ys.size // max_points)
    ys, xs = ys[::step] + y0, xs[::step] + x0
    d = flow[ys, xs]
    src = np.stack([xs, ys], axis=1).astype(np.float32)
    dst = src + d
    med = np.median(d, axis=0)
    translation = np.array([[1, 0, med[0]], [0, 1, med[1]]], np.float32)
    if src.shape[0] < 8:
        return Motion(translation, 1.0)
    matrix, inliers = cv2.estimateAffinePartial2D(
        src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0, maxIters=200, confidence=0.98
    )
    if matrix is None or inliers is None:
        return Motion(translation, 0.0)
    ratio = float(np.count_nonzero(inliers)) / len(inliers)
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    if not (0.8 <= scale <= 1.25) or ratio < 0.3:
        # A wild fit (few points on the object agree): trust the median translation.
        return Motion(translation, ratio)
    return Motion(matrix.astype(np.float32), ratio)


def warp_mask(mask: BoolArray, motion: Motion) -> BoolArray:
    """`mask` moved by `motion` (bilinear, re-thresholded), computed only where it lands."""
    height, width = mask.shape
    out = np.zeros((height, width), bool)
    box = mask_box(mask)
    if box is None:
        return out
    x0, y0, x1, y1 = box
    m = motion.matrix.astype(np.float64)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ m.T
    dx0, dy0 = np.floor(corners.min(axis=0)).astype(int) - 2
    dx1, dy1 = np.ceil(corners.max(axis=0)).astype(int) + 2
    dx0, dy0, dx1, dy1 = clip_box((int(dx0), int(dy0), int(dx1), int(dy1)), width, height)
    if dx1 <= dx0 or dy1 <= dy0:
        return out  # moved off the frame
    # Source patch at (x0, y0), destination patch at (dx0, dy0): shift the transform to match.
    shifted = m.copy()
    shifted[:, 2] += m[:, 0] * x0 + m[:, 1] * y0 - np.array([dx0, dy0], np.float64)
    patch = cv2.warpAffine(
        mask[y0:y1, x0:x1].astype(np.uint8) * 255,
        shifted.astype(np.float32),
        (dx1 - dx0, dy1 - dy0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    out[dy0:dy1, dx0:dx1] = patch > 127
    return out


def signed_distance(mask: BoolArray) -> FloatArray:
    """Pixels inside the mask: distance to the outside (> 0); outside: minus distance in."""
    m = mask.astype(np.uint8)
    inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    return (inside - outside).astype(np.float32)


def posterior(evidence: FloatArray, predicted: BoolArray, softness: float) -> FloatArray:
    """Foreground probability from colour evidence and a predicted mask as shape prior.

    The prior is a logistic of the signed distance to the predicted outline, `softness` pixels
    wide: near the predicted edge colour decides, far inside or outside the prediction only
    colour that strongly disagrees can flip a pixel.
    """
    sd = signed_distance(predicted)
    prior = 1.0 / (1.0 + np.exp(-sd / max(softness, 1e-3)))
    prior = np.clip(prior, 0.02, 0.98)
    num = evidence * prior
    out: FloatArray = (num / (num + (1 - evidence) * (1 - prior))).astype(np.float32)
    return out


def mean_over(values: FloatArray, mask: BoolArray) -> float:
    n = int(np.count_nonzero(mask))
    return float(values[mask].sum()) / n if n else 0.0


def guided_filter(guide: FloatArray, src: FloatArray, radius: int, eps: float) -> FloatArray:
    """Edge-preserving smoothing of `src` (H x W) steered by a colour `guide` (H x W x 3,
    values in 0..1): the colour guided filter of He, Sun and Tang (ECCV 2010). In every
    (2 radius + 1)^2 window the output is a linear function of the guide's colour, fitted to
    `src` by ridge regression (`eps` the ridge): a soft mask's transitions move onto the
    image's colour edges."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = np.asarray(
            cv2.boxFilter(x, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)
        )
        return out

    g = np.asarray(guide, np.float32)
    p = np.asarray(src, np.float32)
    mu = [mean(g[..., i]) for i in range(3)]
    mp = mean(p)
    cov = [mean(g[..., i] * p) - mu[i] * mp for i in range(3)]

    def var(i: int, j: int) -> np.ndarray:
        v: np.ndarray = mean(g[..., i] * g[..., j]) - mu[i] * mu[j]
        return v + np.float32(eps) if i == j else v

    # The windows' 3 x 3 colour covariances (symmetric) inverted by cofactors.
    a, b, c = var(0, 0), var(0, 1), var(0, 2)
    d, e, f = var(1, 1), var(1, 2), var(2, 2)
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * i00 + b * i01 + c * i02
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    k0 = (i00 * cov[0] + i01 * cov[1] + i02 * cov[2]) / det
    k1 = (i01 * cov[0] + i11 * cov[1] + i12 * cov[2]) / det
    k2 = (i02 * cov[0] + i12 * cov[1] + i22 * cov[2]) / det
    offset = mp - k0 * mu[0] - k1 * mu[1] - k2 * mu[2]
    out = mean(k0) * g[..., 0] + mean(k1) * g[..., 1] + mean(k2) * g[..., 2] + mean(offset)
    return np.asarray(out, np.float32)
