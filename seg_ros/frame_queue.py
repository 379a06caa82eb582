"""The node's frame path between threads: a newest-wins slot and a requests-first gate.

Pure threading, no ROS: the input callback `put`s into a `LatestSlot`, one worker `take`s the
newest message, so a model slower than the camera skips stale frames instead of building a
backlog. `RequestsFirst` lets service requests take the session's lock before the worker's next
frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

Msg = TypeVar("Msg")


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
