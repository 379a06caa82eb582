"""The segmentation node: camera frames in; tracked instances, label image and overlay out.

    python -m seg_ros.segmentation_node --ros-args -r image:=/camera/color/image_raw \\
        --params-file config/seg_ros.yaml -p backend:=classic

Newest frame wins. The input subscription (its own MutuallyExclusive callback group) only puts
the message into a one-slot buffer; a message replaced there before the worker took it counts as
dropped. One worker thread takes the newest message, runs the model and publishes, so a model
slower than the camera skips stale frames instead of building a backlog. Services run in their
own Reentrant group on a MultiThreadedExecutor: they are answered while a frame is processed and
serialise with frames only on the session's lock (SegmentationSession owns ids, labels, stamps,
validation and locking; this file only translates messages).

Every service answers success + message and never raises; a backend that fails to load leaves the
node up, answering success=false with the reason.

Structure: `load_model` / `release_model` (weights), `open_io` / `close_io` (topics, services,
worker), `process_frame` (message -> ProcessedFrame) and `publish`, which calls every entry of
`outputs` with the ProcessedFrame. The per-frame topics and the parameters that turn them on are
one table, seg_ros.outputs.registry.make_outputs; `locate` is the hook that fills the instances'
3D fields. One counter, `stats` (seg_ros.outputs.diagnostics.NodeStats), counts every frame as
received, dropped, processed (after publishing) or failed, and feeds /diagnostics. The service
handlers (`_on_add_points` ...) are seg_ros.services.ServiceHandlers, mixed into this class;
rqt_image_view clicks and RViz Publish Point clicks become point prompts through them
(seg_ros.clicks, `click_prompts`).

Robot-side outputs. With `use_depth`, `image` + `depth` + `camera_info` are approximately
synchronised (seg_ros.sync: message_filters when installed) and the *set* goes through the same
one-slot buffer. Each frame then carries a lazy `FrameDepth` (seg_ros.rgbd): depth is converted
and each visible object's geometry computed only when an output asks for 3D (instances, markers,
points, detections with a subscriber), once per frame and object. `~/markers` (RViz boxes +
labels, DELETE / DELETEALL), `~/points` (PointCloud2 with an instance field), `~/detections`
(+ `~/detections_3d`, when vision_msgs is installed) are further outputs; `/diagnostics` is a
timer over `stats`. seg_ros.lifecycle_node runs the same class as a managed node:
configure = load_model, activate = open_io, deactivate = close_io, cleanup = release_model.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeAlias

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from rclpy.utilities import try_shutdown
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from seg_ros.clicks import ClickPrompts
from seg_ros.conversions import (
    ConversionError,
    Locate3D,
    compressed_to_rgb,
    image_to_rgb,
    stamp_to_ns,
)
from seg_ros.engine import SegmentationSession, SegRosError
from seg_ros.engine.registry import build_backend
from seg_ros.frame_queue import LatestSlot, RequestsFirst
from seg_ros.node_params import NodeParams, ParameterError, declare_parameters
from seg_ros.outputs import detections
from seg_ros.outputs.diagnostics import NodeInfo, NodeStats, build_diagnostic_array
from seg_ros.outputs.markers import MarkerPublisherState
from seg_ros.outputs.registry import OUTPUT_QOS, Output, ProcessedFrame, make_outputs, send
from seg_ros.rgbd import FrameDepth, RgbdInput
from seg_ros.services import ServiceHandlers
from seg_ros.sync import SyncHandle, make_synchronizer

NODE_NAME = "segmentation_node"
#: History depth of each synchronised input (image, depth, camera_info) at least: a set needs
#: all three, and with depth 1 a late executor lost whole sets (measured with the real
#: message_filters under CPU load by the review that found it, not re-measured since: 5.7-7.9 Hz
#: of a 15 Hz camera with 1, 13-15.7 Hz with 5).
#: The newest *set* still wins in the one-slot buffer, so this adds no backlog.
SYNC_MIN_QOS_DEPTH = 5
#: Bad frames and missing models are logged at most this often (seconds).
LOG_THROTTLE_S = 5.0
#: An input stamp older than this on the node's clock (or in its future) is taken to come from
#: another clock: its age is then not reported in /diagnostics (seconds).
MAX_SENSIBLE_AGE_S = 60.0

#: What the worker takes from the input slot: an image, or a synchronised RGB-D set.
InputMsg: TypeAlias = Image | CompressedImage | RgbdInput


class SegmentationNode(ServiceHandlers, Node):
    """Segments and tracks prompted objects on the `image` stream (see the module docstring).

    Raises ParameterError at construction for an invalid parameter value. `start=False` only
    declares the parameters (the lifecycle node loads and opens in its transitions). Other
    constructor arguments go to rclpy's Node (context, parameter_overrides, cli_args, ...).
    """

    #: What a failed model load means for a user (the lifecycle node has no services then).
    LOAD_FAILURE_CONSEQUENCE = "the node stays up and its services answer success=false"

    def __init__(self, node_name: str = NODE_NAME, *, start: bool = True, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params: NodeParams = declare_parameters(self)
        self.session: SegmentationSession | None = None
        self.load_error = "the model is not loaded"
        self.device = ""  # where the model runs ("cuda:0", "cpu"), once loaded
        #: The one frame counter: totals for tests, rates and latencies for /diagnostics.
        self.stats = NodeStats()
        self.markers = MarkerPublisherState()
        self._markers_output: Output | None = None  # ~/markers while open (with use_depth)
        self._pub_diagnostics: Any = None  # /diagnostics while open (diagnostics_period_s > 0)
        #: The image + depth + camera_info synchroniser while open with use_depth.
        self.sync: SyncHandle | None = None
        # Checked once at start-up: a missing module's import would be retried on every call.
        self._vision_msgs = detections.available()
        if not self._vision_msgs:
            self.get_logger().info("vision_msgs is not installed: no ~/detections output")
        #: Called in turn with every ProcessedFrame (from the worker thread): the Output records
        #: of make_outputs while open; tests and benchmarks may add their own callables.
        self.outputs: list[Callable[[ProcessedFrame], None]] = []
        #: 3D centroid / extent of an object (None: NaN in the instances).
        self.locate: Locate3D | None = None
        self._latest: ProcessedFrame | None = None
        self._slot: LatestSlot[InputMsg] = LatestSlot()
        self._requests = RequestsFirst()
        self._worker: threading.Thread | None = None
        self._entities: list[tuple[str, Any]] = []  # (kind, entity) made by open_io
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        #: rqt_image_view / RViz clicks -> point prompts (seg_ros.clicks), subscribed while open.
        self.clicks = ClickPrompts(self, self.params.click_min_interval_s)
        if start:
            self.load_model()
            self.open_io()

    # ------------------------------------------------------------------ model
    def load_model(self) -> bool:
        """Build the backend and the session. On failure the node stays up and says why."""
        config = self.params.backend_config()
        try:
            backend = build_backend(config)
        except Exception as exc:  # missing weights / packages, bad options: keep serving
            self.load_error = (
                f"backend '{config.backend}' failed to load: {type(exc).__name__}: {exc}"
            )
            self.get_logger().error(f"{self.load_error}; {self.LOAD_FAILURE_CONSEQUENCE}")
            return False
        self.session = SegmentationSession(
            backend,
            max_objects=self.params.max_objects,
            score_threshold=self.params.score_threshold,
        )
        self.load_error = ""
        self.device = backend.device
        model = config.model or "default model"
        self.get_logger().info(f"backend '{backend.name}' loaded ({model}, device {self.device})")
        self._start_concepts(self.session)
        return True

    def _start_concepts(self, session: SegmentationSession) -> None:
        """The `concepts` parameter's standing queries; one that is refused is logged (the node
        and the other queries go on)."""
        for text in self.params.concepts:
            try:
                query = session.add_query(text, self.params.query_options())
            except SegRosError as exc:
                self.get_logger().error(f"concept '{text}' not started: {exc}")
                continue
            self.get_logger().info(f"standing query {query.query_id}: '{text}'")

    def release_model(self) -> None:
        """Close the session; its backend's close() gives the model's memory back. Idempotent."""
        session, self.session = self.session, None
        self._latest = None
        if session is not None:
            session.close()
            self.load_error = "the model was released"
            gc.collect()  # model tensors in reference cycles would keep their (GPU) memory

    # ------------------------------------------------------------------ I/O
    def open_io(self) -> None:
        """Input subscription, output publishers, services and the worker thread."""
        if self._worker is not None:
            return
        slot: LatestSlot[InputMsg] = LatestSlot()
        self._slot = slot
        qos, inputs = self._open_input(slot)
        outputs = make_outputs(self, self.params, self.markers, self._vision_msgs)
        self.outputs = list(outputs)
        self._entities += [("publisher", out.publisher) for out in outputs]
        self._markers_output = next((o for o in outputs if o.name == "~/markers"), None)
        if self.params.diagnostics_period_s > 0:
            self._pub_diagnostics = self.create_publisher(
                DiagnosticArray, "/diagnostics", OUTPUT_QOS
            )
            timer = self.create_timer(
                self.params.diagnostics_period_s,
                self._publish_diagnostics,
                callback_group=self._timer_group,
            )
            self._entities += [("publisher", self._pub_diagnostics), ("timer", timer)]
        for srv_type, name, handler in self._service_table():
            service = self.create_service(
                srv_type, name, handler, callback_group=self._service_group
            )
            self._entities.append(("service", service))
        if self.params.click_prompts:  # served like ~/add_points, so in the services' group
            subs = self.clicks.subscribe(self._service_group)
            self._entities += [("subscription", sub) for sub in subs]
        self._worker = threading.Thread(
            target=self._run_worker, args=(slot,), name="segmentation_worker", daemon=True
        )
        self._worker.start()
        reliability = "reliable" if qos.reliability == ReliabilityPolicy.RELIABLE else "best effort"
        self.get_logger().info(f"segmenting {inputs}, {reliability}, history {qos.depth}")

    def _open_input(self, slot: LatestSlot[InputMsg]) -> tuple[Any, str]:
        """The image subscription, or the image + depth + camera_info synchroniser (use_depth).

        Returns the input QoS and the input topics' names for the start-up log line.
        """
        params = self.params
        image_type: type = Image
        image_topic = "image"
        if params.input_compressed:
            # `-r image:=/cam/image` must move image/compressed too, as image_transport does.
            image_type = CompressedImage
            image_topic = self.resolve_topic_name("image") + "/compressed"
        qos = params.input_qos()
        if not params.use_depth:
            sub = self.create_subscription(
                image_type,
                image_topic,
                lambda msg: self._offer(slot, msg),
                qos,
                callback_group=self._input_group,
            )
            self._entities = [("subscription", sub)]
            return qos, sub.topic_name
        # The synchronised set takes the image's place in the slot: newest set wins.
        qos.depth = max(qos.depth, SYNC_MIN_QOS_DEPTH)
        sync = make_synchronizer(
            self,
            [(image_type, image_topic), (Image, "depth"), (CameraInfo, "camera_info")],
            lambda image, depth, info: self._offer(slot, RgbdInput(image, depth, info)),
            slop_s=params.sync_slop_s,
            queue_size=params.sync_queue_size,
            qos_profile=qos,
            callback_group=self._input_group,
        )
        self.sync = sync
        self._entities = [("sync", sync)]
        names = [self.resolve_topic_name(t) for t in (image_topic, "depth", "camera_info")]
        return qos, " + ".join(names) + f" ({sync.backend} approximate-time sync)"

    def close_io(self) -> None:
        """Stop the worker (after its current frame) and destroy topics and services."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._slot.close()
        worker.join(timeout=30.0)
        if worker.is_alive():
            self.get_logger().warning("the worker is still in a frame; leaving it behind")
        # Deactivated or shut down: take this node's boxes off RViz rather than freeze them there.
        self._clear_markers()  # nothing after Ctrl-C
        self._markers_output = self.sync = self._pub_diagnostics = None
        destroy: dict[str, Callable[[Any], Any]] = {
            "subscription": self.destroy_subscription,
            "publisher": self.destroy_publisher,
            "timer": self.destroy_timer,
            "sync": lambda handle: handle.destroy(self),
        }
        for kind, entity in self._entities:
            destroy.get(kind, self.destroy_service)(entity)
        self._entities = []
        self.outputs = []

    def destroy_node(self) -> None:
        self.close_io()
        self.release_model()
        super().destroy_node()

    # ------------------------------------------------------------------ frames
    def _offer(self, slot: LatestSlot[InputMsg], msg: InputMsg) -> None:
        """Input callback: the message (or synchronised set) replaces what was not taken yet."""
        self.stats.frame_received()  # before the worker can see it: processed <= received
        if slot.put(msg):
            self.stats.frame_dropped()

    def _run_worker(self, slot: LatestSlot[InputMsg]) -> None:
        while (item := slot.take()) is not None:
            try:
                frame = self.process_frame(*item)
                if frame is not None:
                    self.publish(frame)
                    self.stats.frame_processed(
                        time.monotonic() - frame.received_at, self._age_s(frame.header)
                    )
            except Exception:  # the worker must survive anything a frame does
                # e.g. torch.cuda.OutOfMemoryError from the model: a dropped frame like any other
                self.stats.bad_frame()
                self._warn(f"frame dropped ({self.stats.failed} so far): {traceback.format_exc()}")

    def process_frame(
        self, msg: InputMsg, received_at: float | None = None
    ) -> ProcessedFrame | None:
        """Convert and segment one message (or RGB-D set); None (logged, counted) when it cannot be.

        The depth of an RGB-D set is not touched here: `FrameDepth` converts it when an output
        first asks for 3D.
        """
        session = self.session
        if session is None:
            self.stats.no_model()
            self._warn(f"frame dropped: {self.load_error}")
            return None
        image = msg.image if isinstance(msg, RgbdInput) else msg
        try:
            compressed = isinstance(image, CompressedImage)
            rgb = compressed_to_rgb(image) if compressed else image_to_rgb(image)
            self._requests.wait_for_requests()
            result = session.step(rgb, stamp_to_ns(image.header.stamp))
        except (ConversionError, SegRosError) as exc:
            self.stats.bad_frame()
            self._warn(f"frame dropped ({self.stats.failed} so far): {exc}")
            return None
        arrival = time.monotonic() if received_at is None else received_at
        depth = (
            FrameDepth(msg.depth, msg.info, on_error=self._on_bad_depth)
            if isinstance(msg, RgbdInput)
            else None
        )
        locate = depth.locate if depth is not None else self.locate
        frame = ProcessedFrame(image.header, rgb, result, arrival, locate, depth)
        self._latest = frame
        return frame

    def publish(self, frame: ProcessedFrame) -> None:
        """Every output in turn; one that fails is logged and the others still publish."""
        for output in self.outputs:
            try:
                output(frame)
            except Exception:  # one broken output must not silence the others
                name = getattr(output, "name", None) or getattr(output, "__name__", repr(output))
                self._warn(f"output {name} failed: {traceback.format_exc()}")

    def _clear_markers(self) -> None:
        """DELETEALL on ~/markers (when open): RViz forgets this node's boxes too."""
        cleared = self.markers.reset()
        output = self._markers_output  # None once close_io ran
        if output is not None:
            send(output.publisher, lambda: cleared, self.context.ok)

    def _publish_diagnostics(self) -> None:
        """Timer: one DiagnosticStatus from `stats` and what the node knows about its model."""
        publisher = self._pub_diagnostics  # None once close_io ran
        if publisher is None:
            return
        session = self.session
        info = NodeInfo(
            node_name=self.get_fully_qualified_name(),
            backend=self.params.backend,
            model=self.params.model or "default",
            device=self.device or self.params.device,
            model_loaded=session is not None,
            load_error=self.load_error,
            objects_tracked=len(session.object_ids) if session is not None else 0,
        )
        stamp = self.get_clock().now().to_msg()
        send(
            publisher,
            lambda: build_diagnostic_array(stamp, self.stats.snapshot(), info),
            self.context.ok,
        )

    def _on_bad_depth(self, text: str) -> None:
        """A processed frame's depth could not be used: counted, warned, its objects get NaN."""
        self.stats.depth_unusable()
        self._warn(f"{text} ({self.stats.bad_depth} such frames so far)")

    def _age_s(self, header: Header) -> float | None:
        """Input stamp to now on the node's clock (s); None when the stamp is on another clock."""
        stamp_ns = stamp_to_ns(header.stamp)
        age = (self.get_clock().now().nanoseconds - stamp_ns) / 1e9
        return age if stamp_ns and 0.0 <= age <= MAX_SENSIBLE_AGE_S else None

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=LOG_THROTTLE_S)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; exit code 2 for an invalid parameter."""
    return run(SegmentationNode, args)


def run(make_node: Callable[[], SegmentationNode], args: list[str] | None = None) -> int:
    """Create the node with `make_node` and spin it until Ctrl-C (shared by the lifecycle node).

    Returns the process exit code: 0, or 2 for an invalid parameter.
    """
    rclpy.init(args=args)
    try:
        node = make_node()
    except ParameterError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        try_shutdown()
        return 2
    # Threads: the input callback, services (reentrant) and spare; the model runs on the worker.
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        while True:
            try:
                _stop(executor, node)
                break
            except KeyboardInterrupt:  # came before SIGINT was ignored: finish the teardown
                continue
    return 0


def _stop(executor: MultiThreadedExecutor, node: SegmentationNode) -> None:
    """Tear down after Ctrl-C, deaf to further SIGINTs.

    Ctrl-C under `ros2 launch` delivers SIGINT twice: the terminal sends it to the whole process
    group and launch forwards its own. The second one would raise KeyboardInterrupt in the middle
    of destroy_node (a traceback, exit code -2, "process has died"); launch still escalates to
    SIGTERM if the teardown hangs.
    """
    if threading.current_thread() is threading.main_thread():  # signal.signal needs it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    executor.shutdown()
    node.destroy_node()
    try_shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
