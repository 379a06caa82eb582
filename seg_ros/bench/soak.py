"""Soak run: many frames with objects added, refined and removed at random.

Two modes:
  engine  the SegmentationSession alone (fast: 10,000+ frames in seconds with the fake backend);
  node    the real SegmentationNode over DDS, in this process: a client publishes each frame,
          waits for its ~/instances and calls the services (add_points / add_box / remove_object)
          at random, so the node's worker, slot, services and publishers are soaked too.

Reported (one JSON object): the RSS curve (MB, sampled every `sample_every` frames), step latency
p50 / p95 / max per window (ms; engine: session.step, node: publish -> instances arrival), RSS
growth after warm-up, latency drift (last window's p50 over the median window p50), and the
bookkeeping: adds / refines / removes / refusals, injected model failures survived, and
`mismatches`: frames whose objects (ids and labels) differ from what the soak's own record of its
answers says they must be (0 in a correct run).

    python -m seg_ros.bench.soak --frames 20000 --backend fake --size 64x48
    python -m seg_ros.bench.soak --frames 3000 --backend classic --size 160x120
    python -m seg_ros.bench.soak --mode node --frames 2000 --backend fake --fault-every 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import SegRosError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession

#: Probabilities of the random actions after each frame (the rest of the time: none).
P_ADD, P_REFINE, P_REMOVE = 0.05, 0.03, 0.04
#: A frame every 33 ms of stream time (30 fps stamps).
FRAME_NS = 33_000_000


@dataclass
class SoakReport:
    mode: str
    backend: str
    frames: int
    width: int
    height: int
    adds: int = 0
    refines: int = 0
    removes: int = 0
    refused: int = 0
    failed_steps: int = 0  # model steps that raised (injected faults); the soak carries on
    lost_frames: int = 0  # node mode: frames whose output never came
    mismatches: int = 0  # frames whose objects differ from what the answers imply
    rss_mb: list[float] = field(default_factory=list)
    step_ms_p50: list[float] = field(default_factory=list)
    step_ms_p95: list[float] = field(default_factory=list)
    step_ms_max: list[float] = field(default_factory=list)
    objects_at_end: int = 0
    seconds: float = 0.0

    @property
    def rss_growth_mb(self) -> float:
        """Growth from the first sample after warm-up (10% of the run) to the last."""
        if len(self.rss_mb) < 2:
            return 0.0
        warm = self.rss_mb[max(1, len(self.rss_mb) // 10)]
        return self.rss_mb[-1] - warm

    @property
    def latency_drift(self) -> float:
        """Last window's p50 over the median of all windows' p50 (1.0 = stable)."""
        if not self.step_ms_p50:
            return 1.0
        typical = statistics.median(self.step_ms_p50)
        return self.step_ms_p50[-1] / typical if typical > 0 else 1.0

    def row(self) -> dict[str, Any]:
        return {
            "bench": "soak",
            "mode": self.mode,
            "backend": self.backend,
            "frames": self.frames,
            "input": f"{self.width}x{self.height}",
            "seconds": round(self.seconds, 1),
            "adds": self.adds,
            "refines": self.refines,
            "removes": self.removes,
            "refused": self.refused,
            "failed_steps": self.failed_steps,
            "lost_frames": self.lost_frames,
            "mismatches": self.mismatches,
            "objects_at_end": self.objects_at_end,
            "rss_start_mb": round(self.rss_mb[0], 1) if self.rss_mb else None,
            "rss_end_mb": round(self.rss_mb[-1], 1) if self.rss_mb else None,
            "rss_growth_mb": round(self.rss_growth_mb, 2),
            "latency_drift": round(self.latency_drift, 3),
            "rss_curve_mb": [round(v, 1) for v in self.rss_mb],
            "step_ms_p50_per_window": [round(v, 3) for v in self.step_ms_p50],
            "step_ms_p95_per_window": [round(v, 3) for v in self.step_ms_p95],
            "step_ms_max_per_window": [round(v, 3) for v in self.step_ms_max],
        }


class _Sampler:
    """RSS every `every` frames (and at frame 0) and latency percentiles per window."""

    def __init__(self, report: SoakReport, every: int) -> None:
        self.report = report
        self.every = every
        self.window: list[float] = []
        self.proc = psutil.Process()

    def frame_done(self, t: int, latency_ms: float | None) -> None:
        if latency_ms is not None:
            self.window.append(latency_ms)
        if (t + 1) % self.every == 0 or t == 0:
            self.report.rss_mb.append(self.proc.memory_info().rss / 2**20)
            if t and self.window:
                ordered = sorted(self.window)
                self.report.step_ms_p50.append(statistics.median(ordered))
                self.report.step_ms_p95.append(
                    ordered[min(len(ordered) - 1, len(ordered) * 95 // 100)]
                )
                self.report.step_ms_max.append(ordered[-1])
            self.window.clear()


def _moving_frame(rng: np.random.Generator, t: int, height: int, width: int) -> np.ndarray:
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    x = (t * 3) % max(1, width - 12)
    frame[height // 4 : height // 4 + 12, x : x + 12] = (200, 60, 60)
    frame[..., 1] = rng.integers(30, 50, size=(height, width), dtype=np.uint8)
    return frame


def _build(backend: str, model: str, options: dict[str, Any] | None, fault_every: int) -> Any:
    built = build_backend(BackendConfig(backend=backend, model=model, options=options or {}))
    if not fault_every:
        return built
    from seg_ros.testing.faults import FaultyBackend

    faulty = FaultyBackend(built)
    faulty.fail_every("step", fault_every)
    return faulty


# ====================================================================================== engine
def run_soak(
    *,
    backend: str = "fake",
    frames: int = 10_000,
    width: int = 64,
    height: int = 48,
    max_objects: int = 8,
    sample_every: int = 500,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    model: str = "",
    fault_every: int = 0,
) -> SoakReport:
    """Soak the engine session; `fault_every` > 0 makes every n-th model step fail."""
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    session = SegmentationSession(
        _build(backend, model, options, fault_every), max_objects=max_objects
    )
    report = SoakReport("engine", backend, frames, width, height)
    sampler = _Sampler(report, sample_every)
    expected: dict[str, str] = {}  # id -> label, from the session's own answers
    start = time.perf_counter()
    try:
        for t in range(frames):
            began = time.perf_counter()
            try:
                result = session.step(_moving_frame(rng, t, height, width), (t + 1) * FRAME_NS)
            except SegRosError:
                report.failed_steps += 1
                sampler.frame_done(t, None)
                continue
            sampler.frame_done(t, (time.perf_counter() - began) * 1000.0)
            if [(o.object_id, o.label) for o in result.objects] != list(expected.items()):
                report.mismatches += 1
            action = pick.random()
            ids = list(expected)
            try:
                if action < P_ADD:
                    x, y = pick.uniform(0, width - 1), pick.uniform(0, height - 1)
                    out = session.add_prompt(
                        Prompt(points=np.array([[x, y]], np.float32)), label=f"obj{report.adds}"
                    )
                    expected[out.object_id] = out.object.label
                    report.adds += 1
                elif action < P_ADD + P_REFINE and ids:
                    x0, y0 = pick.uniform(0, width / 2), pick.uniform(0, height / 2)
                    session.add_prompt(
                        Prompt(box=np.array([x0, y0, x0 + width / 4, y0 + height / 4], np.float32)),
                        object_id=pick.choice(ids),
                    )
                    report.refines += 1
                elif action < P_ADD + P_REFINE + P_REMOVE and ids:
                    object_id = pick.choice(ids)
                    session.remove_object(object_id)
                    del expected[object_id]
                    report.removes += 1
            except SegRosError:  # capacity (expected), or a prompt on a frame that failed
                report.refused += 1
        report.objects_at_end = len(session.object_ids)
    finally:
        session.close()
    report.seconds = time.perf_counter() - start
    return report


# ======================================================================================== node
@contextmanager
def _node_graph(
    backend: str, options: dict[str, Any] | None, model: str, max_objects: int, domain_id: int
) -> Iterator[tuple[Any, Any]]:
    """A SegmentationNode and a client node in a private rclpy context, spun in the background."""
    from seg_ros.testing.graph import RosGraph, start_node

    graph = RosGraph(domain_id, num_threads=4)
    try:
        node = start_node(
            graph,
            backend=backend,
            model=model,
            backend_options=json.dumps(options or {}),
            max_objects=max_objects,
            qos_reliability="reliable",
            publish_overlay=False,
            score_threshold=0.0,
        )
        yield node, graph.node("soak_client")
    finally:
        graph.close()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.0005)
    return True


def run_node_soak(
    *,
    backend: str = "fake",
    frames: int = 1000,
    width: int = 64,
    height: int = 48,
    max_objects: int = 8,
    sample_every: int = 100,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    model: str = "",
    fault_every: int = 0,
    domain_id: int | None = None,
    timeout_s: float = 10.0,
) -> SoakReport:
    """Soak the real node over DDS, one frame at a time (publish, wait for its instances).

    `fault_every` (fake backend only) makes every n-th model step fail, via its fail_every
    option. `domain_id` defaults to ROS_DOMAIN_ID (or 0).
    """
    from geometry_msgs.msg import Point
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, RegionOfInterest
    from std_msgs.msg import Header

    from seg_ros.conversions import ns_to_stamp, numpy_to_image, stamp_to_ns
    from seg_ros.msg import InstanceArray
    from seg_ros.srv import AddBox, AddPoints, RemoveObject

    if fault_every:
        if backend != "fake":
            raise ValueError("node-mode faults use the fake backend's fail_every option")
        options = {**(options or {}), "fail_every": fault_every}
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    report = SoakReport("node", backend, frames, width, height)
    sampler = _Sampler(report, sample_every)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    arrived: dict[int, tuple[float, list[tuple[str, str]]]] = {}
    expected: dict[str, str] = {}
    start = time.perf_counter()
    with _node_graph(backend, options, model, max_objects, domain_id) as (node, client):

        def on_instances(msg: InstanceArray) -> None:
            pairs = [(i.id, i.label) for i in msg.instances]
            arrived[stamp_to_ns(msg.header.stamp)] = (time.perf_counter(), pairs)

        pub = client.create_publisher(Image, "image", reliable)
        client.create_subscription(
            InstanceArray, "/segmentation_node/instances", on_instances, reliable
        )
        services = {
            "add_points": client.create_client(AddPoints, "/segmentation_node/add_points"),
            "add_box": client.create_client(AddBox, "/segmentation_node/add_box"),
            "remove_object": client.create_client(RemoveObject, "/segmentation_node/remove_object"),
        }
        ready = _wait(
            lambda: (
                pub.get_subscription_count() > 0
                and client.count_publishers("/segmentation_node/instances") > 0
                and all(c.service_is_ready() for c in services.values())
            ),
            timeout_s,
        )
        if not ready:
            raise RuntimeError("the node's topics and services did not come up")

        def call(name: str, request: Any) -> Any:
            future = services[name].call_async(request)
            if not _wait(future.done, timeout_s):
                raise TimeoutError(f"{name} not answered in {timeout_s} s")
            return future.result()

        for t in range(frames):
            stamp = (t + 1) * FRAME_NS
            header = Header(stamp=ns_to_stamp(stamp), frame_id="soak")
            msg = numpy_to_image(_moving_frame(rng, t, height, width), "rgb8", header)
            failed = node.stats.failed
            sent = time.perf_counter()
            pub.publish(msg)
            if not _wait(
                lambda s=stamp, f=failed: s in arrived or node.stats.failed > f,  # type: ignore[misc]
                timeout_s,
            ):
                report.lost_frames += 1
                sampler.frame_done(t, None)
                continue
            if stamp not in arrived:
                report.failed_steps += 1
                sampler.frame_done(t, None)
                continue
            at, pairs = arrived.pop(stamp)
            sampler.frame_done(t, (at - sent) * 1000.0)
            if pairs != list(expected.items()):
                report.mismatches += 1
            action = pick.random()
            ids = list(expected)
            if action < P_ADD:
                x, y = pick.uniform(0, width - 1), pick.uniform(0, height - 1)
                res = call(
                    "add_points",
                    AddPoints.Request(points=[Point(x=x, y=y)], label=f"obj{report.adds}"),
                )
                if res.success:
                    expected[res.object_id] = res.instance.label
                    report.adds += 1
                else:
                    report.refused += 1
            elif action < P_ADD + P_REFINE and ids:
                x0, y0 = int(pick.uniform(0, width / 2)), int(pick.uniform(0, height / 2))
                box = RegionOfInterest(
                    x_offset=x0, y_offset=y0, width=width // 4, height=height // 4
                )
                res = call("add_box", AddBox.Request(object_id=pick.choice(ids), box=box))
                report.refines += int(res.success)
                report.refused += int(not res.success)
            elif action < P_ADD + P_REFINE + P_REMOVE and ids:
                object_id = pick.choice(ids)
                res = call("remove_object", RemoveObject.Request(object_id=object_id))
                if res.success:
                    del expected[object_id]
                    report.removes += 1
                else:
                    report.refused += 1
        session = node.session
        report.objects_at_end = len(session.object_ids) if session is not None else 0
    report.seconds = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("engine", "node"), default="engine")
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--backend", default="fake")
    parser.add_argument("--model", default="")
    parser.add_argument("--size", default="64x48", help="WIDTHxHEIGHT")
    parser.add_argument("--max-objects", type=int, default=8)
    parser.add_argument("--sample-every", type=int, default=0, help="frames per window")
    parser.add_argument("--fault-every", type=int, default=0, help="fail every n-th model step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    sample_every = args.sample_every or max(1, args.frames // 20)
    run = run_soak if args.mode == "engine" else run_node_soak
    report = run(
        backend=args.backend,
        frames=args.frames,
        width=width,
        height=height,
        model=args.model,
        max_objects=args.max_objects,
        sample_every=sample_every,
        fault_every=args.fault_every,
        seed=args.seed,
    )
    print(json.dumps(report.row()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
