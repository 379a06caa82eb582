"""A stand-in for vision_msgs 4.x (Humble / Jazzy) where the package is not installed.

It mirrors the messages field by field with slotted classes, so a field name from another
version (e.g. 3.x `bbox.center.x`, `results[].id`) raises AttributeError just as a real rclpy
message would. `install(monkeypatch)` puts it in sys.modules for one test.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

from geometry_msgs.msg import Pose, PoseWithCovariance, Vector3
from std_msgs.msg import Header


@dataclass(slots=True)
class Point2D:
    x: float = 0.0
    y: float = 0.0


@dataclass(slots=True)
class Pose2D:
    position: Point2D = field(default_factory=Point2D)
    theta: float = 0.0


@dataclass(slots=True)
class BoundingBox2D:
    center: Pose2D = field(default_factory=Pose2D)
    size_x: float = 0.0
    size_y: float = 0.0


@dataclass(slots=True)
class ObjectHypothesis:
    class_id: str = ""
    score: float = 0.0


@dataclass(slots=True)
class ObjectHypothesisWithPose:
    hypothesis: ObjectHypothesis = field(default_factory=ObjectHypothesis)
    pose: PoseWithCovariance = field(default_factory=PoseWithCovariance)


@dataclass(slots=True)
class Detection2D:
    header: Header = field(default_factory=Header)
    results: list[ObjectHypothesisWithPose] = field(default_factory=list)
    bbox: BoundingBox2D = field(default_factory=BoundingBox2D)
    id: str = ""


@dataclass(slots=True)
class Detection2DArray:
    header: Header = field(default_factory=Header)
    detections: list[Detection2D] = field(default_factory=list)


@dataclass(slots=True)
class BoundingBox3D:
    center: Pose = field(default_factory=Pose)
    size: Vector3 = field(default_factory=Vector3)


@dataclass(slots=True)
class Detection3D:
    header: Header = field(default_factory=Header)
    results: list[ObjectHypothesisWithPose] = field(default_factory=list)
    bbox: BoundingBox3D = field(default_factory=BoundingBox3D)
    id: str = ""


@dataclass(slots=True)
class Detection3DArray:
    header: Header = field(default_factory=Header)
    detections: list[Detection3D] = field(default_factory=list)


MESSAGES = (
    Point2D,
    Pose2D,
    BoundingBox2D,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    Detection2D,
    Detection2DArray,
    BoundingBox3D,
    Detection3D,
    Detection3DArray,
)


def install(monkeypatch: Any) -> types.ModuleType:
    """`import vision_msgs.msg` gives the stand-in until the test ends; returns vision_msgs.msg."""
    pkg = types.ModuleType("vision_msgs")
    msg = types.ModuleType("vision_msgs.msg")
    for cls in MESSAGES:
        setattr(msg, cls.__name__, cls)
    pkg.msg = msg  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vision_msgs", pkg)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", msg)
    return msg
