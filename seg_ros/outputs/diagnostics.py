"""Node health for /diagnostics: rates, latency, drops, and a DiagnosticArray builder.

`NodeStats` is the node's one frame counter: a pure accumulator with an injectable clock
(seconds, monotonic), so tests drive time by hand. The node calls `frame_received()` when an
image (or RGB-D set) arrives, `frame_dropped()` when a newer one replaces it before the worker
took it (the newest frame wins), `bad_frame()` when a frame is refused (cannot be decoded, the
model fails on it), `no_model()` when there is no model to run it, `frame_processed(latency_s)`
after every output published it, and `depth_unusable()` for a processed frame whose depth
could not be used. Every received frame ends as exactly one of processed, dropped or failed
(`failed` = bad + no model), so `received == processed + dropped + failed` once it is quiet.
`build_diagnostic_array` turns a `StatsSnapshot` and the node's `NodeInfo` into one
DiagnosticStatus named "seg_ros: <node>":

  * ERROR when the model is not loaded (the load error is the message);
  * WARN when no frame has arrived for `stale_input_s` (or ever), when processing stalled while
    input arrives, when the processed rate is far below the input rate, or after bad frames in
    the window;
  * OK otherwise.

Rates are the mean rate of the events within the last `window_s` seconds:
(n - 1) / (t_last - t_first), 0 with fewer than two events. Latency percentiles are numpy's
linear-interpolation percentiles of the latencies recorded in the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

#: A monotonic clock in seconds.
Clock = Callable[[], float]

OK, WARN, ERROR = 0, 1, 2
_LEVEL_BYTES = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class RateStats:
    """Event times within a sliding window -> rate in Hz.

    Args:
        window_s: length of the window (seconds, > 0).
        clock: monotonic seconds.
        max_events: cap on remembered events (bounds memory for very fast topics).
    """

    def __init__(self, window_s: float, clock: Clock, max_events: int = 10_000) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0; got {window_s}")
        self.window_s = float(window_s)
        self._clock = clock
        self._times: deque[float] = deque(maxlen=max_events)
        self.count = 0
        self.last_time: float | None = None

    def tick(self) -> float:
        """Record one event now; returns its time."""
        t = self._clock()
        self._times.append(t)
        self.count += 1
        self.last_time = t
        return t

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate_hz(self) -> float:
        """Mean rate of the events in the last `window_s` seconds; 0.0 with fewer than two."""
        self._prune(self._clock())
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def recent(self) -> int:
        """Events in the last `window_s` seconds."""
        self._prune(self._clock())
        return len(self._times)


@dataclass(frozen=True)
class StatsSnapshot:
    """Node statistics at one instant (rates in Hz, latencies in milliseconds, counts totals).

    `seconds_since_input` / `seconds_since_processed` / `seconds_since_first_input` are inf before
    the first such event.
    Latencies are NaN when no frame was processed within the window.
    """

    input_hz: float
    processed_hz: float
    latency_ms_median: float
    latency_ms_p95: float
    frames_received: int
    frames_processed: int
    frames_dropped: int
    bad_frames: int
    bad_frames_recent: int
    seconds_since_input: float
    seconds_since_processed: float
    seconds_since_first_input: float = math.inf
    #: Median input-stamp-to-publish age (ms) of the frames in the window whose age was known.
    age_ms_median: float = math.nan


class NodeStats:
    """Counts the frame path's events; `snapshot()` summarises them for /diagnostics. Thread-safe.

    The totals (`received`, `dropped`, `processed`, `failed`, `no_model_frames`, `bad_depth`) are
    read by tests and benchmarks; see the module docstring for when each is counted.

    Args:
        window_s: sliding window for rates, latency percentiles and recent bad frames (seconds).
        clock: monotonic seconds (inject a fake in tests).
        max_samples: cap on remembered latency samples / events per window.
    """

    def __init__(
        self, window_s: float = 5.0, clock: Clock = time.monotonic, max_samples: int = 10_000
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._input = RateStats(window_s, clock, max_samples)
        self._processed = RateStats(window_s, clock, max_samples)
        self._bad = RateStats(window_s, clock, max_samples)  # refused frames and unusable depth
        self._latencies: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self._ages: deque[tuple[float, float]] = deque(maxlen=max_samples)
        self.window_s = float(window_s)
        self._dropped = 0
        self._refused = 0
        self._no_model = 0
        self._bad_depth = 0
        self._first_input: float | None = None

    # ------------------------------------------------------------------ events
    def frame_received(self) -> None:
        """An image (or a synchronised RGB-D set) arrived on the input."""
        with self._lock:
            t = self._input.tick()
            if self._first_input is None:
                self._first_input = t

    def frame_processed(self, latency_s: float, age_s: float | None = None) -> None:
        """A frame went through the model and every output published it.

        Args:
            latency_s: arrival (or stamp) to publish, seconds.
            age_s: the input's header stamp to publish on the node's clock, seconds; None when
                the stamps are not on that clock (then only `latency_s` is reported).
        """
        with self._lock:
            t = self._processed.tick()
            if math.isfinite(latency_s):
                self._latencies.append((t, float(latency_s)))
            if age_s is not None and math.isfinite(age_s):
                self._ages.append((t, float(age_s)))

    def frame_dropped(self, count: int = 1) -> None:
        """Frames replaced by newer ones before being processed."""
        with self._lock:
            self._dropped += int(count)

    def bad_frame(self) -> None:
        """A frame refused: bad encoding or size, invalid stamp, the model failed on it."""
        with self._lock:
            self._refused += 1
            self._bad.tick()

    def no_model(self) -> None:
        """A frame that could not be run: no model loaded (the status is ERROR for that)."""
        with self._lock:
            self._no_model += 1

    def depth_unusable(self) -> None:
        """A processed frame whose depth was unusable (its objects have no 3D)."""
        with self._lock:
            self._bad_depth += 1
            self._bad.tick()

    # ------------------------------------------------------------------ totals
    @property
    def received(self) -> int:
        return self._input.count

    @property
    def processed(self) -> int:
        return self._processed.count

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def failed(self) -> int:
        """Frames received but neither processed nor dropped: refused, or no model."""
        return self._refused + self._no_model

    @property
    def no_model_frames(self) -> int:
        return self._no_model

    @property
    def bad_depth(self) -> int:
        return self._bad_depth

    def __repr__(self) -> str:
        return (
            f"NodeStats(received={self.received}, processed={self.processed}, "
            f"dropped={self.dropped}, failed={self.failed}, no_model={self._no_model}, "
            f"bad_depth={self._bad_depth})"
        )

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            now = self._clock()
            for samples in (self._latencies, self._ages):
                while samples and samples[0][0] < now - self.window_s:
                    samples.popleft()
            ages = [v for _, v in self._ages]
            lat = np.array([v for _, v in self._latencies], dtype=np.float64) * 1000.0
            median, p95 = (
                (float(np.percentile(lat, 50)), float(np.percentile(lat, 95)))
                if lat.size
                else (math.nan, math.nan)
            )
            return StatsSnapshot(
                input_hz=self._input.rate_hz(),
                processed_hz=self._processed.rate_hz(),
                latency_ms_median=median,
                latency_ms_p95=p95,
                frames_received=self._input.count,
                frames_processed=self._processed.count,
                frames_dropped=self._dropped,
                bad_frames=self._bad.count,
                bad_frames_recent=self._bad.recent(),
                seconds_since_input=_since(now, self._input.last_time),
                seconds_since_processed=_since(now, self._processed.last_time),
                seconds_since_first_input=_since(now, self._first_input),
                age_ms_median=float(np.median(ages)) * 1000.0 if ages else math.nan,
            )


@dataclass(frozen=True)
class NodeInfo:
    """What the node reports about itself besides the statistics.

    Attributes:
        node_name: the node's fully qualified name (the status is "seg_ros: <node_name>").
        backend, model, device: as configured / resolved ("cuda:0", "cpu").
        model_loaded: False until the backend is built, or after a failed load.
        load_error: the load failure, reported as the ERROR message.
        objects_tracked: objects in the session now.
    """

    node_name: str
    backend: str
    model: str
    device: str
    model_loaded: bool
    load_error: str = ""
    objects_tracked: int = 0


@dataclass(frozen=True)
class HealthThresholds:
    """When the status turns WARN.

    Attributes:
        stale_input_s: no input frame for this long (seconds).
        stale_processing_s: input arrives but nothing was processed for this long (seconds).
        min_processed_ratio: processed_hz below this fraction of input_hz ("far below").
    """

    stale_input_s: float = 3.0
    stale_processing_s: float = 5.0
    min_processed_ratio: float = 0.25


def assess(
    stats: StatsSnapshot, info: NodeInfo, thresholds: HealthThresholds | None = None
) -> tuple[int, str]:
    """(level, message): level is OK (0), WARN (1) or ERROR (2); see the module docstring."""
    th = thresholds or HealthThresholds()
    if not info.model_loaded:
        return ERROR, info.load_error or "model not loaded"
    warnings: list[str] = []
    if stats.frames_received == 0:
        warnings.append("no input frames received yet")
    elif stats.seconds_since_input > th.stale_input_s:
        warnings.append(f"no input frame for {stats.seconds_since_input:.1f} s")
    else:
        # Measured from the first input when nothing was processed yet (model warm-up).
        waited = min(stats.seconds_since_processed, stats.seconds_since_first_input)
        if waited > th.stale_processing_s:
            warnings.append(
                "processing stalled: input arrives but no frame processed for "
                + (
                    f"{stats.seconds_since_processed:.1f} s"
                    if math.isfinite(stats.seconds_since_processed)
                    else "any time yet"
                )
            )
        elif 0 < stats.processed_hz < th.min_processed_ratio * stats.input_hz:
            # processed_hz is 0 before two frames were processed in the window: warm-up, or a
            # model slower than the window, which the stall check above reports.
            warnings.append(
                f"processing {stats.processed_hz:.2f} Hz of {stats.input_hz:.2f} Hz input "
                "(frames dropped: the model is slower than the camera)"
            )
    if stats.bad_frames_recent:
        warnings.append(f"{stats.bad_frames_recent} bad frames in the last window")
    if warnings:
        return WARN, "; ".join(warnings)
    return OK, "ok"


def build_diagnostic_status(
    stats: StatsSnapshot, info: NodeInfo, thresholds: HealthThresholds | None = None
) -> DiagnosticStatus:
    """One DiagnosticStatus "seg_ros: <node>" with the level, message and key values."""
    level, message = assess(stats, info, thresholds)
    values = {
        "input_hz": f"{stats.input_hz:.2f}",
        "processed_hz": f"{stats.processed_hz:.2f}",
        "latency_ms_median": f"{stats.latency_ms_median:.1f}",
        "latency_ms_p95": f"{stats.latency_ms_p95:.1f}",
        "frames_received": str(stats.frames_received),
        "frames_processed": str(stats.frames_processed),
        "frames_dropped": str(stats.frames_dropped),
        "bad_frames": str(stats.bad_frames),
        "device": info.device,
        "model": info.model,
        "backend": info.backend,
        "objects_tracked": str(info.objects_tracked),
        "model_loaded": "true" if info.model_loaded else "false",
    }
    if math.isfinite(stats.age_ms_median):  # only when input stamps are on the node's clock
        values["input_age_ms_median"] = f"{stats.age_ms_median:.1f}"
    return DiagnosticStatus(
        level=_LEVEL_BYTES[level],
        name=f"seg_ros: {info.node_name}",
        message=message,
        hardware_id=info.device,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )


def build_diagnostic_array(
    stamp: Any,
    stats: StatsSnapshot,
    info: NodeInfo,
    thresholds: HealthThresholds | None = None,
) -> DiagnosticArray:
    """A DiagnosticArray for /diagnostics; `stamp` is the node clock's now (builtin Time)."""
    return DiagnosticArray(
        header=Header(stamp=stamp), status=[build_diagnostic_status(stats, info, thresholds)]
    )


def _since(now: float, then: float | None) -> float:
    return math.inf if then is None else now - then
