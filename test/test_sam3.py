"""The sam3 backend on tiny random-weight SAM 3 checkpoints loaded through the real loading code.

What is checked: loading (layout of facebook/sam3, clear errors), text detection (scores, order,
threshold, limit, NMS, no match), the shared backbone (once per frame, equal to the library's own
shared path), text-created objects tracked over frames with their label, text + geometry
composition, one-shot segmentation, and the frame bookkeeping (idle frames, past frames, reset).
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
import torch

from seg_ros.engine.backends.sam3 import Sam3Backend
from seg_ros.engine.concepts import QueryOptions
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import ModelLoadError, PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.sam import detector
from seg_ros.engine.session import SegmentationSession
from seg_ros.testing.tiny_sam3 import (
    HEIGHT,
    WIDTH,
    moving_square,
    tiny_sam3,
    with_model_type,
    without_tokenizer,
)

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="SAM 3 needs torchvision"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tiny_sam3(tmp_path_factory.mktemp("sam3"))


def _backend(folder: pathlib.Path, **options: object) -> Sam3Backend:
    config = BackendConfig(backend="sam3", model=str(folder), device="cpu", options=options)
    backend = build_backend(config)
    assert isinstance(backend, Sam3Backend)
    return backend


@pytest.fixture(scope="module")
def shared(checkpoint: pathlib.Path) -> Sam3Backend:
    """One loaded backend for the tests that reset it first (loading costs ~1 s here)."""
    return _backend(checkpoint, nms_iou=1.0)


@pytest.fixture
def backend(shared: Sam3Backend) -> Sam3Backend:
    shared.reset()
    return shared


_frames = moving_square


# ---------------------------------------------------------------------------- loading
def test_loads_a_checkpoint_with_the_layout_of_facebook_sam3(checkpoint: pathlib.Path) -> None:
    names = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= names
    backend = _backend(checkpoint)
    assert backend.name == "sam3"
    assert backend.capabilities.text and backend.capabilities.multimask
    assert backend.capabilities.past_frames
    assert backend.memory_frames >= 1
    # The checkpoint's own NMS threshold is used unless the option overrides it.
    assert backend.nms_iou == pytest.approx(0.1)
    backend.close()
    backend.close()  # idempotent
    assert backend.stats() == {}


def test_missing_tokenizer_files_are_named(
    checkpoint: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    folder = without_tokenizer(checkpoint, tmp_path / "no_tok")
    with pytest.raises(ModelLoadError, match=r"vocab\.json"):
        _backend(folder)


@pytest.mark.parametrize("model_type", ["sam3", "sam2_video"])
def test_wrong_model_type_is_refused(
    checkpoint: pathlib.Path, tmp_path: pathlib.Path, model_type: str
) -> None:
    folder = with_model_type(checkpoint, tmp_path / model_type, model_type)
    with pytest.raises(ModelLoadError, match="sam3_video"):
        _backend(folder)


def test_other_loading_errors(
    checkpoint: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        _backend(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown sam3 backend options"):
        _backend(checkpoint, nms=0.5)
    config = BackendConfig(backend="sam3", model=str(checkpoint), device="cpu", input_size=224)
    with pytest.raises(ModelLoadError, match="input size"):
        build_backend(config)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "torchvision" else real(name, *a),
    )
    with pytest.raises(ModelLoadError, match="torchvision"):
        _backend(checkpoint)


# ---------------------------------------------------------------------------- detection
def test_preprocessing_matches_the_sam3_image_processor() -> None:
    from transformers import Sam3ImageProcessor

    image = _frames(1)[0]
    processor = Sam3ImageProcessor(size={"height": 112, "width": 112})
    expected = processor(images=image, return_tensors="pt")["pixel_values"]
    ours = detector.preprocess(image, 112, torch.device("cpu"), torch.float32)
    # The processor's own path (uint8 antialiased resize, fused mean / std): bit-exact.
    assert torch.equal(ours, expected), float((ours - expected).abs().max())


def test_detections_are_scored_ordered_thresholded_and_limited(backend: Sam3Backend) -> None:
    frame = _frames(1)[0]
    backend.step(0, frame)
    every = backend.detect(0, "red mug", 0.0, 0)
    assert 2 <= len(every) <= 8  # the tiny model has 8 queries; empty masks are dropped
    scores = [d.score for d in every]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    for det in every:
        assert det.mask.shape == (HEIGHT, WIDTH) and det.mask.dtype == bool
        assert det.mask.any() and det.visible
    threshold = float(np.median(scores))
    kept = backend.detect(0, "red mug", threshold, 0)
    assert [d.score for d in kept] == [s for s in scores if s >= threshold]
    assert [d.score for d in backend.detect(0, "red mug", 0.0, 2)] == scores[:2]
    # Another phrase is another query: the scores change.
    assert [d.score for d in backend.detect(0, "person", 0.0, 0)] != scores


def test_mask_nms_keeps_the_best_of_overlapping_masks() -> None:
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[0, :5, :5] = True  # best
    masks[1, :5, :4] = True  # IoU 0.8 with 0: a duplicate
    masks[2, 5:, 5:] = True  # elsewhere
    masks[3, :5, 3:8] = True  # IoU 0.25 with 0
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7])
    assert detector.mask_nms(masks, scores, 0.5) == [0, 3, 2]
    assert detector.mask_nms(masks, scores, 0.1) == [0, 2]
    assert detector.mask_nms(masks, scores, 1.0) == [0, 1, 3, 2]


def test_nms_on_model_output(checkpoint: pathlib.Path) -> None:
    strict = _backend(checkpoint, nms_iou=0.2)
    frame = _frames(1)[0]
    strict.step(0, frame)
    loose = strict.detect(0, "red mug", 0.0, 0)
    strict.nms_iou = 1.0
    every = strict.detect(0, "red mug", 0.0, 0)
    assert 1 <= len(loose) < len(every)
    assert loose[0].score == every[0].score
    for i, a in enumerate(loose):
        for b in loose[i + 1 :]:
            union = np.count_nonzero(a.mask | b.mask)
            # IoU is taken on the model's masks; at the source resolution it is close.
            assert np.count_nonzero(a.mask & b.mask) / union < 0.3


def test_no_match_is_an_empty_answer(tmp_path: pathlib.Path) -> None:
    backend = _backend(tiny_sam3(tmp_path / "absent", absent=True))
    session = SegmentationSession(backend, score_threshold=0.05)
    session.step(_frames(1)[0])
    assert backend.detect(0, "red mug", 0.05, 0) == []
    assert session.add_text("red mug") == []
    assert session.object_ids == []
    assert session.segment(Prompt(text="red mug")) == []


# ---------------------------------------------------------------------------- shared backbone
def test_tracker_features_equal_the_librarys_shared_backbone_path(backend: Sam3Backend) -> None:
    frame = _frames(1)[0]
    backend.step(0, frame)
    pixels = backend.backbones.frames[0].pixels
    model = backend.model
    with torch.inference_mode():
        reference = model.get_vision_features_for_tracker(
            model.detector_model.get_vision_features(pixel_values=pixels)
        )
        ours = model.tracker_model.get_image_features(pixels)
    for a, b in zip(reference[0], ours.fpn_hidden_states, strict=True):
        torch.testing.assert_close(a, b)
    for a, b in zip(reference[1], ours.fpn_position_encoding, strict=True):
        torch.testing.assert_close(a, b)


def test_backbone_runs_once_per_frame_for_detection_and_tracking(backend: Sam3Backend) -> None:
    session = SegmentationSession(backend, max_objects=3, score_threshold=0.2)
    frames = _frames(4)

    def runs() -> float:
        return backend.stats()["backbone_runs"] - before

    before = backend.stats()["backbone_runs"]
    session.step(frames[0])
    session.step(frames[1])
    # Nothing tracked yet: frames are only preprocessed.
    assert runs() == 0
    added = session.add_text("red mug", max_objects=2)
    assert len(added) == 2
    assert runs() == 1
    for n, frame in enumerate(frames[2:], start=2):
        session.step(frame)
        backend.detect(session.frame_index, "cup", 0.2, 0)  # reuses the frame's features
        session.segment(Prompt(points=[[40, 30]]))  # one-shot on the latest frame: reused too
        assert runs() == n
    session.segment(Prompt(text="cup"), image=frames[0])  # a new image: one more run
    session.segment(Prompt(points=[[9, 9]]), image=frames[0])  # the same image again: memoised
    assert runs() == len(frames)


# ---------------------------------------------------------------------------- tracking
def test_text_created_objects_are_tracked_with_their_label(backend: Sam3Backend) -> None:
    session = SegmentationSession(backend, max_objects=3, score_threshold=0.2)
    frames = _frames(5)
    session.step(frames[0])
    added = session.add_text("red mug", max_objects=3)
    assert len(added) == 3
    assert [o.label for o in added] == ["red mug"] * 3
    detections = backend.detect(0, "red mug", 0.2, 3)
    for obj, det in zip(added, detections, strict=True):
        # On its own frame a text-created object is exactly its detection (a mask prompt),
        # with the detection's confidence.
        assert np.array_equal(obj.mask, det.mask)
        assert obj.score == pytest.approx(det.score)
    ids = [o.object_id for o in added]
    for frame in frames[1:]:
        result = session.step(frame)
        assert [o.object_id for o in result.objects] == ids
        for obj in result.objects:
            assert obj.label == "red mug"
            assert obj.mask.shape == (HEIGHT, WIDTH)
            assert obj.visible and 0.5 < obj.score <= 1.0
    stats = backend.stats()
    # The memory stays bounded: a few frames, whatever the stream's length.
    assert stats["tracker_frames_in_memory"] <= backend.memory_frames
    assert stats["frames_in_memory"] <= backend.memory_frames
    session.remove_object(ids[0])
    assert [o.object_id for o in session.step(frames[0]).objects] == ids[1:]
    assert backend.stats()["objects"] == 2


def test_text_plus_geometry_picks_the_designated_match(
    backend: Sam3Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = SegmentationSession(backend, max_objects=4, score_threshold=0.2)
    frames = _frames(3)
    session.step(frames[0])
    detections = backend.detect(0, "cup", 0.2, 0)
    # A point on pixels that only one match covers designates that match (the lowest-scored
    # such one, so that the answer is not merely the best match).
    masks = [d.mask for d in detections]
    private = [m & ~np.any([o for o in masks if o is not m], axis=0) for m in masks]
    k = max(i for i, p in enumerate(private) if p.any())
    yy, xx = np.nonzero(private[k])
    point = [float(xx[0]) + 0.5, float(yy[0]) + 0.5]
    given: list[Prompt] = []
    add_prompt = backend.add_prompt
    monkeypatch.setattr(
        backend,
        "add_prompt",
        lambda index, obj, prompt, multimask=False: (
            given.append(prompt) or add_prompt(index, obj, prompt, multimask)
        ),
    )
    result = session.add_prompt(Prompt(points=[point], text="cup"))
    assert result.object.label == "cup"
    # The tracker got the point with the designated match as its dense hint.
    assert np.array_equal(given[-1].points, [point])
    assert given[-1].mask is not None and np.array_equal(given[-1].mask, masks[k])
    # A box is also a positive exemplar for the detector: the query (and its scores) change.
    box = Prompt(box=[5, 5, 40, 30], text="cup")
    with_box = backend.detect(0, "cup", 0.0, 0, geometry=box)
    assert [d.score for d in with_box] != [d.score for d in backend.detect(0, "cup", 0.0, 0)]
    # An explicit label wins over the text; both objects are then tracked like any other.
    other = session.add_prompt(box, label="my cup")
    assert other.object.label == "my cup"
    for frame in frames[1:]:
        labels = {o.object_id: o.label for o in session.step(frame).objects}
        assert labels == {result.object_id: "cup", other.object_id: "my cup"}


def test_prompts_on_past_frames_and_reset(backend: Sam3Backend) -> None:
    session = SegmentationSession(backend, max_objects=4, score_threshold=0.2)
    frames = _frames(4)
    for stamp, frame in enumerate(frames[:2], start=1):
        session.step(frame, stamp_ns=stamp)
    first = session.add_prompt(Prompt(points=[[20, 30]]), stamp_ns=2)
    session.step(frames[2], stamp_ns=3)
    # Frame 2 (stamp 2) is still in memory: a refinement there is accepted.
    refined = session.add_prompt(Prompt(points=[[25, 30]]), first.object_id, stamp_ns=2)
    assert refined.frame_index == 1
    for stamp in range(4, 8):
        session.step(frames[stamp % 4], stamp_ns=stamp)
    with pytest.raises(PromptError, match="no frame with stamp"):
        session.add_prompt(Prompt(points=[[20, 30]]), stamp_ns=2)
    with pytest.raises(PromptError, match="no longer in memory"):
        backend.detect(0, "cup", 0.2, 0)
    # A scribble (strokes on the object) is taken as clicks along the strokes.
    stroke = np.zeros((HEIGHT, WIDTH), dtype=bool)
    stroke[30, 10:40] = True
    scribbled = session.add_prompt(Prompt(mask=stroke, scribble=True))
    assert scribbled.object.mask.shape == (HEIGHT, WIDTH)
    assert not np.array_equal(scribbled.object.mask, stroke)  # decoded, not copied
    session.reset()
    assert backend.stats()["objects"] == 0 and backend.stats()["frames_in_memory"] == 0


# ---------------------------------------------------------------------------- one-shot
def test_one_shot_text_gives_every_match_and_leaves_tracking_alone(backend: Sam3Backend) -> None:
    session = SegmentationSession(backend, max_objects=4, score_threshold=0.2)
    frames = _frames(2)
    session.step(frames[0])
    tracked = session.add_prompt(Prompt(points=[[20, 30]]))
    results = session.segment(Prompt(text="red mug"))
    expected = backend.detect(0, "red mug", 0.2, 0)
    assert [r.score for r in results] == [d.score for d in expected]
    assert all(r.label == "red mug" and r.object_id == "" for r in results)
    assert [r.mask_value for r in results] == list(range(1, len(results) + 1))
    assert session.object_ids == [tracked.object_id]
    assert backend.stats()["objects"] == 1
    # On another image: that image's matches, not the latest frame's.
    elsewhere = session.segment(Prompt(text="red mug"), image=frames[1][::-1].copy())
    assert [r.score for r in elsewhere] != [r.score for r in results]


def test_one_shot_geometry_gives_one_object(backend: Sam3Backend) -> None:
    session = SegmentationSession(backend, score_threshold=0.2)
    session.step(_frames(1)[0])
    (one,) = session.segment(Prompt(points=[[40, 30]], point_labels=[1]), multimask=True)
    assert one.mask.shape == (HEIGHT, WIDTH)
    assert len(one.candidates) == 3
    scores = [c.score for c in one.candidates]
    assert scores == sorted(scores, reverse=True)
    assert all(c.mask.shape == (HEIGHT, WIDTH) for c in one.candidates)
    (boxed,) = session.segment(Prompt(box=[10, 10, 50, 40]))
    assert boxed.candidates == () and boxed.mask.shape == (HEIGHT, WIDTH)
    # Text + box: one object, the match the box designates, labelled with the text.
    (both,) = session.segment(Prompt(box=[10, 10, 50, 40], text="cup"))
    assert both.label == "cup" and both.mask.shape == (HEIGHT, WIDTH)
    assert session.object_ids == []


# ---------------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_gpu(checkpoint: pathlib.Path, dtype: str) -> None:
    config = BackendConfig(backend="sam3", model=str(checkpoint), device="cuda", dtype=dtype)
    backend = build_backend(config)
    session = SegmentationSession(backend, max_objects=2, score_threshold=0.2)
    frames = _frames(3)
    session.step(frames[0])
    added = session.add_text("red mug", max_objects=2)
    assert len(added) == 2
    (boxed,) = session.segment(Prompt(box=[5, 5, 40, 30], text="cup"))
    assert boxed.mask.shape == (HEIGHT, WIDTH)
    for frame in frames[1:]:
        result = session.step(frame)
        assert [o.label for o in result.objects] == ["red mug"] * 2
        assert all(o.mask.shape == (HEIGHT, WIDTH) for o in result.objects)
    session.close()


# ---------------------------------------------------------------------------- standing queries
def test_a_standing_query_detects_on_the_cached_features(backend: Sam3Backend) -> None:
    """every_n 1: one detector pass per frame on the backbone output the tracker also uses,
    one text encoding for the whole stream, and a stable id for what it found."""
    session = SegmentationSession(backend, max_objects=4, score_threshold=0.2)
    frames = _frames(6)
    before = backend.stats()
    query = session.add_query("red mug", QueryOptions(every_n=1))  # before the first frame
    assert query.objects == []
    ids = None
    for n, frame in enumerate(frames, start=1):
        result = session.step(frame)
        assert backend.stats()["backbone_runs"] - before["backbone_runs"] == n
        if ids is None:
            ids = [o.object_id for o in result.objects]
            assert ids, "the biased tiny model finds 'red mug' on the first frame"
        assert all(o.query == "q1" and o.label == "red mug" for o in result.objects)
        assert [o.object_id for o in result.objects][: len(ids)] == ids
    stats = session.queries[0].stats
    assert stats.detections_run == len(frames) and stats.errors == 0
    assert backend.stats()["text_encodes"] - before["text_encodes"] <= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 1,000 tracked frames: 3-10 min on a busy 2-core CPU
def test_a_standing_query_keeps_memory_bounded_over_1000_frames(checkpoint: pathlib.Path) -> None:
    """The red square comes and goes (every 40 frames it leaves for 20); whatever the random
    detector makes of it, objects, frames and tensors held stay bounded and RSS flat."""
    backend = _backend(checkpoint)
    session = SegmentationSession(backend, max_objects=4, score_threshold=0.2)
    session.add_query("red mug", QueryOptions(every_n=5, timeout_frames=10))
    scene = _frames(40)
    plain = _frames(1, seed=1)[0]
    plain[20:40] = plain[0:20]  # no square
    rss: list[float] = []
    objects = []
    for n in range(1000):
        frame = scene[n % 40] if (n // 20) % 2 == 0 else plain
        result = session.step(frame)
        objects.append(len(result.objects))
        if n in (200, 999):
            with open("/proc/self/statm") as f:
                rss.append(int(f.read().split()[1]) * 4096 / 2**20)
    stats = backend.stats()
    assert max(objects) <= 4
    assert stats["frames_in_memory"] <= backend.memory_frames
    assert stats["tracker_frames_in_memory"] <= backend.memory_frames
    assert session.queries[0].stats.errors == 0
    assert rss[1] - rss[0] < 50.0, rss  # MB over 800 frames (Sam3Video grows ~10 MB a frame)
