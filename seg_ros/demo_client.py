"""The demo's prompting client: what another node on the robot would do.

It waits for the segmentation node's first instances, then on a schedule (in processed frames):
a point prompt on one object, a box prompt on another, a refinement of the first with a
background point, and a one-shot `~/segment` call. It writes every overlay it receives to
`output_dir` (PNG frames and an MP4), prints one summary line per frame and, at the end, the
achieved frame rate, then exits.

    python -m seg_ros.demo_client --ros-args -p output_dir:=demo_out -p frames:=300
"""

from __future__ import annotations

import json
import pathlib
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
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from seg_ros.conversions import image_to_numpy
from seg_ros.msg import InstanceArray
from seg_ros.srv import AddBox, AddPoints, SegmentImage


@dataclass
class DemoPlan:
    """Prompts in pixels of the demo clip, and the frame (count of processed frames) to send."""

    point: tuple[float, float]
    box: tuple[int, int, int, int]  # x, y, width, height
    background_point: tuple[float, float]
    at_frames: tuple[int, int, int, int] = (5, 10, 30, 60)


@dataclass
class DemoLog:
    frames: int = 0
    first_t: float = 0.0
    last_t: float = 0.0
    events: list[str] = field(default_factory=list)


class DemoClient(Node):
    def __init__(self) -> None:
        super().__init__("demo_client")
        self.declare_parameter("node", "/segmentation_node")
        self.declare_parameter("output_dir", "demo_out")
        self.declare_parameter("frames", 300)
        self.declare_parameter("plan", "")  # JSON from the demo camera's clip: point, box, ...
        self.declare_parameter("write_png_every", 1)
        target = str(self.get_parameter("node").value).rstrip("/")
        self.out = pathlib.Path(str(self.get_parameter("output_dir").value))
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_frames = int(self.get_parameter("frames").value)
        self.png_every = max(1, int(self.get_parameter("write_png_every").value))
        plan = json.loads(str(self.get_parameter("plan").value) or "{}")
        self.plan = DemoPlan(
            point=tuple(plan.get("point", (160.0, 120.0))),  # type: ignore[arg-type]
            box=tuple(plan.get("box", (300, 200, 100, 100))),  # type: ignore[arg-type]
            background_point=tuple(plan.get("background_point", (170.0, 130.0))),  # type: ignore[arg-type]
        )
        self.log_state = DemoLog()
        self.done = threading.Event()
        self._video: cv2.VideoWriter | None = None
        self._lock = threading.Lock()
        self._object_a = ""
        self._stage = 0
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self._services = ReentrantCallbackGroup()
        self.add_points = self.create_client(
            AddPoints, f"{target}/add_points", callback_group=self._services
        )
        self.add_box = self.create_client(
            AddBox, f"{target}/add_box", callback_group=self._services
        )
        self.segment = self.create_client(
            SegmentImage, f"{target}/segment", callback_group=self._services
        )
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

    # -------------------------------------------------------------- prompts on a schedule
    def _on_instances(self, msg: InstanceArray) -> None:
        with self._lock:
            self.log_state.frames += 1
            n = self.log_state.frames
            now = time.monotonic()
            if n == 1:
                self.log_state.first_t = now
            self.log_state.last_t = now
        summary = ", ".join(
            f"{i.id}:{i.label or '-'} {'vis' if i.visible else 'lost'} s={i.score:.2f} "
            f"box=({i.bbox.x_offset},{i.bbox.y_offset},{i.bbox.width},{i.bbox.height})"
            for i in msg.instances
        )
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        print(
            f"frame {n:4d} stamp {stamp:.3f}  {len(msg.instances)} objects  {summary}", flush=True
        )
        at = self.plan.at_frames
        if self._stage < len(at) and n >= at[self._stage]:
            stage = self._stage
            self._stage += 1
            threading.Thread(target=self._prompt, args=(stage,), daemon=True).start()
        if n >= self.max_frames:
            self.done.set()

    def _call(self, client: Any, request: Any) -> Any:
        if not client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        end = time.monotonic() + 30.0
        while not future.done() and time.monotonic() < end:
            time.sleep(0.01)
        if not future.done():
            raise RuntimeError(f"service {client.srv_name} did not answer in 30 s")
        return future.result()

    def _prompt(self, stage: int) -> None:
        plan = self.plan
        try:
            if stage == 0:
                req = AddPoints.Request()
                req.points = [Point(x=float(plan.point[0]), y=float(plan.point[1]))]
                req.point_labels = [1]
                req.label = "clicked"
                res = self._call(self.add_points, req)
                self._object_a = res.object_id
                self._event(f"add_points -> {res.success} '{res.message}' id={res.object_id}")
            elif stage == 1:
                req = AddBox.Request()
                x, y, w, h = plan.box
                req.box.x_offset, req.box.y_offset, req.box.width, req.box.height = x, y, w, h
                req.label = "boxed"
                res = self._call(self.add_box, req)
                self._event(f"add_box -> {res.success} '{res.message}' id={res.object_id}")
            elif stage == 2 and self._object_a:
                req = AddPoints.Request()
                req.object_id = self._object_a
                bx, by = plan.background_point
                fx, fy = plan.point
                req.points = [Point(x=float(fx), y=float(fy)), Point(x=float(bx), y=float(by))]
                req.point_labels = [1, 0]
                res = self._call(self.add_points, req)
                self._event(f"refine {self._object_a} -> {res.success} '{res.message}'")
            elif stage == 3:
                req = SegmentImage.Request()
                req.points = [Point(x=float(plan.point[0]), y=float(plan.point[1]))]
                req.point_labels = [1]
                res = self._call(self.segment, req)
                self._event(f"segment (one-shot) -> {res.success} {len(res.instances)} instance(s)")
        except Exception as exc:  # a demo prints what went wrong and carries on
            self._event(f"prompt stage {stage} failed: {exc}")

    def _event(self, text: str) -> None:
        self.log_state.events.append(text)
        print(f"[demo] {text}", flush=True)

    # -------------------------------------------------------------- overlays to disk
    def _on_overlay(self, msg: Image) -> None:
        bgr = image_to_numpy(msg)
        if bgr.ndim != 3:
            return
        with self._lock:
            n = self.log_state.frames
            if self._video is None:
                fourcc = cv2.VideoWriter.fourcc(*"mp4v")
                self._video = cv2.VideoWriter(
                    str(self.out / "overlay.mp4"), fourcc, 15.0, (bgr.shape[1], bgr.shape[0])
                )
            self._video.write(np.ascontiguousarray(bgr))
        if n % self.png_every == 0:
            cv2.imwrite(str(self.out / f"overlay_{n:05d}.png"), bgr)

    def finish(self) -> dict[str, float]:
        with self._lock:
            if self._video is not None:
                self._video.release()
                self._video = None
            st = self.log_state
            span = st.last_t - st.first_t
            fps = (st.frames - 1) / span if st.frames > 1 and span > 0 else 0.0
        return {"frames": float(st.frames), "fps": fps}


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = DemoClient()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        while not node.done.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    summary = node.finish()
    print(
        f"[demo] {int(summary['frames'])} frames processed at {summary['fps']:.1f} fps; "
        f"overlays in {node.out.resolve()}",
        flush=True,
    )
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
