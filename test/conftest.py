"""Test-process setup: a private DDS domain, a fresh rclpy graph per test, the gpu marker.

The domain id comes from the process id (seg_ros.testing.graph.DOMAIN_ID) and discovery stays
on this host. rclpy is imported lazily: the engine tests run without ROS. Helpers the tests
share (waiting, graph clients, tiny models, faults) live in seg_ros.testing, not here.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator

import pytest

from seg_ros.testing.graph import DOMAIN_ID, RosGraph

# Set before any rclpy context exists in this process (subprocesses inherit them).
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`@pytest.mark.gpu` tests (and parametrize cases marked gpu) skip where CUDA is absent;
    a test that takes the `ros_graph` fixture is a graph test (`-m "not graph"` leaves it out)."""
    for item in items:
        if "ros_graph" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "graph"
        ):
            item.add_marker(pytest.mark.graph)
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not _has_cuda():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture
def ros_graph() -> Iterator[RosGraph]:
    graph = RosGraph()
    try:
        yield graph
    finally:
        graph.close()


@pytest.fixture
def fake_vision_msgs(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """vision_msgs 4.x stand-in (seg_ros.testing.vision_msgs_stub) in sys.modules for one test."""
    from seg_ros.testing import vision_msgs_stub

    return vision_msgs_stub.install(monkeypatch)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models: thread start-up and spin-waiting cost more than the maths (5x on a busy
    2-core CPU). A module takes it with `pytestmark = pytest.mark.usefixtures(...)`."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
