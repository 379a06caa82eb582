"""ROS test fixtures: a private DDS domain per test process and a fresh rclpy Context per test.

The domain id comes from the process id, so two test runs on one machine (or a test run beside
`make demo`) do not see each other's nodes; discovery stays on this host. rclpy is imported
lazily: the engine tests run without ROS.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Set before any rclpy context exists in this process. 1..100: valid ids with default ports.
DOMAIN_ID = 1 + os.getpid() % 100
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


class RosGraph:
    """Nodes of one test in one Context, spun by a MultiThreadedExecutor on a background thread."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.executor = MultiThreadedExecutor(num_threads=6, context=self.context)
        self.nodes: list[Any] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def add(self, node: Any) -> Any:
        """Spin `node` (created with context=graph.context) until the test ends."""
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def node(self, name: str) -> Any:
        """A plain helper node (publishers, subscribers, clients of the test)."""
        import rclpy

        return self.add(rclpy.create_node(name, context=self.context))

    def call(self, client: Any, request: Any, timeout: float = 10.0) -> Any:
        """Call a service and wait for its answer (the executor spins elsewhere)."""
        assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"{client.srv_name} did not answer in {timeout} s"
        return future.result()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        for node in self.nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, period: float = 0.01) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; its last truth value."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return bool(predicate())
        time.sleep(period)
    return True


@pytest.fixture
def ros_graph() -> Iterator[RosGraph]:
    graph = RosGraph()
    try:
        yield graph
    finally:
        graph.close()
