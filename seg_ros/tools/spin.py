"""Spinning an executor beside the thread that does the work (the demo camera and client)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any


def spin_in_background(executor: Any) -> threading.Thread:
    """Spin `executor` on a daemon thread until it (or rclpy) shuts down; the thread, started.

    The caller's thread stays free for its own loop (publishing at a steady rate, waiting for
    the end of the demo); rclpy's shutdown exception is the normal end, not an error.
    """
    from rclpy.executors import ExternalShutdownException

    def spin() -> None:
        with contextlib.suppress(ExternalShutdownException):
            executor.spin()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    return thread
