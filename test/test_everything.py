"""Segment everything (SAM's automatic mask generator on cached features): filters, tracker,
backends, session. The batched grid is checked against a straightforward reference: one click
at a time through the tracker's single-prompt `segment`, same filters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
import torch

from seg_ros.engine.backends.base import Capabilities, MaskOutput
from seg_ros.engine.backends.fake import FakeBackend, FakeConfig
from seg_ros.engine.backends.sam2 import Sam2Backend, Sam2Options
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import CapacityError, PromptError, UnsupportedPromptError
from seg_ros.engine.sam.adapter import check_decoder, decode_many_prompts
from seg_ros.engine.sam.everything import (
    EverythingOptions,
    grid_levels,
    grid_points,
    keep_masks,
    stability_scores,
)
from seg_ros.engine.sam.tracker import StreamingVideoTracker
from seg_ros.engine.session import SegmentationSession, vocabulary_labels
from seg_ros.testing.tiny_models import build_model

#: Random weights give small logits (stability at +-1 is ~0) and predicted IoU ~0.6: loose
#: enough that some masks are kept, tight enough that each filter drops some.
LOOSE = EverythingOptions(
    points_per_side=6,
    pred_iou_threshold=0.6,
    stability_threshold=0.7,
    stability_offset=0.1,
    min_area=4,
    chunk=7,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------- filters
def test_grid_points_are_cell_centres() -> None:
    grid = grid_points(2, 100.0)
    assert grid.tolist() == [[25.0, 25.0], [75.0, 25.0], [25.0, 75.0], [75.0, 75.0]]
    assert grid_points(32, 1024).shape == (1024, 2)


def test_stability_score_is_iou_of_offset_thresholds() -> None:
    logits = torch.full((3, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0  # crisp: same mask at +-1
    logits[1, :2, :2] = 5.0
    logits[1, 2:, :2] = 0.5  # 4 pixels in at -1, out at +1: 4 / 8
    scores = stability_scores(logits, 1.0)
    assert scores.tolist() == [1.0, 0.5, 0.0]  # an empty mask is not stable


def test_keep_masks_filters_then_suppresses_duplicates() -> None:
    logits = torch.full((5, 8, 8), -5.0)
    logits[0, :4, :4] = 5.0  # good
    logits[1, :4, :5] = 5.0  # near-duplicate of 0 (IoU 0.8), lower score: suppressed
    logits[2, 4:, 4:] = 5.0  # good, but predicted IoU too low
    logits[3, 4:, :1] = 5.0  # 4 pixels: below min_area
    logits[4, 4:, 4:] = 0.5  # unstable
    pred = torch.tensor([0.9, 0.85, 0.5, 0.95, 0.99])
    options = EverythingOptions(
        pred_iou_threshold=0.8, stability_threshold=0.9, min_area=5, nms_iou=0.7
    )
    assert keep_masks(logits, pred, options) == [0]
    # Without NMS the duplicate stays, ranked below the better mask.
    assert keep_masks(
        logits,
        pred,
        EverythingOptions(pred_iou_threshold=0.8, stability_threshold=0.9, min_area=5, nms_iou=1.0),
    ) == [0, 1]
    assert keep_masks(logits[:0], pred[:0], options) == []


@pytest.mark.parametrize(
    "bad", [{"points_per_side": 0}, {"pred_iou_threshold": 1.5}, {"min_area": -1}, {"chunk": 0}]
)
def test_options_refuse_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EverythingOptions(**bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- tracker
@pytest.fixture(scope="module")
def tracker() -> StreamingVideoTracker:
    torch.manual_seed(1)
    t = StreamingVideoTracker(build_model("sam2"), memory_frames=3)
    t.step(0, torch.rand(1, 3, t.image_size, t.image_size))
    return t


def reference(tracker: StreamingVideoTracker, options: EverythingOptions) -> list[torch.Tensor]:
    """One click at a time through `segment`, every candidate, the same filters."""
    feats = tracker.latest_features()
    assert feats is not None
    logits, scores = [], []
    for x, y in grid_points(options.points_per_side, tracker.image_size).tolist():
        out = tracker.segment(features=feats, points=[(x, y)], labels=[1], multimask=True)
        assert out.candidate_logits is not None
        logits.append(out.candidate_logits)
        scores.append(torch.tensor(out.candidate_scores))
    all_logits, all_scores = torch.cat(logits), torch.cat(scores)
    return [all_logits[i] > 0 for i in keep_masks(all_logits, all_scores, options)]


def test_batched_grid_equals_one_click_at_a_time(tracker: StreamingVideoTracker) -> None:
    before = dict(tracker.counters)
    got = tracker.segment_everything(tracker.latest_features() or [], LOOSE)
    # Batched over 7 clicks a call (6 calls for 36 clicks), the encoder does not run.
    assert tracker.counters["decoder_calls"] - before["decoder_calls"] == 6
    assert tracker.counters["encoder_calls"] == before["encoder_calls"]
    want = reference(tracker, LOOSE)
    n_candidates = 36 * 3
    assert 0 < len(want) < n_candidates  # the filters did something, and kept something
    assert len(got) == len(want)
    for mask, ref in zip(got, want, strict=True):
        assert torch.equal(mask.mask_logits > 0, ref)


def _sam3_tracker_decoder() -> torch.nn.Module:
    """SAM 3's tracker mask decoder at the tiny preset's width, random weights (std 0.1)."""
    from transformers.models.sam3_tracker_video.configuration_sam3_tracker_video import (
        Sam3TrackerVideoMaskDecoderConfig,
    )
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import (
        Sam3TrackerVideoMaskDecoder,
    )

    torch.manual_seed(0)
    config = Sam3TrackerVideoMaskDecoderConfig(
        hidden_size=128, mlp_dim=256, num_attention_heads=2, iou_head_hidden_dim=128
    )
    config._attn_implementation = "sdpa"  # as in a loaded model (None warns, standalone)
    decoder = Sam3TrackerVideoMaskDecoder(config)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.normal_(0.0, 0.1)
    return decoder.eval()


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("kind", ["sam2", "edgetam", "sam3"])
def test_many_prompt_decoder_equals_the_library_decoder(kind: str, n: int) -> None:
    """The shared-image decoder path (`decode_many_prompts`) against the library's own mask
    decoder given every prompt its own copy of the image: same masks, IoU, tokens, object
    scores to float rounding (different summation order: the upscaling convolutions run as
    matrix products, shared projections run once)."""
    decoder = _sam3_tracker_decoder() if kind == "sam3" else build_model(kind).mask_decoder
    check_decoder(decoder)
    channels, side = decoder.hidden_size, 8
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    image, pe, dense = (
        rand(1, channels, side, side),
        rand(1, channels, side, side),
        rand(1, channels, 1, 1),
    )
    dense = dense.expand(1, channels, side, side)
    sparse = rand(n, 2, channels)
    high_res = [
        rand(1, channels // 8, 4 * side, 4 * side),
        rand(1, channels // 4, 2 * side, 2 * side),
    ]
    with torch.inference_mode():
        want = decoder(
            image_embeddings=image.expand(n, -1, -1, -1),
            image_positional_embeddings=pe.expand(n, -1, -1, -1),
            sparse_prompt_embeddings=sparse[:, None],
            dense_prompt_embeddings=dense.expand(n, -1, -1, -1),
            multimask_output=True,
            high_resolution_features=[x.expand(n, -1, -1, -1) for x in high_res],
        )
        got = decode_many_prompts(decoder, image, pe, sparse, dense, high_res)
    masks = got[0]
    assert masks.shape == (n, 3, 4 * side, 4 * side) and masks.abs().max() > 1.0
    for value, ref in zip(got, want, strict=True):
        torch.testing.assert_close(value, ref.reshape(value.shape), rtol=1e-4, atol=1e-4)
    if n > 1:
        # The predicted-IoU gate: a prompt none of whose IoUs reaches the bar is not upscaled
        # (its masks are the fill), the others' masks are the ungated ones (to float rounding:
        # other upscaling batches).
        iou = got[1]
        bar = float(iou.max(dim=1).values.median())
        passing = (iou >= bar).any(dim=1)
        assert 0 < int(passing.sum()) < n
        with torch.inference_mode():
            gated = decode_many_prompts(
                decoder, image, pe, sparse, dense, high_res, min_iou=bar, fill=-7.0
            )
        torch.testing.assert_close(gated[0][passing], masks[passing], rtol=1e-5, atol=1e-5)
        assert bool((gated[0][~passing] == -7.0).all())
        for value, ref in zip(gated[1:], got[1:], strict=True):
            torch.testing.assert_close(value, ref, rtol=0, atol=0)


def test_decode_clicks_equals_decode_with_expanded_features(
    tracker: StreamingVideoTracker,
) -> None:
    feats = tracker.latest_features()
    assert feats is not None
    steps = tracker.steps
    clicks = grid_points(3, tracker.image_size)
    with torch.inference_mode():
        high_res, top = steps.high_res(feats), steps.no_memory(feats)
        got = steps.decode_clicks(high_res, top, clicks)
        n = clicks.shape[0]
        want = steps.decode(
            [f.expand(n, *f.shape[1:]) for f in [*high_res, top]],
            points=clicks[:, None, None, :],
            labels=torch.ones(n, 1, 1, dtype=torch.int32),
            multimask=True,
            upsample=False,
        )
    assert torch.equal(got.best, want.best)
    for name in ("low_res", "object_score_logits", "object_pointer", "iou", "multimasks"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-4, atol=1e-4)


def coarse_to_fine_reference(
    tracker: StreamingVideoTracker, options: EverythingOptions
) -> tuple[list[torch.Tensor], list[int]]:
    """`coarse_to_fine` spelt out: the grid levels one click at a time through `segment`,
    skipping a point inside a mask kept after the previous levels. -> (masks, clicked)."""
    feats = tracker.latest_features()
    assert feats is not None
    size = tracker.image_size
    grid = grid_points(options.points_per_side, size).tolist()
    logits: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    clicked = []
    for level in grid_levels(options.points_per_side):
        for index in level:
            x, y = grid[index]
            if any(bool(m[int(y * m.shape[0] / size), int(x * m.shape[1] / size)]) for m in kept):
                continue
            out = tracker.segment(features=feats, points=[(x, y)], labels=[1], multimask=True)
            assert out.candidate_logits is not None
            logits.append(out.candidate_logits)
            scores.append(torch.tensor(out.candidate_scores))
            clicked.append(index)
        all_logits, all_scores = torch.cat(logits), torch.cat(scores)
        kept = [all_logits[i] > 0 for i in keep_masks(all_logits, all_scores, options)]
    return kept, clicked


def test_coarse_to_fine_skips_points_inside_kept_masks(tracker: StreamingVideoTracker) -> None:
    options = replace(LOOSE, coarse_to_fine=True)
    before = tracker.counters["decoder_calls"]
    got = tracker.segment_everything(tracker.latest_features() or [], options)
    calls = tracker.counters["decoder_calls"] - before
    want, clicked = coarse_to_fine_reference(tracker, options)
    levels = grid_levels(LOOSE.points_per_side)
    # Some points were skipped, after the first level (which has nothing to skip).
    assert len(levels[0]) < len(clicked) < LOOSE.points_per_side**2
    per_level = [sum(i in level for i in clicked) for level in levels]
    assert calls == sum(-(-count // LOOSE.chunk) for count in per_level)
    assert 0 < len(got) == len(want)
    for mask, ref in zip(got, want, strict=True):
        assert torch.equal(mask.mask_logits > 0, ref)


def test_grid_levels_cover_the_grid_once_coarse_first() -> None:
    levels = grid_levels(32)
    assert [len(level) for level in levels] == [64, 192, 768]
    assert sorted(i for level in levels for i in level) == list(range(1024))
    assert levels[0][:2] == [2 * 32 + 2, 2 * 32 + 6]  # rows and columns 2, 6, ..., 30
    assert grid_levels(1) == [[0]]


def test_segment_everything_leaves_state_alone(tracker: StreamingVideoTracker) -> None:
    objects, frames = list(tracker.object_ids), tracker.latest_frame
    tracker.segment_everything(tracker.latest_features() or [], LOOSE)
    assert tracker.object_ids == objects and tracker.latest_frame == frames


# ---------------------------------------------------------------------- backends, session
def sam2_session(max_objects: int = 64) -> SegmentationSession:
    torch.manual_seed(1)
    backend = Sam2Backend(build_model("sam2"), BackendConfig(model="tiny"), Sam2Options())
    return SegmentationSession(backend, max_objects=max_objects)


def test_session_segment_everything_and_track() -> None:
    session = sam2_session()
    rng = np.random.default_rng(0)
    session.step(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    found = session.segment_everything(LOOSE)
    assert found and all(o.mask.shape == (48, 64) and o.object_id == "" for o in found)
    assert [o.score for o in found] == sorted((o.score for o in found), reverse=True)
    assert session.object_ids == []
    tracked = session.segment_everything(LOOSE, track=True, label="thing")
    assert len(tracked) == len(found)
    assert session.object_ids == [o.object_id for o in tracked]
    assert {session.label_of(o.object_id) for o in tracked} == {"thing"}


def test_session_track_refuses_beyond_max_objects() -> None:
    session = sam2_session(max_objects=1)
    session.step(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert len(session.segment_everything(LOOSE)) > 1
    with pytest.raises(CapacityError, match="max_objects=1"):
        session.segment_everything(LOOSE, track=True)
    assert session.object_ids == []


def test_fake_backend_refuses_clearly() -> None:
    session = SegmentationSession(FakeBackend(FakeConfig()))
    session.step(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UnsupportedPromptError, match="cannot segment everything"):
        session.segment_everything()


# ---------------------------------------------------------------------- open-vocabulary names
def _box(top: int, left: int, bottom: int, right: int, shape: tuple[int, int] = (20, 20)):
    mask = np.zeros(shape, bool)
    mask[top:bottom, left:right] = True
    return mask


def test_vocabulary_labels_take_the_best_overlapping_phrase_above_half() -> None:
    chair, mug, far = _box(0, 0, 10, 10), _box(12, 12, 16, 16), _box(0, 15, 3, 18)
    detections = [
        ("chair", _box(0, 0, 10, 9)),  # IoU 0.9 with the chair
        ("seat", _box(0, 0, 10, 6)),  # IoU 0.6 with the chair: loses to "chair"
        ("mug", _box(12, 12, 16, 18)),  # IoU 16/24 = 0.67 with the mug
        ("cup", _box(12, 12, 14, 16)),  # IoU 0.5 with the mug: loses to "mug"
        ("shelf", _box(0, 14, 4, 20)),  # IoU 9/24 < 0.5 with `far`
    ]
    assert vocabulary_labels([chair, mug, far], detections) == ["chair", "mug", ""]
    # Exactly 0.5 is enough; nothing detected names nothing.
    assert vocabulary_labels([mug], [("cup", _box(12, 12, 14, 16))]) == ["cup"]
    assert vocabulary_labels([chair], []) == [""]


class _Scene(FakeBackend):
    """A fake with a mask decoder and a detector: three fixed masks, a detector that knows
    "chair" and "mug" (and is asked once per phrase)."""

    capabilities = Capabilities(text=True, multimask=True, past_frames=True)

    def __init__(self) -> None:
        super().__init__(FakeConfig())
        self.scene = {
            "chair": _box(0, 0, 10, 10),
            "mug": _box(12, 12, 16, 16),
            "": _box(0, 15, 3, 18),
        }
        self.asked: list[str] = []

    def segment_everything(self, frame_index: int, options: EverythingOptions) -> list[MaskOutput]:
        return [MaskOutput(m.copy(), 0.9, True) for m in self.scene.values()]

    def detect(self, frame_index, text, score_threshold, max_objects, geometry=None):  # type: ignore[no-untyped-def]
        self.asked.append(text)
        mask = self.scene.get(text)
        return [] if mask is None or not text else [MaskOutput(mask.copy(), 0.8, True)]


def test_session_names_everything_from_a_vocabulary_tracked_or_not() -> None:
    backend = _Scene()
    session = SegmentationSession(backend)
    session.step(np.zeros((20, 20, 3), np.uint8))
    found = session.segment_everything(vocabulary=["chair", "mug", "lamp"], label="thing")
    assert [o.label for o in found] == ["chair", "mug", "thing"]
    assert backend.asked == ["chair", "mug", "lamp"]  # one detector pass per phrase
    assert session.object_ids == []
    tracked = session.segment_everything(track=True, vocabulary=[" chair "])
    assert [session.label_of(o.object_id) for o in tracked] == ["chair", "", ""]
    for bad, why in (([""], "empty"), (["mug", "mug"], "twice"), (["x"] * 17, "at most 16")):
        with pytest.raises(PromptError, match=why):
            session.segment_everything(vocabulary=bad)
    assert len(session.object_ids) == 3  # refused requests changed nothing


def test_a_vocabulary_needs_a_backend_with_text() -> None:
    session = sam2_session()
    session.step(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    with pytest.raises(UnsupportedPromptError, match="sam3"):
        session.segment_everything(LOOSE, vocabulary=["mug"])


def test_sam3_segments_everything_on_the_cached_backbone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from seg_ros.engine.registry import build_backend
    from seg_ros.testing.tiny_sam3 import HEIGHT, WIDTH, tiny_sam3

    config = BackendConfig(backend="sam3", model=str(tiny_sam3(tmp_path / "sam3")), device="cpu")
    backend = build_backend(config)
    try:
        session = SegmentationSession(backend, max_objects=64)
        rng = np.random.default_rng(0)
        session.step(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
        # Thresholds 0: SAM 3's random-weight decoder predicts low IoUs.
        loose = EverythingOptions(
            points_per_side=4, pred_iou_threshold=0.0, stability_threshold=0.0
        )
        found = session.segment_everything(loose)
        runs = backend.backbones.runs  # type: ignore[attr-defined]
        assert runs <= 1  # the frame's one pass (lazy streams run it on the first request)
        assert found and all(o.mask.shape == (HEIGHT, WIDTH) for o in found)
        again = session.segment_everything(loose, vocabulary=["red square", "floor"])
        assert backend.backbones.runs == runs  # type: ignore[attr-defined]
        # The same masks, each named by its best detection (recomputed here), or not at all.
        assert [o.mask.tobytes() for o in again] == [o.mask.tobytes() for o in found]
        index = session.frame_index
        detections = [
            (phrase, det.mask)
            for phrase in ("red square", "floor")
            for det in backend.detect(index, phrase, session.score_threshold, 0)
        ]
        assert [o.label for o in again] == vocabulary_labels([o.mask for o in found], detections)
    finally:
        backend.close()
