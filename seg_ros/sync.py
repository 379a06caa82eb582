"""Approximate-time synchronisation of image + depth + camera_info (or any stamped topics).

`make_synchronizer(node, topics, callback, ...)` hides two implementations behind one handle:

  * `message_filters.ApproximateTimeSynchronizer` when the `message_filters` package is
    importable (ROS 2 installs on robots);
  * otherwise `ApproximateTimeMatcher`, a small pure-Python equivalent fed by ordinary
    subscriptions (this module's tests exercise its matching without DDS).

The node only synchronises when depth is configured; with the image alone it subscribes to the
image directly and never builds a synchroniser.

Matching semantics of the fallback (close to message_filters' Python implementation):
  * one queue per input, keyed by header stamp (a repeated stamp replaces the queued message),
    holding at most `queue_size` messages (the oldest is dropped);
  * each arriving message looks for one message from every other queue within `slop_s` of its
    own stamp such that the whole set spans at most `slop_s`; among those sets the best match
    wins: the smallest span, then the smallest total distance to the arriving stamp;
  * the matched messages are emitted in input order (callback(msg_0, ..., msg_n-1)) and leave
    their queues together with every *older* message: those could only make staler sets;
  * sets are emitted in time order: a message stamped at or before its input's last emitted
    message is dropped on arrival (a tracker must never see time go backwards).
"""

from __future__ import annotations

import importlib
import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Backend names reported by `SyncHandle.backend`.
MESSAGE_FILTERS = "message_filters"
FALLBACK = "fallback"


def stamp_ns(msg: Any) -> int:
    """The message's header stamp in integer nanoseconds."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ApproximateTimeMatcher:
    """Pure-Python approximate-time matcher of `num_inputs` stamped streams. Thread-safe.

    Args:
        num_inputs: number of synchronised inputs (>= 2).
        callback: called with one message per input, in input order, for every matched set.
            It runs outside the matcher's lock, on the thread that delivered the last message.
        queue_size: messages kept per input while waiting for partners (>= 1).
        slop_s: largest stamp difference within a set (seconds, >= 0).
    """

    def __init__(
        self,
        num_inputs: int,
        callback: Callable[..., None],
        queue_size: int = 10,
        slop_s: float = 0.05,
    ) -> None:
        if num_inputs < 2:
            raise ValueError(f"need at least 2 inputs to synchronise; got {num_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1; got {queue_size}")
        if not slop_s >= 0:
            raise ValueError(f"slop_s must be >= 0; got {slop_s}")
        self._queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self._last_emitted: list[int | None] = [None] * num_inputs
        self._callback = callback
        self.queue_size = int(queue_size)
        self.slop_ns = round(slop_s * 1e9)
        self._lock = threading.Lock()

    def queued(self, index: int) -> list[int]:
        """Stamps (ns) waiting in input `index`, oldest first."""
        with self._lock:
            return sorted(self._queues[index])

    def add(self, index: int, msg: Any) -> bool:
        """Feed one message of input `index`; returns True when it completed (and emitted) a set."""
        t = stamp_ns(msg)
        with self._lock:
            last = self._last_emitted[index]
            if last is not None and t <= last:
                return False  # older than what was already emitted
            queue = self._queues[index]
            queue[t] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            chosen = self._best_set(index, t)
            if chosen is None:
                return False
            msgs = [q[s] for q, s in zip(self._queues, chosen, strict=True)]
            self._last_emitted = list(chosen)
            for q, s in zip(self._queues, chosen, strict=True):
                for old in [k for k in q if k <= s]:
                    del q[old]
        self._callback(*msgs)
        return True

    def _best_set(self, index: int, t: int) -> tuple[int, ...] | None:
        candidates: list[list[int]] = []
        for j, q in enumerate(self._queues):
            if j == index:
                candidates.append([t])
                continue
            near = [s for s in q if abs(s - t) <= self.slop_ns]
            if not near:
                return None
            candidates.append(near)
        best: tuple[int, ...] | None = None
        best_key: tuple[int, int] | None = None
        # At most queue_size ** (num_inputs - 1) sets: 100 for image + depth + info at 10.
        for combo in itertools.product(*candidates):
            span = max(combo) - min(combo)
            if span > self.slop_ns:
                continue
            key = (span, sum(abs(s - t) for s in combo))
            if best_key is None or key < best_key:
                best, best_key = combo, key
        return best


@dataclass
class SyncHandle:
    """What `make_synchronizer` built; keep it alive as long as the synchronisation runs.

    Attributes:
        backend: "message_filters" or "fallback".
        synchronizer: the message_filters synchroniser or the `ApproximateTimeMatcher`.
        subscribers: message_filters.Subscriber objects or rclpy subscriptions, in input order.
    """

    backend: str
    synchronizer: Any
    subscribers: list[Any] = field(default_factory=list)

    def destroy(self, node: Any) -> None:
        """Destroy the underlying subscriptions (e.g. in a lifecycle node's on_deactivate)."""
        for sub in self.subscribers:
            node.destroy_subscription(getattr(sub, "sub", sub))
        self.subscribers.clear()


def _import_message_filters() -> Any | None:
    try:
        return importlib.import_module("message_filters")
    except ImportError:
        return None


def make_synchronizer(
    node: Any,
    topics: Sequence[tuple[type, str]],
    callback: Callable[..., None],
    *,
    slop_s: float = 0.05,
    queue_size: int = 10,
    qos_profile: Any = 10,
    callback_group: Any = None,
    prefer_message_filters: bool = True,
) -> SyncHandle:
    """Subscribe to `topics` on `node` and call `callback(*msgs)` with approximately-synced sets.

    Args:
        node: an rclpy Node.
        topics: (message type, topic name) per input, e.g.
            [(Image, "image"), (Image, "depth"), (CameraInfo, "camera_info")].
        callback: receives one message per input, in the order of `topics`.
        slop_s: largest stamp difference within a set, seconds.
        queue_size: messages kept per input while waiting for partners.
        qos_profile: QoS of every subscription (a QoSProfile or a depth).
        callback_group: callback group of the subscriptions (None = the node's default).
        prefer_message_filters: use message_filters when importable (False forces the fallback).
    """
    extra = {} if callback_group is None else {"callback_group": callback_group}
    mf = _import_message_filters() if prefer_message_filters else None
    if mf is not None:
        subs = [
            mf.Subscriber(node, msg_type, topic, qos_profile=qos_profile, **extra)
            for msg_type, topic in topics
        ]
        sync = mf.ApproximateTimeSynchronizer(subs, queue_size, slop_s)
        sync.registerCallback(callback)
        return SyncHandle(MESSAGE_FILTERS, sync, subs)
    matcher = ApproximateTimeMatcher(len(topics), callback, queue_size=queue_size, slop_s=slop_s)
    subscriptions = [
        node.create_subscription(msg_type, topic, _feeder(matcher, index), qos_profile, **extra)
        for index, (msg_type, topic) in enumerate(topics)
    ]
    return SyncHandle(FALLBACK, matcher, subscriptions)


def _feeder(matcher: ApproximateTimeMatcher, index: int) -> Callable[[Any], None]:
    def feed(msg: Any) -> None:
        matcher.add(index, msg)

    return feed
