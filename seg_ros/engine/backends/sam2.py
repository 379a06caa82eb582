"""The `sam2` backend: SAM 2.1 (`Sam2VideoModel`) or EdgeTAM (`EdgeTamVideoModel`) via transformers.

The checkpoint's model_type picks the model ("sam2_video" or "edgetam_video"). Tracking runs on
`StreamingVideoTracker` (engine/sam/tracker.py); the tracking memory is bounded by its plan
(engine/sam/memory.py). This module loads the model and converts between the engine's world
(RGB uint8 frames of any size, prompts in source pixels, bool masks at the source resolution)
and the model's square input frame, through the helpers it shares with sam3 (sam/prompting.py).

Defaults reproduce a named reference bit for bit: transformers' streaming session, one per
object (SAM 2.1's per-object inference), with the library's prompt semantics; see tracker.py.

Text, the Grounded-SAM-2 way: with `BackendConfig.text_detector` (an open-vocabulary detector
folder, engine/sam/open_vocab.py) `detect` and text `segment` work: the detector proposes boxes
for the phrases on the frame's source image, and SAM 2's decoder turns each box into a mask on
the frame's cached image features (the image encoder does not run again). Without it, text is
refused with a message naming the parameter.

Fetch a checkpoint once with `seg-ros-download facebook/sam2.1-hiera-tiny --out <folder>`; the
backend never downloads (`options={"offline": False}` allows it, for tools only).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from seg_ros.engine.backends.base import (
    MAX_REFERENCES,
    Backend,
    Capabilities,
    MaskOutput,
    Model,
    ReferenceOutput,
)
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import (
    ModelLoadError,
    PromptError,
    SegRosError,
    UnsupportedPromptError,
    backend_errors,
)
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.sam.everything import EverythingOptions
from seg_ros.engine.sam.loading import (
    load_pretrained,
    model_type_of,
    release_memory,
    resized_config,
    resolve_device,
    resolve_dtype,
)
from seg_ros.engine.sam.open_vocab import (
    DEFAULT_DETECTOR,
    BoxDetection,
    OpenVocabDetector,
    load_detector,
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
from seg_ros.engine.sam.steps import EncodedFrame, encode_batch
from seg_ros.engine.sam.tracker import StreamingVideoTracker
from seg_ros.engine.sam.transforms import preprocess
from seg_ros.engine.types import RgbImage

if TYPE_CHECKING:
    import torch

#: model_type -> transformers class name.
MODEL_CLASSES = {"sam2_video": "Sam2VideoModel", "edgetam_video": "EdgeTamVideoModel"}
#: Suggested checkpoints (named in errors; never fetched by the backend).
SUGGESTED_MODELS = ("facebook/sam2.1-hiera-tiny", "yonigozlan/EdgeTAM-hf")


@dataclass(frozen=True)
class Sam2Options(SamOptions):
    """Options of the sam2 backend (`BackendConfig.options`): those of `SamOptions` and, for
    text through a `text_detector`:

    Attributes:
        detector_threshold: boxes scoring below it are never returned, whatever a request's
            score_threshold (the session's default is 0: with a DETR-style detector's 900
            queries that would be 900 boxes of noise). 0.3 sits between Grounded-SAM-2's box
            (0.35) and text (0.25) thresholds.
        detector_nms_iou: box IoU above which a lower-scored box of the same phrase is a
            duplicate; 1.0 keeps every box.
        detector_shortest_edge: Grounding DINO family: frames resized to this shortest edge for
            the detector (0 = the checkpoint's 800 px, which upsamples a 640x480 frame; 480 keeps
            it at its own size, 2.8x fewer pixels). Coarser finds fewer small objects.
    """

    detector_threshold: float = 0.3
    detector_nms_iou: float = 0.5
    detector_shortest_edge: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.detector_threshold <= 1.0:
            raise ValueError(f"detector_threshold must be in [0, 1]; got {self.detector_threshold}")
        if not 0.0 < self.detector_nms_iou <= 1.0:
            raise ValueError(f"detector_nms_iou must be in (0, 1]; got {self.detector_nms_iou}")
        if self.detector_shortest_edge and not 32 <= self.detector_shortest_edge <= 2048:
            raise ValueError(
                f"detector_shortest_edge must be 0 or in [32, 2048]; got "
                f"{self.detector_shortest_edge}"
            )


#: The refusal of a text request by a sam2 backend built without a detector.
NO_DETECTOR = (
    "the 'sam2' backend takes text only with an open-vocabulary detector: set the "
    "'text_detector' parameter to a detector folder (fetch one first, e.g. "
    f"`seg-ros-download {DEFAULT_DETECTOR} --out ~/models/mm-grounding-dino-tiny`), or use "
    "backend sam3"
)


class Sam2Backend(TrackerBackend):
    """SAM 2.1 / EdgeTAM streaming tracker with a bounded memory bank: one stream.

    Opened by `Sam2Model.open_stream` (many on one model), or built directly on a model.

    Args:
        model: a loaded `Sam2VideoModel` / `EdgeTamVideoModel` (eval, on its device and dtype).
        config: the backend configuration (memory_frames, max_conditioning_frames, ...).
        options: backend-specific options.
        detector: an open-vocabulary detector for text (None = text is refused).
    """

    name: ClassVar[str] = "sam2"
    capabilities = Capabilities(text=False, multimask=True, past_frames=True, references=True)

    def __init__(
        self,
        model: Any,
        config: BackendConfig,
        options: Sam2Options,
        detector: OpenVocabDetector | None = None,
    ) -> None:
        self.detector = detector
        self.capabilities = Capabilities(
            text=detector is not None, multimask=True, past_frames=True, references=True
        )
        self.config = config
        self.options = options
        self.model_type = str(model.config.model_type)
        self.torch_device: torch.device = next(model.parameters()).device
        try:
            self.tracker = StreamingVideoTracker(
                model,
                memory_frames=config.memory_frames,
                max_conditioning_frames=config.max_conditioning_frames,
                max_references=MAX_REFERENCES,
                **options.tracker_kwargs(self.torch_device.type),
            )
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.image_size = self.tracker.image_size
        self._size: tuple[int, int] | None = None
        self._latest_image: RgbImage | None = None
        #: Source images of the frames in memory, for the detector (kept only with one).
        self._images: dict[int, RgbImage] = {}
        self._closed = False

    # ------------------------------------------------------------------ protocol
    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        with self.running():
            return self.step_encoded(frame_index, image, self.pixels(image), None)

    def pixels(self, image: RgbImage) -> torch.Tensor:
        """The model input of `image` (1, 3, S, S) on the model's device."""
        return preprocess(image, self.image_size, self.torch_device)

    def step_encoded(
        self,
        frame_index: int,
        image: RgbImage,
        pixels: torch.Tensor,
        encoded: EncodedFrame | None,
    ) -> dict[int, MaskOutput]:
        """`step` on preprocessed `pixels`, with their encoder output when a batched pass over
        several streams computed it (`Sam2Model.step_batch`). Call under `running()`."""
        height, width = int(image.shape[0]), int(image.shape[1])
        with backend_errors(f"the sam2 model failed on frame {frame_index}"):
            tracked = self.tracker.step(
                frame_index, pixels, lazy=self.options.lazy_encoding, encoded=encoded
            )
        self._size = (height, width)
        self._latest_image = image
        if self.detector is not None:
            # The detector needs a frame's source image (its own size and aspect); keep those of
            # the frames a prompt may still name, no more (references, not copies).
            self._images[frame_index] = image
            self._images = {i: im for i, im in self._images.items() if self.tracker.has_frame(i)}
        return to_outputs(tracked, height, width)

    def encodes_on_step(self) -> bool:
        """Whether the next `step` runs the image encoder (lazy streams without objects do not)."""
        return self.tracker.encodes_on_step(self.options.lazy_encoding)

    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        with self.running():
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
                lambda out: to_output(out, height, width),
                self.name,
            )

    def add_reference(
        self, obj: int, image: RgbImage, prompt: Prompt, multimask: bool = False
    ) -> ReferenceOutput:
        """`obj` shown on `image`, an image that is not a frame (any size; prompt in its
        pixels): it enters the object's memory as a conditioning frame standing just before
        the next frame tracked (StreamingVideoTracker.add_reference). The image is encoded once
        and not kept."""
        height, width = check_reference(image, prompt)
        with self.running():
            return reference_tracker(
                self.tracker,
                obj,
                self.pixels(image),
                prompt,
                self._prompt_kwargs(prompt, height, width),
                multimask,
                (height, width),
                self.name,
            )

    def remove_object(self, obj: int) -> None:
        with self.running():
            self.tracker.remove_object(obj)

    def reset(self) -> None:
        with self.running():
            self.tracker.reset()
            self._size = None
            self._latest_image = None
            self._images = {}

    def detect(
        self,
        frame_index: int,
        text: str,
        score_threshold: float,
        max_objects: int,
        geometry: Prompt | None = None,
    ) -> list[MaskOutput]:
        """Every instance of a phrase of `text` on a frame in memory, best box score first.

        The detector runs on the frame's source image; each box goes through SAM 2's decoder on
        the frame's cached features. `geometry` cannot steer these detectors (the session picks
        the match it designates). Each answer's score is its box's, its label the phrase.
        """
        detector = self._text_detector()
        with self.running():
            return self._detect(detector, frame_index, text, score_threshold, max_objects)

    def _detect(
        self,
        detector: OpenVocabDetector,
        frame_index: int,
        text: str,
        score_threshold: float,
        max_objects: int,
    ) -> list[MaskOutput]:
        image = self._images.get(frame_index)
        if image is None or not self.tracker.has_frame(frame_index):
            raise PromptError(
                f"frame {frame_index} is no longer in memory (frames kept: "
                f"{sorted(self._images) or 'none'})"
            )
        with backend_errors("the sam2 text detector failed"):
            boxes = detector(image, text, self._box_threshold(score_threshold), max_objects)
        if not boxes:
            return []
        with backend_errors("the sam2 model failed on detected boxes"):
            return self._box_masks(self.tracker.frame_features(frame_index), boxes, image)

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        detector = self._text_detector() if prompt.text else None  # text needs a detector
        if detector is None and not prompt.has_geometry:
            return super().segment(image, prompt, multimask, score_threshold)
        height, width = int(image.shape[0]), int(image.shape[1])
        with self.running(), backend_errors("the sam2 model failed on a one-shot request"):
            # The latest frame's features are cached (or encoded once, then cached): re-use them.
            features = self.tracker.latest_features() if image is self._latest_image else None
            if features is None:
                pixels = preprocess(image, self.image_size, self.torch_device)
                features = self.tracker.encode_image(pixels)
            if detector is not None:
                boxes = detector(image, prompt.text, self._box_threshold(score_threshold), 0)
                found = self._box_masks(features, boxes, image)
                if not prompt.has_geometry:
                    return found
                chosen = designated([m.mask for m in found], prompt)
                prompt = with_hint(prompt, chosen) if chosen is not None else prompt.geometry_only()
            kwargs = self._prompt_kwargs(prompt, height, width)
            out = self.tracker.segment(features=features, multimask=multimask, **kwargs)
        return [to_output(out, height, width)]

    def segment_everything(self, frame_index: int, options: EverythingOptions) -> list[MaskOutput]:
        with self.running():
            if self._size is None:
                raise PromptError("no frame processed yet")
            return everything_outputs(self.tracker, frame_index, options, self._size, self.name)

    def close(self) -> None:
        """Drop this stream's memory bank (and the model: when built directly on it, or when
        this stream owns its model); give the GPU memory back. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.tracker.reset()
        self.tracker.lib.model = None
        del self.tracker
        self._latest_image = None
        self._images = {}
        self.detector = None  # the model's: closed with it
        if self.loaded_model is None:
            release_memory(self.torch_device)  # built directly: the weights go with it
        super().close()

    def stats(self) -> dict[str, float]:
        if self._closed:
            return {}
        stats = self.tracker.stats()
        stats["input_size"] = float(self.image_size)
        if self.detector is not None:
            stats["detector_runs"] = float(self.detector.runs)
            stats["detector_ms"] = self.detector.last_ms
        stats.update(self.device_stats())
        return stats

    # ------------------------------------------------------------------ text
    def _text_detector(self) -> OpenVocabDetector:
        if self.detector is None:
            raise UnsupportedPromptError(NO_DETECTOR)
        return self.detector

    def _box_threshold(self, score_threshold: float) -> float:
        return max(float(score_threshold), self.options.detector_threshold)

    def _box_masks(
        self, features: list[torch.Tensor], boxes: list[BoxDetection], image: RgbImage
    ) -> list[MaskOutput]:
        """Each box -> SAM 2's mask on `features` (decoder only), at the source size. A box
        whose mask is empty at the source size is dropped (nothing to track)."""
        height, width = int(image.shape[0]), int(image.shape[1])
        sx, sy = self.image_size / float(width), self.image_size / float(height)
        found: list[MaskOutput] = []
        for det in boxes:
            x0, y0, x1, y1 = (float(v) for v in det.box)
            out = self.tracker.segment(features=features, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
            mask = to_output(out, height, width).mask
            if mask.any():
                found.append(MaskOutput(mask, det.score, True, label=det.label))
        return found

    # ------------------------------------------------------------------ conversions
    def _prompt_kwargs(self, prompt: Prompt, height: int, width: int) -> dict[str, Any]:
        return tracker_prompt(
            prompt, height, width, self.image_size, self.torch_device, self.options.scribble_points
        )


class Sam2Model(Model):
    """A loaded SAM 2.1 / EdgeTAM video model: weights + options, shared by its streams.

    Each stream (`Sam2Backend`) has its own `StreamingVideoTracker` (memory bank, frame and
    feature caches) on these weights; nothing per stream lives in the model.
    """

    name: ClassVar[str] = "sam2"
    capabilities = Sam2Backend.capabilities
    batches_streams: ClassVar[bool] = True

    def __init__(
        self,
        model: Any,
        config: BackendConfig,
        options: Sam2Options,
        detector: OpenVocabDetector | None = None,
    ) -> None:
        super().__init__()
        self.model: Any = model
        self.config = config
        self.options = options
        #: The open-vocabulary text detector, shared by every stream (None: text is refused).
        self.detector = detector
        self.capabilities = Capabilities(
            text=detector is not None, multimask=True, past_frames=True, references=True
        )
        self.model_type = str(model.config.model_type)
        self.torch_device: torch.device = next(model.parameters()).device

    @property
    def device(self) -> str:
        return str(self.torch_device)

    def _new_stream(self) -> Sam2Backend:
        return Sam2Backend(self.model, self.config, self.options, self.detector)

    def step_batch(
        self, items: Sequence[tuple[Backend, int, RgbImage]]
    ) -> list[dict[int, MaskOutput]]:
        """One image-encoder pass for the frames of every stream that encodes now, then each
        stream's own memory attention, decoder and memory encoder. Equal to each stream's
        `step` in turn (a lazy stream without objects only stores its frame, as in `step`)."""
        return batched_steps(self, items, lambda pixels: encode_batch(self.model, pixels))

    def stats(self) -> dict[str, float]:
        stats = super().stats()
        if self.model is None:
            return stats
        stats.update(weight_stats(self.model))
        if self.torch_device.type == "cuda":
            import torch

            stats["cuda_allocated_mb"] = torch.cuda.memory_allocated(self.torch_device) / 2**20
        return stats

    def _free(self) -> None:
        self.model = None
        if self.detector is not None:
            self.detector.close()
            self.detector = None
        release_memory(self.torch_device)


# ---------------------------------------------------------------------- loading
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


def load(config: BackendConfig) -> Sam2Model:
    """Registry entry: the model `config.model` names, loaded once. Options: see `Sam2Options`.
    With `config.text_detector`, the detector is loaded too (same device and dtype) and shared
    by every stream; a bad detector folder fails the load."""
    options = Sam2Options.from_options(config.options, "sam2")
    model, resized = load_model(config, options)
    detector = None
    if config.text_detector:  # loaded once with the model, shared by its streams
        device = next(model.parameters()).device
        detector = load_detector(
            config.text_detector,
            device=device,
            dtype=resolve_dtype(config.dtype, device),
            offline=options.offline,
            nms_iou=options.detector_nms_iou,
            shortest_edge=options.detector_shortest_edge,
        )
    loaded = Sam2Model(model, config, options, detector)
    try:
        probe = loaded.open_stream()
    except BaseException:
        loaded.close()
        raise
    try:
        if resized:
            _check_runs(cast(Sam2Backend, probe))
    except SegRosError:
        loaded.close()
        raise
    except Exception as exc:
        loaded.close()
        raise ModelLoadError(
            f"this {loaded.model_type} model does not run at input_size="
            f"{config.input_size} ({type(exc).__name__}: {exc}); use 0 for its own size"
        ) from exc
    finally:
        probe.close()
    return loaded


def build(config: BackendConfig) -> Sam2Backend:
    """One stream that owns its model (as `registry.build_backend`). Options: see `Sam2Options`."""
    stream = cast(Sam2Backend, load(config).open_stream())
    stream.owns_model = True
    return stream
