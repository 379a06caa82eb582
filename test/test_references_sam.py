"""References (an object shown on an image that is not a frame) on the SAM family: the bounded
tracker (tiny random-weight SAM 2.1 and EdgeTAM) and the sam2 / sam3 backends (CPU, no download).

What is proved here:
- a reference made of frame 0 of a clip, then frames 1..N streamed, tracks exactly as a prompt on
  frame 0 of the stream then frames 1..N (mask logits, object score, object pointer, bit for
  bit, objects batched or not, one library session or one per object), for a mask, a box and
  clicks, past the memory and pointer windows; with a sam3 tracker too (backend level);
- references are bounded (MAX_REFERENCES per object, oldest dropped, held bytes flat), apart from
  the frames (no frame index, not pruned, not evicted by prompts' max_conditioning_frames, may
  come before the first frame) and removable (the memory is then as if never given; the last
  one of an object without a prompted frame is refused, the object kept);
- a reference-only object is reported visible only while the model finds it;
- bad requests are refused with a clear error and change nothing; the sam3 backbone output of a
  reference image is not kept.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import numpy as np
import pytest
import torch

from seg_ros.engine.backends.base import MAX_REFERENCES
from seg_ros.engine.backends.sam2 import Sam2Backend
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import FrameError, PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.sam.tracker import StreamingVideoTracker, TrackedMask
from seg_ros.engine.session import SegmentationSession
from seg_ros.testing.tiny_models import TINY_IMAGE_SIZE, bias_object_scores, build_model, save_tiny

KINDS = ("sam2", "edgetam")
S = TINY_IMAGE_SIZE
H, W = 96, 160  # stream frames (another size and aspect than the model's square input)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {kind: build_model(kind) for kind in KINDS}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny(kind, root / kind) for kind in KINDS}


def clip(count: int, seed: int = 1) -> torch.Tensor:
    """`count` preprocessed-looking input frames (1, 3, S, S)."""
    return torch.randn(count, 1, 3, S, S, generator=torch.Generator().manual_seed(seed))


def blob() -> torch.Tensor:
    mask = torch.zeros(S, S)
    mask[40:80, 30:70] = 1.0
    return mask


def images(count: int, height: int = H, width: int = W, seed: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def assert_same(a: TrackedMask, b: TrackedMask, atol: float) -> float:
    """Both answers agree (mask logits, object score, pointer) within `atol`; the worst gap."""
    gaps = [
        float((a.mask_logits - b.mask_logits).abs().max()),
        abs(a.object_score_logit - b.object_score_logit),
        float((a.object_pointer - b.object_pointer).abs().max()),
    ]
    assert max(gaps) <= atol, gaps
    return max(gaps)


PROMPTS: dict[str, dict[str, Any]] = {
    "mask": {"mask": blob()},
    "box": {"box": (30.0, 40.0, 70.0, 80.0)},
    "clicks": {"points": [(50.0, 60.0), (90.0, 20.0)], "labels": [1, 0]},
}


# ---------------------------------------------------------------------- the key equality
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prompt", list(PROMPTS))
@pytest.mark.parametrize("batched", [False, True])
def test_a_reference_tracks_as_a_prompt_on_the_frame_before(
    models: dict[str, Any], kind: str, prompt: str, batched: bool
) -> None:
    """Frame 0 of the clip as a reference == a prompt on frame 0 of the stream, over 20 frames
    (longer than the 6-frame memory and the 15-frame pointer windows), with a second object
    prompted on the stream alongside (its answers must not change either)."""
    # Bit for bit, batched too: both trackers batch the same objects the same way.
    check_equality(models[kind], PROMPTS[prompt], 0.0, batch_objects=batched)


@pytest.mark.parametrize("kind", KINDS)
def test_a_reference_in_one_shared_library_session(models: dict[str, Any], kind: str) -> None:
    """`independent_objects=False` (a prompt re-tracks the other objects on its frame): the
    reference-only object is re-tracked as the prompted one would be."""
    check_equality(
        models[kind], PROMPTS["mask"], 0.0, batch_objects=False, independent_objects=False
    )


def check_equality(model: Any, kwargs: dict[str, Any], atol: float, **options: Any) -> None:
    frames = clip(21)
    prompted = StreamingVideoTracker(model, **options)
    referenced = StreamingVideoTracker(model, **options)
    prompted.step(0, frames[0])
    first = prompted.add_prompt(0, 1, **kwargs)
    reference, on_image = referenced.add_reference(1, frames[0], **kwargs)
    assert reference == 1
    assert_same(first, on_image, 0.0)  # decoded as a conditioning frame: the same answer
    prompted.step(1, frames[1])
    referenced.step(1, frames[1])
    for tracker in (prompted, referenced):
        tracker.add_prompt(1, 2, points=[(100.0, 100.0)], labels=[1])
    for t in range(2, 21):
        a, b = prompted.step(t, frames[t]), referenced.step(t, frames[t])
        assert set(a) == set(b) == {1, 2}
        for obj in (1, 2):
            assert_same(a[obj], b[obj], atol)
    assert (a[1].mask_logits > 0).any()  # not vacuous: the object is there
    # Apart from the frames: the reference stream has no frame 0 and no prompted frame.
    assert prompted.conditioning_frames(1) == [0]
    assert referenced.conditioning_frames(1) == []
    assert not referenced.has_frame(0) and referenced.reference_positions(1) == {1: 0}


def test_a_sam3_reference_tracks_as_a_prompt_on_the_frame_before(sam3_backend: Any) -> None:
    """Backend level, sam3: its TRACKER takes the reference (bool masks and scores equal)."""
    frames = sam3_frames(8)
    mask = np.zeros(frames[0].shape[:2], bool)
    mask[20:40, 10:30] = True
    answers = []
    for use_reference in (False, True):
        sam3_backend.reset()
        if use_reference:
            sam3_backend.add_reference(1, frames[0], Prompt(mask=mask))
        else:
            sam3_backend.step(0, frames[0])
            sam3_backend.add_prompt(0, 1, Prompt(mask=mask))
        answers.append([sam3_backend.step(t, frames[t])[1] for t in range(1, 8)])
    for a, b in zip(*answers, strict=True):
        assert np.array_equal(a.mask, b.mask) and a.score == b.score and a.visible == b.visible
    assert any(a.mask.any() for a in answers[0])
    assert sam3_backend.references(1) == [1]


# ---------------------------------------------------------------------- bounded, removable
@pytest.mark.parametrize("kind", KINDS)
def test_references_are_bounded_and_held_memory_is_flat(models: dict[str, Any], kind: str) -> None:
    tracker = StreamingVideoTracker(models[kind], max_references=MAX_REFERENCES)
    frames = clip(40, seed=3)
    for n in range(10):
        tracker.add_reference(1, frames[n], mask=blob())
    assert tracker.references(1) == list(range(7, 11))  # ids increase; the oldest went
    assert tracker.stats()["max_references_per_object"] == MAX_REFERENCES
    held = []
    for t in range(40):
        tracker.step(t, frames[t])
        held.append(tracker.held_bytes())
    # Windows full (6 frames, 6 spatial memories, 15 pointers + 6): flat from then on.
    assert len(set(held[25:])) == 1 and held[-1] > 0
    assert tracker.references(1) == list(range(7, 11))  # never pruned by the memory window


@pytest.mark.parametrize("kind", KINDS)
def test_prompts_do_not_evict_references(models: dict[str, Any], kind: str) -> None:
    tracker = StreamingVideoTracker(
        models[kind], max_conditioning_frames=2, corrections_as_conditioning=True
    )
    frames = clip(6, seed=4)
    tracker.add_reference(1, frames[5], mask=blob())
    for t in range(5):
        tracker.step(t, frames[t])
        tracker.add_prompt(t, 1, points=[(60.0, 60.0)], labels=[1], box=(30, 30, 90, 90))
    assert tracker.conditioning_frames(1) == [3, 4]  # prompts bounded by their own count
    assert tracker.references(1) == [1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_removed_reference_leaves_no_trace(models: dict[str, Any], kind: str) -> None:
    """Prompt + reference, reference removed, then streaming == never given (bit for bit)."""
    model, frames = models[kind], clip(10, seed=5)
    plain = StreamingVideoTracker(model, batch_objects=False)
    edited = StreamingVideoTracker(model, batch_objects=False)
    for tracker in (plain, edited):
        tracker.step(0, frames[0])
        tracker.add_prompt(0, 1, points=[(50.0, 50.0)], labels=[1])
    reference, _ = edited.add_reference(1, frames[9], mask=blob())
    edited.add_reference(1, frames[8], box=(10, 10, 60, 60))
    assert edited.held_bytes() > plain.held_bytes()
    with_refs = edited.step(1, frames[1])[1]
    without = plain.step(1, frames[1])[1]
    assert float((with_refs.mask_logits - without.mask_logits).abs().max()) > 0  # attended
    plain.discard_frame(1)
    edited.discard_frame(1)
    edited.remove_reference(1, reference)
    edited.remove_reference(1, reference + 1)
    assert edited.references(1) == [] and edited.held_bytes() == plain.held_bytes()
    for t in range(1, 10):
        assert_same(plain.step(t, frames[t])[1], edited.step(t, frames[t])[1], 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_the_last_reference_of_an_unprompted_object_is_kept(
    models: dict[str, Any], kind: str
) -> None:
    """Refused (PromptError), not lost: SAM tracks from a prompted frame or a reference (a
    correction on a tracked frame is no prompted frame unless it is kept as conditioning)."""
    tracker = StreamingVideoTracker(models[kind], corrections_as_conditioning=True)
    frames = clip(4, seed=6)
    tracker.add_reference(1, frames[3], mask=blob())
    tracker.add_reference(1, frames[2], mask=blob())
    tracker.step(0, frames[0])
    tracker.remove_reference(1, 1)  # another one stays
    with pytest.raises(PromptError, match="remove the object instead"):
        tracker.remove_reference(1, 2)
    assert tracker.references(1) == [2] and tracker.object_ids == [1]
    assert 1 in tracker.step(1, frames[1])  # still tracked
    with pytest.raises(PromptError, match="no reference 7"):
        tracker.remove_reference(1, 7)
    with pytest.raises(PromptError, match="object 5 is not tracked"):
        tracker.remove_reference(5, 1)
    # Once prompted on a frame, its last reference may go.
    tracker.add_prompt(1, 1, points=[(60.0, 60.0)], labels=[1])
    tracker.remove_reference(1, 2)
    assert tracker.references(1) == [] and 1 in tracker.step(2, frames[2])
    tracker.remove_object(1)
    assert tracker.references(1) == []


# ---------------------------------------------------------------------- not a frame
@pytest.mark.parametrize("kind", KINDS)
def test_a_reference_is_not_a_frame(models: dict[str, Any], kind: str) -> None:
    tracker = StreamingVideoTracker(models[kind])
    frames = clip(4, seed=7)
    tracker.add_reference(1, frames[3], mask=blob())  # before the first frame
    assert tracker.latest_frame is None and tracker.stats()["frames_in_memory"] == 0
    assert not tracker.has_frame(-1) and not tracker.has_frame(0)
    with pytest.raises(PromptError, match="no longer in memory"):
        tracker.add_prompt(-1, 1, points=[(5.0, 5.0)], labels=[1])
    tracker.step(0, frames[0])  # the stream may start at 0: the reference takes no index
    tracker.step(1, frames[1])
    assert tracker.tracked_frames(1) == [0, 1] and tracker.conditioning_frames(1) == []
    assert tracker.latest_frame == 1 and tracker.stats()["frames_in_memory"] == 2
    assert tracker.reference_positions(1) == {1: -1}  # just before frame 0
    tracker.reset()
    assert tracker.references(1) == [] and tracker.object_ids == []


@pytest.mark.parametrize("kind", KINDS)
def test_a_reference_added_to_a_tracked_object_stands_before_the_next_frame(
    models: dict[str, Any], kind: str
) -> None:
    tracker = StreamingVideoTracker(models[kind])
    frames = clip(8, seed=12)
    tracker.step(0, frames[0])
    tracker.add_prompt(0, 1, points=[(60.0, 60.0)], labels=[1])
    for t in range(1, 6):
        tracker.step(t, frames[t])
    tracker.add_reference(1, frames[7], mask=blob())
    assert tracker.reference_positions(1) == {1: None}
    tracker.step(6, frames[6])
    assert tracker.reference_positions(1) == {1: 5}
    tracker.discard_frame(6)  # a frame that failed: its placement is undone with it
    assert tracker.reference_positions(1) == {1: None} and tracker.latest_frame == 5
    tracker.step(7, frames[6])
    assert tracker.reference_positions(1) == {1: 6}
    assert tracker.conditioning_frames(1) == [0]  # the prompted frame is unchanged


@pytest.mark.parametrize("kind", KINDS)
def test_bad_reference_requests_are_refused_and_change_nothing(
    models: dict[str, Any], kind: str
) -> None:
    tracker = StreamingVideoTracker(models[kind])
    frames = clip(2, seed=8)
    tracker.add_reference(1, frames[0], mask=blob())
    held = tracker.held_bytes()
    with pytest.raises(PromptError, match="needs points, a box or a mask"):
        tracker.add_reference(1, frames[1])
    with pytest.raises(PromptError, match="2 points but 1 point labels"):
        tracker.add_reference(1, frames[1], points=[(1.0, 1.0), (2.0, 2.0)], labels=[1])
    with pytest.raises(ValueError, match=r"pixel_values must be \(1, 3, 128, 128\)"):
        tracker.add_reference(2, torch.zeros(1, 3, 64, 64), mask=blob())
    with pytest.raises(PromptError, match="mask must be 128x128"):
        tracker.add_reference(2, frames[1], mask=torch.ones(64, 64))
    assert tracker.references(1) == [1] and tracker.object_ids == [1]
    assert tracker.held_bytes() == held
    assert 1 in tracker.step(0, frames[1])


# ---------------------------------------------------------------------- backends
def sam2_backend(folder: pathlib.Path) -> Sam2Backend:
    backend = build_backend(BackendConfig(backend="sam2", model=str(folder), device="cpu"))
    assert isinstance(backend, Sam2Backend)
    return backend


@pytest.mark.parametrize("kind", KINDS)
def test_backend_reference_of_another_size_found_and_lost(
    folders: dict[str, pathlib.Path], kind: str
) -> None:
    """A 200x120 reference for a 160x96 stream: the answer is at the reference's size; on the
    stream the object is listed every frame, visible only while the model finds it (its
    object-score head, steered here: random weights cannot recognise anything)."""
    backend = sam2_backend(folders[kind])
    assert backend.capabilities.references
    photo = images(1, height=120, width=200, seed=9)[0]
    shown = backend.add_reference(3, photo, Prompt(box=[40, 30, 120, 90]))
    assert shown.reference == 1 and shown.mask.shape == (120, 200) and 0.0 <= shown.score <= 1.0
    # Decoded on the reference image as a one-shot box there (same coordinates, same decoder).
    one_shot = backend.segment(photo, Prompt(box=[40, 30, 120, 90]))[0]
    assert np.array_equal(shown.mask, one_shot.mask) and shown.mask.any()
    mask = np.zeros((120, 200), bool)
    mask[10:50, 150:190] = True
    second = backend.add_reference(3, photo, Prompt(mask=mask))
    assert second.reference == 2 and np.array_equal(second.mask, mask)  # a mask IS the region
    model = backend.tracker.model
    seen = []
    for t, image in enumerate(images(12, seed=10)):
        bias_object_scores(model, -30.0 if t < 6 else 30.0)  # absent, then "found"
        out = backend.step(t, image)[3]
        assert out.mask.shape == (H, W)
        seen.append(out.visible)
        assert out.visible == bool(out.mask.any()) and (out.score > 0.5) == out.visible
    assert seen == [False] * 6 + [True] * 6
    assert backend.references(3) == [1, 2]
    backend.remove_reference(3, 1)
    assert backend.references(3) == [2]
    backend.close()


def test_backend_refuses_bad_references_clearly(folders: dict[str, pathlib.Path]) -> None:
    backend = sam2_backend(folders["sam2"])
    image = images(1)[0]
    backend.add_reference(1, image, Prompt(points=[[20, 20]]))
    bad: list[tuple[Any, Prompt, type[Exception], str]] = [
        (image.astype(np.float32), Prompt(points=[[5, 5]]), FrameError, "RGB uint8"),
        (image[:, :, 0], Prompt(points=[[5, 5]]), FrameError, "RGB uint8"),
        (image[:1, :1], Prompt(points=[[0, 0]]), FrameError, "too small"),
        ([[0, 0, 0]], Prompt(points=[[0, 0]]), FrameError, "numpy array"),
        (image, Prompt(points=[[W + 5, 5]]), PromptError, "outside the 160x96 image"),
        (image, Prompt(box=[0, 0, W + 1, 10]), PromptError, "exceeds the 160x96 image"),
        (image, Prompt(mask=np.ones((10, 10), bool)), PromptError, "mask is 10x10"),
        (image, Prompt(text="cup"), PromptError, "points, a box or a mask"),
    ]
    for picture, prompt, error, message in bad:
        with pytest.raises(error, match=message):
            backend.add_reference(2, picture, prompt)
    with pytest.raises(PromptError, match="remove the object instead"):
        backend.remove_reference(1, 1)
    with pytest.raises(PromptError, match="no reference 4"):
        backend.remove_reference(1, 4)
    assert backend.tracker.object_ids == [1] and backend.references(1) == [1]
    assert backend.references(2) == []
    assert 1 in backend.step(0, image)
    backend.close()


def test_session_refuses_to_remove_every_reference_of_an_unprompted_object(
    folders: dict[str, pathlib.Path],
) -> None:
    """`remove_reference(id, 0)` on an object made from two references and never prompted:
    refused before anything is removed (it used to remove reference 1, then fail on 2: the
    request failed and still changed the object). An object prompted on the stream keeps
    its prompted frame: all its references go."""
    session = SegmentationSession(sam2_backend(folders["sam2"]))
    image = images(1)[0]
    obj = session.add_reference(image, Prompt(points=[[20, 20]])).object_id
    session.add_reference(image, Prompt(points=[[60, 40]]), obj)
    with pytest.raises(PromptError, match="remove the object instead"):
        session.remove_reference(obj)
    assert session.references(obj) == [1, 2]
    assert session.remove_reference(obj, 1) == [1]  # one of two: another stays
    with pytest.raises(PromptError, match="reference 2 is all object"):
        session.remove_reference(obj, 2)
    assert session.references(obj) == [2]
    session.step(image, stamp_ns=1)
    prompted = session.add_prompt(Prompt(points=[[60, 40]])).object_id
    session.add_reference(image, Prompt(points=[[60, 40]]), prompted)
    session.add_reference(image, Prompt(points=[[62, 42]]), prompted)
    assert session.remove_reference(prompted) == [1, 2] and session.references(prompted) == []
    assert session.object_ids == [obj, prompted] and session.references(obj) == [2]
    session.close()


# ---------------------------------------------------------------------- sam3
@pytest.fixture(scope="module")
def sam3_backend(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("SAM 3 needs torchvision")
    from seg_ros.engine.backends.sam3 import Sam3Backend
    from seg_ros.testing.tiny_sam3 import tiny_sam3

    folder = tiny_sam3(tmp_path_factory.mktemp("sam3"))
    backend = build_backend(BackendConfig(backend="sam3", model=str(folder), device="cpu"))
    assert isinstance(backend, Sam3Backend)
    yield backend
    backend.close()


def sam3_frames(n: int) -> list[np.ndarray]:
    """A bright square moving on a gradient (the sam3 tests' scene), RGB uint8."""
    from seg_ros.testing.tiny_sam3 import moving_square

    return moving_square(n)


def test_sam3_reference_backbone_output_is_not_kept(sam3_backend: Any) -> None:
    sam3_backend.reset()
    assert sam3_backend.capabilities.references
    frames = sam3_frames(3)
    photo = images(1, height=50, width=70, seed=11)[0]
    runs = sam3_backend.stats()["backbone_runs"]
    shown = sam3_backend.add_reference(1, photo, Prompt(box=[10, 10, 40, 30]))
    assert shown.mask.shape == (50, 70) and shown.reference == 1
    assert sam3_backend.stats()["backbone_runs"] == runs + 1  # the ViT ran once on it
    assert sam3_backend.stats()["frames_in_memory"] == 0  # not a frame
    # Not memoised: a one-shot request on the same image runs the ViT again.
    sam3_backend.segment(photo, Prompt(points=[[20, 20]]))
    assert sam3_backend.stats()["backbone_runs"] == runs + 2
    before = sam3_backend.stats()["tracker_held_mb"]
    sam3_backend.add_reference(1, photo, Prompt(points=[[30, 20]]))
    assert sam3_backend.stats()["tracker_held_mb"] > before  # its memory entry is held
    for t, frame in enumerate(frames):
        assert 1 in sam3_backend.step(t, frame)
    assert sam3_backend.references(1) == [1, 2]
    sam3_backend.remove_reference(1, 2)
    assert sam3_backend.references(1) == [1]
    with pytest.raises(FrameError):
        sam3_backend.add_reference(2, photo.astype(np.float64), Prompt(points=[[5, 5]]))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_references_on_gpu(folders: dict[str, pathlib.Path], dtype: str) -> None:
    """On CUDA (objects batched, the default there): a reference tracks as the prompt on the
    frame before (float32: same masks and scores); half precision runs and answers sizes."""
    answers = []
    for use_reference in (False, True):
        backend = build_backend(
            BackendConfig(backend="sam2", model=str(folders["sam2"]), device="cuda", dtype=dtype)
        )
        stream = images(8, seed=13)
        photo = images(1, height=120, width=200, seed=14)[0]
        if use_reference:
            shown = backend.add_reference(1, stream[0], Prompt(box=[30, 20, 90, 70]))
            assert shown.mask.shape == (H, W)
        else:
            backend.step(0, stream[0])
            backend.add_prompt(0, 1, Prompt(box=[30, 20, 90, 70]))
        outs = [backend.step(t, stream[t]) for t in range(1, 8)]
        assert all(o[1].mask.shape == (H, W) and 0.0 <= o[1].score <= 1.0 for o in outs)
        answers.append([o[1] for o in outs])
        # An image of another size: the answer at its size, the object then on the stream.
        assert backend.add_reference(2, photo, Prompt(points=[[50, 60]])).mask.shape == (120, 200)
        assert backend.step(8, stream[0])[2].mask.shape == (H, W)
        backend.close()
    if dtype == "float32":
        for a, b in zip(*answers, strict=True):
            assert np.array_equal(a.mask, b.mask) and abs(a.score - b.score) < 1e-5


def test_the_benchmark_row_runs() -> None:
    """seg_ros.bench's references row on the tiny model (what the full suite runs at 1024 px)."""
    from seg_ros.bench.sam2_bench import bench_references

    row = bench_references("tiny-sam2", S, "cpu", repeats=1, threads=1)
    assert row["suite"] == "sam2 references" and row["input_size"] == S
    assert row["add_reference_ms"] > 0 and row["step_ms_reference_obj"] > 0
    assert row["step_ms_prompted_obj"] > 0
    # One reference: spatial memory (64 channels on the 8x8 top level at 128 px, bfloat16 as the
    # library stores it), its positions (float32, shared when equal storage) and a pointer.
    assert 8 <= row["reference_kb"] <= 64
