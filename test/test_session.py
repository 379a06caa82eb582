"""Session bookkeeping with the deterministic fake backend: ids, labels, stamps, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from seg_ros.engine import (
    FrameError,
    Prompt,
    PromptError,
    SegmentationSession,
    UnknownObjectError,
    UnsupportedPromptError,
)
from seg_ros.engine.backends.fake import FakeBackend, FakeConfig
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import BackendError, CapacityError, NoFrameError
from seg_ros.engine.registry import available_backends, build_backend
from seg_ros.engine.results import FrameResult, rle_decode, rle_encode

H, W = 48, 64


def frame(value: int = 0) -> np.ndarray:
    return np.full((H, W, 3), value, dtype=np.uint8)


@pytest.fixture
def session() -> SegmentationSession:
    return SegmentationSession(FakeBackend(FakeConfig(memory_frames=3)), max_objects=3)


def test_prompt_before_first_frame_is_refused(session: SegmentationSession) -> None:
    with pytest.raises(NoFrameError):
        session.add_prompt(Prompt(points=[[1, 1]]))
    with pytest.raises(NoFrameError):
        session.segment(Prompt(points=[[1, 1]]))


def test_new_objects_get_increasing_ids_and_are_tracked(session: SegmentationSession) -> None:
    session.step(frame(), stamp_ns=10)
    a = session.add_prompt(Prompt(box=[0, 0, 10, 10]), label="cup")
    b = session.add_prompt(Prompt(points=[[30, 30]]))
    assert (a.object_id, b.object_id) == ("1", "2")
    assert a.object.label == "cup" and a.object.visible
    assert a.object.bbox == (0, 0, 10, 10)
    result = session.step(frame(), stamp_ns=20)
    assert [o.object_id for o in result.objects] == ["1", "2"]
    assert result.stamp_ns == 20
    labels = result.label_image()
    assert labels.dtype == np.uint16
    assert labels[5, 5] == 1 and labels[30, 30] == 2 and labels[45, 5] == 0


def test_prompt_updates_latest_result(session: SegmentationSession) -> None:
    session.step(frame(), stamp_ns=1)
    res = session.add_prompt(Prompt(box=[0, 0, 8, 8]))
    latest = session.latest
    assert latest is not None and latest.get(res.object_id) is not None


def test_refine_keeps_id_and_label(session: SegmentationSession) -> None:
    session.step(frame())
    a = session.add_prompt(Prompt(box=[0, 0, 20, 20]), label="box")
    r = session.add_prompt(Prompt(box=[0, 0, 5, 5]), object_id=a.object_id)
    assert r.object_id == a.object_id
    assert r.object.label == "box"
    assert r.object.area == 25
    assert session.object_ids == ["1"]


def test_unknown_and_malformed_ids(session: SegmentationSession) -> None:
    session.step(frame())
    session.add_prompt(Prompt(points=[[3, 3]]))
    for bad in ["7", "01", "abc", " 1", "-1"]:
        with pytest.raises(UnknownObjectError, match="unknown object id"):
            session.add_prompt(Prompt(points=[[3, 3]]), object_id=bad)
        with pytest.raises(UnknownObjectError):
            session.remove_object(bad)
    assert session.object_ids == ["1"]


def test_failed_prompt_leaves_objects_untouched(session: SegmentationSession) -> None:
    session.step(frame())
    session.add_prompt(Prompt(box=[0, 0, 10, 10]))
    with pytest.raises(PromptError):
        session.add_prompt(Prompt(points=[[500, 3]]))
    with pytest.raises(PromptError):
        session.add_prompt(Prompt(mask=np.ones((5, 5), bool)))
    assert session.object_ids == ["1"]
    obj = session.step(frame()).get("1")
    assert obj is not None and obj.area == 100


def test_capacity(session: SegmentationSession) -> None:
    session.step(frame())
    for _ in range(3):
        session.add_prompt(Prompt(points=[[3, 3]]))
    with pytest.raises(CapacityError):
        session.add_prompt(Prompt(points=[[3, 3]]))
    session.remove_object("2")
    assert session.add_prompt(Prompt(points=[[3, 3]])).object_id == "4"
    assert session.object_ids == ["1", "3", "4"]


def test_remove_and_reset(session: SegmentationSession) -> None:
    session.step(frame())
    session.add_prompt(Prompt(points=[[3, 3]]))
    session.add_prompt(Prompt(points=[[30, 30]]))
    session.remove_object("1")
    assert [o.object_id for o in session.step(frame()).objects] == ["2"]
    session.reset()
    assert session.object_ids == []
    assert session.latest is None
    session.step(frame())
    # Ids are not reused after a reset: "1" and "2" existed before it.
    assert session.add_prompt(Prompt(points=[[3, 3]])).object_id == "3"


def test_stamps_in_memory_only(session: SegmentationSession) -> None:
    for stamp in (100, 200, 300, 400):
        session.step(frame(), stamp_ns=stamp)
    res = session.add_prompt(Prompt(points=[[3, 3]]), stamp_ns=200)
    assert res.stamp_ns == 200 and res.frame_index == 1
    with pytest.raises(PromptError, match="no frame with stamp 100"):
        session.add_prompt(Prompt(points=[[3, 3]]), stamp_ns=100)
    with pytest.raises(PromptError, match="no frame with stamp"):
        session.add_prompt(Prompt(points=[[3, 3]]), stamp_ns=10**18)


def test_bad_frames_are_refused_without_advancing(session: SegmentationSession) -> None:
    session.step(frame())
    session.add_prompt(Prompt(points=[[3, 3]]))
    for bad in [
        np.zeros((H, W), np.uint8),
        np.zeros((H, W, 4), np.uint8),
        np.zeros((H, W, 3), np.float32),
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((H + 2, W, 3), np.uint8),  # size change while objects are tracked
    ]:
        with pytest.raises(FrameError):
            session.step(bad)
    assert session.frame_index == 0
    assert session.object_ids == ["1"]


def test_size_change_without_objects_starts_a_new_stream(session: SegmentationSession) -> None:
    session.step(frame())
    result = session.step(np.zeros((H * 2, W * 2, 3), np.uint8))
    assert (result.height, result.width) == (H * 2, W * 2)


def test_backend_failure_drops_the_frame_and_tracking_resumes() -> None:
    session = SegmentationSession(build_backend(BackendConfig("fake", options={"fail_every": 2})))
    session.step(frame())
    session.add_prompt(Prompt(points=[[3, 3]]))
    with pytest.raises(BackendError):
        session.step(frame())
    assert session.frame_index == 0
    assert session.step(frame()).get("1") is not None


def test_text_on_a_backend_without_text(session: SegmentationSession) -> None:
    session.step(frame())
    with pytest.raises(UnsupportedPromptError, match="sam3"):
        session.add_text("cup")
    with pytest.raises(UnsupportedPromptError, match="sam3"):
        session.segment(Prompt(text="cup"))
    with pytest.raises(UnsupportedPromptError, match="sam3"):
        session.add_prompt(Prompt(points=[[2, 2]], text="cup"))
    assert session.object_ids == []


def test_score_threshold_hides_low_scores() -> None:
    session = SegmentationSession(FakeBackend(), score_threshold=1.0)
    session.step(frame())
    assert session.add_prompt(Prompt(points=[[3, 3]])).object.visible  # fake scores 1.0
    with pytest.raises(PromptError):
        session.segment(Prompt(points=[[3, 3]]), score_threshold=float("nan"))


def test_one_shot_segment_does_not_touch_tracking(session: SegmentationSession) -> None:
    session.step(frame())
    session.add_prompt(Prompt(points=[[3, 3]]))
    out = session.segment(Prompt(box=[10, 10, 20, 20]), image=frame(5), label="thing")
    assert len(out) == 1 and out[0].area == 100 and out[0].label == "thing"
    assert out[0].object_id == ""
    assert session.object_ids == ["1"]
    out = session.segment(Prompt(points=[[3, 3]]), multimask=True)
    assert len(out) == 1


def test_multimask_candidates(session: SegmentationSession) -> None:
    session.step(frame())
    res = session.add_prompt(Prompt(points=[[20, 20]]), multimask=True)
    scores = [c.score for c in res.object.candidates]
    assert len(scores) >= 2 and scores == sorted(scores, reverse=True)


def test_concurrent_prompts_and_frames_keep_ids_unique() -> None:
    session = SegmentationSession(FakeBackend(), max_objects=200)
    session.step(frame())
    ids: list[str] = []
    errors: list[Exception] = []

    def add() -> None:
        try:
            for _ in range(20):
                ids.append(session.add_prompt(Prompt(points=[[3, 3]])).object_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def stream() -> None:
        for _ in range(20):
            session.step(frame())

    threads = [threading.Thread(target=add) for _ in range(4)] + [threading.Thread(target=stream)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(ids) == 80 and len(set(ids)) == 80
    assert len(session.step(frame()).objects) == 80


def test_closed_session_refuses_work(session: SegmentationSession) -> None:
    session.close()
    session.close()  # idempotent
    with pytest.raises(FrameError, match="closed"):
        session.step(frame())


def test_registry() -> None:
    assert {"classic", "sam2", "sam3", "fake"} <= set(available_backends())
    backend = build_backend(BackendConfig(backend="fake", options={"delay_s": 0.0}))
    assert backend.name == "fake"
    with pytest.raises(ValueError, match="unknown backend"):
        build_backend(BackendConfig(backend="nope"))
    with pytest.raises(ValueError, match="unknown fake backend options"):
        build_backend(BackendConfig(backend="fake", options={"bogus": 1}))
    with pytest.raises(ValueError):
        BackendConfig(device="tpu")
    with pytest.raises(ValueError):
        BackendConfig(input_size=100)


def test_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    for first in (False, True):
        mask = rng.random((7, 9)) > 0.5
        mask[0, 0] = first
        assert np.array_equal(rle_decode(rle_encode(mask), 7, 9), mask)


def test_label_image_higher_score_wins() -> None:
    from seg_ros.engine.results import ObjectMask

    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:] = True
    result = FrameResult(
        0,
        0,
        4,
        4,
        (
            ObjectMask("1", 1, "", 0.9, True, a),
            ObjectMask("2", 2, "", 0.5, True, b),
            ObjectMask("3", 3, "", 1.0, False, np.zeros((4, 4), bool)),
        ),
    )
    assert result.label_image()[:, 0].tolist() == [1, 1, 2, 2]


def test_a_failed_creation_uses_up_no_id_and_leaves_nothing_behind() -> None:
    from seg_ros.testing.faults import FaultyBackend

    inner = FakeBackend(FakeConfig(memory_frames=3))
    backend = FaultyBackend(inner)
    session = SegmentationSession(backend, max_objects=3)
    session.step(frame())
    assert session.add_prompt(Prompt(points=[[3, 3]])).object_id == "1"
    backend.fail_next("add_prompt")
    with pytest.raises(BackendError):
        session.add_prompt(Prompt(points=[[30, 30]]))
    assert session.object_ids == ["1"]
    assert set(inner._masks) == {1}  # the backend holds nothing for the failed object
    # The id the failed request would have had goes to the next object.
    assert session.add_prompt(Prompt(points=[[30, 30]])).object_id == "2"
