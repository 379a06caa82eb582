"""The options the SAM-family backends (sam2, sam3) share: how their tracker keeps memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seg_ros.engine.config import BackendOptions


@dataclass(frozen=True)
class SamOptions(BackendOptions):
    """Options of a backend driving a `StreamingVideoTracker` (`BackendConfig.options`).

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
            on a prompted frame from a binarised mask (see tracker.py).
        lazy_encoding: while nothing is tracked, frames are only preprocessed; the image encoder
            runs when a prompt (or a text request) names the frame.
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

    def tracker_kwargs(self, device_type: str) -> dict[str, Any]:
        """`StreamingVideoTracker` arguments these options set, on a `device_type` device."""
        batch = self.batch_objects
        return {
            "prompt_frames": self.prompt_frames,
            "batch_objects": device_type == "cuda" if batch is None else batch,
            "corrections_as_conditioning": self.corrections_as_conditioning,
            "independent_objects": self.independent_objects,
        }
