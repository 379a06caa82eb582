"""What the ROS layer costs on top of the engine: `make bench` suite "node".

    python -m seg_ros.bench --quick --only node

Per configuration, one row:
    engine_ms_median    SegmentationSession.step alone on the same RGB frames and prompts.
    node_e2e_ms_median  Image publish -> InstanceArray received (and, for the "all" row, the
                        mask and overlay too): serialisation, DDS, deserialisation, conversion,
                        the step, building and publishing the outputs, and the client's receipt.
    node_overhead_ms    The difference: what the node adds per frame.
    node_internal_ms_median  Inside the node: subscription callback -> every output published
                        (conversion, waiting for the worker, the step, building and publishing);
                        the rest of the overhead is rclpy / DDS moving the messages.
    node_fps            Frames per second of that closed loop (one frame in flight).
    frames_dropped      Frames the node dropped (closed loop: should be 0) or never answered.
    rss_growth_mb       Process RSS growth over the measured frames (after warm-up).

The camera, the node and the client run in this process (one rclpy Context, a private DDS domain
on loopback): still a real DDS round trip, and conservative, since the client's deserialisation
competes with the node for the GIL. The loop is closed (the next frame is published once the
previous one's outputs arrived) so the latency is the node's, not a queue's.

Then two open-loop rows with a model slower than the camera (`slow_model_rows`): how old the
outputs are when frames come ~10x faster than the model steps, and how fast services answer
meanwhile; each carries its bounds and `ok` (the graph tests check the behaviour, these the times).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from functools import partial
from typing import Any

import numpy as np
import psutil

from seg_ros.engine.config import BackendConfig
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession

DISTINCT_FRAMES = 8  # cycled; enough to defeat caches without holding `frames` images


def _frames(width: int, height: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(DISTINCT_FRAMES)]


def _prompts(width: int, height: int) -> list[dict[str, Any]]:
    """Three objects: a click, a box and a painted mask (engine and service forms)."""
    mask = np.zeros((height, width), bool)
    mask[height * 2 // 3 : height * 5 // 6, width // 10 : width // 3] = True
    box = (width // 2, height // 6, width // 5, height // 4)  # x, y, w, h
    return [
        {"points": [(width / 4, height / 4)]},
        {"box": box},
        {"mask": mask},
    ]


def _engine_prompt(p: dict[str, Any]) -> Prompt:
    if "points" in p:
        return Prompt(points=p["points"])
    if "box" in p:
        x, y, w, h = p["box"]
        return Prompt(box=np.array([x, y, x + w, y + h], np.float32))
    return Prompt(mask=p["mask"])


def engine_ms(backend: str, frames: list[np.ndarray], count: int) -> list[float]:
    session = SegmentationSession(build_backend(BackendConfig(backend=backend)))
    height, width = frames[0].shape[:2]
    session.step(frames[0], 1)
    for p in _prompts(width, height):
        session.add_prompt(_engine_prompt(p))
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        session.step(frames[i % len(frames)], i + 2)
        times.append((time.perf_counter() - t0) * 1e3)
    session.close()
    return times


class _Client:
    """Camera + consumer: publishes a frame, waits for its outputs."""

    def __init__(self, node: Any, outputs: tuple[str, ...]) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from seg_ros.msg import InstanceArray

        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.node = node
        self.image = node.create_publisher(Image, "image", reliable)
        self.outputs = outputs
        self._cond = threading.Condition()
        self._arrived: dict[str, tuple[int, float]] = {}
        types = {"instances": InstanceArray, "mask": Image, "overlay": Image}
        for name in outputs:
            node.create_subscription(
                types[name],
                f"/segmentation_node/{name}",
                lambda msg, name=name: self._on_output(name, msg),
                reliable,
            )

    def _on_output(self, name: str, msg: Any) -> None:
        t = time.perf_counter()
        with self._cond:
            self._arrived[name] = (msg.header.stamp.sec, t)
            self._cond.notify_all()

    def round_trip(self, msg: Any, sec: int, timeout: float = 5.0) -> float | None:
        """Publish `msg` stamped `sec`; seconds until every output for it arrived (None: lost)."""
        msg.header.stamp.sec = sec
        with self._cond:
            self._arrived.clear()
        t0 = time.perf_counter()
        self.image.publish(msg)
        with self._cond:
            done = self._cond.wait_for(
                lambda: all(self._arrived.get(n, (-1, 0.0))[0] == sec for n in self.outputs),
                timeout,
            )
            if not done:
                return None
            return max(self._arrived[n][1] for n in self.outputs) - t0


def _node_rows(
    backend: str, frames: list[np.ndarray], count: int, engine_median: float
) -> list[dict[str, Any]]:
    from std_msgs.msg import Header

    from seg_ros.conversions import numpy_to_image
    from seg_ros.srv import AddBox, AddMask, AddPoints
    from seg_ros.testing.graph import RosGraph, start_node

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    height, width = frames[0].shape[:2]
    messages = [numpy_to_image(f, "rgb8", Header(frame_id="camera")) for f in frames]
    rows = []
    for outputs in (("instances",), ("instances", "mask", "overlay")):
        graph = RosGraph(domain_id=1 + (os.getpid() + 37) % 100, num_threads=4)
        try:
            node = start_node(graph, backend=backend, score_threshold=0.0)
            internal: list[float] = []  # subscription callback -> every output published
            node.outputs.append(partial(_record_latency, internal))
            client_node = graph.node("node_bench_client")
            client = _Client(client_node, outputs)
            deadline = time.monotonic() + 10.0
            while client.round_trip(messages[0], 1, timeout=0.2) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("the node did not answer within 10 s")
            _add_objects(client_node, width, height, AddPoints, AddBox, AddMask)
            for i in range(50):  # warm-up: DDS and allocator pools grow in the first frames
                client.round_trip(messages[i % len(messages)], 2 + i)
            rss0 = psutil.Process().memory_info().rss
            dropped0 = node.stats.dropped
            internal.clear()
            times: list[float] = []
            lost = 0
            t_start = time.perf_counter()
            for i in range(count):
                dt = client.round_trip(messages[i % len(messages)], 100 + i)
                if dt is None:
                    lost += 1
                else:
                    times.append(dt * 1e3)
            elapsed = time.perf_counter() - t_start
            rss1 = psutil.Process().memory_info().rss
            objects = len(node.session.object_ids) if node.session is not None else 0
            e2e = statistics.median(times) if times else float("nan")
            rows.append(
                {
                    "bench": "node",
                    "backend": backend,
                    "input": f"{width}x{height}",
                    "outputs": "+".join(outputs),
                    "objects": objects,
                    "frames": count,
                    "engine_ms_median": round(engine_median, 3),
                    "node_e2e_ms_median": round(e2e, 3),
                    "node_e2e_ms_p90": round(float(np.percentile(times, 90)), 3) if times else None,
                    "node_overhead_ms": round(e2e - engine_median, 3),
                    "node_internal_ms_median": round(statistics.median(internal), 3)
                    if internal
                    else None,
                    "node_fps": round(count / elapsed, 1),
                    "frames_dropped": node.stats.dropped - dropped0 + lost,
                    "rss_growth_mb": round((rss1 - rss0) / 2**20, 2),
                }
            )
        finally:
            graph.close()
    return rows


def _record_latency(into: list[float], frame: Any) -> None:
    """A last output: how long the frame took from the subscription to every output sent."""
    into.append((time.monotonic() - frame.received_at) * 1e3)


def _add_objects(node: Any, width: int, height: int, *srv_types: Any) -> None:
    """The same three prompts as the engine measurement, through the node's services."""
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import RegionOfInterest

    from seg_ros.conversions import numpy_to_image

    add_points, add_box, add_mask = srv_types
    requests: list[tuple[Any, str, Any]] = []
    for p in _prompts(width, height):
        if "points" in p:
            req = add_points.Request(points=[Point(x=float(x), y=float(y)) for x, y in p["points"]])
            requests.append((add_points, "add_points", req))
        elif "box" in p:
            x, y, w, h = p["box"]
            roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
            requests.append((add_box, "add_box", add_box.Request(box=roi)))
        else:
            mask = numpy_to_image(p["mask"].astype(np.uint8) * 255, "mono8")
            requests.append((add_mask, "add_mask", add_mask.Request(mask=mask)))
    for srv_type, name, req in requests:
        client = node.create_client(srv_type, f"/segmentation_node/{name}")
        if not client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError(f"service {name} is not available")
        future = client.call_async(req)
        end = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < end:
            time.sleep(0.001)
        res = future.result()
        if res is None or not res.success:
            raise RuntimeError(f"{name} failed: {res.message if res else 'no answer'}")
        node.destroy_client(client)


def run(
    backend: str = "fake", width: int = 1280, height: int = 720, frames: int = 300
) -> list[dict[str, Any]]:
    """Rows for `make bench`: engine vs node end to end, instances only and every output."""
    images = _frames(width, height)
    engine = statistics.median(engine_ms(backend, images, frames))
    return _node_rows(backend, images, frames, engine)


def slow_model_rows() -> list[dict[str, Any]]:
    """A model slower than the camera (seg_ros.testing.slow_model): how old the outputs are and
    how fast services answer, each row with the bounds it must meet (`ok`); about 6 s."""
    from seg_ros.testing.graph import RosGraph
    from seg_ros.testing.slow_model import services_beside_a_slow_model, stream_past_a_slow_model

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rows = []
    for measure in (lambda g: stream_past_a_slow_model(g)[1], services_beside_a_slow_model):
        graph = RosGraph(domain_id=1 + (os.getpid() + 53) % 100)
        try:
            rows.append(measure(graph).row())
        finally:
            graph.close()
    return rows
