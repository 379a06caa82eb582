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

`ClickPrompts` is the node side: it serves an accepted click exactly like ~/add_points (the
node's `_serve` / `_prompt`: same session call, same refusal and failure handling, never
raising out of the callback), stamped on the latest processed frame, the one being displayed.
rqt has no negative click: correct an object with ~/add_points (point_labels [0]) or remove it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geometry_msgs.msg import Point

from seg_ros.conversions import build_prompt
from seg_ros.engine.results import FrameResult
from seg_ros.srv import AddPoints

#: rqt_image_view's suffix for the click topic of the image it shows.
CLICK_SUFFIX = "_mouse_left"


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

    `node` is the SegmentationNode: it provides `_latest`, `_serve`, `_prompt` and rclpy's Node.
    """

    def __init__(self, node: Any, min_interval_s: float) -> None:
        self.node = node
        self.gate = ClickGate(min_interval_s)

    def topics(self) -> list[str]:
        """The click topics: of the input image (its base name also for compressed input) and
        of ~/overlay."""
        node = self.node
        return [
            node.resolve_topic_name("image") + CLICK_SUFFIX,
            node.resolve_topic_name("~/overlay") + CLICK_SUFFIX,
        ]

    def subscribe(self, callback_group: Any) -> list[Any]:
        """Create the subscriptions (the caller destroys them); returns them."""
        subs = [
            self.node.create_subscription(
                Point, topic, self.on_click, 10, callback_group=callback_group
            )
            for topic in self.topics()
        ]
        self.node.get_logger().info(
            "click prompts on " + ", ".join(s.topic_name for s in subs) + " (rqt_image_view)"
        )
        return subs

    def on_click(self, msg: Point) -> None:
        """Subscription callback: decide, then serve like ~/add_points. Never raises."""
        logger = self.node.get_logger()
        try:
            latest = self.node._latest  # the frame rqt is showing (or about to)
            decision = self.gate.decide(latest.result if latest is not None else None, msg.x, msg.y)
            where = f"click ({msg.x:g}, {msg.y:g})"
            if not decision.accepted:
                logger.info(f"{where} ignored: {decision.reason}")
                return
            request = AddPoints.Request(
                object_id=decision.object_id,
                points=[Point(x=float(msg.x), y=float(msg.y))],
                point_labels=[1],
                stamp=latest.header.stamp,
            )
            response = self.node._serve(
                AddPoints,
                lambda s: self.node._prompt(
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
        except Exception as exc:  # a subscription callback that raises kills the node
            logger.error(f"click failed: {type(exc).__name__}: {exc}")
