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
worker), `process_frame` (message -> ProcessedFrame) and `publish`, which calls every callable in
`outputs` with the ProcessedFrame: further outputs join that list, and `locate` is the hook
that fills the instances' 3D fields.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from seg_ros.conversions import (
    ConversionError,
    Locate3D,
    RgbImage,
    build_prompt,
    candidate_instances,
    compressed_to_rgb,
    frame_to_msg,
    image_to_rgb,
    instance_to_msg,
    ns_to_stamp,
    numpy_to_image,
    stamp_to_ns,
)
from seg_ros.engine import FrameResult, Prompt, SegmentationSession, SegRosError
from seg_ros.engine.errors import NoFrameError
from seg_ros.engine.registry import build_backend
from seg_ros.msg import InstanceArray
from seg_ros.node_params import NodeParams, ParameterError, declare_parameters
from seg_ros.overlay import render_overlay
from seg_ros.srv import AddBox, AddMask, AddPoints, AddText, RemoveObject, SegmentImage

NODE_NAME = "segmentation_node"
#: Outputs are reliable; a short history is enough (a late reader wants the newest frame).
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
#: Bad frames and missing models are logged at most this often (seconds).
LOG_THROTTLE_S = 5.0

Msg = TypeVar("Msg")


@dataclass(frozen=True)
class ProcessedFrame:
    """One processed camera frame: what every output is made from."""

    header: Header  # the input image's header: stamp and frame_id of every output
    rgb: RgbImage  # RGB uint8 (H, W, 3), the frame the model saw
    result: FrameResult
    received_at: float  # time.monotonic() when the message arrived (latency = now - this)


@dataclass
class FrameStats:
    received: int = 0  # messages the subscription delivered
    dropped: int = 0  # replaced by a newer message before the worker took them
    processed: int = 0  # went through the model and were published
    failed: int = 0  # refused (bad message, model error, no model)


class LatestSlot(Generic[Msg]):
    """A one-message buffer: `put` replaces (and counts as dropped) what was not taken yet."""

    def __init__(self, stats: FrameStats) -> None:
        self._cond = threading.Condition()
        self._item: tuple[Msg, float] | None = None
        self._closed = False
        self._stats = stats

    def put(self, msg: Msg) -> None:
        now = time.monotonic()
        with self._cond:
            self._stats.received += 1
            if self._item is not None:
                self._stats.dropped += 1
            self._item = (msg, now)
            self._cond.notify()

    def take(self) -> tuple[Msg, float] | None:
        """(newest message, its monotonic arrival time), waiting for one; None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RequestsFirst:
    """Lets waiting service requests take the session before the worker's next frame.

    The session's lock is not fair: a worker that always has a next frame ready would re-take it
    at once and could starve a prompt for many frames. Requests register here; the worker starts
    a frame only when none is waiting (or after `max_wait_s`, so a flood of requests cannot stop
    the stream).
    """

    def __init__(self, max_wait_s: float = 1.0) -> None:
        self._cond = threading.Condition()
        self._waiting = 0
        self.max_wait_s = max_wait_s

    @contextmanager
    def request(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1
                self._cond.notify_all()

    def wait_for_requests(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._waiting == 0, timeout=self.max_wait_s)


class SegmentationNode(Node):
    """Segments and tracks prompted objects on the `image` stream (see the module docstring).

    Raises ParameterError at construction for an invalid parameter value. Other constructor
    arguments go to rclpy's Node (context, parameter_overrides, cli_args, namespace, ...).
    """

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.params: NodeParams = declare_parameters(self)
        self.session: SegmentationSession | None = None
        self.load_error = "the model is not loaded"
        self.stats = FrameStats()
        #: Called in turn with every ProcessedFrame (from the worker thread).
        self.outputs: list[Callable[[ProcessedFrame], None]] = []
        #: 3D centroid / extent of an object (None: NaN in the instances).
        self.locate: Locate3D | None = None
        self._latest: ProcessedFrame | None = None
        self._slot: LatestSlot[Image | CompressedImage] = LatestSlot(self.stats)
        self._requests = RequestsFirst()
        self._worker: threading.Thread | None = None
        self._entities: list[tuple[str, Any]] = []  # (kind, entity) made by open_io
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
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
            self.get_logger().error(f"{self.load_error}; services answer success=false")
            return False
        self.session = SegmentationSession(
            backend,
            max_objects=self.params.max_objects,
            score_threshold=self.params.score_threshold,
        )
        self.load_error = ""
        model = config.model or "default model"
        self.get_logger().info(f"backend '{backend.name}' loaded ({model}, device {config.device})")
        return True

    def release_model(self) -> None:
        """Close the session (frees the model / GPU memory). Idempotent."""
        session, self.session = self.session, None
        self._latest = None
        if session is not None:
            session.close()
            self.load_error = "the model was released"

    # ------------------------------------------------------------------ I/O
    def open_io(self) -> None:
        """Input subscription, output publishers, services and the worker thread."""
        if self._worker is not None:
            return
        params = self.params
        self._slot = LatestSlot(self.stats)
        if params.input_compressed:
            # `-r image:=/cam/image` must move image/compressed too, as image_transport does.
            topic = self.resolve_topic_name("image") + "/compressed"
            sub = self.create_subscription(
                CompressedImage,
                topic,
                self._slot.put,
                params.input_qos(),
                callback_group=self._input_group,
            )
        else:
            sub = self.create_subscription(
                Image, "image", self._slot.put, params.input_qos(), callback_group=self._input_group
            )
        self._pub_instances = self.create_publisher(InstanceArray, "~/instances", OUTPUT_QOS)
        self._entities = [("subscription", sub), ("publisher", self._pub_instances)]
        self.outputs = [self._publish_instances]
        if params.publish_mask:
            self._pub_mask = self.create_publisher(Image, "~/mask", OUTPUT_QOS)
            self._entities.append(("publisher", self._pub_mask))
            self.outputs.append(self._publish_mask)
        if params.publish_overlay:
            self._pub_overlay = self.create_publisher(Image, "~/overlay", OUTPUT_QOS)
            self._entities.append(("publisher", self._pub_overlay))
            self.outputs.append(self._publish_overlay)
        services: list[tuple[Any, str, Callable[[Any, Any], Any]]] = [
            (AddPoints, "~/add_points", self._on_add_points),
            (AddBox, "~/add_box", self._on_add_box),
            (AddMask, "~/add_mask", self._on_add_mask),
            (AddText, "~/add_text", self._on_add_text),
            (RemoveObject, "~/remove_object", self._on_remove_object),
            (Trigger, "~/reset", self._on_reset),
            (SegmentImage, "~/segment", self._on_segment),
        ]
        for srv_type, name, handler in services:
            service = self.create_service(
                srv_type, name, handler, callback_group=self._service_group
            )
            self._entities.append(("service", service))
        self._worker = threading.Thread(
            target=self._run_worker, args=(self._slot,), name="segmentation_worker", daemon=True
        )
        self._worker.start()
        self.get_logger().info(f"segmenting {sub.topic_name}")

    def close_io(self) -> None:
        """Stop the worker (after its current frame) and destroy topics and services."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        self._slot.close()
        worker.join(timeout=30.0)
        if worker.is_alive():
            self.get_logger().warning("the worker is still in a frame; leaving it behind")
        destroy = {"subscription": self.destroy_subscription, "publisher": self.destroy_publisher}
        for kind, entity in self._entities:
            destroy.get(kind, self.destroy_service)(entity)
        self._entities = []
        self.outputs = []

    def destroy_node(self) -> None:
        self.close_io()
        self.release_model()
        super().destroy_node()

    # ------------------------------------------------------------------ frames
    def _run_worker(self, slot: LatestSlot[Image | CompressedImage]) -> None:
        while (item := slot.take()) is not None:
            try:
                frame = self.process_frame(*item)
                if frame is not None:
                    self.publish(frame)
            except Exception:  # the worker must survive anything a frame does
                # e.g. torch.cuda.OutOfMemoryError from the model: a dropped frame like any other
                self.stats.failed += 1
                self._warn(f"frame dropped ({self.stats.failed} so far): {traceback.format_exc()}")

    def process_frame(
        self, msg: Image | CompressedImage, received_at: float | None = None
    ) -> ProcessedFrame | None:
        """Convert and segment one message; None (logged, counted) when it cannot be."""
        session = self.session
        if session is None:
            self.stats.failed += 1
            self._warn(f"frame dropped: {self.load_error}")
            return None
        try:
            compressed = isinstance(msg, CompressedImage)
            rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
            self._requests.wait_for_requests()
            result = session.step(rgb, stamp_to_ns(msg.header.stamp))
        except (ConversionError, SegRosError) as exc:
            self.stats.failed += 1
            self._warn(f"frame dropped ({self.stats.failed} so far): {exc}")
            return None
        arrival = time.monotonic() if received_at is None else received_at
        frame = ProcessedFrame(msg.header, rgb, result, arrival)
        self._latest = frame
        self.stats.processed += 1
        return frame

    def publish(self, frame: ProcessedFrame) -> None:
        for output in self.outputs:
            try:
                output(frame)
            except Exception:  # one broken output must not silence the others
                name = getattr(output, "__name__", repr(output))
                self._warn(f"output {name} failed: {traceback.format_exc()}")

    def _publish_instances(self, frame: ProcessedFrame) -> None:
        if self._pub_instances.get_subscription_count():
            self._pub_instances.publish(frame_to_msg(frame.result, frame.header, self.locate))

    def _publish_mask(self, frame: ProcessedFrame) -> None:
        if self._pub_mask.get_subscription_count():
            label = frame.result.label_image()
            self._pub_mask.publish(numpy_to_image(label, "mono16", frame.header))

    def _publish_overlay(self, frame: ProcessedFrame) -> None:
        if self._pub_overlay.get_subscription_count():
            bgr = render_overlay(frame.rgb, frame.result.objects, self.params.overlay_alpha)
            self._pub_overlay.publish(numpy_to_image(bgr, "bgr8", frame.header))

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=LOG_THROTTLE_S)

    def _header_at(self, stamp_ns: int) -> Header:
        """Header of a processed frame named by its stamp (frame_id of the stream)."""
        latest = self._latest
        if latest is not None and stamp_to_ns(latest.header.stamp) == stamp_ns:
            return latest.header
        frame_id = latest.header.frame_id if latest is not None else ""
        return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)

    # ------------------------------------------------------------------ services
    def _serve(self, srv_type: Any, handle: Callable[[SegmentationSession], Any]) -> Any:
        """Run a request; any refusal or failure becomes success=false + the reason."""
        session = self.session
        if session is None:
            return srv_type.Response(success=False, message=self.load_error)
        try:
            with self._requests.request():
                response = handle(session)
            response.success = True
            return response
        except (SegRosError, ValueError) as exc:  # refused: the session changed nothing
            message = str(exc)
        except Exception as exc:  # a bug or a model failure must not kill the node
            self.get_logger().error(f"{srv_type.__name__} failed: {traceback.format_exc()}")
            message = f"internal error: {type(exc).__name__}: {exc}"
        return srv_type.Response(success=False, message=message)

    def _prompt(
        self, srv_type: Any, session: SegmentationSession, req: Any, prompt: Prompt, multimask: bool
    ) -> Any:
        """add_points / add_box / add_mask: create or refine an object on a frame in memory."""
        out = session.add_prompt(
            prompt,
            req.object_id,
            label=req.label,
            stamp_ns=stamp_to_ns(req.stamp),
            multimask=multimask,
        )
        header = self._header_at(out.stamp_ns)
        response = srv_type.Response(
            object_id=out.object_id, instance=instance_to_msg(out.object, header, self.locate)
        )
        if multimask:
            response.candidates = candidate_instances(out.object, header)
        label = f" '{out.object.label}'" if out.object.label else ""
        hidden = "" if out.object.visible else " (not visible: empty mask or low score)"
        verb = "refined" if req.object_id else "created"
        response.message = f"{verb} object {out.object_id}{label}{hidden}"
        return response

    def _on_add_points(self, req: AddPoints.Request, _: AddPoints.Response) -> Any:
        return self._serve(
            AddPoints,
            lambda s: self._prompt(
                AddPoints,
                s,
                req,
                build_prompt(points=req.points, point_labels=req.point_labels),
                req.multimask,
            ),
        )

    def _on_add_box(self, req: AddBox.Request, _: AddBox.Response) -> Any:
        return self._serve(
            AddBox,
            lambda s: self._prompt(
                AddBox,
                s,
                req,
                build_prompt(points=req.points, point_labels=req.point_labels, box=req.box),
                False,
            ),
        )

    def _on_add_mask(self, req: AddMask.Request, _: AddMask.Response) -> Any:
        return self._serve(
            AddMask,
            lambda s: self._prompt(
                AddMask, s, req, build_prompt(mask=req.mask, scribble=req.scribble), False
            ),
        )

    def _on_add_text(self, req: AddText.Request, _: AddText.Response) -> Any:
        def run(session: SegmentationSession) -> AddText.Response:
            objects = session.add_text(
                req.text, score_threshold=float(req.score_threshold), max_objects=req.max_objects
            )
            latest = session.latest
            header = self._header_at(latest.stamp_ns if latest is not None else 0)
            return AddText.Response(
                message=f"{len(objects)} object(s) found for '{req.text.strip()}'",
                object_ids=[o.object_id for o in objects],
                instances=[instance_to_msg(o, header, self.locate) for o in objects],
            )

        return self._serve(AddText, run)

    def _on_remove_object(self, req: RemoveObject.Request, _: RemoveObject.Response) -> Any:
        def run(session: SegmentationSession) -> RemoveObject.Response:
            session.remove_object(req.object_id)
            return RemoveObject.Response(message=f"removed object {req.object_id}")

        return self._serve(RemoveObject, run)

    def _on_reset(self, _req: Trigger.Request, _: Trigger.Response) -> Any:
        def run(session: SegmentationSession) -> Trigger.Response:
            session.reset()
            self._latest = None
            return Trigger.Response(message="forgot every object and frame")

        return self._serve(Trigger, run)

    def _on_segment(self, req: SegmentImage.Request, _: SegmentImage.Response) -> Any:
        """One-shot: every prompt kind given makes one Prompt; tracking is untouched.

        With `multimask`, each object's alternatives follow the objects in `instances`.
        """

        def run(session: SegmentationSession) -> SegmentImage.Response:
            if req.image.height == 0 or req.image.width == 0:
                latest = self._latest
                if latest is None:
                    raise NoFrameError("no frame received yet: send an image with the request")
                rgb, header = latest.rgb, latest.header
            else:
                rgb, header = image_to_rgb(req.image), req.image.header
            prompt = build_prompt(
                points=req.points,
                point_labels=req.point_labels,
                box=req.box if req.box.width and req.box.height else None,
                mask=req.mask if req.mask.height else None,
                text=req.text,
            )
            objects = session.segment(
                prompt,
                rgb,
                multimask=req.multimask,
                score_threshold=float(req.score_threshold),
            )
            instances = [instance_to_msg(o, header) for o in objects]
            if req.multimask:
                for obj in objects:
                    instances += candidate_instances(obj, header)
            return SegmentImage.Response(
                message=f"{len(objects)} object(s)", header=header, instances=instances
            )

        return self._serve(SegmentImage, run)


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C; exit code 2 for an invalid parameter."""
    rclpy.init(args=args)
    try:
        node = SegmentationNode()
    except ParameterError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        rclpy.try_shutdown()
        return 2
    # Threads: the input callback, services (reentrant) and spare; the model runs on the worker.
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
