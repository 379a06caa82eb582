"""What the sam2 and sam3 backends share around the tracker: prompts in, answers out.

Both drive one `StreamingVideoTracker` (tracker.py) from the engine's world (`TrackerBackend`):
prompts in source pixels of any image size become tracker arguments in the model's square input
frame (`tracker_prompt`), the tracker's low-resolution logits become bool masks at the source
size (`to_output`, `to_outputs`), and model failures become `BackendError` (`backend_errors`).
torch is imported by the functions that use it: importing this module is free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from seg_ros.engine.backends.base import Backend, MaskOutput, Model, ReferenceOutput
from seg_ros.engine.errors import FrameError, PromptError, backend_errors
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate
from seg_ros.engine.sam.transforms import (
    logits_to_masks,
    mask_to_input,
    scribble_points,
    to_model_xy,
)
from seg_ros.engine.types import BoolArray, RgbImage

if TYPE_CHECKING:
    import torch

    from seg_ros.engine.sam.everything import EverythingOptions
    from seg_ros.engine.sam.tracker import StreamingVideoTracker, TrackedMask


class TrackerBackend(Backend):
    """Base of the backends that drive a `StreamingVideoTracker` (sam2, sam3).

    Subclasses set `tracker` and `torch_device` (the model's device) in their constructor.
    """

    tracker: StreamingVideoTracker
    torch_device: torch.device

    @property
    def device(self) -> str:
        return str(self.torch_device)

    @property
    def memory_frames(self) -> int:
        return int(self.tracker.memory.prompt_frames)

    def remove_object(self, obj: int) -> None:
        self.tracker.remove_object(obj)

    def remove_reference(self, obj: int, reference: int) -> None:
        """Forget one reference of `obj` (PromptError for unknown ids, and for the last
        reference of an object without a prompted frame: see the tracker's)."""
        with self.running():
            self.tracker.remove_reference(obj, reference)

    def references(self, obj: int) -> list[int]:
        with self.running():
            return self.tracker.references(obj)

    def tracked_apart_from_references(self, obj: int) -> bool:
        with self.running():
            return self.tracker.has_prompted_frame(obj)

    def device_stats(self) -> dict[str, float]:
        """GPU memory in use by this process's tensors (empty on a CPU)."""
        if self.torch_device.type != "cuda":
            return {}
        import torch

        return {"cuda_allocated_mb": torch.cuda.memory_allocated(self.torch_device) / 2**20}


def tracker_prompt(
    prompt: Prompt,
    height: int,
    width: int,
    image_size: int,
    device: torch.device,
    scribble_count: int,
    dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """A prompt in source pixels (`height` x `width`) -> `StreamingVideoTracker.add_prompt`
    arguments in the model's square input of `image_size` pixels. A scribble becomes
    `scribble_count` positive clicks spread along its strokes; a full mask is resampled (and
    cast to `dtype` when given)."""
    points, labels, mask = prompt.points, prompt.point_labels, prompt.mask
    if mask is not None and prompt.scribble:
        # Strokes on the object, not its extent: clicks spread along them.
        strokes = scribble_points(mask, scribble_count)
        points = np.concatenate([points, strokes]).astype(np.float32)
        labels = np.concatenate([labels, np.ones(len(strokes), np.int8)])
        mask = None
    kwargs: dict[str, Any] = {
        "points": to_model_xy(points, height, width, image_size),
        "labels": [int(v) for v in labels],
    }
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box.tolist()
        sx, sy = image_size / float(width), image_size / float(height)
        kwargs["box"] = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    if mask is not None:
        tensor = mask_to_input(mask, image_size, device)
        kwargs["mask"] = tensor if dtype is None else tensor.to(dtype)
    return kwargs


def prompt_tracker(
    tracker: StreamingVideoTracker,
    frame_index: int,
    obj: int,
    prompt: Prompt,
    kwargs: dict[str, Any],
    multimask: bool,
    to_answer: Callable[[TrackedMask], MaskOutput],
    backend_name: str,
) -> MaskOutput:
    """Give `prompt` (as `tracker_prompt` arguments) to the tracker; its answer as a MaskOutput.

    Model errors become BackendError. A mask alone IS the object on its frame (the tracker keeps
    it at a quarter of its input size): the answer is then the mask given rather than its
    resampled copy.
    """
    with backend_errors(f"the {backend_name} model failed on a prompt"):
        out = tracker.add_prompt(frame_index, obj, multimask=multimask, **kwargs)
    result = to_answer(out)
    mask_alone = "mask" in kwargs and not kwargs["points"] and "box" not in kwargs
    if mask_alone and prompt.mask is not None:
        return MaskOutput(prompt.mask.copy(), result.score, result.visible)
    return result


def check_reference(image: RgbImage, prompt: Prompt) -> tuple[int, int]:
    """A reference image and the prompt on it, checked -> the image's (H, W).

    FrameError unless `image` is RGB uint8 (H, W, 3) of at least 2x2 pixels; PromptError for
    text (a reference is shown by geometry) or geometry outside the image (source pixels).
    """
    if not isinstance(image, np.ndarray):
        raise FrameError(f"a reference image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(
            f"a reference image must be RGB uint8 (H, W, 3); got {image.dtype} {image.shape}"
        )
    height, width = int(image.shape[0]), int(image.shape[1])
    if height < 2 or width < 2:
        raise FrameError(f"reference image of {width}x{height} pixels is too small")
    if prompt.text or not prompt.has_geometry:
        raise PromptError(
            "a reference is shown by points, a box or a mask on its image (text finds objects "
            "on the stream's frames: use a text prompt there)"
        )
    prompt.check_fits(height, width)
    return height, width


def reference_tracker(
    tracker: StreamingVideoTracker,
    obj: int,
    pixels: torch.Tensor,
    prompt: Prompt,
    kwargs: dict[str, Any],
    multimask: bool,
    size: tuple[int, int],
    backend_name: str,
) -> ReferenceOutput:
    """Give a reference (the preprocessed image `pixels`, `prompt` as `tracker_prompt`
    arguments for the image's `size` = (H, W)) to the tracker; its answer at that size.

    Model errors become BackendError. A mask alone is the region: the answer's mask is then the
    mask given (as `prompt_tracker`)."""
    with backend_errors(f"the {backend_name} model failed on a reference image"):
        reference, out = tracker.add_reference(obj, pixels, multimask=multimask, **kwargs)
    result = to_output(out, *size)
    mask = result.mask
    if (
        "mask" in kwargs
        and not kwargs["points"]
        and "box" not in kwargs
        and prompt.mask is not None
    ):
        mask = prompt.mask.copy()
    return ReferenceOutput(reference=reference, mask=mask, score=result.score)


def mask_output(
    out: TrackedMask, mask: BoolArray, candidates: tuple[Candidate, ...] = ()
) -> MaskOutput:
    """Visible while the object score says present and the mask is not empty at the source size
    (a present object can shrink below one source pixel); score = sigmoid(object score logit)."""
    logit = out.object_score_logit
    score = 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
    visible = logit > 0.0 and bool(mask.any())
    return MaskOutput(mask=mask, score=score, visible=visible, candidates=candidates)


def to_output(out: TrackedMask, height: int, width: int) -> MaskOutput:
    """One tracker answer (with its candidates, best first) at the source size."""
    mask = logits_to_masks(out.mask_logits[None], height, width)[0]
    candidates: tuple[Candidate, ...] = ()
    if out.candidate_logits is not None:
        cmasks = logits_to_masks(out.candidate_logits, height, width)
        candidates = tuple(
            Candidate(cmasks[k], float(min(1.0, max(0.0, s))))
            for k, s in enumerate(out.candidate_scores)
        )
    return mask_output(out, mask, candidates)


def everything_outputs(
    tracker: StreamingVideoTracker,
    frame_index: int,
    options: EverythingOptions,
    size: tuple[int, int],
    backend_name: str,
) -> list[MaskOutput]:
    """`tracker.segment_everything` on a frame in memory, at the source size (`size` = H, W).

    `options.min_area` is in source pixels: it is scaled to the (S/4)^2 mask grid the filters
    see (the model input is the source stretched to a square).
    """
    height, width = size
    low = tracker.image_size // 4
    scaled = math.ceil(options.min_area * low * low / float(height * width))
    with backend_errors(f"the {backend_name} model failed to segment everything"):
        features = tracker.frame_features(frame_index)
        kept = tracker.segment_everything(features, replace(options, min_area=scaled))
    outputs = to_outputs(dict(enumerate(kept)), height, width)
    # The answer's score is the mask's predicted IoU (what the masks were ranked by).
    return [
        replace(outputs[n], score=float(min(1.0, max(0.0, out.iou)))) for n, out in enumerate(kept)
    ]


def to_outputs(tracked: dict[int, TrackedMask], height: int, width: int) -> dict[int, MaskOutput]:
    """Every object's low-resolution logits -> bool masks at the source size, in one call."""
    import torch

    if not tracked:
        return {}
    ids = list(tracked)
    masks = logits_to_masks(torch.stack([tracked[i].mask_logits for i in ids]), height, width)
    return {obj: mask_output(tracked[obj], masks[n]) for n, obj in enumerate(ids)}


def designated(masks: list[BoolArray], prompt: Prompt) -> BoolArray | None:
    """The mask the prompt's geometry points at (ties go to the earlier, better-scored one), or
    None when the geometry touches none (text + geometry in one-shot requests)."""
    best: BoolArray | None = None
    best_fit = 0.0
    for mask in masks:
        fit = prompt.agreement(mask)
        if fit > best_fit:
            best, best_fit = mask, fit
    return best


def with_hint(prompt: Prompt, mask: BoolArray) -> Prompt:
    """The prompt's geometry with `mask` (intersected with its own mask) as the decoder's hint."""
    hint = mask if prompt.mask is None else (mask & prompt.mask)
    return Prompt(
        points=prompt.points,
        point_labels=prompt.point_labels,
        box=prompt.box,
        mask=hint if hint.any() else prompt.mask,
        scribble=prompt.scribble,
    )


class EncodedStream(Protocol):
    """What `batched_steps` needs of a stream (Sam2Backend, Sam3Backend)."""

    def pixels(self, image: RgbImage) -> Any: ...

    def encodes_on_step(self) -> bool: ...

    def step_encoded(
        self, frame_index: int, image: RgbImage, pixels: Any, encoded: Any
    ) -> dict[int, MaskOutput]: ...


def batched_steps(
    model: Model,
    items: Sequence[tuple[Backend, int, RgbImage]],
    encode: Callable[[list[Any]], list[Any]],
) -> list[dict[int, MaskOutput]]:
    """`Model.step_batch` of the SAM family: one `encode` pass (image encoder / ViT) over the
    frames of every stream that encodes now, then each stream's own step on its share (memory
    attention, decoder, memory encoder). Equal to each stream's `step` in turn; a lazy stream
    without objects only stores its frame, as in `step`."""
    with model.running():
        model.check_batch(items)
        streams = [cast(EncodedStream, stream) for stream, _, _ in items]
        pixels = [s.pixels(image) for s, (_, _, image) in zip(streams, items, strict=True)]
        eager = [n for n, s in enumerate(streams) if s.encodes_on_step()]
        encoded: dict[int, Any] = {}
        if len(eager) > 1:
            with backend_errors(f"the {model.name} model failed on a batch of frames"):
                batch = encode([pixels[n] for n in eager])
            encoded = dict(zip(eager, batch, strict=True))
        return model.step_each(
            [
                partial(s.step_encoded, index, image, pixels[n], encoded.get(n))
                for n, (s, (_, index, image)) in enumerate(zip(streams, items, strict=True))
            ]
        )


def weight_stats(model: Any) -> dict[str, float]:
    """Parameters (count) and the bytes of every parameter and buffer storage (each once)."""
    from seg_ros.engine.sam.tracker import tensor_bytes

    params = list(model.parameters())
    return {
        "parameters": float(sum(p.numel() for p in params)),
        "weight_bytes": float(tensor_bytes(params, list(model.buffers()))),
    }
