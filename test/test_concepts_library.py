"""Standing queries against the library's own association: transformers' `Sam3VideoModel`.

Two levels, on a tiny random-weight SAM 3 (seg_ros.testing.tiny_sam3, biased so detections are
confident and deterministic):

1. The streams. The library's streaming session (`Sam3VideoProcessor.init_video_session`, a text
   prompt, `model(inference_session, frame=...)` frame by frame) and our session's standing query
   (every_n 1) on the same frames: the same objects are created on frame 0 (count, scores, the
   detection masks bit for bit), a detection on the tracked object on each later frame is
   associated, not new, in both (no id is added, ids stay), and the tracked masks agree (IoU).
   Without the `kernels` package (it is fetched from the hub, so never here) the library skips
   its detection NMS and hole filling, and keeps every overlapping detection; the test stands in
   a greedy mask NMS for the hub kernel (the library's `det_nms_thresh`, suppress above it, best
   score first, on its own IoU matrix) and leaves hole filling out, so both run what the library
   means to run. The library's hotstart is off in streaming (it needs future frames) and its
   output buffering is in `propagate_in_video_iterator`, not in `forward`, so frames compare 1:1.
2. The policy. The same hand-made detections and tracker masks go into the library's
   `Sam3VideoModel._associate_det_trk` (called on the model object) and into our
   `concepts.associate`. Where seg_ros follows the library (new vs associated, the score needed
   to start an object, loose IoU association) the answers are the same; where it deviates
   (one-to-one matching, duplicates across prompts, lost objects found again by position, the
   score threshold on a frame with nothing tracked, duplicates among the new) the test asserts
   the documented difference, so a change on either side shows here.
"""

from __future__ import annotations

import importlib.util
import pathlib
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from seg_ros.engine.concepts import Detection, QueryOptions, associate, mask_iou
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession
from seg_ros.testing.tiny_sam3 import HEIGHT, WIDTH, moving_square, tiny_sam3

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("torchvision") is None, reason="SAM 3 needs torchvision"
    ),
    pytest.mark.usefixtures("one_torch_thread"),
]

torch = pytest.importorskip("torch")
msv = pytest.importorskip("transformers.models.sam3_video.modeling_sam3_video")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tiny_sam3(tmp_path_factory.mktemp("sam3_lib"))


@pytest.fixture(scope="module")
def library(checkpoint: pathlib.Path) -> Any:
    """The library's own `Sam3VideoModel` on the tiny checkpoint (default association config)."""
    return msv.Sam3VideoModel.from_pretrained(checkpoint).eval()


def _greedy_nms(ious: Any, probs: Any, threshold: float, use_iou_matrix: bool = True) -> Any:
    """What the hub kernel's `generic_nms` computes: best score first, drop IoU > threshold."""
    keep: list[int] = []
    for i in torch.argsort(probs, descending=True).tolist():
        if all(float(ious[i, k]) <= threshold for k in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


@pytest.fixture
def library_nms(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The library's detection NMS without the hub kernel; hole filling off (see the docstring)."""
    monkeypatch.setattr(msv, "cv_utils_kernel", types.SimpleNamespace(generic_nms=_greedy_nms))
    monkeypatch.setattr(msv, "fill_holes_in_mask_scores", lambda masks, *a, **k: masks)
    yield


_frames = moving_square


def _library_stream(
    model: Any, checkpoint: pathlib.Path, phrases: list[str], frames: list[np.ndarray]
) -> list[dict[int, tuple[np.ndarray, float]]]:
    """The library's streaming session: per frame, object id -> (mask (H, W) bool, score).

    Masks are the model's low-resolution logits of every object (new ones: the detection's),
    resized to the frame as the processor does, > 0, before the processor's pixel-wise
    non-overlap step (a display choice, not association).
    """
    from transformers import Sam2VideoVideoProcessor, Sam3ImageProcessor, Sam3VideoProcessor

    from seg_ros.engine.sam.detector import load_tokenizer

    size = int(model.config.detector_config.vision_config.backbone_config.image_size)
    processor = Sam3VideoProcessor(
        Sam3ImageProcessor(size={"height": size, "width": size}),
        Sam2VideoVideoProcessor(size={"height": size, "width": size}),
        load_tokenizer(str(checkpoint)),
        target_size=size,
    )
    session = processor.init_video_session(inference_device="cpu")
    processor.add_text_prompt(session, phrases)
    answers = []
    for frame in frames:
        inputs = processor(images=frame, return_tensors="pt")
        out = model(inference_session=session, frame=inputs.pixel_values[0])
        answer = {}
        for obj_id, low in out.obj_id_to_mask.items():
            full = torch.nn.functional.interpolate(
                low[None].float(), size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False
            )[0, 0]
            answer[int(obj_id)] = ((full > 0).numpy(), float(out.obj_id_to_score[obj_id]))
        answers.append(answer)
    return answers


# ---------------------------------------------------------------------------- 1. the streams
@pytest.mark.parametrize("phrases", [["red mug"], ["red mug", "box"]])
def test_a_standing_query_agrees_with_the_librarys_streaming_session(
    library: Any, checkpoint: pathlib.Path, library_nms: None, phrases: list[str]
) -> None:
    frames = _frames(5)
    theirs = _library_stream(library, checkpoint, phrases, frames)

    backend = build_backend(BackendConfig(backend="sam3", model=str(checkpoint), device="cpu"))
    assert backend.nms_iou == pytest.approx(library.det_nms_thresh)  # the checkpoint's own
    detected: list[list[Detection]] = []
    real_detect = backend.detect

    def spy(*args: Any, **kwargs: Any) -> Any:
        found = real_detect(*args, **kwargs)
        detected[-1].extend(Detection(d.mask, d.score) for d in found)
        return found

    backend.detect = spy  # type: ignore[method-assign]
    # The library's detection floor is score_threshold_detection; the new-object score is ours
    # by default and equals its new_det_thresh.
    session = SegmentationSession(
        backend, max_objects=8, score_threshold=library.score_threshold_detection
    )
    session.add_query(phrases, QueryOptions(every_n=1))
    ours = []
    for frame in frames:
        detected.append([])
        result = session.step(frame)
        ours.append({o.object_id: o for o in result.objects})

    # Frame 0: nothing tracked; the same detections become objects, in score order.
    first = sorted(theirs[0].items(), key=lambda kv: -kv[1][1])
    assert first, "the biased tiny model finds the phrases on frame 0"
    assert all(score >= library.new_det_thresh for _, (_, score) in first)  # see test_..._weak
    assert len(ours[0]) == len(first) == len(detected[0]) == len(phrases)
    pairs = dict(zip([obj_id for obj_id, _ in first], ours[0], strict=True))
    by_score = sorted(detected[0], key=lambda d: -d.score)
    for (obj_id, (mask, score)), det in zip(first, by_score, strict=True):
        assert det.score == pytest.approx(score, abs=1e-5)
        assert np.array_equal(det.mask, mask)  # the same detector, resize and threshold
        assert mask_iou(ours[0][pairs[obj_id]].mask, mask) > 0.99
    # Later frames: the detections fall on the tracked objects: associated, no new id in either,
    # and the two trackers' masks agree.
    for n in range(1, len(frames)):
        assert sorted(theirs[n]) == sorted(theirs[0]), f"library ids changed on frame {n}"
        assert sorted(ours[n]) == sorted(ours[0]), f"our ids changed on frame {n}"
        assert detected[n], f"no detection on frame {n}: nothing was associated"
        for obj_id, value in pairs.items():
            obj = ours[n][value]
            assert obj.visible and obj.query == "q1"
            iou = mask_iou(obj.mask, theirs[n][obj_id][0])
            assert iou > 0.95, (n, obj_id, iou)
    stats = session.queries[0].stats
    assert stats.added == len(phrases) and stats.errors == 0
    session.close()


def test_defaults_follow_the_librarys_association_config(library: Any) -> None:
    options = QueryOptions()
    assert options.match_iou == pytest.approx(library.assoc_iou_thresh)
    assert options.new_instance_threshold == pytest.approx(library.new_det_thresh)
    assert options.timeout_frames == library.init_trk_keep_alive


# ---------------------------------------------------------------------------- 2. the policy
SIZE = 32  # the library associates on its low-resolution masks (32 x 32 for the tiny model)


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _logits(masks: list[np.ndarray]) -> Any:
    if not masks:
        return torch.zeros(0, SIZE, SIZE)
    return torch.from_numpy(np.stack(masks)).float() * 2.0 - 1.0  # > 0 inside


class Case:
    """Detections (mask, score, prompt) and tracks (id, current mask, last seen mask, prompt);
    our query is prompt 0: its tracks are its members, the others' visible masks `others`."""

    def __init__(
        self,
        detections: list[tuple[np.ndarray, float, int]],
        tracks: list[tuple[int, np.ndarray, np.ndarray, int]],
    ):
        self.detections = sorted(detections, key=lambda d: -d[1])  # both take them best first
        self.tracks = tracks

    def library(self, model: Any) -> dict[str, Any]:
        new, unmatched, det_to_trk, _, empty = model._associate_det_trk(
            det_masks=_logits([m for m, _, _ in self.detections]),
            det_scores=torch.tensor([s for _, s, _ in self.detections], dtype=torch.float32),
            trk_masks=_logits([m for _, m, _, _ in self.tracks]),
            trk_obj_ids=[t for t, _, _, _ in self.tracks],
            det_prompt_ids=torch.tensor([p for _, _, p in self.detections], dtype=torch.long),
            trk_prompt_ids=torch.tensor([p for _, _, _, p in self.tracks], dtype=torch.long),
        )
        return {
            "new": sorted(new),
            "matched": {d: sorted(ids) for d, ids in det_to_trk.items() if ids},
            "unmatched": sorted(unmatched),
            "empty": sorted(empty),
        }

    def ours(self, options: QueryOptions | None = None) -> Any:
        members = {
            t: (current if current.any() else last, bool(current.any()))
            for t, current, last, prompt in self.tracks
            if prompt == 0
        }
        others = [m for _, m, _, prompt in self.tracks if prompt != 0 and m.any()]
        found = [Detection(m, s) for m, s, _ in self.detections]
        return associate(found, members, others, options or QueryOptions())


def test_nothing_tracked_every_confident_detection_is_new(library: Any) -> None:
    case = Case([(_box(0, 0, 8, 8), 0.95, 0), (_box(20, 20, 30, 30), 0.8, 0)], [])
    lib, ours = case.library(library), case.ours()
    assert lib["new"] == sorted(ours.new) == [0, 1]


def test_a_detection_on_a_tracked_object_is_associated_not_new(library: Any) -> None:
    """A close overlap (IoU 0.72) and a loose one (0.33: >= assoc_iou_thresh 0.1, below
    trk_assoc_iou_thresh 0.5): associated with the track, not new, in both. On the loose one the
    library also lists the track unmatched (its keep-alive goes +1 -1); ours confirms it."""
    track = _box(4, 4, 16, 16)
    for det, unmatched in [(_box(5, 5, 17, 17), []), (_box(10, 4, 22, 16), [7])]:
        case = Case([(det, 0.9, 0)], [(7, track, track, 0)])
        lib, ours = case.library(library), case.ours()
        assert lib["new"] == [] and ours.new == ()
        assert lib["matched"] == {0: [7]} and ours.confirmed == {7: 0}
        assert lib["unmatched"] == unmatched and ours.refound == ()


def test_a_separate_confident_detection_is_new_a_weak_one_is_not(library: Any) -> None:
    track = _box(0, 0, 10, 10)
    case = Case(
        [
            (_box(20, 20, 30, 30), 0.9, 0),
            (_box(0, 20, 8, 30), 0.6, 0),
            (_box(1, 1, 10, 10), 0.8, 0),
        ],
        [(7, track, track, 0)],
    )  # best first: 0 = 0.9 clear of the track, 1 = 0.8 on it, 2 = 0.6 clear of it
    lib, ours = case.library(library), case.ours()
    assert lib["new"] == list(ours.new) == [0]
    assert lib["matched"] == {1: [7]} and ours.confirmed == {7: 1}
    assert ours.weak == (2,)  # 0.6 < new_det_thresh 0.7: not new in the library either


def test_a_track_without_detection_is_unmatched_in_both(library: Any) -> None:
    track = _box(0, 0, 10, 10)
    case = Case([(_box(20, 20, 30, 30), 0.9, 0)], [(7, track, track, 0)])
    lib, ours = case.library(library), case.ours()
    assert lib["unmatched"] == [7] and 7 not in ours.confirmed
    assert lib["new"] == sorted(ours.new) == [0]


# ------------------------------------------------------------------- deviations, documented
def test_deviation_one_to_one_a_second_instance_next_to_a_track_gets_an_id(library: Any) -> None:
    """A person walking in front of a tracked one: Sam3Video matches both detections to the
    track (many-to-one) and creates nothing; ours gives the track the better detection and makes
    the other new, as it is no duplicate (IoU < duplicate_iou with the track)."""
    track = _box(4, 4, 16, 16)
    on_track, next_to_it = _box(4, 4, 16, 17), _box(12, 4, 24, 16)  # IoU 0.92, 0.2 with track
    case = Case([(on_track, 0.95, 0), (next_to_it, 0.9, 0)], [(7, track, track, 0)])
    lib, ours = case.library(library), case.ours()
    assert lib["new"] == [] and lib["matched"] == {0: [7], 1: [7]}
    assert ours.confirmed == {7: 0} and ours.new == (1,)


def test_deviation_a_duplicate_of_another_prompts_object_is_not_new(library: Any) -> None:
    """Two queries on one thing ("mug", "cup"), or a click and a query: Sam3Video zeroes
    cross-prompt IoUs and starts a second id on the same pixels; ours calls it a duplicate."""
    clicked = _box(4, 4, 16, 16)
    case = Case([(_box(4, 4, 16, 17), 0.95, 0)], [(3, clicked, clicked, 1)])
    lib, ours = case.library(library), case.ours()
    assert lib["new"] == [0] and lib["matched"] == {}
    assert ours.new == () and ours.duplicates == (0,)


def test_deviation_a_lost_object_is_found_again_by_its_last_mask(library: Any) -> None:
    """The object left and comes back a little further: the library only sees the tracker's
    current, empty mask, so the detection is new (a second id); ours matches it to the lost
    member by position (its last mask) and re-prompts the old id."""
    empty, last = _box(0, 0, 0, 0), _box(4, 4, 14, 14)
    back = _box(10, 6, 20, 16)  # IoU 0.19 with the last mask
    far = _box(8, 8, 28, 28)  # IoU 0.08, centroids 0.45 of its diagonal apart: by position
    for det in (back, far):
        case = Case([(det, 0.9, 0)], [(7, empty, last, 0)])
        lib, ours = case.library(library), case.ours()
        assert lib["new"] == [0] and lib["empty"] == [7]
        assert ours.confirmed == {7: 0} and ours.refound == (7,) and ours.new == ()


def test_deviation_nothing_tracked_a_weak_detection_starts_nothing(library: Any) -> None:
    """With no track at all the library takes every detection as new, whatever new_det_thresh
    says (only the detection floor, score_threshold_detection 0.5, applies); ours keeps the
    new-object score on every frame, so whether a 0.6 detection starts an object does not
    depend on whether something else is tracked."""
    case = Case([(_box(0, 0, 8, 8), 0.6, 0)], [])
    lib, ours = case.library(library), case.ours()
    assert lib["new"] == [0]
    assert ours.new == () and ours.weak == (0,)
    assert case.ours(QueryOptions(new_instance_threshold=0.5)).new == (0,)


def test_deviation_overlapping_new_detections_are_one_object(library: Any) -> None:
    """The library leaves overlapping detections to its NMS (det_nms_thresh 0.1, skipped
    without the hub kernel) and creates them all; ours also refuses a new detection that
    duplicates one accepted on the same frame (IoU >= duplicate_iou)."""
    case = Case([(_box(0, 0, 10, 10), 0.9, 0), (_box(0, 0, 10, 12), 0.8, 0)], [])
    lib, ours = case.library(library), case.ours()
    assert lib["new"] == [0, 1]
    assert ours.new == (0,) and ours.duplicates == (1,)
