"""Graph helpers for tests and benchmarks: a private rclpy Context spun on a thread, a client of
the node, waiting.

Graph tests start real nodes that talk over DDS in the test process. Everything here waits on a
condition with a timeout (`wait_for`), never for a fixed time: DDS deliveries on a busy 2-core VM
took 0.4-0.8 s, so a sleep long enough there would waste seconds everywhere else.

rclpy and the message packages are imported when a helper is used, not with this module:
`wait_for` serves the engine tests too, which run without ROS.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The node's namespace-less name: its topics and services live under it.
NODE = "/segmentation_node"

#: Service name -> type name in seg_ros.srv (reset is std_srvs/Trigger).
SERVICE_TYPES = {
    "add_points": "AddPoints",
    "add_box": "AddBox",
    "add_mask": "AddMask",
    "add_text": "AddText",
    "list_queries": "ListQueries",
    "remove_query": "RemoveQuery",
    "add_reference": "AddReference",
    "remove_reference": "RemoveReference",
    "remove_object": "RemoveObject",
    "reset": "Trigger",
    "segment": "SegmentImage",
    "segment_everything": "SegmentEverything",
}


#: A DDS domain for this test process: 1..100 (valid ids with default ports), from the pid, so two
#: test runs on one machine (or a run beside `make demo`) do not see each other's nodes.
DOMAIN_ID = 1 + os.getpid() % 100


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, period: float = 0.01) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; its last truth value."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return bool(predicate())
        time.sleep(period)
    return True


def stays(predicate: Callable[[], Any], duration: float, period: float = 0.01) -> bool:
    """True if `predicate` holds at every poll for `duration` seconds (checks that nothing
    happens: the duration is the claim under test, not a wait for something)."""
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if not predicate():
            return False
        time.sleep(period)
    return bool(predicate())


def services() -> dict[str, Any]:
    """Service name -> service type of the segmentation node."""
    from std_srvs.srv import Trigger

    import seg_ros.srv as srv

    return {
        name: Trigger if kind == "Trigger" else getattr(srv, kind)
        for name, kind in SERVICE_TYPES.items()
    }


def reliable_qos(depth: int = 10) -> Any:
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


class RosGraph:
    """Nodes of one test in one Context, spun by a MultiThreadedExecutor on a background thread."""

    def __init__(self, domain_id: int | None = None, num_threads: int = 6) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor

        self.context = Context()
        domain = DOMAIN_ID if domain_id is None else domain_id
        rclpy.init(context=self.context, domain_id=domain)
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=self.context)
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

    def node(self, name: str, namespace: str = "") -> Any:
        """A plain helper node (publishers, subscribers, clients of the test)."""
        import rclpy

        return self.add(rclpy.create_node(name, context=self.context, namespace=namespace))

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


def start_node(graph: RosGraph, *, namespace: str = "", **params: Any) -> Any:
    """A SegmentationNode (backend `fake` unless given) spun by `graph`, with these parameters.

    Nodes alive at the same time in one process need different namespaces: same-named nodes
    would share services and the relative `image` input.
    """
    from rclpy.parameter import Parameter

    from seg_ros.segmentation_node import SegmentationNode

    overrides = [Parameter(k, value=v) for k, v in {"backend": "fake", **params}.items()]
    node = SegmentationNode(
        context=graph.context, parameter_overrides=overrides, namespace=namespace
    )
    return graph.add(node)


def grey_frame(
    sec: int,
    width: int,
    height: int,
    *,
    nanosec: int = 0,
    frame_id: str = "cam",
    value: int = 90,
) -> Any:
    """A uniform rgb8 Image stamped `sec`.`nanosec` in `frame_id`."""
    import numpy as np
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from seg_ros.conversions import numpy_to_image

    header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
    return numpy_to_image(np.full((height, width, 3), value, np.uint8), "rgb8", header)


class Client:
    """The other side of the node: frames in (`frame(sec, **kw)` makes them), outputs collected,
    a client for every service."""

    def __init__(
        self,
        graph: RosGraph,
        outputs: tuple[str, ...] = ("instances",),
        *,
        frame: Callable[..., Any] | None = None,
        name: str = "test_client",
        namespace: str = "",
        camera: str = "",
    ) -> None:
        from sensor_msgs.msg import Image

        from seg_ros.msg import InstanceArray

        self.graph = graph
        self.frame = frame
        self.node = graph.node(name, namespace)
        # The segmentation node's full name, and the camera's topics and services under it.
        self.target = f"{namespace}{NODE}" + (f"/{camera}" if camera else "")
        image = f"{camera}/image" if camera else "image"
        self.image = self.node.create_publisher(Image, image, reliable_qos())
        self.received: dict[str, list[Any]] = {output: [] for output in outputs}
        types = {"instances": InstanceArray, "mask": Image, "overlay": Image}
        for output in outputs:
            self.node.create_subscription(
                types[output],
                f"{self.target}/{output}",
                self.received[output].append,
                reliable_qos(),
            )
        self.clients = {
            srv: self.node.create_client(kind, f"{self.target}/{srv}")
            for srv, kind in services().items()
        }

    def call(self, srv: str, timeout: float = 10.0, **fields: Any) -> Any:
        client = self.clients[srv]
        return self.graph.call(client, client.srv_type.Request(**fields), timeout)

    def connected(self) -> bool:
        outputs = all(self.node.count_publishers(f"{self.target}/{n}") for n in self.received)
        return outputs and self.image.get_subscription_count() > 0

    def send_until_output(
        self,
        sec: int,
        output: str = "instances",
        *,
        timeout: float = 10.0,
        period: float = 0.05,
        **kw: Any,
    ) -> Any:
        """Publish frame `sec` (`frame(sec, **kw)`, again every `period` s) until an output with
        that stamp arrives; return it."""
        make = self.frame
        assert make is not None, "this Client was made without a frame factory"
        found: list[Any] = []

        def arrived() -> bool:
            found[:] = [m for m in self.received[output] if m.header.stamp.sec == sec]
            if not found:
                self.image.publish(make(sec, **kw))
            return bool(found)

        assert wait_for(arrived, timeout, period), f"no {output} for frame {sec}"
        return found[0]


#: Frame size of `NodeUnderTest` (small: hundreds of requests and frames go through it).
NUT_WIDTH, NUT_HEIGHT = 64, 48


def good_frame(sec: int, width: int = NUT_WIDTH, height: int = NUT_HEIGHT, nanosec: int = 0) -> Any:
    """A valid frame for `NodeUnderTest` (uniform grey 90)."""
    return grey_frame(sec, width, height, nanosec=nanosec)


@dataclass
class NodeUnderTest:
    """A fake-backend node, one test client and the node's warnings (unthrottled and kept)."""

    node: Any
    client: Client
    warnings: list[str] = field(default_factory=list)
    direct_frames: int = 0  # frames given to node.process_frame by the test, not over DDS

    @property
    def image(self) -> Any:
        return self.client.image

    @property
    def received(self) -> list[Any]:
        return self.client.received["instances"]

    def call(self, srv: str, timeout: float = 10.0, **fields: Any) -> Any:
        return self.client.call(srv, timeout, **fields)

    def send_until_output(self, sec: int, **kw: Any) -> Any:
        return self.client.send_until_output(sec, **kw)

    def tracked(self) -> list[tuple[str, str]]:
        session = self.node.session
        assert session is not None
        return [(i, session.label_of(i)) for i in session.object_ids]


def start_node_under_test(graph: RosGraph, *, namespace: str = "", **params: Any) -> NodeUnderTest:
    """A fake-backend node with reliable input (every bad frame arrives) and a test client."""
    values = {"qos_reliability": "reliable", "qos_depth": 10, **params}
    node = start_node(graph, namespace=namespace, **values)
    client = Client(graph, frame=good_frame, name="bad_input_client", namespace=namespace)
    nut = NodeUnderTest(node, client)
    recorded = nut.warnings

    def record(text: str) -> None:  # the node's throttled warning, unthrottled and kept
        recorded.append(text)

    node._warn = record
    assert wait_for(nut.client.connected)
    return nut
