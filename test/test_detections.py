"""vision_msgs detections: the missing-package path, and the builders against a fake vision_msgs.

The fake (seg_ros.testing.vision_msgs_stub, fixture `fake_vision_msgs` in conftest.py) mirrors
vision_msgs 4.x (Humble / Jazzy) field by field with slotted classes, so a field name from another
version (e.g. 3.x `bbox.center.x`, `results[].id`) raises AttributeError just as a real rclpy
message would.
"""

from __future__ import annotations

import math
import sys
import types

import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from seg_ros.msg import Instance
from seg_ros.outputs import detections

HEADER = Header(stamp=Time(sec=3, nanosec=4), frame_id="camera_color_optical_frame")
NAN = math.nan


def inst(
    track: str,
    roi: tuple[int, int, int, int] = (10, 20, 30, 40),
    centroid: tuple[float, float, float] = (0.1, 0.2, 1.5),
    extent: tuple[float, float, float] = (0.3, 0.2, 0.1),
    visible: bool = True,
    label: str = "mug",
) -> Instance:
    x, y, w, h = roi
    return Instance(
        id=track,
        label=label,
        score=0.75,
        visible=visible,
        bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
        mask_value=int(track),
        centroid=Point(x=centroid[0], y=centroid[1], z=centroid[2]),
        extent=Vector3(x=extent[0], y=extent[1], z=extent[2]),
    )


def test_missing_vision_msgs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vision_msgs", None)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    assert detections.available() is False
    with pytest.raises(RuntimeError, match="vision_msgs is not installed"):
        detections.build_detection2d_array(HEADER, [inst("1")])
    with pytest.raises(RuntimeError, match="available"):
        detections.build_detection3d_array(HEADER, [inst("1")])


def test_not_installed_here() -> None:
    # This environment has no vision_msgs: the node must run without it.
    if "vision_msgs" in sys.modules or _importable("vision_msgs"):
        pytest.skip("vision_msgs is installed on this machine")
    assert detections.available() is False


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_detection2d_array(fake_vision_msgs: types.ModuleType) -> None:
    assert detections.available() is True
    arr = detections.build_detection2d_array(
        HEADER,
        [
            inst("1"),
            inst("2", roi=(0, 0, 5, 7), label=""),
            inst("3", visible=False),
            inst("4", roi=(0, 0, 0, 0)),
        ],
    )
    assert isinstance(arr, fake_vision_msgs.Detection2DArray) and arr.header == HEADER
    assert [d.id for d in arr.detections] == ["1", "2"]
    d = arr.detections[0]
    assert d.header == HEADER
    (hyp,) = d.results
    assert (hyp.hypothesis.class_id, hyp.hypothesis.score) == ("mug", 0.75)
    assert (d.bbox.center.position.x, d.bbox.center.position.y) == (25.0, 40.0)
    assert (d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta) == (30.0, 40.0, 0.0)
    d2 = arr.detections[1]
    assert d2.results[0].hypothesis.class_id == ""
    assert (d2.bbox.center.position.x, d2.bbox.center.position.y) == (2.5, 3.5)


def test_detection3d_array(fake_vision_msgs: types.ModuleType) -> None:
    arr = detections.build_detection3d_array(
        HEADER,
        [
            inst("1"),
            inst("2", centroid=(NAN, NAN, NAN)),
            inst("3", visible=False),
            inst("4", centroid=(-0.5, 0.0, 2.0), extent=(NAN, NAN, NAN)),
        ],
    )
    assert isinstance(arr, fake_vision_msgs.Detection3DArray) and arr.header == HEADER
    assert [d.id for d in arr.detections] == ["1", "4"]
    d = arr.detections[0]
    c = d.bbox.center
    assert (c.position.x, c.position.y, c.position.z) == pytest.approx((0.1, 0.2, 1.5))
    assert (c.orientation.x, c.orientation.y, c.orientation.z, c.orientation.w) == (0, 0, 0, 1)
    assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == pytest.approx((0.3, 0.2, 0.1))
    hyp = d.results[0]
    assert (hyp.hypothesis.class_id, hyp.hypothesis.score) == ("mug", 0.75)
    p = hyp.pose.pose.position
    assert (p.x, p.y, p.z) == pytest.approx((0.1, 0.2, 1.5))
    s = arr.detections[1].bbox.size
    assert (s.x, s.y, s.z) == (0.0, 0.0, 0.0)
    empty = detections.build_detection3d_array(HEADER, [inst("5", visible=False)])
    assert empty.detections == [] and empty.header == HEADER
