"""A deterministic test double: no model, exact geometric answers, optional artificial latency.

The mask of a prompt is its mask, else its box, else a disc around its foreground points minus
discs around its background points. Objects stay where they were prompted (no motion model).
It exists for tests and for measuring the node's own overhead (`make bench`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from seg_ros.engine.backends.base import Backend, Capabilities, MaskOutput, Model
from seg_ros.engine.config import BackendConfig, BackendOptions
from seg_ros.engine.errors import PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate
from seg_ros.engine.types import BoolArray, RgbImage


@dataclass(frozen=True)
class FakeConfig(BackendOptions):
    """Args: delay_s: sleep per step (a slow model); point_radius: disc radius in pixels;
    memory_frames: frames a prompt may refer back to; fail_every: raise BackendError on every
    n-th step (fault injection, 0 = never)."""

    delay_s: float = 0.0
    point_radius: int = 12
    memory_frames: int = 8
    fail_every: int = 0


def prompt_mask(prompt: Prompt, height: int, width: int, radius: int) -> BoolArray:
    """The fake's answer to a geometric prompt on a `height` x `width` frame."""
    if prompt.mask is not None:
        return prompt.mask.copy()
    mask = np.zeros((height, width), dtype=bool)
    if prompt.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box.tolist())
        mask[y0:y1, x0:x1] = True
    yy, xx = np.ogrid[:height, :width]
    for (x, y), lab in zip(prompt.points.tolist(), prompt.point_labels.tolist(), strict=True):
        disc = (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
        mask = (mask | disc) if lab == 1 else (mask & ~disc)
    return mask


class FakeBackend(Backend):
    name = "fake"
    capabilities = Capabilities(text=False, multimask=True, past_frames=True)

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self._masks: dict[int, BoolArray] = {}
        self._frames: dict[int, tuple[int, int]] = {}
        self.steps = 0

    @property
    def memory_frames(self) -> int:
        return self.config.memory_frames

    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        with self.running():
            return self._step(frame_index, image)

    def _step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        if self.config.delay_s > 0:
            time.sleep(self.config.delay_s)
        self.steps += 1
        self._frames[frame_index] = (int(image.shape[0]), int(image.shape[1]))
        for old in [i for i in self._frames if i <= frame_index - self.config.memory_frames]:
            del self._frames[old]
        return {obj: MaskOutput(m.copy(), 1.0, bool(m.any())) for obj, m in self._masks.items()}

    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        with self.running():
            return self._add_prompt(frame_index, obj, prompt, multimask)

    def _add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool
    ) -> MaskOutput:
        if frame_index not in self._frames:
            raise PromptError(f"frame {frame_index} is not in memory")
        height, width = self._frames[frame_index]
        mask = prompt_mask(prompt, height, width, self.config.point_radius)
        self._masks[obj] = mask
        candidates: tuple[Candidate, ...] = ()
        if multimask:
            # Three nested alternatives, like SAM's whole / part / sub-part.
            small = prompt_mask(prompt, height, width, max(1, self.config.point_radius // 2))
            candidates = (Candidate(mask, 0.9), Candidate(small, 0.6))
        return MaskOutput(mask, 1.0, bool(mask.any()), candidates)

    def remove_object(self, obj: int) -> None:
        self._masks.pop(obj, None)

    def reset(self) -> None:
        self._masks.clear()
        self._frames.clear()

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        if not prompt.has_geometry:
            return super().segment(image, prompt, multimask, score_threshold)
        with self.running():
            mask = prompt_mask(
                prompt, int(image.shape[0]), int(image.shape[1]), self.config.point_radius
            )
        return [MaskOutput(mask, 1.0, bool(mask.any()))]

    def stats(self) -> dict[str, float]:
        return {"frames_in_memory": float(len(self._frames)), "objects": float(len(self._masks))}


class FakeModel(Model):
    """The fake's "model": its options; each stream has its own objects and frames."""

    name = "fake"
    capabilities = FakeBackend.capabilities

    def __init__(self, options: FakeConfig | None = None) -> None:
        super().__init__()
        self.options = options or FakeConfig()

    def _new_stream(self) -> Backend:
        backend = FakeBackend(self.options)
        if not self.options.fail_every:
            return backend
        from seg_ros.testing.faults import FaultyBackend  # test double only: loaded when asked for

        # The wrapped stream is this model's too: it refuses work once the model is closed.
        backend.loaded_model = self
        faulty = FaultyBackend(backend)
        faulty.fail_every("step", self.options.fail_every)
        return faulty


def load(config: BackendConfig) -> FakeModel:
    """Registry entry: options delay_s, point_radius, memory_frames, fail_every.

    `fail_every` is the one fault-injection mechanism (seg_ros.testing.faults) armed on `step`
    of every stream, so a node started with `backend_options: '{"fail_every": 3}'` fails like
    the tests' faults.
    """
    return FakeModel(FakeConfig.from_options(config.options, "fake"))
