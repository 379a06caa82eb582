"""Masked depth -> 3D: centroid, robust extent and points of one object (camera optical frame).

numpy only (no rclpy, no message imports): `Intrinsics.from_camera_info` and
`depth_array_from_msg` are duck-typed on the message fields, so this module is tested without ROS.

Frames and units: the camera optical frame (REP 103: x right, y down, z forward), metres. A pixel
(u, v) is the integer column / row; its centre projects through the pinhole model

    x = (u - cx) * z / fx,    y = (v - cy) * z / fy,    z = depth(u, v)

which is the convention of sensor_msgs/CameraInfo's K and of OpenCV.

Assumption (documented, not checkable from the data): the depth image is *registered* to the colour
image, i.e. both cover the same field of view from the same optical centre (RealSense
`aligned_depth_to_color`, ZED / OAK "depth aligned to RGB", `depth_image_proc/register`). Then a
resolution mismatch is a pure scaling: the colour-resolution mask is resized to the depth
resolution with nearest-neighbour, and K is scaled from the resolution it was calibrated for
(CameraInfo width / height) to the depth resolution, as `image_proc`'s resize does
(fx, cx scale with the width ratio; fy, cy with the height ratio). Images whose aspect ratios differ
cannot be registered views of one another and are refused. The depth image's distortion is ignored
(registered depth is published rectified).

Robustness: invalid depths (0, NaN, inf, negative, outside [min_depth_m, max_depth_m]) are holes and
ignored. Mask edges bleed onto the background and depth sensors produce flying pixels, so points are
gated on depth around the median: |z - median| <= max(gate_mads * 1.4826 * MAD, min_gate_m), where
MAD is the median absolute deviation (1.4826 * MAD estimates the standard deviation of a normal).
The extent is then the `extent_percentile` .. (100 - extent_percentile) range of the inliers per
axis, and the centroid the mean of the inliers: the centre of the *visible surface*, which is what
a depth camera sees (a sphere's centroid lies on its front cap, not at its centre). For speed the
median, MAD and percentiles use at most `max_stat_points` evenly strided points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from seg_ros.engine.errors import FrameError
from seg_ros.engine.types import BoolArray, FloatArray

#: Depth encodings accepted by `depth_array_from_msg`: encoding -> (dtype, scale to metres).
DEPTH_ENCODINGS: dict[str, tuple[str, float]] = {
    "16UC1": ("u2", 0.001),
    "mono16": ("u2", 0.001),
    "32FC1": ("f4", 1.0),
}

#: Relative aspect-ratio difference above which depth and colour cannot be registered views.
_ASPECT_TOLERANCE = 0.02

_NAN3 = (math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of `width` x `height` pixels.

    Attributes:
        fx, fy: focal lengths in pixels (> 0).
        cx, cy: principal point in pixels (column, row of the optical axis).
        width, height: the image size these values belong to (> 0).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"intrinsics must be finite; got fx, fy, cx, cy = {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be > 0; got fx={self.fx}, fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be > 0; got {self.width}x{self.height}")

    @classmethod
    def from_camera_info(cls, msg: Any) -> Intrinsics:
        """From a sensor_msgs/CameraInfo: anything with `k` (9 floats, row-major), width, height.

        Raises:
            ValueError: K is missing / all zero (an uncalibrated camera), or the size is 0.
        """
        k = [float(v) for v in msg.k]
        if len(k) != 9:
            raise ValueError(f"CameraInfo.k must have 9 values; got {len(k)}")
        if k[0] == 0.0 or k[4] == 0.0:
            raise ValueError("CameraInfo.k has a zero focal length: the camera is not calibrated")
        return cls(fx=k[0], fy=k[4], cx=k[2], cy=k[5], width=int(msg.width), height=int(msg.height))

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution of the same field of view (image_proc's resize)."""
        if (width, height) == (self.width, self.height):
            return self
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be > 0; got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=self.cx * sx,
            cy=self.cy * sy,
            width=width,
            height=height,
        )


@dataclass(frozen=True)
class DepthParams:
    """How masked depth becomes a robust 3D estimate.

    Attributes:
        min_points: fewer valid inlier points than this -> unknown (NaN) geometry.
        gate_mads: depth gate half-width in robust standard deviations (1.4826 * MAD).
        min_gate_m: the gate is never narrower than this (metres): a flat object has MAD ~ 0.
        extent_percentile: the extent spans this .. (100 - this) percentile per axis (0 = min/max).
        min_depth_m, max_depth_m: depths outside (min, max] metres are holes (sensor range).
        max_stat_points: the median / MAD / mean / percentiles are computed on at most this many
            evenly strided points (0 = all): at 20 000 the rank error of a percentile is < 0.1 %
            while a 100k-pixel object costs ~5x less. Gating and `points` still use every point.
    """

    min_points: int = 10
    gate_mads: float = 3.5
    min_gate_m: float = 0.05
    extent_percentile: float = 1.0
    min_depth_m: float = 0.0
    max_depth_m: float = math.inf
    max_stat_points: int = 20_000

    def __post_init__(self) -> None:
        if self.max_stat_points < 0:
            raise ValueError(f"max_stat_points must be >= 0; got {self.max_stat_points}")
        if self.min_points < 1:
            raise ValueError(f"min_points must be >= 1; got {self.min_points}")
        if not self.gate_mads > 0 or not self.min_gate_m >= 0:
            raise ValueError("gate_mads must be > 0 and min_gate_m >= 0")
        if not 0.0 <= self.extent_percentile < 50.0:
            raise ValueError(f"extent_percentile must be in [0, 50); got {self.extent_percentile}")
        if not 0.0 <= self.min_depth_m < self.max_depth_m:
            raise ValueError("need 0 <= min_depth_m < max_depth_m")


@dataclass(frozen=True, eq=False)
class ObjectGeometry:
    """3D estimate of one object in the camera optical frame (metres).

    Attributes:
        centroid: mean of the inlier points (x, y, z); NaN when unknown.
        lower, upper: robust per-axis bounds of the inliers; NaN when unknown.
        num_valid: masked pixels with valid depth (before gating).
        points: (N, 3) float32 inlier points (empty when unknown).
    """

    centroid: tuple[float, float, float] = _NAN3
    lower: tuple[float, float, float] = _NAN3
    upper: tuple[float, float, float] = _NAN3
    num_valid: int = 0
    points: FloatArray = field(default_factory=lambda: np.zeros((0, 3), np.float32))

    @property
    def known(self) -> bool:
        """True when the centroid and extent are finite."""
        return all(math.isfinite(v) for v in self.centroid)

    @property
    def extent(self) -> tuple[float, float, float]:
        """Axis-aligned size (upper - lower) in metres; NaN when unknown."""
        lo, hi = self.lower, self.upper
        return (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])

    @property
    def center(self) -> tuple[float, float, float]:
        """Middle of the robust bounds (the centre of a box drawn with `extent`)."""
        lo, hi = self.lower, self.upper
        return ((hi[0] + lo[0]) / 2, (hi[1] + lo[1]) / 2, (hi[2] + lo[2]) / 2)

    @property
    def num_points(self) -> int:
        """Inlier points kept after gating."""
        return int(self.points.shape[0])


def depth_array_from_msg(msg: Any) -> npt.NDArray[Any]:
    """The raw depth array of a sensor_msgs/Image (16UC1 / mono16 millimetres or 32FC1 metres).

    Duck-typed on `encoding`, `height`, `width`, `step`, `is_bigendian`, `data`; honours row
    padding and byte order. Returns (H, W) uint16 or float32 in native byte order (a copy).

    Raises:
        FrameError: an unsupported encoding or a data size that does not match the header.
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise FrameError(
            f"depth encoding {encoding!r} is not supported; use one of {sorted(DEPTH_ENCODINGS)}"
        )
    kind, _ = DEPTH_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = int(kind[1])
    try:  # bytes / array.array('B') (rclpy) / numpy: no copy
        raw = np.frombuffer(msg.data, dtype=np.uint8)
    except TypeError:  # a plain list of ints
        raw = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    if height <= 0 or width <= 0:
        raise FrameError(f"depth image is empty ({width}x{height})")
    if step < width * itemsize or raw.size < step * height:
        raise FrameError(
            f"depth image data ({raw.size} bytes, step {step}) does not fit "
            f"{width}x{height} {encoding}"
        )
    rows = raw[: step * height].reshape(height, step)[:, : width * itemsize]
    dtype = np.dtype((">" if msg.is_bigendian else "<") + kind)
    return rows.copy().view(dtype).reshape(height, width).astype(dtype.newbyteorder("="))


def depth_to_metres(
    depth: npt.NDArray[Any], params: DepthParams | None = None
) -> npt.NDArray[np.float32]:
    """(H, W) depth -> float32 metres with NaN for every hole.

    uint16 is millimetres (16UC1, 0 = no return); floating point is metres (32FC1, NaN / inf /
    0 = no return). Depths outside (min_depth_m, max_depth_m] also become NaN.

    Raises:
        FrameError: not a 2-D array of one of those types.
    """
    params = params or DepthParams()
    arr = np.asarray(depth)
    if arr.ndim != 2:
        raise FrameError(f"depth must be a 2-D (H, W) array; got shape {arr.shape}")
    if arr.dtype == np.uint16:
        # Division (not * 0.001) is correctly rounded: 1500 mm is exactly 1.5 m in float32.
        metres = arr.astype(np.float32) / np.float32(1000.0)
    elif np.issubdtype(arr.dtype, np.floating):
        metres = arr.astype(np.float32, copy=True)
    else:
        raise FrameError(
            f"depth must be uint16 millimetres or float32 metres; got dtype {arr.dtype}"
        )
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(metres) | (metres <= params.min_depth_m) | (metres > params.max_depth_m)
    metres[bad] = np.nan
    return metres


def resize_mask_nearest(mask: BoolArray, height: int, width: int) -> BoolArray:
    """Nearest-neighbour resize of an (h, w) bool mask to (height, width).

    Output pixel i samples input pixel floor((i + 0.5) * h / height): pixel centres map to pixel
    centres, so halving keeps every second pixel and doubling repeats each pixel twice.
    """
    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    if (h, w) == (height, width):
        return m
    rows = np.minimum(((np.arange(height) + 0.5) * (h / height)).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * (w / width)).astype(np.intp), w - 1)
    out: BoolArray = m[rows[:, None], cols[None, :]]
    return out


def _check_registered(mask_shape: Sequence[int], depth_shape: Sequence[int]) -> None:
    mh, mw = mask_shape
    dh, dw = depth_shape
    if abs((mw / mh) / (dw / dh) - 1.0) > _ASPECT_TOLERANCE:
        raise FrameError(
            f"mask {mw}x{mh} and depth {dw}x{dh} have different aspect ratios: the depth image "
            "must be registered to the colour image (e.g. aligned_depth_to_color)"
        )


def project_mask(
    depth_m: npt.NDArray[np.float32], intrinsics: Intrinsics, mask: BoolArray
) -> FloatArray:
    """Every masked pixel with valid depth as a 3D point: (N, 3) float32 x, y, z metres.

    Args:
        depth_m: (Hd, Wd) float32 metres, NaN = hole (see `depth_to_metres`).
        intrinsics: K of the registered camera, at any resolution of the same field of view.
        mask: (H, W) bool at the colour image's resolution (resized to the depth's if different).

    Raises:
        FrameError: shapes that cannot be registered views of one another.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or depth_m.ndim != 2:
        raise FrameError(f"mask and depth must be 2-D; got {m.shape} and {depth_m.shape}")
    dh, dw = depth_m.shape
    if m.shape != (dh, dw):
        _check_registered(m.shape, (dh, dw))
        m = resize_mask_nearest(m, dh, dw)
    _check_registered((intrinsics.height, intrinsics.width), (dh, dw))
    k = intrinsics.scaled_to(dw, dh)
    v, u = np.nonzero(m)
    z = depth_m[v, u]
    ok = np.isfinite(z)
    u, v, z = u[ok], v[ok], z[ok].astype(np.float64)
    points = np.empty((z.size, 3), dtype=np.float32)
    points[:, 0] = (u - k.cx) * z / k.fx
    points[:, 1] = (v - k.cy) * z / k.fy
    points[:, 2] = z
    return points


def robust_inliers(points: FloatArray, params: DepthParams | None = None) -> FloatArray:
    """The points whose depth lies within the MAD gate around the median depth (see module doc)."""
    params = params or DepthParams()
    if points.shape[0] == 0:
        return points
    zs = subsample(points, params.max_stat_points)[:, 2].astype(np.float64)
    median = float(np.median(zs))
    mad = float(np.median(np.abs(zs - median)))
    gate = max(params.gate_mads * 1.4826 * mad, params.min_gate_m)
    # float32 is exact enough here (1e-7 relative) and avoids a copy of every point.
    out: FloatArray = points[np.abs(points[:, 2] - np.float32(median)) <= np.float32(gate)]
    return out


def geometry_from_points(points: FloatArray, params: DepthParams | None = None) -> ObjectGeometry:
    """Robust centroid and bounds of (N, 3) valid points (gated with `robust_inliers`)."""
    params = params or DepthParams()
    inliers = robust_inliers(points, params)
    if inliers.shape[0] < params.min_points:
        return ObjectGeometry(num_valid=int(points.shape[0]))
    # The mean of a contiguous (3, N) float64 copy: 10x faster than mean(axis=0) over the
    # strided (N, 3) float32 columns (~1.1 -> 0.1 ms for 75k points), same pairwise summation.
    centroid = np.ascontiguousarray(inliers.T, dtype=np.float64).sum(axis=1) / inliers.shape[0]
    p = params.extent_percentile
    if p > 0:
        sample = subsample(inliers, params.max_stat_points).astype(np.float64)
        lower, upper = np.percentile(sample, [p, 100.0 - p], axis=0)
    else:
        lower, upper = (
            inliers.min(axis=0).astype(np.float64),
            inliers.max(axis=0).astype(np.float64),
        )
    return ObjectGeometry(
        centroid=_triple(centroid),
        lower=_triple(lower),
        upper=_triple(upper),
        num_valid=int(points.shape[0]),
        points=inliers,
    )


def object_geometry(
    depth_m: npt.NDArray[np.float32],
    intrinsics: Intrinsics,
    mask: BoolArray,
    params: DepthParams | None = None,
) -> ObjectGeometry:
    """Robust 3D centroid / bounds / inlier points of one masked object.

    Args:
        depth_m: (Hd, Wd) float32 metres with NaN holes, from `depth_to_metres`.
        intrinsics: K of the registered depth / colour camera (any resolution, same view).
        mask: (H, W) bool at the colour image's resolution.
        params: gating and extent settings.

    Returns:
        An `ObjectGeometry`; `known` is False (NaN values) without enough valid depth.
    """
    return geometry_from_points(project_mask(depth_m, intrinsics, mask), params)


def subsample(points: FloatArray, max_points: int | None) -> FloatArray:
    """At most `max_points` rows of `points`, evenly strided (deterministic); all when None / 0."""
    n = points.shape[0]
    if not max_points or n <= max_points:
        return points
    idx = (np.arange(max_points, dtype=np.int64) * n) // max_points
    out: FloatArray = points[idx]
    return out


def _triple(values: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


# ------------------------------------------------------------------ 3D point -> pixel
# RViz's "Publish Point" gives a 3D point; a point prompt needs the pixel it is seen at. The
# projection inverts the back-projection above with the same K and the same pixel convention
# (integer (u, v) = a pixel's centre), so a point of ~/points projects back onto the very pixel
# it came from. K and not P: the 3D outputs use K, and on a rectified image (image_rect) K and P
# agree up to the stereo baseline term Tx, which is 0 for a monocular or left camera.


def rigid_transform(
    point: Sequence[float], rotation_xyzw: Sequence[float], translation: Sequence[float]
) -> tuple[float, float, float]:
    """`rotation` then `translation` applied to `point` (a geometry_msgs/Transform's meaning).

    Args:
        point: (x, y, z) in the transform's child (source) frame, metres.
        rotation_xyzw: the rotation as a quaternion (x, y, z, w); normalised here, not 0.
        translation: (x, y, z) metres, in the parent (target) frame.

    Returns:
        (x, y, z) in the parent (target) frame.
    """
    qx, qy, qz, qw = (float(v) for v in rotation_xyzw)
    norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    if not math.isfinite(norm) or norm == 0.0:
        raise ValueError(f"rotation quaternion must be non-zero and finite; got {rotation_xyzw}")
    qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
    px, py, pz = (float(v) for v in point)
    # v' = v + 2 w (q x v) + 2 q x (q x v), q = (qx, qy, qz): the unit quaternion's rotation.
    tx, ty, tz = 2 * (qy * pz - qz * py), 2 * (qz * px - qx * pz), 2 * (qx * py - qy * px)
    rx = px + qw * tx + (qy * tz - qz * ty)
    ry = py + qw * ty + (qz * tx - qx * tz)
    rz = pz + qw * tz + (qx * ty - qy * tx)
    return rx + float(translation[0]), ry + float(translation[1]), rz + float(translation[2])


def project_point(intrinsics: Intrinsics, point: Sequence[float]) -> tuple[int, int]:
    """The pixel (column, row) at which `point` of the camera optical frame is seen.

    (u, v) = (fx x / z + cx, fy y / z + cy), rounded to the nearest pixel centre.

    Raises:
        ValueError: the point is behind the camera (z <= 0, or not finite) or projects outside
            the `intrinsics.width` x `intrinsics.height` image; the message says which.
    """
    x, y, z = (float(v) for v in point)
    if not (z > 0 and math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
        raise ValueError(f"the point ({x:g}, {y:g}, {z:g}) m is behind the camera (z <= 0)")
    u = intrinsics.fx * x / z + intrinsics.cx
    v = intrinsics.fy * y / z + intrinsics.cy
    # -0.5 <= u < width - 0.5: the pixels' extent; also refuses an overflowing u or v (z ~ 0).
    inside = -0.5 <= u < intrinsics.width - 0.5 and -0.5 <= v < intrinsics.height - 0.5
    if not inside:
        raise ValueError(
            f"the point ({x:g}, {y:g}, {z:g}) m projects to pixel ({u:.1f}, {v:.1f}), outside "
            f"the {intrinsics.width}x{intrinsics.height} image"
        )
    return math.floor(u + 0.5), math.floor(v + 0.5)
