"""Per-frame cost of the robot-side outputs: `make bench` suite "robot".

    python -m seg_ros.bench --quick --only robot

One row per image size (640x480 by default) with three tracked objects of different sizes on a
noisy depth scene (a tilted plane at ~1.5 m, 2 % of the pixels missing), every timing the median
over `frames` repetitions, in milliseconds, on exactly the node's code paths (no DDS):

    instances_2d_ms     InstanceArray without 3D (what the node costs with use_depth off).
    depth_prepare_ms    16UC1 message -> metres + intrinsics (once per frame, on first 3D use).
    instances_3d_ms     A fresh frame's InstanceArray with 3D: depth conversion + robust geometry
                        of every visible object (FrameDepth) + the messages.
    markers_ms          MarkerArray from that InstanceArray (MarkerPublisherState.update).
    points_ms           ~/points from the cached geometry (subsampled, PointCloud2 built).
    all_3d_outputs_ms   Everything a frame costs when instances, markers and points are all
                        subscribed (the geometry is shared).
    added_3d_ms         all_3d_outputs_ms - instances_2d_ms: what turning 3D on adds per frame.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from seg_ros.conversions import frame_to_msg, numpy_to_image
from seg_ros.engine.backends.fake import FakeBackend
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.session import SegmentationSession
from seg_ros.outputs.markers import MarkerPublisherState
from seg_ros.outputs.pointcloud import build_pointcloud2
from seg_ros.rgbd import FrameDepth


def _scene(width: int, height: int) -> tuple[Any, Any, CameraInfo]:
    """RGB frame, 16UC1 depth (tilted plane, noise, holes), camera info with fx = 0.8 width."""
    rng = np.random.default_rng(0)
    rows = np.arange(height, dtype=np.float32)[:, None]
    plane = 1500.0 + 0.5 * (rows - height / 2) + rng.normal(0, 5, (height, width))
    depth = np.clip(plane, 1, 65535).astype(np.uint16)
    depth[rng.random((height, width)) < 0.02] = 0
    header = Header(stamp=Time(sec=1), frame_id="camera_color_optical_frame")
    info = CameraInfo(header=header, width=width, height=height)
    f = 0.8 * width
    info.k = [f, 0.0, width / 2, 0.0, f, height / 2, 0.0, 0.0, 1.0]
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return rgb, numpy_to_image(depth, "16UC1", header), info


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def run(width: int = 640, height: int = 480, frames: int = 50) -> list[dict[str, Any]]:
    rgb, depth, info = _scene(width, height)
    header = depth.header
    session = SegmentationSession(FakeBackend(), max_objects=8)
    session.step(rgb)
    # Three objects: large (a quarter of the image), medium and small boxes.
    for x0, y0, w, h in (
        (0, 0, width // 2, height // 2),
        (width // 2, height // 3, width // 5, height // 3),
        (width // 8, 3 * height // 4, width // 16, height // 8),
    ):
        box = np.array([x0, y0, x0 + w, y0 + h], np.float32)
        session.add_prompt(Prompt(box=box))
    result = session.step(rgb)
    markers = MarkerPublisherState()

    def instances_3d() -> Any:
        fd = FrameDepth(depth, info)
        return fd, frame_to_msg(result, header, fd.locate)

    fd, array = instances_3d()
    pixels = sum(obj.area for obj in result.objects)

    def points() -> Any:
        return build_pointcloud2(header, fd.clouds(result.objects, 5000))

    def everything() -> None:
        fd_all, arr = instances_3d()
        markers.update(header, arr.instances)
        build_pointcloud2(header, fd_all.clouds(result.objects, 5000))

    row: dict[str, Any] = {
        "bench": "robot_outputs",
        "input": f"{width}x{height}",
        "objects": len(result.objects),
        "object_pixels": pixels,
        "instances_2d_ms": _median_ms(lambda: frame_to_msg(result, header), frames),
        "depth_prepare_ms": _median_ms(lambda: FrameDepth(depth, info)._prepare(), frames),
        "instances_3d_ms": _median_ms(instances_3d, frames),
        "markers_ms": _median_ms(lambda: markers.update(header, array.instances), frames),
        "points_ms": _median_ms(points, frames),
        "all_3d_outputs_ms": _median_ms(everything, frames),
        "points_published": int(points().width),
    }
    row["added_3d_ms"] = round(row["all_3d_outputs_ms"] - row["instances_2d_ms"], 3)
    return [row]
