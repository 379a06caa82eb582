"""What the node publishes per frame: one `Output` record per topic, made from a ProcessedFrame.

`make_outputs` is the table of the node's per-frame topics and the parameter that turns each on:

    ~/instances      InstanceArray    always
    ~/mask           Image mono16     publish_mask
    ~/overlay        Image bgr8       publish_overlay
    ~/markers        MarkerArray      use_depth and publish_markers
    ~/points         PointCloud2      use_depth and publish_points
    ~/detections     Detection2DArray vision_msgs installed
    ~/detections_3d  Detection3DArray vision_msgs installed and use_depth

An `Output` is called with each ProcessedFrame (from the node's worker thread) and builds its
message only when the topic has a subscriber. /diagnostics is not here: a timer publishes it,
not a frame.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from seg_ros.conversions import Locate3D, frame_to_msg, numpy_to_image
from seg_ros.engine.results import FrameResult
from seg_ros.engine.types import RgbImage
from seg_ros.msg import InstanceArray
from seg_ros.node_params import NodeParams
from seg_ros.outputs import detections
from seg_ros.outputs.markers import MarkerPublisherState
from seg_ros.outputs.overlay import render_overlay
from seg_ros.outputs.pointcloud import build_pointcloud2
from seg_ros.rgbd import FrameDepth

#: Outputs are reliable; a short history is enough (a late reader wants the newest frame).
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


@dataclass(frozen=True)
class ProcessedFrame:
    """One processed camera frame: what every output is made from."""

    header: Header  # the input image's header: stamp and frame_id of every output
    rgb: RgbImage  # RGB uint8 (H, W, 3), the frame the model saw
    result: FrameResult
    received_at: float  # time.monotonic() when the message arrived (latency = now - this)
    locate: Locate3D | None = None  # 3D of an object on this frame (None: NaN)
    depth: FrameDepth | None = None  # this frame's depth (use_depth), converted on first use

    @cached_property
    def instance_array(self) -> InstanceArray:
        """The frame's InstanceArray (with 3D through `locate`), built once for every output."""
        return frame_to_msg(self.result, self.header, self.locate)


def send(publisher: Any, build: Callable[[], Any], live: Callable[[], bool]) -> None:
    """Publish `build()` when someone subscribes (None: nothing); nothing once not `live()`.

    Ctrl-C: rclpy's SIGINT handler shuts the context down while the worker may still be in
    a frame, and before destroy_node -> close_io runs; from then on every publisher call
    raises RCLError ("publisher's context is invalid"). Nobody can receive anything then.
    """
    if not live():
        return
    try:
        if publisher.get_subscription_count():
            msg = build()
            if msg is not None:
                publisher.publish(msg)
    except Exception:
        if live():  # a real failure, not the shutdown racing this call
            raise


@dataclass(frozen=True)
class Output:
    """One per-frame topic: `build(frame)` is its message (None: nothing for this frame).

    Attributes:
        name: the topic as the node created it ("~/mask"); names the output in warnings.
        publisher: its rclpy publisher.
        build: ProcessedFrame -> message, called only while the topic has a subscriber.
        live: the node's context is ok (False after Ctrl-C: publish nothing).
    """

    name: str
    publisher: Any
    build: Callable[[ProcessedFrame], Any]
    live: Callable[[], bool]

    def __call__(self, frame: ProcessedFrame) -> None:
        send(self.publisher, lambda: self.build(frame), self.live)


def make_outputs(
    node: Node,
    params: NodeParams,
    markers: MarkerPublisherState,
    vision_msgs: bool,
    topic: Callable[[str], str] = str,
) -> list[Output]:
    """Create the publishers the parameters ask for (see the module docstring), in that order.

    `vision_msgs`: whether it is installed (`detections.available()`, checked once by the node).
    `topic` maps each name ("~/instances") to the camera's ("~/head/instances"; seg_ros.camera).
    """

    def overlay(frame: ProcessedFrame) -> Image:
        bgr = render_overlay(frame.rgb, frame.result.objects, params.overlay_alpha)
        return numpy_to_image(bgr, "bgr8", frame.header)

    def points(frame: ProcessedFrame) -> PointCloud2 | None:
        if frame.depth is None:
            return None
        clouds = frame.depth.clouds(frame.result.objects, params.points_max_per_object)
        return build_pointcloud2(frame.header, clouds)

    depth = params.use_depth
    table: list[tuple[str, Any, bool, Callable[[ProcessedFrame], Any]]] = [
        ("~/instances", InstanceArray, True, lambda f: f.instance_array),
        (
            "~/mask",
            Image,
            params.publish_mask,
            lambda f: numpy_to_image(f.result.label_image(), "mono16", f.header),
        ),
        ("~/overlay", Image, params.publish_overlay, overlay),
        (
            "~/markers",
            MarkerArray,
            depth and params.publish_markers,
            lambda f: markers.update(f.header, f.instance_array.instances),
        ),
        ("~/points", PointCloud2, depth and params.publish_points, points),
    ]
    if vision_msgs:
        vision = importlib.import_module("vision_msgs.msg")
        table += [
            (
                "~/detections",
                vision.Detection2DArray,
                True,
                lambda f: detections.build_detection2d_array(f.header, f.instance_array.instances),
            ),
            (
                "~/detections_3d",
                vision.Detection3DArray,
                depth,
                lambda f: detections.build_detection3d_array(f.header, f.instance_array.instances),
            ),
        ]
    live = node.context.ok
    return [
        Output(topic(name), node.create_publisher(msg_type, topic(name), OUTPUT_QOS), build, live)
        for name, msg_type, wanted, build in table
        if wanted
    ]
