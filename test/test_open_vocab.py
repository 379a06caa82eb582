"""Text on the light models: an open-vocabulary detector + SAM 2.1 / EdgeTAM (CPU, no download).

What is proved here:
- the pure post-processing (engine/sam/open_vocab.py): phrases, token spans, boxes in source
  pixels for non-square images in both detector frames (Grounding DINO: the image; OWLv2: the
  image padded to a square), thresholds, max_objects, per-phrase duplicate removal;
- tiny random-weight Grounding DINO, MM-Grounding-DINO and OWLv2 folders load through the one
  generic path and run their real forward; bad folders are refused at load, naming the parameter;
- `Sam2Backend.detect` turns the detector's boxes (exactly those) into SAM 2 masks on the frame's
  cached features: one image-encoder pass per frame, however many requests;
- without a detector text is refused naming `text_detector`; capabilities follow the instance;
- `SegmentationSession.add_text` / text `segment` work on sam2 + detector; seg-ros-download
  verifies a detector folder.
"""

from __future__ import annotations

import pathlib
import shutil
from typing import Any

import numpy as np
import pytest
import torch

from seg_ros.engine.backends.sam2 import Sam2Backend
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import ModelLoadError, PromptError, UnsupportedPromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.sam.open_vocab import (
    FAMILIES,
    BoxDetection,
    grounding_phrase_scores,
    load_detector,
    phrase_spans,
    select_boxes,
    split_phrases,
)
from seg_ros.engine.session import SegmentationSession
from seg_ros.testing.tiny_detector import save_detector
from seg_ros.testing.tiny_models import save_tiny

H, W = 96, 160  # source frames of another size and aspect than the models' square inputs
DETECTORS = ("grounding-dino", "mm-grounding-dino", "owlv2")
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Tiny SAM 2.1 and the three tiny detectors, saved as seg-ros-download leaves them."""
    root = tmp_path_factory.mktemp("models")
    found = {kind: save_detector(root / kind, kind) for kind in DETECTORS}
    found["sam2"] = save_tiny("sam2", root / "sam2")
    return found


def build(
    folders: dict[str, pathlib.Path], detector: str | None = "grounding-dino", **kw: Any
) -> Sam2Backend:
    backend = build_backend(
        BackendConfig(
            backend="sam2",
            model=str(kw.pop("model", folders["sam2"])),
            device="cpu",
            text_detector=str(folders[detector]) if detector else "",
            **kw,
        )
    )
    assert isinstance(backend, Sam2Backend)
    return backend


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


# ---------------------------------------------------------------------- pure post-processing
def test_split_phrases() -> None:
    assert split_phrases("person. Red  mug.") == ("person", "red mug")
    assert split_phrases("cup") == ("cup",)
    assert split_phrases("cup. cup . .box") == ("cup", "box")
    with pytest.raises(PromptError, match="no phrase"):
        split_phrases(" . . ")
    with pytest.raises(PromptError, match="at most"):
        split_phrases(". ".join(f"p{i}" for i in range(40)))


def test_phrase_spans_follow_the_separators() -> None:
    # [CLS] person . red mug . [SEP]  (ids as bert-base-uncased's special tokens)
    ids = np.array([101, 7, 1012, 8, 9, 1012, 102])
    assert phrase_spans(ids, {101, 102, 1012}, 2) == [(1, 2), (3, 5)]
    # A phrase truncated away gets an empty span.
    assert phrase_spans(ids[:3], {101, 102, 1012}, 2) == [(1, 2), (0, 0)]
    probs = np.zeros((2, 7), np.float32)
    probs[0, 1], probs[1, 4], probs[1, 3] = 0.9, 0.8, 0.2
    scores = grounding_phrase_scores(probs, [(1, 2), (3, 5)])
    np.testing.assert_allclose(scores, [[0.9, 0.0], [0.0, 0.8]], rtol=1e-6)


def _boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, np.float32)


def test_select_boxes_in_source_pixels_for_both_frames() -> None:
    # One box at the centre, half the frame wide, a quarter high; a 96 x 160 source.
    boxes = _boxes((0.5, 0.5, 0.5, 0.25))
    scores = np.array([[0.9]], np.float32)
    # Grounding DINO: relative to the image itself.
    (det,) = select_boxes(
        scores, boxes, ("cup",), frame_wh=(W, H), source_size=(H, W), score_threshold=0.5
    )
    assert det.box.tolist() == pytest.approx([40.0, 36.0, 120.0, 60.0])
    assert det.label == "cup" and det.score == pytest.approx(0.9)
    # OWLv2: relative to the image padded to a 160 x 160 square (pad below): y scales by 160.
    (det,) = select_boxes(
        scores, boxes, ("cup",), frame_wh=(W, W), source_size=(H, W), score_threshold=0.5
    )
    assert det.box.tolist() == pytest.approx([40.0, 60.0, 120.0, 96.0])  # clipped at H = 96


def test_select_boxes_thresholds_order_labels_and_duplicates() -> None:
    phrases = ("person", "red mug")
    boxes = _boxes(
        (0.3, 0.5, 0.2, 0.4),  # person, 0.7
        (0.31, 0.5, 0.2, 0.4),  # the same person again, 0.6: a duplicate
        (0.3, 0.5, 0.1, 0.2),  # a red mug on the person, 0.8: another phrase, kept
        (0.8, 0.5, 0.1, 0.1),  # below the threshold
        (0.5, 0.5, 0.001, 0.5),  # thinner than a pixel
    )
    scores = np.array([[0.7, 0.1], [0.6, 0.2], [0.3, 0.8], [0.2, 0.29], [0.95, 0.0]], np.float32)
    kw: dict[str, Any] = {"frame_wh": (W, H), "source_size": (H, W)}
    found = select_boxes(scores, boxes, phrases, score_threshold=0.3, **kw)
    assert [(d.label, round(d.score, 2)) for d in found] == [("red mug", 0.8), ("person", 0.7)]
    # NMS off: the duplicate stays; max_objects cuts the tail.
    found = select_boxes(scores, boxes, phrases, score_threshold=0.3, nms_iou=1.0, **kw)
    assert [round(d.score, 2) for d in found] == [0.8, 0.7, 0.6]
    found = select_boxes(scores, boxes, phrases, score_threshold=0.0, max_objects=2, **kw)
    assert len(found) == 2
    assert select_boxes(scores, boxes, phrases, score_threshold=0.99, **kw) == []
    with pytest.raises(ValueError, match="phrase_scores"):
        select_boxes(scores[:, :1], boxes, phrases, score_threshold=0.3, **kw)
    with pytest.raises(ValueError, match="boxes"):
        select_boxes(scores, boxes[:2], phrases, score_threshold=0.3, **kw)


# ---------------------------------------------------------------------- loading, real forward
@pytest.mark.parametrize("kind", DETECTORS)
def test_each_family_loads_and_runs_its_real_forward(
    folders: dict[str, pathlib.Path], kind: str
) -> None:
    detector = load_detector(str(folders[kind]), device=CPU, dtype=torch.float32)
    assert detector.model_type == kind and detector.family == FAMILIES[kind]
    found = detector(image(), "person. red mug", score_threshold=0.0, max_objects=5)
    assert detector.runs == 1 and detector.last_ms > 0.0
    # Random weights: some boxes at threshold 0, each inside the source image, best first.
    assert 1 <= len(found) <= 5
    for det in found:
        assert isinstance(det, BoxDetection) and det.label in ("person", "red mug")
        x0, y0, x1, y1 = det.box.tolist()
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)


def test_grounding_outputs_map_to_phrases_and_source_pixels(
    folders: dict[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real processor and token layout; the model's output scripted (one box on the
    second phrase's last token) to check the whole path down to source pixels and the label."""
    detector = load_detector(str(folders["grounding-dino"]), device=CPU, dtype=torch.float32)
    queries = int(detector.model.config.num_queries)
    length = int(detector.model.config.max_text_len)
    seen: dict[str, Any] = {}

    def scripted(**inputs: Any) -> Any:
        seen.update(inputs)
        logits = torch.full((1, queries, length), -10.0)
        logits[0, 3, 4] = 3.0  # [CLS] person . red mug . [SEP]: token 4 is "mug"
        boxes = torch.full((1, queries, 4), 0.5)
        boxes[0, 3] = torch.tensor([0.25, 0.75, 0.5, 0.5])
        return type("Out", (), {"logits": logits, "pred_boxes": boxes})()

    monkeypatch.setattr(detector, "model", scripted)
    (det,) = detector(image(), "person. red mug", score_threshold=0.5)
    assert seen["input_ids"].shape[1] == 7
    assert det.label == "red mug" and det.score == pytest.approx(
        float(torch.sigmoid(torch.tensor(3.0)))
    )
    assert det.box.tolist() == pytest.approx([0.0, 48.0, 80.0, 96.0])


def _break(folder: pathlib.Path, tmp: pathlib.Path, how: str) -> pathlib.Path:
    bad = tmp / how
    shutil.copytree(folder, bad)
    if how == "corrupt":
        weights = bad / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "pickle":
        (bad / "model.safetensors").rename(bad / "pytorch_model.bin")
    elif how == "no-tokenizer":
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
            (bad / name).unlink(missing_ok=True)
    return bad


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("corrupt", "could not load"),
        ("pickle", "no \\*.safetensors"),
        ("no-tokenizer", "processor"),
    ],
)
def test_bad_detector_folders_are_refused_at_load(
    folders: dict[str, pathlib.Path], tmp_path: pathlib.Path, how: str, message: str
) -> None:
    bad = _break(folders["grounding-dino"], tmp_path, how)
    with pytest.raises(ModelLoadError, match=rf"text_detector.*{message}"):
        build_backend(
            BackendConfig(
                backend="sam2", model=str(folders["sam2"]), device="cpu", text_detector=str(bad)
            )
        )


def test_missing_or_wrong_detector_folder_is_refused(
    folders: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    def load(path: pathlib.Path) -> Any:
        return build_backend(
            BackendConfig(
                backend="sam2", model=str(folders["sam2"]), device="cpu", text_detector=str(path)
            )
        )

    with pytest.raises(ModelLoadError, match=r"text_detector.*does not exist"):
        load(tmp_path / "nowhere")
    # A SAM 2 checkpoint is no detector.
    with pytest.raises(ModelLoadError, match=r"text_detector.*not an open-vocabulary detector"):
        load(folders["sam2"])
    with pytest.raises(ValueError, match="text_detector is for backend sam2"):
        BackendConfig(backend="classic", text_detector=str(folders["grounding-dino"]))


# ---------------------------------------------------------------------- sam2 + detector
def test_without_a_detector_text_is_refused_naming_the_parameter(
    folders: dict[str, pathlib.Path],
) -> None:
    backend = build(folders, None)
    assert not backend.capabilities.text and backend.capabilities.multimask
    backend.step(0, image())
    with pytest.raises(UnsupportedPromptError, match="text_detector"):
        backend.detect(0, "cup", 0.5, 0)
    with pytest.raises(UnsupportedPromptError, match="text_detector"):
        backend.segment(image(), Prompt(text="cup"))
    session = SegmentationSession(build(folders, None))
    session.step(image(), 1)
    with pytest.raises(UnsupportedPromptError, match="text_detector"):
        session.add_text("cup")
    with pytest.raises(UnsupportedPromptError, match="text_detector"):
        session.segment(Prompt(text="cup"))
    session.close()
    backend.close()


def _recording(backend: Sam2Backend, monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, ...]]:
    """Record the box of every decoder call the tracker gets for a one-shot prompt."""
    boxes: list[tuple[float, ...]] = []
    original = backend.tracker.segment

    def segment(*args: Any, **kwargs: Any) -> Any:
        boxes.append(tuple(kwargs["box"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(backend.tracker, "segment", segment)
    return boxes


def test_detect_turns_the_detectors_boxes_into_masks_on_cached_features(
    folders: dict[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = build(folders, options={"detector_threshold": 0.0})
    assert backend.capabilities.text and type(backend).capabilities.text is False
    frame = image()
    backend.step(0, frame)
    assert backend.tracker.counters["encoder_calls"] == 0  # lazy: nothing tracked yet
    assert backend.detector is not None
    expected = backend.detector(frame, "person. red mug", 0.0, 4)
    boxes = _recording(backend, monkeypatch)
    found = backend.detect(0, "person. red mug", 0.0, 4)
    # Exactly the detector's boxes went to SAM 2's decoder, in the model's square frame.
    S = backend.image_size
    assert boxes == [
        pytest.approx((b.box[0] * S / W, b.box[1] * S / H, b.box[2] * S / W, b.box[3] * S / H))
        for b in expected
    ]
    assert len(found) == len(expected) >= 1  # no empty masks with these weights
    for out, det in zip(found, expected, strict=True):
        assert out.mask.shape == (H, W) and out.mask.dtype == bool and out.mask.any()
        assert out.score == pytest.approx(det.score) and out.label == det.label and out.visible
    # One image-encoder pass for the frame, whatever the number of boxes and requests.
    backend.detect(0, "cup", 0.0, 0)
    assert backend.tracker.counters["encoder_calls"] == 1
    assert backend.stats()["detector_runs"] == 3.0  # the two detect() calls + the direct one
    backend.step(1, image(1))
    backend.detect(1, "cup", 0.0, 2)
    assert backend.tracker.counters["encoder_calls"] == 2
    backend.close()


def test_detector_threshold_floors_the_request_threshold(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders, options={"detector_threshold": 1.0})
    backend.step(0, image())
    assert backend.detect(0, "person. red mug", 0.0, 0) == []  # nothing scores above 1.0
    with pytest.raises(ValueError, match="detector_threshold"):
        build(folders, options={"detector_threshold": 1.5})
    backend.close()


def test_detector_shortest_edge_sets_the_detector_input(
    folders: dict[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = build(folders, options={"detector_threshold": 0.0, "detector_shortest_edge": 64})
    assert backend.detector is not None
    model = backend.detector.model
    shapes: list[tuple[int, ...]] = []

    def spy(**inputs: Any) -> Any:
        shapes.append(tuple(inputs["pixel_values"].shape[-2:]))
        return model(**inputs)

    monkeypatch.setattr(backend.detector, "model", spy)
    backend.step(0, image())
    found = backend.detect(0, "person. red mug", 0.0, 2)
    # 96 x 160 -> shortest edge 64, longest capped at 106 (the checkpoints' 800 / 1333 ratio).
    assert shapes == [(64, 106)]
    for out in found:
        assert out.mask.shape == (H, W)
    backend.close()
    with pytest.raises(ModelLoadError, match="fixed input size"):
        build(folders, "owlv2", options={"detector_shortest_edge": 64})


def test_detect_on_a_frame_no_longer_in_memory(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders, memory_frames=1, options={"prompt_frames": 1})
    for index in range(4):
        backend.step(index, image(index))
    with pytest.raises(PromptError, match="no longer in memory"):
        backend.detect(0, "cup", 0.0, 0)
    # Only the frames a prompt can still name keep their source image.
    assert sorted(backend._images) == [3]
    backend.close()


def test_session_add_text_tracks_phrase_labelled_objects(folders: dict[str, pathlib.Path]) -> None:
    backend = build(folders, options={"detector_threshold": 0.0})
    session = SegmentationSession(backend, max_objects=8)
    session.step(image(0), 1)
    added = session.add_text("person. red mug", max_objects=3)
    assert 1 <= len(added) <= 3
    assert all(obj.label in ("person", "red mug") for obj in added)
    assert len({obj.object_id for obj in added}) == len(added)
    result = session.step(image(1), 2)
    assert {o.object_id for o in result.objects} == {o.object_id for o in added}
    assert {o.object_id: o.label for o in result.objects} == {o.object_id: o.label for o in added}
    # Two frames, one encoder pass each: the text request re-used frame 1's features.
    assert backend.tracker.counters["encoder_calls"] == 2
    session.close()


def test_session_text_with_a_box_creates_one_object(folders: dict[str, pathlib.Path]) -> None:
    """Text + geometry on add_prompt: the session picks the match the box designates."""
    backend = build(folders, options={"detector_threshold": 0.0})
    session = SegmentationSession(backend)
    session.step(image(0), 1)
    box = np.array([10, 10, 90, 80], np.float32)
    result = session.add_prompt(Prompt(text="person", box=box))
    assert session.object_ids == [result.object.object_id]
    assert result.object.label == "person" and result.object.mask.shape == (H, W)
    session.close()


def test_one_shot_text_segment_encodes_a_new_image_once(
    folders: dict[str, pathlib.Path],
) -> None:
    backend = build(folders, options={"detector_threshold": 0.0})
    session = SegmentationSession(backend)
    session.step(image(0), 1)
    encoded = backend.tracker.counters["encoder_calls"]
    found = session.segment(Prompt(text="person. cup"), image(5))
    assert found and all(o.object_id == "" and o.label in ("person", "cup") for o in found)
    assert backend.tracker.counters["encoder_calls"] == encoded + 1
    # A given label wins over the phrase; text + a box picks one match.
    (one,) = session.segment(
        Prompt(text="person. cup", box=np.array([0, 0, W / 2, H / 2], np.float32)),
        image(5),
        label="thing",
    )
    assert one.label == "thing" and one.mask.shape == (H, W)
    assert session.object_ids == []  # one-shot: tracking untouched
    session.close()


def test_edgetam_takes_text_through_the_detector(
    folders: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    pytest.importorskip("timm", reason="EdgeTAM needs timm")
    edgetam = save_tiny("edgetam", tmp_path / "edgetam")
    backend = build(folders, "owlv2", model=edgetam, options={"detector_threshold": 0.0})
    assert backend.model_type == "edgetam_video" and backend.capabilities.text
    backend.step(0, image())
    found = backend.detect(0, "person. red mug", 0.0, 2)
    assert found and all(o.label in ("person", "red mug") for o in found)
    assert backend.tracker.counters["encoder_calls"] == 1
    backend.close()


# ---------------------------------------------------------------------- seg-ros-download
def test_download_verifies_a_detector_folder(
    folders: dict[str, pathlib.Path], tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from seg_ros.tools import download

    assert set(download.DETECTOR_TYPES) == set(FAMILIES)
    for kind in ("grounding-dino", "owlv2"):
        assert download.main(["a/b", "--out", str(folders[kind]), "--verify-only"]) == 0
        printed = capsys.readouterr().out
        assert f"ok: {kind} model" in printed and f"text_detector:={folders[kind]}" in printed
    broken = _break(folders["grounding-dino"], tmp_path, "no-tokenizer")
    assert download.main(["a/b", "--out", str(broken), "--verify-only"]) == 1
    assert "processor" in capsys.readouterr().err
    assert download.is_fetched("vocab.txt") and not download.is_fetched("pytorch_model.bin")


def test_a_standing_query_on_the_light_path_picks_up_instances_as_they_appear(
    folders: dict[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live concepts on sam2 + a detector (the Grounded-SAM-2 path): the detector's boxes are
    scripted (random weights find nothing meaningful): a person from frame 1, a second one from
    frame 3. Each gets one new id and keeps it; the image encoder still runs once per frame."""
    from seg_ros.engine.concepts import QueryOptions
    from seg_ros.engine.sam.open_vocab import BoxDetection

    backend = build(folders, options={"detector_threshold": 0.0})
    session = SegmentationSession(backend, max_objects=8)
    people = {1: (10.0, 10.0, 50.0, 80.0), 3: (100.0, 20.0, 150.0, 90.0)}
    calls: list[int] = []

    def scripted(frame: np.ndarray, text: str, threshold: float, most: int = 0) -> list[Any]:
        calls.append(session.frame_index)
        return [
            BoxDetection(np.array(box, np.float32), 0.9, "person")
            for start, box in people.items()
            if session.frame_index >= start
        ]

    assert backend.detector is not None
    # A call looks `__call__` up on the type: patch it there (undone after the test).
    monkeypatch.setattr(type(backend.detector), "__call__", lambda self, *a, **k: scripted(*a, **k))
    session.step(image(0), 1)
    query = session.add_query("person", QueryOptions(every_n=1, new_instance_threshold=0.5))
    assert query.objects == []  # nobody on frame 0
    ids_by_frame = []
    for i in range(1, 6):
        result = session.step(image(i), i + 1)
        ids_by_frame.append(sorted(o.object_id for o in result.objects))
    assert ids_by_frame[0] == ["1"] and ids_by_frame[1] == ["1"]
    assert ids_by_frame[2:] == [["1", "2"]] * 3  # the second person: one new id, kept
    assert all(o.label == "person" for o in session.latest.objects)  # type: ignore[union-attr]
    assert calls == [0, 1, 2, 3, 4, 5]  # every frame (every_n 1), on the frame just stepped
    # One encoder pass per frame from frame 1 on (its detection needed frame 1's features,
    # then tracking re-used them); frame 0, with nothing to track or decode, none.
    assert backend.tracker.counters["encoder_calls"] == 5
    session.close()


@pytest.mark.slow
def test_light_path_memory_stays_flat_over_1000_frames_while_people_come_and_go(
    folders: dict[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The light path's standing query over 1,000 frames: a new 'person' box every 25 frames
    at one of 4 places, each there for 30 frames (scripted detector boxes; SAM 2.1's decoder
    and tracker are the real ones, random weights). Objects come and are dropped by the
    timeout; the tracker's tensors and the process's RSS stay flat. Random weights track
    nothing meaningful (their masks would 'confirm' any later box), so a score threshold of 1
    makes every tracked frame 'not seen': the scripted boxes alone say who is there, as when
    a tracker loses the people who leave."""
    import resource

    from seg_ros.engine.concepts import QueryOptions
    from seg_ros.engine.sam.open_vocab import BoxDetection

    places = [(5.0, 5.0, 45.0, 60.0), (60.0, 10.0, 100.0, 70.0), (110.0, 5.0, 150.0, 60.0),
              (40.0, 40.0, 90.0, 92.0)]  # fmt: skip
    period, stay, frames = 25, 30, 1000
    backend = build(folders, "mm-grounding-dino", options={"detector_threshold": 0.0})
    session = SegmentationSession(backend, max_objects=8, score_threshold=1.0)

    def scripted(*_: Any, **__: Any) -> list[Any]:
        now = session.frame_index
        return [
            BoxDetection(np.array(places[k % len(places)], np.float32), 0.9, "person")
            for k in range(now // period + 1)
            if k * period <= now < k * period + stay
        ]

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    assert backend.detector is not None
    monkeypatch.setattr(type(backend.detector), "__call__", lambda self, *a, **k: scripted())
    query = session.add_query("person", QueryOptions(every_n=2, timeout_frames=8))
    held, rss, counts = [], [], []
    for i in range(frames):
        session.step(image(i % 7), i + 1)
        counts.append(len(session.object_ids))
        if i in (200, frames - 1):
            held.append(backend.tracker.held_bytes())
            rss.append(rss_mb())
    stats = session.queries[0].stats
    assert stats.added >= frames // period - 2  # each newcomer got an id ...
    assert stats.dropped >= stats.added - 4  # ... and went, by the timeout
    assert max(counts) <= 8 and query.query_id
    assert held[1] <= held[0] * 1.5 + 2**20, held  # tensors held: flat, not per frame
    assert rss[1] - rss[0] < 40.0, rss  # MB
    session.close()
