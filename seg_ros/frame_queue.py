"""The node's frame path between threads: newest-wins slots and a requests-first gate.

Pure threading, no ROS: the input callback `put`s into a `LatestSlot`, one worker `take`s the
newest message, so a model slower than the camera skips stale frames instead of building a
backlog. With several cameras, `FairSlots` keeps one such slot per camera and gives the worker
the waiting camera it served longest ago: a 30 Hz camera cannot starve a 5 Hz one (each camera
with a frame waiting is served once per round). `RequestsFirst` lets service requests take the
session's lock before the worker's next frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

Msg = TypeVar("Msg")
Key = TypeVar("Key")


class LatestSlot(Generic[Msg]):
    """A one-message buffer: `put` replaces what the worker has not taken yet."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: tuple[Msg, float] | None = None
        self._closed = False

    def put(self, msg: Msg) -> bool:
        """Offer the newest message; True when it replaced one the worker never took."""
        now = time.monotonic()
        with self._cond:
            replaced = self._item is not None
            self._item = (msg, now)
            self._cond.notify()
        return replaced

    def take(self) -> tuple[Msg, float] | None:
        """(newest message, its monotonic arrival time), waiting for one; None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FairSlots(Generic[Key, Msg]):
    """One newest-wins slot per key (camera); `take` serves the keys round-robin.

    `take` returns the waiting key served longest ago (never served counts as longest); `take_all`
    every waiting key's message in that order (a batch for the image encoder). One key behaves
    exactly like a `LatestSlot`.
    """

    def __init__(self, keys: list[Key]) -> None:
        if not keys:
            raise ValueError("FairSlots needs at least one key")
        self._cond = threading.Condition()
        self._items: dict[Key, tuple[Msg, float]] = {}
        #: Keys in service order: the front one was served longest ago.
        self._order: list[Key] = list(keys)
        self._closed = False

    def put(self, key: Key, msg: Msg) -> bool:
        """Offer `key`'s newest message; True when it replaced one the worker never took."""
        now = time.monotonic()
        with self._cond:
            if key not in self._order:
                raise KeyError(f"unknown slot {key!r}")
            replaced = key in self._items
            self._items[key] = (msg, now)
            self._cond.notify()
        return replaced

    def take(self) -> tuple[Key, Msg, float] | None:
        """(key, its newest message, arrival time) of the waiting key served longest ago,
        waiting for one; None once closed."""
        batch = self._take(1)
        return batch[0] if batch else None

    def take_all(self) -> list[tuple[Key, Msg, float]]:
        """Every waiting key's newest message, longest-unserved first, waiting for at least one;
        [] once closed."""
        return self._take(len(self._order))

    def _take(self, most: int) -> list[tuple[Key, Msg, float]]:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            chosen = [k for k in self._order if k in self._items][:most]
            for key in chosen:  # served now: to the back of the order
                self._order.remove(key)
                self._order.append(key)
            return [(key, *self._items.pop(key)) for key in chosen]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RequestsFirst:
    """Lets waiting service requests take the session before the worker's next frame.

    The session's lock is not fair: a worker that always has a next frame ready would re-take it
    at once and could starve a prompt for many frames. Requests register here; the worker starts
    a frame only when none is waiting (or after `max_wait_s`, so a flood of requests cannot stop
    the stream).
    """

    def __init__(self, max_wait_s: float = 1.0) -> None:
        self._cond = threading.Condition()
        self._waiting = 0
        self.max_wait_s = max_wait_s

    @contextmanager
    def request(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
        try:
            yield
        finally:
            with self._cond:
                self._waiting -= 1
                self._cond.notify_all()

    def wait_for_requests(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._waiting == 0, timeout=self.max_wait_s)
