"""MarkerArray building from seg_ros/Instance messages: content, identity, deletes, reset."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from seg_ros.msg import Instance
from seg_ros.outputs.colors import color_rgba_float
from seg_ros.outputs.markers import MarkerPublisherState, MarkerStyle, label_text

NAN = math.nan


def header(sec: int = 5) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=7), frame_id="camera_color_optical_frame")


def inst(
    value: int,
    centroid: tuple[float, float, float] = (0.1, -0.2, 1.5),
    extent: tuple[float, float, float] = (0.2, 0.3, 0.1),
    label: str = "mug",
    score: float = 0.875,
    visible: bool = True,
) -> Instance:
    return Instance(
        id=str(value + 10),
        label=label,
        score=score,
        visible=visible,
        mask_value=value,
        centroid=Point(x=centroid[0], y=centroid[1], z=centroid[2]),
        extent=Vector3(x=extent[0], y=extent[1], z=extent[2]),
    )


def by_key(markers: list[Marker]) -> dict[tuple[str, int, int], Marker]:
    return {(m.ns, m.id, m.action): m for m in markers}


def test_box_and_label_per_instance_with_header_colour_and_identity() -> None:
    state = MarkerPublisherState()
    arr = state.update(header(), [inst(2), inst(5, centroid=(0.0, 0.0, 2.0), label="")])
    assert len(arr.markers) == 4
    for m in arr.markers:
        assert m.header.frame_id == "camera_color_optical_frame"
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == (5, 7)
        assert m.action == Marker.ADD
    k = by_key(arr.markers)
    box = k[("seg_ros/boxes", 2, Marker.ADD)]
    assert box.type == Marker.CUBE
    p = box.pose.position
    assert (p.x, p.y, p.z) == pytest.approx((0.1, -0.2, 1.5))
    assert box.pose.orientation.w == 1.0
    assert (box.scale.x, box.scale.y, box.scale.z) == pytest.approx((0.2, 0.3, 0.1))
    r, g, b, _ = color_rgba_float(2)
    assert (box.color.r, box.color.g, box.color.b, box.color.a) == pytest.approx((r, g, b, 0.5))
    text = k[("seg_ros/labels", 2, Marker.ADD)]
    assert text.type == Marker.TEXT_VIEW_FACING
    assert text.text == "12: mug 0.88"
    tp = text.pose.position
    # Above the box in the image: -y by half the box height plus the text height.
    assert (tp.x, tp.y, tp.z) == pytest.approx((0.1, -0.2 - 0.15 - 0.05, 1.5))
    assert text.scale.z == pytest.approx(0.05)
    assert (text.color.r, text.color.a) == pytest.approx((r, 1.0))
    assert k[("seg_ros/labels", 5, Marker.ADD)].text == "15: 0.88"
    assert state.shown == {2, 5}


def test_disappeared_objects_get_delete_markers_once() -> None:
    state = MarkerPublisherState()
    state.update(header(1), [inst(1), inst(2), inst(3)])
    # 1 removed, 2 lost (not visible), 3 still there but without depth now.
    arr = state.update(
        header(2), [inst(2, visible=False), inst(3, centroid=(NAN, NAN, NAN)), inst(4)]
    )
    deletes = [(m.ns, m.id) for m in arr.markers if m.action == Marker.DELETE]
    assert deletes == [
        ("seg_ros/boxes", 1),
        ("seg_ros/labels", 1),
        ("seg_ros/boxes", 2),
        ("seg_ros/labels", 2),
        ("seg_ros/boxes", 3),
        ("seg_ros/labels", 3),
    ]
    # Deletes come first, so RViz never removes what this message adds.
    actions = [m.action for m in arr.markers]
    assert actions == sorted(actions, key=lambda a: a != Marker.DELETE)
    assert {m.id for m in arr.markers if m.action == Marker.ADD} == {4}
    assert state.shown == {4}
    again = state.update(header(3), [inst(4)])
    assert [m.action for m in again.markers] == [Marker.ADD, Marker.ADD]


def test_reset_deletes_all_and_forgets() -> None:
    state = MarkerPublisherState(MarkerStyle(namespace="cam1"))
    state.update(header(), [inst(1)])
    arr = state.reset(header(9))
    assert [(m.ns, m.action) for m in arr.markers] == [
        ("cam1/boxes", Marker.DELETEALL),
        ("cam1/labels", Marker.DELETEALL),
    ]
    assert arr.markers[0].header.stamp.sec == 9
    assert state.shown == frozenset()
    assert all(m.action == Marker.ADD for m in state.update(header(), [inst(1)]).markers)


def test_instances_without_3d_get_nothing_and_nan_extent_gets_a_small_box() -> None:
    state = MarkerPublisherState(MarkerStyle(shape="sphere", min_scale_m=0.02, lifetime_s=1.5))
    arr = state.update(
        header(),
        [inst(1, centroid=(NAN, 0.0, 1.0)), inst(2, extent=(NAN, 0.0, 0.5))],
    )
    assert {m.id for m in arr.markers} == {2}
    box = next(m for m in arr.markers if m.ns.endswith("boxes"))
    assert box.type == Marker.SPHERE
    assert (box.scale.x, box.scale.y, box.scale.z) == pytest.approx((0.02, 0.02, 0.5))
    assert (box.lifetime.sec, box.lifetime.nanosec) == (1, 500_000_000)


def test_style_validation_and_label_text() -> None:
    with pytest.raises(ValueError, match="shape"):
        MarkerStyle(shape="cone")
    with pytest.raises(ValueError, match="alpha"):
        MarkerStyle(alpha=2.0)
    assert label_text(inst(1, label="red mug", score=0.5)) == "11: red mug 0.50"


# ------------------------------------------------------------------- config/seg_ros.rviz
RVIZ = Path(__file__).resolve().parent.parent / "config" / "seg_ros.rviz"


def rviz_displays() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(RVIZ.read_text())
    return {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}


def test_rviz_config_is_yaml_with_the_node_topics() -> None:
    config = yaml.safe_load(RVIZ.read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"
    displays = rviz_displays()
    topics = {cls: d["Topic"]["Value"] for cls, d in displays.items() if "Topic" in d}
    assert topics == {
        "rviz_default_plugins/Image": "/segmentation_node/overlay",
        "rviz_default_plugins/MarkerArray": "/segmentation_node/markers",
        "rviz_default_plugins/PointCloud2": "/segmentation_node/points",
    }
    assert "rviz_default_plugins/TF" in displays
    assert all(d["Enabled"] is True for d in displays.values())
    # The node's outputs are reliable; a reliable subscription matches them.
    assert all(
        d["Topic"]["Reliability Policy"] == "Reliable" for d in displays.values() if "Topic" in d
    )


def test_rviz_config_matches_the_marker_and_cloud_builders() -> None:
    from seg_ros.outputs.pointcloud import POINT_DTYPE

    displays = rviz_displays()
    style = MarkerStyle()
    namespaces = displays["rviz_default_plugins/MarkerArray"]["Namespaces"]
    assert set(namespaces) == {style.box_ns, style.label_ns}
    cloud = displays["rviz_default_plugins/PointCloud2"]
    assert cloud["Color Transformer"] == "RGB8" and "rgb" in POINT_DTYPE.names
    assert cloud["Channel Name"] in POINT_DTYPE.names


def test_rviz_view_looks_along_the_optical_axis_with_image_up_on_top() -> None:
    # RViz's Orbit view: eye = focal + d * (cos(yaw) cos(pitch), sin(yaw) cos(pitch), sin(pitch)),
    # looking at the focal point with the fixed frame's +z as the yaw axis (screen up).
    view = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Views"]["Current"]
    yaw, pitch, d = view["Yaw"], view["Pitch"], view["Distance"]
    focal = np.array([view["Focal Point"][k] for k in "XYZ"], dtype=float)
    eye = focal + d * np.array(
        [math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), math.sin(pitch)]
    )
    forward = (focal - eye) / np.linalg.norm(focal - eye)
    up = np.array([0.0, 0.0, 1.0]) - forward[2] * forward
    up /= np.linalg.norm(up)
    right = np.cross(forward, up)
    assert eye[2] < 0 and forward[2] > 0.9  # behind the camera, looking along +z
    assert up[1] < -0.9  # image up (-y) is screen up
    assert right[0] > 0.99  # image right (+x) is screen right
