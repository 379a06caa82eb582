"""The backend protocol: what a model must do to serve a streaming session.

A backend is one stream's tracker. The session owns ids, labels, thresholds, stamps and locking;
the backend owns the model and its memory bank, which it keeps bounded (`memory_frames`).
Objects are named by small ints chosen by the session; frames by increasing ints.

Images given to a backend are RGB uint8 (H, W, 3), C-contiguous. Masks returned are bool (H, W)
at that resolution. Scores are in [0, 1].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from seg_ros.engine.errors import UnsupportedPromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate
from seg_ros.engine.sam.everything import EverythingOptions
from seg_ros.engine.types import BoolArray, RgbImage

#: Backends that find objects from text; named in the error a text request gets elsewhere.
TEXT_BACKENDS = ("sam3",)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can take; the session and the node check requests against it."""

    text: bool = False
    multimask: bool = False
    #: Prompts may name an earlier frame still in memory (not only the latest).
    past_frames: bool = False


@dataclass(frozen=True, eq=False)
class MaskOutput:
    """A backend's answer for one object on one frame."""

    mask: BoolArray
    score: float
    visible: bool
    candidates: tuple[Candidate, ...] = field(default=())


class Backend(ABC):
    """One stream's promptable tracker."""

    name: ClassVar[str] = "base"
    capabilities: ClassVar[Capabilities] = Capabilities()

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

    def close(self) -> None:
        """Free the model (GPU memory). Idempotent."""

    def stats(self) -> dict[str, float]:
        """Numbers for diagnostics and benchmarks (frames in memory, ...)."""
        return {}
