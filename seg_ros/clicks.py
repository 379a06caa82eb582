"""Click to segment: a left click in rqt_image_view becomes a point prompt on the shown frame.

rqt_image_view, with "publish click location" ticked, publishes a left click as a
geometry_msgs/Point (pixels of the displayed image, x right, y down; no stamp) on
`<displayed topic>_mouse_left`. The node listens on two of them: its input image's (resolved,
so `-r image:=/camera/color/image_raw` gives /camera/color/image_raw_mouse_left; with compressed
input rqt still names the base topic) and its own ~/overlay's. Both have the input's size.

`ClickGate` is the decision, without ROS: a click outside the image is refused; inside a tracked
object's mask it refines that object with a foreground point; elsewhere it makes a new object.
A click within `click_min_interval_s` of the previous accepted one is dropped: a double click
arrives as two clicks about 0.1-0.3 s apart, and both would be decided on the same displayed
frame (the first one's object is not on it yet), making two objects.

`ClickPrompts` is the node side, one per camera (seg_ros.camera): it serves an accepted click
exactly like that camera's ~/add_points (its `_serve` / `_prompt`: same session call, same
refusal and failure handling, never raising out of the callback), stamped on the camera's
latest processed frame, the one being displayed. With several cameras, each listens on its own
image's and overlay's click topics, and each takes the RViz point it sees in its own image.
rqt has no negative click: correct an object with ~/add_points (point_labels [0]) or remove it.

RViz's "Publish Point" tool publishes a geometry_msgs/PointStamped on /clicked_point (absolute:
RViz's default; remap `-r /clicked_point:=...` for another) in RViz's fixed frame. The point is
brought into the camera optical frame (the input image's frame_id: as is when the frames are the
same, else with tf2 when tf2_ros is installed), projected with the camera's K
(seg_ros.geometry.project_point; CameraInfo from `camera_info`, or the synchronised one with
use_depth) and then decided and served exactly like an rqt click. A point behind the camera,
outside the image, in a frame tf cannot reach, or before any CameraInfo is refused (logged).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geometry_msgs.msg import Point, PointStamped
from rclpy.duration import Duration
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo

from seg_ros.conversions import build_prompt
from seg_ros.engine.results import FrameResult
from seg_ros.geometry import Intrinsics, project_point, rigid_transform
from seg_ros.srv import AddPoints

#: rqt_image_view's suffix for the click topic of the image it shows.
CLICK_SUFFIX = "_mouse_left"
#: RViz's Publish Point topic (its default, absolute; remappable like any name).
CLICKED_POINT_TOPIC = "/clicked_point"
#: Longest wait for a transform to the camera at the click's stamp (s). RViz stamps the point
#: "now", and tf of a moving camera arrives some tens of ms behind; the wait holds one thread of
#: the services' reentrant group, not the frames.
TF_TIMEOUT_S = 0.2


@dataclass(frozen=True)
class ClickDecision:
    """What a click does: `accepted` False -> nothing (`reason` says why); else a point prompt
    for `object_id` ("" = a new object)."""

    accepted: bool
    object_id: str = ""
    reason: str = ""


class ClickGate:
    """Decides what a click (x, y pixels) on a displayed frame does; thread-safe.

    `min_interval_s` (0 = off) is measured between accepted clicks on `clock` (seconds,
    monotonic; injectable for tests). Refused clicks do not restart the interval.
    """

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """True when a click now would not be dropped by the rate limit."""
        with self._lock:
            return self._passed(self._clock())

    def _passed(self, now: float) -> bool:
        return self._last is None or now - self._last >= self.min_interval_s

    def decide(self, shown: FrameResult | None, x: float, y: float) -> ClickDecision:
        """The decision for a click at (x, y) on the frame `shown` (None: no frame yet)."""
        if shown is None:
            return ClickDecision(False, reason="no frame processed yet")
        if not (0 <= x < shown.width and 0 <= y < shown.height):  # also refuses NaN
            return ClickDecision(
                False,
                reason=f"({x:g}, {y:g}) is outside the {shown.width}x{shown.height} image",
            )
        with self._lock:
            now = self._clock()
            last = self._last
            if last is not None and now - last < self.min_interval_s:
                return ClickDecision(
                    False,
                    reason=f"{now - last:.2f} s after the previous click "
                    f"(click_min_interval_s {self.min_interval_s:g})",
                )
            self._last = now
        row, col = int(y), int(x)
        # The last object wins where masks overlap, as in the label image and the overlay.
        for obj in reversed(shown.objects):
            if obj.visible and obj.mask[row, col]:
                return ClickDecision(True, object_id=obj.object_id)
        return ClickDecision(True)


class ClickPrompts:
    """The node's click subscriptions and their callback (see the module docstring).

    `node` is rclpy's Node (subscriptions, names, logger, parameters); `camera` the
    seg_ros.camera.Camera whose frames are clicked: it provides `_latest`, `_serve`, `_prompt`
    and `topic` (its names).
    """

    def __init__(self, node: Any, camera: Any, min_interval_s: float) -> None:
        self.node = node
        self.camera = camera
        self.gate = ClickGate(min_interval_s)
        #: The latest CameraInfo from `camera_info` (subscribed without use_depth).
        self.camera_info: CameraInfo | None = None
        #: tf2_ros.Buffer (made on the first subscribe when tf2_ros is installed), or anything
        #: with its `lookup_transform(target, source, time, timeout)`; None: frames must match.
        self.tf_buffer: Any = None
        self._tf_listener: Any = None

    def topics(self) -> list[str]:
        """The rqt click topics: of the input image (its base name also for compressed input) and
        of ~/overlay."""
        node, topic = self.node, self.camera.topic
        return [
            node.resolve_topic_name(topic("image")) + CLICK_SUFFIX,
            node.resolve_topic_name(topic("~/overlay")) + CLICK_SUFFIX,
        ]

    def subscribe(self, callback_group: Any) -> list[Any]:
        """Create the subscriptions (the caller destroys them); returns them."""
        node = self.node
        self.camera_info = None  # from this activation on: the camera may have changed
        subs = [
            node.create_subscription(Point, topic, self.on_click, 10, callback_group=callback_group)
            for topic in self.topics()
        ]
        rviz = node.create_subscription(
            PointStamped, CLICKED_POINT_TOPIC, self.on_point, 10, callback_group=callback_group
        )
        extra = [rviz]
        params = self.camera.params
        if not params.use_depth:  # with depth the synchronised CameraInfo is used
            extra.append(
                node.create_subscription(
                    CameraInfo,
                    self.camera.topic("camera_info"),
                    self._keep_camera_info,
                    params.input_qos(),
                    callback_group=callback_group,
                )
            )
        self._start_tf()
        logger = node.get_logger()
        logger.info(
            "click prompts on " + ", ".join(s.topic_name for s in subs) + " (rqt_image_view), "
            f"{rviz.topic_name} (RViz Publish Point"
            + (", tf2)" if self.tf_buffer is not None else "; no tf2_ros: image frame only)")
        )
        return subs + extra

    def _start_tf(self) -> None:
        """A tf2 buffer + listener, once per camera, when tf2_ros is installed."""
        if self.tf_buffer is not None:
            return
        try:
            from tf2_ros import Buffer, TransformListener  # optional: not a hard dependency
        except ImportError:
            return
        self.tf_buffer = Buffer()
        # /tf subscriptions on the node, spun by its MultiThreadedExecutor (default group): a
        # lookup waiting in the services' group still receives the transform it waits for.
        self._tf_listener = TransformListener(self.tf_buffer, self.node)

    def _keep_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def on_click(self, msg: Point) -> None:
        """Subscription callback: decide, then serve like ~/add_points. Never raises."""
        try:
            latest = self.camera._latest  # the frame rqt is showing (or about to)
            self._decide_and_serve(latest, msg.x, msg.y, f"click ({msg.x:g}, {msg.y:g})")
        except Exception as exc:  # a subscription callback that raises kills the node
            self.node.get_logger().error(f"click failed: {type(exc).__name__}: {exc}")

    def on_point(self, msg: PointStamped) -> None:
        """RViz Publish Point callback: to the camera, project, then like a click. Never raises."""
        logger = self.node.get_logger()
        p = msg.point
        where = f"RViz point ({p.x:.3f}, {p.y:.3f}, {p.z:.3f}) in '{msg.header.frame_id}'"
        try:
            latest = self.camera._latest
            if latest is None:
                logger.info(f"{where} ignored: no frame processed yet")
                return
            pixel = self.to_pixel(msg, latest)
            if isinstance(pixel, str):
                logger.info(f"{where} ignored: {pixel}")
                return
            col, row = pixel
            self._decide_and_serve(latest, float(col), float(row), f"{where} -> pixel {pixel}")
        except Exception as exc:  # a subscription callback that raises kills the node
            logger.error(f"RViz point failed: {type(exc).__name__}: {exc}")

    def to_pixel(self, msg: PointStamped, latest: Any) -> tuple[int, int] | str:
        """The pixel of `latest` (a ProcessedFrame) at which the point is seen, or why none."""
        depth = latest.depth
        info = depth.info if depth is not None else self.camera_info
        if info is None:
            topic = self.node.resolve_topic_name(self.camera.topic("camera_info"))
            return f"no CameraInfo received yet on {topic}"
        camera = latest.header.frame_id
        source = msg.header.frame_id
        point = (msg.point.x, msg.point.y, msg.point.z)
        if source != camera:
            if self.tf_buffer is None:
                return (
                    f"the point is in '{source}', the image in '{camera}', and tf2_ros is not "
                    f"installed: install tf2_ros (ros-jazzy-tf2-ros), or set RViz's Fixed Frame "
                    f"to '{camera}'"
                )
            try:
                tf = self.tf_buffer.lookup_transform(
                    camera,
                    source,
                    Time.from_msg(msg.header.stamp),
                    Duration(seconds=TF_TIMEOUT_S),
                ).transform
            except Exception as exc:  # tf2's Lookup / Connectivity / Extrapolation errors
                return f"no transform '{source}' -> '{camera}': {type(exc).__name__}: {exc}"
            r, t = tf.rotation, tf.translation
            point = rigid_transform(point, (r.x, r.y, r.z, r.w), (t.x, t.y, t.z))
        try:
            # CameraInfo may be calibrated at another resolution than the processed image.
            shown = latest.result
            intrinsics = Intrinsics.from_camera_info(info).scaled_to(shown.width, shown.height)
            return project_point(intrinsics, point)
        except ValueError as exc:  # behind the camera, outside the image, uncalibrated
            return str(exc)

    def _decide_and_serve(self, latest: Any, x: float, y: float, where: str) -> None:
        """A click at pixel (x, y) of `latest`: the gate's decision, then ~/add_points' path."""
        logger = self.node.get_logger()
        decision = self.gate.decide(latest.result if latest is not None else None, x, y)
        if not decision.accepted:
            logger.info(f"{where} ignored: {decision.reason}")
            return
        request = AddPoints.Request(
            object_id=decision.object_id,
            points=[Point(x=float(x), y=float(y))],
            point_labels=[1],
            stamp=latest.header.stamp,
        )
        response = self.camera._serve(
            AddPoints,
            lambda s: self.camera._prompt(
                AddPoints,
                s,
                request,
                build_prompt(points=request.points, point_labels=request.point_labels),
                False,
            ),
        )
        if response.success:
            logger.info(f"{where}: {response.message}")
        else:
            logger.warning(f"{where} refused: {response.message}")
