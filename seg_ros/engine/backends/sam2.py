"""The `sam2` backend: SAM 2.1 (`Sam2VideoModel`) or EdgeTAM (`EdgeTamVideoModel`) via transformers.

The checkpoint's model_type picks the model ("sam2_video" or "edgetam_video"). Tracking runs on
`StreamingVideoTracker` (hf_stream.py): that is where the tracking memory is bounded
(`StreamingVideoTracker._prune`, after every frame). This module converts
between the engine's world (RGB uint8 frames of any size, prompts in source pixels, bool masks at
the source resolution) and the model's square input frame.

Defaults reproduce a named reference bit for bit: transformers' streaming session, one per
object (SAM 2.1's per-object inference), with the library's prompt semantics; see hf_stream.py.

Fetch a checkpoint once with `seg-ros-download facebook/sam2.1-hiera-tiny --out <folder>`; the
backend never downloads (`options={"offline": False}` allows it, for tools only).
"""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from seg_ros.engine.backends.base import Backend, Capabilities, MaskOutput
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import BackendError, ModelLoadError, PromptError, SegRosError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate
from seg_ros.engine.sam.loading import (
    load_pretrained,
    logits_to_masks,
    mask_to_input,
    model_type_of,
    preprocess,
    resolve_device,
    resolve_dtype,
    to_model_xy,
)
from seg_ros.engine.sam.tracker import StreamingVideoTracker, TrackedMask
from seg_ros.engine.types import RgbImage

if TYPE_CHECKING:
    import torch

#: model_type -> transformers class name.
MODEL_CLASSES = {"sam2_video": "Sam2VideoModel", "edgetam_video": "EdgeTamVideoModel"}
#: Suggested checkpoints (named in errors; never fetched by the backend).
SUGGESTED_MODELS = ("facebook/sam2.1-hiera-tiny", "yonigozlan/EdgeTAM-hf")


@dataclass(frozen=True)
class Sam2Options:
    """Backend-specific options (`BackendConfig.options`).

    Attributes:
        prompt_frames: recent frames a prompt may name by stamp (0 = the memory window). Each
            costs one stored input frame (12 MB at 1024 px, float32); a prompt on a past frame
            re-runs the image encoder on it.
        batch_objects: run objects with equal memory layouts through one memory-attention and
            mask-decoder call; None = on CUDA only (on a CPU it saves little, and batched
            kernels round differently from one-object calls).
        corrections_as_conditioning: a prompt on a frame where the object was tracked is kept as
            a prompted (conditioning) frame, as SAM 2's add_all_frames_to_correct_as_cond=True.
            False (default) = the reference's (the library's) semantics: an ordinary tracked
            frame that leaves memory with the window.
        independent_objects: True (default) = the reference: each object tracked as in its own
            library session (SAM 2.1's per-object inference). False = as ONE library session
            holding every object, whose batched memory encoder stores every object's memory
            on a prompted frame from a binarised mask (see hf_stream.py).
        lazy_encoding: while nothing is tracked, frames are only preprocessed; the image encoder
            runs when a prompt names the frame.
        scribble_points: a scribble becomes this many positive clicks spread along its strokes.
        offline: never download (the node's rule); False lets a hub id be fetched (tools only).
    """

    prompt_frames: int = 0
    batch_objects: bool | None = None
    corrections_as_conditioning: bool = False
    independent_objects: bool = True
    lazy_encoding: bool = True
    scribble_points: int = 8
    offline: bool = True

    def __post_init__(self) -> None:
        if self.prompt_frames < 0:
            raise ValueError("prompt_frames must be >= 0")
        if not 1 <= self.scribble_points <= 64:
            raise ValueError("scribble_points must be in [1, 64]")


class Sam2Backend(Backend):
    """SAM 2.1 / EdgeTAM streaming tracker with a bounded memory bank.

    Args:
        model: a loaded `Sam2VideoModel` / `EdgeTamVideoModel` (eval, on its device and dtype).
        config: the backend configuration (memory_frames, max_conditioning_frames, ...).
        options: backend-specific options.
    """

    name: ClassVar[str] = "sam2"
    capabilities: ClassVar[Capabilities] = Capabilities(
        text=False, multimask=True, past_frames=True
    )

    def __init__(self, model: Any, config: BackendConfig, options: Sam2Options) -> None:

        self.config = config
        self.options = options
        self.model_type = str(model.config.model_type)
        self.torch_device: torch.device = next(model.parameters()).device
        batch = options.batch_objects
        if batch is None:
            batch = self.torch_device.type == "cuda"
        try:
            self.tracker = StreamingVideoTracker(
                model,
                memory_frames=config.memory_frames,
                max_conditioning_frames=config.max_conditioning_frames,
                prompt_frames=options.prompt_frames,
                batch_objects=batch,
                corrections_as_conditioning=options.corrections_as_conditioning,
                independent_objects=options.independent_objects,
            )
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.image_size = self.tracker.image_size
        self._size: tuple[int, int] | None = None
        self._latest_image: RgbImage | None = None
        self._closed = False

    # ------------------------------------------------------------------ protocol
    @property
    def device(self) -> str:
        return str(self.torch_device)

    @property
    def memory_frames(self) -> int:
        return int(self.tracker.prompt_frames)

    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        height, width = int(image.shape[0]), int(image.shape[1])
        try:
            pixels = preprocess(image, self.image_size, self.torch_device)
            tracked = self.tracker.step(frame_index, pixels, lazy=self.options.lazy_encoding)
        except SegRosError:
            raise
        except (RuntimeError, ValueError) as exc:  # torch errors (out of memory, ...) are these
            raise BackendError(f"the sam2 model failed on frame {frame_index}: {exc}") from exc
        self._size = (height, width)
        self._latest_image = image
        return self._outputs(tracked, height, width)

    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        if self._size is None:
            raise PromptError("no frame processed yet")
        height, width = self._size
        return prompt_tracker(
            self.tracker,
            frame_index,
            obj,
            prompt,
            self._prompt_kwargs(prompt, height, width),
            multimask,
            lambda out: self._output(out, height, width),
            self.name,
        )

    def remove_object(self, obj: int) -> None:
        self.tracker.remove_object(obj)

    def reset(self) -> None:
        self.tracker.reset()
        self._size = None
        self._latest_image = None

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        if not prompt.has_geometry:
            return super().segment(image, prompt, multimask, score_threshold)
        height, width = int(image.shape[0]), int(image.shape[1])
        kwargs = self._prompt_kwargs(prompt, height, width)
        try:
            # The latest frame's features are cached (or encoded once, then cached): re-use them.
            features = self.tracker.latest_features() if image is self._latest_image else None
            pixels = (
                None
                if features is not None
                else preprocess(image, self.image_size, self.torch_device)
            )
            out = self.tracker.segment(pixels, features=features, multimask=multimask, **kwargs)
        except SegRosError:
            raise
        except (RuntimeError, ValueError) as exc:
            raise BackendError(f"the sam2 model failed on a one-shot request: {exc}") from exc
        return [self._output(out, height, width)]

    def close(self) -> None:
        """Drop the model and the memory bank; give the GPU memory back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        on_cuda = self.torch_device.type == "cuda"
        self.tracker.reset()
        self.tracker.model = None
        del self.tracker
        gc.collect()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def stats(self) -> dict[str, float]:
        if self._closed:
            return {}
        stats = self.tracker.stats()
        stats["input_size"] = float(self.image_size)
        if self.torch_device.type == "cuda":
            import torch

            stats["cuda_allocated_mb"] = torch.cuda.memory_allocated(self.torch_device) / 2**20
        return stats

    # ------------------------------------------------------------------ conversions
    def _prompt_kwargs(self, prompt: Prompt, height: int, width: int) -> dict[str, Any]:
        return tracker_prompt(
            prompt, height, width, self.image_size, self.torch_device, self.options.scribble_points
        )

    def _outputs(
        self, tracked: dict[int, TrackedMask], height: int, width: int
    ) -> dict[int, MaskOutput]:
        """Every object's low-resolution logits -> bool masks at the source size, in one call."""
        import torch

        if not tracked:
            return {}
        ids = list(tracked)
        masks = logits_to_masks(torch.stack([tracked[i].mask_logits for i in ids]), height, width)
        return {obj: _mask_output(tracked[obj], masks[n]) for n, obj in enumerate(ids)}

    def _output(self, out: TrackedMask, height: int, width: int) -> MaskOutput:
        mask = logits_to_masks(out.mask_logits[None], height, width)[0]
        candidates: tuple[Candidate, ...] = ()
        if out.candidate_logits is not None:
            cmasks = logits_to_masks(out.candidate_logits, height, width)
            candidates = tuple(
                Candidate(cmasks[k], float(min(1.0, max(0.0, s))))
                for k, s in enumerate(out.candidate_scores)
            )
        return _mask_output(out, mask, candidates)


def _mask_output(
    out: TrackedMask, mask: npt.NDArray[np.bool_], candidates: tuple[Candidate, ...] = ()
) -> MaskOutput:
    """Visible while the object score says present; score = sigmoid(object score logit)."""
    logit = out.object_score_logit
    score = float(1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0))))
    return MaskOutput(mask=mask, score=score, visible=logit > 0.0, candidates=candidates)


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
    to_output: Callable[[TrackedMask], MaskOutput],
    backend_name: str,
) -> MaskOutput:
    """Give `prompt` (as `tracker_prompt` arguments) to the tracker; its answer as a MaskOutput.

    Model errors (torch raises RuntimeError / ValueError, out of memory included) become
    BackendError. A mask alone IS the object on its frame (the tracker keeps it at a quarter of
    its input size): the answer is then the mask given rather than its resampled copy.
    """
    try:
        out = tracker.add_prompt(frame_index, obj, multimask=multimask, **kwargs)
    except SegRosError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise BackendError(f"the {backend_name} model failed on a prompt: {exc}") from exc
    result = to_output(out)
    mask_alone = "mask" in kwargs and not kwargs["points"] and "box" not in kwargs
    if mask_alone and prompt.mask is not None:
        return MaskOutput(prompt.mask.copy(), result.score, result.visible)
    return result


def scribble_points(mask: npt.NDArray[np.bool_], count: int) -> npt.NDArray[np.float32]:
    """Up to `count` pixel XY spread over a scribble (farthest-point sampling, deterministic)."""
    ys, xs = np.nonzero(mask)
    pixels = np.stack([xs, ys], axis=1).astype(np.float32)
    if len(pixels) > 4096:  # a subsample keeps this O(count * 4096)
        pixels = pixels[np.linspace(0, len(pixels) - 1, 4096).astype(int)]
    # Start from the stroke pixel nearest the strokes' centroid, then take the farthest each time.
    chosen = [int(np.argmin(((pixels - pixels.mean(axis=0)) ** 2).sum(axis=1)))]
    distance = ((pixels - pixels[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < min(count, len(pixels)):
        nxt = int(np.argmax(distance))
        if distance[nxt] == 0:
            break
        chosen.append(nxt)
        distance = np.minimum(distance, ((pixels - pixels[nxt]) ** 2).sum(axis=1))
    return pixels[chosen]


# ---------------------------------------------------------------------- loading
def resized_config(config: Any, size: int) -> Any:
    """A copy of a SAM 2-family video config for another (square) input size.

    Every size derived from the input (feature maps, RoPE grid of the memory attention, prompt
    encoder frame) scales with it. Refuses (ModelLoadError) a size that does not divide evenly.
    The learned position embeddings interpolate (Hiera's `pos_embed` is bicubic-resized; the
    prompt encoder normalises coordinates; RoPE is recomputed), so the weights still apply,
    though the model was trained at its own size: accuracy is best there.
    """
    config = config.__class__.from_dict(config.to_dict())
    native = int(config.image_size)

    def scaled(value: int, what: str) -> int:
        if (value * size) % native:
            raise ModelLoadError(
                f"input_size {size} does not scale the model's {what} ({value} at {native} px) "
                f"to whole cells; use a multiple of {native // np.gcd(native, value)} or 0"
            )
        return value * size // native

    vision = config.vision_config
    vision.backbone_feature_sizes = [
        [scaled(int(v), "feature maps") for v in level] for level in vision.backbone_feature_sizes
    ]
    config.memory_attention_rope_feat_sizes = [
        scaled(int(v), "memory attention grid") for v in config.memory_attention_rope_feat_sizes
    ]
    config.prompt_encoder_config.image_size = size
    backbone = getattr(vision, "backbone_config", None)
    if backbone is not None and getattr(backbone, "image_size", None) is not None:
        backbone.image_size = [size, size]
    config.image_size = size
    return config


def _check_runs(backend: Sam2Backend) -> None:
    """One prompt and one tracked frame on a blank image: fails now rather than on a robot."""
    import torch

    tracker = backend.tracker
    size = backend.image_size
    pixels = torch.zeros(1, 3, size, size, device=backend.torch_device)
    try:
        tracker.step(0, pixels)
        tracker.add_prompt(0, 1, points=[(size / 2, size / 2)], labels=[1])
        tracker.step(1, pixels)
    finally:
        tracker.reset()


def load_model(config: BackendConfig, options: Sam2Options) -> tuple[Any, bool]:
    """The SAM 2.1 / EdgeTAM video model `config.model` names, on its device and dtype.

    Returns (model, resized): resized when `config.input_size` differs from the model's own.
    """
    if not config.model:
        raise ModelLoadError(
            "the sam2 backend needs a checkpoint: set 'model' to a SAM 2.1 or EdgeTAM folder "
            f"(fetch one first, e.g. `seg-ros-download {SUGGESTED_MODELS[0]} --out "
            "~/models/sam2.1-hiera-tiny`)"
        )
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    model_type = model_type_of(config.model, offline=options.offline)
    if model_type not in MODEL_CLASSES:
        raise ModelLoadError(
            f"'{config.model}' holds a '{model_type}' model; the sam2 backend loads "
            f"{', '.join(MODEL_CLASSES)} checkpoints (e.g. {', '.join(SUGGESTED_MODELS)})"
        )
    if model_type == "edgetam_video" and importlib.util.find_spec("timm") is None:
        raise ModelLoadError("EdgeTAM needs the 'timm' package (pip install timm)")
    import transformers

    model_cls = getattr(transformers, MODEL_CLASSES[model_type])
    model_config = None
    if config.input_size:
        try:
            native = model_cls.config_class.from_pretrained(
                config.model, local_files_only=options.offline
            )
        except Exception as exc:
            raise ModelLoadError(f"could not read the config of '{config.model}': {exc}") from exc
        if int(native.image_size) != config.input_size:
            model_config = resized_config(native, config.input_size)
    model = load_pretrained(
        model_cls,
        config.model,
        model_types=tuple(MODEL_CLASSES),
        device=device,
        dtype=dtype,
        offline=options.offline,
        config=model_config,
    )
    if config.compile:
        # The encoder sees one shape; memory length and object batch vary: dynamic shapes there.
        model.vision_encoder.compile()
        model.memory_attention.compile(dynamic=True)
        model.mask_decoder.compile(dynamic=True)
    return model, model_config is not None


def build(config: BackendConfig) -> Sam2Backend:
    """Registry entry. Options: see `Sam2Options`."""
    known = set(Sam2Options.__dataclass_fields__)
    unknown = set(config.options) - known
    if unknown:
        raise ValueError(f"unknown sam2 backend options {sorted(unknown)}; known: {sorted(known)}")
    options = Sam2Options(**config.options)
    model, resized = load_model(config, options)
    backend = Sam2Backend(model, config, options)
    if resized:
        try:
            _check_runs(backend)
        except SegRosError:
            raise
        except Exception as exc:
            backend.close()
            raise ModelLoadError(
                f"this {backend.model_type} model does not run at input_size="
                f"{config.input_size} ({type(exc).__name__}: {exc}); use 0 for its own size"
            ) from exc
    return backend
