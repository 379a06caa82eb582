"""Open-vocabulary box detectors for text on the light models (the Grounded-SAM-2 way).

The sam2 backend (SAM 2.1 / EdgeTAM) has no text encoder. With a `text_detector` folder it
takes text anyway: the detector proposes boxes for the phrases on the frame, and SAM 2's decoder
turns each box into a mask on the frame's cached image features (backends/sam2.py).

One loading path, transformers' `AutoModelForZeroShotObjectDetection` + `AutoProcessor` from a
local folder (safetensors only, local files only, as loading.py), takes two output families:

- "grounding": Grounding DINO and MM-Grounding-DINO. One text of dot-separated phrases
  ("person. red mug."); logits per query and text token; boxes relative to the image.
- "owl": OWLv2 and OWL-ViT. One text query per phrase; logits per patch and phrase; boxes
  relative to the image padded to a square (bottom / right), as its processor pads it.

The model runs once per request; turning its outputs into boxes in source pixels with scores and
phrase labels is the pure function `select_boxes` (numpy in, numpy out), tested on hand-made
outputs. torch and transformers are imported by the functions that use them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from seg_ros.engine.errors import ModelLoadError, PromptError
from seg_ros.engine.sam.loading import load_pretrained, read_model_type
from seg_ros.engine.types import FloatArray, RgbImage

if TYPE_CHECKING:
    import torch

#: model_type -> output family.
FAMILIES = {
    "grounding-dino": "grounding",
    "mm-grounding-dino": "grounding",
    "owlv2": "owl",
    "owlvit": "owl",
}
#: The detector the README suggests (fetched beforehand with seg-ros-download), and another.
DEFAULT_DETECTOR = "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
SUGGESTED_DETECTORS = (
    DEFAULT_DETECTOR,
    "IDEA-Research/grounding-dino-tiny",
    "google/owlv2-base-patch16-ensemble",
)
#: Fewer tokens than this: no real tokenizer (bytes alone are 256 for a BPE one, BERT's 30522).
MIN_VOCABULARY = 256
#: Longest text the session accepts is 512 characters; this many phrases is plenty per request.
MAX_PHRASES = 32


@dataclass(frozen=True, eq=False)
class BoxDetection:
    """One detected instance: XYXY box in source pixels (float32 (4,)), score in [0, 1], and the
    phrase of the request it matched."""

    box: FloatArray
    score: float
    label: str


def split_phrases(text: str) -> tuple[str, ...]:
    """'person. Red mug.' -> ('person', 'red mug'): dot-separated, lower-case, no empties.

    Grounding DINO was trained on lower-case, dot-separated phrases; OWLv2 takes one query per
    phrase. Raises PromptError for a text with no phrase or more than MAX_PHRASES.
    """
    phrases = tuple(
        dict.fromkeys(p for p in (" ".join(s.split()).lower() for s in text.split(".")) if p)
    )
    if not phrases:
        raise PromptError(f"text '{text}' names no phrase (phrases are separated by '.')")
    if len(phrases) > MAX_PHRASES:
        raise PromptError(f"at most {MAX_PHRASES} phrases per text; got {len(phrases)}")
    return phrases


def phrase_spans(
    input_ids: npt.NDArray[np.int64], separators: set[int], count: int
) -> list[tuple[int, int]]:
    """Token [start, stop) of each of `count` phrases in a Grounding DINO token sequence.

    Phrases are the runs of tokens between separators ([CLS], [SEP], '.'), the very rule by
    which the model masks its text attention. A phrase the tokenizer truncated away gets an
    empty span (it then scores 0).
    """
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for pos, token in enumerate(input_ids.tolist()):
        if int(token) in separators:
            if start is not None and pos > start:
                spans.append((start, pos))
            start = pos + 1
        elif start is None:
            start = pos
    spans = spans[:count]
    spans += [(0, 0)] * (count - len(spans))
    return spans


def grounding_phrase_scores(token_probs: FloatArray, spans: list[tuple[int, int]]) -> FloatArray:
    """(Q, T) per-token probabilities -> (Q, P) per-phrase scores: the best token of each phrase.

    (transformers' post-processing instead labels a query with every token above a text
    threshold, which merges phrases into labels like "person red"; one phrase per box is what a
    tracked object's label needs.)
    """
    scores = np.zeros((token_probs.shape[0], len(spans)), np.float32)
    for k, (start, stop) in enumerate(spans):
        if stop > start:
            scores[:, k] = token_probs[:, start:stop].max(axis=1)
    return scores


def box_iou(box: FloatArray, others: FloatArray) -> FloatArray:
    """IoU of one XYXY box with each of (N, 4) others."""
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iou: FloatArray = (inter / np.maximum(area + areas - inter, 1e-9)).astype(np.float32)
    return iou


def select_boxes(
    phrase_scores: FloatArray,
    boxes_cxcywh: FloatArray,
    phrases: tuple[str, ...],
    *,
    frame_wh: tuple[float, float],
    source_size: tuple[int, int],
    score_threshold: float,
    max_objects: int = 0,
    nms_iou: float = 0.5,
    min_side: float = 1.0,
) -> list[BoxDetection]:
    """A detector's raw outputs -> boxes in source pixels, scored and labelled, best first.

    Args:
        phrase_scores: (Q, P) probability that query / patch q shows phrase p.
        boxes_cxcywh: (Q, 4) centre-x, centre-y, width, height, relative to the detector's frame.
        phrases: the P phrases, in the order of the scores' columns.
        frame_wh: the detector's frame in source pixels: (W, H) for Grounding DINO (the image
            itself), (S, S) with S = max(W, H) for OWLv2 (the image padded to a square).
        source_size: (H, W) of the source image; boxes are clipped to it.
        score_threshold: a box is kept when its best phrase scores at least this.
        max_objects: at most this many (0 = all).
        nms_iou: a box overlapping a better box OF THE SAME PHRASE by more than this IoU is a
            duplicate (DETR-style queries often repeat an object); >= 1 keeps every box.
        min_side: boxes thinner than this many source pixels after clipping are dropped.
    Returns: one BoxDetection per kept box, labelled with its best phrase.
    """
    scores_in = np.asarray(phrase_scores, np.float32)
    boxes_in = np.asarray(boxes_cxcywh, np.float32)
    if scores_in.ndim != 2 or scores_in.shape[1] != len(phrases):
        raise ValueError(f"phrase_scores must be (Q, {len(phrases)}); got {scores_in.shape}")
    if boxes_in.shape != (scores_in.shape[0], 4):
        raise ValueError(f"boxes must be ({scores_in.shape[0]}, 4); got {boxes_in.shape}")
    if not phrases:
        return []
    height, width = source_size
    fw, fh = frame_wh
    best = scores_in.argmax(axis=1)
    score = scores_in[np.arange(len(best)), best]
    cx, cy, bw, bh = (boxes_in[:, i] for i in range(4))
    xyxy: FloatArray = np.stack(
        [(cx - bw / 2) * fw, (cy - bh / 2) * fh, (cx + bw / 2) * fw, (cy + bh / 2) * fh], axis=1
    ).astype(np.float32)
    xyxy[:, 0::2] = np.clip(xyxy[:, 0::2], 0.0, float(width))
    xyxy[:, 1::2] = np.clip(xyxy[:, 1::2], 0.0, float(height))
    sides = np.minimum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
    keep = np.nonzero((score >= score_threshold) & (sides >= min_side) & np.isfinite(score))[0]
    # Best first; ties keep query order (stable) so that the answer is deterministic.
    order = keep[np.argsort(-score[keep], kind="stable")]
    kept: list[int] = []
    for q in order:
        if nms_iou < 1.0:
            same = [k for k in kept if best[k] == best[q]]
            if same and float(box_iou(xyxy[q], xyxy[same]).max()) > nms_iou:
                continue
        kept.append(int(q))
        if max_objects and len(kept) >= max_objects:
            break
    return [
        BoxDetection(xyxy[q].astype(np.float32), float(score[q]), phrases[int(best[q])])
        for q in kept
    ]


class OpenVocabDetector:
    """A loaded open-vocabulary detector: (RGB image, text) -> boxes (`BoxDetection`).

    Args:
        model: a loaded `*ForObjectDetection` of a `FAMILIES` model type, eval, on its device.
        processor: its `AutoProcessor` (image processor + tokenizer).
        nms_iou: see `select_boxes`.
        shortest_edge: Grounding DINO family: resize frames to this shortest edge (0 = the
            checkpoint's processor's, 800 px: a 640x480 camera frame is UPSAMPLED to 800x1066,
            2.8x the pixels of the frame itself). OWLv2 has a fixed square input: refused.
    """

    def __init__(
        self, model: Any, processor: Any, *, nms_iou: float = 0.5, shortest_edge: int = 0
    ) -> None:
        self.model = model
        self.processor = processor
        self.model_type = str(model.config.model_type)
        if self.model_type not in FAMILIES:
            raise ModelLoadError(f"'{self.model_type}' is not an open-vocabulary detector")
        self.family = FAMILIES[self.model_type]
        first = next(model.parameters())
        self.torch_device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        self.nms_iou = nms_iou
        self._size: dict[str, dict[str, int]] = {}
        if shortest_edge:
            if self.family != "grounding":
                raise ModelLoadError(
                    f"detector_shortest_edge is for the Grounding DINO family; {self.model_type} "
                    "has a fixed input size (use 0)"
                )
            # The same aspect cap as the checkpoints' 800 / 1333.
            edges = {"shortest_edge": shortest_edge, "longest_edge": shortest_edge * 5 // 3}
            self._size = {"size": edges}
        #: Detector passes run, and the time of the last one (tests and benchmarks read them).
        self.runs = 0
        self.last_ms = 0.0
        tokenizer = processor.tokenizer
        self._separators = {
            int(t) for t in (tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None
        } | {int(tokenizer.convert_tokens_to_ids("."))}

    def __call__(
        self, image: RgbImage, text: str, score_threshold: float, max_objects: int = 0
    ) -> list[BoxDetection]:
        """Every box matching a phrase of `text` on `image` (RGB uint8 HxWx3), best first."""
        import torch

        phrases = split_phrases(text)
        height, width = int(image.shape[0]), int(image.shape[1])
        if self.family == "grounding":
            inputs = self.processor(
                images=image, text=". ".join(phrases) + ".", return_tensors="pt", **self._size
            )
        else:
            # One query per phrase, padded to one length (the text model batches them).
            inputs = self.processor(
                images=image, text=[list(phrases)], padding=True, return_tensors="pt"
            )
        inputs = {
            k: v.to(self.torch_device, self.dtype if v.is_floating_point() else v.dtype)
            for k, v in inputs.items()
        }
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model(**inputs)
        self.runs += 1
        self.last_ms = (time.perf_counter() - start) * 1e3
        probs = out.logits[0].float().sigmoid().cpu().numpy()
        boxes = out.pred_boxes[0].float().cpu().numpy()
        if self.family == "grounding":
            ids = inputs["input_ids"][0].cpu().numpy()
            scores = grounding_phrase_scores(
                probs[:, : ids.shape[0]], phrase_spans(ids, self._separators, len(phrases))
            )
            frame: tuple[float, float] = (float(width), float(height))
        else:
            scores = probs
            side = float(max(width, height))
            frame = (side, side)
        return select_boxes(
            scores,
            boxes,
            phrases,
            frame_wh=frame,
            source_size=(height, width),
            score_threshold=score_threshold,
            max_objects=max_objects,
            nms_iou=self.nms_iou,
        )

    def close(self) -> None:
        self.model = None
        self.processor = None


def load_detector(
    source: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    offline: bool = True,
    nms_iou: float = 0.5,
    shortest_edge: int = 0,
) -> OpenVocabDetector:
    """The detector in `source` (a local folder, or a hub id already in the local cache).

    Raises ModelLoadError naming the `text_detector` parameter for a missing folder, another
    architecture, missing or pickled weights, missing processor / tokenizer files, or a
    tokenizer larger than the model's vocabulary.
    """
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    if not source:
        raise ModelLoadError("no text detector given: set 'text_detector' to a detector folder")
    try:
        model_type = read_model_type(source)
        if model_type is not None and model_type not in FAMILIES:
            raise ModelLoadError(
                f"'{source}' holds a '{model_type}' model, not an open-vocabulary detector "
                f"({', '.join(FAMILIES)}; e.g. {DEFAULT_DETECTOR})"
            )
        model = load_pretrained(
            AutoModelForZeroShotObjectDetection,
            source,
            model_types=tuple(FAMILIES),
            device=device,
            dtype=dtype,
            offline=offline,
        )
    except ModelLoadError as exc:
        raise ModelLoadError(f"text_detector: {exc}") from exc
    try:
        processor = AutoProcessor.from_pretrained(  # type: ignore[no-untyped-call]
            source, local_files_only=offline
        )
    except Exception as exc:  # OSError / ValueError / TypeError for missing or bad files
        raise ModelLoadError(
            f"text_detector: '{source}' lacks a usable processor (preprocessor / tokenizer "
            f"files; {type(exc).__name__}: {exc}); fetch it again with seg-ros-download"
        ) from exc
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(
            f"text_detector: the processor of '{source}' has no tokenizer or image processor"
        )
    # transformers 5 builds an EMPTY tokenizer (5 special tokens) when a folder has no tokenizer
    # files: every word would then be [UNK] and every phrase match noise. Refuse it.
    if len(tokenizer) < MIN_VOCABULARY:
        raise ModelLoadError(
            f"text_detector: the processor of '{source}' has a tokenizer of {len(tokenizer)} "
            "tokens: its tokenizer files (tokenizer.json / vocab.txt / vocab.json) are missing; "
            "fetch it again with seg-ros-download"
        )
    text_config = getattr(model.config, "text_config", None)
    vocab = int(getattr(text_config, "vocab_size", 0) or 0)
    if vocab and len(tokenizer) > vocab:
        raise ModelLoadError(
            f"text_detector: the tokenizer of '{source}' has {len(tokenizer)} tokens but the "
            f"text encoder only {vocab}: tokenizer files and weights are from different models"
        )
    return OpenVocabDetector(model, processor, nms_iou=nms_iou, shortest_edge=shortest_edge)
