"""A deterministic test double: no model, exact geometric answers, optional artificial latency.

The mask of a prompt is its mask, else its box, else a disc around its foreground points minus
discs around its background points. Objects stay where they were prompted (no motion model).
It exists for tests and for measuring the node's own overhead (`make bench`).

References (`add_reference`): the fake's "appearance model" is the one colour the region has
most on the reference image; an object not yet found is found on the first frame that has
pixels of exactly that colour (those pixels are its mask), then stays put like any object.

With the `script` option it is also a scripted text detector (`ScriptedFakeBackend`): each entry
is one instance of a phrase, a box present on a range of frames (optionally moving), which
`detect` returns on those frames; an object prompted onto an instance follows it while it is
there and is lost when it is gone, as a tracker would. Standing-query tests (engine and graph)
drive the policy with it: instances appear one by one, overlap, leave and return.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from seg_ros.engine.backends.base import (
    MAX_REFERENCES,
    Backend,
    Capabilities,
    MaskOutput,
    Model,
    ReferenceOutput,
)
from seg_ros.engine.concepts import mask_iou
from seg_ros.engine.config import BackendConfig, BackendOptions
from seg_ros.engine.errors import PromptError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate
from seg_ros.engine.types import BoolArray, RgbImage


@dataclass(frozen=True)
class FakeConfig(BackendOptions):
    """Args: delay_s: sleep per step (a slow model); point_radius: disc radius in pixels;
    memory_frames: frames a prompt may refer back to; fail_every: raise BackendError on every
    n-th step (fault injection, 0 = never); script: scripted text instances (see
    `ScriptedInstance.parse`; empty = no text)."""

    delay_s: float = 0.0
    point_radius: int = 12
    memory_frames: int = 8
    fail_every: int = 0
    script: tuple[Any, ...] | list[Any] = ()

    def __post_init__(self) -> None:
        parse_script(self.script)  # refused before anything is built


#: An object prompted with a mask this close to a scripted instance's box follows it; a lost
#: one is re-found by an instance this close to its last mask (a tracker re-finding it).
FOLLOW_IOU = 0.5


@dataclass(frozen=True)
class ScriptedInstance:
    """One scripted instance: `text` is at `box` (XYXY pixels, exclusive ends) on frames
    `start` .. `stop - 1` (stop -1 = for ever), moving `velocity` (dx, dy) pixels a frame, and
    detected with `score`."""

    text: str
    box: tuple[int, int, int, int]
    start: int = 0
    stop: int = -1
    score: float = 0.9
    velocity: tuple[int, int] = (0, 0)

    @classmethod
    def parse(cls, raw: Any) -> ScriptedInstance:
        """From a JSON object {"text", "box": [x0, y0, x1, y1], "frames": [start, stop],
        "score", "velocity": [dx, dy]}; ValueError naming what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError(f"a script entry must be an object; got {raw!r}")
        unknown = set(raw) - {"text", "box", "frames", "score", "velocity"}
        if unknown:
            raise ValueError(f"unknown script keys {sorted(unknown)}")
        try:
            x0, y0, x1, y1 = (int(v) for v in raw["box"])
            start, stop = (int(v) for v in raw.get("frames", (0, -1)))
            dx, dy = (int(v) for v in raw.get("velocity", (0, 0)))
            entry = cls(
                " ".join(str(raw["text"]).split()).lower(),
                (x0, y0, x1, y1),
                start,
                stop,
                float(raw.get("score", 0.9)),
                (dx, dy),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad script entry {raw!r}: {exc}") from exc
        if not (x1 > x0 and y1 > y0) or not 0.0 <= entry.score <= 1.0 or not entry.text:
            raise ValueError(f"bad script entry {raw!r}: empty box, text or score outside [0, 1]")
        return entry

    def present(self, frame: int) -> bool:
        return frame >= self.start and (self.stop < 0 or frame < self.stop)

    def mask(self, frame: int, height: int, width: int) -> BoolArray:
        dx, dy = (v * (frame - self.start) for v in self.velocity)
        x0, y0, x1, y1 = self.box
        mask = np.zeros((height, width), dtype=bool)
        mask[max(0, y0 + dy) : max(0, y1 + dy), max(0, x0 + dx) : max(0, x1 + dx)] = True
        return mask


def parse_script(raw: Any) -> tuple[ScriptedInstance, ...]:
    if not isinstance(raw, list | tuple):
        raise ValueError("the fake's script must be a list of instances")
    return tuple(ScriptedInstance.parse(entry) for entry in raw)


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
    capabilities = Capabilities(text=False, multimask=True, past_frames=True, references=True)

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self._masks: dict[int, BoolArray] = {}
        self._frames: dict[int, tuple[int, int]] = {}
        # object -> [(reference id, RGB colour)], oldest first; the next id per object.
        self._refs: dict[int, list[tuple[int, tuple[int, int, int]]]] = {}
        self._next_ref: dict[int, int] = {}
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
        for obj, refs in self._refs.items():
            if refs and obj not in self._masks:
                colours = np.array([c for _, c in refs], dtype=np.uint8).reshape(-1, 3)
                hit = (image[:, :, None, :] == colours[None, None]).all(axis=3).any(axis=2)
                if hit.any():
                    self._masks[obj] = hit
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
        self._refs.pop(obj, None)
        self._next_ref.pop(obj, None)

    def reset(self) -> None:
        self._masks.clear()
        self._frames.clear()
        self._refs.clear()
        self._next_ref.clear()

    def add_reference(
        self, obj: int, image: RgbImage, prompt: Prompt, multimask: bool = False
    ) -> ReferenceOutput:
        with self.running():
            mask = prompt_mask(
                prompt, int(image.shape[0]), int(image.shape[1]), self.config.point_radius
            )
            if not mask.any():
                raise PromptError("the prompt designates no region on the reference image")
            colours, count = np.unique(image[mask], axis=0, return_counts=True)
            colour = tuple(int(v) for v in colours[int(np.argmax(count))])
            number = self._next_ref.get(obj, 1)
            refs = self._refs.setdefault(obj, [])
            refs.append((number, (colour[0], colour[1], colour[2])))
            del refs[:-MAX_REFERENCES]
            self._next_ref[obj] = number + 1
            return ReferenceOutput(number, mask, 1.0)

    def remove_reference(self, obj: int, reference: int) -> None:
        refs = self._refs.get(obj, [])
        kept = [r for r in refs if r[0] != reference]
        if len(kept) == len(refs):
            known = ", ".join(str(r[0]) for r in refs) or "none"
            raise PromptError(f"object {obj} has no reference {reference} (references: {known})")
        self._refs[obj] = kept

    def references(self, obj: int) -> list[int]:
        return [r[0] for r in self._refs.get(obj, [])]

    def tracked_apart_from_references(self, obj: int) -> bool:
        return obj in self._masks

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


class ScriptedFakeBackend(FakeBackend):
    """The fake with scripted text instances (its `script` option): a test double detector.

    `detect(text)` returns the instances of `text` (case-insensitive) present on the frame, best
    first, as box masks. An object prompted onto an instance (mask IoU >= 0.5 with its box)
    follows it; when the instance is gone the object is lost (not visible), and it is re-found
    by any present instance of IoU >= 0.5 with its last mask. Other objects stay put.
    """

    capabilities = Capabilities(text=True, multimask=True, past_frames=True)

    def __init__(self, config: FakeConfig | None = None) -> None:
        super().__init__(config)
        self.script = parse_script(self.config.script)
        self._follows: dict[int, int] = {}  # object -> index of the instance it follows
        self._free: set[int] = set()  # objects made on no instance: they stay put
        #: detect() calls answered (tests read it).
        self.detects = 0

    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        outputs = super().step(frame_index, image)
        height, width = int(image.shape[0]), int(image.shape[1])
        for obj in list(self._masks):
            if obj in self._free:
                continue
            current = self._follows.get(obj)
            if current is None or not self.script[current].present(frame_index):
                current = self._nearest(self._masks[obj], frame_index, height, width)
            if current is None:
                self._follows.pop(obj, None)
                empty = np.zeros((height, width), dtype=bool)
                outputs[obj] = MaskOutput(empty, 0.0, False)  # lost; the last mask is kept
                continue
            self._follows[obj] = current
            mask = self.script[current].mask(frame_index, height, width)
            self._masks[obj] = mask
            outputs[obj] = MaskOutput(mask.copy(), 1.0, bool(mask.any()))
        return outputs

    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        out = super().add_prompt(frame_index, obj, prompt, multimask)
        height, width = self._frames[frame_index]
        found = self._nearest(out.mask, frame_index, height, width)
        self._follows.pop(obj, None)
        self._free.discard(obj)
        if found is None:
            self._free.add(obj)
        else:
            self._follows[obj] = found
        return out

    def remove_object(self, obj: int) -> None:
        super().remove_object(obj)
        self._follows.pop(obj, None)
        self._free.discard(obj)

    def reset(self) -> None:
        super().reset()
        self._follows.clear()
        self._free.clear()

    def detect(
        self,
        frame_index: int,
        text: str,
        score_threshold: float,
        max_objects: int,
        geometry: Prompt | None = None,
    ) -> list[MaskOutput]:
        if frame_index not in self._frames:
            raise PromptError(f"frame {frame_index} is not in memory")
        self.detects += 1
        height, width = self._frames[frame_index]
        phrase = " ".join(text.split()).lower()
        found = [
            MaskOutput(inst.mask(frame_index, height, width), inst.score, True)
            for inst in self.script
            if inst.text == phrase and inst.present(frame_index) and inst.score >= score_threshold
        ]
        found.sort(key=lambda m: -m.score)
        return found[:max_objects] if max_objects else found

    def _nearest(self, mask: BoolArray, frame: int, height: int, width: int) -> int | None:
        """The present instance overlapping `mask` most (IoU >= FOLLOW_IOU), if any."""
        best, best_iou = None, FOLLOW_IOU
        for i, inst in enumerate(self.script):
            if inst.present(frame):
                iou = mask_iou(mask, inst.mask(frame, height, width))
                if iou >= best_iou:
                    best, best_iou = i, iou
        return best


class FakeModel(Model):
    """The fake's "model": its options; each stream has its own objects and frames."""

    name = "fake"
    capabilities = FakeBackend.capabilities

    def __init__(self, options: FakeConfig | None = None) -> None:
        super().__init__()
        self.options = options or FakeConfig()
        if self.options.script:  # scripted text instances: a test double detector
            self.capabilities = ScriptedFakeBackend.capabilities

    def _new_stream(self) -> Backend:
        scripted = bool(self.options.script)
        backend = ScriptedFakeBackend(self.options) if scripted else FakeBackend(self.options)
        if not self.options.fail_every:
            return backend
        from seg_ros.testing.faults import FaultyBackend  # test double only: loaded when asked for

        # The wrapped stream is this model's too: it refuses work once the model is closed.
        backend.loaded_model = self
        faulty = FaultyBackend(backend)
        faulty.fail_every("step", self.options.fail_every)
        return faulty


def load(config: BackendConfig) -> FakeModel:
    """Registry entry: options delay_s, point_radius, memory_frames, fail_every, script.

    `fail_every` is the one fault-injection mechanism (seg_ros.testing.faults) armed on `step`
    of every stream, so a node started with `backend_options: '{"fail_every": 3}'` fails like
    the tests' faults.
    """
    return FakeModel(FakeConfig.from_options(config.options, "fake"))
