"""SAM 3's open-vocabulary detector side: tokenizer, text cache, preprocessing, detection.

Pure functions and small classes around transformers' `Sam3Model` (the image-level detector of a
`Sam3VideoModel` checkpoint). The backend in `sam3.py` owns the frames and the tracker; this module
turns (image features, text, optional exemplar boxes) into scored instance masks.

Shapes: the model sees a square `size` x `size` image (1008 for facebook/sam3); its masks come
out at a quarter of that (288) as logits; detections are returned at the source resolution.
"""

from __future__ import annotations

import json
import pathlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from seg_ros.engine.errors import ModelLoadError
from seg_ros.engine.sam import transforms
from seg_ros.engine.sam.adapter import sam3_vision_output
from seg_ros.engine.types import BoolArray

if TYPE_CHECKING:
    from transformers import Sam3Model


#: SAM 3's image processor normalises with mean = std = 0.5 (not ImageNet's statistics, unlike
#: SAM 2): `Sam3ImageProcessor.image_mean/std = IMAGENET_STANDARD_MEAN/STD`.
SAM3_MEAN = (0.5, 0.5, 0.5)
SAM3_STD = (0.5, 0.5, 0.5)
#: Files a CLIP BPE tokenizer needs (facebook/sam3 ships them beside config.json).
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def read_normalisation(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) from a local folder's processor_config.json / preprocessor_config.json.

    Falls back to SAM 3's own 0.5 / 0.5 when the folder has neither (or for a hub id).
    """
    folder = pathlib.Path(source).expanduser()
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"'{path}' is not valid JSON: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("image_processor"), dict):
            data = data["image_processor"]
        mean, std = data.get("image_mean"), data.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return SAM3_MEAN, SAM3_STD


def preprocess(
    image: npt.NDArray[np.uint8],
    size: int,
    device: torch.device,
    dtype: torch.dtype,
    mean: tuple[float, ...] = SAM3_MEAN,
    std: tuple[float, ...] = SAM3_STD,
) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, size, size) in `dtype`: bilinear resize, /255, normalise.

    Equals `Sam3ImageProcessor` to the bit (square resize without padding, mean = std = 0.5).
    """
    return transforms.preprocess(image, size, device, mean, std).to(dtype)


def load_tokenizer(source: str, *, offline: bool = True) -> Any:
    """The CLIP tokenizer of a SAM 3 checkpoint (local folder or cached hub id), local files only.

    Raises ModelLoadError naming the missing files for a folder without them.
    """
    from transformers import CLIPTokenizer

    folder = pathlib.Path(source).expanduser()
    if folder.is_dir():
        missing = [name for name in TOKENIZER_FILES if not (folder / name).is_file()]
        if missing and not (folder / "tokenizer.json").is_file():
            raise ModelLoadError(
                f"model folder '{folder}' has no tokenizer: {', '.join(missing)} missing "
                f"(SAM 3 needs the CLIP BPE files {' + '.join(TOKENIZER_FILES)} or tokenizer.json "
                "beside config.json; fetch the whole checkpoint with seg-ros-download)"
            )
    try:
        return CLIPTokenizer.from_pretrained(
            str(folder) if folder.is_dir() else source, local_files_only=offline
        )
    except Exception as exc:  # tokenizers / hub raise many types for bad files
        raise ModelLoadError(
            f"could not load the tokenizer of '{source}': {type(exc).__name__}: {exc}"
        ) from exc


class TextEncoder:
    """Text -> SAM 3 prompt features, with a small LRU cache (robots repeat their phrases).

    Args:
        detector: the `Sam3Model` whose CLIP text encoder + projection encode the text.
        tokenizer: its CLIP tokenizer.
        max_length: padded token length (the text encoder's position count, 32 for SAM 3).
        cache_size: phrases kept.
    """

    def __init__(self, detector: Sam3Model, tokenizer: Any, max_length: int, cache_size: int = 32):
        self.detector = detector
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[str, tuple[Any, torch.Tensor]] = OrderedDict()
        self.encodes = 0

    def __call__(self, text: str) -> tuple[Any, torch.Tensor]:
        """(text features with `.pooler_output` (1, L, D), attention mask (1, L) int64)."""
        hit = self._cache.get(text)
        if hit is not None:
            self._cache.move_to_end(text)
            return hit
        device = next(self.detector.parameters()).device
        tokens = self.tokenizer(
            [text],
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        input_ids = tokens["input_ids"].to(device)
        attention_mask = tokens["attention_mask"].to(device)
        with torch.inference_mode():
            features = self.detector.get_text_features(
                input_ids=input_ids, attention_mask=attention_mask, return_dict=True
            )
        self.encodes += 1
        self._cache[text] = (features, attention_mask)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return features, attention_mask

    def clear(self) -> None:
        self._cache.clear()


@dataclass(frozen=True, eq=False)
class Detection:
    """One instance the detector found.

    Attributes:
        mask: (H, W) bool at the source resolution.
        score: query probability x presence probability, in [0, 1].
        box: (x0, y0, x1, y1) pixels of the source image (the detector's box head).
        logits: (h, w) float32 mask logits at the model's mask resolution (a dense prompt).
    """

    mask: BoolArray
    score: float
    box: tuple[float, float, float, float]
    logits: torch.Tensor


def mask_nms(
    masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float, block: int = 256
) -> list[int]:
    """Greedy NMS on binary masks (N, h, w) sorted by nothing in particular.

    Returns the kept indices, best score first. `iou_threshold` >= 1 keeps everything.
    A mask is dropped when its IoU with a better kept mask is above the threshold. Candidates
    go best first in blocks of `block`: one matrix product against the masks kept so far and
    one within the block, then a greedy pass over the block's small boolean matrix. Never
    N x N at once (3,072 masks of 128 x 128 would be a 1.5e11 product), and no Python loop
    over pairs. Intersections are sums of 0/1 in float32, exact below 2^24 pixels, so the
    IoUs (and the answer) are those of the all-pairs definition.
    """
    import numpy as np

    order = torch.argsort(scores, descending=True).tolist()
    if iou_threshold >= 1.0 or len(order) <= 1:
        return [int(i) for i in order]
    flat = masks.flatten(1)[order].float()
    area = flat.sum(dim=1)

    def overlaps(rows: torch.Tensor, rows_area: torch.Tensor, cols: torch.Tensor) -> Any:
        inter = rows @ flat[cols].T
        union = rows_area[:, None] + area[cols][None, :] - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1.0), torch.zeros_like(inter))
        return (iou > iou_threshold).numpy()

    kept: list[int] = []  # positions in `order`
    for start in range(0, len(order), block):
        stop = min(start + block, len(order))
        rows, rows_area = flat[start:stop], area[start:stop]
        positions = torch.arange(start, stop)
        if kept:
            beaten = overlaps(rows, rows_area, torch.tensor(kept)).any(axis=1)
        else:
            beaten = np.zeros(stop - start, dtype=bool)
        inside = overlaps(rows, rows_area, positions)
        mine: list[int] = []
        for j in range(stop - start):
            if not beaten[j] and not inside[j, mine].any():
                mine.append(j)
        kept.extend(start + j for j in mine)
    return [int(order[p]) for p in kept]


def detector_features(detector: Sam3Model, backbone_hidden: torch.Tensor, grid: int) -> Any:
    """The detector's FPN features from the ViT's output (1, grid*grid, C): the cheap part."""
    spatial = backbone_hidden.view(backbone_hidden.shape[0], grid, grid, -1).permute(0, 3, 1, 2)
    with torch.inference_mode():
        fpn, pos = detector.vision_encoder.neck(spatial)
    return sam3_vision_output(backbone_hidden, fpn, pos)


def run_detector(
    detector: Sam3Model,
    vision: Any,
    text: tuple[Any, torch.Tensor],
    *,
    source_size: tuple[int, int],
    score_threshold: float,
    max_objects: int,
    nms_iou: float,
    exemplar_boxes: npt.NDArray[np.float32] | None = None,
) -> list[Detection]:
    """Every instance of the text (and positive exemplar boxes, XYXY source pixels), best first.

    A detection is kept when its score is >= `score_threshold`, it survives mask NMS and its
    mask is not empty at the source resolution. `max_objects` = 0 means no limit.
    """
    height, width = source_size
    features, attention_mask = text
    kwargs: dict[str, Any] = {}
    if exemplar_boxes is not None and len(exemplar_boxes):
        boxes = torch.as_tensor(exemplar_boxes, dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        x0, y0, x1, y1 = (boxes / scale).clamp(0.0, 1.0).unbind(-1)
        cxcywh = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)
        device = vision.fpn_hidden_states[0].device
        dtype = vision.fpn_hidden_states[0].dtype
        kwargs["input_boxes"] = cxcywh.unsqueeze(0).to(device, dtype)
        kwargs["input_boxes_labels"] = torch.ones(1, len(boxes), dtype=torch.long, device=device)
    with torch.inference_mode():
        out = detector(
            vision_embeds=vision, text_embeds=features, attention_mask=attention_mask, **kwargs
        )
    scores = (out.pred_logits[0].float().sigmoid() * out.presence_logits[0].float().sigmoid()).cpu()
    candidates = torch.nonzero(scores >= score_threshold).flatten()
    if candidates.numel() == 0:
        return []
    logits = out.pred_masks[0, candidates].float()
    kept = mask_nms((logits > 0).cpu(), scores[candidates], nms_iou)
    detections: list[Detection] = []
    for k in kept:
        if max_objects and len(detections) >= max_objects:
            break
        low = logits[k]
        full = F.interpolate(
            low[None, None], size=(height, width), mode="bilinear", align_corners=False
        )[0, 0]
        mask = (full > 0).cpu().numpy()
        if not mask.any():
            continue
        norm = out.pred_boxes[0, int(candidates[k])].float().cpu().clamp(0.0, 1.0).tolist()
        box = (norm[0] * width, norm[1] * height, norm[2] * width, norm[3] * height)
        detections.append(Detection(mask, float(scores[candidates[k]]), box, low.detach().cpu()))
    return detections
