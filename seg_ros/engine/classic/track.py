"""Frame-to-frame tracking operations of the classic backend (pure functions, no state).

One tracking step of an object, at the backend's working resolution:

1. Temporal prior: the previous mask is carried to the new frame by the dense optical flow,
   pulled back from the new frame to the old one (`propagate`): every new pixel takes the
   mask value where its flow says it came from. Articulated motion (a dancer's arm, a rider's
   leg) moves with the pixels instead of with one rigid transform, and the object cannot
   teleport: it only goes where its pixels went.
2. Appearance, object versus *local* background (`LocalColors`): the colour mean and variance
   of the object's pixels and of the background's pixels in a Gaussian neighbourhood of every
   point, on the previous frame, carried along by the same flow. A pixel is judged against the
   colours of the object and of the background *near it* (a white swan against dark water on
   one side, a white bank on the other side), which a single global colour model cannot do.
3. Boundary refinement in a narrow band: only pixels within `band` pixels of the propagated
   outline may change; the shape prior (a logistic of the signed distance to that outline)
   plus the local and global colour log-likelihood ratios decide them (`refine`). Background
   far from the object can never join it (no leak across the frame, no jump to a look-alike).

Coordinates are pixels of the working resolution (x right, y down); ROIs are (x0, y0, x1, y1)
with x1 / y1 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from seg_ros.engine.classic import ops
from seg_ros.engine.types import BoolArray, FloatArray

#: Variance floor of the local colour models (8-bit Lab units squared): sensor noise and JPEG.
_VAR_FLOOR = 16.0
#: Local log-likelihood ratios are clipped: one odd pixel must not outvote the shape prior.
_LLR_CLIP = 6.0


def flow_maps(flow_back: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Remap coordinates (x, y float32 maps) from a backward flow (new frame -> old frame)."""
    height, width = flow_back.shape[:2]
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    return (xs + flow_back[..., 0]).astype(np.float32), (ys + flow_back[..., 1]).astype(np.float32)


def propagate(
    prev: FloatArray, maps: tuple[FloatArray, FloatArray], roi: ops.Box, origin: tuple[int, int]
) -> FloatArray:
    """`prev` (float32, an image of the old frame whose pixel (0, 0) is old-frame pixel
    `origin`) sampled at the old positions of the new frame's pixels in `roi`. Channels kept;
    pixels coming from outside `prev` get 0."""
    x0, y0, x1, y1 = roi
    mx = maps[0][y0:y1, x0:x1] - float(origin[0])
    my = maps[1][y0:y1, x0:x1] - float(origin[1])
    out = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class LocalColors:
    """Per-pixel Gaussian colour models of the object and of the background around it.

    `stats` is float32 (h, w, 14): object mean (3), object variance (3), background mean (3),
    background variance (3), object sample weight, background sample weight — on the frame
    the models were learnt on, in the ROI whose top-left pixel is `origin`.
    """

    stats: FloatArray
    origin: tuple[int, int]


def learn_local(lab: FloatArray, mask: BoolArray, roi: ops.Box, sigma: float) -> LocalColors:
    """Local colour models from `lab` (float32 H x W x 3) and the object's `mask` in `roi`.

    The object's samples are its pixels one in from the outline, the background's the pixels
    one out: the outline itself is mixed (anti-aliasing, motion blur).
    """
    x0, y0, x1, y1 = roi
    sl = np.s_[y0:y1, x0:x1]
    local = mask[sl]
    img = lab[sl]
    parts = []
    weights = []
    for sample in (ops.erode(local, 1), ~ops.dilate(local, 1)):
        s = sample.astype(np.float32)
        stack = np.concatenate([img * s[..., None], img * img * s[..., None], s[..., None]], -1)
        blurred = _blur(stack, sigma)
        w = blurred[..., 6:7]
        safe = np.maximum(w, 1e-6)
        mean = blurred[..., 0:3] / safe
        var = np.maximum(blurred[..., 3:6] / safe - mean * mean, 0.0) + _VAR_FLOOR
        parts += [mean, var]
        weights.append(w)
    stats = np.concatenate([*parts, *weights], -1).astype(np.float32)
    return LocalColors(stats, (x0, y0))


def _blur(stack: FloatArray, sigma: float) -> FloatArray:
    """Gaussian blur of every channel (OpenCV filters at most 4 channels at once)."""
    out = np.empty_like(stack)
    for c in range(0, stack.shape[-1], 4):
        part = np.ascontiguousarray(stack[..., c : c + 4])
        res = cv2.GaussianBlur(part, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        out[..., c : c + 4] = res.reshape(part.shape)
    return out


def local_llr(lab: FloatArray, stats: FloatArray) -> FloatArray:
    """Log-likelihood ratio object : background of every pixel of `lab` (h x w x 3) under the
    local models `stats` (h x w x 14, already aligned with `lab`); 0 where a side has no
    sample nearby."""
    mf, mb = stats[..., 0:3], stats[..., 6:9]
    # Flowed in from outside the learnt ROI: zeros; the floor keeps those pixels finite (and
    # their zero weights mark them unknown below).
    vf = np.maximum(stats[..., 3:6], _VAR_FLOOR)
    vb = np.maximum(stats[..., 9:12], _VAR_FLOOR)
    df = ((lab - mf) ** 2 / vf + np.log(vf)).sum(-1)
    db = ((lab - mb) ** 2 / vb + np.log(vb)).sum(-1)
    llr = 0.5 * (db - df)
    known = (stats[..., 12] > 0.02) & (stats[..., 13] > 0.02)
    out = np.where(known, np.clip(llr, -_LLR_CLIP, _LLR_CLIP), 0.0)
    return out.astype(np.float32)


def refine(
    predicted: BoolArray,
    colour_llr: FloatArray,
    softness: float,
    band: int,
    smooth: float = 1.0,
) -> tuple[BoolArray, FloatArray]:
    """The new mask near `predicted` (both ROI-sized) from the shape prior and colour.

    Returns (mask, logit): the logit is the object's log-odds per pixel (used to settle pixels
    two objects claim). Pixels farther than `band` from the predicted outline keep the
    prediction (band <= 0: no limit).
    """
    sd = ops.signed_distance(predicted)
    raw = (sd / max(softness, 1e-3) + colour_llr).astype(np.float32)
    if smooth > 0:
        raw = np.asarray(cv2.GaussianBlur(raw, (0, 0), smooth), dtype=np.float32)
    logit: FloatArray = raw
    mask: BoolArray = logit > 0
    if band > 0:
        mask = np.where(np.abs(sd) > band, predicted, mask)
        logit = np.where(np.abs(sd) > band, np.sign(sd) * 20.0, logit).astype(np.float32)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, ops.disc(1)).astype(bool)
    core = ops.erode(predicted, 2)
    mask = ops.fill_holes(ops.keep_components(mask, core if core.any() else None, 0.15))
    return mask, logit


def refine_grabcut(
    rgb: npt.NDArray[np.uint8],
    predicted: BoolArray,
    band: int,
    colour_llr: FloatArray,
    models: ops.GrabCutModels | None = None,
) -> tuple[BoolArray, FloatArray]:
    """The new mask near `predicted` (the tracker passes the colour answer) by one GrabCut
    iteration restricted to the band: pixels farther than `band` inside it are sure object,
    farther outside sure background; the colour models are learnt in the ROI, the cut follows
    image edges."""
    sd = ops.signed_distance(predicted)
    labels = np.where(predicted, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    labels[sd > band] = cv2.GC_FGD
    labels[sd < -band] = cv2.GC_BGD
    out = ops.grabcut(np.ascontiguousarray(rgb), labels, 1, models)
    mask = predicted.copy() if out is None else ((out == cv2.GC_FGD) | (out == cv2.GC_PR_FGD))
    core = ops.erode(predicted, 2)
    mask = ops.fill_holes(ops.keep_components(mask, core if core.any() else None, 0.15))
    logit = (np.where(mask, 1.0, -1.0) * (1.0 + np.abs(sd))).astype(np.float32)
    return mask, logit
