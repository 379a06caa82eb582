"""The backend configuration: one frozen value from node parameters, CLI flags or tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self

DEVICES = ("auto", "cuda", "cpu")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class BackendConfig:
    """How to build a backend.

    Attributes:
        backend: registry name ("classic", "sam2", "sam3", "fake").
        model: local folder (config.json + *.safetensors) or hub id; "" = the backend's default.
        device: "auto" (cuda when available), "cuda", "cuda:N" or "cpu".
        dtype: compute dtype of the model: float32, float16 or bfloat16 (GPU).
        input_size: model input side in pixels; 0 = the model's own (1024 for SAM 2.1).
        memory_frames: recent frames the tracker attends to besides the prompted ones
            (SAM 2's num_maskmem - 1; 0 = the model's own). Bounds memory and cost.
        max_conditioning_frames: prompted frames kept per object (oldest dropped beyond it).
        compile: torch.compile the heavy modules (GPU; the first frames are slow).
        text_detector: sam2 only: local folder of an open-vocabulary detector (Grounding DINO,
            MM-Grounding-DINO, OWLv2) that gives the backend text prompts; "" = no text.
        options: backend-specific extras (e.g. {"delay_s": 0.1} for the fake).
    """

    backend: str = "classic"
    model: str = ""
    device: str = "auto"
    dtype: str = "float32"
    input_size: int = 0
    memory_frames: int = 0
    max_conditioning_frames: int = 4
    compile: bool = False
    text_detector: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.backend:
            raise ValueError("backend must be named")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICES} or cuda:N; got '{self.device}'")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}; got '{self.dtype}'")
        if self.input_size < 0 or self.input_size % 16:
            raise ValueError(
                f"input_size must be 0 or a positive multiple of 16; got {self.input_size}"
            )
        if self.memory_frames < 0:
            raise ValueError("memory_frames must be >= 0")
        if self.max_conditioning_frames < 1:
            raise ValueError("max_conditioning_frames must be >= 1")
        if self.text_detector and self.backend != "sam2":
            # sam3 has its own detector; the others cannot use one. Said, not ignored.
            raise ValueError(
                f"text_detector is for backend sam2; backend '{self.backend}' does not use it"
            )


@dataclass(frozen=True)
class BackendOptions:
    """Base of every backend's options (`BackendConfig.options`): a frozen dataclass whose
    fields are the options, validated in `__post_init__`."""

    @classmethod
    def from_options(cls, raw: Mapping[str, Any], backend: str) -> Self:
        """The options `raw` gives (the rest at their defaults).

        Raises ValueError naming the unknown keys and the known ones, before anything loads
        (a misspelt option would otherwise be silently ignored).
        """
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(
                f"unknown {backend} backend options {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**raw)
