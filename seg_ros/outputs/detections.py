"""vision_msgs/Detection2DArray and Detection3DArray from seg_ros/Instance messages, when installed.

vision_msgs is optional (not a build dependency): `available()` says whether it can be imported,
and the builders import it lazily. Field layout is vision_msgs 4.x (Humble, Jazzy):

    Detection2D: header, results[] (ObjectHypothesisWithPose), bbox (BoundingBox2D), id
    ObjectHypothesisWithPose: hypothesis (ObjectHypothesis: class_id, score), pose
    BoundingBox2D: center (vision_msgs/Pose2D: position (Point2D x, y), theta), size_x, size_y
    Detection3D: header, results[], bbox (BoundingBox3D: center (geometry_msgs/Pose), size), id

Mapping: `id` = the stable track id, one hypothesis with class_id = the label (open vocabulary;
may be "") and score = Instance.score. 2D boxes are in pixels with the origin at the top-left
corner of the top-left pixel (as everywhere in seg_ros), so the centre of a RegionOfInterest is
(x_offset + width / 2, y_offset + height / 2). 3D boxes are axis-aligned in the image's optical
frame: centre = Instance.centroid, size = Instance.extent. Only visible objects are reported
(2D: with a non-empty box; 3D: with a finite centroid). Every detection carries the image header.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from typing import Any


def available() -> bool:
    """True when vision_msgs can be imported (check once at start-up, not per frame)."""
    try:
        importlib.import_module("vision_msgs.msg")
    except ImportError:
        return False
    return True


def _msgs() -> Any:
    try:
        return importlib.import_module("vision_msgs.msg")
    except ImportError as exc:
        raise RuntimeError(
            "vision_msgs is not installed (apt install ros-jazzy-vision-msgs); "
            "check detections.available() before building detections"
        ) from exc


def _hypothesis(vm: Any, inst: Any) -> Any:
    hyp = vm.ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = str(inst.label)
    hyp.hypothesis.score = float(inst.score)
    return hyp


def build_detection2d_array(header: Any, instances: Iterable[Any]) -> Any:
    """vision_msgs/Detection2DArray of the visible instances (seg_ros/Instance messages).

    Raises:
        RuntimeError: vision_msgs is not installed.
    """
    vm = _msgs()
    out = vm.Detection2DArray()
    out.header = header
    for inst in instances:
        roi = inst.bbox
        if not inst.visible or roi.width == 0 or roi.height == 0:
            continue
        det = vm.Detection2D()
        det.header = header
        det.id = str(inst.id)
        det.results.append(_hypothesis(vm, inst))
        det.bbox.center.position.x = roi.x_offset + roi.width / 2.0
        det.bbox.center.position.y = roi.y_offset + roi.height / 2.0
        det.bbox.center.theta = 0.0
        det.bbox.size_x = float(roi.width)
        det.bbox.size_y = float(roi.height)
        out.detections.append(det)
    return out


def build_detection3d_array(header: Any, instances: Iterable[Any]) -> Any:
    """vision_msgs/Detection3DArray of the visible instances with a finite 3D centroid.

    Sizes that are unknown (NaN) are reported as 0. The result may hold no detection.

    Raises:
        RuntimeError: vision_msgs is not installed.
    """
    vm = _msgs()
    out = vm.Detection3DArray()
    out.header = header
    for inst in instances:
        c, e = inst.centroid, inst.extent
        if not inst.visible or not all(math.isfinite(v) for v in (c.x, c.y, c.z)):
            continue
        det = vm.Detection3D()
        det.header = header
        det.id = str(inst.id)
        hyp = _hypothesis(vm, inst)
        hyp.pose.pose.position.x = float(c.x)
        hyp.pose.pose.position.y = float(c.y)
        hyp.pose.pose.position.z = float(c.z)
        hyp.pose.pose.orientation.w = 1.0
        det.results.append(hyp)
        det.bbox.center.position.x = float(c.x)
        det.bbox.center.position.y = float(c.y)
        det.bbox.center.position.z = float(c.z)
        det.bbox.center.orientation.w = 1.0
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (
            float(v) if math.isfinite(v) else 0.0 for v in (e.x, e.y, e.z)
        )
        out.detections.append(det)
    return out
