"""The graph tests' RGB-D camera scene: a plane 1.5 m away with a hole (no depth) in it.

A 160x120 pinhole camera (f = 100 px, centre (80, 60)); the depth image is registered to the
colour image (same size, same stamp), 16UC1 millimetres, 0 in the hole. Object 1 of the tests is
a box on the plane, object 2 a box inside the hole (no 3D).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest
from std_msgs.msg import Header

from seg_ros.conversions import numpy_to_image

W, H = 160, 120
F, CX, CY = 100.0, 80.0, 60.0  # pinhole intrinsics, pixels
PLANE_MM = 1500
HOLE = (slice(70, 110), slice(100, 150))  # rows, columns without depth
PLANE_BOX = RegionOfInterest(x_offset=40, y_offset=30, width=40, height=30)
HOLE_BOX = RegionOfInterest(x_offset=110, y_offset=75, width=30, height=20)


def header(sec: int, nanosec: int = 0) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id="camera_color_optical_frame")


def rgbd(sec: int, nanosec: int = 0) -> tuple[Image, Image, CameraInfo]:
    """A colour frame, its registered 16UC1 depth (plane + hole) and camera info, one stamp."""
    h = header(sec, nanosec)
    color = numpy_to_image(np.full((H, W, 3), 90, np.uint8), "rgb8", h)
    depth_mm = np.full((H, W), PLANE_MM, np.uint16)
    depth_mm[HOLE] = 0
    depth = numpy_to_image(depth_mm, "16UC1", h)
    info = CameraInfo(header=h, width=W, height=H)
    info.k = [F, 0.0, CX, 0.0, F, CY, 0.0, 0.0, 1.0]
    return color, depth, info


def plane_box_3d(box: RegionOfInterest) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Centroid and extent (m) of a box's pixels on the plane, from the pinhole model.

    Pixel (u, v) sees x = (u - cx) z / fx: the centroid is at the mean pixel centre, and the
    1..99 % extent spans the outermost pixel centres (1 % of the points is less than one
    column / row of the box), so (width - 1) and (height - 1) pixels.
    """
    z = PLANE_MM / 1000.0
    u_mean = box.x_offset + (box.width - 1) / 2
    v_mean = box.y_offset + (box.height - 1) / 2
    centroid = ((u_mean - CX) * z / F, (v_mean - CY) * z / F, z)
    extent = ((box.width - 1) * z / F, (box.height - 1) * z / F, 0.0)
    return centroid, extent
