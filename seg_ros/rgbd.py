"""The node's RGB-D inputs: one synchronised set, and the lazy 3D of one processed frame.

`RgbdInput` is what the synchroniser puts into the node's newest-frame-wins slot instead of a
lone image. `FrameDepth` holds one frame's depth + camera_info and computes, only when an output
asks for it: the depth in metres and the intrinsics (once per frame), then the robust geometry
of each *visible* object (once per object and frame, cached by mask value and mask identity).
A frame nobody consumes in 3D costs nothing beyond keeping two message references. The math is
in `seg_ros.geometry`; this module only caches it and turns it into message fields.

Unusable depth (unsupported encoding, wrong size, uncalibrated camera_info, views that cannot be
registered) is reported once per frame through `on_error` and leaves every object without 3D
(NaN): colour tracking never stops for a depth problem.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from seg_ros.engine.results import ObjectMask
from seg_ros.geometry import (
    DepthParams,
    Intrinsics,
    ObjectGeometry,
    depth_array_from_msg,
    depth_to_metres,
    object_geometry,
    subsample,
)


@dataclass(frozen=True)
class RgbdInput:
    """One approximately synchronised set: colour image, registered depth, camera info.

    Attributes:
        image: the colour frame (its header is every output's header).
        depth: depth registered to `image` (16UC1 / mono16 millimetres or 32FC1 metres).
        info: sensor_msgs/CameraInfo of the colour (= registered depth) camera.
    """

    image: Image | CompressedImage
    depth: Image
    info: CameraInfo

    @property
    def header(self) -> Any:
        return self.image.header


class FrameDepth:
    """Lazy, cached 3D of one processed frame (thread-safe: worker and service threads).

    Args:
        depth: sensor_msgs/Image depth of the frame.
        info: sensor_msgs/CameraInfo of the frame.
        params: gating / extent settings of `seg_ros.geometry`.
        on_error: called once with a message when the depth of this frame is unusable.
    """

    def __init__(
        self,
        depth: Image,
        info: CameraInfo,
        params: DepthParams | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._depth_msg: Image | None = depth
        self._info_msg: CameraInfo | None = info
        #: The frame's CameraInfo, kept (a few hundred bytes): RViz clicks project with its K.
        self.info = info
        self.params = params or DepthParams()
        self._on_error = on_error
        self._lock = threading.Lock()
        self._metres: npt.NDArray[np.float32] | None = None
        self._intrinsics: Intrinsics | None = None
        self._cache: dict[int, tuple[npt.NDArray[np.bool_], ObjectGeometry]] = {}
        self.error = ""
        #: Geometries computed so far (each costs a projection of the object's pixels).
        self.computed = 0

    def _fail(self, exc: Exception) -> None:
        self.error = f"depth unusable, objects get no 3D: {exc}"
        if self._on_error is not None:
            self._on_error(self.error)

    def _prepare(self) -> tuple[npt.NDArray[np.float32], Intrinsics] | None:
        """Depth in metres and intrinsics, converted on first use; None when unusable."""
        if self._metres is None or self._intrinsics is None:
            depth, info = self._depth_msg, self._info_msg
            if self.error or depth is None or info is None:
                return None
            self._depth_msg = self._info_msg = None  # the arrays replace the messages
            try:
                self._intrinsics = Intrinsics.from_camera_info(info)
                self._metres = depth_to_metres(depth_array_from_msg(depth), self.params)
            except ValueError as exc:  # FrameError is a ValueError too
                self._fail(exc)
                return None
        return self._metres, self._intrinsics

    def geometry(self, obj: ObjectMask) -> ObjectGeometry | None:
        """The object's robust geometry on this frame; None when not visible or depth unusable.

        Cached per object: a second call with the same mask costs a dictionary lookup.
        """
        if not obj.visible:
            return None
        with self._lock:
            cached = self._cache.get(obj.mask_value)
            if cached is not None and cached[0] is obj.mask:
                return cached[1]
            prepared = None if self.error else self._prepare()
            if prepared is None:
                return None
            try:
                geometry = object_geometry(*_crop(*prepared, obj), self.params)
            except ValueError as exc:  # e.g. colour and depth with different aspect ratios
                self._fail(exc)
                return None
            self._cache[obj.mask_value] = (obj.mask, geometry)
            self.computed += 1
            return geometry

    def locate(self, obj: ObjectMask) -> tuple[Point, Vector3] | None:
        """`Locate3D` hook: (centroid, extent) in the camera optical frame (m); None = unknown."""
        geometry = self.geometry(obj)
        if geometry is None or not geometry.known:
            return None
        c, e = geometry.centroid, geometry.extent
        return Point(x=c[0], y=c[1], z=c[2]), Vector3(x=e[0], y=e[1], z=e[2])

    def clouds(
        self, objects: Iterable[ObjectMask], max_per_object: int = 0
    ) -> dict[int, npt.NDArray[np.float32]]:
        """mask value -> (N, 3) inlier points (metres) of each visible object with known 3D.

        At most `max_per_object` evenly strided points per object (0 = all).
        """
        out: dict[int, npt.NDArray[np.float32]] = {}
        for obj in objects:
            geometry = self.geometry(obj)
            if geometry is not None and geometry.known:
                out[obj.mask_value] = subsample(geometry.points, max_per_object)
        return out


def _crop(
    depth_m: npt.NDArray[np.float32], intrinsics: Intrinsics, obj: ObjectMask
) -> tuple[npt.NDArray[np.float32], Intrinsics, npt.NDArray[np.bool_]]:
    """Depth, intrinsics and mask cut to the object's box when depth has the mask's resolution.

    The same pixels project to the same points (the principal point moves with the window), but
    the projection scans the box instead of the whole frame (~0.7 ms per object at 640x480).
    Depth or camera_info at another resolution is left whole (seg_ros.geometry checks and rescales).
    """
    box = obj.bbox
    same_size = (intrinsics.height, intrinsics.width) == depth_m.shape == obj.mask.shape
    if box is None or not same_size:
        return depth_m, intrinsics, obj.mask
    x0, y0, x1, y1 = box
    window = Intrinsics(
        fx=intrinsics.fx,
        fy=intrinsics.fy,
        cx=intrinsics.cx - x0,
        cy=intrinsics.cy - y0,
        width=x1 - x0,
        height=y1 - y0,
    )
    return depth_m[y0:y1, x0:x1], window, obj.mask[y0:y1, x0:x1]
