"""Several cameras on one node and one model: `make bench` suite "cameras".

    python -m seg_ros.bench --quick --only cameras

One node (in this process, real DDS on loopback) with 1-4 cameras, each published open loop at
its own rate and size (30, 15, 5, 5 Hz) with three objects prompted on each, a model
that is slower than all cameras together (overload). Per camera, over the last `window_s`
seconds (the node's own /diagnostics counters, seg_ros.outputs.diagnostics.NodeStats):
    input_hz / processed_hz   frames arriving / processed (newest wins: the rest are dropped)
    latency_ms_median / p95   subscription callback -> every output published
    share                     this camera's part of the processed frames
    fair                      no camera with frames waiting is starved: each camera gets at
                              least min(its input rate, an equal share of the model's rate) / 2
One row per configuration, plus RSS after the node started (the model loaded once; each
camera adds only its session and topics). Backends: fake with a fixed step (`delay_s`: the
scheduling alone), classic (the real CPU tracker).
"""

from __future__ import annotations

import json
import os
import threading
import time
from functools import partial
from typing import Any

import numpy as np
import psutil

#: (name, rate Hz, width, height) of the cameras, in the order they are added.
CAMERAS = (
    ("head", 30.0, 320, 240),
    ("wrist", 15.0, 256, 192),
    ("left", 5.0, 320, 240),
    ("right", 5.0, 320, 240),
)


def _publisher(graph: Any, name: str, rate: float, width: int, height: int) -> Any:
    """A thread publishing `name`/image at `rate` until `stop` is set; (thread, stop)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from seg_ros.conversions import numpy_to_image

    node = graph.node(f"bench_camera_{name}")
    pub = node.create_publisher(
        Image, f"{name}/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
    rng = np.random.default_rng(len(name))
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    frames = [numpy_to_image(np.roll(base, 5 * i, axis=1), "rgb8", Header()) for i in range(8)]
    stop = threading.Event()

    def run() -> None:
        i, next_t = 0, time.monotonic()
        while not stop.is_set():
            msg = frames[i % len(frames)]
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            i += 1
            next_t += 1.0 / rate
            stop.wait(max(0.0, next_t - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    return pub, thread, stop


def _prompt_latencies(graph: Any, camera: str, width: int, height: int) -> list[float]:
    """Round trips (ms) of 5 refinements of object 1 on `camera` while the cameras stream."""
    from geometry_msgs.msg import Point

    from seg_ros.srv import AddPoints
    from seg_ros.testing.graph import NODE

    client = graph.node("bench_prompter").create_client(AddPoints, f"{NODE}/{camera}/add_points")
    times = []
    for i in range(5):
        request = AddPoints.Request(
            object_id="1", points=[Point(x=width / 4 + i, y=height / 4)], point_labels=[1]
        )
        t0 = time.perf_counter()
        response = graph.call(client, request)
        times.append((time.perf_counter() - t0) * 1e3)
        if not response.success:
            raise RuntimeError(f"add_points on {camera} failed: {response.message}")
    return times


def _subscribed(pub: Any) -> bool:
    return bool(pub.get_subscription_count() > 0)


def _prompt_each(node: Any) -> None:
    """Three objects on each camera's latest frame (a click, a box, a painted square)."""
    from seg_ros.engine.prompts import Prompt

    for camera in node.cameras:
        session = camera.session
        latest = session.latest
        h, w = latest.height, latest.width
        mask = np.zeros((h, w), bool)
        mask[h // 2 : h * 3 // 4, w // 10 : w // 3] = True
        for prompt in (
            Prompt(points=np.array([(w / 4, h / 4)], np.float32)),
            Prompt(box=np.array([w / 2, h / 6, w * 0.7, h * 0.4], np.float32)),
            Prompt(mask=mask),
        ):
            session.add_prompt(prompt)


def measure(backend: str, cameras: int, seconds: float, options: str = "") -> dict[str, Any]:
    from seg_ros.testing.graph import RosGraph, start_node, wait_for

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    chosen = CAMERAS[:cameras]
    graph = RosGraph(domain_id=1 + (os.getpid() + 53) % 100, num_threads=6)
    publishers = []
    try:
        rss_before = psutil.Process().memory_info().rss
        params: dict[str, Any] = {
            "backend": backend,
            "cameras": [c[0] for c in chosen],
            "qos_reliability": "reliable",
            "publish_overlay": False,
            "diagnostics_period_s": 0.0,
        }
        if options:
            params["backend_options"] = options
        node = start_node(graph, **params)
        rss_loaded = psutil.Process().memory_info().rss
        publishers = [_publisher(graph, *c) for c in chosen]
        for pub, thread, _ in publishers:
            if not wait_for(partial(_subscribed, pub), 10.0):
                raise RuntimeError(f"nobody subscribed to {pub.topic_name}")
            thread.start()
        if not wait_for(lambda: all(c.session.latest for c in node.cameras), 20.0):
            raise RuntimeError("a camera's first frame was never processed")
        _prompt_each(node)
        time.sleep(seconds)  # the measured window: open loop, the cameras keep publishing
        snaps = {c.name: c.stats.snapshot() for c in node.cameras}
        prompt_ms = _prompt_latencies(graph, chosen[-1][0], chosen[-1][2], chosen[-1][3])
        rss_end = psutil.Process().memory_info().rss
    finally:
        for _, thread, stop in publishers:
            stop.set()
            thread.join(timeout=2.0)
        graph.close()
    total = sum(s.processed_hz for s in snaps.values()) or float("nan")
    per_camera = {}
    fair = True
    for name, rate, width, height in chosen:
        s = snaps[name]
        floor = 0.5 * min(s.input_hz, total / len(chosen))
        fair &= s.processed_hz >= floor
        per_camera[name] = {
            "size": f"{width}x{height}",
            "rate_hz": rate,
            "input_hz": round(s.input_hz, 1),
            "processed_hz": round(s.processed_hz, 1),
            "share": round(s.processed_hz / total, 2),
            "latency_ms_median": round(s.latency_ms_median, 1),
            "latency_ms_p95": round(s.latency_ms_p95, 1),
        }
    return {
        "bench": "cameras",
        "backend": backend,
        "options": options,
        "cameras": cameras,
        "objects_per_camera": 3,
        "processed_hz_total": round(total, 1),
        "per_camera": per_camera,
        "fair": bool(fair),
        # ~/<last camera>/add_points answered while every camera streams (service round trip).
        "prompt_ms_median": round(float(np.median(prompt_ms)), 1),
        "prompt_ms_max": round(float(np.max(prompt_ms)), 1),
        "rss_node_mb": round((rss_loaded - rss_before) / 2**20, 1),
        "rss_growth_mb": round((rss_end - rss_loaded) / 2**20, 1),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    seconds = 6.0 if quick else 12.0
    rows = []
    # fake at 40 ms a step: 25 Hz of model for 55 Hz of cameras (overloaded with 2 or more).
    for n in (1, 2, 4) if quick else (1, 2, 3, 4):
        rows.append(measure("fake", n, seconds, json.dumps({"delay_s": 0.04})))
    for n in (1, 2, 4) if quick else (1, 2, 3, 4):
        rows.append(measure("classic", n, seconds))
    return rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(json.dumps(row))
