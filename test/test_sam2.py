"""The `sam2` backend on tiny random-weight SAM 2.1 and EdgeTAM models (CPU, no download).

What is proved here:
- the bounded streaming tracker gives bit-identical mask logits, object score logits and object
  pointers to the library's own unbounded video sessions, over 40 frames (longer than the 6-frame
  memory window and the 15-frame pointer window), with prompts added, refined and removed
  mid-stream, a mask prompt and a prompt on a past frame;
- memory stays bounded (counts of frames / outputs held) and RSS stays flat over 320 frames;
- a prompt on a processed frame runs no image encoder; one encoder pass serves every object;
- visibility follows the object score, a lost object keeps its id and comes back;
- loading refuses missing / truncated / corrupt / wrong-architecture checkpoints clearly;
- the SegmentationSession API works end to end on this backend; seg-ros-download's checks.
"""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import pytest
import torch

from seg_ros.engine.backends.sam2 import Sam2Backend
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import ModelLoadError, PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.sam import adapter as lib
from seg_ros.engine.sam.tracker import StreamingVideoTracker, session_class_for
from seg_ros.engine.sam.transforms import scribble_points
from seg_ros.engine.session import SegmentationSession
from seg_ros.testing.tiny_models import (
    TINY_IMAGE_SIZE,
    bias_object_scores,
    build_model,
    save_model,
    save_tiny,
)

KINDS = ("sam2", "edgetam")
S = TINY_IMAGE_SIZE
H, W = 96, 160  # source frames of another size and aspect than the model's square input


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Both tiny models saved with safetensors, as seg-ros-download would leave them."""
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny(kind, root / kind) for kind in KINDS}


def build(folder: pathlib.Path, **kwargs: Any) -> Sam2Backend:
    backend = build_backend(
        BackendConfig(backend="sam2", model=str(folder), device="cpu", **kwargs)
    )
    assert isinstance(backend, Sam2Backend)
    return backend


def frames(count: int, seed: int = 1) -> torch.Tensor:
    """`count` preprocessed-looking input frames (1, 3, S, S)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 1, 3, S, S, generator=generator)


def images(count: int, seed: int = 2) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


# ---------------------------------------------------------------------- reference equality
class Library:
    """transformers' own unbounded streaming sessions, driven through its public API only.

    As a user streams: `model(session, frame_idx=t, frame=pixels)` for each frame; a prompt is
    `processor.add_inputs_to_inference_session` on the frame it names (more clicks on a frame
    add to the earlier ones, `clear_old_inputs=False`; a box restarts them), then the same
    forward on that frame. Nothing in the sessions is edited. `per_object`: one session per
    object (the default reference); else ONE session holding every object. The library cannot
    remove an object: a removed one stays in the single session and is no longer compared.
    """

    def __init__(self, model: Any, *, per_object: bool) -> None:
        from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

        self.model = model
        self.per_object = per_object
        size = {"height": S, "width": S}
        self.processor = Sam2VideoProcessor(
            image_processor=Sam2ImageProcessor(size=size),
            video_processor=Sam2VideoVideoProcessor(size=size),
        )
        self.sessions: dict[int, Any] = {}
        self.frames: dict[int, torch.Tensor] = {}

    def session(self, obj: int) -> Any:
        key = obj if self.per_object else 0
        if key not in self.sessions:
            self.sessions[key] = session_class_for(self.model)(
                inference_device="cpu", dtype=torch.float32
            )
        return self.sessions[key]

    def _answer(self, session: Any, out: Any, obj: int, frame: int) -> Answer:
        i = out.object_ids.index(obj)
        outputs = session.output_dict_per_obj[session.obj_id_to_idx(obj)]
        stored = outputs["cond_frame_outputs"].get(
            frame, outputs["non_cond_frame_outputs"].get(frame)
        )
        return Answer(
            out.pred_masks[i, 0],
            float(out.object_score_logits.reshape(-1)[i]),
            stored["object_pointer"].reshape(-1),
        )

    def step(self, t: int, frame: torch.Tensor, objects: set[int]) -> dict[int, Answer]:
        self.frames[t] = frame
        answers: dict[int, Answer] = {}
        done: set[int] = set()
        for obj in sorted(objects):
            session = self.session(obj)
            if id(session) in done:
                continue
            done.add(id(session))
            out = self.model(session, frame_idx=t, frame=frame)
            for other in out.object_ids:
                if other in objects:
                    answers[other] = self._answer(session, out, other, t)
        return answers

    def prompt(self, obj: int, frame: int, prompt: Event) -> Answer:
        session = self.session(obj)
        kwargs: dict[str, Any] = {"original_size": (S, S)}
        if prompt.mask is not None:
            kwargs["input_masks"] = prompt.mask
        else:
            if prompt.points:
                kwargs["input_points"] = [[prompt.points]]
                kwargs["input_labels"] = [[prompt.labels]]
            if prompt.box is not None:
                kwargs["input_boxes"] = [[prompt.box]]
            kwargs["clear_old_inputs"] = prompt.box is not None
        self.processor.add_inputs_to_inference_session(session, frame, obj, **kwargs)
        out = self.model(session, frame_idx=frame, frame=self.frames[frame])
        return self._answer(session, out, obj, frame)


@dataclass(frozen=True)
class Answer:
    mask_logits: torch.Tensor
    score: float
    pointer: torch.Tensor


@dataclass(frozen=True)
class Event:
    """After frame t's step: a prompt for `obj` on frame `at`, or its removal (`remove`)."""

    obj: int
    at: int = -1
    points: list[list[float]] = dc_field(default_factory=list)
    labels: list[int] = dc_field(default_factory=list)
    box: list[float] | None = None
    mask: torch.Tensor | None = None
    remove: bool = False


def _blob() -> torch.Tensor:
    mask = torch.zeros(S, S)
    mask[70:110, 20:60] = 1.0
    return mask


#: 40 frames (memory window 6, pointer window 15): objects created on frames 0 (points, box),
#: 5, 8 (mask) and 20 (from frame 22: a past frame); refinements on an initial frame (0),
#: corrections on tracked frames (12, twice; 25 = the oldest frame a prompt may name at 30, which
#: attends to the oldest memory the tracker keeps; 33 with a box), a removal (3, after 20).
SCENARIO: dict[int, list[Event]] = {
    0: [
        Event(1, 0, [[40.0, 50.0]], [1]),
        Event(2, 0, box=[70.0, 15.0, 120.0, 60.0]),
        Event(1, 0, [[20.0, 100.0]], [1]),
    ],
    5: [Event(3, 5, [[60.0, 60.0], [70.0, 75.0]], [1, 0])],
    8: [Event(4, 8, mask=_blob())],
    12: [Event(1, 12, [[45.0, 52.0]], [0]), Event(1, 12, [[30.0, 90.0]], [1])],
    20: [Event(3, remove=True)],
    22: [Event(5, 20, [[100.0, 100.0]], [1])],
    30: [Event(1, 25, [[50.0, 60.0]], [1])],
    33: [Event(2, 33, [[90.0, 40.0]], [1], box=[60.0, 10.0, 125.0, 70.0])],
}


@dataclass
class Comparison:
    compared: int = 0
    equal: int = 0
    present: int = 0
    absent: int = 0
    worst: float = 0.0
    first_difference: tuple[int, int] | None = None


def compare(
    kind: str,
    tracker: StreamingVideoTracker,
    library: Library,
    scenario: dict[int, list[Event]],
    count: int,
    *,
    seed: int = 1,
) -> Comparison:
    """Run `scenario` through both; every mask's logits, object score and pointer compared."""
    video = frames(count, seed=seed)
    alive: set[int] = set()
    result = Comparison()

    def check(t: int, obj: int, ours: Any, theirs: Answer) -> None:
        same = (
            torch.equal(ours.mask_logits, theirs.mask_logits)
            and torch.equal(ours.object_pointer, theirs.pointer)
            and ours.object_score_logit == theirs.score
        )
        result.compared += 1
        result.equal += same
        result.present += theirs.score > 0
        result.absent += theirs.score <= 0
        worst = float((ours.mask_logits - theirs.mask_logits).abs().max())
        result.worst = max(result.worst, worst)
        if not same and result.first_difference is None:
            result.first_difference = (t, obj)

    for t in range(count):
        ours = tracker.step(t, video[t])
        assert set(ours) == alive, (kind, t)
        theirs = library.step(t, video[t], alive)
        for obj in sorted(alive):
            check(t, obj, ours[obj], theirs[obj])
        encoder_calls = tracker.counters["encoder_calls"]
        past = set()
        for event in scenario.get(t, []):
            if event.remove:
                tracker.remove_object(event.obj)
                alive.discard(event.obj)
                continue
            out = tracker.add_prompt(
                event.at,
                event.obj,
                points=event.points,
                labels=event.labels,
                box=event.box,
                mask=event.mask,
            )
            check(t, event.obj, out, library.prompt(event.obj, event.at, event))
            alive.add(event.obj)
            if event.at != t:
                past.add(event.at)
        # Prompts re-use the frame's features; only a past frame is re-encoded (once).
        assert tracker.counters["encoder_calls"] == encoder_calls + len(past)
    return result


def tiny_video_model(kind: str) -> Any:
    # init_range 0.2: logits of order 10; SAM 2.1's object-score bias -3: objects absent on
    # about one frame in six (EdgeTAM's random scores stay positive whatever the bias).
    return build_model(kind, seed=0, object_bias=-3.0, init_range=0.2)


def assert_not_vacuous(
    result: Comparison, tracker: StreamingVideoTracker, count: int, minimum: int = 150
) -> None:
    assert result.compared >= minimum and result.present >= result.compared // 2, result
    if not tracker.lib.has_perceiver:  # SAM 2.1: objects come and go
        assert result.absent >= 10, result
    stats = tracker.stats()
    assert stats["frames_in_memory"] == tracker.memory.prompt_frames < count
    assert stats["max_pointer_outputs_per_object"] < count - 1  # the library keeps count - 1


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_equal_one_library_session_per_object(kind: str) -> None:
    """The reference: per-object library sessions, bit for bit, past every window."""
    model = tiny_video_model(kind)
    tracker = StreamingVideoTracker(model, batch_objects=False)  # the shipped defaults otherwise
    library = Library(model, per_object=True)
    result = compare(kind, tracker, library, SCENARIO, 40)
    assert result.equal == result.compared, result
    assert_not_vacuous(result, tracker, 40)
    # The library's sessions hold every tracked frame; the tracker only its windows.
    held = max(
        len(s.output_dict_per_obj[0]["non_cond_frame_outputs"]) for s in library.sessions.values()
    )
    stats = tracker.stats()
    assert held == 40 - 1 > stats["max_pointer_outputs_per_object"]
    assert (
        stats["max_full_outputs_per_object"]
        <= tracker.memory.prompt_frames + tracker.memory.memory_frames
    )
    # Corrections stay ordinary tracked frames (the library's semantics): object 1 keeps frame
    # 0 only as a prompted frame; its corrections on 12 and 25 leave memory with the windows.
    assert tracker.conditioning_frames(1) == [0]
    assert 12 not in tracker.tracked_frames(1)  # older than the pointer window
    assert 25 in tracker.tracked_frames(1) and 25 not in tracker.tracked_frames(1, spatial=True)


@pytest.mark.parametrize("kind", KINDS)
def test_one_shared_library_session(kind: str) -> None:
    """ONE library session for every object: `independent_objects=False` equals it exactly.

    SAM 2.1's session encodes the memory of a frame's objects in one batch, with one
    is_mask_from_pts flag (a prompt on one object binarises every object's memory there), so
    the defaults differ from it; EdgeTAM's encodes each object alone with its own flag, so for
    EdgeTAM the defaults equal it too.
    """
    model = tiny_video_model(kind)
    scenario = SCENARIO
    if kind == "edgetam":
        # transformers 5.23's EdgeTAM session fails on a mask prompt while it holds other
        # objects (its forward concatenates object scores of different ranks): no mask here.
        scenario = {t: events for t, events in SCENARIO.items() if t != 8}
    shared = StreamingVideoTracker(model, batch_objects=False, independent_objects=False)
    result = compare(kind, shared, Library(model, per_object=False), scenario, 40)
    assert result.equal == result.compared, result
    assert_not_vacuous(result, shared, 40, minimum=115)
    default = StreamingVideoTracker(model, batch_objects=False)
    result = compare(kind, default, Library(model, per_object=False), scenario, 40)
    if kind == "edgetam":
        assert result.equal == result.compared, result
    else:
        # First difference: frame 2, which reads frame 1's memory, encoded by the library for
        # both objects in one batch (which rounds differently from one-object calls); from
        # frame 5 on (object 3's prompt) also from binarised masks. Random weights amplify it.
        assert result.first_difference == (2, 1), result
        assert result.equal < result.compared and result.worst > 1e-4, result


class LibraryCorrectionsAsConditioning(Library):
    """The reference of `corrections_as_conditioning=True` (SAM 2's
    add_all_frames_to_correct_as_cond=True), which transformers has no switch for: the plain
    library computes every answer, and the output of a correction is filed where that option
    files it, as a prompted frame (the one difference the option makes; nothing is recomputed).
    """

    def prompt(self, obj: int, frame: int, prompt: Event) -> Answer:
        session = self.session(obj)
        known = obj in session.obj_ids
        correction = known and frame in session.frames_tracked_per_obj[session.obj_id_to_idx(obj)]
        if correction:
            # A second correction on that frame replaces the first (which must not feed it).
            outputs = session.output_dict_per_obj[session.obj_id_to_idx(obj)]
            outputs["cond_frame_outputs"].pop(frame, None)
        answer = super().prompt(obj, frame, prompt)
        if correction:
            outputs["cond_frame_outputs"][frame] = outputs["non_cond_frame_outputs"].pop(frame)
        return answer


@pytest.mark.parametrize("kind", KINDS)
def test_corrections_as_conditioning_option(kind: str) -> None:
    model = tiny_video_model(kind)
    tracker = StreamingVideoTracker(
        model, batch_objects=False, corrections_as_conditioning=True, max_conditioning_frames=8
    )
    result = compare(
        kind, tracker, LibraryCorrectionsAsConditioning(model, per_object=True), SCENARIO, 40
    )
    assert result.equal == result.compared, result
    assert_not_vacuous(result, tracker, 40)
    assert tracker.conditioning_frames(1) == [0, 12, 25]  # kept past every window
    assert tracker.conditioning_frames(2) == [0, 33]
    # Against the plain library it departs from the first frame after the first correction.
    other = StreamingVideoTracker(model, batch_objects=False, corrections_as_conditioning=True)
    plain = compare(kind, other, Library(model, per_object=True), SCENARIO, 40)
    assert plain.first_difference == (13, 1) and plain.equal < plain.compared, plain


#: One object given more prompted frames than max_conditioning_frames = 2, with the library's
#: default semantics: created on past frame 5 (at frame 10), then prompted on frames 6 and 8
#: (past, never tracked) and 10, each a conditioning frame.
MANY_PROMPTED: dict[int, list[Event]] = {
    10: [
        Event(1, 5, [[40.0, 50.0]], [1]),
        Event(1, 6, [[42.0, 52.0]], [1]),
        Event(1, 8, [[44.0, 54.0]], [1]),
        Event(1, 10, [[46.0, 56.0]], [1]),
    ],
    16: [Event(1, 16, [[60.0, 40.0]], [0])],  # a correction: not a prompted frame
}


@pytest.mark.parametrize("kind", KINDS)
def test_max_conditioning_frames_bound(kind: str) -> None:
    """What the bound changes: the library keeps every prompted frame in memory (spatial memory
    and object pointers, every frame); the tracker keeps the newest `max_conditioning_frames`.
    Equal while an object has no more prompted frames than that; different from the first frame
    tracked after the oldest was dropped."""
    model = tiny_video_model(kind)
    roomy = StreamingVideoTracker(model, batch_objects=False, max_conditioning_frames=4)
    result = compare(kind, roomy, Library(model, per_object=True), MANY_PROMPTED, 24)
    assert result.equal == result.compared >= 15, result
    assert roomy.conditioning_frames(1) == [5, 6, 8, 10]
    bounded = StreamingVideoTracker(model, batch_objects=False, max_conditioning_frames=2)
    result = compare(kind, bounded, Library(model, per_object=True), MANY_PROMPTED, 24)
    # The prompts' own answers use no memory (frames the object was never tracked on): equal.
    # Tracking frame 11 reads [8, 10] where the library reads [5, 6, 8, 10].
    assert result.first_difference == (11, 1) and result.equal == 4, result
    assert bounded.conditioning_frames(1) == [8, 10]


# ---------------------------------------------------------------------- the library surface
def test_library_surface_is_the_tested_one() -> None:
    """Every private transformers call the tracker makes exists with its parameters."""
    import transformers
    from packaging.specifiers import SpecifierSet

    for kind in KINDS:
        model = build_model(kind)
        assert lib.check_library(model) is session_class_for(model)
    assert transformers.__version__ in SpecifierSet(lib.TESTED_TRANSFORMERS)
    root = pathlib.Path(__file__).resolve().parents[1]
    assert f'"transformers{lib.TESTED_TRANSFORMERS}"' in (root / "setup.py").read_text()
    pinned = [
        line.split("==")[1].strip()
        for line in (root / "requirements-model.txt").read_text().splitlines()
        if line.startswith("transformers==")
    ]
    assert pinned and all(v in SpecifierSet(lib.TESTED_TRANSFORMERS) for v in pinned)


def test_a_changed_private_call_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import Sam2VideoInferenceSession, Sam2VideoModel

    model = build_model("sam2")
    monkeypatch.setattr(
        Sam2VideoModel, "_get_object_pointers", lambda self, inference_session, obj_idx: None
    )
    with pytest.raises(
        lib.UnsupportedLibraryError, match=r"Sam2VideoModel\._get_object_pointers takes"
    ):
        StreamingVideoTracker(model)
    monkeypatch.undo()
    monkeypatch.delattr(Sam2VideoModel, "_use_mask_as_output")
    with pytest.raises(
        ModelLoadError, match=r"_use_mask_as_output is missing.*transformers>=5\.23"
    ):
        StreamingVideoTracker(model)
    monkeypatch.undo()
    monkeypatch.setattr(
        Sam2VideoInferenceSession, "store_output", lambda self, obj_idx, frame_idx, value: None
    )
    with pytest.raises(lib.UnsupportedLibraryError, match=r"store_output takes"):
        StreamingVideoTracker(model)
    monkeypatch.undo()
    StreamingVideoTracker(model)  # the real library passes


def snapshot(tracker: StreamingVideoTracker) -> Any:
    return copy.deepcopy((tracker.lib.session, tracker._tracked, tracker._prompts))


def restore(tracker: StreamingVideoTracker, state: Any) -> None:
    tracker.lib.session, tracker._tracked, tracker._prompts = copy.deepcopy(state)


@pytest.mark.parametrize("kind", KINDS)
def test_batched_objects_match_one_object_calls(kind: str) -> None:
    """Objects with equal memory layouts go through one batched call, with the same answer."""
    model = build_model(kind, seed=3, object_bias=1.0, init_range=0.1)
    tracker = StreamingVideoTracker(model, batch_objects=True)
    video = frames(12, seed=5)
    tracker.step(0, video[0])
    for obj, xy in enumerate(([30.0, 30.0], [90.0, 40.0], [60.0, 100.0]), start=1):
        tracker.add_prompt(0, obj, points=[xy], labels=[1])
    worst = 0.0
    for t in range(1, 12):
        tracker.encode_frame(t, video[t])
        state = snapshot(tracker)
        before = tracker.counters["batched_objects"]
        batched = tracker.track(t)
        assert tracker.counters["batched_objects"] == before + 3  # all three in one call
        batched_state = snapshot(tracker)
        restore(tracker, state)
        tracker.batch_objects = False
        single = tracker.track(t)
        tracker.batch_objects = True
        for obj in (1, 2, 3):
            a, b = batched[obj], single[obj]
            worst = max(worst, float((a.mask_logits - b.mask_logits).abs().max()))
            torch.testing.assert_close(a.mask_logits, b.mask_logits, atol=1e-5, rtol=0)
            torch.testing.assert_close(a.object_pointer, b.object_pointer, atol=1e-5, rtol=0)
        # Continue from the batched state, as a batched run would.
        restore(tracker, batched_state)
        tracker._prune()
    assert float(batched[1].mask_logits.abs().max()) > 0.1  # real logits, not a flat fill


# ---------------------------------------------------------------------- bounded memory
def held_bound_bytes(tracker: StreamingVideoTracker, objects: int) -> int:
    """The stated bound (`tracker.bounds`) in bytes, from the sizes of the entries it counts."""
    from seg_ros.engine.sam.tracker import tensor_bytes

    frame = max(tensor_bytes(f) for f in tracker._frames.values())
    features = max(tensor_bytes(f) for f in tracker._features.values())
    full = pointer_only = 0
    for obj in tracker.object_ids:
        idx = tracker._idx(obj)
        for entry in [
            *tracker.lib.conditioning_outputs(idx).values(),
            *tracker.lib.tracked_outputs(idx).values(),
        ]:
            if "maskmem_features" in entry:
                full = max(full, tensor_bytes(entry))
            else:
                pointer_only = max(pointer_only, tensor_bytes(entry))
    bounds = tracker.bounds
    per_object = (
        bounds.conditioning_per_object * full
        + bounds.full_outputs_per_object * full
        + (bounds.pointer_outputs_per_object - bounds.full_outputs_per_object) * pointer_only
    )
    return (
        bounds.frames * frame
        + bounds.feature_frames * features
        + objects * per_object
        + tensor_bytes(tracker.steps.pos)
    )


@pytest.mark.parametrize(
    ("kind", "count"),
    [pytest.param("sam2", 320), pytest.param("edgetam", 600, marks=pytest.mark.slow)],
)
@pytest.mark.slow  # long run: 320-600 frames (minutes on this CPU); `make test` runs it
def test_memory_stays_within_its_stated_bound(
    folders: dict[str, pathlib.Path], kind: str, count: int
) -> None:
    # Corrections kept as prompted frames (an option) so that max_conditioning_frames bites too.
    backend = build(
        folders[kind], max_conditioning_frames=2, options={"corrections_as_conditioning": True}
    )
    session = SegmentationSession(backend, max_objects=8)
    tracker = backend.tracker
    bounds = tracker.bounds
    prompt_frames, window = tracker.memory.prompt_frames, tracker.memory.memory_frames
    pointer_window = int(tracker.model.config.max_object_pointers_in_encoder) - 1
    # The stated bound is what the model's windows need, no more.
    assert bounds.frames == prompt_frames and bounds.feature_frames == 2
    assert bounds.full_outputs_per_object == prompt_frames + window
    assert bounds.pointer_outputs_per_object == prompt_frames + pointer_window
    rng = np.random.default_rng(7)
    session.step(next(images(1)), stamp_ns=1)
    for xy in ([20, 30], [100, 60], [140, 20]):
        session.add_prompt(Prompt(points=[xy], point_labels=[1]))
    held_at_60 = 0.0
    bound = 0
    for t in range(1, count):
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        result = session.step(image, stamp_ns=1 + t)
        assert len(result.objects) == len(session.object_ids) == 3
        if t % 40 == 0:  # corrections, a new object on a past frame, a removal
            session.add_prompt(Prompt(points=[[30, 35]], point_labels=[1]), object_id="1")
            added = session.add_prompt(Prompt(box=[60, 10, 120, 70]), stamp_ns=t - 2)
            session.remove_object(added.object_id)
        stats = backend.stats()
        assert stats["frames_in_memory"] <= bounds.frames
        assert stats["feature_frames"] <= bounds.feature_frames
        assert stats["max_conditioning_per_object"] <= bounds.conditioning_per_object == 2
        assert stats["max_full_outputs_per_object"] <= bounds.full_outputs_per_object
        assert stats["max_pointer_outputs_per_object"] <= bounds.pointer_outputs_per_object
        if t == 60:
            held_at_60 = stats["held_mb"]
            bound = held_bound_bytes(tracker, 3)
        if bound:  # the tensors held, in bytes, within the bound the counts state
            assert tracker.held_bytes() <= bound, (t, tracker.held_bytes(), bound)
    assert stats["max_conditioning_per_object"] == 2  # the conditioning bound was reached
    # The tensors held stop growing once the windows are full, and fill most of the bound.
    held = backend.stats()["held_mb"]
    assert held_at_60 > 0.5 and held <= held_at_60 * 1.05
    assert held * 2**20 >= 0.6 * bound, (held, bound / 2**20)
    session.close()


@pytest.mark.slow  # long run: 300 frames; `make test` runs it
def test_rss_is_flat_where_the_library_session_grows() -> None:
    """RSS over 320 frames, each run in a fresh process (a long-lived one hides growth)."""
    import multiprocessing

    from seg_ros.bench.sam2_bench import _memory_child

    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        bounded = pool.apply(_memory_child, ("tiny-sam2", 320, 2, "cpu", False, 1))
    with context.Pool(1) as pool:
        library = pool.apply(_memory_child, ("tiny-sam2", 320, 2, "cpu", True, 1))
    # The library keeps every frame and output: the same measurement sees it grow.
    assert (
        library["rss_growth_mb"] > 40
        and library["held_mb_at_end"] > 3 * library["held_mb_at_warmup"]
    )
    assert bounded["rss_growth_mb"] < 10, bounded
    assert bounded["held_mb_at_end"] <= bounded["held_mb_at_warmup"] * 1.05, bounded


# ---------------------------------------------------------------------- prompts are cheap
def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_prompts_reuse_cached_features_and_one_encoder_pass_serves_all(
    folders: dict[str, pathlib.Path],
) -> None:
    backend = build(folders["edgetam"])
    model = backend.tracker.model
    encoder = count_calls(model.vision_encoder)
    attention = count_calls(model.memory_attention)
    session = SegmentationSession(backend)
    stream = images(6)
    session.step(next(stream), stamp_ns=10)
    assert encoder[0] == 0  # nothing tracked: the idle frame is not encoded (lazy)
    session.add_prompt(Prompt(points=[[30, 30]], point_labels=[1]))
    assert encoder[0] == 1  # encoded on demand, once
    session.add_prompt(Prompt(box=[60, 20, 120, 80]))
    session.add_prompt(Prompt(points=[[35, 35]], point_labels=[0]), object_id="1")
    assert encoder[0] == 1 and attention[0] == 0  # decoder side only
    session.step(next(stream), stamp_ns=20)
    assert encoder[0] == 2  # one pass for both objects
    session.add_prompt(Prompt(points=[[80, 50]], point_labels=[1]), object_id="2")
    assert encoder[0] == 2
    session.step(next(stream), stamp_ns=30)
    # A prompt naming an earlier frame re-encodes that frame once, then re-uses it.
    session.add_prompt(Prompt(points=[[140, 80]], point_labels=[1]), stamp_ns=20)
    assert encoder[0] == 4
    session.add_prompt(Prompt(points=[[10, 80]], point_labels=[1]), stamp_ns=20)
    assert encoder[0] == 4
    session.add_prompt(Prompt(points=[[10, 10]], point_labels=[1]), stamp_ns=30)
    assert encoder[0] == 4  # the latest frame's features are still cached
    # One-shot on the latest frame re-uses its features too; on a new image it encodes.
    session.segment(Prompt(points=[[50, 50]], point_labels=[1]))
    assert encoder[0] == 4
    session.segment(Prompt(points=[[50, 50]], point_labels=[1]), image=next(stream))
    assert encoder[0] == 5
    session.close()


# ---------------------------------------------------------------------- behaviour
def test_lost_object_keeps_its_id_and_returns(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders["sam2"])
    session = SegmentationSession(backend)
    stream = images(20)
    session.step(next(stream))
    created = session.add_prompt(Prompt(points=[[40, 40]], point_labels=[1]))
    model = backend.tracker.model
    seen = []
    for t in range(1, 16):
        # The object-score head decides presence; force "absent" on frames 5..9.
        bias_object_scores(model, -30.0 if 5 <= t < 10 else 2.0)
        obj = session.step(next(stream)).get(created.object_id)
        assert obj is not None  # listed on every frame, visible or not
        seen.append(obj.visible)
        if not obj.visible:
            assert obj.score < 0.5 and obj.area == 0
        else:
            assert obj.score > 0.5 and obj.area > 0
    assert seen == [True] * 4 + [False] * 5 + [True] * 6
    assert session.object_ids == [created.object_id]
    session.close()


def test_single_click_multimask_candidates_best_first(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders["sam2"])
    session = SegmentationSession(backend)
    session.step(next(images(1)))
    result = session.add_prompt(Prompt(points=[[50, 40]], point_labels=[1]), multimask=True)
    candidates = result.object.candidates
    assert len(candidates) == 3
    scores = [c.score for c in candidates]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert all(c.mask.shape == (H, W) and c.mask.dtype == bool for c in candidates)
    assert np.array_equal(result.object.mask, candidates[0].mask)  # the object is the best one
    assert len({c.mask.tobytes() for c in candidates}) > 1
    one_shot = session.segment(Prompt(points=[[50, 40]], point_labels=[1]), multimask=True)
    assert len(one_shot[0].candidates) == 3
    session.close()


def test_segment_leaves_tracking_untouched(folders: dict[str, pathlib.Path]) -> None:
    def run(with_segment: bool) -> list[np.ndarray]:
        backend = build(folders["edgetam"])
        session = SegmentationSession(backend)
        masks = []
        stream = images(8, seed=11)
        session.step(next(stream))
        session.add_prompt(Prompt(points=[[50, 50]], point_labels=[1]))
        for image in stream:
            if with_segment:
                session.segment(Prompt(box=[10, 10, 90, 70]), multimask=True)
                mask = np.zeros((H, W), bool)
                mask[20:60, 30:90] = True
                session.segment(Prompt(mask=mask), image=image)
            masks.append(session.step(image).objects[0].mask)
        session.close()
        return masks

    plain, interleaved = run(False), run(True)
    assert all(np.array_equal(a, b) for a, b in zip(plain, interleaved, strict=True))
    assert any(m.any() for m in plain)


def test_session_points_box_mask_refine_remove_and_past_stamps(
    folders: dict[str, pathlib.Path],
) -> None:
    # Corrections kept as prompted frames (an option; the default follows the library).
    backend = build(
        folders["sam2"],
        max_conditioning_frames=2,
        options={"corrections_as_conditioning": True},
    )
    session = SegmentationSession(backend)
    stream = images(12, seed=4)
    first = session.step(next(stream), stamp_ns=100)
    assert first.objects == ()
    a = session.add_prompt(Prompt(points=[[30, 40]], point_labels=[1]), label="mug")
    b = session.add_prompt(Prompt(box=[70, 20, 130, 80]), label="box")
    painted = np.zeros((H, W), bool)
    painted[60:90, 10:50] = True
    c = session.add_prompt(Prompt(mask=painted))
    assert (a.object_id, b.object_id, c.object_id) == ("1", "2", "3")
    # A mask prompt is the object's mask on its frame.
    assert np.array_equal(c.object.mask, painted) and c.object.visible
    assert all(p.object.mask.shape == (H, W) for p in (a, b, c))
    for t in range(1, 6):
        result = session.step(next(stream), stamp_ns=100 + t)
        assert [o.object_id for o in result.objects] == ["1", "2", "3"]
        assert result.get("1") is not None and result.get("1").label == "mug"  # type: ignore[union-attr]
    refined = session.add_prompt(Prompt(points=[[32, 42]], point_labels=[0]), object_id="1")
    assert refined.object_id == "1" and refined.frame_index == 5
    # A stamp still in memory names that frame; an evicted one is refused with the reason.
    past = session.add_prompt(Prompt(points=[[120, 30]], point_labels=[1]), stamp_ns=103)
    assert past.frame_index == 3
    with pytest.raises(PromptError, match="no frame with stamp"):
        session.add_prompt(Prompt(points=[[1, 1]], point_labels=[1]), stamp_ns=1)
    session.remove_object("2")
    for t in range(6, 12):
        result = session.step(next(stream), stamp_ns=100 + t)
    assert [o.object_id for o in result.objects] == ["1", "3", "4"]
    assert all(o.mask.shape == (H, W) and o.mask.dtype == bool for o in result.objects)
    assert any(o.visible for o in result.objects)
    # A scribble becomes clicks along its strokes.
    strokes = np.zeros((H, W), bool)
    strokes[40, 20:120] = True
    scribbled = session.add_prompt(Prompt(mask=strokes, scribble=True))
    assert scribbled.object.mask.shape == (H, W)
    # Prompted frames per object are bounded: object 1 was prompted on frames 0 and 5.
    tracker = backend.tracker
    assert tracker.conditioning_frames(1) == [0, 5]
    session.add_prompt(Prompt(points=[[33, 41]], point_labels=[1]), object_id="1")
    assert tracker.conditioning_frames(1) == [5, 11]  # the oldest went
    session.reset()
    assert session.object_ids == [] and backend.stats()["frames_in_memory"] == 0
    session.close()
    assert backend.stats() == {}
    session.close()  # idempotent


def test_scribble_points_spread_along_strokes() -> None:
    strokes = np.zeros((50, 80), bool)
    strokes[10, 5:75] = True
    points = scribble_points(strokes, 4)
    assert points.shape == (4, 2)
    assert all(strokes[int(y), int(x)] for x, y in points)
    assert points[:, 0].max() - points[:, 0].min() > 50  # both ends of the stroke are used


def test_memory_frames_option(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders["sam2"], memory_frames=2, options={"prompt_frames": 3})
    assert backend.tracker.memory.memory_frames == 2 and backend.memory_frames == 3
    session = SegmentationSession(backend)
    stream = images(20)
    session.step(next(stream))
    session.add_prompt(Prompt(points=[[40, 40]], point_labels=[1]))
    for image in stream:
        session.step(image)
    stats = backend.stats()
    assert stats["frames_in_memory"] == 3 and stats["max_full_outputs_per_object"] <= 5
    session.close()
    with pytest.raises(ModelLoadError, match="memory_frames=9"):
        build(folders["sam2"], memory_frames=9)


# ---------------------------------------------------------------------- input size, loading
def test_other_input_size_runs_or_is_refused_clearly(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders["edgetam"], input_size=256)
    assert backend.image_size == 256
    session = SegmentationSession(backend)
    session.step(next(images(1)))
    out = session.add_prompt(Prompt(points=[[40, 40]], point_labels=[1]))
    assert out.object.mask.shape == (H, W)
    assert session.step(next(images(1, seed=9))).objects[0].mask.shape == (H, W)
    session.close()
    big = build(folders["sam2"], input_size=256)  # Hiera interpolates its position embedding
    assert big.stats()["input_size"] == 256
    big.close()
    # 112 px: Hiera's 8-cell windows do not tile its 28-cell first stage.
    with pytest.raises(ModelLoadError, match="input_size=112"):
        build(folders["sam2"], input_size=112)
    with pytest.raises(ModelLoadError, match="input_size=80"):
        build(folders["sam2"], input_size=80)


def test_empty_model_asks_for_seg_ros_download() -> None:
    with pytest.raises(ModelLoadError, match="seg-ros-download"):
        build_backend(BackendConfig(backend="sam2", model="", device="cpu"))


def test_hub_id_not_in_cache_is_refused_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="seg-ros-download"):
        build_backend(BackendConfig(backend="sam2", model="nobody/no-such-sam2", device="cpu"))


def copy_model(source: pathlib.Path, target: pathlib.Path) -> pathlib.Path:
    target.mkdir()
    for item in source.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def test_bad_checkpoints_are_refused_clearly(
    folders: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        build(tmp_path / "missing")
    no_weights = copy_model(folders["sam2"], tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelLoadError, match=r"no \*\.safetensors"):
        build(no_weights)
    truncated = copy_model(folders["sam2"], tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="could not load"):
        build(truncated)
    corrupt = copy_model(folders["sam2"], tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="could not load"):
        build(corrupt)
    wrong = copy_model(folders["sam2"], tmp_path / "wrong")
    config = json.loads((wrong / "config.json").read_text())
    config["model_type"] = "sam3_video"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="'sam3_video' model; the sam2 backend loads"):
        build(wrong)
    with pytest.raises(ValueError, match="unknown sam2 backend options"):
        build(folders["sam2"], options={"colour": "red"})


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_gpu(folders: dict[str, pathlib.Path], dtype: str) -> None:
    before = torch.get_default_dtype()
    backend = build_backend(
        BackendConfig(backend="sam2", model=str(folders["sam2"]), device="cuda", dtype=dtype)
    )
    session = SegmentationSession(backend)
    session.step(next(images(1)))
    session.add_prompt(Prompt(points=[[40, 40]], point_labels=[1]))
    objects = session.step(next(images(1, seed=3))).objects
    assert objects[0].mask.shape == (H, W) and 0.0 <= objects[0].score <= 1.0
    assert torch.get_default_dtype() == before  # no global side effect
    session.close()
    assert backend.stats() == {}


def test_model_saved_by_another_tool_loads(tmp_path: pathlib.Path) -> None:
    """A model saved with save_pretrained (sharded or not) loads through the registry."""
    model = build_model("edgetam", seed=5)
    folder = save_model(model, tmp_path / "edgetam")
    backend = build(folder)
    assert backend.model_type == "edgetam_video"
    backend.close()


# ---------------------------------------------------------------------- seg-ros-download
def test_download_fetches_no_pickle() -> None:
    from huggingface_hub.utils import filter_repo_objects

    from seg_ros.tools import download

    repo = [
        "config.json",
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "processor_config.json",
        "tokenizer.json",
        "merges.txt",
        "pytorch_model.bin",
        "sam2.1_hiera_tiny.pt",
        "checkpoints/model.pth",
        "weights.pkl",
        "model.ckpt",
        "tf_model.h5",
        "flax_model.msgpack",
        "README.md",
    ]
    fetched = list(
        filter_repo_objects(
            repo,
            allow_patterns=list(download.ALLOW_PATTERNS),
            ignore_patterns=list(download.IGNORE_PATTERNS),
        )
    )
    assert fetched == repo[:7]
    assert [n for n in repo if download.is_fetched(n)] == fetched


def test_download_supports_what_the_backends_load() -> None:
    from seg_ros.engine.backends import sam2
    from seg_ros.tools import download

    assert {t for t, (b, _) in download.SUPPORTED.items() if b == "sam2"} == set(sam2.MODEL_CLASSES)


def test_download_writes_verifies_and_reports(
    folders: dict[str, pathlib.Path],
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    from seg_ros.tools import download

    asked: dict[str, Any] = {}
    # A hub repository holding the tiny model and, as many do, a pickled copy of the weights.
    repo = {p.name: p.read_bytes() for p in folders["edgetam"].iterdir()}
    repo["pytorch_model.bin"] = b"a pickle that must never be fetched"

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        asked.update(kwargs, repo_id=repo_id)
        local = pathlib.Path(kwargs["local_dir"])
        names = filter_repo_objects(
            list(repo),
            allow_patterns=kwargs["allow_patterns"],
            ignore_patterns=kwargs["ignore_patterns"],
        )
        for name in names:
            (local / name).write_bytes(repo[name])
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    out = tmp_path / "edgetam"
    assert download.main(["someone/edgetam-tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert asked["repo_id"] == "someone/edgetam-tiny" and asked["revision"] is None
    assert not (out / "pytorch_model.bin").exists()
    assert "model.safetensors" in printed and "ok: edgetam_video model" in printed
    assert f"backend:=sam2 model:={out}" in printed
    build(out).close()  # the folder is what the backend loads


def test_download_arguments_and_verification_errors(
    folders: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seg_ros.tools import download

    with pytest.raises(SystemExit) as exc:
        download.main(["facebook/sam2.1-hiera-tiny"])  # no --out
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        download.main(["./local/folder", "--out", str(tmp_path)])
    assert exc.value.code == 2
    capsys.readouterr()
    good = copy_model(folders["sam2"], tmp_path / "good")
    assert download.main(["a/b", "--out", str(good), "--verify-only"]) == 0
    assert "ok: sam2_video model" in capsys.readouterr().out
    truncated = copy_model(folders["sam2"], tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert download.main(["a/b", "--out", str(truncated), "--verify-only", "--no-load"]) == 1
    assert "model.safetensors is truncated" in capsys.readouterr().err
    wrong = copy_model(folders["sam2"], tmp_path / "wrong")
    (wrong / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert download.main(["a/b", "--out", str(wrong), "--verify-only"]) == 1
    assert "'bert' model; supported: sam2_video" in capsys.readouterr().err
    assert download.main(["a/b", "--out", str(tmp_path / "none"), "--verify-only"]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_compile_option_compiles_the_heavy_modules(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders["sam2"], compile=True)  # compiled lazily, on the first call
    model = backend.tracker.model
    for name in ("vision_encoder", "memory_attention", "mask_decoder"):
        assert getattr(model, name)._compiled_call_impl is not None, name
    assert build(folders["sam2"]).tracker.model.vision_encoder._compiled_call_impl is None
    backend.close()


@pytest.mark.slow
@pytest.mark.gpu
def test_compiled_model_gives_the_same_masks(folders: dict[str, pathlib.Path]) -> None:
    """torch.compile of the heavy modules: same masks (minutes of compilation on a CPU)."""

    def run(compile_: bool) -> list[np.ndarray]:
        backend = build_backend(
            BackendConfig(backend="sam2", model=str(folders["sam2"]), compile=compile_)
        )
        session = SegmentationSession(backend)
        stream = images(8, seed=6)
        session.step(next(stream))
        session.add_prompt(Prompt(points=[[50, 40]], point_labels=[1]))
        session.add_prompt(Prompt(box=[90, 20, 150, 70]))
        masks = [np.stack([o.mask for o in session.step(image).objects]) for image in stream]
        session.close()
        return masks

    eager, compiled = run(False), run(True)
    agreement = np.mean([(a == b).mean() for a, b in zip(eager, compiled, strict=True)])
    assert agreement > 0.999
