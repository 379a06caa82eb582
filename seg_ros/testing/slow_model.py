"""A node whose model is slower than its camera: the runs the graph tests and the bench share.

`stream_past_a_slow_model` publishes frames ~10x faster than the model steps and records which
outputs came back when; `services_beside_a_slow_model` times service calls while frames stream.
The tests assert what must hold whatever the machine (no backlog, nothing lost, every call
answered correctly); `python -m seg_ros.bench --only node` reports the latencies and checks them
against their bounds (timings belong in benchmarks: on a busy 2-core VM a single DDS delivery
took up to 0.76 s).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from seg_ros.testing.graph import Client, RosGraph, grey_frame, start_node, wait_for

WIDTH, HEIGHT = 160, 120


def frame(sec: int, **kw: Any) -> Any:
    """The camera's frame `sec`: uniform grey 100, 160x120."""
    return grey_frame(sec, kw.pop("width", WIDTH), HEIGHT, value=100, **kw)


def slow_node(graph: RosGraph, delay: float) -> tuple[Any, Client]:
    """A node whose model step takes `delay` seconds, connected and past its first frame."""
    node = start_node(graph, backend_options=f'{{"delay_s": {delay}}}', publish_overlay=False)
    client = Client(graph, frame=frame)
    assert wait_for(client.connected)
    client.send_until_output(1)
    return node, client


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class StreamRun:
    """What came of frames 11.. `last`, published every `period` s at a `delay` s model."""

    delay: float
    sent: dict[int, float] = field(default_factory=dict)  # frame -> monotonic time sent
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time arrived, frame)
    last: int = 0
    newest_latency_s: float = float("nan")  # the last frame sent -> its output arrived
    streamed_s: float = 0.0  # how long the camera published

    @property
    def lags(self) -> list[float]:
        """Per output: how long after its frame was sent it arrived (seconds)."""
        return [t - self.sent[sec] for t, sec in self.arrivals]

    def row(self) -> dict[str, Any]:
        """Bench row; `ok` checks the bounds the graph test once asserted (seconds)."""
        lags = self.lags
        # No queue: the newest frame comes out about one step after it was sent (a backlog would
        # hold ~190 frames, ~19 s of steps); each output lags its input by <= two steps
        # (waiting one, processed in one), typically; the 0.2 s are DDS on a busy VM.
        bounds = {"newest_latency_s": 1.5, "lag_s_max": 1.5, "lag_s_median": 2 * self.delay + 0.2}
        values = {
            "newest_latency_s": self.newest_latency_s,
            "lag_s_max": max(lags, default=float("nan")),
            "lag_s_median": _median(lags),
        }
        return {
            "bench": "node_slow_model_stream",
            "model_step_s": self.delay,
            "outputs": len(self.arrivals),
            "frames_sent": len(self.sent),
            **{k: round(v, 3) for k, v in values.items()},
            "bounds_s": bounds,
            "ok": all(values[k] < bounds[k] for k in bounds),
        }


def stream_past_a_slow_model(
    graph: RosGraph,
    delay: float = 0.1,
    seconds: float = 2.0,
    period: float = 0.01,
    min_outputs: int = 0,
    max_seconds: float = 30.0,
) -> tuple[Any, StreamRun]:
    """Publish a frame every `period` s to a node stepping in `delay` s.

    The camera publishes for `seconds`, and on until `min_outputs` outputs came back (at most
    `max_seconds`): on a loaded machine a fixed window holds fewer steps than the model's rate
    says (DDS deliveries of up to 0.8 s), so a test asking for a number of outputs streams longer
    instead of failing on the machine's load.
    """
    node, client = slow_node(graph, delay)
    run = StreamRun(delay)
    received = client.received["instances"]
    seen = len(received)
    start = time.monotonic()
    index = 10

    def streaming() -> bool:
        elapsed = time.monotonic() - start
        if elapsed < seconds:
            return True
        return len(run.arrivals) < min_outputs and elapsed < max_seconds

    while streaming():
        index += 1
        run.sent[index] = time.monotonic()
        client.image.publish(frame(index))
        time.sleep(period)  # the camera's rate is what this run is about
        for msg in received[seen:]:
            if msg.header.stamp.sec in run.sent:  # not a late copy of the warm-up frame
                run.arrivals.append((time.monotonic(), msg.header.stamp.sec))
        seen = len(received)
    run.streamed_s = time.monotonic() - start
    run.last = last = index
    assert wait_for(lambda: any(m.header.stamp.sec == last for m in received))
    run.newest_latency_s = time.monotonic() - run.sent[last]
    return node, run


@dataclass
class ServiceRun:
    """Service calls made while a camera streamed faster than a `delay` s model."""

    delay: float
    refusals: list[Any] = field(default_factory=list)  # answers to requests the node refuses
    refused_s: list[float] = field(default_factory=list)
    accepted: list[Any] = field(default_factory=list)  # answers to requests that need the model
    accepted_s: list[float] = field(default_factory=list)
    processed_before: int = 0
    processed_after: int = 0

    def row(self) -> dict[str, Any]:
        """Bench row; `ok` checks the bounds the graph test once asserted (medians, seconds)."""
        # A refusal is answered on the service thread, mid-frame. A prompt is serialised with
        # frames on the session lock only: at most the rest of one step, never starved by the
        # next frame that is always ready (starved, it took two steps, 0.5 s at 0.25 s a step).
        bounds = {"refused_s_median": 0.15, "accepted_s_median": self.delay + 0.15}
        values = {
            "refused_s_median": _median(self.refused_s),
            "accepted_s_median": _median(self.accepted_s),
        }
        return {
            "bench": "node_services_beside_slow_model",
            "model_step_s": self.delay,
            "calls": len(self.refused_s) + len(self.accepted_s),
            **{k: round(v, 3) for k, v in values.items()},
            "refused_s_max": round(max(self.refused_s, default=float("nan")), 3),
            "accepted_s_max": round(max(self.accepted_s, default=float("nan")), 3),
            "bounds_s": bounds,
            "ok": all(values[k] < bounds[k] for k in bounds),
        }


def services_beside_a_slow_model(
    graph: RosGraph, delay: float = 0.25, calls: int = 5
) -> ServiceRun:
    """`calls` refused and `calls` accepted add_points while a 50 Hz camera streams."""
    from geometry_msgs.msg import Point

    node, client = slow_node(graph, delay)
    streaming = threading.Event()
    streaming.set()

    def camera() -> None:  # 50 Hz: a frame is always waiting when the model finishes one
        sec = 10
        while streaming.is_set():
            sec += 1
            client.image.publish(frame(sec))
            time.sleep(0.02)  # the camera's rate is what this run is about

    run = ServiceRun(delay)
    started = node.stats.processed
    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        # Streaming for real: two streamed frames done, so a frame is always waiting.
        assert wait_for(lambda: node.stats.processed >= started + 2)
        run.processed_before = node.stats.processed
        for i in range(calls):
            t0 = time.monotonic()
            res = client.call("add_points", label="x" * 300, points=[Point(x=5.0, y=5.0)])
            run.refused_s.append(time.monotonic() - t0)
            run.refusals.append(res)
            t0 = time.monotonic()
            res = client.call("add_points", points=[Point(x=5.0 + i, y=5.0)])
            run.accepted_s.append(time.monotonic() - t0)
            run.accepted.append(res)
        run.processed_after = node.stats.processed
    finally:
        streaming.clear()
        thread.join()
    return run
