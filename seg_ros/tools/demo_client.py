"""The demo's prompting client: what another node on the robot would do.

It waits for the segmentation node's first instances, then, counting processed frames, sends in
order: a point prompt on one object (`add_points`), a box prompt on another (`add_box`), a
refinement of the first (`add_points` with its `object_id`: the click again plus a background
click) and a one-shot `~/segment`. Every overlay it receives goes into `output_dir/overlay.mp4`;
every `write_png_every`-th one, and the first after each prompt, into PNG files. It prints one
summary line per frame and, at the end, the achieved frame rate, the latency (source stamp ->
instances received) and what each object did; the same goes into `output_dir/summary.json`.
The exit code is 0 when every prompt succeeded and every prompted object was seen visible.

    python -m seg_ros.tools.demo_client --ros-args -p output_dir:=demo_out -p frames:=300 \\
        -p plan:='{"point": [190, 200], "box": [395, 129, 107, 79], ...}'
"""

from __future__ import annotations

import json
import pathlib
import queue
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import Point
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidHandle
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from seg_ros.conversions import image_to_numpy
from seg_ros.msg import InstanceArray
from seg_ros.srv import AddBox, AddPoints, SegmentImage
from seg_ros.tools.spin import spin_in_background

#: Service answer timeout (s): a first prompt may include model warm-up.
CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class DemoPlan:
    """Prompts in pixels of the demo clip, and the processed-frame counts to send them at."""

    point: tuple[float, float]
    box: tuple[int, int, int, int]  # x, y, width, height
    background_point: tuple[float, float]
    at_frames: tuple[int, int, int, int] = (5, 10, 30, 60)
    #: More boxed objects, sent right after `box` (x, y, width, height each).
    extra_boxes: tuple[tuple[int, int, int, int], ...] = ()
    #: Stamp the point, box and refinement prompts on the first frame the client saw (the
    #: prompts were drawn on a recording's first frame; the node keeps recent frames).
    on_first_frame: bool = False
    #: What the objects are: the clicked one's label, then each box's (missing ones get
    #: "clicked", "boxed", "boxed2", ...).
    labels: tuple[str, ...] = ()

    def label(self, i: int) -> str:
        """Label of object `i` (0: the clicked one, 1..: the boxes in order)."""
        if i < len(self.labels) and self.labels[i]:
            return self.labels[i]
        return "clicked" if i == 0 else ("boxed" if i == 1 else f"boxed{i}")

    @staticmethod
    def from_json(text: str) -> DemoPlan:
        """Parse the `plan` parameter; raise ValueError naming what is missing or malformed."""
        try:
            raw = json.loads(text)
            point = (float(raw["point"][0]), float(raw["point"][1]))
            bg = (float(raw["background_point"][0]), float(raw["background_point"][1]))
            x, y, w, h = (int(v) for v in raw["box"])
            at = tuple(int(v) for v in raw.get("at_frames", (5, 10, 30, 60)))
            extra = tuple(
                (int(b[0]), int(b[1]), int(b[2]), int(b[3])) for b in raw.get("extra_boxes", ())
            )
            first = bool(raw.get("on_first_frame", False))
            labels = tuple(str(v) for v in raw.get("labels", ()))
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(
                "plan must be JSON with point [x, y], background_point [x, y] and box "
                f"[x, y, w, h] (pixels); got {text!r}: {exc}"
            ) from exc
        if len(at) != 4 or w <= 0 or h <= 0:
            raise ValueError("plan: box needs a positive size and at_frames four frame counts")
        if any(b[2] <= 0 or b[3] <= 0 for b in extra):
            raise ValueError("plan: every extra box needs a positive size")
        return DemoPlan(point, (x, y, w, h), bg, (at[0], at[1], at[2], at[3]), extra, first, labels)


@dataclass
class ObjectLog:
    label: str = ""
    frames: int = 0
    visible: int = 0
    last_score: float = 0.0


@dataclass
class DemoLog:
    frames: int = 0
    first_t: float = 0.0
    last_t: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    objects: dict[str, ObjectLog] = field(default_factory=dict)
    overlays: int = 0
    pngs: int = 0


class DemoClient(Node):
    def __init__(self) -> None:
        super().__init__("demo_client")
        self.declare_parameter("node", "/segmentation_node")
        self.declare_parameter("output_dir", "demo_out")
        self.declare_parameter("frames", 300)
        self.declare_parameter(
            "plan", ""
        )  # JSON: seg_ros.tools.demo_camera.demo_plan(width, height)
        self.declare_parameter("write_png_every", 10)
        self.declare_parameter("video", True)
        target = str(self.get_parameter("node").value).rstrip("/")
        self.out = pathlib.Path(str(self.get_parameter("output_dir").value))
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_frames = max(1, int(self.get_parameter("frames").value))
        self.png_every = max(1, int(self.get_parameter("write_png_every").value))
        self.want_video = bool(self.get_parameter("video").value)
        plan_text = str(self.get_parameter("plan").value)
        if not plan_text:
            from seg_ros.tools.demo_camera import demo_plan  # the clip's own prompts, 640x480

            plan_text = json.dumps(demo_plan())
        self.plan = DemoPlan.from_json(plan_text)
        self.log_state = DemoLog()
        self.done = threading.Event()
        # Set before the executor shuts down: frames still arriving are not handled (their
        # `~/done` would be published on a publisher being destroyed).
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._video: cv2.VideoWriter | None = None
        self._snapshot = False  # write the next overlay as PNG (a prompt just landed)
        self._object_a = ""
        self._first_stamp: Any = None  # header stamp of the first instances received
        self._prompted: list[str] = []
        self._failed = False
        self._stage = 0
        self._stages: queue.Queue[tuple[int, Any]] = queue.Queue()  # (stage, header to ack)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        services = ReentrantCallbackGroup()
        self.add_points = self.create_client(
            AddPoints, f"{target}/add_points", callback_group=services
        )
        self.add_box = self.create_client(AddBox, f"{target}/add_box", callback_group=services)
        self.segment = self.create_client(
            SegmentImage, f"{target}/segment", callback_group=services
        )
        #: Each processed frame's header once the client is done with it (prompts included).
        self._done = self.create_publisher(InstanceArray, "~/done", reliable)
        topics = MutuallyExclusiveCallbackGroup()
        self.create_subscription(
            InstanceArray,
            f"{target}/instances",
            self._on_instances,
            reliable,
            callback_group=topics,
        )
        self.create_subscription(
            Image, f"{target}/overlay", self._on_overlay, reliable, callback_group=topics
        )
        # Prompts go out one after another from their own thread: a service call never blocks
        # a subscription callback, and the refinement always follows the prompt it refines.
        self._prompter = threading.Thread(target=self._prompt_loop, daemon=True)
        self._prompter.start()

    # -------------------------------------------------------------- frames and the schedule
    def _on_instances(self, msg: InstanceArray) -> None:
        if self.closing.is_set():
            return
        now = time.monotonic()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latency = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        with self._lock:
            st = self.log_state
            st.frames += 1
            n = st.frames
            if n == 1:
                st.first_t = now
                self._first_stamp = msg.header.stamp
            st.last_t = now
            st.latency_ms.append(latency)
            for inst in msg.instances:
                obj = st.objects.setdefault(inst.id, ObjectLog())
                obj.label = inst.label
                obj.frames += 1
                obj.visible += int(inst.visible)
                obj.last_score = float(inst.score)
        summary = ", ".join(
            f"{i.id}:{i.label or '-'} {'vis' if i.visible else 'lost'} s={i.score:.2f} "
            f"box=({i.bbox.x_offset},{i.bbox.y_offset},{i.bbox.width},{i.bbox.height})"
            for i in msg.instances
        )
        print(
            f"frame {n:4d} stamp {stamp_ns * 1e-9:.3f} latency {latency:6.1f} ms  "
            f"{len(msg.instances)} objects  {summary}",
            flush=True,
        )
        at = self.plan.at_frames
        due = []
        while self._stage < len(at) and n >= at[self._stage]:
            due.append(self._stage)
            self._stage += 1
        # `~/done` says this frame is handled, its due prompts answered included: a camera
        # paced on it (`make demo --paced`) then shows the node the same frames every run.
        for i, stage in enumerate(due):
            self._stages.put((stage, msg.header if i == len(due) - 1 else None))
        if not due:
            self._publish_done(msg.header)
        if n >= self.max_frames:
            self.done.set()

    def _publish_done(self, header: Any) -> None:
        """`~/done` for the frame of `header`; nothing once the client is closing (a callback
        that checked before the flag was set may still get here while the node is destroyed:
        its publisher is gone, and nobody waits for that answer any more)."""
        if self.closing.is_set():
            return
        try:
            self._done.publish(InstanceArray(header=header))
        except InvalidHandle:
            if not self.closing.is_set():
                raise

    def _call(self, client: Any, request: Any) -> Any:
        if not client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        end = time.monotonic() + CALL_TIMEOUT
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        if not future.done():
            raise RuntimeError(f"service {client.srv_name} did not answer in {CALL_TIMEOUT:g} s")
        return future.result()

    def _prompt_loop(self) -> None:
        while True:
            stage, header = self._stages.get()
            try:
                self._prompt(stage)
            except Exception as exc:  # a demo reports what went wrong and carries on
                self._event(stage, "error", False, str(exc))
            if header is not None:
                self._publish_done(header)

    def _stamp(self, req: Any) -> None:
        if self.plan.on_first_frame and self._first_stamp is not None:
            req.stamp = self._first_stamp

    def _prompt(self, stage: int) -> None:
        plan = self.plan
        px, py = plan.point
        if stage == 0:
            req = AddPoints.Request()
            self._stamp(req)
            req.points = [Point(x=px, y=py)]
            req.point_labels = [1]
            req.label = plan.label(0)
            res = self._call(self.add_points, req)
            self._object_a = res.object_id if res.success else ""
            self._event(stage, "add_points", res.success, res.message, res.object_id, res)
        elif stage == 1:
            for i, (x, y, w, h) in enumerate((plan.box, *plan.extra_boxes)):
                req = AddBox.Request()
                self._stamp(req)
                req.box.x_offset, req.box.y_offset, req.box.width, req.box.height = x, y, w, h
                req.label = plan.label(i + 1)
                res = self._call(self.add_box, req)
                kind = "add_box" if i == 0 else f"add_box{i + 1}"
                self._event(stage, kind, res.success, res.message, res.object_id, res)
        elif stage == 2:
            if not self._object_a:
                self._event(stage, "refine", False, "no object to refine (add_points failed)")
                return
            req = AddPoints.Request()
            self._stamp(req)
            req.object_id = self._object_a
            bx, by = plan.background_point
            req.points = [Point(x=px, y=py), Point(x=bx, y=by)]
            req.point_labels = [1, 0]
            res = self._call(self.add_points, req)
            self._event(stage, "refine", res.success, res.message, res.object_id, res)
        elif stage == 3:
            req = SegmentImage.Request()
            req.points = [Point(x=px, y=py)]
            req.point_labels = [1]
            res = self._call(self.segment, req)
            areas = [int(np.count_nonzero(image_to_numpy(i.mask))) for i in res.instances]
            detail = f"{len(res.instances)} instance(s), mask pixels {areas}"
            self._event(stage, "segment", res.success, f"{res.message} ({detail})".strip())

    def _event(
        self,
        stage: int,
        kind: str,
        ok: bool,
        message: str,
        object_id: str = "",
        response: Any = None,
    ) -> None:
        entry: dict[str, Any] = {"stage": stage, "call": kind, "success": bool(ok)}
        if message:
            entry["message"] = message
        if object_id:
            entry["object_id"] = object_id
            if ok and object_id not in self._prompted:
                self._prompted.append(object_id)
        if response is not None and ok:
            inst = response.instance
            entry["instance"] = {
                "visible": bool(inst.visible),
                "score": round(float(inst.score), 3),
                "bbox": [
                    inst.bbox.x_offset,
                    inst.bbox.y_offset,
                    inst.bbox.width,
                    inst.bbox.height,
                ],
            }
        with self._lock:
            self._failed |= not ok
            self.log_state.events.append(entry)
            self._snapshot = True
        print(f"[demo] {json.dumps(entry)}", flush=True)

    # -------------------------------------------------------------- overlays to disk
    def _on_overlay(self, msg: Image) -> None:
        bgr = image_to_numpy(msg)
        if bgr.ndim != 3 or msg.encoding != "bgr8":
            return
        bgr = np.ascontiguousarray(bgr)
        with self._lock:
            st = self.log_state
            st.overlays += 1
            k = st.overlays
            snap, self._snapshot = self._snapshot, False
            if self.want_video and self._video is None:
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                writer = cv2.VideoWriter(
                    str(self.out / "overlay.mp4"), fourcc, 15.0, (bgr.shape[1], bgr.shape[0])
                )
                self._video = writer if writer.isOpened() else None
                self.want_video = self._video is not None
            if self._video is not None:
                self._video.write(bgr)
        if snap or k % self.png_every == 1 or self.png_every == 1:
            cv2.imwrite(str(self.out / f"overlay_{k:05d}.png"), bgr)
            with self._lock:
                self.log_state.pngs += 1

    def finish(self) -> dict[str, Any]:
        """Close the video; the run's summary (also written to output_dir/summary.json).

        Waits (up to CALL_TIMEOUT) for the prompts already due to be answered."""
        end = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < end:
            with self._lock:
                if len(self.log_state.events) >= self._stage:
                    break
            time.sleep(0.05)
        with self._lock:
            if self._video is not None:
                self._video.release()
                self._video = None
            # An overlay arriving after this would open (and truncate) overlay.mp4 again.
            recorded, self.want_video = self.want_video, False
            st = self.log_state
            span = st.last_t - st.first_t
            fps = (st.frames - 1) / span if st.frames > 1 and span > 0 else 0.0
            prompted = {oid: vars(st.objects.get(oid, ObjectLog())) for oid in self._prompted}
            summary: dict[str, Any] = {
                "frames": st.frames,
                "fps": round(fps, 2),
                "latency_ms_p50": round(statistics.median(st.latency_ms), 1)
                if st.latency_ms
                else None,
                "overlays": st.overlays,
                "pngs": st.pngs,
                "video": str(self.out / "overlay.mp4") if st.overlays and recorded else "",
                "events": list(st.events),
                "objects": {oid: vars(o) for oid, o in st.objects.items()},
                "ok": (
                    not self._failed
                    and len({e["stage"] for e in st.events}) == self._stage > 0
                    and bool(prompted)
                    and all(o["visible"] > 0 for o in prompted.values())
                ),
            }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = DemoClient()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = spin_in_background(executor)
    try:
        while not node.done.wait(0.2):
            pass
        # Let the last overlay arrive (it is published after the instances).
        time.sleep(0.3)
    except KeyboardInterrupt:
        pass
    summary = node.finish()
    lat = summary["latency_ms_p50"]
    print(
        f"[demo] {summary['frames']} frames processed at {summary['fps']:.1f} fps "
        f"(latency p50 {lat} ms); {summary['pngs']} PNGs"
        + (" + overlay.mp4" if summary["video"] else "")
        + f" in {node.out.resolve()}",
        flush=True,
    )
    for oid, obj in summary["objects"].items():
        print(
            f"[demo] object {oid} '{obj['label']}': visible on {obj['visible']}/{obj['frames']} "
            f"frames, last score {obj['last_score']:.2f}",
            flush=True,
        )
    print(f"[demo] {'OK' if summary['ok'] else 'FAILED'}", flush=True)
    node.closing.set()
    executor.shutdown()
    spinner.join(timeout=2.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
