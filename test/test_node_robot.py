"""The node's robot-side outputs over DDS: RGB-D -> 3D, markers, points, diagnostics, lifecycle.

Backend `fake` (a box prompt's mask is exactly the box) and synthetic depth of known geometry: a
fronto-parallel plane at 1.5 m with a hole (no return) in one corner, seen through a pinhole
camera with fx = fy = 100 px and the principal point at the image centre. Every expected 3D value
is worked out here from the pinhole model, not taken from seg_ros.geometry.
"""

from __future__ import annotations

import importlib
import math
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from seg_ros.camera import SYNC_MIN_QOS_DEPTH
from seg_ros.conversions import numpy_to_image
from seg_ros.engine.errors import FrameError
from seg_ros.lifecycle_node import SegmentationLifecycleNode
from seg_ros.msg import InstanceArray
from seg_ros.outputs import detections
from seg_ros.outputs.colors import color_rgb, color_rgba_float
from seg_ros.outputs.diagnostics import NodeStats
from seg_ros.outputs.pointcloud import pointcloud2_to_array
from seg_ros.segmentation_node import SegmentationNode
from seg_ros.srv import AddBox, RemoveObject
from seg_ros.sync import FALLBACK, MESSAGE_FILTERS
from seg_ros.testing.graph import DOMAIN_ID, RosGraph, stays, wait_for
from seg_ros.testing.rgbd_scene import (
    CX,
    HOLE_BOX,
    PLANE_BOX,
    PLANE_MM,
    F,
    H,
    W,
    header,
    plane_box_3d,
    rgbd,
)

pytestmark = pytest.mark.graph

NODE = "/segmentation_node"
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def start(graph: RosGraph, cls: type = SegmentationNode, start: bool = True, **params: Any) -> Any:
    overrides = [Parameter(k, value=v) for k, v in {"backend": "fake", **params}.items()]
    kwargs = {} if start else {"start": False}
    return graph.add(cls(context=graph.context, parameter_overrides=overrides, **kwargs))


class Camera:
    """The test's RGB-D camera and the node's robot-side outputs, recorded."""

    def __init__(self, graph: RosGraph, outputs: tuple[str, ...] = (), target: str = NODE) -> None:
        self.graph = graph
        self.target = target  # the segmentation node's name
        node = graph.node("rgbd_camera")
        self.node = node
        self.pubs = [
            node.create_publisher(Image, "image", RELIABLE),
            node.create_publisher(Image, "depth", RELIABLE),
            node.create_publisher(CameraInfo, "camera_info", RELIABLE),
        ]
        self.received: dict[str, list[Any]] = {}
        types = {"instances": InstanceArray, "markers": MarkerArray, "points": PointCloud2}
        for name in outputs:
            self.subscribe(name, types[name])
        self.add_box = node.create_client(AddBox, f"{target}/add_box")
        self.remove = node.create_client(RemoveObject, f"{target}/remove_object")
        self.reset = node.create_client(Trigger, f"{target}/reset")

    def subscribe(self, name: str, msg_type: type) -> None:
        self.received[name] = []
        self.node.create_subscription(
            msg_type, f"{self.target}/{name}", self.received[name].append, RELIABLE
        )

    def connected(self) -> bool:
        outputs = all(self.node.count_publishers(f"{self.target}/{n}") for n in self.received)
        return outputs and all(p.get_subscription_count() for p in self.pubs)

    def publish(self, sec: int, nanosec: int = 0) -> None:
        for pub, msg in zip(self.pubs, rgbd(sec, nanosec), strict=True):
            pub.publish(msg)

    def send_until(self, output: str, sec: int, match: Callable[[Any], bool] = bool) -> Any:
        """Publish set `sec` (again) until `output` has a message stamped `sec` matching."""
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = [m for m in self.received[output] if _stamp_sec(m) == sec and match(m)]
            if not found:
                self.publish(sec)
            return bool(found)

        assert wait_for(arrived, timeout=10.0, period=0.05), f"no {output} for set {sec}"
        return found[-1]

    def call(self, client: Any, **fields: Any) -> Any:
        return self.graph.call(client, client.srv_type.Request(**fields))


def _stamp_sec(msg: Any) -> int:
    if isinstance(msg, MarkerArray):
        return msg.markers[0].header.stamp.sec if msg.markers else -1
    return int(msg.header.stamp.sec)


def by_ns(markers: MarkerArray) -> dict[tuple[str, int], Marker]:
    return {(m.ns, m.id): m for m in markers.markers}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "sync_backend",
    [
        FALLBACK,
        pytest.param(
            MESSAGE_FILTERS,
            marks=pytest.mark.skipif(
                not _importable("message_filters"), reason="message_filters is not installed"
            ),
        ),
    ],
)
def test_rgbd_stream_gives_exact_3d_markers_and_points(
    ros_graph: RosGraph, sync_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sync_backend == FALLBACK:  # as on a machine without message_filters / vision_msgs
        for name in ("message_filters", "vision_msgs", "vision_msgs.msg"):
            monkeypatch.setitem(sys.modules, name, None)
    node = start(ros_graph, use_depth=True, points_max_per_object=500)
    assert node.sync is not None and node.sync.backend == sync_backend
    cam = Camera(ros_graph)
    assert wait_for(cam.connected)
    has_detections = cam.node.count_publishers(f"{NODE}/detections") > 0
    assert has_detections == (sync_backend != FALLBACK and _importable("vision_msgs.msg"))

    # Sets are processed only when the three stamps agree within sync_slop_s (0.05 s).
    first = rgbd(1)
    cam.pubs[0].publish(first[0])
    cam.pubs[1].publish(rgbd(1, 300_000_000)[1])  # depth 0.3 s later: no partner
    cam.pubs[2].publish(first[2])
    # Nothing may come of it: the 0.3 s are the claim (a partner would have matched by then).
    assert stays(lambda: node.stats.received == 0, 0.3)
    assert wait_for(lambda: (cam.publish(2), node.stats.processed >= 1)[1], period=0.05)

    # A prompt's answer carries its 3D (the latest frame's depth); the hole gives NaN.
    res = cam.call(cam.add_box, box=PLANE_BOX, label="plane")
    assert res.success and res.object_id == "1", res.message
    centroid, extent = plane_box_3d(PLANE_BOX)
    c, e = res.instance.centroid, res.instance.extent
    np.testing.assert_allclose([c.x, c.y, c.z], centroid, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([e.x, e.y, e.z], extent, rtol=1e-6, atol=1e-7)
    res = cam.call(cam.add_box, box=HOLE_BOX, label="hole")
    assert res.success and res.object_id == "2", res.message
    assert math.isnan(res.instance.centroid.x) and math.isnan(res.instance.extent.z)

    # Nobody consumes 3D yet: frames go through without converting depth or computing geometry.
    done, sets = node.stats.processed, iter(range(3, 10))
    assert wait_for(lambda: (cam.publish(next(sets)), node.stats.processed > done)[1], period=0.1)
    latest = node._latest
    assert latest is not None and latest.depth is not None
    assert latest.depth.computed == 0 and latest.depth._metres is None

    for name, msg_type in (
        ("instances", InstanceArray),
        ("markers", MarkerArray),
        ("points", PointCloud2),
    ):
        cam.subscribe(name, msg_type)
    assert wait_for(cam.connected)
    out = cam.send_until("instances", 10)
    assert out.header.frame_id == "camera_color_optical_frame"
    plane, hole = out.instances
    assert (plane.id, plane.label, hole.id, hole.visible) == ("1", "plane", "2", True)
    c, e = plane.centroid, plane.extent
    np.testing.assert_allclose([c.x, c.y, c.z], centroid, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([e.x, e.y, e.z], extent, rtol=1e-6, atol=1e-7)
    assert all(math.isnan(v) for v in (hole.centroid.x, hole.centroid.y, hole.extent.x))

    # Once per visible object, shared by every output. Waited on: the camera re-sends frame 10
    # until its instances arrive, so the node may be finishing a later copy of it right now.
    def computed() -> int:
        latest = node._latest
        assert latest is not None and latest.depth is not None
        return int(latest.depth.computed)

    assert wait_for(lambda: computed() == 2), computed()

    # Markers: box + label for the object with 3D only, in its overlay colour, id = mask value.
    markers = by_ns(cam.send_until("markers", 10))
    assert set(markers) == {("seg_ros/boxes", 1), ("seg_ros/labels", 1)}
    box, text = markers["seg_ros/boxes", 1], markers["seg_ros/labels", 1]
    assert (box.type, box.action, text.type) == (Marker.CUBE, Marker.ADD, Marker.TEXT_VIEW_FACING)
    assert (box.header.frame_id, box.header.stamp.sec) == ("camera_color_optical_frame", 10)
    p = box.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], centroid, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([box.scale.x, box.scale.y], extent[:2], rtol=1e-6)
    assert box.scale.z == pytest.approx(0.01)  # a flat object gets the smallest visible depth
    r, g, b, _ = color_rgba_float(1)
    for m in (box, text):
        assert (m.color.r, m.color.g, m.color.b) == pytest.approx((r, g, b))
    assert text.text == "1: plane 1.00"

    # Points: the plane object's points only, evenly thinned to points_max_per_object.
    cloud = pointcloud2_to_array(cam.send_until("points", 10))
    assert cloud.shape == (500,)
    assert set(cloud["instance"].tolist()) == {1}
    np.testing.assert_allclose(cloud["z"], PLANE_MM / 1000.0)
    xs = (np.arange(PLANE_BOX.x_offset, PLANE_BOX.x_offset + PLANE_BOX.width) - CX) * 1.5 / F
    assert cloud["x"].min() >= xs.min() - 1e-6 and cloud["x"].max() <= xs.max() + 1e-6
    r8, g8, b8 = color_rgb(1)
    packed = np.ascontiguousarray(cloud["rgb"]).view(np.uint32)  # PCL: the float's bits
    assert set(packed.tolist()) == {(r8 << 16) | (g8 << 8) | b8}

    # remove_object: the next frame deletes its markers; reset: DELETEALL at once.
    assert cam.call(cam.remove, object_id="1").success
    gone = by_ns(cam.send_until("markers", 11))
    assert {k: m.action for k, m in gone.items()} == {
        ("seg_ros/boxes", 1): Marker.DELETE,
        ("seg_ros/labels", 1): Marker.DELETE,
    }
    cleared = len(cam.received["markers"])
    assert cam.call(cam.reset).success
    # The first non-empty markers after the reset (an empty array from a frame still in flight
    # may come before or after it).
    after: list[Any] = []
    assert wait_for(
        lambda: bool(
            after.extend(m for m in cam.received["markers"][cleared:] if m.markers) or after
        )
    )
    actions = [(m.ns, m.action) for m in after[0].markers]
    assert actions == [("seg_ros/boxes", Marker.DELETEALL), ("seg_ros/labels", Marker.DELETEALL)]
    assert node.stats.bad_depth == 0


@pytest.mark.parametrize("prefer", [FALLBACK, MESSAGE_FILTERS])
def test_depth_sync_inputs_keep_a_few_messages_each(
    ros_graph: RosGraph, prefer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set needs image + depth + info: history 1 per input lost sets under load (5.7-7.9 Hz of
    15 with depth 1 vs 13-15.7 Hz with 5, measured with the real message_filters)."""
    if prefer == FALLBACK:
        monkeypatch.setitem(sys.modules, "message_filters", None)
    node = start(ros_graph, use_depth=True, qos_depth=1)
    assert node.sync is not None
    depths = [getattr(s, "sub", s).qos_profile.depth for s in node.sync.subscribers]
    assert depths == [SYNC_MIN_QOS_DEPTH] * 3 and SYNC_MIN_QOS_DEPTH >= 5
    deeper = start(ros_graph, use_depth=True, qos_depth=8)  # a larger depth is kept
    assert deeper.sync is not None
    assert [getattr(s, "sub", s).qos_profile.depth for s in deeper.sync.subscribers] == [8] * 3
    plain = start(ros_graph, qos_depth=1)  # the image alone: newest frame only, as configured
    (kind, sub), *_ = plain.camera._entities
    assert kind == "subscription" and sub.qos_profile.depth == 1


def test_unusable_depth_keeps_2d_tracking_and_is_counted(ros_graph: RosGraph) -> None:
    node = start(ros_graph, use_depth=True)
    cam = Camera(ros_graph, ("instances",))
    assert wait_for(cam.connected)
    cam.send_until("instances", 1)
    assert cam.call(cam.add_box, box=PLANE_BOX).success
    # An uncalibrated camera (K all zero): the frame is processed, its objects get NaN.
    color, depth, info = rgbd(5)
    info.k = [0.0] * 9

    def sent() -> bool:
        for pub, msg in zip(cam.pubs, (color, depth, info), strict=True):
            pub.publish(msg)
        return any(_stamp_sec(m) == 5 for m in cam.received["instances"])

    assert wait_for(sent, period=0.05)
    out = next(m for m in cam.received["instances"] if _stamp_sec(m) == 5)
    assert out.instances[0].visible and math.isnan(out.instances[0].centroid.z)
    assert node.stats.bad_depth >= 1 and node.stats.failed == 0
    assert node.stats.snapshot().bad_frames >= 1
    # The next good set has 3D again.
    again = cam.send_until("instances", 6)
    assert again.instances[0].centroid.z == pytest.approx(1.5)


def test_diagnostics_ok_while_running_and_error_without_a_model(ros_graph: RosGraph) -> None:
    node = start(ros_graph, diagnostics_period_s=0.1)
    broken = ros_graph.add(
        SegmentationNode(
            "broken_node",
            context=ros_graph.context,
            parameter_overrides=[
                Parameter("backend", value="fake"),
                Parameter("backend_options", value='{"no_such_option": 1}'),
                Parameter("diagnostics_period_s", value=0.1),
            ],
        )
    )
    assert broken.session is None
    client = ros_graph.node("diagnostics_client")
    statuses: list[DiagnosticStatus] = []
    client.create_subscription(
        DiagnosticArray, "/diagnostics", lambda m: statuses.extend(m.status), RELIABLE
    )
    image = client.create_publisher(Image, "image", RELIABLE)
    add_box = client.create_client(AddBox, f"{NODE}/add_box")
    assert wait_for(lambda: image.get_subscription_count() >= 2)

    def stream_until(predicate: Callable[[], bool]) -> bool:
        def step() -> bool:
            stamp = node.get_clock().now().to_msg()  # stamped on the node's clock: age known
            h = Header(stamp=stamp, frame_id="cam")
            image.publish(numpy_to_image(np.zeros((H, W, 3), np.uint8), "rgb8", h))
            return predicate()

        return wait_for(step, timeout=10.0, period=0.03)

    def latest(name: str) -> dict[str, Any] | None:
        mine = [s for s in statuses if s.name == f"seg_ros: {name}"]
        if not mine:
            return None
        s = mine[-1]
        return {"level": s.level, "message": s.message, **{kv.key: kv.value for kv in s.values}}

    assert stream_until(lambda: node.stats.processed >= 1)
    res = ros_graph.call(add_box, AddBox.Request(box=PLANE_BOX))
    assert res.success, res.message

    def running() -> bool:
        status = latest(NODE)
        return bool(
            status
            and status["objects_tracked"] == "1"
            and int(status["frames_processed"]) >= 5
            and status["level"] == DiagnosticStatus.OK
        )

    assert stream_until(running), latest(NODE)
    status = latest(NODE)
    assert status is not None
    assert status["message"] == "ok"
    assert (status["backend"], status["device"], status["model"]) == ("fake", "cpu", "default")
    assert status["model_loaded"] == "true"
    assert float(status["input_hz"]) > 0 and float(status["processed_hz"]) > 0
    assert 0 <= float(status["latency_ms_median"]) < 1000
    assert 0 <= float(status["input_age_ms_median"]) < 1000
    processed, received = int(status["frames_processed"]), int(status["frames_received"])
    assert processed + int(status["frames_dropped"]) <= received

    error = latest("/broken_node")
    assert error is not None, [s.name for s in statuses]
    assert error["level"] == DiagnosticStatus.ERROR and error["model_loaded"] == "false"
    assert (
        "backend 'fake' failed to load" in error["message"] and "no_such_option" in error["message"]
    )


def test_input_age_is_reported_only_for_stamps_on_the_node_clock() -> None:
    stats = NodeStats()
    stats.frame_processed(0.02, age_s=None)
    assert math.isnan(stats.snapshot().age_ms_median)
    stats.frame_processed(0.02, age_s=0.05)
    stats.frame_processed(0.02, age_s=0.07)
    assert stats.snapshot().age_ms_median == pytest.approx(60.0)


def services(node: Any) -> set[str]:
    """The node's services as the ROS graph lists them."""
    names = node.get_service_names_and_types_by_node(node.get_name(), node.get_namespace())
    return {name for name, _ in names}


class Recorder:
    """Stands in for a publisher of a message type this install lacks (vision_msgs)."""

    def __init__(self) -> None:
        self.msgs: list[Any] = []

    def get_subscription_count(self) -> int:
        return 1

    def publish(self, msg: Any) -> None:
        self.msgs.append(msg)


def test_vision_msgs_detections_when_installed(
    ros_graph: RosGraph, fake_vision_msgs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert detections.available()
    node = start(ros_graph, start=False, use_depth=True)
    recorders: dict[str, Recorder] = {}
    create_publisher = node.create_publisher

    def publisher(msg_type: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        if msg_type in (fake_vision_msgs.Detection2DArray, fake_vision_msgs.Detection3DArray):
            return recorders.setdefault(topic, Recorder())
        return create_publisher(msg_type, topic, *args, **kwargs)

    monkeypatch.setattr(node, "create_publisher", publisher)
    assert node.load_model()
    node.open_io()
    assert set(recorders) == {"~/detections", "~/detections_3d"}
    cam = Camera(ros_graph, ("instances",))
    assert wait_for(cam.connected)
    cam.send_until("instances", 1)
    for box, label in ((PLANE_BOX, "plane"), (HOLE_BOX, "hole")):
        assert cam.call(cam.add_box, box=box, label=label).success
    cam.send_until("instances", 2, lambda m: len(m.instances) == 2)
    assert wait_for(lambda: any(_stamp_sec(m) == 2 for m in recorders["~/detections_3d"].msgs))
    flat = next(m for m in recorders["~/detections"].msgs if _stamp_sec(m) == 2)
    assert [(d.id, d.results[0].hypothesis.class_id) for d in flat.detections] == [
        ("1", "plane"),
        ("2", "hole"),
    ]
    b = flat.detections[0].bbox
    assert (b.center.position.x, b.center.position.y, b.size_x, b.size_y) == (60.0, 45.0, 40, 30)
    (solid,) = next(m for m in recorders["~/detections_3d"].msgs if _stamp_sec(m) == 2).detections
    centroid, extent = plane_box_3d(PLANE_BOX)
    c, size = solid.bbox.center.position, solid.bbox.size
    assert solid.id == "1" and solid.header.frame_id == "camera_color_optical_frame"
    np.testing.assert_allclose([c.x, c.y, c.z], centroid, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([size.x, size.y, size.z], extent, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not _importable("vision_msgs.msg"), reason="vision_msgs is not installed")
def test_real_vision_msgs_detections_over_dds(ros_graph: RosGraph) -> None:
    """The real vision_msgs 2D / 3D detections, as a subscriber receives them, field by field."""
    vision = importlib.import_module("vision_msgs.msg")
    node = start(ros_graph, use_depth=True)
    assert node._vision_msgs
    cam = Camera(ros_graph, ("instances",))
    cam.subscribe("detections", vision.Detection2DArray)
    cam.subscribe("detections_3d", vision.Detection3DArray)
    assert wait_for(cam.connected)
    cam.send_until("instances", 1)
    for box, label in ((PLANE_BOX, "plane"), (HOLE_BOX, "hole")):
        assert cam.call(cam.add_box, box=box, label=label).success
    flat = cam.send_until("detections", 2, lambda m: len(m.detections) == 2)
    solid = cam.send_until("detections_3d", 2, lambda m: len(m.detections) == 1)
    assert (flat.header.frame_id, solid.header.frame_id) == ("camera_color_optical_frame",) * 2
    for det, (track, label, box) in zip(
        flat.detections, (("1", "plane", PLANE_BOX), ("2", "hole", HOLE_BOX)), strict=True
    ):
        assert (det.id, det.header.stamp.sec) == (track, 2)
        (hyp,) = det.results
        assert (hyp.hypothesis.class_id, hyp.hypothesis.score) == (label, pytest.approx(1.0))
        b = det.bbox
        assert (b.center.position.x, b.center.position.y, b.center.theta) == (
            box.x_offset + box.width / 2,
            box.y_offset + box.height / 2,
            0.0,
        )
        assert (b.size_x, b.size_y) == (box.width, box.height)
    (det3,) = solid.detections  # the hole has no depth: no 3D detection
    centroid, extent = plane_box_3d(PLANE_BOX)
    assert det3.id == "1" and det3.header.stamp.sec == 2
    c, q, size = det3.bbox.center.position, det3.bbox.center.orientation, det3.bbox.size
    np.testing.assert_allclose([c.x, c.y, c.z], centroid, rtol=1e-6, atol=1e-7)
    assert (q.x, q.y, q.z, q.w) == (0.0, 0.0, 0.0, 1.0)
    np.testing.assert_allclose([size.x, size.y, size.z], extent, rtol=1e-6, atol=1e-7)
    (hyp3,) = det3.results
    assert hyp3.hypothesis.class_id == "plane"
    p = hyp3.pose.pose.position
    np.testing.assert_allclose([p.x, p.y, p.z], centroid, rtol=1e-6, atol=1e-7)
    assert hyp3.pose.pose.orientation.w == 1.0


class Lifecycle:
    """ChangeState / GetState clients of a lifecycle node."""

    def __init__(self, graph: RosGraph, name: str = NODE) -> None:
        self.graph = graph
        node = graph.node("lifecycle_client")
        self.node = node
        self.change = node.create_client(ChangeState, f"{name}/change_state")
        self.get = node.create_client(GetState, f"{name}/get_state")

    def state(self) -> str:
        return str(self.graph.call(self.get, GetState.Request()).current_state.label)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until get_state and change_state both answer -- a node just started in another
        process may drop the answer to a request made while discovery is still matching its
        reply writer. Each service is asked something harmless, again until it answers:
        get_state, and change_state with a transition label that does not exist (refused,
        no state change)."""
        probe = ChangeState.Request(transition=Transition(label="seg_ros_test_probe"))
        for client, request in ((self.get, GetState.Request()), (self.change, probe)):

            def answered(client: Any = client, request: Any = request) -> bool:
                assert client.wait_for_service(timeout_sec=timeout)
                return wait_for(client.call_async(request).done, 5.0)

            assert wait_for(answered, timeout, period=0.1), f"{client.srv_name} never answered"

    def transition(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self.graph.call(self.change, request, timeout=30.0).success)


def test_lifecycle_transitions_load_open_close_and_release(ros_graph: RosGraph) -> None:
    node = start(ros_graph, SegmentationLifecycleNode)
    life = Lifecycle(ros_graph)
    client = ros_graph.node("stream_client")
    instances: list[InstanceArray] = []
    client.create_subscription(InstanceArray, f"{NODE}/instances", instances.append, RELIABLE)
    image = client.create_publisher(Image, "image", RELIABLE)

    def frame(sec: int) -> Image:
        return numpy_to_image(np.zeros((H, W, 3), np.uint8), "rgb8", header(sec))

    def streams(sec: int) -> bool:
        def step() -> bool:
            image.publish(frame(sec))
            return any(m.header.stamp.sec == sec for m in instances)

        return wait_for(step, timeout=10.0, period=0.05)

    assert life.state() == "unconfigured"
    assert node.session is None and node.count_subscribers("image") == 0

    assert life.transition(Transition.TRANSITION_CONFIGURE)
    assert life.state() == "inactive" and node.session is not None
    assert node.count_publishers(f"{NODE}/instances") == 0  # no I/O before activate

    assert life.transition(Transition.TRANSITION_ACTIVATE)
    assert life.state() == "active"
    assert wait_for(lambda: image.get_subscription_count() > 0)
    assert streams(1)

    assert life.transition(Transition.TRANSITION_DEACTIVATE)
    assert life.state() == "inactive"
    assert wait_for(lambda: image.get_subscription_count() == 0)
    processed, count = node.stats.processed, len(instances)
    for sec in range(2, 6):
        image.publish(frame(sec))
    # Inactive: for 0.3 s (the claim; a delivery takes < 0.8 s here) none of them is processed.
    assert stays(lambda: node.stats.processed == processed and len(instances) == count, 0.3)
    assert wait_for(lambda: f"{NODE}/add_box" not in services(node))

    session = node.session
    assert life.transition(Transition.TRANSITION_CLEANUP)
    assert life.state() == "unconfigured" and node.session is None
    with pytest.raises(FrameError, match="closed"):  # the model was released
        session.step(np.zeros((H, W, 3), np.uint8))

    assert life.transition(Transition.TRANSITION_CONFIGURE)
    assert life.transition(Transition.TRANSITION_ACTIVATE)
    assert wait_for(lambda: image.get_subscription_count() > 0)
    assert streams(7)

    assert life.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert life.state() == "finalized" and node.session is None
    assert wait_for(lambda: image.get_subscription_count() == 0)


def test_lifecycle_configure_fails_cleanly_without_a_model(
    ros_graph: RosGraph, capfd: pytest.CaptureFixture[str]
) -> None:
    node = start(ros_graph, SegmentationLifecycleNode, backend_options='{"no_such_option": 1}')
    life = Lifecycle(ros_graph)
    assert not life.transition(Transition.TRANSITION_CONFIGURE)
    # The log says what it means here: an unconfigured lifecycle node has no services at all.
    log = capfd.readouterr().err
    assert "no_such_option" in log and "stays unconfigured" in log, log
    assert "services answer" not in log, log
    assert life.state() == "unconfigured"
    assert node.session is None and "no_such_option" in node.load_error
    assert not life.transition(Transition.TRANSITION_ACTIVATE)  # not from unconfigured
    assert life.state() == "unconfigured"
    assert f"{NODE}/add_box" not in services(node)


def test_lifecycle_node_runs_from_the_command_line(ros_graph: RosGraph) -> None:
    env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "seg_ros.lifecycle_node", "--ros-args", "-r", "__node:=seg_lc"]
    proc = subprocess.Popen(
        [*cmd, "-p", "backend:=fake"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        life = Lifecycle(ros_graph, "/seg_lc")
        life.wait_ready()
        assert life.state() == "unconfigured"
        assert life.transition(Transition.TRANSITION_CONFIGURE)
        assert life.transition(Transition.TRANSITION_ACTIVATE)
        assert life.state() == "active"
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "backend 'fake' loaded" in output and "segmenting /image" in output, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("lifecycle", [False, True], ids=["plain", "lifecycle"])
def test_ctrl_c_with_depth_while_streaming_exits_cleanly(
    ros_graph: RosGraph, lifecycle: bool, tmp_path: pathlib.Path
) -> None:
    """rclpy's SIGINT handler shuts the context down before destroy_node -> close_io runs.

    With use_depth every robot output exists (markers, points, ...) and each has a subscriber
    here while frames stream, so no publisher call may follow the shutdown (exit 0, no trace).
    """
    env = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID), "PYTHONUNBUFFERED": "1"}
    module = "seg_ros.lifecycle_node" if lifecycle else "seg_ros.segmentation_node"
    name = f"seg_ctrl_c_{'lifecycle' if lifecycle else 'plain'}"  # no earlier node's endpoints
    cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
    log = (tmp_path / "node.log").open("w")  # a file: a full pipe would block the node
    proc = subprocess.Popen(
        [*cmd, "-p", "backend:=fake", "-p", "use_depth:=true", "-p", "diagnostics_period_s:=0.2"],
        env=env,
        stderr=log,
        text=True,
    )
    try:
        if lifecycle:
            life = Lifecycle(ros_graph, f"/{name}")
            life.wait_ready()
            assert life.transition(Transition.TRANSITION_CONFIGURE)
            assert life.transition(Transition.TRANSITION_ACTIVATE)
        cam = Camera(ros_graph, ("instances", "markers", "points"), target=f"/{name}")
        assert wait_for(cam.connected, timeout=30.0)
        cam.send_until("instances", 1)
        assert cam.call(cam.add_box, box=PLANE_BOX, label="plane").success
        cam.send_until("markers", 2)
        for sec in range(3, 6):  # still streaming when the signal comes
            cam.publish(sec)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "node.log").read_text()
    assert proc.returncode == 0, output
    assert "Traceback" not in output and "failed" not in output, output


def test_outputs_after_the_context_shut_down_do_nothing(ros_graph: RosGraph) -> None:
    """A frame finishing after Ctrl-C, and close_io itself, touch no publisher, warn nothing."""
    import rclpy

    from seg_ros.rgbd import RgbdInput

    node = start(ros_graph, use_depth=True)
    cam = Camera(ros_graph, ("instances", "markers", "points"))
    cam.subscribe("mask", Image)
    cam.subscribe("overlay", Image)
    assert wait_for(cam.connected)
    warnings: list[str] = []
    node._warn = warnings.append
    frame = node.process_frame(RgbdInput(*rgbd(1)))
    assert frame is not None
    node.publish(frame)
    assert warnings == []
    rclpy.shutdown(context=ros_graph.context)  # what the SIGINT handler does
    node.publish(frame)
    node._publish_diagnostics()
    node.close_io()
    assert warnings == []
    assert node.outputs == [] and node._worker is None


def test_geometry_on_the_object_box_equals_the_whole_frame() -> None:
    """FrameDepth projects only the object's box; the points and values are the same."""
    from seg_ros.engine.results import ObjectMask
    from seg_ros.geometry import DepthParams, Intrinsics, object_geometry
    from seg_ros.rgbd import FrameDepth

    rng = np.random.default_rng(3)
    depth_mm = (1200 + 400 * rng.random((H, W))).astype(np.uint16)
    depth_mm[rng.random((H, W)) < 0.05] = 0
    depth = numpy_to_image(depth_mm, "16UC1", header(1))
    info = CameraInfo(width=W, height=H)
    info.k = [97.3, 0.0, 81.37, 0.0, 101.9, 58.61, 0.0, 0.0, 1.0]
    metres = depth_mm.astype(np.float32) / np.float32(1000.0)
    metres[depth_mm == 0] = np.nan
    whole_k = Intrinsics.from_camera_info(info)
    for i in range(10):
        mask = np.zeros((H, W), bool)
        x0, y0 = int(rng.integers(0, W - 10)), int(rng.integers(0, H - 10))
        mask[y0 : y0 + int(rng.integers(3, 60)), x0 : x0 + int(rng.integers(3, 80))] = True
        mask &= rng.random((H, W)) < 0.8
        obj = ObjectMask(str(i + 1), i + 1, "", 1.0, True, mask)
        cropped = FrameDepth(depth, info).geometry(obj)
        whole = object_geometry(metres, whole_k, mask, DepthParams())
        assert cropped is not None and cropped.num_valid == whole.num_valid
        np.testing.assert_array_equal(cropped.points, whole.points)
        np.testing.assert_allclose(cropped.centroid, whole.centroid, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(cropped.extent, whole.extent, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_lifecycle_cleanup_releases_a_real_model(
    ros_graph: RosGraph, tmp_path: pathlib.Path, device: str
) -> None:
    """A tiny random-weight SAM 2.1 through configure / cleanup; on CUDA its memory comes back."""
    torch = pytest.importorskip("torch")
    cuda = device == "cuda"  # the gpu mark skips this case where CUDA is absent (conftest.py)
    from seg_ros.testing.tiny_models import save_tiny

    folder = save_tiny("sam2", tmp_path / "sam2")
    if cuda:
        allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    node = start(
        ros_graph, SegmentationLifecycleNode, backend="sam2", model=str(folder), device=device
    )
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS, node.load_error
    backend = node.session.backend
    assert node.device.startswith(device) and backend.stats()  # a loaded model reports stats
    if cuda:
        assert torch.cuda.memory_allocated() > allocated
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert node.session is None and backend.stats() == {}  # the backend let its model go
    if cuda:
        assert torch.cuda.memory_allocated() == allocated  # every tensor of the model freed
        assert torch.cuda.memory_reserved() <= reserved  # and the cache handed back
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS  # loads again
