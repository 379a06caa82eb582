"""Standing queries: the association policy on hand-made masks, then the session with the
scripted fake detector (seg_ros.testing.concept_script), then bounded memory over 1,000+ frames.
"""

from __future__ import annotations

import resource

import numpy as np
import pytest

from seg_ros.engine import Prompt, PromptError, SegmentationSession, UnknownObjectError
from seg_ros.engine.backends.fake import FakeBackend, FakeConfig, ScriptedFakeBackend
from seg_ros.engine.concepts import (
    Detection,
    Member,
    QueryOptions,
    StandingQuery,
    associate,
    mask_iou,
    relative_distance,
    split_phrases,
)
from seg_ros.engine.errors import UnsupportedPromptError
from seg_ros.testing import concept_script as scene
from seg_ros.testing.faults import FaultyBackend

H, W = 100, 100
OPTIONS = QueryOptions(every_n=1)


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


# ---------------------------------------------------------------------------- the policy
def test_geometry_helpers() -> None:
    a, b = box(0, 0, 10, 10), box(5, 0, 15, 10)
    assert mask_iou(a, b) == pytest.approx(50 / 150)
    assert mask_iou(a, np.zeros_like(a)) == 0.0
    # Centroids 10 px apart; the boxes' diagonals are hypot(10, 10).
    assert relative_distance(a, box(10, 0, 20, 10)) == pytest.approx(10 / np.hypot(10, 10))
    assert relative_distance(a, np.zeros_like(a)) == float("inf")


def test_strong_unmatched_detections_are_new_weak_ones_are_not() -> None:
    dets = [Detection(box(0, 0, 10, 10), 0.9), Detection(box(50, 50, 60, 60), 0.5)]
    out = associate(dets, {}, [], OPTIONS)
    assert (out.new, out.weak, out.confirmed) == ((0,), (1,), {})


def test_a_detection_on_an_object_confirms_it_and_makes_nothing_new() -> None:
    dets = [Detection(box(1, 1, 11, 11), 0.9)]
    out = associate(dets, {7: (box(0, 0, 10, 10), True)}, [], OPTIONS)
    assert out.confirmed == {7: 0} and out.new == () and out.refound == ()


def test_two_overlapping_instances_get_two_objects() -> None:
    # A newcomer overlapping a tracked object by IoU 0.2: Sam3Video's many-to-one rule
    # (new only when IoU < 0.1 with every track) would refuse it; one-to-one takes it.
    tracked = box(0, 0, 20, 40)
    dets = [Detection(box(0, 0, 20, 40), 0.9), Detection(box(12, 0, 32, 40), 0.8)]
    assert 0.1 < mask_iou(dets[1].mask, tracked) < 0.5
    out = associate(dets, {1: (tracked, True)}, [], OPTIONS)
    assert out.confirmed == {1: 0} and out.new == (1,)


def test_a_duplicate_of_any_tracked_object_never_makes_a_second_id() -> None:
    clicked = box(40, 40, 60, 60)  # an object made by a click, not by the query
    dets = [Detection(box(41, 41, 61, 61), 0.9)]
    out = associate(dets, {}, [clicked], OPTIONS)
    assert out.new == () and out.duplicates == (0,)
    # ... nor two new objects from two detections of one instance on the same frame.
    twice = [Detection(box(0, 0, 10, 10), 0.9), Detection(box(0, 0, 10, 11), 0.8)]
    out = associate(twice, {}, [], OPTIONS)
    assert out.new == (0,) and out.duplicates == (1,)
    # A second detection of a query object that its better detection already confirmed.
    mine = box(0, 0, 10, 10)
    out = associate(twice, {3: (mine, True)}, [], OPTIONS)
    assert out.confirmed == {3: 0} and out.duplicates == (1,) and out.new == ()


def test_a_lost_object_is_refound_by_iou_with_its_last_mask() -> None:
    last = box(0, 0, 20, 20)
    dets = [Detection(box(10, 0, 30, 20), 0.9)]  # IoU 1/3 with the last mask
    out = associate(dets, {4: (last, False)}, [], OPTIONS)
    assert out.confirmed == {4: 0} and out.refound == (4,) and out.new == ()


def test_a_lost_object_is_refound_by_position_only_when_near() -> None:
    last = box(0, 0, 20, 20)  # diagonal 28.3 px
    near = [Detection(box(22, 0, 42, 20), 0.9)]  # no overlap, centroids 22 px apart: 0.78
    loose = QueryOptions(every_n=1, match_distance=1.0)
    out = associate(near, {4: (last, False)}, [], loose)
    assert out.refound == (4,) and out.new == ()
    out = associate(near, {4: (last, False)}, [], OPTIONS)  # 0.78 > 0.5: someone else
    assert out.refound == () and out.new == (0,)
    # A visible object is matched by IoU only: a nearby newcomer is not taken for it.
    out = associate(near, {4: (last, True)}, [], loose)
    assert out.confirmed == {} and out.new == (0,)


def test_new_objects_per_frame_can_be_capped() -> None:
    dets = [Detection(box(20 * i, 0, 20 * i + 10, 10), 0.9) for i in range(4)]
    out = associate(dets, {}, [], QueryOptions(max_new_per_frame=2))
    assert out.new == (0, 1) and out.weak == (2, 3)


def test_timeouts_in_frames_and_seconds() -> None:
    query = StandingQuery("q1", ("cup",), "cup", QueryOptions(timeout_frames=3), 0.0, 0)
    member = Member(1, box(0, 0, 5, 5), last_seen_frame=10, last_seen_ns=0, lost=True)
    assert not query.expired(member, 13, 0) and query.expired(member, 14, 0)
    member.lost = False  # a visible object never times out
    assert not query.expired(member, 100, 0)
    timed = StandingQuery("q2", ("cup",), "cup", QueryOptions(timeout_s=0.5), 0.0, 0)
    member = Member(1, box(0, 0, 5, 5), 10, last_seen_ns=1_000_000_000, lost=True)
    assert not timed.expired(member, 1000, 1_500_000_000)
    assert timed.expired(member, 11, 1_500_000_001)
    # A stream without stamps falls back to frames.
    member.last_seen_ns = 0
    assert timed.expired(member, 41, 0) and not timed.expired(member, 40, 0)


def test_options_and_phrases_are_validated() -> None:
    for bad in (
        {"every_n": 0},
        {"new_instance_threshold": 1.5},
        {"match_iou": float("nan")},
        {"timeout_frames": 0},
        {"timeout_s": -1.0},
        {"max_new_per_frame": -1},
    ):
        with pytest.raises(PromptError):
            QueryOptions(**bad)  # type: ignore[arg-type]
    assert split_phrases(" red  mug ; person;person ") == ("red mug", "person")
    assert split_phrases(["a cup", "a, b"]) == ("a cup", "a, b")
    for bad_text in ("", " ; ", "x" * 300):
        with pytest.raises(PromptError):
            split_phrases(bad_text)


# ---------------------------------------------------------------------------- the session
def scripted(script: list[dict] | None = None, **kwargs: object) -> ScriptedFakeBackend:
    return ScriptedFakeBackend(FakeConfig(script=script or scene.SCRIPT, **kwargs))  # type: ignore[arg-type]


def image() -> np.ndarray:
    return np.zeros((scene.HEIGHT, scene.WIDTH, 3), dtype=np.uint8)


def scene_options(**kwargs: object) -> QueryOptions:
    return QueryOptions(every_n=1, timeout_frames=scene.TIMEOUT_FRAMES, **kwargs)  # type: ignore[arg-type]


def state(session: SegmentationSession) -> dict[str, tuple[str, bool]]:
    assert session.latest is not None
    return {o.object_id: (o.label, o.visible) for o in session.latest.objects}


def test_the_scripted_scene_gives_exactly_the_policys_ids_additions_and_drops() -> None:
    session = SegmentationSession(scripted(), max_objects=8)
    added = session.add_query(scene.TEXT, scene_options())  # before the first frame
    assert added.query_id == "q1" and added.objects == []
    for frame in range(scene.FRAMES):
        result = session.step(image(), stamp_ns=(frame + 1) * scene.STAMP_STEP_NS)
        if frame == scene.USER_FRAME:
            session.add_prompt(Prompt(box=list(scene.USER_BOX)), label=scene.USER_LABEL)
        assert state(session) == scene.EXPECTED[frame], f"frame {frame}"
        for obj in result.objects:
            assert obj.query == ("" if obj.label == scene.USER_LABEL else "q1")
    (info,) = session.queries
    assert info.object_ids == ("1", "3", "5") and info.lost_ids == ()
    stats = info.stats
    assert (stats.added, stats.refound, stats.dropped, stats.duplicates) == (4, 1, 1, 2)
    assert stats.detections_run == scene.FRAMES and stats.errors == 0
    # The re-found object follows its instance where it came back (x 75..105).
    obj = session.latest.get("3") if session.latest else None
    assert obj is not None and obj.bbox == (75, 10, 105, 60)


def test_the_same_scene_with_a_timeout_in_seconds() -> None:
    session = SegmentationSession(scripted(), max_objects=8)
    options = QueryOptions(every_n=1, timeout_s=scene.TIMEOUT_S, timeout_frames=1000)
    session.add_query(scene.TEXT, options)
    for frame in range(scene.FRAMES):
        session.step(image(), stamp_ns=(frame + 1) * scene.STAMP_STEP_NS)
        if frame == scene.USER_FRAME:
            session.add_prompt(Prompt(box=list(scene.USER_BOX)), label=scene.USER_LABEL)
        assert state(session) == scene.EXPECTED[frame], f"frame {frame}"


def test_detection_runs_every_n_frames_and_when_an_object_is_lost() -> None:
    script = [
        {"text": "cup", "box": [0, 0, 10, 10], "frames": [0, 5]},
        {"text": "cup", "box": [50, 50, 60, 60], "frames": [1, -1]},
    ]
    backend = scripted(script)
    session = SegmentationSession(backend)
    session.step(image())  # frame 0
    query = session.add_query("cup", QueryOptions(every_n=4))
    assert [o.object_id for o in query.objects] == ["1"]  # found at once on the latest frame
    detects = []
    for _ in range(1, 9):
        session.step(image())
        detects.append(backend.detects)
    # Frames 1..8: due on 4 and 8 (every 4th from frame 0), and on 5, where cup 1 is lost.
    assert np.diff([1, *detects]).tolist() == [0, 0, 0, 1, 1, 0, 0, 1]
    assert session.latest is not None
    # The second cup, there since frame 1, was only picked up on frame 4.
    assert [o.object_id for o in session.latest.objects] == ["1", "2"]


def test_kept_lost_objects_stay_and_ids_do_not_move() -> None:
    script = [{"text": "cup", "box": [0, 0, 10, 10], "frames": [0, 2]}]
    session = SegmentationSession(scripted(script))
    session.add_query("cup", QueryOptions(every_n=1, timeout_frames=2, drop_lost=False))
    for _ in range(10):
        result = session.step(image())
    assert [(o.object_id, o.visible) for o in result.objects] == [("1", False)]
    assert session.queries[0].lost_ids == ("1",)


def test_two_queries_and_a_click_side_by_side() -> None:
    session = SegmentationSession(scripted(), max_objects=8)
    session.step(image())
    clicked = session.add_prompt(Prompt(box=[10, 10, 40, 60]), label="mine")  # on A
    people = session.add_query("person", scene_options())
    cups = session.add_query("cup; mug", scene_options(), label="cups")
    # A is already the click's object: the query does not make a second id for it.
    assert [o.object_id for o in people.objects] == []
    assert [(o.label, o.query) for o in cups.objects] == [("cups", "q2")]
    assert [q.query_id for q in session.queries] == ["q1", "q2"]
    assert session.queries[1].phrases == ("cup", "mug")
    result = session.step(image())
    assert {o.object_id: o.query for o in result.objects} == {
        clicked.object_id: "",
        cups.objects[0].object_id: "q2",
    }


def test_remove_query_keeps_or_drops_its_objects() -> None:
    session = SegmentationSession(scripted(), max_objects=8)
    session.step(image())
    first = session.add_query("person", scene_options())
    cups = session.add_query("cup", scene_options())
    assert session.remove_query(first.query_id, keep_objects=True) == ["1"]
    assert session.remove_query(cups.query_id, keep_objects=False) == ["2"]
    assert session.object_ids == ["1"] and session.queries == []
    with pytest.raises(UnknownObjectError, match="unknown query id 'q1'"):
        session.remove_query("q1")
    # Without its query the kept object is an ordinary one: nothing new is added for 'person'.
    for _ in range(5):
        session.step(image())
    assert session.object_ids == ["1"]


def test_capacity_and_refusals() -> None:
    session = SegmentationSession(scripted(), max_objects=2)
    with pytest.raises(UnsupportedPromptError, match="text detector"):
        SegmentationSession(FakeBackend()).add_query("person")
    session.step(image())
    with pytest.raises(PromptError):
        session.add_query("person", scene_options(), score_threshold=2.0)
    assert session.queries == []
    session.add_query("person", scene_options())
    session.add_query("cup", scene_options())
    for _ in range(5):
        session.step(image())  # B on frame 3 finds no room: counted, not raised
    assert len(session.object_ids) == 2
    assert session.queries[0].stats.skipped_capacity >= 1


def test_remove_object_and_reset_with_a_standing_query() -> None:
    script = [{"text": "cup", "box": [0, 0, 10, 10]}]
    session = SegmentationSession(scripted(script))
    session.step(image())
    session.add_query("cup", QueryOptions(every_n=1))
    session.remove_object("1")
    assert session.queries[0].object_ids == ()
    session.step(image())  # the cup is still there: a new id (a removed one is not reused)
    assert session.object_ids == ["2"]
    session.reset()
    assert session.object_ids == [] and session.queries[0].object_ids == ()
    session.step(image())  # the query stays and finds it again
    assert session.object_ids == ["3"]


def test_a_failing_detector_is_counted_and_the_frame_still_tracked() -> None:
    faulty = FaultyBackend(scripted())
    session = SegmentationSession(faulty, max_objects=8)
    session.step(image())
    session.add_query("person", scene_options())
    faulty.fail_next("detect")
    result = session.step(image())
    assert [o.object_id for o in result.objects] == ["1"] and result.objects[0].visible
    stats = session.queries[0].stats
    assert stats.errors == 1 and "detect" in stats.last_error


# ---------------------------------------------------------------------------- memory
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:  # resident pages now (ru_maxrss is only the peak)
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def coming_and_going(frames: int, period: int = 10, stay: int = 25) -> list[dict]:
    """A new 'person' every `period` frames at one of 6 places, each present `stay` frames."""
    places = [(10 + 25 * (i % 6), 10 + 40 * (i % 2)) for i in range(6)]
    script = []
    for k in range(frames // period):
        x, y = places[k % 6]
        box = [x, y, x + 20, y + 30]
        script.append({"text": "person", "box": box, "frames": [k * period, k * period + stay]})
    return script


@pytest.mark.slow
def test_memory_stays_bounded_over_1200_frames_while_instances_come_and_go() -> None:
    frames = 1200
    backend = scripted(coming_and_going(frames), memory_frames=4)
    session = SegmentationSession(backend, max_objects=16)
    session.add_query("person", QueryOptions(every_n=2, timeout_frames=10))
    counts, rss = [], []
    for frame in range(frames):
        session.step(image(), stamp_ns=frame + 1)
        counts.append(len(session.object_ids))
        if frame in (200, frames - 1):
            rss.append(_rss_mb())
        assert backend.stats()["frames_in_memory"] <= 4
    stats = session.queries[0].stats
    # 120 instances came and went: all of them added, and all but those still there dropped.
    assert stats.added >= 100 and stats.dropped >= stats.added - 6
    assert max(counts) <= 6  # at most 3 present at once + those waiting out their timeout
    assert len(session.queries[0].object_ids) == counts[-1]
    assert rss[1] - rss[0] < 20.0, rss  # MB: flat (masks of dropped objects are freed)
