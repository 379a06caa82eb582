"""One camera of the segmentation node: its topics, services, session and counters.

The node serves one or several cameras (`cameras` parameter) with one loaded model; each
`Camera` has its own tracking session (objects, ids, memory bank: `Model.open_stream()`), its
own input topics, outputs, services, click prompts, diagnostics counter and RViz marker state.
Nothing of one camera is reachable from another.

Names. The default camera (name "") has exactly the single-camera names: input `image` (and
`image/compressed`, `depth`, `camera_info`), outputs `~/instances` ..., services
`~/add_points` .... A camera named `head` has `head/image`, `head/depth`, `head/camera_info` in,
`~/head/instances` ... out and `~/head/add_points` ...: remap `head/image:=/head_cam/image_raw`.

The camera only converts and publishes; the node's one worker decides which camera's frame
runs next (seg_ros.frame_queue.FairSlots) and steps the model.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any, TypeAlias

from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from seg_ros.clicks import ClickPrompts
from seg_ros.conversions import ConversionError, Locate3D, compressed_to_rgb, image_to_rgb
from seg_ros.engine import SegmentationSession
from seg_ros.engine.results import FrameResult
from seg_ros.engine.types import RgbImage
from seg_ros.frame_queue import RequestsFirst
from seg_ros.node_params import NodeParams
from seg_ros.outputs.diagnostics import NodeStats
from seg_ros.outputs.markers import MarkerPublisherState
from seg_ros.outputs.registry import Output, ProcessedFrame, make_outputs, send
from seg_ros.rgbd import FrameDepth, RgbdInput
from seg_ros.services import ServiceHandlers
from seg_ros.sync import SyncHandle, make_synchronizer

#: History depth of each synchronised input (image, depth, camera_info) at least: a set needs
#: all three, and with depth 1 a late executor lost whole sets (measured with the real
#: message_filters under CPU load by the review that found it, not re-measured since: 5.7-7.9 Hz
#: of a 15 Hz camera with 1, 13-15.7 Hz with 5).
#: The newest *set* still wins in the one-slot buffer, so this adds no backlog.
SYNC_MIN_QOS_DEPTH = 5

#: What the worker takes from a camera's slot: an image, or a synchronised RGB-D set.
InputMsg: TypeAlias = Image | CompressedImage | RgbdInput


def image_of(msg: InputMsg) -> Image | CompressedImage:
    """The camera image of an input message (the image of an RGB-D set)."""
    return msg.image if isinstance(msg, RgbdInput) else msg


def camera_name_error(name: str) -> str | None:
    """Why `name` cannot name a camera (its topics and services), or None when it can."""
    if not name:
        return "a camera name must not be empty"
    if not (name[0].isalpha() and all(c.isalnum() or c == "_" for c in name)):
        return (
            f"camera name '{name}' must start with a letter and hold only letters, digits and "
            "'_' (it becomes a topic and service namespace)"
        )
    return None


class Camera(ServiceHandlers):
    """One camera's I/O and state (see the module docstring). Made and driven by the node."""

    def __init__(
        self,
        node: Any,  # the SegmentationNode (rclpy Node + `_warn`)
        name: str,
        params: NodeParams,
        requests: RequestsFirst,
        vision_msgs: bool,
        offer: Callable[[Camera, InputMsg], None],
    ) -> None:
        self.node = node
        self.name = name
        self.params = params
        self.session: SegmentationSession | None = None
        self.load_error = "the model is not loaded"
        #: The one frame counter of this camera: totals for tests, rates for /diagnostics.
        self.stats = NodeStats()
        self.markers = MarkerPublisherState()
        #: Called in turn with every ProcessedFrame (from the worker thread): the Output records
        #: of make_outputs while open; tests and benchmarks may add their own callables.
        self.outputs: list[Callable[[ProcessedFrame], None]] = []
        #: 3D centroid / extent of an object (None: NaN in the instances).
        self.locate: Locate3D | None = None
        self.sync: SyncHandle | None = None
        self._latest: ProcessedFrame | None = None
        self._requests = requests
        self._vision_msgs = vision_msgs
        self._offer = offer
        self._markers_output: Output | None = None
        self._entities: list[tuple[str, Any]] = []
        #: rqt_image_view / RViz clicks -> point prompts (seg_ros.clicks), subscribed while open.
        self.clicks = ClickPrompts(node, self, params.click_min_interval_s)

    # ------------------------------------------------------------------ names
    def topic(self, name: str) -> str:
        """This camera's name for a node-relative topic or service ("image", "~/instances")."""
        if not self.name:
            return name
        if name.startswith("~/"):
            return f"~/{self.name}/{name[2:]}"
        return f"{self.name}/{name}"

    @property
    def label(self) -> str:
        """How logs and diagnostics name the camera ("" for the single default camera)."""
        return f"camera '{self.name}'" if self.name else "camera"

    def get_logger(self) -> Any:
        return self.node.get_logger()

    # ------------------------------------------------------------------ I/O
    def open_io(
        self, input_group: Any, service_group: Any, service_table: list[tuple[Any, str, Any]]
    ) -> str:
        """Input subscription (or synchroniser), outputs, services, click prompts.

        Returns the start-up log line's description of the inputs.
        """
        node, params = self.node, self.params
        qos, inputs = self._open_input(input_group)
        outputs = make_outputs(node, params, self.markers, self._vision_msgs, self.topic)
        self.outputs = list(outputs)
        self._entities += [("publisher", out.publisher) for out in outputs]
        self._markers_output = next((o for o in outputs if o.name.endswith("/markers")), None)
        for srv_type, name, handler in service_table:
            service = node.create_service(
                srv_type, self.topic(name), handler, callback_group=service_group
            )
            self._entities.append(("service", service))
        if params.click_prompts:  # served like ~/add_points, so in the services' group
            subs = self.clicks.subscribe(service_group)
            self._entities += [("subscription", sub) for sub in subs]
        reliability = "reliable" if qos.reliability == ReliabilityPolicy.RELIABLE else "best effort"
        return f"{inputs}, {reliability}, history {qos.depth}"

    def _open_input(self, group: Any) -> tuple[Any, str]:
        """The image subscription, or the image + depth + camera_info synchroniser (use_depth)."""
        node, params = self.node, self.params
        image_type: type = Image
        image_topic = self.topic("image")
        if params.input_compressed:
            # `-r image:=/cam/image` must move image/compressed too, as image_transport does.
            image_type = CompressedImage
            image_topic = node.resolve_topic_name(image_topic) + "/compressed"
        qos = params.input_qos()
        if not params.use_depth:
            sub = node.create_subscription(
                image_type,
                image_topic,
                lambda msg: self._offer(self, msg),
                qos,
                callback_group=group,
            )
            self._entities = [("subscription", sub)]
            return qos, sub.topic_name
        # The synchronised set takes the image's place in the slot: newest set wins.
        qos.depth = max(qos.depth, SYNC_MIN_QOS_DEPTH)
        depth_topic, info_topic = self.topic("depth"), self.topic("camera_info")
        sync = make_synchronizer(
            node,
            [(image_type, image_topic), (Image, depth_topic), (CameraInfo, info_topic)],
            lambda image, depth, info: self._offer(self, RgbdInput(image, depth, info)),
            slop_s=params.sync_slop_s,
            queue_size=params.sync_queue_size,
            qos_profile=qos,
            callback_group=group,
        )
        self.sync = sync
        self._entities = [("sync", sync)]
        names = [node.resolve_topic_name(t) for t in (image_topic, depth_topic, info_topic)]
        return qos, " + ".join(names) + f" ({sync.backend} approximate-time sync)"

    def close_io(self) -> None:
        """Take the boxes off RViz and destroy this camera's topics and services."""
        self._clear_markers()  # nothing after Ctrl-C
        self._markers_output = self.sync = None
        node = self.node
        destroy: dict[str, Callable[[Any], Any]] = {
            "subscription": node.destroy_subscription,
            "publisher": node.destroy_publisher,
            "sync": lambda handle: handle.destroy(node),
        }
        for kind, entity in self._entities:
            destroy.get(kind, node.destroy_service)(entity)
        self._entities = []
        self.outputs = []

    # ------------------------------------------------------------------ frames
    def convert(self, msg: InputMsg) -> RgbImage:
        """The message's image as RGB uint8; ConversionError when it cannot be."""
        image = image_of(msg)
        if isinstance(image, CompressedImage):
            return compressed_to_rgb(image)
        return image_to_rgb(image)

    def frame(
        self, msg: InputMsg, rgb: RgbImage, result: FrameResult, arrival: float
    ) -> ProcessedFrame:
        """The processed frame (the latest, for services and clicks) with its lazy depth."""
        image = image_of(msg)
        depth = (
            FrameDepth(msg.depth, msg.info, on_error=self._on_bad_depth)
            if isinstance(msg, RgbdInput)
            else None
        )
        locate = depth.locate if depth is not None else self.locate
        frame = ProcessedFrame(image.header, rgb, result, arrival, locate, depth)
        self._latest = frame
        return frame

    def session_or_drop(self) -> SegmentationSession | None:
        """The session to step a frame on; None (the frame counted and logged) without a model."""
        if self.session is None:
            self.stats.no_model()
            self.warn(f"frame dropped: {self.load_error}")
        return self.session

    def publish(self, frame: ProcessedFrame) -> None:
        """Every output in turn; one that fails is logged and the others still publish."""
        for output in self.outputs:
            try:
                output(frame)
            except Exception:  # one broken output must not silence the others
                name = getattr(output, "name", None) or getattr(output, "__name__", repr(output))
                self.warn(f"output {name} failed: {traceback.format_exc()}")

    def bad_frame(self, exc: BaseException | str) -> None:
        self.stats.bad_frame()
        self.warn(f"frame dropped ({self.stats.failed} so far): {exc}")

    def _clear_markers(self) -> None:
        """DELETEALL on ~/markers (when open): RViz forgets this camera's boxes too."""
        cleared = self.markers.reset()
        output = self._markers_output  # None once close_io ran
        if output is not None:
            send(output.publisher, lambda: cleared, self.node.context.ok)

    def _on_bad_depth(self, text: str) -> None:
        """A processed frame's depth could not be used: counted, warned, its objects get NaN."""
        self.stats.depth_unusable()
        self.warn(f"{text} ({self.stats.bad_depth} such frames so far)")

    def warn(self, text: str) -> None:
        """A throttled warning through the node (`_warn`), naming the camera when it has a name."""
        self.node._warn(f"{self.label}: {text}" if self.name else text)


__all__ = ["Camera", "ConversionError", "InputMsg", "camera_name_error", "image_of"]
