"""Node statistics with a fake clock, and the DiagnosticArray they become (exact values)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from seg_ros.outputs.diagnostics import (
    ERROR,
    OK,
    WARN,
    HealthThresholds,
    NodeInfo,
    NodeStats,
    RateStats,
    assess,
    build_diagnostic_array,
)


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


INFO = NodeInfo(
    node_name="/robot/segmentation_node",
    backend="sam2",
    model="/opt/models/sam2.1-hiera-tiny",
    device="cuda:0",
    model_loaded=True,
    objects_tracked=3,
)


def run_stream(clock: FakeClock, stats: NodeStats) -> None:
    """30 Hz camera for 2 s; every third frame processed with latencies 10, 20, ... 200 ms."""
    for i in range(60):
        stats.frame_received()
        if i % 3 == 2:
            stats.frame_processed(latency_s=0.01 * (i // 3 + 1))
        elif i > 0:
            stats.frame_dropped()
        clock.t += 1 / 30


def test_rate_window() -> None:
    clock = FakeClock()
    rate = RateStats(window_s=1.0, clock=clock)
    assert rate.rate_hz() == 0.0
    for _ in range(11):  # 11 events 0.1 s apart: 10 intervals in 1.0 s
        rate.tick()
        clock.t += 0.1
    clock.t -= 0.1
    assert rate.rate_hz() == pytest.approx(10.0)
    clock.t += 0.55  # the oldest five events leave the window
    assert rate.recent() == 5 and rate.rate_hz() == pytest.approx(10.0)
    clock.t += 10.0
    assert rate.rate_hz() == 0.0 and rate.count == 11
    with pytest.raises(ValueError):
        RateStats(window_s=0.0, clock=clock)


def test_snapshot_values_exact() -> None:
    clock = FakeClock()
    stats = NodeStats(window_s=10.0, clock=clock)
    run_stream(clock, stats)
    snap = stats.snapshot()
    assert snap.frames_received == 60 and snap.frames_processed == 20
    assert snap.frames_dropped == 39 and snap.bad_frames == 0
    assert snap.input_hz == pytest.approx(30.0)
    assert snap.processed_hz == pytest.approx(10.0)
    # Latencies 10..200 ms: median 105, p95 = 190 + 0.05 * 10 (linear interpolation).
    assert snap.latency_ms_median == pytest.approx(105.0)
    assert snap.latency_ms_p95 == pytest.approx(190.5)
    assert snap.seconds_since_input == pytest.approx(1 / 30)
    assert snap.seconds_since_processed == pytest.approx(1 / 30)


def test_latency_window_forgets_old_samples() -> None:
    clock = FakeClock()
    stats = NodeStats(window_s=1.0, clock=clock)
    stats.frame_processed(5.0)
    clock.t += 2.0
    stats.frame_processed(0.1)
    stats.frame_processed(0.3)
    snap = stats.snapshot()
    assert snap.latency_ms_median == pytest.approx(200.0)
    clock.t += 2.0
    assert math.isnan(stats.snapshot().latency_ms_median)


def test_diagnostic_array_ok_with_every_key() -> None:
    clock = FakeClock()
    stats = NodeStats(window_s=10.0, clock=clock)
    run_stream(clock, stats)
    arr = build_diagnostic_array(
        Time(sec=42), stats.snapshot(), INFO, HealthThresholds(min_processed_ratio=0.25)
    )
    assert arr.header.stamp.sec == 42
    (status,) = arr.status
    assert status.name == "seg_ros: /robot/segmentation_node"
    assert status.level == DiagnosticStatus.OK and status.message == "ok"
    assert status.hardware_id == "cuda:0"
    assert {kv.key: kv.value for kv in status.values} == {
        "input_hz": "30.00",
        "processed_hz": "10.00",
        "latency_ms_median": "105.0",
        "latency_ms_p95": "190.5",
        "frames_received": "60",
        "frames_processed": "20",
        "frames_dropped": "39",
        "bad_frames": "0",
        "device": "cuda:0",
        "model": "/opt/models/sam2.1-hiera-tiny",
        "backend": "sam2",
        "objects_tracked": "3",
        "model_loaded": "true",
    }


def test_error_when_the_model_is_not_loaded() -> None:
    info = dataclasses.replace(
        INFO,
        node_name="n",
        model="/missing",
        device="cpu",
        model_loaded=False,
        load_error="no config.json in /missing",
        objects_tracked=0,
    )
    stats = NodeStats(clock=FakeClock()).snapshot()
    (status,) = build_diagnostic_array(Time(), stats, info).status
    assert status.level == DiagnosticStatus.ERROR
    assert status.message == "no config.json in /missing"
    assert {kv.key: kv.value for kv in status.values}["model_loaded"] == "false"
    assert {kv.key: kv.value for kv in status.values}["latency_ms_median"] == "nan"
    bare = NodeInfo(node_name="n", backend="b", model="m", device="cpu", model_loaded=False)
    assert assess(stats, bare) == (ERROR, "model not loaded")


def test_warn_without_input() -> None:
    clock = FakeClock()
    stats = NodeStats(window_s=5.0, clock=clock)
    assert assess(stats.snapshot(), INFO) == (WARN, "no input frames received yet")
    run_stream(clock, stats)
    assert assess(stats.snapshot(), INFO)[0] == OK
    clock.t += 4.0
    level, message = assess(stats.snapshot(), INFO, HealthThresholds(stale_input_s=3.0))
    assert level == WARN and message == f"no input frame for {4.0 + 1 / 30:.1f} s"


def test_warn_when_processing_is_far_below_input_or_stalled() -> None:
    clock = FakeClock()
    stats = NodeStats(window_s=10.0, clock=clock)
    run_stream(clock, stats)  # 10 of 30 Hz processed
    level, message = assess(stats.snapshot(), INFO, HealthThresholds(min_processed_ratio=0.5))
    assert level == WARN
    assert message.startswith("processing 10.00 Hz of 30.00 Hz input")
    # Input keeps coming, processing stops.
    for _ in range(200):
        stats.frame_received()
        clock.t += 1 / 30
    level, message = assess(stats.snapshot(), INFO, HealthThresholds(stale_processing_s=5.0))
    assert level == WARN and message.startswith("processing stalled")
    fresh = NodeStats(clock=clock)
    fresh.frame_received()
    clock.t += 4.0  # warming up: nothing processed yet, but not for long
    fresh.frame_received()
    assert assess(fresh.snapshot(), INFO) == (OK, "ok")
    clock.t += 2.0
    fresh.frame_received()
    assert assess(fresh.snapshot(), INFO)[1] == (
        "processing stalled: input arrives but no frame processed for any time yet"
    )


def test_warn_after_bad_frames_in_the_window() -> None:
    clock = FakeClock()
    stats = NodeStats(window_s=5.0, clock=clock)
    run_stream(clock, stats)
    stats.bad_frame()
    stats.bad_frame()
    snap = stats.snapshot()
    assert snap.bad_frames == 2 and snap.bad_frames_recent == 2
    assert assess(snap, INFO) == (WARN, "2 bad frames in the last window")
    clock.t += 6.0
    run_stream(clock, stats)
    snap = stats.snapshot()
    assert snap.bad_frames == 2 and snap.bad_frames_recent == 0
    assert assess(snap, INFO) == (OK, "ok")
