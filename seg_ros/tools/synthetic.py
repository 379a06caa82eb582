"""Generated video sequences with exact per-object ground truth (pure numpy + OpenCV, no ROS).

Every sequence is deterministic (seeded) and licence-clean: textured objects (noise, stripes,
checker, dots) on a textured background, moving, scaling, rotating, occluding each other, leaving
and re-entering the frame, under changing light, optionally with a panning camera. Ground truth is
the *visible* part of each object (what DAVIS annotates): its polygon minus the objects in front
of it, cropped by the frame. The rendered object pixels are exactly its ground-truth pixels (hard
edges, no antialiasing), so a perfect segmenter scores J = F = 1.

Geometry is resolution independent: positions are fractions of the frame (x of the width, y of
the height; values outside [0, 1] are off-frame), sizes are fractions of min(width, height).
Any size works; the default is 640x480.

    seq = make_sequence("occlusion", 640, 480)
    for t in range(len(seq)):
        frame = seq.frame(t)        # frame.image: RGB uint8 (H, W, 3); frame.masks: {id: bool HxW}

`python -m seg_ros.tools.synthetic --out /tmp/seq` writes a contact sheet of every named sequence.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import math
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from seg_ros.engine.types import BoolArray, RgbImage

Rgb = tuple[int, int, int]

#: Shapes an object can have (outline in object coordinates, radius ~1).
SHAPES = ("ellipse", "rect", "star", "blob")
#: Textures for objects and backgrounds.
TEXTURES = ("noise", "stripes", "checker", "dots", "wood", "tiles")
#: Fixed-point bits for cv2.fillPoly: sub-pixel accurate outlines.
_SHIFT = 4


@dataclass(frozen=True)
class Key:
    """A keyframe of an object's motion.

    Attributes:
        t: time as a fraction of the sequence, in [0, 1].
        x, y: centre as fractions of the frame width / height (outside [0, 1] = off-frame).
        scale: size multiplier (1 = the object's `radius`).
        angle: rotation in degrees, counter-clockwise on screen.
    """

    t: float
    x: float
    y: float
    scale: float = 1.0
    angle: float = 0.0


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a sequence.

    Attributes:
        shape: one of SHAPES.
        radius: half-size as a fraction of min(width, height) at scale 1.
        aspect: height / width of the outline (ellipse, rect).
        texture: one of TEXTURES.
        colors: the texture's two RGB colours.
        keys: motion keyframes, sorted by t; between keys the motion eases in and out.
        depth: drawing order; a higher depth is in front.
        label: a human name, for overlays.
    """

    shape: str
    radius: float
    texture: str
    colors: tuple[Rgb, Rgb]
    keys: tuple[Key, ...]
    aspect: float = 1.0
    depth: int = 0
    label: str = ""

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}; got '{self.shape}'")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {TEXTURES}; got '{self.texture}'")
        if not self.keys:
            raise ValueError("an object needs at least one keyframe")
        if any(b.t < a.t for a, b in itertools.pairwise(self.keys)):
            raise ValueError("keyframes must be sorted by t")
        if self.radius <= 0 or self.aspect <= 0:
            raise ValueError("radius and aspect must be > 0")


@dataclass(frozen=True)
class SequenceSpec:
    """A named sequence.

    Attributes:
        name: identifier ("translate", "occlusion", ...).
        num_frames: length.
        objects: the objects; their ids are 1, 2, ... in this order.
        background: texture of the background (one of TEXTURES).
        bg_colors: the background texture's two RGB colours.
        light: (t, gain) keyframes: the whole frame is multiplied by the gain.
        pan: (t, dx, dy) keyframes: camera pan, the background moves by (-dx, -dy) as fractions
            of min(width, height).
        seed: seeds every random texture.
    """

    name: str
    num_frames: int
    objects: tuple[ObjectSpec, ...]
    background: str = "noise"
    bg_colors: tuple[Rgb, Rgb] = ((96, 110, 96), (150, 150, 132))
    light: tuple[tuple[float, float], ...] = ((0.0, 1.0),)
    pan: tuple[tuple[float, float, float], ...] = ((0.0, 0.0, 0.0),)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError("num_frames must be >= 1")
        if self.background not in TEXTURES:
            raise ValueError(f"background must be one of {TEXTURES}; got '{self.background}'")


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One rendered frame.

    Attributes:
        index: frame number.
        image: RGB uint8 (H, W, 3).
        masks: object id (1, 2, ...) -> bool (H, W) visible ground truth (may be empty).
        full_masks: object id -> bool (H, W) whole object, occluded parts included.
    """

    index: int
    image: RgbImage
    masks: dict[int, BoolArray] = field(default_factory=dict)
    full_masks: dict[int, BoolArray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------- textures
def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Value noise in [0, 1], float32 (H, W): random values on a grid of `cell` px, upsampled."""
    gh = max(2, int(math.ceil(height / cell)) + 1)
    gw = max(2, int(math.ceil(width / cell)) + 1)
    grid = rng.random((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:height, :width], 0.0, 1.0)


def make_texture(
    kind: str, colors: tuple[Rgb, Rgb], height: int, width: int, scale: float, seed: int
) -> RgbImage:
    """A (height, width) RGB uint8 texture mixing two colours.

    `scale` is the pattern's characteristic size in pixels (stripe period, checker cell, noise
    blob). A fine grain noise (+-8 levels) is added everywhere, like a camera's.
    """
    if kind not in TEXTURES:
        raise ValueError(f"texture must be one of {TEXTURES}; got '{kind}'")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = max(2.0, float(scale))
    if kind == "noise":
        w = 0.65 * _smooth_noise(rng, height, width, scale) + 0.35 * _smooth_noise(
            rng, height, width, scale / 3
        )
        w = np.clip((w - 0.2) / 0.6, 0, 1)
    elif kind == "stripes":
        phase = 2 * np.pi * (xx * 0.8 + yy * 0.6) / scale
        w = 0.5 + 0.5 * np.sin(phase)
        w = np.clip((w - 0.5) * 3 + 0.5, 0, 1)
    elif kind == "checker":
        w = ((np.floor(xx / scale) + np.floor(yy / scale)) % 2).astype(np.float32)
    elif kind == "dots":
        cx = (xx % scale) - scale / 2
        cy = (yy % scale) - scale / 2
        w = (cx**2 + cy**2 < (0.3 * scale) ** 2).astype(np.float32)
    elif kind == "wood":
        warp = 0.4 * scale * _smooth_noise(rng, height, width, 4 * scale)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * (yy + warp) / (0.5 * scale))
        w = 0.7 * w + 0.3 * _smooth_noise(rng, height, width, scale / 2)
    else:  # tiles: square tiles with dark grout and a slight per-tile tint
        tile = np.floor(xx / scale) * 7 + np.floor(yy / scale) * 13
        w = 0.3 + 0.4 * ((np.sin(tile) + 1) / 2)
        grout = ((xx % scale) < 0.08 * scale) | ((yy % scale) < 0.08 * scale)
        w = np.where(grout, 1.0, w).astype(np.float32)
    c0 = np.asarray(colors[0], np.float32)
    c1 = np.asarray(colors[1], np.float32)
    img = c0 * (1 - w[..., None]) + c1 * w[..., None]
    img += rng.normal(0.0, 4.0, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _outline(shape: str, aspect: float, n: int = 96) -> np.ndarray:
    """(n, 2) float32 outline in object coordinates, radius ~1, counter-clockwise."""
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    if shape == "ellipse":
        r = np.ones_like(phi)
    elif shape == "star":
        k = 5
        frac = (phi * k / (2 * np.pi)) % 1.0
        r = 0.55 + 0.45 * np.abs(1 - 2 * frac)  # straight-ish spikes, inner radius 0.55
    elif shape == "blob":
        r = 1 + 0.14 * np.sin(3 * phi + 0.5) + 0.08 * np.cos(5 * phi)
    else:  # rect: a square by angle, then the aspect squeeze below
        c, s = np.abs(np.cos(phi)), np.abs(np.sin(phi))
        r = 1.0 / np.maximum(np.maximum(c, s), 1e-6)
        r = np.minimum(r, 1.0 / np.maximum(c, 1e-6))
    pts = np.stack([r * np.cos(phi), r * np.sin(phi) * aspect], axis=1)
    return pts.astype(np.float32)


def _interp(keys: tuple[Key, ...], t: float) -> Key:
    """The pose at time fraction `t`, easing (smoothstep) between keyframes."""
    if t <= keys[0].t:
        return keys[0]
    for a, b in itertools.pairwise(keys):
        if t <= b.t:
            u = 0.0 if b.t == a.t else (t - a.t) / (b.t - a.t)
            u = u * u * (3 - 2 * u)
            return Key(
                t,
                a.x + (b.x - a.x) * u,
                a.y + (b.y - a.y) * u,
                a.scale + (b.scale - a.scale) * u,
                a.angle + (b.angle - a.angle) * u,
            )
    return keys[-1]


def _interp_table(table: tuple[tuple[float, ...], ...], t: float) -> tuple[float, ...]:
    """Linear interpolation in a (t, v1, v2, ...) table sorted by t."""
    if t <= table[0][0]:
        return table[0][1:]
    for a, b in itertools.pairwise(table):
        if t <= b[0]:
            u = 0.0 if b[0] == a[0] else (t - a[0]) / (b[0] - a[0])
            return tuple(va + (vb - va) * u for va, vb in zip(a[1:], b[1:], strict=True))
    return table[-1][1:]


# ---------------------------------------------------------------------------------- rendering
class SyntheticSequence:
    """Renders a `SequenceSpec` at a given size, frame by frame (nothing is precomputed but the
    textures, so a long sequence costs no memory)."""

    def __init__(self, spec: SequenceSpec, width: int = 640, height: int = 480) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frames must be at least 16x16; got {width}x{height}")
        self.spec = spec
        self.width = int(width)
        self.height = int(height)
        self.unit = float(min(width, height))
        # Background canvas large enough for the pan range.
        pans = np.asarray([p[1:] for p in spec.pan], np.float32) * self.unit
        self._pan_min = np.floor(pans.min(axis=0)).astype(int)
        span = np.ceil(pans.max(axis=0)).astype(int) - self._pan_min
        self._background = make_texture(
            spec.background,
            spec.bg_colors,
            self.height + int(span[1]) + 1,
            self.width + int(span[0]) + 1,
            scale=0.08 * self.unit,
            seed=spec.seed * 1000 + 1,
        )
        self._textures: list[RgbImage] = []
        for k, obj in enumerate(spec.objects):
            side = int(math.ceil(3.0 * obj.radius * self.unit * max(1.0, obj.aspect)))
            side = max(side, 8)
            self._textures.append(
                make_texture(
                    obj.texture,
                    obj.colors,
                    side,
                    side,
                    scale=0.35 * obj.radius * self.unit,
                    seed=spec.seed * 1000 + 10 + k,
                )
            )
        self._outlines = [_outline(o.shape, o.aspect) for o in spec.objects]

    def __len__(self) -> int:
        return self.spec.num_frames

    @property
    def object_ids(self) -> list[int]:
        return list(range(1, len(self.spec.objects) + 1))

    @property
    def labels(self) -> dict[int, str]:
        return {i + 1: o.label or f"{o.texture} {o.shape}" for i, o in enumerate(self.spec.objects)}

    def _time(self, index: int) -> float:
        n = self.spec.num_frames
        return 0.0 if n <= 1 else index / (n - 1)

    def pose(self, obj_index: int, index: int) -> Key:
        """The pose of object `obj_index` (0-based) on frame `index`."""
        return _interp(self.spec.objects[obj_index].keys, self._time(index))

    def _polygon(self, obj_index: int, pose: Key) -> np.ndarray:
        obj = self.spec.objects[obj_index]
        r = obj.radius * self.unit * pose.scale
        a = math.radians(pose.angle)
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], np.float32)
        pts = self._outlines[obj_index] @ rot.T * r
        pts[:, 0] += pose.x * self.width
        pts[:, 1] += pose.y * self.height
        return pts

    def object_mask(self, obj_id: int, index: int) -> BoolArray:
        """The whole outline of object `obj_id` (1-based) on frame `index`, occlusion ignored
        (cheap: no texture is rendered)."""
        return self._fill(obj_id - 1, self.pose(obj_id - 1, index))

    def _fill(self, obj_index: int, pose: Key) -> BoolArray:
        poly = self._polygon(obj_index, pose)
        mask8 = np.zeros((self.height, self.width), np.uint8)
        fixed = np.round(poly * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(mask8, [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        return mask8.astype(bool)

    def _object_layer(self, obj_index: int, pose: Key) -> tuple[BoolArray, RgbImage | None]:
        """The object's full mask and its texture warped into the frame (None when off-frame)."""
        mask = self._fill(obj_index, pose)
        if not mask.any():
            return mask, None
        tex = self._textures[obj_index]
        side = tex.shape[0]
        # Texture pixel (u, v) -> frame: rotate + scale about the texture centre, then translate.
        s = pose.scale
        a = math.radians(pose.angle)
        c, sn = math.cos(a) * s, math.sin(a) * s
        cx, cy = pose.x * self.width, pose.y * self.height
        half = side / 2.0
        m = np.array(
            [[c, sn, cx - c * half - sn * half], [-sn, c, cy + sn * half - c * half]], np.float32
        )
        warped = cv2.warpAffine(
            tex, m, (self.width, self.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        return mask, np.asarray(warped, np.uint8)

    def frame(self, index: int) -> SyntheticFrame:
        """Render frame `index` (0-based) with its ground truth."""
        if not 0 <= index < self.spec.num_frames:
            raise IndexError(f"frame {index} outside 0..{self.spec.num_frames - 1}")
        t = self._time(index)
        dx, dy = _interp_table(self.spec.pan, t)
        ox = int(round(dx * self.unit)) - int(self._pan_min[0])
        oy = int(round(dy * self.unit)) - int(self._pan_min[1])
        image = self._background[oy : oy + self.height, ox : ox + self.width].copy()
        order = sorted(range(len(self.spec.objects)), key=lambda k: self.spec.objects[k].depth)
        full: dict[int, BoolArray] = {}
        visible: dict[int, BoolArray] = {}
        for k in order:
            mask, warped = self._object_layer(k, self.pose(k, index))
            full[k + 1] = mask
            if warped is not None:
                image[mask] = warped[mask]
                for other in visible.values():  # objects drawn earlier are behind this one
                    other &= ~mask
            visible[k + 1] = mask.copy()
        (gain,) = _interp_table(self.spec.light, t)
        if gain != 1.0:
            image = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
        ids = sorted(visible)
        return SyntheticFrame(index, image, {i: visible[i] for i in ids}, {i: full[i] for i in ids})

    def __iter__(self) -> Iterator[SyntheticFrame]:
        for i in range(self.spec.num_frames):
            yield self.frame(i)

    def first_visible(self, obj_id: int, min_pixels: int = 64) -> int | None:
        """First frame where object `obj_id` shows at least `min_pixels` pixels, else None."""
        for i in range(self.spec.num_frames):
            if int(self.frame(i).masks[obj_id].sum()) >= min_pixels:
                return i
        return None


# ---------------------------------------------------------------------------------- catalogue
_RED: tuple[Rgb, Rgb] = ((200, 40, 40), (240, 120, 70))
_BLUE: tuple[Rgb, Rgb] = ((30, 60, 190), (90, 160, 230))
_YELLOW: tuple[Rgb, Rgb] = ((230, 200, 40), (250, 240, 150))
_PURPLE: tuple[Rgb, Rgb] = ((120, 40, 150), (210, 120, 220))
_GREEN: tuple[Rgb, Rgb] = ((20, 130, 60), (140, 220, 90))
_BG_GREY: tuple[Rgb, Rgb] = ((90, 96, 88), (160, 156, 140))
_BG_SAND: tuple[Rgb, Rgb] = ((150, 130, 100), (205, 190, 160))


def _catalogue() -> dict[str, SequenceSpec]:
    seqs = [
        SequenceSpec(
            "translate",
            60,
            (
                ObjectSpec(
                    "ellipse", 0.12, "noise", _RED,
                    (Key(0, 0.2, 0.3), Key(1, 0.75, 0.55)), aspect=0.75, label="red ellipse",
                ),
                ObjectSpec(
                    "rect", 0.10, "stripes", _BLUE,
                    (Key(0, 0.8, 0.7, angle=10), Key(1, 0.3, 0.35, angle=10)), aspect=0.7,
                    label="blue box",
                ),
            ),
            background="noise",
            bg_colors=_BG_GREY,
            seed=1,
        ),
        SequenceSpec(
            "scale_rotate",
            60,
            (
                ObjectSpec(
                    "star", 0.16, "checker", _YELLOW,
                    (Key(0, 0.35, 0.5, 0.8, 0), Key(1, 0.55, 0.45, 1.4, 160)), label="star",
                ),
                ObjectSpec(
                    "rect", 0.09, "dots", _PURPLE,
                    (Key(0, 0.8, 0.25, 1.2, 0), Key(1, 0.8, 0.7, 0.7, -90)), aspect=0.6,
                    label="dotted card",
                ),
            ),
            background="wood",
            bg_colors=_BG_SAND,
            seed=2,
        ),
        SequenceSpec(
            "occlusion",
            70,
            (
                ObjectSpec(
                    "ellipse", 0.10, "noise", _RED,
                    (Key(0, 0.15, 0.5), Key(1, 0.85, 0.5)), depth=0, label="red ball (behind)",
                ),
                ObjectSpec(
                    "rect", 0.17, "stripes", _BLUE,
                    (Key(0, 0.5, 0.45, angle=5), Key(1, 0.52, 0.5, angle=-5)), aspect=0.9,
                    depth=1, label="blue board (front)",
                ),
            ),
            background="tiles",
            bg_colors=_BG_GREY,
            seed=3,
        ),
        SequenceSpec(
            "exit_reenter",
            70,
            (
                ObjectSpec(
                    "blob", 0.10, "checker", _GREEN,
                    (Key(0, 0.5, 0.5), Key(0.35, 1.3, 0.45), Key(0.55, 1.3, 0.55),
                     Key(1, 0.6, 0.5)),
                    label="green blob",
                ),
                ObjectSpec(
                    "ellipse", 0.08, "dots", _PURPLE,
                    (Key(0, 0.25, 0.25), Key(1, 0.3, 0.75)), label="purple disc",
                ),
            ),
            background="noise",
            bg_colors=_BG_SAND,
            seed=4,
        ),
        SequenceSpec(
            "lighting",
            60,
            (
                ObjectSpec(
                    "blob", 0.12, "noise", _BLUE,
                    (Key(0, 0.3, 0.4), Key(1, 0.6, 0.6)), label="blue blob",
                ),
                ObjectSpec(
                    "star", 0.11, "stripes", _RED,
                    (Key(0, 0.75, 0.65, 1.0, 0), Key(1, 0.7, 0.35, 1.0, 90)), label="red star",
                ),
            ),
            background="tiles",
            bg_colors=_BG_SAND,
            light=((0.0, 1.0), (0.3, 0.55), (0.6, 0.55), (1.0, 1.25)),
            seed=5,
        ),
        SequenceSpec(
            "crowd",
            80,
            (
                ObjectSpec(
                    "ellipse", 0.09, "checker", _YELLOW,
                    (Key(0, 0.15, 0.3), Key(1, 0.85, 0.7)), depth=2, label="yellow",
                ),
                ObjectSpec(
                    "rect", 0.09, "noise", _RED,
                    (Key(0, 0.85, 0.3, angle=0), Key(1, 0.15, 0.7, angle=120)), depth=1,
                    label="red",
                ),
                ObjectSpec(
                    "blob", 0.10, "stripes", _BLUE,
                    (Key(0, 0.5, 0.8, 0.8), Key(1, 0.5, 0.2, 1.2)), depth=0, label="blue",
                ),
            ),
            background="wood",
            bg_colors=_BG_GREY,
            pan=((0.0, 0.0, 0.0), (1.0, 0.25, 0.05)),
            seed=6,
        ),
        # Hard on colour models: each object shares one of its two colours with the background.
        SequenceSpec(
            "camouflage",
            60,
            (
                ObjectSpec(
                    "blob", 0.13, "stripes", ((150, 130, 100), (95, 70, 45)),
                    (Key(0, 0.3, 0.35, 1.0, 0), Key(1, 0.65, 0.6, 1.1, 45)),
                    label="striped blob",
                ),
                ObjectSpec(
                    "rect", 0.10, "checker", ((205, 190, 160), (150, 60, 50)),
                    (Key(0, 0.75, 0.7, 1.0, 20), Key(1, 0.45, 0.3, 0.9, -20)), aspect=0.8,
                    depth=1, label="checker card",
                ),
            ),
            background="noise",
            bg_colors=_BG_SAND,
            seed=7,
        ),
    ]  # fmt: skip
    return {s.name: s for s in seqs}


#: Benchmark sequences, in the order the quality benchmark reports them.
SEQUENCES: tuple[str, ...] = (
    "translate",
    "scale_rotate",
    "occlusion",
    "exit_reenter",
    "lighting",
    "crowd",
    "camouflage",
)

#: Frames of the demo clip (loops seamlessly: the last frame leads back to the first).
DEMO_FRAMES = 300
#: Fraction of the demo clip during which nothing moves, so that prompts made from
#: `demo_plan` land on their objects even when the client starts late.
_DEMO_HOLD = 0.12


def demo_spec(num_frames: int = DEMO_FRAMES) -> SequenceSpec:
    """The demo clip: three toys on a tiled floor, still for a moment, then moving in loops.

    Object 1 (red ball) circles by less than its own radius, so the demo's click point stays on
    it for the whole clip; object 2 (blue box) rests during the hold, so the demo's box fits it.
    """
    h = _DEMO_HOLD
    # Keyframes of a closed loop after the hold: t in [h, 1] maps to angle 0..2pi.
    ts = [h + (1 - h) * k / 8 for k in range(9)]

    def loop(
        cx: float, cy: float, rx: float, ry: float, turns: float, spin: float
    ) -> tuple[Key, ...]:
        keys = [Key(0.0, cx + rx, cy, 1.0, 0.0)]
        for k, t in enumerate(ts):
            a = 2 * math.pi * turns * k / 8
            keys.append(Key(t, cx + rx * math.cos(a), cy + ry * math.sin(a), 1.0, spin * k / 8))
        return tuple(keys)

    # The box rests during the hold, then swings along a closed arc, tilting back and forth.
    swing = [
        Key(
            t,
            0.7 - 0.12 * math.sin(2 * math.pi * k / 8),
            0.35 + 0.12 * (1 - math.cos(2 * math.pi * k / 8)),
            1.0,
            30 * math.sin(2 * math.pi * k / 8),
        )
        for k, t in enumerate(ts)
    ]
    box_keys = (Key(0.0, 0.7, 0.35), *swing)
    objects = (
        ObjectSpec(
            "ellipse", 0.12, "noise", ((205, 35, 35), (245, 110, 60)),
            loop(0.3, 0.42, 0.05, 0.06, 1, 0.0), label="red ball",
        ),
        ObjectSpec(
            "rect", 0.10, "stripes", ((25, 70, 200), (100, 170, 240)),
            box_keys,
            aspect=0.7, depth=1, label="blue box",
        ),
        ObjectSpec(
            "star", 0.09, "checker", ((235, 200, 30), (250, 245, 170)),
            loop(0.55, 0.75, 0.25, 0.04, 1, 360.0), depth=2, label="yellow star",
        ),
    )  # fmt: skip
    return SequenceSpec(
        "demo",
        num_frames,
        objects,
        background="tiles",
        bg_colors=((110, 120, 112), (170, 168, 150)),
        light=((0.0, 1.0), (0.5, 0.85), (1.0, 1.0)),
        seed=42,
    )


@functools.cache
def _named() -> dict[str, SequenceSpec]:
    return {**_catalogue(), "demo": demo_spec()}


def sequence_names() -> list[str]:
    """Every named sequence (benchmark ones first, then "demo")."""
    return [*SEQUENCES, "demo"]


def make_sequence(
    name: str, width: int = 640, height: int = 480, num_frames: int = 0
) -> SyntheticSequence:
    """The named sequence at `width` x `height`; `num_frames` > 0 replaces its length (the
    motion is stretched or squeezed to fit)."""
    specs = _named()
    if name not in specs:
        raise ValueError(f"unknown sequence '{name}'; choose one of {', '.join(sequence_names())}")
    spec = specs[name]
    if num_frames > 0:
        spec = SequenceSpec(
            spec.name,
            num_frames,
            spec.objects,
            spec.background,
            spec.bg_colors,
            spec.light,
            spec.pan,
            spec.seed,
        )
    return SyntheticSequence(spec, width, height)


def box_of(mask: BoolArray) -> tuple[int, int, int, int] | None:
    """Tight (x0, y0, x1, y1) box of a mask, x1 / y1 exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def interior_point(mask: BoolArray) -> tuple[float, float] | None:
    """The pixel centre of `mask` farthest from its boundary, (x, y); None when empty."""
    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write a contact sheet of each sequence")
    parser.add_argument("--out", default="synthetic_out")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in sequence_names():
        seq = make_sequence(name, args.width, args.height)
        picks = np.linspace(0, len(seq) - 1, 6).astype(int)
        tiles = []
        for i in picks:
            f = seq.frame(int(i))
            img = cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR)
            for m in f.masks.values():
                contours, _ = cv2.findContours(
                    m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
                )
                cv2.drawContours(img, contours, -1, (255, 255, 255), 1)
            tiles.append(cv2.resize(img, (args.width // 2, args.height // 2)))
        sheet = np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])
        cv2.imwrite(str(out / f"{name}.png"), sheet)
        print(out / f"{name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
