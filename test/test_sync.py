"""Approximate-time sync: the fallback's matching (no DDS), backend choice, one run over DDS."""

from __future__ import annotations

import os
import sys
import time
import types
from typing import Any

import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from seg_ros.sync import (
    FALLBACK,
    MESSAGE_FILTERS,
    ApproximateTimeMatcher,
    make_synchronizer,
    stamp_ns,
)

IMAGE, DEPTH, INFO = 0, 1, 2


def at(t_ms: float, kind: type = Image, frame: str = "") -> Any:
    ns = round(t_ms * 1e6)
    return kind(header=Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id=frame))


def ms(msgs: tuple[Any, ...]) -> tuple[float, ...]:
    return tuple(stamp_ns(m) / 1e6 for m in msgs)


class Recorder:
    def __init__(self) -> None:
        self.sets: list[tuple[Any, ...]] = []

    def __call__(self, *msgs: Any) -> None:
        self.sets.append(msgs)


def matcher(slop_ms: float = 20.0, queue_size: int = 10) -> tuple[ApproximateTimeMatcher, Recorder]:
    rec = Recorder()
    return ApproximateTimeMatcher(3, rec, queue_size=queue_size, slop_s=slop_ms / 1000), rec


def test_exact_stamps_are_emitted_once_in_input_order() -> None:
    m, rec = matcher()
    assert not m.add(DEPTH, at(1000, frame="depth"))
    assert not m.add(IMAGE, at(1000, frame="color"))
    assert m.add(INFO, at(1000, CameraInfo))
    ((img, depth, info),) = rec.sets
    assert (img.header.frame_id, depth.header.frame_id) == ("color", "depth")
    assert isinstance(info, CameraInfo)
    assert m.queued(IMAGE) == m.queued(DEPTH) == m.queued(INFO) == []


def test_slop_bounds_every_pair() -> None:
    m, rec = matcher(slop_ms=20)
    m.add(IMAGE, at(1000))
    m.add(DEPTH, at(1015))
    m.add(INFO, at(1000))
    assert ms(rec.sets[0]) == (1000, 1015, 1000)
    tight, rec2 = matcher(slop_ms=5)
    tight.add(IMAGE, at(1000))
    tight.add(DEPTH, at(1015))
    assert not tight.add(INFO, at(1000))
    assert rec2.sets == []


def test_set_span_must_fit_the_slop_not_only_each_distance() -> None:
    m, rec = matcher(slop_ms=50)
    m.add(DEPTH, at(960))
    m.add(INFO, at(1040))
    assert not m.add(IMAGE, at(1000))  # each within 40 ms of the image, but 80 ms apart
    assert rec.sets == []


def test_best_match_wins_and_older_messages_are_dropped() -> None:
    m, rec = matcher(slop_ms=50)
    for t in (970, 990, 1020):
        m.add(DEPTH, at(t))
    m.add(INFO, at(1000))
    assert m.add(IMAGE, at(1000))
    assert ms(rec.sets[0]) == (1000, 990, 1000)
    # 970 was older than the match: dropped with it. 1020 waits for the next image.
    assert m.queued(DEPTH) == [1020 * 10**6]
    # Messages at or before the last emitted set are dropped on arrival: time never goes back.
    assert not m.add(INFO, at(990))
    assert not m.add(IMAGE, at(1000))
    assert m.queued(INFO) == m.queued(IMAGE) == []
    assert m.add(INFO, at(1021)) is False and m.add(IMAGE, at(1021))
    assert ms(rec.sets[1]) == (1021, 1020, 1021)


def test_queue_is_bounded_and_repeated_stamps_replace() -> None:
    m, _ = matcher(queue_size=3)
    for t in (1, 2, 3, 4, 5):
        m.add(DEPTH, at(t))
    assert m.queued(DEPTH) == [3 * 10**6, 4 * 10**6, 5 * 10**6]
    m2, rec = matcher()
    m2.add(DEPTH, at(100, frame="first"))
    m2.add(DEPTH, at(100, frame="second"))
    m2.add(INFO, at(100))
    m2.add(IMAGE, at(100))
    assert rec.sets[0][DEPTH].header.frame_id == "second"


def test_interleaved_streams_pair_every_frame_once() -> None:
    # 30 Hz colour + camera_info, depth 4 ms later, arriving in a shuffled but realistic order
    # (depth sometimes before colour); slop 10 ms < half the frame period.
    m, rec = matcher(slop_ms=10)
    period = 1000 / 30
    events = []
    for i in range(30):
        t = 1000 + i * period
        events += [(t + 6, IMAGE, t), (t + 1, INFO, t), (t + (2 if i % 2 else 9), DEPTH, t + 4)]
    for _, index, stamp in sorted(events):
        m.add(index, at(stamp, CameraInfo if index == INFO else Image))
    assert len(rec.sets) == 30
    for i, s in enumerate(rec.sets):
        img, depth, info = ms(s)
        assert img == pytest.approx(1000 + i * period, abs=1e-3)
        assert depth - img == pytest.approx(4, abs=1e-3) and info == img


def test_validation() -> None:
    with pytest.raises(ValueError, match="2 inputs"):
        ApproximateTimeMatcher(1, print)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeMatcher(2, print, queue_size=0)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeMatcher(2, print, slop_s=-1)


class FakeNode:
    def __init__(self) -> None:
        self.subscriptions: list[tuple[Any, ...]] = []
        self.destroyed: list[Any] = []

    def create_subscription(
        self, msg_type: type, topic: str, callback: Any, qos: Any, **kwargs: Any
    ) -> Any:
        sub = types.SimpleNamespace(msg_type=msg_type, topic=topic, callback=callback, qos=qos)
        self.subscriptions.append((msg_type, topic, callback, qos, kwargs))
        return sub

    def destroy_subscription(self, sub: Any) -> None:
        self.destroyed.append(sub)


TOPICS = [(Image, "image"), (Image, "depth"), (CameraInfo, "camera_info")]


def test_fallback_uses_ordinary_subscriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "message_filters", None)  # import fails, as it does here
    node, rec, group = FakeNode(), Recorder(), object()
    handle = make_synchronizer(
        node, TOPICS, rec, slop_s=0.01, queue_size=4, qos_profile=7, callback_group=group
    )
    assert handle.backend == FALLBACK
    assert isinstance(handle.synchronizer, ApproximateTimeMatcher)
    assert handle.synchronizer.queue_size == 4 and handle.synchronizer.slop_ns == 10_000_000
    assert [(t, topic, qos) for t, topic, _, qos, _ in node.subscriptions] == [
        (Image, "image", 7),
        (Image, "depth", 7),
        (CameraInfo, "camera_info", 7),
    ]
    assert all(kw == {"callback_group": group} for *_, kw in node.subscriptions)
    callbacks = [cb for _, _, cb, _, _ in node.subscriptions]
    callbacks[2](at(500, CameraInfo))
    callbacks[0](at(500, frame="c"))
    callbacks[1](at(505, frame="d"))
    assert [ms(s) for s in rec.sets] == [(500, 505, 500)]
    subs = list(handle.subscribers)
    handle.destroy(node)
    assert node.destroyed == subs and handle.subscribers == []


def fake_message_filters() -> types.ModuleType:
    mod = types.ModuleType("message_filters")

    class Subscriber:
        def __init__(self, node: Any, msg_type: type, topic: str, **kwargs: Any) -> None:
            self.args = (node, msg_type, topic, kwargs)
            self.sub = f"rclpy-subscription:{topic}"

    class ApproximateTimeSynchronizer:
        def __init__(self, fs: list[Any], queue_size: int, slop: float) -> None:
            self.fs, self.queue_size, self.slop = fs, queue_size, slop
            self.callbacks: list[Any] = []

        def registerCallback(self, cb: Any) -> None:
            self.callbacks.append(cb)

    setattr(mod, "Subscriber", Subscriber)  # noqa: B010 (a module built at run time)
    setattr(mod, "ApproximateTimeSynchronizer", ApproximateTimeSynchronizer)  # noqa: B010
    return mod


def test_message_filters_is_used_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "message_filters", fake_message_filters())
    node, rec = FakeNode(), Recorder()
    handle = make_synchronizer(node, TOPICS, rec, slop_s=0.03, queue_size=5, qos_profile=3)
    assert handle.backend == MESSAGE_FILTERS
    assert node.subscriptions == []  # message_filters subscribes itself
    sync = handle.synchronizer
    assert (sync.queue_size, sync.slop) == (5, 0.03)
    assert [s.args for s in sync.fs] == [
        (node, Image, "image", {"qos_profile": 3}),
        (node, Image, "depth", {"qos_profile": 3}),
        (node, CameraInfo, "camera_info", {"qos_profile": 3}),
    ]
    assert sync.callbacks == [rec]
    handle.destroy(node)
    assert node.destroyed == [f"rclpy-subscription:{t}" for _, t in TOPICS]
    # The fallback can still be forced.
    forced = make_synchronizer(node, TOPICS, rec, prefer_message_filters=False)
    assert forced.backend == FALLBACK and len(node.subscriptions) == 3


@pytest.mark.graph
def test_fallback_over_dds() -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    ctx = Context()
    # test/conftest.py gives each test process its own domain; keep to it when present.
    domain = int(os.environ.get("ROS_DOMAIN_ID") or 1 + os.getpid() % 100)
    rclpy.init(context=ctx, domain_id=domain)
    try:
        node = rclpy.create_node("sync_test", context=ctx)
        rec = Recorder()
        handle = make_synchronizer(node, TOPICS, rec, slop_s=0.01, prefer_message_filters=False)
        assert handle.backend == FALLBACK
        pubs = [node.create_publisher(t, topic, 10) for t, topic in TOPICS]
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        deadline = time.monotonic() + 10.0
        sent = 0
        while not rec.sets and time.monotonic() < deadline:
            # Discovery takes a moment: keep publishing fresh sets until one arrives.
            t = 1000 + 100 * sent
            pubs[0].publish(at(t))
            pubs[1].publish(at(t + 3))
            pubs[2].publish(at(t, CameraInfo))
            sent += 1
            executor.spin_once(timeout_sec=0.05)
            executor.spin_once(timeout_sec=0.05)
        assert rec.sets, "no synchronised set arrived over DDS within 10 s"
        img, depth, info = ms(rec.sets[0])
        assert depth - img == pytest.approx(3) and info == img
        handle.destroy(node)
        executor.remove_node(node)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
