"""Where is the tracking memory bounded? Here: the plan of what the tracker keeps.

`StreamingVideoTracker` (tracker.py) asks this plan, after every frame and after every prompt,
which frames, image features and per-object outputs it may forget, and forgets them. The plan is
pure arithmetic on frame indices (no torch, tested alone in test/test_memory_plan.py over 10 000
frames); the tracker owns the tensors.

With L the latest frame:
- a prompt may name frames F = L - prompt_frames + 1 .. L, so their input frames are kept (a
  late prompt re-runs the image encoder on one), and the image features of L (plus the one past
  frame a late prompt re-encoded: a second late prompt on it is likely);
- a frame t attends to the spatial memory of tracked frames t - memory_frames .. t - 1 and to the
  object pointers of tracked frames t - pointer_frames .. t - 1. Any t >= F may still be decoded
  (a prompt on it, or the next frame), so tracked outputs older than F - memory_frames keep only
  their object pointer (one vector), and those older than F - pointer_frames go;
- per object, the newest `max_conditioning_frames` prompted (conditioning) frames are kept,
  however old: the oldest goes when a newer one exceeds the count.

References (regions shown on images that are not frames, tracker.py `add_reference`) have no
frame index, so nothing here reaches them: the tracker keeps the newest `max_references` per
object, whatever the frames do.

The library's own session keeps all of it for the whole video (+7.9 GB RSS after 300 frames at
1024 px); with this plan what is held stops growing once the windows are full (test_sam2.py
measures it against `bounds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryBounds:
    """The most the tracker holds at once (checked by tests; reported in `stats`).

    Attributes:
        frames: input frames kept for prompts naming a recent frame (`prompt_frames`).
        feature_frames: frames whose image features are cached (the latest + one re-encoded).
        conditioning_per_object: prompted frames kept per object.
        full_outputs_per_object: tracked frames with spatial memory kept per object.
        pointer_outputs_per_object: tracked frames with (at least) an object pointer per object.
    """

    frames: int
    feature_frames: int
    conditioning_per_object: int
    full_outputs_per_object: int
    pointer_outputs_per_object: int


@dataclass(frozen=True)
class Horizon:
    """The oldest frames the latest frame still needs (everything older is forgotten).

    Attributes:
        first_promptable: the oldest frame a prompt may name (its input frame is kept).
        first_spatial: the oldest tracked frame whose spatial memory is still attended to.
        first_pointer: the oldest tracked frame whose object pointer is still attended to.
    """

    first_promptable: int
    first_spatial: int
    first_pointer: int


@dataclass(frozen=True)
class MemoryPlan:
    """What a bounded tracker keeps: windows in frames, and the decisions they imply.

    Attributes:
        memory_frames: recent tracked frames whose spatial memory a frame attends to (>= 1).
        pointer_frames: recent tracked frames whose object pointer a frame attends to (>= 0;
            the model's max_object_pointers_in_encoder - 1, usually longer than memory_frames).
        prompt_frames: recent frames a prompt may name (>= 1).
        max_conditioning_frames: prompted frames kept per object (>= 1).
    """

    memory_frames: int
    pointer_frames: int
    prompt_frames: int
    max_conditioning_frames: int

    def __post_init__(self) -> None:
        if self.memory_frames < 1:
            raise ValueError(f"memory_frames must be >= 1; got {self.memory_frames}")
        if self.pointer_frames < 0:
            raise ValueError(f"pointer_frames must be >= 0; got {self.pointer_frames}")
        if self.prompt_frames < 1:
            raise ValueError(f"prompt_frames must be >= 1; got {self.prompt_frames}")
        if self.max_conditioning_frames < 1:
            raise ValueError("max_conditioning_frames must be >= 1")

    @property
    def bounds(self) -> MemoryBounds:
        """The most that following this plan holds at once, whatever the stream does."""
        return MemoryBounds(
            frames=self.prompt_frames,
            feature_frames=2,
            conditioning_per_object=self.max_conditioning_frames,
            full_outputs_per_object=self.prompt_frames + self.memory_frames,
            pointer_outputs_per_object=self.prompt_frames
            + max(self.pointer_frames, self.memory_frames),
        )

    def horizon(self, latest: int) -> Horizon:
        """The oldest frames reachable once `latest` is the latest frame (see the module doc)."""
        first_promptable = latest - self.prompt_frames + 1
        return Horizon(
            first_promptable=first_promptable,
            first_spatial=first_promptable - self.memory_frames,
            first_pointer=first_promptable - max(self.pointer_frames, self.memory_frames),
        )

    def stale_frames(self, latest: int, frames: Iterable[int]) -> list[int]:
        """Frames (input frames, point prompts, tracked marks) no prompt may name any more."""
        first = self.horizon(latest).first_promptable
        return [i for i in frames if i < first]

    def stale_features(self, latest: int, frames: Iterable[int]) -> list[int]:
        """Cached image features to drop: all but the latest frame's and a re-encoded one's
        still in the prompt window (`features_after_encoding` keeps at most one of those)."""
        first = self.horizon(latest).first_promptable
        return [i for i in frames if i != latest and i < first]

    @staticmethod
    def features_after_encoding(latest: int, encoded: int) -> set[int]:
        """Frames whose features stay cached once `encoded` was encoded: it and the latest.

        Encoding a new latest frame drops every other frame's features (a late prompt
        re-encodes its frame); re-encoding a past frame keeps the latest's and that one's.
        """
        return {latest, encoded}

    def stale_outputs(
        self, latest: int, outputs: Mapping[int, bool]
    ) -> tuple[list[int], list[int]]:
        """One object's tracked outputs -> (frames to forget, frames to keep pointer-only).

        `outputs` maps each tracked frame to whether its output still has spatial memory.
        """
        horizon = self.horizon(latest)
        forget = [i for i in outputs if i < horizon.first_pointer]
        pointer_only = [
            i
            for i, spatial in outputs.items()
            if spatial and horizon.first_pointer <= i < horizon.first_spatial
        ]
        return forget, pointer_only

    def surplus_conditioning(self, frames: Iterable[int]) -> list[int]:
        """One object's prompted frames beyond `max_conditioning_frames`: the oldest ones."""
        ordered = sorted(frames)
        return ordered[: max(0, len(ordered) - self.max_conditioning_frames)]
