"""The node end to end on the model backends: tiny random-weight SAM 2.1 and SAM 3 checkpoints,
saved to a temp folder and loaded by the node's `model` parameter through the real loaders.

Image in, prompts by service, instances / mask / overlay out: what issues 4 and 5 call done.
Random weights say nothing about mask quality; these tests check the wiring and the bookkeeping
(ids, labels, headers, masks consistent across outputs, text -> labelled tracked objects).
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from seg_ros.conversions import image_to_numpy, numpy_to_image
from seg_ros.testing.graph import Client, RosGraph, start_node, wait_for

pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.graph

W, H = 160, 120


def scene(sec: int) -> Image:
    """A textured frame with a bright square that moves one pixel per frame."""
    rng = np.random.default_rng(sec)
    rgb = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    x = 40 + sec
    rgb[40:80, x : x + 40] = (220, 60, 40)
    header = Header(stamp=Time(sec=sec), frame_id="camera_color_optical_frame")
    return numpy_to_image(rgb, "rgb8", header)


def send(client: Client, sec: int) -> Any:
    """Publish frame `sec` until its instances arrive (a model step is slow): return them."""
    return client.send_until_output(sec, timeout=60.0, period=0.2)


def output_at(client: Client, name: str, sec: int) -> Any:
    msgs: list[Any] = []
    assert wait_for(
        lambda: (
            bool(msgs.extend(m for m in client.received[name] if m.header.stamp.sec == sec))
            or bool(msgs)
        ),
        timeout=20.0,
    ), f"no {name} for frame {sec}"
    return msgs[0]


@pytest.fixture(scope="module")
def sam2_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from seg_ros.testing.tiny_models import save_tiny

    return save_tiny("sam2", tmp_path_factory.mktemp("weights") / "sam2")


@pytest.fixture(scope="module")
def sam3_folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    from seg_ros.testing.tiny_sam3 import tiny_sam3

    return tiny_sam3(tmp_path_factory.mktemp("weights") / "sam3")


def test_sam2_backend_end_to_end(ros_graph: RosGraph, sam2_folder: pathlib.Path) -> None:
    node = start_node(
        ros_graph, backend="sam2", model=str(sam2_folder), device="cpu", score_threshold=0.0
    )
    assert node.session is not None, node.load_error
    client = Client(ros_graph, ("instances", "mask", "overlay"), frame=scene)
    assert wait_for(client.connected, timeout=20.0)
    assert send(client, 1).instances == []

    point = client.call(
        "add_points", points=[Point(x=60.0, y=60.0)], point_labels=[1], label="block"
    )
    assert point.success, point.message
    box = client.call(
        "add_box", box=RegionOfInterest(x_offset=10, y_offset=10, width=30, height=25), label="b"
    )
    assert box.success, box.message
    assert (point.object_id, box.object_id) == ("1", "2")
    assert point.instance.label == "block" and box.instance.label == "b"
    # The prompt's answer is the object on the prompted frame (its mask has the frame's header).
    assert point.instance.mask.header.stamp.sec == 1
    # Multimask: the candidates come back with the refinement.
    refine = client.call(
        "add_points",
        object_id="1",
        points=[Point(x=60.0, y=60.0), Point(x=150.0, y=110.0)],
        point_labels=[1, 0],
        multimask=True,
    )
    assert refine.success and refine.object_id == "1", refine.message
    assert len(refine.candidates) >= 2

    # Tracking over the following frames: both objects, labels kept, consistent outputs.
    for sec in range(2, 6):
        out = send(client, sec)
        assert [(i.id, i.label) for i in out.instances] == [("1", "block"), ("2", "b")]
        assert out.header.frame_id == "camera_color_optical_frame"
    mask = image_to_numpy(output_at(client, "mask", 5))
    overlay = output_at(client, "overlay", 5)
    assert mask.shape == (H, W) and overlay.encoding == "bgr8"
    out = send(client, 5)
    for inst in out.instances:  # the label image agrees with each instance's own mask
        count = int(np.count_nonzero(mask == inst.mask_value))
        crop = image_to_numpy(inst.mask) if inst.visible else np.zeros(0)
        assert count <= int(np.count_nonzero(crop)), inst.id  # overlaps go to one object

    # Remove one object; the other keeps being tracked.
    assert client.call("remove_object", object_id="2").success
    assert [i.id for i in send(client, 6).instances] == ["1"]
    # One-shot segmentation leaves tracking alone.
    one = client.call("segment", points=[Point(x=60.0, y=60.0)], point_labels=[1])
    assert one.success and len(one.instances) == 1, one.message
    assert [i.id for i in send(client, 7).instances] == ["1"]
    # Text is refused with the backends that have it.
    text = client.call("add_text", text="mug")
    assert not text.success and "sam3" in text.message

    # Segment everything: thresholds 0 so random weights keep masks; a 2x2 grid (12 candidate
    # masks) so that track=True fits the 15 free places under max_objects=16. Tracking untouched:
    loose = {"points_per_side": 2, "pred_iou_threshold": 0.0, "stability_threshold": 0.0}
    found = client.call("segment_everything", timeout=60.0, **loose)
    assert found.success and len(found.instances) > 0, found.message
    assert all(i.id == "" for i in found.instances)
    assert [i.id for i in send(client, 8).instances] == ["1"]
    # ... or, with track, every mask becomes a labelled object on ~/instances.
    tracked = client.call("segment_everything", timeout=60.0, track=True, label="any", **loose)
    assert tracked.success and len(tracked.instances) > 0, tracked.message
    new_ids = [i.id for i in tracked.instances]
    assert "" not in new_ids and all(i.label == "any" for i in tracked.instances)
    assert [i.id for i in send(client, 9).instances] == ["1", *new_ids]


def test_sam2_text_through_a_detector_end_to_end(
    ros_graph: RosGraph, sam2_folder: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    """`text_detector`: ~/add_text on backend sam2; objects labelled with their own phrase."""
    from seg_ros.testing.tiny_detector import save_detector

    detector = save_detector(tmp_path / "grounding-dino", "grounding-dino")
    node = start_node(
        ros_graph,
        backend="sam2",
        model=str(sam2_folder),
        text_detector=str(detector),
        device="cpu",
        score_threshold=0.0,
        # Random weights: let every box through (the default floor is 0.3).
        backend_options='{"detector_threshold": 0.0}',
    )
    assert node.session is not None, node.load_error
    client = Client(ros_graph, ("instances",), frame=scene)
    assert wait_for(client.connected, timeout=20.0)
    send(client, 1)
    found = client.call("add_text", text="person. red mug", max_objects=2, timeout=60.0)
    assert found.success and len(found.object_ids) >= 1, found.message
    labels = {i.id: i.label for i in found.instances}
    assert set(labels) == set(found.object_ids) and set(labels.values()) <= {"person", "red mug"}
    out = send(client, 2)
    assert {i.id: i.label for i in out.instances} == labels


def test_sam3_text_prompts_end_to_end(ros_graph: RosGraph, sam3_folder: pathlib.Path) -> None:
    node = start_node(
        ros_graph, backend="sam3", model=str(sam3_folder), device="cpu", score_threshold=0.0
    )
    assert node.session is not None, node.load_error
    client = Client(ros_graph, ("instances",), frame=scene)
    assert wait_for(client.connected, timeout=20.0)
    send(client, 1)

    found = client.call("add_text", text="red block", score_threshold=0.01, max_objects=2)
    assert found.success, found.message
    assert 1 <= len(found.object_ids) <= 2
    assert [i.label for i in found.instances] == ["red block"] * len(found.object_ids)
    scores = [i.score for i in found.instances]
    assert all(0.0 <= s <= 1.0 for s in scores)
    # Text-created objects are tracked like any other, under their ids and the text as label.
    for sec in (2, 3):
        out = send(client, sec)
        assert [(i.id, i.label) for i in out.instances] == [
            (i, "red block") for i in found.object_ids
        ]
    # Composed: text + a click names one object; a label given with it wins.
    picked = client.call(
        "add_points", points=[Point(x=60.0, y=60.0)], point_labels=[1], label="that one"
    )
    assert picked.success and picked.instance.label == "that one", picked.message
    # One-shot with text and a box together; tracking untouched.
    before = [i.id for i in send(client, 4).instances]
    one = client.call(
        "segment",
        text="red block",
        box=RegionOfInterest(x_offset=30, y_offset=30, width=60, height=60),
        score_threshold=0.01,
    )
    assert one.success, one.message
    assert all(i.label == "red block" and i.id == "" for i in one.instances)
    assert [i.id for i in send(client, 5).instances] == before
    # No match is an answer, not an error.
    none = client.call("add_text", text="red block", score_threshold=1.0)
    assert none.success and none.object_ids == [], none.message
    # Segment everything on SAM 3's tracker decoder, named from a vocabulary where a detection
    # of the phrase overlaps the mask (random weights: maybe none is); tracking untouched.
    loose = {"points_per_side": 2, "pred_iou_threshold": 0.0, "stability_threshold": 0.0}
    every = client.call(
        "segment_everything", timeout=60.0, vocabulary=["red block"], label="thing", **loose
    )
    assert every.success and len(every.instances) > 0, every.message
    assert {i.label for i in every.instances} <= {"red block", "thing"}
    assert all(i.id == "" for i in every.instances)
    assert [i.id for i in send(client, 6).instances] == before
    bad = client.call("segment_everything", vocabulary=["mug", "mug"], **loose)
    assert not bad.success and "twice" in bad.message


def test_two_cameras_share_one_sam2_model_batched(
    ros_graph: RosGraph, sam2_folder: pathlib.Path
) -> None:
    """Two cameras on one tiny SAM 2.1: one model (weights shared by both streams), frames of
    both cameras through the batched path, each camera's object tracked on its own frames."""
    node = start_node(
        ros_graph,
        namespace="/pair",
        backend="sam2",
        model=str(sam2_folder),
        device="cpu",
        score_threshold=0.0,
        cameras=["left", "right"],
        batch_cameras=True,
    )
    assert node.model is not None and node.model.batches_streams, node.load_error
    streams = [c.session.backend for c in node.cameras]
    assert all(s.loaded_model is node.model for s in streams)
    assert node.model.streams_open == 2
    batched: list[int] = []
    real_step_batch = node.model.step_batch

    def counting(items: Any) -> Any:
        batched.append(len(items))
        return real_step_batch(items)

    node.model.step_batch = counting
    clients = {
        name: Client(ros_graph, frame=scene, name=f"c_{name}", namespace="/pair", camera=name)
        for name in ("left", "right")
    }
    assert wait_for(lambda: all(c.connected() for c in clients.values()), timeout=20.0)
    send(clients["left"], 1)
    send(clients["right"], 1)
    box = RegionOfInterest(x_offset=41, y_offset=40, width=40, height=40)
    made = clients["right"].call("add_box", box=box, label="square", timeout=60.0)
    assert made.success and made.object_id == "1", made.message
    assert node.cameras[0].session.object_ids == []  # the left camera has no object
    for sec in range(2, 5):  # both cameras stream together
        for client in clients.values():
            client.image.publish(scene(sec))
        right = send(clients["right"], sec)
        assert [(i.id, i.label) for i in right.instances] == [("1", "square")]
        assert send(clients["left"], sec).instances == []
    # Frames of both cameras waiting together (whether DDS delivered them together above is
    # timing): the worker's batch path, as it runs them.
    batched.clear()
    left, right_cam = node.cameras
    done = node._process([(left, scene(10), 0.0), (right_cam, scene(10), 0.0)])
    assert batched == [2]
    assert [c.name for c, _ in done] == ["left", "right"]
    frames = {c.name: f for c, f in done}
    assert frames["left"].result.objects == ()
    assert [o.object_id for o in frames["right"].result.objects] == ["1"]
    assert all(c.stats.failed == 0 for c in node.cameras)


def test_a_standing_query_from_the_parameters_on_sam3(
    ros_graph: RosGraph, sam3_folder: pathlib.Path
) -> None:
    """`concepts` at start-up on SAM 3 (its detector on the shared backbone): instances are
    tracked with no service call, under the query's text, and keep their ids."""
    node = start_node(
        ros_graph,
        backend="sam3",
        model=str(sam3_folder),
        device="cpu",
        score_threshold=0.0,
        concepts=["red block"],
        concept_every_n=1,
        new_instance_threshold=0.01,  # random weights score low
    )
    assert node.session is not None, node.load_error
    client = Client(ros_graph, ("instances",), frame=scene)
    assert wait_for(client.connected, timeout=20.0)
    first = send(client, 1)
    assert first.instances and {i.label for i in first.instances} == {"red block"}
    ids = [i.id for i in first.instances]
    for sec in (2, 3):
        assert [i.id for i in send(client, sec).instances][: len(ids)] == ids
    listed = client.call("list_queries")
    assert listed.success and [q.label for q in listed.queries] == ["red block"]
    assert set(ids) <= set(listed.queries[0].object_ids)


def test_a_standing_query_from_the_parameters_on_the_light_path(
    ros_graph: RosGraph,
    sam2_folder: pathlib.Path,
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`concepts` at start-up on sam2 + `text_detector`: the detector's boxes are scripted
    (random weights find nothing meaningful): a person from frame 2, a second from frame 4.
    Each gets one new id on the frame it appears, labelled with the query, and keeps it."""
    from seg_ros.engine.sam.open_vocab import BoxDetection
    from seg_ros.testing.tiny_detector import save_detector

    detector = save_detector(tmp_path / "mm-grounding-dino", "mm-grounding-dino")
    node = start_node(
        ros_graph,
        backend="sam2",
        model=str(sam2_folder),
        text_detector=str(detector),
        device="cpu",
        score_threshold=0.0,
        backend_options='{"detector_threshold": 0.0}',
        concepts=["person"],
        concept_every_n=1,
    )
    session = node.session
    assert session is not None, node.load_error
    people = {2: (45.0, 40.0, 85.0, 80.0), 4: (100.0, 70.0, 150.0, 115.0)}

    def scripted(frame: np.ndarray, *_: Any, **__: Any) -> list[Any]:
        sec = int(np.argmax(frame[60, :, 0] == 220)) - 40  # `scene` draws its square at 40 + sec
        return [
            BoxDetection(np.array(box, np.float32), 0.9, "person")
            for start, box in people.items()
            if sec >= start
        ]

    monkeypatch.setattr(
        type(session.backend.detector), "__call__", lambda self, *a, **k: scripted(*a, **k)
    )
    client = Client(ros_graph, ("instances",), frame=scene)
    assert wait_for(client.connected, timeout=20.0)
    assert send(client, 1).instances == []
    ids = {sec: [(i.id, i.label) for i in send(client, sec).instances] for sec in (2, 3, 4, 5)}
    assert ids[2] == ids[3] == [("1", "person")]
    assert ids[4] == ids[5] == [("1", "person"), ("2", "person")]
