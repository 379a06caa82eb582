"""The `sam3` backend: SAM 3 (transformers' `Sam3VideoModel`): text prompts + tracking.

A SAM 3 checkpoint (facebook/sam3: config.json with model_type "sam3_video", model.safetensors,
CLIP tokenizer files) holds two models on ONE vision backbone:

- the detector (`Sam3Model`): text (+ optional exemplar boxes) -> every matching instance, scored;
- the tracker (`Sam3TrackerVideoModel`, SAM 2's architecture, without a vision encoder of its
  own): points / box / mask prompts and frame-to-frame tracking with a memory bank, driven here by
  the generic bounded-memory `StreamingVideoTracker` (engine/sam/tracker.py).

The ViT backbone (most of the compute: 35-70 s a frame for the 840M checkpoint on a 2-core CPU)
runs at most ONCE per frame. Each stored frame's backbone output is memoised (`BackboneCache`); the
detector reads it through its own FPN neck, and the tracker through `SharedVisionEncoder`, which
stands in for the tracker's missing vision encoder (the checkpoint's `tracker_neck` on the shared
backbone, exactly as `Sam3VideoModel.get_vision_features_for_tracker`). While nothing is tracked,
frames are only preprocessed: the backbone runs when a prompt or a text request needs the frame.

One loaded model (`Sam3Model`: weights, the phrase cache) serves many streams (`Sam3Backend`:
tracker, memory bank and `BackboneCache` each). The one `SharedVisionEncoder` mounted in the model
reads the cache of the stream now running: a stream mounts its own cache for the length of each
call, under the model lock, so two streams never read each other's frames.

Text-created objects are tracked like any other: the session turns every detection into a mask
prompt for the tracker and labels the object with the text.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
import torch

from seg_ros.engine.backends.base import (
    MAX_REFERENCES,
    Backend,
    Capabilities,
    MaskOutput,
    Model,
    ReferenceOutput,
)
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import ModelLoadError, PromptError, backend_errors
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.sam.adapter import sam3_vision_output
from seg_ros.engine.sam.detector import (
    Detection,
    TextEncoder,
    detector_features,
    load_tokenizer,
    preprocess,
    read_normalisation,
    run_detector,
)
from seg_ros.engine.sam.everything import EverythingOptions
from seg_ros.engine.sam.loading import (
    load_pretrained,
    model_type_of,
    release_memory,
    resolve_device,
    resolve_dtype,
)
from seg_ros.engine.sam.options import SamOptions
from seg_ros.engine.sam.prompting import (
    TrackerBackend,
    batched_steps,
    check_reference,
    designated,
    everything_outputs,
    prompt_tracker,
    reference_tracker,
    to_output,
    to_outputs,
    tracker_prompt,
    weight_stats,
    with_hint,
)
from seg_ros.engine.sam.tracker import StreamingVideoTracker
from seg_ros.engine.types import RgbImage

#: The checkpoint a robot uses unless told otherwise (fetched beforehand with seg-ros-download).
DEFAULT_MODEL = "facebook/sam3"
MODEL_TYPES = ("sam3_video",)


@dataclass(frozen=True)
class Sam3Options(SamOptions):
    """Options of the sam3 backend (`BackendConfig.options`): those of `SamOptions` (for the
    tracker; `prompt_frames` and `lazy_encoding` also hold for text requests) and:

    Attributes:
        nms_iou: mask IoU above which a lower-scored detection is dropped as a duplicate;
            None = the checkpoint's `det_nms_thresh` (0.1 for facebook/sam3); 1.0 disables.
        text_cache_size: encoded phrases kept (a robot repeats its phrases).
    """

    nms_iou: float | None = None
    text_cache_size: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.nms_iou is not None and not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1]; got {self.nms_iou}")
        if self.text_cache_size < 1:
            raise ValueError("text_cache_size must be >= 1")


@dataclass
class _Frame:
    """A frame in memory: its model input and, once computed, the ViT's output."""

    pixels: torch.Tensor  # (1, 3, S, S), the very tensor the tracker stores too
    size: tuple[int, int]  # source (H, W)
    hidden: torch.Tensor | None = None  # (1, grid * grid, C) backbone output


class BackboneCache:
    """Runs SAM 3's ViT backbone at most once per frame and memoises its output.

    Frames of the prompt window are kept (their pixels are the tracker's own tensors); backbone
    outputs only for the latest frame, the last past frame asked for, and one image that is not
    a frame (a one-shot request).
    """

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.backbone = backbone
        self.frames: dict[int, _Frame] = {}
        #: Backbone passes run (tests and benchmarks read it).
        self.runs = 0
        self._recent_past: int | None = None
        self._scratch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._memoise = True

    def add(
        self,
        index: int,
        pixels: torch.Tensor,
        size: tuple[int, int],
        hidden: torch.Tensor | None = None,
    ) -> None:
        """Store frame `index` (the newest); older frames keep no backbone output but one.

        `hidden`: its backbone output, when a batched pass over several streams computed it."""
        self.frames[index] = _Frame(pixels, size, hidden)
        if hidden is not None:
            self.runs += 1  # this frame went through the backbone once (in a batch)
        for other, frame in self.frames.items():
            if other not in (index, self._recent_past):
                frame.hidden = None

    def keep_last(self, count: int) -> None:
        """Forget every frame but the newest `count`."""
        for old in sorted(self.frames)[:-count]:
            del self.frames[old]

    def discard(self, index: int) -> None:
        """Undo `add` for a frame the stream did not take."""
        self.frames.pop(index, None)

    def clear(self) -> None:
        self.frames.clear()
        self._recent_past = None
        self._scratch = None

    def hidden(self, index: int) -> torch.Tensor:
        """The backbone output of stored frame `index` (computed once)."""
        frame = self.frames[index]
        if frame.hidden is None:
            latest = max(self.frames)
            if index != latest:
                # One past frame at a time keeps its output (a second late request is likely).
                for other, past in self.frames.items():
                    if other not in (index, latest):
                        past.hidden = None
                self._recent_past = index
            frame.hidden = self.run(frame.pixels)
        return frame.hidden

    def hidden_for(self, pixels: torch.Tensor) -> torch.Tensor:
        """The backbone output of `pixels`: a stored frame's if they are one, else computed."""
        for index, frame in self.frames.items():
            if _same(frame.pixels, pixels):
                return self.hidden(index)
        if self._scratch is not None and _same(self._scratch[0], pixels):
            return self._scratch[1]
        hidden = self.run(pixels)
        if self._memoise:
            self._scratch = (pixels, hidden)
        return hidden

    @contextmanager
    def transient(self) -> Iterator[None]:
        """Inside the block an image that is not a stored frame is not memoised (a reference
        image: seen once, its backbone output must not stay in memory)."""
        self._memoise = False
        try:
            yield
        finally:
            self._memoise = True

    def run(self, pixels: torch.Tensor) -> torch.Tensor:
        self.runs += 1
        with torch.inference_mode():
            hidden: torch.Tensor = self.backbone(pixels).last_hidden_state
        return hidden


def run_backbone(backbone: torch.nn.Module, pixels: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Several frames (each (1, 3, S, S)) through the ViT in ONE pass; each frame's own
    (1, grid * grid, C) output (a copy: a stream's cache holds only its own frame)."""
    with torch.inference_mode():
        hidden = backbone(torch.cat(list(pixels))).last_hidden_state
        return [hidden[i : i + 1].clone() for i in range(len(pixels))]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two pixel tensors hold the same image (same storage, else equal values)."""
    if a.shape != b.shape:
        return False
    return a.data_ptr() == b.data_ptr() or torch.equal(a, b.to(a.device, a.dtype))


class SharedVisionEncoder(torch.nn.Module):
    """The tracker's vision encoder in a shared-backbone SAM 3: detector ViT + `tracker_neck`.

    Installed as `tracker_model.vision_encoder` (the checkpoint has none), so the library's
    `get_image_features` and everything built on it work unchanged, while the ViT itself runs
    through a `BackboneCache` (once per frame, shared with the detector): the cache of the stream
    running now, mounted by `using` for the length of its call (under the model lock); a call
    outside any stream runs the ViT uncached.
    """

    def __init__(self, backbone: torch.nn.Module, neck: torch.nn.Module, grid: int) -> None:
        super().__init__()
        self.neck = neck
        self.grid = grid
        # Not submodules: the backbone belongs to the detector (no double registration).
        self.__dict__["backbone"] = backbone
        self.__dict__["cache"] = None

    @contextmanager
    def using(self, cache: BackboneCache) -> Iterator[None]:
        """Read `cache` inside the block (re-entrant: the previous one is put back after)."""
        previous = self.__dict__["cache"]
        self.__dict__["cache"] = cache
        try:
            yield
        finally:
            self.__dict__["cache"] = previous

    def forward(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        cache: BackboneCache | None = self.__dict__["cache"]
        if cache is None:
            # A call outside any stream's (the bare model): run the ViT, memoise nothing.
            with torch.inference_mode():
                hidden = self.__dict__["backbone"](pixel_values).last_hidden_state
        else:
            hidden = cache.hidden_for(pixel_values)
        spatial = hidden.view(hidden.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2)
        fpn, pos = self.neck(spatial)
        return sam3_vision_output(hidden, fpn, pos)


class Sam3Model(Model):
    """A loaded SAM 3 checkpoint shared by its streams: detector + tracker weights, tokenizer,
    the encoded-phrase cache, and the one `SharedVisionEncoder` mounted in the tracker.

    Args:
        model: a loaded `Sam3VideoModel` in eval mode on its device.
        tokenizer: its CLIP tokenizer.
        memory_frames: recent frames each stream's tracker attends to (0 = the model's own).
        max_conditioning_frames: prompted frames kept per object.
        options: see `Sam3Options`.
        normalisation: (mean, std) of the image processor.
    """

    name: ClassVar[str] = "sam3"
    capabilities = Capabilities(text=True, multimask=True, past_frames=True, references=True)
    batches_streams: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        memory_frames: int = 0,
        max_conditioning_frames: int = 4,
        options: Sam3Options | None = None,
        normalisation: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    ) -> None:
        super().__init__()
        self.options = options or Sam3Options()
        self.model: Any = model
        self.detector: Any = model.detector_model
        self.memory_frames = memory_frames
        self.max_conditioning_frames = max_conditioning_frames
        vision_config = self.detector.config.vision_config
        self.image_size = int(vision_config.backbone_config.image_size)
        self.grid = self.image_size // int(vision_config.backbone_config.patch_size)
        first = next(self.detector.parameters())
        self.torch_device: torch.device = first.device
        self.dtype: torch.dtype = first.dtype
        self.mean, self.std = normalisation or ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        nms = self.options.nms_iou
        self.nms_iou = float(model.config.det_nms_thresh if nms is None else nms)
        self.backbone: torch.nn.Module = self.detector.vision_encoder.backbone
        self.encoder = SharedVisionEncoder(self.backbone, model.tracker_neck, self.grid)
        model.tracker_model.vision_encoder = self.encoder
        max_length = int(self.detector.config.text_config.max_position_embeddings)
        # Phrases depend on the weights only: one cache serves every stream.
        self.text = TextEncoder(self.detector, tokenizer, max_length, self.options.text_cache_size)

    @property
    def device(self) -> str:
        return str(self.torch_device)

    def _new_stream(self) -> Sam3Backend:
        return Sam3Backend(self)

    def step_batch(
        self, items: Sequence[tuple[Backend, int, RgbImage]]
    ) -> list[dict[int, MaskOutput]]:
        """One ViT pass for the frames of every stream that encodes now (each stream's frame
        then finds its backbone output in its own cache), then each stream's own tracker neck,
        memory attention and decoder. Equal to each stream's `step` in turn."""
        return batched_steps(self, items, lambda pixels: run_backbone(self.backbone, pixels))

    def stats(self) -> dict[str, float]:
        stats = super().stats()
        if self.model is None:
            return stats
        stats.update(weight_stats(self.model))
        stats["text_encodes"] = float(self.text.encodes)
        if self.torch_device.type == "cuda":
            stats["cuda_allocated_mb"] = torch.cuda.memory_allocated(self.torch_device) / 2**20
        return stats

    def _free(self) -> None:
        self.text.clear()
        # Drop every reference to the weights so that their memory can go back.
        self.model.tracker_model.vision_encoder = None
        self.model = self.detector = None
        del self.backbone, self.encoder, self.text
        release_memory(self.torch_device)


class Sam3Backend(TrackerBackend):
    """SAM 3 detector + tracker on one stream (see the module docstring): its own tracker,
    memory bank and backbone cache on the weights of `loaded`.

    Args:
        loaded: the `Sam3Model` whose weights this stream runs on (`Sam3Model.open_stream`).
    """

    name: ClassVar[str] = "sam3"
    capabilities = Sam3Model.capabilities

    def __init__(self, loaded: Sam3Model) -> None:
        self.shared = loaded
        self.options = loaded.options
        self.model = loaded.model
        self.detector = loaded.detector
        self.image_size = loaded.image_size
        self.grid = loaded.grid
        self.torch_device = loaded.torch_device
        self.dtype = loaded.dtype
        self.mean, self.std = loaded.mean, loaded.std
        self.nms_iou = loaded.nms_iou
        self.text = loaded.text
        self.backbones = BackboneCache(loaded.backbone)
        try:
            self.tracker = StreamingVideoTracker(
                self.model.tracker_model,
                memory_frames=loaded.memory_frames,
                max_conditioning_frames=loaded.max_conditioning_frames,
                max_references=MAX_REFERENCES,
                **self.options.tracker_kwargs(self.torch_device.type),
            )
        except ValueError as exc:
            raise ModelLoadError(f"sam3 tracker: {exc}") from exc
        self._latest_image: RgbImage | None = None
        self._closed = False

    @contextmanager
    def _on_model(self) -> Iterator[None]:
        """The model lock (once stream and model are known open), with THIS stream's backbone
        cache mounted in the shared tracker encoder."""
        with self.running(), self.shared.encoder.using(self.backbones):
            yield

    # ------------------------------------------------------------------ protocol
    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        with self._on_model():
            return self.step_encoded(frame_index, image, self.pixels(image), None)

    def encodes_on_step(self) -> bool:
        """Whether the next `step` runs the backbone (lazy streams without objects do not)."""
        return self.tracker.encodes_on_step(self.options.lazy_encoding)

    def step_encoded(
        self,
        frame_index: int,
        image: RgbImage,
        pixels: torch.Tensor,
        hidden: torch.Tensor | None,
    ) -> dict[int, MaskOutput]:
        """`step` on preprocessed `pixels`, with their backbone output when a batched pass over
        several streams computed it (`Sam3Model.step_batch`)."""
        size = (int(image.shape[0]), int(image.shape[1]))
        with self._on_model():
            # Stored first: the tracker's encoder call finds the frame and memoises its backbone.
            self.backbones.add(frame_index, pixels, size, hidden)
            try:
                with backend_errors(f"the sam3 model failed on frame {frame_index}"):
                    # Lazy: while nothing is tracked the tracker only keeps the frame.
                    tracked = self.tracker.step(
                        frame_index, pixels, lazy=self.options.lazy_encoding
                    )
            except BaseException:
                self.backbones.discard(frame_index)  # the frame is dropped
                raise
            self.backbones.keep_last(self.memory_frames)
        self._latest_image = image
        return to_outputs(tracked, *size)

    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        with self._on_model():
            frame = self._frame(frame_index)
            if prompt.text:
                # The session composes text + geometry (detect(geometry=...) then a dense hint).
                raise PromptError(
                    "add_prompt takes points, a box or a mask; compose text with detect"
                )
            return prompt_tracker(
                self.tracker,
                frame_index,
                obj,
                prompt,
                self._prompt_kwargs(prompt, frame.size),
                multimask,
                lambda out: to_output(out, *frame.size),
                self.name,
            )

    def add_reference(
        self, obj: int, image: RgbImage, prompt: Prompt, multimask: bool = False
    ) -> ReferenceOutput:
        """`obj` shown on `image`, an image that is not a frame (any size; prompt in its
        pixels), through SAM 3's TRACKER: the region enters the object's memory as a
        conditioning frame standing just before the next frame tracked
        (StreamingVideoTracker.add_reference), as with sam2.

        Why not the detector's visual exemplar: SAM 3's detector pools an exemplar box's ROI
        features from the very image it detects on (exemplars are prompts on the target image);
        a box from another image would pool features of the wrong image, which it was not
        trained for, and it would detect a category, not this instance. The tracker's memory
        holds an instance across views, which is what a reference is for. The ViT runs once on
        the image (shared with the tracker neck); its output is not memoised.
        """
        height, width = check_reference(image, prompt)
        with self._on_model(), self.backbones.transient():
            return reference_tracker(
                self.tracker,
                obj,
                self.pixels(image),
                prompt,
                self._prompt_kwargs(prompt, (height, width)),
                multimask,
                (height, width),
                self.name,
            )

    def remove_object(self, obj: int) -> None:
        with self._on_model():
            self.tracker.remove_object(obj)

    def reset(self) -> None:
        with self._on_model():
            self.tracker.reset()
            self.backbones.clear()
            self._latest_image = None

    def detect(
        self,
        frame_index: int,
        text: str,
        score_threshold: float,
        max_objects: int,
        geometry: Prompt | None = None,
    ) -> list[MaskOutput]:
        """Every instance of `text` on a frame in memory; a box in `geometry` is a positive
        exemplar (SAM 3 then finds the boxed instance and its look-alikes more surely)."""
        with self._on_model():
            frame = self._frame(frame_index)
            exemplar = geometry.box if geometry is not None else None
            with backend_errors("the sam3 detector failed"):
                hidden = self.backbones.hidden(frame_index)
                detections = self._detect(
                    hidden, text, frame.size, score_threshold, max_objects, exemplar=exemplar
                )
        return [MaskOutput(d.mask, d.score, True) for d in detections]

    def segment_everything(self, frame_index: int, options: EverythingOptions) -> list[MaskOutput]:
        """SAM's automatic mask generator on the tracker's prompt encoder and mask decoder (SAM
        3's tracker is SAM 2's), on the frame's cached backbone output: no backbone pass when
        the frame was stepped. The masks have no phrase; the session names them from a
        vocabulary with `detect`."""
        with self._on_model():
            frame = self._frame(frame_index)
            return everything_outputs(self.tracker, frame_index, options, frame.size, self.name)

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        size = (int(image.shape[0]), int(image.shape[1]))
        with self._on_model(), backend_errors("the sam3 model failed on a one-shot request"):
            # The latest frame's pixels are a stored frame's: its backbone output is reused.
            latest = max(self.backbones.frames, default=None)
            if image is self._latest_image and latest is not None:
                pixels = self.backbones.frames[latest].pixels
            else:
                pixels = self.pixels(image)
            if prompt.text:
                hidden = self.backbones.hidden_for(pixels)
                detections = self._detect(
                    hidden, prompt.text, size, score_threshold, 0, exemplar=prompt.box
                )
                if not prompt.has_geometry:
                    return [MaskOutput(d.mask, d.score, True) for d in detections]
                chosen = designated([d.mask for d in detections], prompt)
                prompt = with_hint(prompt, chosen) if chosen is not None else prompt.geometry_only()
            kwargs = self._prompt_kwargs(prompt, size)
            # The tracker's decoder; its features come from the memoised backbone output.
            out = self.tracker.segment(pixels, multimask=multimask, **kwargs)
        return [to_output(out, *size)]

    def close(self) -> None:
        """Drop this stream's memories (and the model when the stream owns it: then the GPU
        memory goes back). Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self.shared.lock:
            self.tracker.reset()
            self.backbones.clear()
            self._latest_image = None
            self.tracker.lib.model = None
            # Drop this stream's references to the weights (the model's own go with it).
            del self.tracker, self.text, self.model, self.detector, self.backbones
        super().close()

    def stats(self) -> dict[str, float]:
        if self._closed:
            return {}
        stats = {f"tracker_{k}": v for k, v in self.tracker.stats().items()}
        stats.update(
            {
                "frames_in_memory": float(len(self.backbones.frames)),
                "backbone_runs": float(self.backbones.runs),
                "text_encodes": float(self.text.encodes),
                "objects": float(len(self.tracker.object_ids)),
                "input_size": float(self.image_size),
            }
        )
        stats.update(self.device_stats())
        return stats

    # ------------------------------------------------------------------ internals
    def pixels(self, image: RgbImage) -> torch.Tensor:
        """The model input of `image` (1, 3, S, S) on the model's device and dtype."""
        return preprocess(
            image, self.image_size, self.torch_device, self.dtype, self.mean, self.std
        )

    def _frame(self, frame_index: int) -> _Frame:
        frame = self.backbones.frames.get(frame_index)
        if frame is None:
            kept = sorted(self.backbones.frames)
            raise PromptError(
                f"frame {frame_index} is no longer in memory (frames kept: {kept or 'none'})"
            )
        return frame

    def _detect(
        self,
        hidden: torch.Tensor,
        text: str,
        size: tuple[int, int],
        score_threshold: float,
        max_objects: int,
        exemplar: npt.NDArray[np.float32] | None = None,
    ) -> list[Detection]:
        """Detector on a frame's backbone output; `exemplar` = a positive box (XYXY source px)."""
        vision = detector_features(self.detector, hidden, self.grid)
        boxes = None if exemplar is None else np.asarray(exemplar, np.float32).reshape(1, 4)
        return run_detector(
            self.detector,
            vision,
            self.text(text),
            source_size=size,
            score_threshold=score_threshold,
            max_objects=max_objects,
            nms_iou=self.nms_iou,
            exemplar_boxes=boxes,
        )

    def _prompt_kwargs(self, prompt: Prompt, size: tuple[int, int]) -> dict[str, Any]:
        height, width = size
        return tracker_prompt(
            prompt,
            height,
            width,
            self.image_size,
            self.torch_device,
            self.options.scribble_points,
            self.dtype,
        )


def load(config: BackendConfig) -> Sam3Model:
    """Registry entry ("sam3"): load a SAM 3 checkpoint (local folder or cached hub id) once.

    Raises ModelLoadError (with the reason and the fix) for a missing or partial checkpoint,
    another architecture, missing tokenizer files, a tokenizer of another model, or torchvision
    missing; ValueError for unknown options.
    """
    options = Sam3Options.from_options(config.options, "sam3")
    if importlib.util.find_spec("torchvision") is None:
        raise ModelLoadError(
            "the sam3 backend needs torchvision: transformers' SAM 3 detector pools exemplar "
            "boxes with torchvision.ops.roi_align (and refuses to build without it); install the "
            "torchvision matching your torch"
        )
    if config.compile:
        raise ModelLoadError("compile is not supported by the sam3 backend yet (use false)")
    source = config.model or DEFAULT_MODEL
    model_type = model_type_of(source, offline=options.offline)
    if model_type in ("sam3", "sam3_tracker", "sam3_tracker_video"):
        raise ModelLoadError(
            f"'{source}' holds only part of SAM 3 ('{model_type}'); the sam3 backend needs the "
            "full checkpoint (model_type 'sam3_video': detector + tracker, e.g. facebook/sam3)"
        )
    if model_type not in MODEL_TYPES:
        raise ModelLoadError(
            f"'{source}' holds a '{model_type}' model; the sam3 backend loads 'sam3_video' "
            f"checkpoints (e.g. {DEFAULT_MODEL})"
        )
    from transformers import Sam3VideoConfig, Sam3VideoModel

    if config.input_size:
        try:
            native = Sam3VideoConfig.from_pretrained(source, local_files_only=options.offline)
        except Exception as exc:  # the weights would not load either: say why here
            raise ModelLoadError(f"could not read the config of '{source}': {exc}") from exc
        if int(native.image_size) != config.input_size:
            raise ModelLoadError(
                f"the sam3 backend runs at its checkpoint's input size ({native.image_size} px);"
                f" input_size={config.input_size} is not supported (use 0)"
            )
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    model = load_pretrained(
        Sam3VideoModel,
        source,
        model_types=MODEL_TYPES,
        device=device,
        dtype=dtype,
        offline=options.offline,
    )
    tokenizer = load_tokenizer(source, offline=options.offline)
    vocab = int(model.config.detector_config.text_config.vocab_size)
    if len(tokenizer) > vocab:
        raise ModelLoadError(
            f"the tokenizer of '{source}' has {len(tokenizer)} tokens but the text encoder only "
            f"{vocab}: tokenizer files and weights are from different checkpoints"
        )
    loaded = Sam3Model(
        model,
        tokenizer,
        memory_frames=config.memory_frames,
        max_conditioning_frames=config.max_conditioning_frames,
        options=options,
        normalisation=read_normalisation(source),
    )
    try:
        loaded.open_stream().close()  # the tracker's options are checked now, not on a robot
    except BaseException:
        loaded.close()
        raise
    return loaded


def build(config: BackendConfig) -> Sam3Backend:
    """One stream that owns its model (as `registry.build_backend`). Options: see `Sam3Options`."""
    stream = cast(Sam3Backend, load(config).open_stream())
    stream.owns_model = True
    return stream
