"""The backend protocol: a loaded model (`Model`) and the streams it serves (`Backend`).

A `Model` is the weights on their device, loaded once. `Model.open_stream()` gives a `Backend`:
one stream's tracker (its memory bank, its frame cache) on those weights, so that a second camera
costs only its state. Many streams may be open on one model; `Model.step_batch` takes several
streams' next frames at once (sam2 / sam3: one image-encoder pass for all of them).

The session owns ids, labels, thresholds, stamps and locking; the stream owns its memory bank,
which it keeps bounded (`memory_frames`). Objects are named by small ints chosen by the session;
frames by increasing ints.

Locking: each stream's state is guarded by its session's lock; the model's re-entrant `lock` is
held around every forward pass (`Backend.running`), so two streams never run the model at once
(services of one camera may run while the worker steps another).

Images given to a backend are RGB uint8 (H, W, 3), C-contiguous. Masks returned are bool (H, W)
at that resolution. Scores are in [0, 1].
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

from seg_ros.engine.errors import (
    BatchStepError,
    ClosedError,
    SegRosError,
    UnsupportedPromptError,
)
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate
from seg_ros.engine.sam.everything import EverythingOptions
from seg_ros.engine.types import BoolArray, RgbImage

#: Backends that find objects from text; named in the error a text request gets elsewhere.
TEXT_BACKENDS = ("sam3", "sam2 with a text_detector")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can take; the session and the node check requests against it."""

    text: bool = False
    multimask: bool = False
    #: Prompts may name an earlier frame still in memory (not only the latest).
    past_frames: bool = False
    #: Objects may be shown on an image that is not a frame of the stream (`add_reference`).
    references: bool = False


@dataclass(frozen=True, eq=False)
class MaskOutput:
    """A backend's answer for one object on one frame."""

    mask: BoolArray
    score: float
    visible: bool
    candidates: tuple[Candidate, ...] = field(default=())
    #: For a detection: the phrase of the text it matched ("" = the whole text).
    label: str = ""


@dataclass(frozen=True, eq=False)
class ReferenceOutput:
    """What `Backend.add_reference` made of a region shown on a reference image."""

    #: The reference's id within its object (increasing from 1; `remove_reference` takes it).
    reference: int
    #: The region the prompt designates on the reference image (its size).
    mask: BoolArray
    score: float


#: References one object keeps by default (the oldest is forgotten beyond).
MAX_REFERENCES = 4


class Backend(ABC):
    """One stream's promptable tracker.

    Made by `Model.open_stream` (then `loaded_model` is its model), by `build_backend` (a stream
    that owns its model: closing it closes the model), or directly on a model's parts (tests).
    """

    name: ClassVar[str] = "base"
    #: Read from the instance: a backend may answer per instance (sam2 takes text only when
    #: it was built with a text detector). Subclasses set a class default.
    capabilities: Capabilities = Capabilities()
    #: The model this stream runs on (None: built directly, it holds what it runs on).
    loaded_model: Model | None = None
    #: Close `loaded_model` with this stream (set by `build_backend`: one stream, one model).
    owns_model: bool = False
    #: Why this stream refuses work (None while open).
    closed_reason: str | None = None

    def check_open(self) -> None:
        """ClosedError once this stream (or the model under it) was closed."""
        if self.closed_reason is not None:
            raise ClosedError(self.closed_reason)

    def running(self) -> AbstractContextManager[None]:
        """Held around this stream's work on the model: its model's lock (re-entrant), once
        stream and model are known to be open. Raises ClosedError otherwise."""
        self.check_open()
        model = self.loaded_model
        return nullcontext() if model is None else model.running()

    def _detach(self) -> None:
        """The end of every `close`: this stream refuses work from now on, leaves its model,
        and closes it when it owns it."""
        if self.closed_reason is None:
            self.closed_reason = f"this {self.name} stream was closed"
        model, self.loaded_model = self.loaded_model, None
        if model is not None:
            model.forget(self)
            if self.owns_model:
                model.close()

    @property
    def device(self) -> str:
        """Where the model runs ("cuda:0", "cpu"), as diagnostics report it."""
        return "cpu"

    @property
    def memory_frames(self) -> int:
        """How many of the most recent frames a prompt may still refer to (>= 1)."""
        return 1

    @abstractmethod
    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        """Take the next frame: encode it once, track every object, return each one's output.

        `frame_index` increases by one per call (after `reset` it may start anywhere).
        """

    @abstractmethod
    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        """Create object `obj`, or refine it, from a geometric prompt on a frame in memory.

        Re-uses that frame's cached image features: only the decoder runs. Raises PromptError
        when `frame_index` is no longer in memory.
        """

    @abstractmethod
    def remove_object(self, obj: int) -> None:
        """Forget `obj` and free its memory. Unknown ids are ignored (the session checks)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every object and every frame."""

    def detect(
        self,
        frame_index: int,
        text: str,
        score_threshold: float,
        max_objects: int,
        geometry: Prompt | None = None,
    ) -> list[MaskOutput]:
        """Every instance matching `text` on a frame in memory, best first.

        `geometry`, when given, is the prompt that will pick one of the matches; a backend that
        can condition detection on it uses it (SAM 3 takes its box as a positive exemplar).
        Standing queries (engine/concepts.py) call it on the frame just stepped: a backend
        should reuse that frame's image features rather than encode it again.
        """
        raise UnsupportedPromptError(
            f"the '{self.name}' backend has no text prompts; use a text-capable backend "
            f"({', '.join(TEXT_BACKENDS)})"
        )

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        """One-shot, stateless: the objects `prompt` designates on `image`.

        Geometry only gives one object (with candidates when `multimask`); text gives every match.
        Never touches tracked objects or memory.
        """
        raise UnsupportedPromptError(f"the '{self.name}' backend has no one-shot segmentation")

    def segment_everything(self, frame_index: int, options: EverythingOptions) -> list[MaskOutput]:
        """Every object on a frame in memory, as SAM's automatic mask generator finds them.

        Best first; `options.min_area` is in source pixels here. Never touches tracked objects.
        """
        raise UnsupportedPromptError(
            f"the '{self.name}' backend cannot segment everything: it has no promptable mask "
            "decoder to run a grid of clicks through (use sam2 or sam3)"
        )

    def add_reference(
        self, obj: int, image: RgbImage, prompt: Prompt, multimask: bool = False
    ) -> ReferenceOutput:
        """Create object `obj`, or add to it, from a region shown on `image`: an image that is
        NOT a frame of the stream (a photo, another camera, a frame from yesterday).

        The region (the prompt's mask, box or points on `image`) becomes part of the object's
        memory, apart from the stream's frame indices: it never counts as a frame, never leaves
        with the memory window, and is bounded (at most `MAX_REFERENCES` per object, the oldest
        forgotten). The object is then searched for on every frame that follows; until it is
        found, its outputs say visible=False (it keeps its id). Removed with `remove_reference`
        or with the object. May be called before the stream's first frame.
        """
        raise UnsupportedPromptError(
            f"the '{self.name}' backend cannot take a reference from another image"
        )

    def remove_reference(self, obj: int, reference: int) -> None:
        """Forget one reference of `obj` (the object stays, tracked from its other memory).

        Unknown ids raise PromptError: the session cannot check references itself."""
        raise UnsupportedPromptError(f"the '{self.name}' backend has no references")

    def references(self, obj: int) -> list[int]:
        """The reference ids `obj` keeps, oldest first ([] for a backend without references)."""
        return []

    def tracked_apart_from_references(self, obj: int) -> bool:
        """Whether `obj` is tracked from more than its references (a prompt, or found and
        followed since): without them it would still be tracked. False for an object its
        references are all that finds or tracks; the session then refuses to remove them all
        (remove the object instead)."""
        return True

    def close(self) -> None:
        """Free this stream's state, and its model when it owns it (GPU memory). Idempotent.

        Subclasses free their own state first, then call this."""
        self._detach()

    def stats(self) -> dict[str, float]:
        """Numbers for diagnostics and benchmarks (frames in memory, ...)."""
        return {}


class Model(ABC):
    """A loaded model: weights on a device, built once (`registry.load_model`); the streams it
    serves come from `open_stream`, each with its own state on these weights.

    `close` frees the weights; streams still open are closed with it and refuse further work
    (ClosedError naming the model).
    """

    name: ClassVar[str] = "base"
    #: What its streams take (per instance: sam2 takes text only with a text detector).
    capabilities: Capabilities = Capabilities()
    #: `step_batch` runs the streams' frames through the image encoder as ONE batch (sam2,
    #: sam3); otherwise it is each stream's `step` in turn.
    batches_streams: ClassVar[bool] = False

    def __init__(self) -> None:
        #: Held around every forward pass (re-entrant: a step calls helpers that take it again).
        self.lock = threading.RLock()
        # Weak: a stream dropped without close does not stay alive through its model.
        self._streams: weakref.WeakSet[Backend] = weakref.WeakSet()
        self._closed = False

    @property
    def device(self) -> str:
        """Where the model runs ("cuda:0", "cpu")."""
        return "cpu"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def streams_open(self) -> int:
        return len(self._streams)

    @contextmanager
    def running(self) -> Iterator[None]:
        """The model lock, held; ClosedError once the model is closed."""
        with self.lock:
            if self._closed:
                raise ClosedError(f"the {self.name} model was closed: load it again")
            yield

    def open_stream(self) -> Backend:
        """A new stream (memory bank, frame cache) on these weights; costs only its state."""
        with self.running():
            stream = self._new_stream()
            stream.loaded_model = self
            self._streams.add(stream)
            return stream

    @abstractmethod
    def _new_stream(self) -> Backend:
        """A fresh stream's backend on this model's weights."""

    def step_batch(
        self, items: Sequence[tuple[Backend, int, RgbImage]]
    ) -> list[dict[int, MaskOutput]]:
        """Several streams' next frames at once: (stream, frame_index, image) each, every stream
        at most once and opened on this model. Returns each stream's `step` answer, in order;
        equal to calling each stream's `step` in turn, which is what this default does.

        Each stream's step is all or nothing: a stream that refuses or fails its frame does not
        stop the others; BatchStepError then carries every answer and every error, by item.
        """
        with self.running():
            self.check_batch(items)
            return self.step_each(
                [partial(stream.step, index, image) for stream, index, image in items]
            )

    @staticmethod
    def step_each(
        steps: Sequence[Callable[[], dict[int, MaskOutput]]],
    ) -> list[dict[int, MaskOutput]]:
        """Run every stream's step of a batch; BatchStepError (after all ran) if any failed."""
        outputs: list[dict[int, MaskOutput] | None] = []
        errors: list[SegRosError | None] = []
        for step in steps:
            try:
                outputs.append(step())
                errors.append(None)
            except SegRosError as exc:
                outputs.append(None)
                errors.append(exc)
        if any(e is not None for e in errors):
            raise BatchStepError(outputs, errors)
        return [out for out in outputs if out is not None]

    def check_batch(self, items: Sequence[tuple[Backend, int, RgbImage]]) -> None:
        """ValueError unless every stream of `items` is this model's, each named once."""
        seen: set[int] = set()
        for stream, _, _ in items:
            if stream.loaded_model is not self:
                raise ValueError(
                    f"step_batch takes streams opened on this {self.name} model "
                    f"(got a {stream.name} stream of another model, or a closed one)"
                )
            if id(stream) in seen:
                raise ValueError("step_batch takes each stream at most once (one frame each)")
            seen.add(id(stream))

    def stats(self) -> dict[str, float]:
        """Numbers for diagnostics and benchmarks: streams_open, parameters, weight_bytes."""
        return {"streams_open": float(self.streams_open), "parameters": 0.0, "weight_bytes": 0.0}

    def forget(self, stream: Backend) -> None:
        """A stream closed itself: no longer counted as open."""
        with self.lock:
            self._streams.discard(stream)

    def close(self) -> None:
        """Free the weights (GPU memory); every stream still open is closed. Idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            for stream in list(self._streams):
                stream.closed_reason = f"the {self.name} model this stream ran on was closed"
                stream.close()
            self._streams.clear()
            self._free()

    def _free(self) -> None:
        """Drop the weights (subclasses with weights)."""
