"""The segmentation node: camera frames in; tracked instances, label image and overlay out.

    python -m seg_ros.segmentation_node --ros-args -r image:=/camera/color/image_raw \\
        --params-file config/seg_ros.yaml -p backend:=classic
    # one model, three cameras (topics and services under each camera's name):
    python -m seg_ros.segmentation_node --ros-args -p "cameras:=[head, wrist, base]" \\
        -r head/image:=/head/color/image_raw -r wrist/image:=/wrist/color/image_raw ...

Newest frame wins. The input subscriptions (their own MutuallyExclusive callback group) only put
each message into its camera's one-slot buffer (seg_ros.frame_queue.FairSlots); a message
replaced there before the worker took it counts as dropped. One worker thread takes the newest
message of the waiting camera it served longest ago (cameras are served in turn: a 30 Hz camera
cannot starve a 5 Hz one), runs the model and publishes, so a model slower than the cameras skips
stale frames instead of building a backlog. With `batch_cameras` and a model that batches
(SAM 2 / SAM 3 on CUDA), the frames of every camera waiting together go through the image
encoder as one batch. Services run in their own Reentrant group on a MultiThreadedExecutor:
they are answered while a frame is processed and serialise with frames only on the session's
lock (SegmentationSession owns ids, labels, stamps, validation and locking; this file only
translates messages); a waiting request goes before the worker's next frame (RequestsFirst).

Cameras. `cameras` (default []: one camera with the single-camera names) names the cameras; one
model is loaded (`registry.load_model`) and each camera gets its own stream of it
(`Model.open_stream()`: objects, ids, memory bank), its own topics, services, click prompts and
/diagnostics status (seg_ros.camera.Camera). `session`, `stats`, `outputs` ... of the node are
its first camera's.

Every service answers success + message and never raises; a backend that fails to load leaves the
node up, answering success=false with the reason.

Structure: `load_model` / `release_model` (weights and sessions), `open_io` / `close_io`
(topics, services, worker), `process_frame` (message -> ProcessedFrame) and `publish`, which
calls every entry of the camera's `outputs` with the ProcessedFrame. The per-frame topics and the
parameters that turn them on are one table, seg_ros.outputs.registry.make_outputs; `locate` is
the hook that fills the instances' 3D fields. One counter per camera, `stats`
(seg_ros.outputs.diagnostics.NodeStats), counts every frame as received, dropped, processed
(after publishing) or failed, and feeds /diagnostics. The service handlers (`_on_add_points`
...) are seg_ros.services.ServiceHandlers, mixed into each Camera; rqt_image_view clicks and
RViz Publish Point clicks become point prompts through them (seg_ros.clicks, `click_prompts`).

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
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.utilities import try_shutdown
from std_msgs.msg import Header

from seg_ros.camera import Camera, InputMsg, camera_name_error, image_of
from seg_ros.clicks import ClickPrompts
from seg_ros.conversions import ConversionError, Locate3D, stamp_to_ns
from seg_ros.engine import SegmentationSession, SegRosError
from seg_ros.engine.backends.base import Model
from seg_ros.engine.registry import load_model
from seg_ros.engine.session import step_sessions
from seg_ros.frame_queue import FairSlots, RequestsFirst
from seg_ros.node_params import (
    NodeParams,
    ParameterError,
    declare_camera_parameters,
    declare_parameters,
)
from seg_ros.outputs import detections
from seg_ros.outputs.diagnostics import NodeInfo, NodeStats, build_diagnostic_status
from seg_ros.outputs.markers import MarkerPublisherState
from seg_ros.outputs.registry import OUTPUT_QOS, ProcessedFrame, send
from seg_ros.sync import SyncHandle

NODE_NAME = "segmentation_node"
#: Bad frames and missing models are logged at most this often (seconds).
LOG_THROTTLE_S = 5.0
#: An input stamp older than this on the node's clock (or in its future) is taken to come from
#: another clock: its age is then not reported in /diagnostics (seconds).
MAX_SENSIBLE_AGE_S = 60.0


class SegmentationNode(Node):
    """Segments and tracks prompted objects on each camera's `image` stream (module docstring).

    Raises ParameterError at construction for an invalid parameter value. `start=False` only
    declares the parameters (the lifecycle node loads and opens in its transitions). Other
    constructor arguments go to rclpy's Node (context, parameter_overrides, cli_args, ...).
    """

    #: What a failed model load means for a user (the lifecycle node has no services then).
    LOAD_FAILURE_CONSEQUENCE = "the node stays up and its services answer success=false"

    def __init__(self, node_name: str = NODE_NAME, *, start: bool = True, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params: NodeParams = declare_parameters(self)
        names = list(self.params.cameras) or [""]
        for name in self.params.cameras:
            error = camera_name_error(name)
            if error:
                raise ParameterError(f"parameter 'cameras': {error}")
        if len(set(names)) != len(names):
            raise ParameterError(f"parameter 'cameras' names a camera twice: {names}")
        #: The loaded model (registry.load_model), shared by the cameras' streams.
        self.model: Model | None = None
        self.device = ""  # where the model runs ("cuda:0", "cpu"), once loaded
        self._requests = RequestsFirst()
        # Checked once at start-up: a missing module's import would be retried on every call.
        self._vision_msgs = detections.available()
        if not self._vision_msgs:
            self.get_logger().info("vision_msgs is not installed: no ~/detections output")
        #: One per camera, in the order of `cameras`; the first is the node's `session` etc.
        self.cameras: list[Camera] = [
            Camera(
                self,
                name,
                declare_camera_parameters(self, name, self.params) if name else self.params,
                self._requests,
                self._vision_msgs,
                self._offer,
            )
            for name in names
        ]
        self._slots: FairSlots[Camera, InputMsg] = FairSlots(self.cameras)
        self._worker: threading.Thread | None = None
        self._entities: list[tuple[str, Any]] = []  # node-wide entities made by open_io
        self._pub_diagnostics: Any = None  # /diagnostics while open (diagnostics_period_s > 0)
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        if start:
            self.load_model()
            self.open_io()

    # ------------------------------------------------------------------ the first camera
    # Single-camera code (tests, benches, the lifecycle node) reads these from the node.
    @property
    def camera(self) -> Camera:
        return self.cameras[0]

    @property
    def session(self) -> SegmentationSession | None:
        return self.camera.session

    @property
    def load_error(self) -> str:
        return self.camera.load_error

    @property
    def stats(self) -> NodeStats:
        return self.camera.stats

    @property
    def markers(self) -> MarkerPublisherState:
        return self.camera.markers

    @property
    def outputs(self) -> list[Callable[[ProcessedFrame], None]]:
        return self.camera.outputs

    @property
    def clicks(self) -> ClickPrompts:
        return self.camera.clicks

    @property
    def sync(self) -> SyncHandle | None:
        return self.camera.sync

    @property
    def locate(self) -> Locate3D | None:
        return self.camera.locate

    @locate.setter
    def locate(self, value: Locate3D | None) -> None:
        for camera in self.cameras:
            camera.locate = value

    @property
    def _latest(self) -> ProcessedFrame | None:
        return self.camera._latest

    # ------------------------------------------------------------------ model
    def load_model(self) -> bool:
        """Load the model once and open one stream (session) per camera. On failure the node
        stays up and says why."""
        config = self.params.backend_config()
        try:
            model = load_model(config)
            sessions = [
                SegmentationSession(
                    model.open_stream(),
                    max_objects=self.params.max_objects,
                    score_threshold=self.params.score_threshold,
                )
                for _ in self.cameras
            ]
        except Exception as exc:  # missing weights / packages, bad options: keep serving
            error = f"backend '{config.backend}' failed to load: {type(exc).__name__}: {exc}"
            for camera in self.cameras:
                camera.load_error = error
            self.get_logger().error(f"{error}; {self.LOAD_FAILURE_CONSEQUENCE}")
            return False
        self.model = model
        for camera, session in zip(self.cameras, sessions, strict=True):
            camera.session = session
            camera.load_error = ""
        self.device = sessions[0].backend.device
        where = f"device {self.device}"
        if len(self.cameras) > 1:
            where += f", {len(self.cameras)} cameras: " + ", ".join(c.name for c in self.cameras)
        name = config.model or "default model"
        self.get_logger().info(f"backend '{config.backend}' loaded ({name}, {where})")
        for camera in self.cameras:
            self._start_concepts(camera)
        return True

    def _start_concepts(self, camera: Camera) -> None:
        """The camera's `concepts` (the node's, or its own `<camera>.concepts`) as standing
        queries; one that is refused is logged (the node and the other queries go on)."""
        session = camera.session
        if session is None:
            return
        prefix = f"{camera.label}: " if camera.name else ""
        for text in camera.params.concepts:
            try:
                query = session.add_query(text, camera.params.query_options())
            except SegRosError as exc:
                self.get_logger().error(f"{prefix}concept '{text}' not started: {exc}")
                continue
            self.get_logger().info(f"{prefix}standing query {query.query_id}: '{text}'")

    def release_model(self) -> None:
        """Close every camera's session, then the model (its memory). Idempotent."""
        model, self.model = self.model, None
        for camera in self.cameras:
            session, camera.session = camera.session, None
            camera._latest = None
            if session is not None:
                session.close()
                camera.load_error = "the model was released"
        if model is not None:
            model.close()
            gc.collect()  # model tensors in reference cycles would keep their (GPU) memory

    # ------------------------------------------------------------------ I/O
    def open_io(self) -> None:
        """Every camera's inputs, outputs and services; /diagnostics; the worker thread."""
        if self._worker is not None:
            return
        slots: FairSlots[Camera, InputMsg] = FairSlots(self.cameras)
        self._slots = slots
        for camera in self.cameras:
            table = camera._service_table()
            inputs = camera.open_io(self._input_group, self._service_group, table)
            prefix = f"{camera.label}: " if camera.name else ""
            self.get_logger().info(f"{prefix}segmenting {inputs}")
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
        self._worker = threading.Thread(
            target=self._run_worker, args=(slots,), name="segmentation_worker", daemon=True
        )
        self._worker.start()

    def close_io(self) -> None:
        """Stop the worker (after its current frame) and destroy topics and services."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._slots.close()
        worker.join(timeout=30.0)
        if worker.is_alive():
            self.get_logger().warning("the worker is still in a frame; leaving it behind")
        # Deactivated or shut down: take the boxes off RViz rather than freeze them there.
        for camera in self.cameras:
            camera.close_io()
        self._pub_diagnostics = None
        for kind, entity in self._entities:
            (self.destroy_timer if kind == "timer" else self.destroy_publisher)(entity)
        self._entities = []

    def destroy_node(self) -> None:
        self.close_io()
        self.release_model()
        super().destroy_node()

    # ------------------------------------------------------------------ frames
    def _offer(self, camera: Camera, msg: InputMsg) -> None:
        """Input callback: the message (or synchronised set) replaces what was not taken yet."""
        camera.stats.frame_received()  # before the worker can see it: processed <= received
        if self._slots.put(camera, msg):
            camera.stats.frame_dropped()

    def _run_worker(self, slots: FairSlots[Camera, InputMsg]) -> None:
        while True:
            batch = self._batching()
            items = slots.take_all() if batch else [item] if (item := slots.take()) else []
            if not items:
                return  # closed
            try:
                done = self._process(items) if batch else [(items[0][0], self._frame(*items[0]))]
            except Exception:  # the worker must survive anything a frame does
                # e.g. torch.cuda.OutOfMemoryError from the model: a dropped frame like any other
                for camera, _, _ in items:
                    camera.bad_frame(traceback.format_exc())
                continue
            for camera, frame in done:
                if frame is None:  # dropped (logged and counted)
                    continue
                try:
                    camera.publish(frame)
                    camera.stats.frame_processed(
                        time.monotonic() - frame.received_at, self._age_s(frame.header)
                    )
                except Exception:
                    camera.bad_frame(traceback.format_exc())

    def _batching(self) -> bool:
        """Several cameras' waiting frames go through the model as one batch: models that batch
        the image encoder (sam2, sam3), on CUDA. On the CPU a batch gained nothing (0.9-1.2x,
        `make bench` suite streams) and would hold the first camera's outputs back until the
        last camera's step, so there the cameras are stepped one by one."""
        model = self.model
        return (
            len(self.cameras) > 1
            and self.params.batch_cameras
            and model is not None
            and model.batches_streams
            and model.device.startswith("cuda")
        )

    def process_frame(
        self, msg: InputMsg, received_at: float | None = None
    ) -> ProcessedFrame | None:
        """Convert and segment one message of the first camera (tests and benches)."""
        arrival = time.monotonic() if received_at is None else received_at
        return self._frame(self.camera, msg, arrival)

    def _frame(self, camera: Camera, msg: InputMsg, arrival: float) -> ProcessedFrame | None:
        """Convert and segment one message (or RGB-D set); None (logged, counted) when it cannot be.

        The depth of an RGB-D set is not touched here: `FrameDepth` converts it when an output
        first asks for 3D.
        """
        session = camera.session_or_drop()
        if session is None:
            return None
        try:
            rgb = camera.convert(msg)
            self._requests.wait_for_requests()
            result = session.step(rgb, stamp_to_ns(image_of(msg).header.stamp))
        except (ConversionError, SegRosError) as exc:
            camera.bad_frame(exc)
            return None
        return camera.frame(msg, rgb, result, arrival)

    def _process(
        self, items: list[tuple[Camera, InputMsg, float]]
    ) -> list[tuple[Camera, ProcessedFrame | None]]:
        """Several cameras' frames in one model batch; a bad one is dropped, the rest go on."""
        ready: list[tuple[Camera, SegmentationSession, InputMsg, float, Any]] = []
        for camera, msg, arrival in items:
            session = camera.session_or_drop()
            if session is None:
                continue
            try:
                ready.append((camera, session, msg, arrival, camera.convert(msg)))
            except ConversionError as exc:
                camera.bad_frame(exc)
        model = self.model
        if not ready or model is None:
            return []
        self._requests.wait_for_requests()
        results = step_sessions(
            model,
            [(sess, rgb, stamp_to_ns(image_of(m).header.stamp)) for _, sess, m, _, rgb in ready],
        )
        done: list[tuple[Camera, ProcessedFrame | None]] = []
        for (camera, _, msg, arrival, rgb), result in zip(ready, results, strict=True):
            if isinstance(result, BaseException):
                camera.bad_frame(result)
            else:
                done.append((camera, camera.frame(msg, rgb, result, arrival)))
        return done

    def publish(self, frame: ProcessedFrame) -> None:
        """Every output of the first camera in turn (tests and benches)."""
        self.camera.publish(frame)

    def _publish_diagnostics(self) -> None:
        """Timer: one DiagnosticStatus per camera from its `stats` and the model."""
        publisher = self._pub_diagnostics  # None once close_io ran
        if publisher is None:
            return
        stamp = self.get_clock().now().to_msg()
        node_name = self.get_fully_qualified_name()

        def build() -> DiagnosticArray:
            statuses = []
            for camera in self.cameras:
                session = camera.session
                info = NodeInfo(
                    node_name=f"{node_name}/{camera.name}" if camera.name else node_name,
                    backend=self.params.backend,
                    model=self.params.model or "default",
                    device=self.device or self.params.device,
                    model_loaded=session is not None,
                    load_error=camera.load_error,
                    objects_tracked=len(session.object_ids) if session is not None else 0,
                )
                statuses.append(build_diagnostic_status(camera.stats.snapshot(), info))
            return DiagnosticArray(header=Header(stamp=stamp), status=statuses)

        send(publisher, build, self.context.ok)

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
