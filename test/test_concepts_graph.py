"""Live concepts over DDS: a node started with a standing query from its parameters, the fake
backend's scripted detector (seg_ros.testing.concept_script), frames one at a time.

Instances appear one by one, two overlap, one leaves and returns, one is a duplicate, one leaves
for good: ~/instances must say exactly what the policy says, frame by frame. Then the services:
~/add_text with track_new, ~/list_queries, ~/remove_query.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import RegionOfInterest
from std_msgs.msg import Header

from seg_ros.conversions import numpy_to_image
from seg_ros.testing import concept_script as scene
from seg_ros.testing.graph import NODE, Client, RosGraph, start_node, wait_for

pytestmark = pytest.mark.graph


def stamp(frame: int) -> Time:
    ns = (frame + 1) * scene.STAMP_STEP_NS
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image(frame: int) -> Any:
    header = Header(stamp=stamp(frame), frame_id="cam")
    return numpy_to_image(np.zeros((scene.HEIGHT, scene.WIDTH, 3), np.uint8), "rgb8", header)


def concept_node(graph: RosGraph, **params: Any) -> tuple[Any, Client]:
    values = {
        "backend_options": json.dumps({"script": scene.SCRIPT}),
        "concepts": [scene.TEXT],
        "concept_every_n": 1,
        "concept_timeout_s": scene.TIMEOUT_S,
        "new_instance_threshold": 0.7,
        "score_threshold": 0.5,
        "max_objects": 8,
        # Every frame must be processed once and in order: the script counts frames.
        "qos_reliability": "reliable",
        "qos_depth": 10,
        **params,
    }
    node = start_node(graph, **values)
    client = Client(graph, ("instances",))
    assert wait_for(client.connected)
    return node, client


def send(client: Client, frame: int) -> Any:
    """Publish frame `frame` once (reliable) and wait for its ~/instances."""
    want = stamp(frame)
    client.image.publish(image(frame))
    found: list[Any] = []

    def arrived() -> bool:
        found[:] = [m for m in client.received["instances"] if m.header.stamp == want]
        return bool(found)

    assert wait_for(arrived, 20.0), f"no ~/instances for frame {frame}"
    return found[0]


def service(graph: RosGraph, client: Client, kind: Any, name: str, **fields: Any) -> Any:
    caller = client.node.create_client(kind, f"{NODE}/{name}")
    return graph.call(caller, kind.Request(**fields))


def test_a_standing_query_from_the_parameters_follows_the_policy(ros_graph: RosGraph) -> None:
    from seg_ros.srv import AddBox, ListQueries, RemoveQuery

    node, client = concept_node(ros_graph)
    for frame in range(scene.FRAMES):
        msg = send(client, frame)
        if frame == scene.USER_FRAME:
            box = RegionOfInterest(
                x_offset=scene.USER_BOX[0],
                y_offset=scene.USER_BOX[1],
                width=scene.USER_BOX[2] - scene.USER_BOX[0],
                height=scene.USER_BOX[3] - scene.USER_BOX[1],
            )
            answer = service(ros_graph, client, AddBox, "add_box", box=box, label=scene.USER_LABEL)
            assert answer.success and answer.object_id == "2", answer.message
            continue  # the message of this frame was published before the box
        got = {i.id: (i.label, i.visible) for i in msg.instances}
        assert got == scene.EXPECTED[frame], f"frame {frame}"
    listed = service(ros_graph, client, ListQueries, "list_queries")
    assert listed.success, listed.message
    (query,) = listed.queries
    assert (query.id, list(query.phrases), query.label) == ("q1", [scene.TEXT], scene.TEXT)
    assert list(query.object_ids) == ["1", "3", "5"] and list(query.lost_ids) == []
    assert (query.added, query.refound, query.dropped, query.errors) == (4, 1, 1, 0)
    # Stop it, dropping its objects: only the user's box is left.
    gone = service(ros_graph, client, RemoveQuery, "remove_query", query_id="q1")
    assert gone.success and list(gone.object_ids) == ["1", "3", "5"], gone.message
    assert node.session is not None and node.session.object_ids == ["2"]
    gone = service(ros_graph, client, RemoveQuery, "remove_query", query_id="q1")
    assert not gone.success and "unknown query id" in gone.message


def test_add_text_with_track_new_and_remove_query_dropping_objects(ros_graph: RosGraph) -> None:
    from seg_ros.srv import AddText, ListQueries, RemoveQuery

    node, client = concept_node(ros_graph, concepts=[])
    send(client, 0)
    answer = service(ros_graph, client, AddText, "add_text", text=scene.TEXT, track_new=True)
    assert answer.success, answer.message
    assert answer.query_id == "q1" and list(answer.object_ids) == ["1"]  # A, found at once
    assert [i.label for i in answer.instances] == [scene.TEXT]
    for frame in range(1, 4):
        msg = send(client, frame)
    assert [i.id for i in msg.instances] == ["1", "2"]  # B walked in on frame 3
    listed = service(ros_graph, client, ListQueries, "list_queries")
    assert [q.id for q in listed.queries] == ["q1"] and listed.queries[0].every_n == 1
    gone = service(
        ros_graph, client, RemoveQuery, "remove_query", query_id="q1", keep_objects=False
    )
    assert gone.success and list(gone.object_ids) == ["1", "2"], gone.message
    assert node.session is not None and node.session.object_ids == []
    assert send(client, 4).instances == []


def test_a_concept_on_a_backend_without_text_is_refused_and_the_node_serves(
    ros_graph: RosGraph,
) -> None:
    from seg_ros.srv import AddText, ListQueries

    node, client = concept_node(ros_graph, backend_options="", concepts=[scene.TEXT])
    assert node.session is not None and node.session.queries == []  # logged, not started
    send(client, 0)
    answer = service(ros_graph, client, AddText, "add_text", text="cup", track_new=True)
    assert not answer.success and "text detector" in answer.message
    assert service(ros_graph, client, ListQueries, "list_queries").queries == []
