"""Several cameras, one model: FairSlots (no ROS), then one node with three cameras over DDS.

Each camera has its own topics, services and session; objects, ids, resets and bad frames of one
never reach another; one model serves all of them; a fast camera cannot starve a slow one.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from seg_ros.frame_queue import FairSlots
from seg_ros.testing.graph import wait_for

# ---------------------------------------------------------------------------------- FairSlots


def test_one_key_is_a_newest_wins_slot() -> None:
    slots: FairSlots[str, int] = FairSlots(["a"])
    assert slots.put("a", 1) is False
    assert slots.put("a", 2) is True  # replaced one never taken
    key, msg, _ = slots.take() or ("", 0, 0.0)
    assert (key, msg) == ("a", 2)
    assert slots.put("a", 3) is False


def test_the_camera_served_longest_ago_goes_first() -> None:
    slots: FairSlots[str, int] = FairSlots(["fast", "slow"])
    served = []
    for i in range(6):
        slots.put("fast", i)  # the fast camera always has a frame waiting
        if i % 3 == 0:
            slots.put("slow", 100 + i)
        item = slots.take()
        assert item is not None
        served.append(item[0])
    # The slow camera's frame goes next whenever it has one: it never waits behind two fast ones.
    assert served == ["fast", "slow", "fast", "slow", "fast", "fast"]
    # take_all: every waiting camera once, longest-unserved first, newest message each.
    slots.put("slow", 7)
    slots.put("fast", 8)
    slots.put("fast", 9)
    assert [(k, m) for k, m, _ in slots.take_all()] == [("slow", 7), ("fast", 9)]


def test_close_wakes_a_waiting_worker_and_unknown_keys_are_refused() -> None:
    slots: FairSlots[str, int] = FairSlots(["a", "b"])
    with pytest.raises(KeyError):
        slots.put("c", 1)
    got: list[Any] = []
    worker = threading.Thread(target=lambda: got.append(slots.take()))
    worker.start()
    slots.close()
    worker.join(timeout=5.0)
    assert not worker.is_alive() and got == [None]
    assert slots.take_all() == []
    with pytest.raises(ValueError):
        FairSlots([])


# ---------------------------------------------------------------------------------- step_sessions
def test_step_sessions_equals_each_sessions_step_and_keeps_refusals_apart() -> None:
    """Several sessions on one model stepped together: each result is what its own `step` would
    give; a session that refuses its frame (another size while tracking) gets its FrameError in
    its place and the others go on; a stream whose model step fails gets its BackendError."""
    from seg_ros.engine import Prompt
    from seg_ros.engine.config import BackendConfig
    from seg_ros.engine.errors import BackendError, FrameError
    from seg_ros.engine.registry import load_model
    from seg_ros.engine.session import SegmentationSession, step_sessions

    def frames(n: int) -> list[np.ndarray]:
        return [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(n)]

    model = load_model(BackendConfig(backend="fake"))
    together = [SegmentationSession(model.open_stream()) for _ in range(3)]
    alone = [
        SegmentationSession(load_model(BackendConfig(backend="fake")).open_stream())
        for _ in range(3)
    ]
    for group in (together, alone):
        for k, session in enumerate(group):
            session.step(frames(1)[0], 1)
            session.add_prompt(Prompt(points=np.array([(10.0 + 10 * k, 20.0)], np.float32)))
    for i, image in enumerate(frames(4)[1:], start=2):
        results = step_sessions(model, [(s, image, i) for s in together])
        for result, session in zip(results, alone, strict=True):
            expected = session.step(image, i)
            assert not isinstance(result, BaseException)
            assert result.frame_index == expected.frame_index and result.stamp_ns == i
            for got, want in zip(result.objects, expected.objects, strict=True):
                assert got.object_id == want.object_id
                np.testing.assert_array_equal(got.mask, want.mask)
    wrong = np.zeros((30, 40, 3), np.uint8)  # tracked objects live on 64x48 frames
    results = step_sessions(model, [(together[0], frames(1)[0], 9), (together[1], wrong, 9)])
    assert isinstance(results[1], FrameError) and "reset" in str(results[1])
    assert not isinstance(results[0], BaseException) and results[0].stamp_ns == 9
    assert together[1].latest is not None and together[1].latest.stamp_ns == 4  # unchanged

    failing = load_model(BackendConfig(backend="fake", options={"fail_every": 1}))
    good, bad = SegmentationSession(model.open_stream()), SegmentationSession(failing.open_stream())
    results = step_sessions(model, [(good, frames(1)[0], 1)])
    assert not isinstance(results[0], BaseException)
    results = step_sessions(failing, [(bad, frames(1)[0], 1)])
    assert isinstance(results[0], BackendError)
    assert bad.frame_index == -1  # the failed frame did not advance the stream
    model.close()
    failing.close()


# ---------------------------------------------------------------------------------- the node
CAMERAS = {"head": (96, 64), "wrist": (64, 48), "base": (80, 60)}  # name -> (width, height)


def _frame(width: int, height: int, value: int = 90) -> Any:
    def make(sec: int, **kw: Any) -> Any:
        from seg_ros.testing.graph import grey_frame

        return grey_frame(sec, width, height, value=value, **kw)

    return make


def _start(ros_graph: Any, namespace: str, **params: Any) -> tuple[Any, dict[str, Any]]:
    from seg_ros.testing.graph import Client, start_node

    node = start_node(
        ros_graph,
        namespace=namespace,
        cameras=list(CAMERAS),
        qos_reliability="reliable",
        qos_depth=10,
        **params,
    )
    clients = {
        name: Client(
            ros_graph,
            frame=_frame(*size),
            name=f"client_{name}",
            namespace=namespace,
            camera=name,
        )
        for name, size in CAMERAS.items()
    }
    assert wait_for(lambda: all(c.connected() for c in clients.values()))
    return node, clients


def _point(x: float, y: float) -> dict[str, Any]:
    from geometry_msgs.msg import Point

    return {"points": [Point(x=x, y=y)], "point_labels": [1]}


@pytest.mark.graph
def test_three_cameras_keep_their_objects_ids_and_sizes_apart(ros_graph: Any) -> None:
    node, clients = _start(ros_graph, "/three")
    head, wrist, base = (clients[n] for n in CAMERAS)
    assert [c.name for c in node.cameras] == list(CAMERAS)
    # One model for all: every camera's stream is a stream of the node's model.
    assert node.model is not None
    for camera in node.cameras:
        assert camera.session is not None
    for sec, client in enumerate(clients.values(), start=1):
        first = client.send_until_output(sec)
        name = next(n for n, c in clients.items() if c is client)
        assert (first.width, first.height) == CAMERAS[name]

    a = head.call("add_points", label="mug", **_point(20, 20))
    b = wrist.call("add_points", label="tool", **_point(30, 30))
    c = wrist.call("add_points", label="cable", **_point(10, 10))
    assert a.success and b.success and c.success, (a.message, b.message, c.message)
    # Ids are per camera: each camera's first object is "1".
    assert (a.object_id, b.object_id, c.object_id) == ("1", "1", "2")
    sessions = {cam.name: cam.session for cam in node.cameras}
    assert [sessions["head"].label_of(i) for i in sessions["head"].object_ids] == ["mug"]
    assert [sessions["wrist"].label_of(i) for i in sessions["wrist"].object_ids] == [
        "tool",
        "cable",
    ]
    assert sessions["base"].object_ids == []

    # Each camera's instances carry only its own objects, at its own size.
    out = {n: clients[n].send_until_output(10 + i) for i, n in enumerate(CAMERAS)}
    assert [(i.id, i.label) for i in out["head"].instances] == [("1", "mug")]
    assert [(i.id, i.label) for i in out["wrist"].instances] == [("1", "tool"), ("2", "cable")]
    assert out["base"].instances == []
    assert (out["wrist"].width, out["wrist"].height) == CAMERAS["wrist"]

    # Services answer for the camera named: base has no object "1"; removing wrist's "1"
    # leaves head's "1".
    missing = base.call("remove_object", object_id="1")
    assert not missing.success and "1" in missing.message
    assert wrist.call("remove_object", object_id="1").success
    assert sessions["head"].object_ids == ["1"] and sessions["wrist"].object_ids == ["2"]

    # A reset of one camera leaves the others.
    assert wrist.call("reset").success
    assert sessions["wrist"].object_ids == [] and sessions["head"].object_ids == ["1"]
    after = head.send_until_output(20)
    assert [(i.id, i.label, i.visible) for i in after.instances] == [("1", "mug", True)]
    for camera in node.cameras:
        assert camera.stats.failed == 0, camera.name


@pytest.mark.graph
def test_a_bad_frame_on_one_camera_does_not_disturb_the_others(ros_graph: Any) -> None:
    from sensor_msgs.msg import Image

    node, clients = _start(ros_graph, "/bad")
    head, wrist = clients["head"], clients["wrist"]
    head.send_until_output(1)
    assert head.call("add_points", label="mug", **_point(20, 20)).success
    cams = {c.name: c for c in node.cameras}
    broken = Image(height=48, width=64, encoding="no_such_encoding", step=192)
    broken.data = bytes(192 * 48)
    wrist.image.publish(broken)
    assert wait_for(lambda: cams["wrist"].stats.failed >= 1, 15.0)
    out = head.send_until_output(2)
    assert [(i.id, i.visible) for i in out.instances] == [("1", True)]
    assert cams["head"].stats.failed == 0 and cams["base"].stats.failed == 0
    # The wrist camera still works after its bad frame.
    assert wrist.send_until_output(3).instances == []


@pytest.mark.graph
def test_a_fast_camera_does_not_starve_a_slow_one(ros_graph: Any) -> None:
    """A model slower than the fast camera (fake, 40 ms a frame): the fast camera's frames are
    mostly dropped (newest wins), the slow camera's are each served within about one step."""
    node, clients = _start(ros_graph, "/fair", backend_options='{"delay_s": 0.04}')
    head, wrist = clients["head"], clients["wrist"]
    cams = {c.name: c for c in node.cameras}
    stop = threading.Event()

    def flood() -> None:  # the head camera publishes as fast as it can
        sec = 1000
        while not stop.is_set():
            head.image.publish(head.frame(sec))  # type: ignore[misc]
            sec += 1
            stop.wait(0.005)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        for sec in range(1, 11):  # a slow camera: each frame waits for its answer
            wrist.send_until_output(sec, timeout=15.0, period=0.3)
    finally:
        stop.set()
        flooder.join(timeout=5.0)
    fast, slow = cams["head"].stats, cams["wrist"].stats
    assert fast.processed > 0 and fast.dropped > 0, (fast.processed, fast.dropped)
    # Each slow frame was answered; resends (every 0.3 s without an answer) are rare when it is
    # served within a step or two.
    assert slow.processed >= 10 and slow.processed >= 0.6 * slow.received, (
        slow.processed,
        slow.received,
    )


@pytest.mark.graph
def test_diagnostics_has_a_status_per_camera(ros_graph: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    from seg_ros.testing.graph import reliable_qos

    node, clients = _start(ros_graph, "/diag", diagnostics_period_s=0.2)
    got: list[Any] = []
    listener = ros_graph.node("diag_listener")
    listener.create_subscription(DiagnosticArray, "/diagnostics", got.append, reliable_qos())
    clients["head"].send_until_output(1)
    fqn = node.get_fully_qualified_name()

    def names() -> set[str]:
        return {s.name for m in got for s in m.status}

    expected = {f"seg_ros: {fqn}/{n}" for n in CAMERAS}
    assert wait_for(lambda: expected <= names(), 15.0), names()


@pytest.mark.graph
@pytest.mark.parametrize(
    "cameras, match",
    [(["head", "head"], "twice"), (["head cam"], "letters"), (["1st"], "start with a letter")],
)
def test_bad_camera_names_are_refused_at_startup(
    ros_graph: Any, cameras: list[str], match: str
) -> None:
    from rclpy.parameter import Parameter

    from seg_ros.node_params import ParameterError
    from seg_ros.segmentation_node import SegmentationNode

    with pytest.raises(ParameterError, match=match):
        SegmentationNode(
            context=ros_graph.context,
            parameter_overrides=[
                Parameter("backend", value="fake"),
                Parameter("cameras", value=cameras),
            ],
        )


@pytest.mark.graph
def test_a_camera_sets_its_own_input_parameters(ros_graph: Any) -> None:
    """`head.use_depth: true` gives the head camera depth + camera_info sync; the wrist camera
    keeps the node's plain image input; unknown values are refused naming the parameter."""
    from rclpy.parameter import Parameter

    from seg_ros.node_params import ParameterError
    from seg_ros.segmentation_node import SegmentationNode
    from seg_ros.testing.graph import start_node

    node = start_node(
        ros_graph,
        namespace="/own",
        cameras=["head", "wrist"],
        **{"head.use_depth": True, "wrist.qos_depth": 3},
    )
    head, wrist = node.cameras
    assert head.params.use_depth and not wrist.params.use_depth
    assert (head.params.qos_depth, wrist.params.qos_depth) == (1, 3)
    assert head.sync is not None and wrist.sync is None

    def topics() -> set[str]:
        found = node.get_subscriber_names_and_types_by_node(node.get_name(), "/own")
        return {t for t, _ in found}

    expected = {"/own/head/depth", "/own/head/camera_info", "/own/wrist/image"}
    assert wait_for(lambda: expected <= topics()), topics()
    assert "/own/wrist/depth" not in topics()
    with pytest.raises(ParameterError, match=r"wrist\.qos_reliability"):
        SegmentationNode(
            context=ros_graph.context,
            parameter_overrides=[
                Parameter("backend", value="fake"),
                Parameter("cameras", value=["wrist"]),
                Parameter("wrist.qos_reliability", value="sometimes"),
            ],
        )


@pytest.mark.graph
def test_each_camera_runs_its_own_standing_queries(ros_graph: Any) -> None:
    """`concepts` for every camera, `<camera>.concepts` for one: the scripted fake detector's
    "cup" is picked up on the head camera only (its own concepts), "person" on both, with ids
    per camera."""
    import json

    from seg_ros.testing import concept_script as cs
    from seg_ros.testing.graph import Client, grey_frame, start_node

    node = start_node(
        ros_graph,
        namespace="/concepts",
        cameras=["head", "wrist"],
        backend_options=json.dumps({"script": cs.SCRIPT}),
        concepts=["person"],
        concept_every_n=1,
        qos_reliability="reliable",
        qos_depth=10,
        **{"head.concepts": ["person", "cup"]},
    )
    head, wrist = node.cameras
    assert head.params.concepts == ("person", "cup") and wrist.params.concepts == ("person",)
    assert [q.label for q in head.session.queries] == ["person", "cup"]
    assert [q.label for q in wrist.session.queries] == ["person"]

    def frame(sec: int, **kw: Any) -> Any:
        return grey_frame(sec, cs.WIDTH, cs.HEIGHT, **kw)

    clients = {
        name: Client(ros_graph, frame=frame, name=f"cc_{name}", namespace="/concepts", camera=name)
        for name in ("head", "wrist")
    }
    assert wait_for(lambda: all(c.connected() for c in clients.values()))
    out = {name: c.send_until_output(1) for name, c in clients.items()}
    labels = {name: sorted(i.label for i in m.instances) for name, m in out.items()}
    # Frame 0 of the script: A (person, 0.95), the weak person (0.4 < 0.7), a cup (0.9).
    assert labels == {"head": ["cup", "person"], "wrist": ["person"]}, labels
    assert [i.id for i in out["wrist"].instances] == ["1"]
