"""Click to segment (seg_ros.clicks): the decision alone, then rqt_image_view's clicks over DDS.

rqt_image_view publishes a left click as geometry_msgs/Point on `<shown topic>_mouse_left`; the
graph tests publish exactly that, on the input image's and on the overlay's click topic.
"""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from seg_ros.clicks import ClickDecision, ClickGate
from seg_ros.conversions import numpy_to_image
from seg_ros.engine.results import FrameResult, ObjectMask
from seg_ros.testing.graph import Client, RosGraph, reliable_qos, start_node, wait_for

W, H = 160, 120


def shown(*objects: ObjectMask) -> FrameResult:
    return FrameResult(frame_index=3, stamp_ns=42, height=H, width=W, objects=objects)


def disc(object_id: str, x: int, y: int, r: int = 10, visible: bool = True) -> ObjectMask:
    yy, xx = np.ogrid[:H, :W]
    mask = ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) if visible else np.zeros((H, W), bool)
    return ObjectMask(object_id, int(object_id), "", 0.9, visible, mask)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ the decision
def test_a_click_on_nothing_makes_a_new_object_and_on_an_object_refines_it() -> None:
    gate = ClickGate(0.0)
    frame = shown(disc("1", 40, 50), disc("2", 120, 60))
    assert gate.decide(frame, 80.0, 100.0).accepted
    assert gate.decide(frame, 80.0, 100.0).object_id == ""
    assert gate.decide(frame, 42.5, 48.0).object_id == "1"
    assert gate.decide(frame, 120.0, 60.0).object_id == "2"


def test_where_masks_overlap_the_last_object_wins_and_hidden_objects_are_not_clickable() -> None:
    gate = ClickGate(0.0)
    assert gate.decide(shown(disc("1", 40, 50), disc("2", 45, 50)), 43.0, 50.0).object_id == "2"
    hidden = shown(disc("1", 40, 50), disc("2", 40, 50, visible=False))
    assert gate.decide(hidden, 40.0, 50.0).object_id == "1"


@pytest.mark.parametrize(
    "x, y", [(-1.0, 10.0), (10.0, -0.5), (W, 10.0), (10.0, H), (1e9, 1e9), (float("nan"), 5.0)]
)
def test_a_click_outside_the_image_is_refused_with_the_reason(x: float, y: float) -> None:
    decision = ClickGate(0.0).decide(shown(disc("1", 40, 50)), x, y)
    assert not decision.accepted
    assert f"outside the {W}x{H} image" in decision.reason


def test_a_click_before_any_frame_is_refused() -> None:
    decision = ClickGate(0.0).decide(None, 10.0, 10.0)
    assert not decision.accepted and "no frame" in decision.reason


def test_clicks_within_the_interval_of_the_last_accepted_one_are_dropped() -> None:
    clock = Clock()
    gate = ClickGate(0.5, clock)
    frame = shown()
    assert gate.decide(frame, 10.0, 10.0).accepted
    clock.now += 0.2  # the second click of a double click
    dropped = gate.decide(frame, 11.0, 10.0)
    assert not dropped.accepted and "click_min_interval_s 0.5" in dropped.reason
    assert not gate.ready()
    clock.now += 0.31  # 0.51 s after the accepted click: the dropped one did not restart it
    assert gate.ready()
    assert gate.decide(frame, 12.0, 10.0).accepted


def test_refused_clicks_do_not_start_the_interval_and_zero_turns_it_off() -> None:
    clock = Clock()
    gate = ClickGate(0.5, clock)
    assert not gate.decide(shown(), -5.0, 10.0).accepted
    assert gate.decide(shown(), 5.0, 10.0).accepted  # at the same instant
    off = ClickGate(0.0, clock)
    assert all(off.decide(shown(), 5.0, 10.0).accepted for _ in range(3))


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="min_interval_s"):
        ClickGate(-0.1)


# ------------------------------------------------------------------ over DDS
def frame(sec: int) -> Image:
    header = Header(stamp=Time(sec=sec), frame_id="cam")
    return numpy_to_image(np.full((H, W, 3), 100, np.uint8), "rgb8", header)


def test_rqt_clicks_make_refine_and_are_rate_limited(ros_graph: RosGraph) -> None:
    node = start_node(ros_graph, click_min_interval_s=0.2)
    assert node.clicks.topics() == ["/image_mouse_left", "/segmentation_node/overlay_mouse_left"]
    assert node.clicks.gate.min_interval_s == 0.2
    # The rate limit on a clock the test moves: "past the interval" and "a double click" then
    # do not depend on how fast DDS delivers on a busy machine. Every decision is recorded, so
    # the test waits for a click to be handled, never for a time.
    clock = Clock()
    gate = ClickGate(0.2, clock)
    decisions: list[ClickDecision] = []

    def decide(result: FrameResult | None, x: float, y: float) -> ClickDecision:
        decision = ClickGate.decide(gate, result, x, y)
        decisions.append(decision)
        return decision

    gate.decide = decide  # type: ignore[method-assign]
    node.clicks.gate = gate
    client = Client(ros_graph, frame=frame)
    assert wait_for(client.connected)
    click = client.node.create_publisher(Point, "/image_mouse_left", reliable_qos())
    overlay_click = client.node.create_publisher(
        Point, "/segmentation_node/overlay_mouse_left", reliable_qos()
    )
    assert wait_for(
        lambda: click.get_subscription_count() and overlay_click.get_subscription_count()
    )
    session = node.session
    assert session is not None

    # Before any frame: dropped with a reason, nothing made (called in-process: over DDS the
    # click could race the first frame).
    node.clicks.on_click(Point(x=40.0, y=50.0))
    assert [d.reason for d in decisions] == ["no frame processed yet"]
    client.send_until_output(1)
    assert session.object_ids == []

    click.publish(Point(x=40.0, y=50.0))
    assert wait_for(lambda: session.object_ids == ["1"])
    out = client.send_until_output(2)  # the displayed frame now shows object 1
    assert [i.id for i in out.instances] == ["1"]
    assert (out.instances[0].bbox.x_offset, out.instances[0].bbox.y_offset) == (28, 38)

    # A click inside it, past the interval: refined (the fake's disc moves), still one object.
    clock.now += 0.3
    click.publish(Point(x=45.0, y=52.0))
    assert wait_for(lambda: len(decisions) == 3)
    assert decisions[-1] == ClickDecision(True, object_id="1")
    out = client.send_until_output(3)
    assert [i.id for i in out.instances] == ["1"]
    assert (out.instances[0].bbox.x_offset, out.instances[0].bbox.y_offset) == (33, 40)

    # A double click on an empty place (both within the interval): exactly one new object.
    clock.now += 0.3
    click.publish(Point(x=130.0, y=30.0))
    click.publish(Point(x=131.0, y=30.0))
    assert wait_for(lambda: len(decisions) == 5)
    assert [d.accepted for d in decisions[3:]] == [True, False]
    assert wait_for(lambda: session.object_ids == ["1", "2"])
    client.send_until_output(4)
    assert session.object_ids == ["1", "2"]

    # Outside the image: refused, nothing made, and the node still serves.
    clock.now += 0.3
    click.publish(Point(x=500.0, y=30.0))
    click.publish(Point(x=-1.0, y=30.0))
    assert wait_for(lambda: len(decisions) == 7)
    assert not any(d.accepted for d in decisions[5:])
    out = client.send_until_output(5)
    assert session.object_ids == ["1", "2"] and len(out.instances) == 2

    # A click on the overlay's topic works too.
    overlay_click.publish(Point(x=100.0, y=100.0))
    assert wait_for(lambda: session.object_ids == ["1", "2", "3"])
    assert client.call("remove_object", object_id="3").success


def test_clicks_follow_the_remapped_input_and_can_be_turned_off(ros_graph: RosGraph) -> None:
    from rclpy.parameter import Parameter

    from seg_ros.segmentation_node import SegmentationNode

    node = ros_graph.add(
        SegmentationNode(
            context=ros_graph.context,
            parameter_overrides=[Parameter("backend", value="fake")],
            cli_args=["--ros-args", "-r", "image:=/camera/color/image_raw"],
            namespace="/remapped",
        )
    )
    assert node.clicks.topics() == [
        "/camera/color/image_raw_mouse_left",
        "/remapped/segmentation_node/overlay_mouse_left",
    ]
    assert wait_for(
        lambda: (
            node.count_subscribers("/camera/color/image_raw_mouse_left") == 1
            and node.count_subscribers("/remapped/segmentation_node/overlay_mouse_left") == 1
        )
    )
    off = start_node(ros_graph, namespace="/off", click_prompts=False)
    assert wait_for(lambda: off.count_subscribers("/off/image") == 1)
    assert off.count_subscribers("/off/image_mouse_left") == 0
    compressed = start_node(ros_graph, namespace="/jpeg", input_compressed=True)
    assert compressed.clicks.topics()[0] == "/jpeg/image_mouse_left"
    assert wait_for(lambda: compressed.count_subscribers("/jpeg/image_mouse_left") == 1)
