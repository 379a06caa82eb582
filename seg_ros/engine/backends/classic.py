"""The weight-free backend: GrabCut from prompts, optical flow + colour models to track.

No model, no weights, CPU real time. What it does with each request:

* Prompts (at the working resolution, `ClassicConfig.work_size` on the long side):
  - a box: GrabCut with the box as "probably object", its surroundings as background, and any
    points as hard foreground / background seeds; a cut that does not touch at least three of
    the box's sides (collapsed onto a part) is retried with fewer iterations, then replaced by
    the colour ratio of the box against its surroundings;
  - points or a scribble: GrabCut seeded by the clicks (discs) / strokes, initialised with the
    region around the clicks whose colours resemble theirs; the search window grows while the
    object runs into it;
  - a refinement (points on a tracked object, same frame): GrabCut from the current mask with
    every click of this frame as a hard seed;
  - a full mask: taken as the object.
  A click's answer covering more than a fifth of the frame (it ran over look-alike
  surroundings) is replaced by GrabCut in a box around the click. One image often does not
  tell an object from its surroundings (a black swan on dark water): a box or a click is
  then *settled by motion* on the next `settle_frames` frames on which its region moves (a
  still opening is waited out, `_SETTLE_PATIENCE`), re-segmented in the prompt's
  region from what moves unlike the background, and its colour models learnt again.
  Each object then keeps a colour model (Lab histogram of its pixels) and one of the rest of
  the frame.
* Tracking, per frame (classic/track.py): one dense optical flow (DIS, "medium") from the new
  frame back to the previous one; per object the previous mask is pulled along it pixel by
  pixel (the temporal prior: the object goes where its pixels went, it cannot teleport); only
  when the flow inside the mask disagrees with itself does mean shift on the object's colours
  correct it. Pixels of the prediction that move like the background (one affine map fitted
  to the flow around the object: camera pan, zoom) are cut from it, when the object itself
  moves otherwise: a leaked edge is no longer dragged along with the camera. Then pixels
  within `band` of the carried outline are re-decided from the shape prior, the colour
  log-likelihood ratio (the object's prompt-time model against the background's and its
  surroundings') and the motion vote; pixels farther out keep the prediction, and a mask
  larger than twice the object's flow-scaled reference area may not grow (leaks). Pixels two
  objects claim go to the one with the higher log-odds, and at full resolution each pixel
  belongs to at most one object (the more confident).
* Confidence comes from how well the mask's colours still fit the object's model and how its
  area compares with the reference area. An object whose confidence drops below
  `lost_confidence` (area collapse when it leaves the frame or hides, colours of an occluder)
  is reported lost (visible = False, empty mask); while lost it is searched for on every frame
  by its colour model (back-projection), and re-acquired only on strong evidence: a candidate
  region near where it was lost (reach growing with the frames hidden), of a plausible size
  (0.3-3x its reference area, after re-segmentation too), that re-segments with at least
  `reacquire_confidence` and whose colour histogram matches the object's (Bhattacharyya
  coefficient >= `reacquire_similarity`: a region of only some of its colours is not it).
  Otherwise it stays lost, with its id; a candidate refused for its colour distribution is
  remembered as a look-alike and cut out of every later candidate while the object is lost
  (and out of its mask for `_LOOKALIKE_FRAMES` after it is found): its histogram wavers
  around the threshold from frame to frame. An object shrinking below `occluded_fraction` of
  its reference area against another followed object is going behind it: lost, rather than
  drawn as a remnant on the occluder's edge.

Scores are calibrated so that 0.5 is the backend's own "lost" threshold: a visible object
scores in [0.5, 1], a lost one below 0.5 (a session threshold of 0.5 agrees with `visible`).

Recent frames (`ClassicConfig.history_frames`, 30 by default) are kept at working
resolution, so that a prompt may name a frame the user actually saw: the object is segmented on
that frame and carried forward through the kept frames to the latest one (one optical flow and
one tracking step per frame in between). Cost: about 0.5 MB of memory per kept frame at the
default 320-pixel working size (15 MB for 30), and a prompt on a frame k frames back takes
about k x 15 ms longer to answer on a 2-core CPU (the frames since are re-tracked).
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import cv2
import numpy as np

from seg_ros.engine.backends.base import Backend, Capabilities, MaskOutput, Model, ReferenceOutput
from seg_ros.engine.classic import ops
from seg_ros.engine.classic import track as trk
from seg_ros.engine.classic.reference import References
from seg_ros.engine.config import BackendConfig, BackendOptions
from seg_ros.engine.errors import PromptError, backend_errors
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.types import BinImage, BoolArray, FloatArray, RgbImage

_FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


#: Settling by motion needs a region at least this many working pixels on its short side:
#: on a smaller one the flow's patches (8 pixels for DIS "medium") smear the object's motion
#: over its surroundings (drift-chicane's car, 20 pixels tall, took in its own smoke: box J
#: 0.49 -> 0.11).
_SETTLE_MIN_SIDE = 24

#: A click's answer covering more than this fraction of the frame ran over look-alike
#: surroundings (on the DAVIS dev subset: the camel's click took the sand, 70 % of the frame);
#: it is replaced by GrabCut in a box of half-side `_CLICK_BOX` x the frame's diagonal around
#: the click. Measured on every 10th frame of the 6 dev clips (42 images), first-frame click
#: J 0.277 -> 0.330 (0.08 of the diagonal: 0.332; thresholds 0.1-0.3 of the frame alike).
_CLICK_LEAK = 0.2
_CLICK_BOX = 0.1

#: A re-acquisition candidate may be at most this many times the object's reference area.
_REACQUIRE_MAX_AREA = 3.0

#: ... and its centre at most this many times the object's size (square root of its reference
#: area) from where it was lost, however long it was hidden (the reach grows from 1.5 by 0.15
#: a frame). A cap of 2.0 cost DAVIS dev bmx-trees mask J 0.282 -> 0.262 (the rider re-found
#: farther away) and refused the bedroom boy coming back beside the girl (1.2 sizes away,
#: once the refused cushion is cut out of the candidate: `_Track.lookalike`).
_REACQUIRE_REACH = 4.0

#: A remembered look-alike (`_Track.lookalike`, each connected region) is forgotten when more
#: than `_LOOKALIKE_CHANGED` of its pixels change their grey level by more than
#: `_LOOKALIKE_CHANGE` from one search to the next: what was refused there is no longer what is
#: there (the object itself may have come back to that place; the part of it that shares the
#: look-alike's colours does not change, hence regions, not pixels). Gradual changes (the
#: bedroom cushion shaded as the children shake the bed) keep it.
_LOOKALIKE_CHANGE = 40
_LOOKALIKE_CHANGED = 0.3

#: Settling (`ClassicConfig.settle_frames`) counts only frames on which something moves in the
#: prompt's region; it waits at most this many frames for motion (a still camera on a still
#: scene, or a camera driver re-sending one frame, shows nothing the prompt's frame did not),
#: then gives up. 90 frames: 3 s at 30 fps, 6 s at 15.
_SETTLE_PATIENCE = 90
#: ... where the 99th percentile of the flow's magnitude in the settling region is below this
#: (working pixels): nothing there moved.
_STILL_FLOW = 0.25

#: Regrowing (`ClassicConfig.regrow_reach`) starts when the mask is smaller than this fraction
#: of the object's reference area (a fifth of it is missing); on the DAVIS dev subset at 1.0
#: (always, up to the reference area) box J on blackswan dropped 0.733 -> 0.706 (a box's
#: reference area takes in water: the swan's reflection, moving with it, was added).
_REGROW_BELOW = 0.8
#: Regrown regions farther than this many object sizes from the mask are not taken where a
#: lost object may be (`ClassicBackend._regrow`), for `_LOST_ZONE_FRAMES` after its loss.
_REGROW_NEAR = 0.3
_LOST_ZONE_FRAMES = 150

#: After a re-acquisition, the look-alikes refused while the object was lost stay out of its
#: mask for this many frames (2 s at 15 fps; they are where they were refused: in image
#: coordinates, so not for long).
_LOOKALIKE_FRAMES = 30

#: Slipped onto the background (`ClassicBackend._slipped`): an object that moved against the
#: background by at least `_SLIP_FROM` x `motion_gate` on one of the last `_SLIP_WINDOW`
#: frames now moves like it (< `motion_gate`), while the background itself moves by at least
#: `_SLIP_BACKGROUND` working pixels a frame (a panning camera; with a still one a mask on the
#: background and a stopped object look alike).
_SLIP_WINDOW = 3
_SLIP_FROM = 4.0
_SLIP_BACKGROUND = 2.0

#: An object's reference area never exceeds `_REF_SLACK` x its largest mask of the last
#: `_REF_MEMORY` frames it was followed (`ClassicBackend._follow`).
_REF_SLACK = 1.5
_REF_MEMORY = 60

#: A re-acquisition candidate touching a moving followed object and moving with it within
#: this many working pixels a frame is a part of that object
#: (`ClassicBackend._moves_with_a_neighbour`).
_WITH_NEIGHBOUR = 1.0

#: A still object (`ClassicConfig.still_anchor`): on `still_after` consecutive frames its
#: median flow and the 90th percentile of its flow are within this many working pixels of the
#: background's motion (the whole object moves with the scene: a walking camel's legs do not);
#: it stops being still after `_STILL_EXIT` consecutive frames on which it moves unlike the
#: background (one frame of flow noise, or a child passing, does not end it), or when its
#: neighbourhood no longer matches the keyframe's (correlation below `_ANCHOR_MIN_CC`: it
#: was covered, or the scene changed around it).
_STILL_SPREAD = 1.0
_STILL_EXIT = 2
_ANCHOR_MIN_CC = 0.8

#: `ClassicConfig.grabcut_trim`: a trimming GrabCut answer adds at most `_TRIM_ADD` and keeps at
#: least `_TRIM_KEEP` of the colour answer, on objects of at least `_TRIM_MIN_AREA` working
#: pixels.
_TRIM_ADD = 0.02
_TRIM_KEEP = 0.6
_TRIM_MIN_AREA = 1500

#: `ClassicConfig.snap_radius`: the guided filter's radius is at most the object's size (square
#: root of its area) / `_SNAP_PER`; its ridge (colours in 0..1).
_SNAP_PER = 15.0
_SNAP_EPS = 1e-3


@dataclass(frozen=True)
class ClassicConfig(BackendOptions):
    """Tuning of the classic backend.

    Attributes:
        work_size: long side in pixels of the resolution everything is computed at (larger
            frames are downscaled, masks upsampled back); 0 = the frame's own size.
        grabcut_iterations: GrabCut iterations for a prompt.
        flow_preset: DIS optical flow preset: ultrafast, fast or medium.
        softness: width in working pixels of the shape prior around the moved mask: larger
            lets colour move the outline further per frame.
        evidence_sigma: Gaussian blur (working pixels) of the colour evidence before it meets
            the shape prior: textures whose colours also occur around the object need more.
        lost_confidence: below it an object is reported lost.
        reacquire_confidence: a lost object's candidate must reach it to be re-acquired.
        reacquire_similarity: ... and its colour histogram this Bhattacharyya coefficient
            with the object's model (1 = the same colours in the same proportions; 0 = off).
            Measured on the DAVIS dev subset: the wrong re-acquisitions (IoU < 0.1 with the
            truth) 0.58-0.78 and one at 0.86 (still taken), the right ones 0.81-0.99 (one weak
            one, IoU 0.17, at 0.64); the bedroom clip's boy on a cushion 0.70-0.78 for 35 frames
            then 0.80-0.83 (taken, before the refused look-alikes were remembered).
        min_area_fraction: an object smaller than this fraction of its reference area is lost.
        occluded_fraction: an object smaller than this fraction of its reference area whose
            mask touches another followed object's is lost: it is going behind that object,
            and what is left of it beside the occluder is no longer it (the bedroom boy behind
            the girl shrank to 44 pixels on her legs, still scored 0.60; 0 = off).
        color_update: rate at which a confidently tracked object's colour model follows its
            current look (light changes), per frame.
        search_every: while lost, look for the object every n-th frame (1 = every frame).
        history_frames: recent frames kept for prompts stamped on a past frame (1 = only the
            latest; memory and answer-time cost in the module docstring).
        propagation: how the previous mask reaches the new frame: "dense" (every pixel moves
            with its own optical flow vector) or "similarity" (one rotation + scale +
            translation fitted to the flow inside the mask).
        band: half-width in working pixels of the band around the propagated outline inside
            which pixels may change (0 = anywhere in the object's neighbourhood).
        local_colors: judge pixels against the object's and the background's colours near
            them (per-pixel Gaussian models carried by the flow), besides the global models.
        local_sigma: neighbourhood of the local colour models, as a fraction of the object's
            size (square root of its area), clamped to 3..12 working pixels.
        local_weight, hist_weight: weights of the local and of the global colour
            log-likelihood ratios against the shape prior.
        recenter: correct the flow's prediction by mean shift on the colour evidence (fast
            motion over periodic textures aliases the flow; measured on the DAVIS dev subset
            it also helps there: mask-prompt J 0.372 -> 0.384).
        recenter_below: mean shift only when fewer than this fraction of the flow vectors
            inside the mask agree on one motion (1.0 = always; above it the flow is trusted:
            no jump).
        max_growth: a mask larger than this times the object's reference area (the prompt's,
            scaled by the zoom the flow measured) may not grow further (0 = no limit).
        refine: "colour" (shape prior + colour log-likelihood ratios, thresholded) or
            "grabcut" (then one GrabCut iteration in the band around the colour answer:
            follows image edges; kept only when it overlaps the colour answer by IoU >=
            `grabcut_agree`, so that a collapsed cut on a small, low-contrast object falls back
            to colour). The default: on the DAVIS dev subset mask J 0.386 -> 0.440, box 0.265
            -> 0.291, at 0.55-0.6x the frame rate of "colour" (see README).
        grabcut_agree: the IoU with the colour answer a GrabCut answer needs to be kept.
        grabcut_frozen: GrabCut's colour models (Gaussian mixtures) learnt once at the prompt
            and frozen, like the histograms (`color_update` 0), instead of relearnt each frame
            from the last mask: faster (no k-means) and no drift of the models.
        motion_gate: the motion cue (below) is used only when the object's median flow differs
            from the background's fitted motion by at least this many working pixels (a still
            object on a still background: motion tells nothing apart).
        motion_cut: pixels of the flow's prediction whose flow is within this fraction of the
            object's own distance from the background's motion (they move with the background:
            a wall, a crowd, a path dragged along by the mask) are cut from the prediction
            before refinement, anywhere in it, not only in the band (0 = off). On the DAVIS dev
            subset, with `motion_weight` 2: mask J 0.440 -> 0.573, box 0.291 -> 0.478 (see
            README).
        motion_weight: weight of the motion log-likelihood ratio in the band (moving like the
            background: -weight, like the object: +weight; 0 = off). 1 rather than 2: the same
            mask J (0.572 / 0.573) with F 0.560 / 0.551, and less pull into what moves along
            with the object (a reflection, a shadow).
        click_grow: a click's first answer (the region of its colours, often a part: a shirt,
            a head) is grown to the object by GrabCut in its box enlarged by this fraction of
            its size on each side, the part as sure object (0 = off, the default: on the DAVIS
            dev subset 0.3 gives click J 0.234 -> 0.275, but on an object the click already
            gives whole, the enlarged box's GrabCut takes in background: the synthetic
            point-prompt tests drop to J 0.56).
        settle_frames: for this many frames with motion after a box or a click (not a mask,
            not a refinement; frames on which nothing moves in its region do not count, for
            up to `_SETTLE_PATIENCE` frames), the object is re-segmented in the
            region the prompt designates (the box; for a click, the first answer's box
            enlarged by `settle_reach`), carried by
            the object's motion, from how each pixel moves: one frame shows only colours, and
            on real footage the object's often also occur around it (a black swan on dark
            water), so the first answer is a part of the object or takes in background; what
            moves with the clicked part and unlike the background is the object (0 = off).
        settle_reach: a click's settling region: its first answer's box enlarged by this
            fraction of its size on each side (at least 10 % of the frame's short side).
        regrow_reach: an object whose mask has shrunk below `_REGROW_BELOW` of its reference
            area takes back, up to that area, regions within this many object sizes (square
            root of its area) of its mask, beyond the band, whose pixels both have its colours
            and move like it (unlike the background): a part reappearing from behind a thin
            occluder (a dog's head past a pole), which the flow cannot carry (its pixels came
            from behind the occluder) and the band cannot reach (0 = off). On the DAVIS dev
            subset mask J 0.587 -> 0.600 at 0.3 (libby 0.348 -> 0.418); 1.0 (round 7: at 0.3
            libby's dog's head past a pole lay beyond the reach) 0.614 -> 0.621, box 0.531 ->
            0.541, click 0.459 -> 0.467, the same from 0.8 to 1.6 (see README).
        motion_grow: the motion vote may add pixels outside the prediction (False: it only
            removes; on the dev subset mask J 0.573 -> 0.560, blackswan 0.79 -> 0.86: the
            swan's reflection moves with it).
        slip_check: an object whose mask stops moving unlike the background within a few
            frames while the camera moves has slipped onto the background (its object went
            behind something; the mask stayed on a look-alike there) and is lost, not drawn
            (`_slipped`); while lost, what moves like the background is not it. On the DAVIS
            dev subset mask J 0.600 -> 0.614 and frames drawn on the wrong thing 18 -> 0
            (bmx-trees; see README).
        still_anchor: an object that moves with its background (`_STILL_SPREAD`) for
            `still_after` frames and was never seen moving clearly unlike it (at least
            `_SLIP_FROM` x `motion_gate`) since its prompt (a pillow on a bed, a parked car, a
            cup on a table, the camera moving or not) is carried from a keyframe (the frame
            it became still on: its neighbourhood registered to each new frame by ECC,
            affine) instead of from its last mask by the frame-to-frame flow, then refined as
            usual. On the bedroom clip the pillow's mask, refined frame after frame, spread
            over the look-alike sheet and wall (6.7k -> 19k pixels at 640x360 in 240 frames);
            carried by the flow alone it slid off the pillow onto the wall (the flow's
            sub-pixel motions, a little short each frame, add up); anchored it stays on the
            pillow (6.6-7.2k pixels) to the end: what refinement adds on one frame is not
            carried into the next. On the DAVIS dev subset (every object moves) nothing
            changes.
        still_after: frames an object must move with its background before it is anchored.
        grabcut_trim: a GrabCut answer refused for disagreeing with the colour answer
            (`grabcut_agree`) is taken all the same when it only takes pixels away (adds at
            most `_TRIM_ADD`, keeps at least `_TRIM_KEEP` of it) whose colour log-odds
            average at most this: pixels colour let in without claiming them, which the
            image's edges put outside (the water behind the black swan, the camel's shadow).
            Only on objects of at least `_TRIM_MIN_AREA` working pixels: on a small one
            GrabCut's colour mixtures have few samples and cut real parts (libby's dog). 0 =
            off. On the DAVIS dev subset (with `snap_radius` 4) mask J 0.635 against 0.631
            without (see README).
        snap_radius: the refined outline is snapped to the image's colour edges by a colour
            guided filter (He et al. 2010) of the mask, of this radius in working pixels at
            most (and at most the object's size / `_SNAP_PER`, so that thin parts survive),
            thresholded at 0.5 (0 = off). On the DAVIS dev subset (with `grabcut_trim` 1.5)
            mask J 0.626 -> 0.635, F 0.615 -> 0.620 (see README).
    """

    work_size: int = 320
    grabcut_iterations: int = 4
    flow_preset: str = "medium"
    softness: float = 4.0
    evidence_sigma: float = 1.0
    context_sigma: float = 3.0
    lost_confidence: float = 0.4
    reacquire_confidence: float = 0.6
    reacquire_similarity: float = 0.8
    min_area_fraction: float = 0.12
    occluded_fraction: float = 0.3
    color_update: float = 0.0
    search_every: int = 1
    propagation: str = "dense"
    band: int = 3
    local_colors: bool = False
    local_sigma: float = 0.2
    local_weight: float = 1.0
    hist_weight: float = 2.0
    recenter: bool = True
    recenter_below: float = 0.5
    max_growth: float = 2.0
    refine: str = "grabcut"
    grabcut_agree: float = 0.9
    grabcut_frozen: bool = True
    history_frames: int = 30
    motion_cut: float = 0.2
    motion_gate: float = 1.0
    motion_weight: float = 1.0
    click_grow: float = 0.0
    motion_grow: bool = True
    settle_frames: int = 5
    settle_reach: float = 1.0
    regrow_reach: float = 1.0
    slip_check: bool = True
    still_anchor: bool = True
    still_after: int = 15
    grabcut_trim: float = 1.5
    snap_radius: int = 4

    def __post_init__(self) -> None:
        if self.work_size < 0 or 0 < self.work_size < 32:
            raise ValueError(f"work_size must be 0 or >= 32 pixels; got {self.work_size}")
        if self.grabcut_iterations < 1:
            raise ValueError("grabcut_iterations must be >= 1")
        if self.flow_preset not in _FLOW_PRESETS:
            raise ValueError(f"flow_preset must be one of {sorted(_FLOW_PRESETS)}")
        if self.softness <= 0 or self.evidence_sigma <= 0:
            raise ValueError("softness and evidence_sigma must be > 0")
        if not 0.0 <= self.reacquire_similarity <= 1.0:
            raise ValueError("reacquire_similarity must be in [0, 1]")
        for name in (
            "lost_confidence",
            "reacquire_confidence",
            "min_area_fraction",
            "occluded_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {value}")
        if not 0.0 <= self.color_update <= 1.0:
            raise ValueError("color_update must be in [0, 1]")
        if self.search_every < 1:
            raise ValueError("search_every must be >= 1")
        if self.history_frames < 1:
            raise ValueError("history_frames must be >= 1")
        if self.propagation not in ("dense", "similarity"):
            raise ValueError("propagation must be 'dense' or 'similarity'")
        if self.band < 0 or self.local_sigma <= 0:
            raise ValueError("band must be >= 0 and local_sigma > 0")
        if self.local_weight < 0 or self.hist_weight < 0:
            raise ValueError("local_weight and hist_weight must be >= 0")
        if self.refine not in ("colour", "grabcut"):
            raise ValueError("refine must be 'colour' or 'grabcut'")
        if not 0.0 <= self.grabcut_agree <= 1.0:
            raise ValueError("grabcut_agree must be in [0, 1]")
        if not 0.0 <= self.motion_cut < 1.0:
            raise ValueError("motion_cut must be in [0, 1)")
        if self.motion_gate <= 0 or self.motion_weight < 0 or self.click_grow < 0:
            raise ValueError("motion_gate must be > 0, motion_weight and click_grow >= 0")
        if self.settle_frames < 0 or self.settle_reach < 0:
            raise ValueError("settle_frames and settle_reach must be >= 0")
        if self.regrow_reach < 0:
            raise ValueError("regrow_reach must be >= 0")
        if self.still_after < 1:
            raise ValueError("still_after must be >= 1")
        if self.grabcut_trim < 0 or self.snap_radius < 0:
            raise ValueError("grabcut_trim and snap_radius must be >= 0")


@dataclass(frozen=True, eq=False)
class _Frame:
    """One frame at working resolution (RGB, grey, colour bins) and the source size."""

    rgb: RgbImage
    gray: np.ndarray
    bins: BinImage
    full_height: int
    full_width: int

    @functools.cached_property
    def lab(self) -> FloatArray:
        """8-bit-scaled CIE Lab as float32 (local colour models); computed on demand, so
        that a kept frame costs only its RGB, grey and bins."""
        lab = cv2.cvtColor(self.rgb, cv2.COLOR_RGB2LAB)
        return np.asarray(lab, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.bins.shape[0]), int(self.bins.shape[1])

    @property
    def scale(self) -> float:
        """Working pixels per source pixel."""
        return float(self.bins.shape[1]) / self.full_width

    @functools.cached_property
    def counts_all(self) -> FloatArray:
        """Colour bin counts of the whole frame (computed once, shared by every object)."""
        return ops.counts(self.bins)


@dataclass
class _Anchor:
    """A still object's keyframe (`ClassicConfig.still_anchor`): the grey image of its
    neighbourhood and its mask there, and the affine map from that patch to the latest frame."""

    template: np.ndarray  # uint8, as the frames' grey images (no conversion per frame)
    mask: BoolArray
    warp: FloatArray  # 2 x 3, patch coordinates -> frame coordinates


@dataclass
class _Track:
    """One object's state, at working resolution."""

    mask: BoolArray
    fg: FloatArray  # colour model of the object
    bg: FloatArray  # colour model of the rest of the frame
    local_bg: FloatArray  # colours just around the object on the last frame
    ref_area: float
    ref_fit: float
    confidence: float
    lost: bool = False
    lost_for: int = 0
    last_center: tuple[float, float] = (0.0, 0.0)
    seeds: ops.Seeds | None = None
    seeds_frame: int = -1
    full_mask: BoolArray | None = field(default=None, repr=False)  # exact mask of a mask prompt
    local: trk.LocalColors | None = field(default=None, repr=False)
    gmm: ops.GrabCutModels | None = field(default=None, repr=False)  # GrabCut's, at the prompt
    # The region a box or click prompt designates (working pixels, carried with the object)
    # and the frames left to re-segment the object in it by motion (see `settle_frames`).
    settle_box: ops.Box | None = None
    settle_left: int = 0
    settle_patience: int = 0  # frames left to wait for motion (`_SETTLE_PATIENCE`)
    # While lost: the candidates refused for their colour distribution (working pixels):
    # look-alikes, never taken for the object until it is found again (`_search`).
    lookalike: BoolArray | None = field(default=None, repr=False)
    lookalike_gray: np.ndarray | None = field(default=None, repr=False)  # the image it was seen in
    lookalike_left: int = 0  # frames the look-alikes stay excluded after a re-acquisition
    # The last refinement: the mask it made, the grey image of its ROI then, and its answer
    # (ROI, log-odds); while that image does not change, neither does the mask (`_unchanged`).
    still: tuple[BoolArray, np.ndarray, tuple[ops.Box, FloatArray]] | None = field(
        default=None, repr=False
    )
    # The object's motion against the background's (median residual, working pixels) on the
    # last `_SLIP_WINDOW` frames it was measured (`_slipped`).
    motion: deque[float] = field(default_factory=lambda: deque(maxlen=_SLIP_WINDOW))
    # Lost by slipping onto the background: until re-found, a candidate moving like the
    # background (while the camera moves) is not it; once re-found, for `probation` frames,
    # moving like the background loses it again.
    slipped: bool = False
    probation: int = 0
    tentative: bool = False  # re-found after a slip, not yet seen moving unlike the background
    mover: bool = False  # it moved clearly unlike the background just before its last loss
    # Still with the scene (`ClassicConfig.still_anchor`): consecutive frames moving with the
    # background, then unlike it, and the keyframe it is carried by while still.
    still_run: int = 0
    moving_run: int = 0
    anchor: _Anchor | None = field(default=None, repr=False)
    # It moved clearly unlike its background since it was prompted: never anchored (a mover
    # whose mask comes to rest on the background has slipped, as the bedroom boy's did on
    # the curtain at the frame's edge when he left it; anchored, it stayed there).
    moved: bool = False
    # Its mask's area on the last `_REF_MEMORY` frames it was followed (bounds `ref_area`).
    areas: deque[float] = field(default_factory=lambda: deque(maxlen=_REF_MEMORY))


class ClassicBackend(Backend):
    """OpenCV GrabCut + optical flow tracker (see the module docstring)."""

    name = "classic"
    capabilities = Capabilities(text=False, multimask=False, past_frames=True, references=True)

    def __init__(self, config: ClassicConfig | None = None) -> None:
        self.config = config or ClassicConfig()
        self._tracks: dict[int, _Track] = {}
        self._frame: _Frame | None = None
        self._frame_index = -1
        # (frame index, frame) of the recent frames, newest last: prompts on past frames.
        self._history: deque[tuple[int, _Frame]] = deque(maxlen=self.config.history_frames)
        self._flow = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            _FLOW_PRESETS[self.config.flow_preset]
        )
        self._steps = 0
        self._last_flow: np.ndarray | None = None  # this step's backward flow (`_search`)
        self._still_cache: tuple[_Frame, BoolArray | None] | None = None
        #: Objects shown on other images (classic/reference.py), searched for on every frame.
        self._references = References(self)

    @property
    def memory_frames(self) -> int:
        return self.config.history_frames

    # ------------------------------------------------------------------ frames
    def _prepare(self, image: RgbImage) -> _Frame:
        height, width = int(image.shape[0]), int(image.shape[1])
        size = self.config.work_size
        scale = 1.0 if size == 0 else min(1.0, size / max(height, width))
        if scale < 1.0:
            w = max(2, int(round(width * scale)))
            h = max(2, int(round(height * scale)))
            small = np.asarray(
                cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA), dtype=np.uint8
            )
        else:
            small = np.ascontiguousarray(image)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        lab = np.asarray(cv2.cvtColor(small, cv2.COLOR_RGB2LAB), dtype=np.uint8)
        return _Frame(small, gray, ops.bins_of_lab(lab), height, width)

    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        self.check_open()
        # OpenCV refusing odd data: drop this frame, keep the objects.
        with backend_errors(f"classic backend failed on frame {frame_index}", (cv2.error,)):
            return self._step(frame_index, image)

    def _step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        frame = self._prepare(image)
        prev = self._frame
        self._frame, self._frame_index = frame, frame_index
        if self._history and self._history[-1][1].shape != frame.shape:
            self._history.clear()
        self._history.append((frame_index, frame))
        self._steps += 1
        if prev is not None and prev.shape != frame.shape:
            prev = None  # a new stream geometry: nothing to carry over
        # The flow serves the followed objects, and the search for one that slipped onto the
        # background (what moves like the background is not it).
        following = [t for t in self._tracks.values() if not t.lost or t.slipped]
        flow, maps = self._backward_flow(prev if following else None, frame)
        self._last_flow = flow
        posts: dict[int, tuple[ops.Box, FloatArray]] = {}
        for obj, track in self._tracks.items():
            if not track.lost:
                others = [t.mask for o, t in self._tracks.items() if o != obj and not t.lost]
                lost = [t for o, t in self._tracks.items() if o != obj and t.lost]
                post = self._follow(track, frame, prev, flow, maps, others, lost)
                if post is not None:
                    posts[obj] = post
        self._resolve_overlaps(posts)
        self._lose_occluded()
        if self._steps % self.config.search_every == 0:
            occupied = np.zeros(frame.shape, bool)
            for track in self._tracks.values():
                if not track.lost:
                    occupied |= track.mask
            for track in self._tracks.values():
                if track.lost:
                    self._search(track, frame, occupied)
            if len(self._references):
                self._references.search(frame, frame_index, occupied)
        outputs = {obj: self._output(track, frame) for obj, track in self._tracks.items()}
        return self._exclusive(outputs)

    @staticmethod
    def _exclusive(outputs: dict[int, MaskOutput]) -> dict[int, MaskOutput]:
        """One pixel belongs to at most one object, at full resolution too: upsampling two
        touching working-resolution masks overlaps them by a pixel or so along the seam; the
        more confident object keeps those."""
        claimed: BoolArray | None = None
        out = dict(outputs)
        for obj in sorted(outputs, key=lambda o: -outputs[o].score):
            res = outputs[obj]
            if not res.visible:
                continue
            if claimed is None:
                claimed = res.mask.copy()
                continue
            mask = res.mask & ~claimed
            claimed |= mask
            out[obj] = MaskOutput(mask, res.score, bool(mask.any()))
        return out

    def _backward_flow(
        self, prev: _Frame | None, frame: _Frame
    ) -> tuple[np.ndarray, tuple[FloatArray, FloatArray]]:
        """Dense flow from `frame` back to `prev` (zero without `prev`) and its remap maps."""
        flow = None
        if prev is not None:
            try:
                # Backward flow (new frame -> previous one): every new pixel learns where it
                # came from, which is what pulling the previous mask forward needs.
                flow = self._flow.calc(frame.gray, prev.gray, None)
            except cv2.error:  # frames too small for the flow's patches: assume no motion
                flow = None
        if flow is None:
            flow = np.zeros((*frame.shape, 2), np.float32)
        return flow, trk.flow_maps(flow)

    # ------------------------------------------------------------------ prompts
    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        self.check_open()
        latest = self._frame
        kept = [i for i, (index, _) in enumerate(self._history) if index == frame_index]
        if latest is None or not kept:
            held = f"{self._history[0][0]}..{self._history[-1][0]}" if self._history else "none"
            raise PromptError(
                f"frame {frame_index} is not in memory (the classic backend keeps the last "
                f"{self.config.history_frames} frames; held: {held})"
            )
        position = kept[0]
        frame = self._history[position][1]
        past = frame_index != self._frame_index
        # On a past frame, a refinement starts from the prompt alone: the object's mask on
        # that frame is not kept (only its latest one).
        track = None if past else self._tracks.get(obj)
        with backend_errors("classic backend failed on the prompt", (cv2.error,)):
            mask, full_mask, confidence = self._segment_prompt(frame, prompt, track, frame_index)
            new = self._new_track(frame, mask, confidence, track, prompt, frame_index)
            new.full_mask = full_mask
            new.settle_box = self._settle_region(frame, prompt, new, track)
            new.settle_left = self.config.settle_frames if new.settle_box is not None else 0
            new.settle_patience = _SETTLE_PATIENCE
            # The answer is the object as it looks on the prompted frame (the session's
            # contract); the track itself goes on from the latest frame.
            output = self._output(new, frame)
            if past:
                self._carry_forward(new, position)
        self._tracks[obj] = new
        return output

    def _carry_forward(self, track: _Track, position: int) -> None:
        """Track `track`, made on kept frame `position`, through the kept frames after it."""
        frames = [f for _, f in self._history]
        for prev, frame in zip(frames[position:-1], frames[position + 1 :], strict=True):
            if track.lost:
                self._search(track, frame, np.zeros(frame.shape, bool))
                continue
            flow, maps = self._backward_flow(prev, frame)
            self._follow(track, frame, prev, flow, maps)

    def _segment_prompt(
        self, frame: _Frame, prompt: Prompt, track: _Track | None, frame_index: int
    ) -> tuple[BoolArray, BoolArray | None, float]:
        """(working mask, exact full-resolution mask or None, confidence) for a prompt."""
        height, width = frame.shape
        s = frame.scale
        has_points = len(prompt.points) > 0
        full_mask_prompt = prompt.mask is not None and not prompt.scribble
        if full_mask_prompt and not has_points and prompt.box is None:
            assert prompt.mask is not None
            return self._downscale(prompt.mask, frame, any_pixel=False), prompt.mask.copy(), 1.0
        radius = max(1, int(round(0.01 * min(height, width))))
        seeds = ops.point_seeds(prompt.points * s, prompt.point_labels, height, width, radius)
        if prompt.mask is not None and prompt.scribble:
            seeds = ops.Seeds(
                seeds.fg | self._downscale(prompt.mask, frame, any_pixel=True), seeds.bg
            )
        iterations = self.config.grabcut_iterations
        box: ops.Box | None = None
        if prompt.box is not None:
            x0, y0, x1, y1 = (float(v) * s for v in prompt.box.tolist())
            box = (int(math.floor(x0)), int(math.floor(y0)), int(math.ceil(x1)), int(math.ceil(y1)))
        if box is not None and not full_mask_prompt:
            mask = ops.segment_box(frame.rgb, box, seeds, iterations)
            if not mask.any():
                # GrabCut found nothing (no colour difference at all): the ellipse inscribed in
                # the box, at the lost threshold, so that the user sees what was taken.
                canvas = np.zeros((height, width), np.uint8)
                cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
                axes = (max(1, (box[2] - box[0]) // 2), max(1, (box[3] - box[1]) // 2))
                cv2.ellipse(canvas, (cx, cy), axes, 0, 0, 360, 1, -1)
                return canvas.astype(bool), None, self.config.lost_confidence
            return mask, None, self._prompt_confidence(frame, mask)
        prior: BoolArray | None = None
        if full_mask_prompt:
            # A mask with points (or a box): the mask is the first guess, the points correct it.
            assert prompt.mask is not None
            prior = self._downscale(prompt.mask, frame, any_pixel=False)
        elif track is not None and not track.lost and track.mask.any():
            prior = track.mask
            if track.seeds is not None and track.seeds_frame == frame_index:
                seeds = track.seeds.union(seeds)  # clicks on one frame accumulate, as in SAM
        if prior is None and not seeds.fg.any():
            raise PromptError(
                "a new object needs a foreground point (label 1), a box, a mask or a scribble"
            )
        mask = ops.segment_seeds(frame.rgb, frame.bins, seeds, iterations, prior)
        if prior is None and box is None and np.count_nonzero(mask) > _CLICK_LEAK * mask.size:
            mask = self._click_box(frame, seeds, iterations, mask)
        if prior is None and box is None and self.config.click_grow > 0:
            mask = self._grow_click(frame, mask, seeds, iterations)
        mask |= seeds.fg
        mask &= ~seeds.bg
        if box is not None:
            inside = np.zeros_like(mask)
            inside[max(0, box[1]) : box[3], max(0, box[0]) : box[2]] = True
            mask &= inside
        return mask, None, self._prompt_confidence(frame, mask)

    def _settle_region(
        self, frame: _Frame, prompt: Prompt, new: _Track, old: _Track | None
    ) -> ops.Box | None:
        """Where a box or a click designates the object (working pixels), for settling by
        motion; None for a mask prompt, clicks refining a tracked object (the user shapes it),
        or a lost answer. A box on a tracked object designates it anew: it settles."""
        if self.config.settle_frames == 0 or new.lost or not new.mask.any():
            return None
        if prompt.mask is not None and not prompt.scribble:
            return None  # the user drew the object: it is taken as drawn
        height, width = frame.shape
        s = frame.scale
        if prompt.box is not None:
            x0, y0, x1, y1 = (float(v) * s for v in prompt.box.tolist())
            box = (int(math.floor(x0)), int(math.floor(y0)), int(math.ceil(x1)), int(math.ceil(y1)))
            box = ops.clip_box(box, width, height)
            return box if min(box[2] - box[0], box[3] - box[1]) >= _SETTLE_MIN_SIDE else None
        if old is not None and not old.lost and old.mask.any():
            return None  # clicks correcting a tracked object: the user shapes it
        mbox = ops.mask_box(new.mask)
        assert mbox is not None
        reach = self.config.settle_reach
        gx = max(int(reach * (mbox[2] - mbox[0])), int(0.1 * min(height, width)))
        gy = max(int(reach * (mbox[3] - mbox[1])), int(0.1 * min(height, width)))
        return ops.clip_box((mbox[0] - gx, mbox[1] - gy, mbox[2] + gx, mbox[3] + gy), width, height)

    def _click_box(
        self, frame: _Frame, seeds: ops.Seeds, iterations: int, leak: BoolArray
    ) -> BoolArray:
        """A click's answer that ran over its surroundings (`_CLICK_LEAK`), replaced by
        GrabCut in a box around the clicks (half-side `_CLICK_BOX` of the frame's diagonal);
        the leak when that finds nothing."""
        fbox = ops.mask_box(seeds.fg)
        if fbox is None:
            return leak
        height, width = frame.shape
        half = int(_CLICK_BOX * math.hypot(height, width))
        cx, cy = (fbox[0] + fbox[2]) // 2, (fbox[1] + fbox[3]) // 2
        box = ops.clip_box((cx - half, cy - half, cx + half + 1, cy + half + 1), width, height)
        mask = ops.segment_box(frame.rgb, box, seeds, iterations)
        return mask if mask.any() else leak

    def _grow_click(
        self, frame: _Frame, part: BoolArray, seeds: ops.Seeds, iterations: int
    ) -> BoolArray:
        """The whole object around a click's first answer `part` (see `click_grow`): GrabCut
        in the part's box enlarged by `click_grow` on each side, the part (one pixel in) and
        the clicks as sure object."""
        pbox = ops.mask_box(part)
        if pbox is None:
            return part
        height, width = frame.shape
        grow = self.config.click_grow
        w, h = pbox[2] - pbox[0], pbox[3] - pbox[1]
        gx, gy = int(grow * w), int(grow * h)
        box = ops.clip_box((pbox[0] - gx, pbox[1] - gy, pbox[2] + gx, pbox[3] + gy), width, height)
        fg = seeds.fg | ops.erode(part, 2)
        whole = ops.segment_box(frame.rgb, box, ops.Seeds(fg, seeds.bg), iterations)
        if not whole.any():
            return part
        return whole | part

    def _prompt_confidence(self, frame: _Frame, mask: BoolArray) -> float:
        """How distinct the mask's colours are from its surroundings' (0.4 + separation)."""
        if not mask.any():
            return 0.0
        ring = ops.dilate(mask, 4) & ~mask
        lut = ops.ratio_lut(ops.histogram(frame.bins, mask), ops.histogram(frame.bins, ~mask))
        ev = lut[frame.bins]
        sep = ops.mean_over(ev, mask) - ops.mean_over(ev, ring)
        return float(np.clip(0.4 + sep, 0.0, 1.0))

    def _new_track(
        self,
        frame: _Frame,
        mask: BoolArray,
        confidence: float,
        old: _Track | None,
        prompt: Prompt,
        frame_index: int,
    ) -> _Track:
        fg = ops.histogram(frame.bins, ops.erode(mask, 1) if mask.sum() > 50 else mask)
        bg = ops.histogram(frame.bins, ~ops.dilate(mask, 2))
        band = ops.dilate(mask, 6) & ~ops.dilate(mask, 2)
        fit = ops.mean_over(ops.ratio_lut(fg, bg)[frame.bins], mask)
        area = float(np.count_nonzero(mask))
        ys, xs = np.nonzero(mask)
        center = (float(xs.mean()), float(ys.mean())) if area else (0.0, 0.0)
        seeds = None
        if len(prompt.points):
            height, width = frame.shape
            radius = max(1, int(round(0.01 * min(height, width))))
            seeds = ops.point_seeds(
                prompt.points * frame.scale, prompt.point_labels, height, width, radius
            )
            if old is not None and old.seeds is not None and old.seeds_frame == frame_index:
                seeds = old.seeds.union(seeds)
        lost = confidence < self.config.lost_confidence or area == 0
        local = None
        if self.config.local_colors and area:
            local = trk.learn_local(
                frame.lab, mask, self._model_roi(mask, frame), self._sigma(area)
            )
        gmm = None
        if self.config.refine == "grabcut" and self.config.grabcut_frozen and area:
            x0, y0, x1, y1 = self._model_roi(mask, frame)
            gmm = ops.grabcut_models(frame.rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1])
        return _Track(
            gmm=gmm,
            mask=mask if not lost else np.zeros_like(mask),
            fg=fg,
            bg=bg,
            local_bg=ops.histogram(frame.bins, band),
            ref_area=max(area, 1.0),
            ref_fit=max(fit, 0.05),
            confidence=confidence,
            lost=lost,
            last_center=center,
            seeds=seeds,
            seeds_frame=frame_index,
            local=local,
        )

    def _sigma(self, area: float) -> float:
        return float(np.clip(self.config.local_sigma * math.sqrt(max(area, 1.0)), 3.0, 12.0))

    def _model_roi(self, mask: BoolArray, frame: _Frame) -> ops.Box:
        """Where the local colour models are learnt: around the object, as far as the next
        frame's band can reach."""
        box = ops.mask_box(mask)
        height, width = frame.shape
        if box is None:
            return (0, 0, width, height)
        margin = 3 * int(self._sigma(float(np.count_nonzero(mask)))) + self._margin(box)
        return ops.expand_box(box, margin, width, height)

    def _margin(self, box: ops.Box) -> int:
        """How far an object may move between two frames, plus the band (working pixels)."""
        return max(12, int(0.3 * max(box[2] - box[0], box[3] - box[1]))) + self.config.band

    def remove_object(self, obj: int) -> None:
        self._tracks.pop(obj, None)
        self._references.drop(obj)

    def add_reference(
        self, obj: int, image: RgbImage, prompt: Prompt, multimask: bool = False
    ) -> ReferenceOutput:
        """Learn `obj`'s look from a region of another image; searched for on every frame
        while not followed (classic/reference.py)."""
        self.check_open()
        with backend_errors("classic backend failed on the reference", (cv2.error,)):
            return self._references.add(obj, image, prompt)

    def remove_reference(self, obj: int, reference: int) -> None:
        self._references.remove(obj, reference)

    def references(self, obj: int) -> list[int]:
        return self._references.ids(obj)

    def tracked_apart_from_references(self, obj: int) -> bool:
        return obj in self._tracks  # prompted, or found by a reference and followed since

    def reset(self) -> None:
        self._tracks.clear()
        self._references.clear()
        self._frame = None
        self._frame_index = -1
        self._history.clear()

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        if not prompt.has_geometry:
            return super().segment(image, prompt, multimask, score_threshold)
        self.check_open()
        frame = self._prepare(image)
        with backend_errors("classic backend failed on the prompt", (cv2.error,)):
            mask, full_mask, confidence = self._segment_prompt(frame, prompt, None, -1)
        track = self._new_track(frame, mask, confidence, None, prompt, -1)
        track.full_mask = full_mask
        return [self._output(track, frame)]

    # ------------------------------------------------------------------ tracking
    def _follow(
        self,
        track: _Track,
        frame: _Frame,
        prev: _Frame | None,
        flow: np.ndarray,
        maps: tuple[FloatArray, FloatArray],
        others: list[BoolArray] | None = None,
        lost: list[_Track] | None = None,
    ) -> tuple[ops.Box, FloatArray] | None:
        """Move `track` from `prev` to `frame`; return its ROI and its log-odds there (see
        classic/track.py).

        `others`: the masks of the other followed objects (regrowing stops at them); `lost`:
        the other objects now lost (regrowing does not reach far into where they may be)."""
        track.full_mask = None
        box = ops.mask_box(track.mask)
        if box is None:
            self._lose(track)
            return None
        if track.still is not None and self._unchanged(track, frame):
            # Nothing changed around the object since its mask was last decided (a still
            # scene, a held frame): the same mask. Refining the same image again and again
            # let the mask creep into look-alike background a band a frame (the bedroom
            # pillow over the bed sheet and the wall in 38 identical frames: 6.5k -> 11.9k px).
            self._wait_for_motion(track)
            track.still_run += 1  # nothing moved: it moved with its background
            return track.still[2]
        height, width = frame.shape
        cfg = self.config
        if cfg.propagation == "dense":
            roi = ops.expand_box(box, self._margin(box), width, height)
            moved = trk.propagate(track.mask.astype(np.float32), maps, roi, (0, 0))
            predicted = np.zeros((height, width), bool)
            predicted[roi[1] : roi[3], roi[0] : roi[2]] = moved > 0.5
            motion = ops.estimate_motion(track.mask, -flow)
        else:
            # The backward flow at a pixel is about minus the forward flow there.
            motion = ops.estimate_motion(track.mask, -flow)
            predicted = ops.warp_mask(track.mask, motion)
        anchored = False
        if (
            cfg.still_anchor
            and not track.moved
            and (track.anchor is not None or track.still_run >= cfg.still_after)
        ):
            # Still with the scene: carried from its keyframe, not from its last mask, so
            # that what refinement adds on one frame is not carried into the next (by colour
            # the bedroom pillow spread frame after frame over the look-alike sheet and wall).
            carried = self._anchored(track, frame, prev, motion)
            if carried is None:
                track.still_run = 0
            else:
                predicted, anchored = carried, True
        # The reference area follows the scale the flow measured (zoom, approach), not the
        # segmented area, which shrinks when the object is occluded or leaves the frame.
        scale = float(np.hypot(motion.matrix[0, 0], motion.matrix[1, 0]))
        track.ref_area *= scale * scale
        if track.areas:
            # The flow's scale is noisy on an articulated body (a jumping child: the girl's
            # reference area compounded to 2.7x her mask in 250 frames, the boy's to 28x),
            # and a reference larger than the object ever looked keeps it "shrunk": regrowing
            # then claims what is beside it. Never more than `_REF_SLACK` x its largest mask
            # of the last `_REF_MEMORY` frames.
            track.ref_area = min(track.ref_area, _REF_SLACK * max(track.areas))
        if cfg.recenter and motion.inlier_ratio < cfg.recenter_below:
            predicted = self._recenter(track, frame, predicted)
        if track.settle_left > 0:
            predicted = self._settle(track, frame, flow, predicted, motion)
        pbox = ops.mask_box(predicted)
        if pbox is None:
            self._lose(track)
            return None
        roi = ops.expand_box(pbox, cfg.band + 4, width, height)
        x0, y0, x1, y1 = roi
        sl = np.s_[y0:y1, x0:x1]
        llr = np.zeros((y1 - y0, x1 - x0), np.float32)
        # The motion split covers the refinement's ROI, widened by the reach of regrowing
        # when the object may regrow.
        wide = roi
        regrow = cfg.regrow_reach > 0 and not anchored
        if regrow:
            reach = int(math.ceil(cfg.regrow_reach * math.sqrt(np.count_nonzero(predicted))))
            wide = ops.expand_box(roi, reach, width, height)
        split: tuple[FloatArray, float] | None = None
        if cfg.motion_cut > 0 or cfg.motion_weight > 0 or regrow or cfg.slip_check:
            raw = self._residual_split(track, flow, predicted, wide)
            if (
                cfg.slip_check
                and raw is not None
                and self._slipped(track, flow, predicted, wide, raw[1])
            ):
                self._lose(track)
                track.slipped = True
                return None
            if raw is not None and raw[1] >= cfg.motion_gate:
                split = raw
            if raw is not None and cfg.still_anchor and not track.moved:
                self._still(track, predicted, wide, raw)  # a mover is never anchored again
        if split is not None and (cfg.motion_cut > 0 or cfg.motion_weight > 0):
            # Camera motion drags a mask's leaked edge along with the background (a path
            # behind a rider, the crowd behind a dancer): what moves like the background is
            # not the object, whatever its colour.
            residual = split[0][y0 - wide[1] : y1 - wide[1], x0 - wide[0] : x1 - wide[0]]
            m_obj = split[1]
            local_pred = predicted[sl]
            if cfg.motion_cut > 0:
                bglike = residual < cfg.motion_cut * m_obj
                bglike = cv2.morphologyEx(
                    bglike.astype(np.uint8), cv2.MORPH_OPEN, ops.disc(1)
                ).astype(bool)
                kept = local_pred & ~bglike
                # Only the parts connected to pixels that clearly move like the object
                # stay; a cut that would leave less than 30 % is a flow failure, ignored.
                seeds = ops.erode(kept, 1) & (residual > 0.7 * m_obj)
                kept = ops.keep_components(kept, seeds if seeds.any() else None, 0.15)
                if np.count_nonzero(kept) > 0.3 * np.count_nonzero(local_pred):
                    predicted = np.zeros_like(predicted)
                    predicted[sl] = kept
            if cfg.motion_weight > 0:
                t = 0.5 * m_obj
                vote = np.clip((residual - t) / t, -1.0, 1.0)
                if not cfg.motion_grow:
                    vote = np.where(predicted[sl], vote, np.minimum(vote, 0.0))
                llr += cfg.motion_weight * vote
        colour_llr = None
        if cfg.hist_weight > 0:
            ev = ops.ratio_lut(track.fg, 0.5 * track.bg + 0.5 * track.local_bg)[frame.bins[sl]]
            ev = np.asarray(cv2.GaussianBlur(ev, (0, 0), cfg.evidence_sigma), np.float32)
            colour_llr = np.log(ev / (1.0 - ev))
            llr += cfg.hist_weight * colour_llr
        if cfg.local_colors and track.local is not None:
            stats = trk.propagate(track.local.stats, maps, roi, track.local.origin)
            llr += cfg.local_weight * trk.local_llr(frame.lab[sl], stats)
        local, logit = trk.refine(predicted[sl], llr, cfg.softness, cfg.band)
        if cfg.refine == "grabcut":
            # The graph cut follows image edges, but on a small or low-contrast object its
            # colour models can collapse: a cut that disagrees with the colour answer is
            # refused. It starts from the colour answer, not from the flow's prediction: its
            # sure-background ring then never covers object the colour models claim back (from
            # the prediction, a part lost once was labelled background for good).
            cut, cut_logit = trk.refine_grabcut(frame.rgb[sl], local, cfg.band, llr, track.gmm)
            union = max(1, int(np.count_nonzero(cut | local)))
            agree = float(np.count_nonzero(cut & local)) / float(union)
            # Refused when it disagrees, unless it only trims what colour did not claim.
            trims = colour_llr is not None and self._trims(local, cut, colour_llr)
            if agree >= cfg.grabcut_agree or trims:
                local, logit = cut, cut_logit
        if cfg.snap_radius > 0 and local.any():
            radius = min(cfg.snap_radius, int(math.sqrt(np.count_nonzero(local)) / _SNAP_PER))
            if radius >= 1:
                soft = ops.guided_filter(
                    frame.rgb[sl].astype(np.float32) / 255.0,
                    local.astype(np.float32),
                    radius,
                    _SNAP_EPS,
                )
                local = soft > 0.5
                logit = np.where(local, np.abs(logit), -np.abs(logit)).astype(np.float32)
        if not local.any():
            self._lose(track)
            return None
        mask = np.zeros((height, width), bool)
        mask[sl] = local
        if regrow and split is not None:
            mask = self._regrow(track, frame, flow, mask, others or [], wide, *split, lost)
        if track.lookalike is not None:
            mask &= ~ops.dilate(track.lookalike, 3)
            track.lookalike_left -= 1
            if track.lookalike_left <= 0:
                track.lookalike = None
            if not mask.any():
                self._lose(track)
                return None
        confidence = self._confidence(track, frame, mask)
        track.confidence = confidence
        area = float(np.count_nonzero(mask))
        if cfg.max_growth > 0 and area > cfg.max_growth * track.ref_area:
            # Larger than the object ever was (its prompt's area, scaled as the flow zoomed):
            # a leak into look-alike background. No growth this frame: keep only what the
            # flow carried.
            mask &= predicted
            area = float(np.count_nonzero(mask))
        if confidence < cfg.lost_confidence or area < cfg.min_area_fraction * track.ref_area:
            self._lose(track)
            return None
        track.mask = mask
        track.areas.append(area)
        self._learn(track, frame, mask, roi, confidence)
        if cfg.local_colors:
            track.local = trk.learn_local(
                frame.lab, mask, self._model_roi(mask, frame), self._sigma(area)
            )
        x0, y0, x1, y1 = roi
        track.still = (mask, frame.gray[y0:y1, x0:x1].copy(), (roi, logit))
        return roi, logit

    def _trims(self, colour: BoolArray, cut: BoolArray, colour_llr: FloatArray) -> bool:
        """Whether GrabCut's answer `cut` only trims the colour answer `colour` of pixels
        colour did not claim (`grabcut_trim`; `colour_llr`: the colour log-odds)."""
        limit = self.config.grabcut_trim
        n = int(np.count_nonzero(colour))
        removed = colour & ~cut
        return bool(
            limit > 0
            and n >= _TRIM_MIN_AREA
            and np.count_nonzero(cut & ~colour) <= _TRIM_ADD * n
            and np.count_nonzero(cut) >= _TRIM_KEEP * n
            and bool(removed.any())
            and float(np.mean(colour_llr[removed])) <= limit
        )

    def _anchored(
        self, track: _Track, frame: _Frame, prev: _Frame | None, motion: ops.Motion
    ) -> BoolArray | None:
        """A still object's mask on `frame`, carried from its keyframe (`still_anchor`), or
        None when its neighbourhood no longer matches the keyframe's (the anchor is dropped).

        The keyframe is the previous frame when the object becomes still: its neighbourhood
        (the mask's box, half an object size a side) and mask there. Each frame the affine
        map from that patch to the new frame is found by ECC (Evangelidis and Psarakis, 2008),
        started from the last frame's map moved by the object's fitted motion; the keyframe's
        mask is warped by it. One registration against a fixed image does not accumulate the
        frame-to-frame flow's errors, and the neighbourhood (which moves with a still object)
        holds it where the object itself has no texture."""
        height, width = frame.shape
        if track.anchor is None:
            box = ops.mask_box(track.mask)
            if box is None or prev is None or prev.shape != frame.shape:
                return None
            size = math.sqrt(np.count_nonzero(track.mask))
            x0, y0, x1, y1 = ops.expand_box(box, max(8, int(size / 2)), width, height)
            track.anchor = _Anchor(
                prev.gray[y0:y1, x0:x1].copy(),
                track.mask[y0:y1, x0:x1].copy(),
                np.array([[1, 0, x0], [0, 1, y0]], np.float32),
            )
        anchor = track.anchor
        step = np.vstack([motion.matrix.astype(np.float64), [0.0, 0.0, 1.0]])
        start = (step @ np.vstack([anchor.warp.astype(np.float64), [0.0, 0.0, 1.0]]))[:2]
        try:
            cc, warp = cv2.findTransformECC(
                anchor.template,
                frame.gray,
                start.astype(np.float32),
                cv2.MOTION_AFFINE,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4),
            )
        except cv2.error:  # no convergence
            track.anchor = None
            return None
        if not np.isfinite(cc) or cc < _ANCHOR_MIN_CC:
            track.anchor = None
            return None
        anchor.warp = np.asarray(warp, np.float32)
        moved = cv2.warpAffine(
            anchor.mask.astype(np.uint8) * 255,
            anchor.warp,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        return np.asarray(moved > 127)

    def _still(
        self,
        track: _Track,
        predicted: BoolArray,
        roi: ops.Box,
        split: tuple[FloatArray, float],
    ) -> None:
        """Count the frames `track` moves with / unlike its background (`split`: the residual
        against the background's motion in `roi` and the object's median, `_residual_split`;
        `_STILL_SPREAD`); its anchor is dropped after `_STILL_EXIT` frames moving unlike it."""
        residual, m_obj = split
        x0, y0, x1, y1 = roi
        core = ops.erode(predicted[y0:y1, x0:x1], 2)
        spread = float(np.percentile(residual[core], 90)) if core.any() else 0.0
        gate = self.config.motion_gate
        still = m_obj < gate and spread < _STILL_SPREAD * gate
        track.still_run = track.still_run + 1 if still else 0
        track.moving_run = track.moving_run + 1 if m_obj >= gate else 0
        track.moved = track.moved or m_obj >= _SLIP_FROM * gate
        if track.moving_run >= _STILL_EXIT or track.moved:
            track.anchor = None
            track.still_run = 0

    @staticmethod
    def _unchanged(track: _Track, frame: _Frame) -> bool:
        """Whether the grey image of the last refinement's ROI is the same on `frame`, up to
        noise (mean difference < 2 grey levels, < 0.5 % of pixels off by more than 16), and
        the mask is still the one that refinement made (no prompt, loss or re-acquisition
        since). A slow object accumulates difference against that image until it counts: a
        one-pixel shift of an edge is enough."""
        assert track.still is not None
        mask, patch, ((x0, y0, x1, y1), _) = track.still
        if mask is not track.mask or frame.gray.shape[0] < y1 or frame.gray.shape[1] < x1:
            return False
        diff = cv2.absdiff(frame.gray[y0:y1, x0:x1], patch)
        return bool(diff.mean() < 2.0 and np.count_nonzero(diff > 16) < 0.005 * diff.size)

    @staticmethod
    def _wait_for_motion(track: _Track) -> None:
        """A settling frame on which nothing moved: not counted, the patience is
        (`_SETTLE_PATIENCE`)."""
        if track.settle_left > 0:
            track.settle_patience -= 1
            if track.settle_patience <= 0:
                track.settle_left = 0

    def _regrow(
        self,
        track: _Track,
        frame: _Frame,
        flow: np.ndarray,
        mask: BoolArray,
        others: list[BoolArray],
        wide: ops.Box,
        residual: FloatArray,
        m_obj: float,
        lost: list[_Track] | None = None,
    ) -> BoolArray:
        """`mask` with the parts of the object it lost beyond the band (`regrow_reach`).

        Only while the mask is below `_REGROW_BELOW` of the reference area: candidates are the
        pixels of `wide` outside the mask whose colour evidence says object (> 0.6) and whose
        flow differs from the background's motion at least 0.7x as much as the object's own
        (`residual`, `m_obj`: `_residual_split`); their connected regions of at least 2 % of the
        mask's area within `regrow_reach` object sizes of the mask are added, nearest first,
        up to the reference area. Beyond `_REGROW_NEAR` object sizes, not where a lost
        object may be (`lost`: within its search's reach of where it was last seen, for
        `_LOST_ZONE_FRAMES` frames): a region there that has this object's colours and moves
        like it is as likely that object coming back (the bedroom girl took the boy standing
        a body's width beside her in one run of the demo).
        """
        x0, y0, x1, y1 = wide
        sl = np.s_[y0:y1, x0:x1]
        local = mask[sl]
        area = float(np.count_nonzero(mask))
        if area >= _REGROW_BELOW * track.ref_area or not local.any():
            return mask
        near_mask = ops.dilate(local, 3)
        if any((near_mask & other[sl]).any() for other in others):
            # Beside another followed object it is going behind that one (`occluded_fraction`
            # decides), not behind a thin occluder: what is beside it is not its lost part.
            return mask
        # Against the colours just around the object on the last frame too: what was beside
        # it then (a cushion beside a girl's legs) is not a part of it coming back.
        lut = np.minimum(
            ops.ratio_lut(track.fg, 0.5 * track.bg + 0.5 * track.local_bg),
            ops.ratio_lut(track.fg, track.local_bg),
        )
        evidence = np.asarray(
            cv2.GaussianBlur(lut[frame.bins[sl]], (0, 0), self.config.evidence_sigma), np.float32
        )
        f = flow[sl]
        own = np.median(f[local], axis=0)
        like = np.hypot(f[..., 0] - own[0], f[..., 1] - own[1]) < 0.5 * m_obj
        candidate = (evidence > 0.6) & (residual > 0.7 * m_obj) & like & ~local
        opened = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN, ops.disc(1))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        if n <= 1:
            return mask
        dist = cv2.distanceTransform((~local).astype(np.uint8), cv2.DIST_L2, 3)
        near = np.full(n, np.inf)
        np.minimum.at(near, np.asarray(labels, np.intp).reshape(-1), dist.reshape(-1))
        sizes = stats[:, cv2.CC_STAT_AREA]
        reach = self.config.regrow_reach * math.sqrt(area)
        zoned = self._lost_zones(lost or [], wide, labels, n)
        budget = track.ref_area - area
        keep = np.zeros(n, bool)
        for i in np.argsort(near)[:n]:
            if i == 0 or near[i] > reach or sizes[i] < 0.02 * area:
                continue
            if zoned[i] and near[i] > _REGROW_NEAR * math.sqrt(area):
                continue
            if sizes[i] > budget:
                break
            keep[i] = True
            budget -= float(sizes[i])
        if not keep.any():
            return mask
        out = mask.copy()
        out[sl] |= keep[labels]
        return out

    @staticmethod
    def _search_reach(track: _Track) -> float:
        """How far (working pixels) from where a lost object was last seen its search looks:
        1.5 object sizes, + 0.15 a frame hidden, at most `_REACQUIRE_REACH`."""
        return math.sqrt(track.ref_area) * min(_REACQUIRE_REACH, 1.5 + 0.15 * track.lost_for)

    @staticmethod
    def _lost_zones(lost: list[_Track], roi: ops.Box, labels: np.ndarray, n: int) -> BoolArray:
        """For each of the `n` labelled regions of `labels` (the ROI `roi`), whether it
        reaches where one of the `lost` objects may be: within its search's reach of where it
        was last seen, lost for at most `_LOST_ZONE_FRAMES` frames."""
        zoned = np.zeros(n, bool)
        x0, y0, x1, y1 = roi
        gy, gx = np.ogrid[y0:y1, x0:x1]
        for other in lost:
            if other.lost_for > _LOST_ZONE_FRAMES:
                continue
            reach = ClassicBackend._search_reach(other)
            cx, cy = other.last_center
            inside = (gx - cx) ** 2 + (gy - cy) ** 2 <= reach * reach
            zoned[np.unique(labels[inside])] = True
        zoned[0] = False
        return zoned

    def _residual_split(
        self, track: _Track, flow: np.ndarray, predicted: BoolArray, roi: ops.Box
    ) -> tuple[FloatArray, float] | None:
        """How differently from the background every pixel of `roi` moves.

        The background's motion (camera pan, zoom) is one affine map fitted (RANSAC) to the
        flow sampled on a grid outside the object; a pixel's residual is the distance of its
        flow from that map's. Returns (residual in `roi`, the object's median residual: below
        `motion_gate` the object moves like its background and motion tells them apart
        nowhere), or None without a fit.
        """
        residual = self._background_residual(flow, track.mask | predicted, roi)
        if residual is None:
            return None
        x0, y0, x1, y1 = roi
        core = ops.erode(predicted[y0:y1, x0:x1], 2)
        if not core.any():
            return None
        return residual, float(np.median(residual[core]))

    def _slipped(
        self, track: _Track, flow: np.ndarray, predicted: BoolArray, roi: ops.Box, m_obj: float
    ) -> bool:
        """Whether the object's mask has slipped onto the background: it moved clearly unlike
        the background until a frame or two ago and now moves just like it, while the camera
        moves (`_SLIP_FROM`, `_SLIP_WINDOW`, `_SLIP_BACKGROUND`). An object does not stop dead
        in two frames; a mask left on the background when its object passed behind a tree
        does (bmx-trees: the rider at 6-8 working pixels a frame against the background, then
        0.27 on the third frame, the mask drawn on the graffiti for 7 frames, and again for 16
        frames later). `m_obj`: this frame's motion against the background (median residual
        of the prediction's core, `_residual_split` on `roi`); recorded."""
        x0, y0, x1, y1 = roi
        gate = self.config.motion_gate
        before = max(track.motion, default=0.0)
        track.motion.append(m_obj)
        on_probation = track.probation > 0
        track.probation = max(0, track.probation - 1)
        if m_obj >= gate:
            track.probation = 0
            track.tentative = False
            return False
        if track.probation == 0:
            track.tentative = False
        if before < _SLIP_FROM * gate and not on_probation:
            return False
        f = flow[y0:y1, x0:x1][~predicted[y0:y1, x0:x1]]
        if f.size == 0:
            return False
        camera = float(np.median(np.hypot(f[:, 0], f[:, 1])))
        return camera >= _SLIP_BACKGROUND

    @staticmethod
    def _background_residual(
        flow: np.ndarray, exclude: BoolArray, roi: ops.Box
    ) -> FloatArray | None:
        """Distance (working pixels, float32, the ROI's shape) of every pixel's flow in `roi`
        from the background's motion: one affine map fitted (RANSAC) to the flow sampled on a
        grid outside `exclude` (dilated by 6); None with too few samples or no fit."""
        height, width = flow.shape[:2]
        step = 6
        ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
        outside = ~ops.dilate(exclude, 6)
        keep = outside[ys, xs]
        xs, ys = xs[keep], ys[keep]
        if xs.size < 30:
            return None
        src = np.stack([xs, ys], 1).astype(np.float32)
        dst = src + flow[ys, xs]
        matrix, _ = cv2.estimateAffine2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0, maxIters=300
        )
        if matrix is None:
            return None
        x0, y0, x1, y1 = roi
        gy, gx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        ex = matrix[0, 0] * gx + matrix[0, 1] * gy + matrix[0, 2] - gx
        ey = matrix[1, 0] * gx + matrix[1, 1] * gy + matrix[1, 2] - gy
        f = flow[y0:y1, x0:x1]
        residual: FloatArray = np.hypot(f[..., 0] - ex, f[..., 1] - ey).astype(np.float32)
        return residual

    def _settle(
        self,
        track: _Track,
        frame: _Frame,
        flow: np.ndarray,
        predicted: BoolArray,
        motion: ops.Motion,
    ) -> BoolArray:
        """Re-segment a box- or click-prompted object in its prompt's region by motion.

        The region follows the object (its corners moved by the object's fitted motion). In
        it, pixels whose flow differs from the background's motion by at least half as much
        as the tracked part's does are "probably object", the rest "probably background",
        outside it background; the tracked part's core where it clearly moves so is sure
        object; GrabCut (2 iterations) then follows the image's edges. The answer replaces
        `predicted` and the object's colour models are learnt again from it. Nothing changes
        when the part moves like the background (motion tells nothing apart: `motion_gate`)
        or the cut loses most of the part.
        """
        assert track.settle_box is not None
        cfg = self.config
        height, width = frame.shape
        x0, y0, x1, y1 = track.settle_box
        corners = (
            np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])
            @ motion.matrix.astype(np.float64).T
        )
        lo, hi = np.floor(corners.min(axis=0)), np.ceil(corners.max(axis=0))
        box = ops.clip_box((int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])), width, height)
        track.settle_box = box
        pbox = ops.mask_box(predicted)
        if pbox is None or box[2] - box[0] < 4 or box[3] - box[1] < 4:
            track.settle_left -= 1
            return predicted
        region = ops.expand_box(
            box, max(6, (box[2] - box[0] + box[3] - box[1]) // 20), width, height
        )
        inbox = np.zeros((height, width), bool)
        inbox[box[1] : box[3], box[0] : box[2]] = True
        rx0, ry0, rx1, ry1 = region
        sl = np.s_[ry0:ry1, rx0:rx1]
        part = predicted[sl] & inbox[sl]
        core = ops.erode(part, 2)
        if np.count_nonzero(core) < 10:
            core = part
        if not core.any():
            track.settle_left -= 1
            return predicted
        f = flow[sl]
        if float(np.percentile(np.hypot(f[..., 0], f[..., 1]), 99)) < _STILL_FLOW:
            # Nothing moves in the region (a held frame, a still scene): this frame tells no
            # more than the prompt's did. Not counted: wait for motion, up to the patience.
            # (A part moving like its background does count: on the DAVIS dev subset waiting
            # then too settled clicks later, on a drifted region: click J 0.457 -> 0.349.)
            self._wait_for_motion(track)
            return predicted
        track.settle_left -= 1
        # The background's motion (a RANSAC fit) only on frames that count.
        residual = self._background_residual(flow, inbox | predicted, region)
        if residual is None:
            return predicted
        m_obj = float(np.median(residual[core]))
        if m_obj < cfg.motion_gate:
            return predicted
        if self._confidence(track, frame, predicted) < cfg.lost_confidence:
            # The part no longer looks like the object (it left, or something covers it):
            # what moves there is not it. Settling would learn the object's colours again
            # from that and draw a phantom there for good; the loss check decides instead.
            return predicted
        moving = (residual > 0.5 * m_obj).astype(np.uint8)
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, ops.disc(1)).astype(bool)
        labels = np.full(part.shape, cv2.GC_BGD, np.uint8)
        labels[inbox[sl]] = cv2.GC_PR_BGD
        labels[inbox[sl] & moving] = cv2.GC_PR_FGD
        sure = core & (residual > 0.7 * m_obj)
        labels[sure] = cv2.GC_FGD
        out = ops.grabcut(np.ascontiguousarray(frame.rgb[sl]), labels, 2)
        if out is None:
            return predicted
        cut = (out == cv2.GC_FGD) | (out == cv2.GC_PR_FGD)
        cut = ops.fill_holes(ops.keep_components(cut, sure if sure.any() else core, 0.15))
        if np.count_nonzero(cut & part) < 0.5 * np.count_nonzero(part):
            return predicted  # lost most of the tracked part: a flow failure, not the object
        settled = np.zeros((height, width), bool)
        settled[sl] = cut
        self._relearn(track, frame, settled)
        return settled

    def _relearn(self, track: _Track, frame: _Frame, mask: BoolArray) -> None:
        """The object's colour models, reference area and fit learnt again from `mask` (as
        at a prompt: `_new_track`)."""
        area = float(np.count_nonzero(mask))
        track.fg = ops.histogram(frame.bins, ops.erode(mask, 1) if area > 50 else mask)
        track.bg = ops.histogram(frame.bins, ~ops.dilate(mask, 2))
        band = ops.dilate(mask, 6) & ~ops.dilate(mask, 2)
        track.local_bg = ops.histogram(frame.bins, band)
        fit = ops.mean_over(ops.ratio_lut(track.fg, track.bg)[frame.bins], mask)
        track.ref_fit = max(fit, 0.05)
        track.ref_area = max(area, 1.0)
        if self.config.refine == "grabcut" and self.config.grabcut_frozen:
            x0, y0, x1, y1 = self._model_roi(mask, frame)
            track.gmm = ops.grabcut_models(frame.rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1])

    def _recenter(self, track: _Track, frame: _Frame, predicted: BoolArray) -> BoolArray:
        """Correct the flow's prediction by mean shift on the object's colour evidence.

        Dense flow fails on fast motion over periodic textures (a checker moved by more than
        half its period aliases); the colour mass of the object does not. The shifted mask is
        kept only when its colours fit the object better than the flow's prediction.
        """
        box = ops.mask_box(predicted)
        if box is None:
            return predicted
        height, width = frame.shape
        bw, bh = box[2] - box[0], box[3] - box[1]
        roi = ops.expand_box(box, max(8, max(bw, bh) // 2), width, height)
        x0, y0, x1, y1 = roi
        lut = ops.ratio_lut(track.fg, 0.5 * track.bg + 0.5 * track.local_bg)
        evidence = lut[frame.bins[y0:y1, x0:x1]]
        prob = (np.clip(evidence - 0.5, 0.0, 0.5) * 510).astype(np.uint8)
        window = (box[0] - x0, box[1] - y0, bw, bh)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.5)
        _, (nx, ny, _, _) = cv2.meanShift(prob, window, criteria)
        dx, dy = nx - window[0], ny - window[1]
        if abs(dx) + abs(dy) < 2:
            return predicted
        shift = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
        moved = ops.warp_mask(predicted, ops.Motion(shift, 1.0))
        # Both masks lie in the ROI (mean shift keeps its window inside the image it searches).
        sl = np.s_[y0:y1, x0:x1]
        if ops.mean_over(evidence, moved[sl]) > ops.mean_over(evidence, predicted[sl]) + 0.02:
            return moved
        return predicted

    def _resegment(
        self, track: _Track, frame: _Frame, predicted: BoolArray
    ) -> tuple[BoolArray, ops.Box, FloatArray] | None:
        """Colour evidence + shape prior near `predicted`: (mask, roi, probability in roi)."""
        box = ops.mask_box(predicted)
        if box is None:
            return None
        height, width = frame.shape
        area = float(np.count_nonzero(predicted))
        roi = ops.expand_box(box, max(4, int(0.25 * math.sqrt(area))), width, height)
        x0, y0, x1, y1 = roi
        sl = np.s_[y0:y1, x0:x1]
        bg = 0.5 * track.bg + 0.5 * track.local_bg
        evidence = ops.ratio_lut(track.fg, bg)[frame.bins[sl]]
        evidence = np.asarray(
            cv2.GaussianBlur(evidence, (0, 0), self.config.evidence_sigma), dtype=np.float32
        )
        if self.config.context_sigma > 0:
            # Ambiguous colours (evidence near 0.5: shared with the background) take the
            # evidence of their neighbourhood: a light stripe between dark ones belongs with
            # them. Clear colours keep their own, so edges stay sharp.
            context = cv2.GaussianBlur(evidence, (0, 0), self.config.context_sigma)
            ambiguity = 1.0 - np.abs(2.0 * evidence - 1.0)
            evidence = (1.0 - ambiguity) * evidence + ambiguity * context
        post = ops.posterior(evidence, predicted[sl], self.config.softness)
        post = np.asarray(cv2.GaussianBlur(post, (5, 5), 0), dtype=np.float32)
        local = post > 0.5
        local = cv2.morphologyEx(local.astype(np.uint8), cv2.MORPH_OPEN, ops.disc(1)).astype(bool)
        core = ops.erode(predicted[sl], 2)
        local = ops.fill_holes(ops.keep_components(local, core if core.any() else None, 0.15))
        if not local.any():
            return None
        mask = np.zeros((height, width), bool)
        mask[sl] = local
        return mask, roi, post

    def _confidence(self, track: _Track, frame: _Frame, mask: BoolArray) -> float:
        """Colour fit to the object's model, relative to the prompt's, times an area factor."""
        lut = ops.ratio_lut(track.fg, track.bg)
        fit = ops.mean_evidence(lut, frame.bins, mask) / track.ref_fit
        q = float(np.count_nonzero(mask)) / track.ref_area
        area_factor = min(1.0, q / 0.5) if q < 1.0 else min(1.0, 2.5 / q)
        return float(np.clip(fit, 0.0, 1.0) * math.sqrt(max(area_factor, 0.0)))

    def _learn(
        self, track: _Track, frame: _Frame, mask: BoolArray, roi: ops.Box, confidence: float
    ) -> None:
        """Follow slow changes of look and size while the track is confident."""
        x0, y0, x1, y1 = roi
        sl = np.s_[y0:y1, x0:x1]
        local = mask[sl]
        ys, xs = np.nonzero(local)
        track.last_center = (float(xs.mean()) + x0, float(ys.mean()) + y0)
        band = ops.dilate(local, 6) & ~ops.dilate(local, 2)
        track.local_bg = ops.histogram(frame.bins[sl], band)
        area = float(np.count_nonzero(mask))
        q = area / track.ref_area
        if confidence < 0.6 or not 0.6 < q < 1.6:
            return  # occluded, leaving, or doubtful: keep the reference
        a = self.config.color_update
        inner = ops.erode(local, 1)
        track.fg = (1 - a) * track.fg + a * ops.histogram(
            frame.bins[sl], inner if inner.any() else local
        )
        # The rest of the frame: all of it minus the object (and its edge), counted in the ROI.
        rest = frame.counts_all - ops.counts(frame.bins[sl], ops.dilate(local, 2))
        track.bg = (1 - a) * track.bg + a * ops.normalize(np.maximum(rest, 0.0))
        track.ref_area = (1 - a / 2) * track.ref_area + a / 2 * area

    def _lose(self, track: _Track) -> None:
        track.lost = True
        track.lost_for = 0
        track.lookalike = None
        track.anchor = None
        track.still_run = track.moving_run = 0
        if track.motion:
            track.mover = max(track.motion) >= _SLIP_FROM * self.config.motion_gate
        track.motion.clear()
        track.tentative = False
        track.probation = 0
        track.mask = np.zeros_like(track.mask)
        track.confidence = min(track.confidence, self.config.lost_confidence * 0.9)

    def _lose_occluded(self) -> None:
        """Lose the followed objects going behind another followed one (`occluded_fraction`).

        Judged on the masks after the overlaps are resolved; the smaller object is the one
        going behind (two shrunk objects touching: each is judged on its own area)."""
        fraction = self.config.occluded_fraction
        if fraction <= 0:
            return
        followed = {o: t for o, t in self._tracks.items() if not t.lost and t.mask.any()}
        shrunk = [
            o for o, t in followed.items() if np.count_nonzero(t.mask) < fraction * t.ref_area
        ]
        for obj in shrunk:
            track = followed[obj]
            near = ops.dilate(track.mask, 2)
            if any(o != obj and (near & t.mask).any() for o, t in followed.items()):
                self._lose(track)

    def _resolve_overlaps(self, posts: dict[int, tuple[ops.Box, FloatArray]]) -> None:
        """A pixel claimed by two objects goes to the one with the higher probability there."""
        ids = list(posts)
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                ta, tb = self._tracks[a], self._tracks[b]
                both = ta.mask & tb.mask
                if not both.any():
                    continue
                pa = self._full_post(posts[a], both.shape)
                pb = self._full_post(posts[b], both.shape)
                a_wins = pa >= pb
                ta.mask &= ~(both & ~a_wins)
                tb.mask &= ~(both & a_wins)

    @staticmethod
    def _full_post(item: tuple[ops.Box, FloatArray], shape: tuple[int, ...]) -> np.ndarray:
        (x0, y0, x1, y1), post = item
        full = np.zeros(shape, np.float32)
        full[y0:y1, x0:x1] = post
        return full

    def _search(self, track: _Track, frame: _Frame, occupied: BoolArray) -> None:
        """Look for a lost object by its colours; re-acquire it when a candidate convinces."""
        track.lost_for += 1
        if track.lookalike is not None and track.lookalike_gray is not None:
            track.lookalike = self._forget_changed(track.lookalike, track.lookalike_gray, frame)
            track.lookalike_gray = frame.gray
        lut = ops.ratio_lut(track.fg, track.bg)
        evidence = lut[frame.bins]
        evidence[occupied] = 0.0
        if track.slipped:
            # Lost by slipping onto the background: while the camera moves, what moves like
            # the background (the look-alike it slipped onto among it) is not a candidate.
            still = self._background_like(frame)
            if still is not None:
                evidence[still] = 0.0
        k = max(3, int(math.sqrt(track.ref_area) / 3) | 1)
        smooth = cv2.blur(evidence, (k, k))
        n, labels, stats, centroids = cv2.connectedComponentsWithStats(
            (smooth > 0.6).astype(np.uint8), connectivity=8
        )
        if n <= 1:
            return
        areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
        sums = np.bincount(labels.reshape(-1), weights=smooth.reshape(-1), minlength=n)[1:]
        means = sums / np.maximum(areas, 1)
        q = areas / track.ref_area
        plausible = (q >= 0.25) & (q <= _REACQUIRE_MAX_AREA)
        if not plausible.any():
            return
        diag = math.hypot(*frame.shape)
        dist = np.hypot(
            centroids[1:, 0] - track.last_center[0], centroids[1:, 1] - track.last_center[1]
        )
        # Plausible position too: a hidden object moves on, but by at most about 15 % of
        # its size per frame hidden (a look-alike across the frame is not it).
        plausible &= dist <= self._search_reach(track)
        if not plausible.any():
            return
        rank = np.where(plausible, means * np.exp(-dist / diag), -1.0)
        best = 1 + int(np.argmax(rank))
        candidate = labels == best
        result = self._resegment(track, frame, candidate)
        if result is None:
            return
        mask = result[0] & ~occupied
        if track.lookalike is not None:
            # What was refused as a look-alike while the object was lost (a little slack for
            # camera motion) is not the object, also when a candidate takes it in with more.
            mask &= ~ops.dilate(track.lookalike, 3)
        confidence = self._confidence(track, frame, mask)
        area_q = float(np.count_nonzero(mask)) / track.ref_area
        if (
            confidence < self.config.reacquire_confidence
            or not 0.3 <= area_q <= _REACQUIRE_MAX_AREA
        ):
            # The re-segmentation may grow the component; the component's size bound holds for
            # its answer too (on the dev subset it changed nothing measurable: the one case,
            # 3.2x, was taken a frame later at 2.9x).
            return
        # The confidence asks whether every pixel has one of the object's colours; a region
        # of only some of them passes it (a dark cushion for a boy in a white shirt with dark
        # sleeves). The candidate's colours must also be distributed like the object's.
        if self._moves_with_a_neighbour(mask, occupied):
            return  # a part of the followed object it touches (the girl's head for the boy)
        if track.slipped and self._moves_like_background(mask, frame):
            return  # what the mask had slipped onto (or like it): not the object
        similarity = float(np.sum(np.sqrt(ops.histogram(frame.bins, mask) * track.fg)))
        if similarity < self.config.reacquire_similarity:
            # Remembered while lost: this region is not the object.
            refused = mask if track.lookalike is None else mask | track.lookalike
            track.lookalike = refused
            track.lookalike_gray = frame.gray
            return
        track.lost = False
        track.lost_for = 0
        # Re-found after slipping, or after any loss of an object that moved unlike the
        # background: on its first frames it must not move like the background.
        track.probation = _SLIP_WINDOW if track.slipped or track.mover else 0
        track.tentative = track.slipped
        track.slipped = False
        # The look-alikes stay out of its mask for a while: re-found on a part (its colours
        # are theirs), the object would otherwise grow onto the look-alike beside it (the
        # bedroom boy re-found on his sleeve next to the dark cushion spread onto it).
        track.lookalike_left = _LOOKALIKE_FRAMES if track.lookalike is not None else 0
        track.mask = mask
        track.confidence = confidence
        ys, xs = np.nonzero(mask)
        track.last_center = (float(xs.mean()), float(ys.mean()))

    def _moves_with_a_neighbour(self, mask: BoolArray, occupied: BoolArray) -> bool:
        """Whether `mask` touches a followed object (`occupied`) that moves (at least
        `_WITH_NEIGHBOUR` working pixels a frame) and moves with it: the median flow of the
        candidate and of the followed pixels beside it differ by less than `_WITH_NEIGHBOUR`
        (or a third of the candidate's own motion).

        A lost object's colours often occur on the object it went behind (skin, hair); the
        part of that object its mask does not cover moves with it, the lost object coming
        out from behind it does not (the bedroom boy was re-found on the girl's head and
        took her over in one run of the demo). Beside a still object motion tells nothing
        (a cup touching a laptop on a table): the colour checks decide, as before."""
        flow = self._last_flow
        if flow is None or flow.shape[:2] != mask.shape or not occupied.any():
            return False
        near = ops.dilate(mask, 8) & occupied
        if not (ops.dilate(mask, 2) & occupied).any() or np.count_nonzero(near) < 10:
            return False
        own = np.median(flow[mask], axis=0)
        beside = np.median(flow[near], axis=0)
        if float(np.hypot(*beside)) < _WITH_NEIGHBOUR:
            return False
        gap = float(np.hypot(*(own - beside)))
        return gap < max(_WITH_NEIGHBOUR, 0.3 * float(np.hypot(*own)))

    def _background_like(self, frame: _Frame) -> BoolArray | None:
        """The pixels of `frame` moving like the background (residual < `motion_gate`) on
        this step's flow, or None while the camera is still (`_SLIP_BACKGROUND`); once a
        step."""
        if self._still_cache is not None and self._still_cache[0] is frame:
            return self._still_cache[1]
        still: BoolArray | None = None
        flow = self._last_flow
        if flow is not None and flow.shape[:2] == frame.shape:
            magnitude = np.hypot(flow[..., 0], flow[..., 1])
            if float(np.median(magnitude)) >= _SLIP_BACKGROUND:
                height, width = frame.shape
                residual = self._background_residual(
                    flow, np.zeros(frame.shape, bool), (0, 0, width, height)
                )
                if residual is not None:
                    still = residual < self.config.motion_gate
        self._still_cache = (frame, still)
        return still

    def _moves_like_background(self, mask: BoolArray, frame: _Frame) -> bool:
        """Whether most of `mask` moves like the background while the camera moves
        (`_background_like`, this step's map)."""
        still = self._background_like(frame)
        if still is None:
            return False
        return bool(np.count_nonzero(still & mask) > 0.5 * np.count_nonzero(mask))

    @staticmethod
    def _forget_changed(lookalike: BoolArray, seen: np.ndarray, frame: _Frame) -> BoolArray | None:
        """`lookalike` without its regions whose image changed since `seen` (the grey image of
        the last search): `_LOOKALIKE_CHANGE`, `_LOOKALIKE_CHANGED`. None when nothing is left
        (or the stream's size changed)."""
        if seen.shape != frame.gray.shape:
            return None
        changed = cv2.absdiff(frame.gray, seen) > _LOOKALIKE_CHANGE
        n, labels = cv2.connectedComponents(lookalike.astype(np.uint8), connectivity=8)
        if n <= 1:
            return None
        total = np.bincount(labels.reshape(-1), minlength=n)
        moved = np.bincount(labels.reshape(-1), weights=changed.reshape(-1), minlength=n)
        keep = moved <= _LOOKALIKE_CHANGED * total
        keep[0] = False
        kept = keep[labels]
        return kept if kept.any() else None

    # ------------------------------------------------------------------ output
    def _score(self, confidence: float) -> float:
        """Map a confidence so that the lost threshold lands on 0.5."""
        c = float(np.clip(confidence, 0.0, 1.0))
        t = self.config.lost_confidence
        if t <= 0.0:
            return 0.5 + 0.5 * c
        if c < t:
            return 0.5 * c / t
        return 0.5 + 0.5 * (c - t) / (1.0 - t)

    def _downscale(self, mask: BoolArray, frame: _Frame, any_pixel: bool) -> BoolArray:
        height, width = frame.shape
        if mask.shape == (height, width):
            return mask.copy()
        small = cv2.resize(
            mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_AREA
        )
        return small > 0 if any_pixel else small >= 128

    def _upscale(self, mask: BoolArray, frame: _Frame) -> BoolArray:
        full_h, full_w = frame.full_height, frame.full_width
        if mask.shape == (full_h, full_w):
            return mask.copy()
        out = np.zeros((full_h, full_w), bool)
        box = ops.mask_box(mask)
        if box is None:
            return out
        height, width = frame.shape
        x0, y0, x1, y1 = ops.expand_box(box, 2, width, height)
        fx, fy = full_w / width, full_h / height
        X0, Y0 = int(round(x0 * fx)), int(round(y0 * fy))
        X1, Y1 = int(round(x1 * fx)), int(round(y1 * fy))
        patch = cv2.resize(
            mask[y0:y1, x0:x1].astype(np.uint8) * 255,
            (X1 - X0, Y1 - Y0),
            interpolation=cv2.INTER_LINEAR,
        )
        out[Y0:Y1, X0:X1] = patch > 127
        return out

    def _output(self, track: _Track, frame: _Frame) -> MaskOutput:
        if track.lost or track.tentative:
            empty = np.zeros((frame.full_height, frame.full_width), bool)
            return MaskOutput(empty, self._score(track.confidence), False)
        full = track.full_mask if track.full_mask is not None else self._upscale(track.mask, frame)
        return MaskOutput(full, self._score(track.confidence), bool(full.any()))

    def stats(self) -> dict[str, float]:
        lost = sum(1 for t in self._tracks.values() if t.lost)
        return {
            "objects": float(len(self._tracks)),
            "objects_lost": float(lost),
            "frames_in_memory": float(len(self._history)),
        }


class ClassicModel(Model):
    """No weights: the classic "model" is its configuration; each stream (`ClassicBackend`)
    has its own tracks, frame history and optical flow state."""

    name = "classic"
    capabilities = ClassicBackend.capabilities

    def __init__(self, config: ClassicConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassicConfig()

    def _new_stream(self) -> Backend:
        # Nothing is shared but the config: streams need not take turns (no model lock in
        # their calls; `check_open` only refuses once the model is closed).
        return ClassicBackend(self.config)


def load(config: BackendConfig) -> ClassicModel:
    """Registry entry. `input_size` sets the working resolution's long side (0 = 320),
    `memory_frames` the frames kept for past-frame prompts (0 = 30);
    options: any ClassicConfig field (work_size, flow_preset, lost_confidence, ...)."""
    options = dict(config.options)
    if config.input_size and "work_size" not in options:
        options["work_size"] = config.input_size
    if config.memory_frames and "history_frames" not in options:
        options["history_frames"] = config.memory_frames
    return ClassicModel(ClassicConfig.from_options(options, "classic"))


def build(config: BackendConfig) -> ClassicBackend:
    """One stream that owns its model (as `registry.build_backend`); see `load`."""
    model = load(config)
    stream = cast(ClassicBackend, model.open_stream())
    stream.owns_model = True
    return stream
