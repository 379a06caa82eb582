"""A backend wrapper that fails on purpose: model-step faults for reliability tests and soaks.

`FaultyBackend(inner)` behaves exactly like `inner` until told to fail: `fail_on("step", {3, 7})`
makes the 3rd and 7th `step` calls raise, `fail_every("step", 5)` every 5th, `fail_next("step")`
the next one. The exception is made by a factory, so a test can throw what a real model throws:
`backend_error` (the engine's own BackendError), `cuda_oom` (torch.cuda.OutOfMemoryError when
torch is importable, a RuntimeError with CUDA's text otherwise) or any other callable.

A failing call raises BEFORE the inner backend runs, so the inner state is the one of a call that
never happened (what a CUDA OOM at the first allocation looks like). Counters say how many calls
each method got and how many of them were made to fail. Thread-safe: the session serialises calls
anyway, but a test may arm faults from another thread.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable

from seg_ros.engine.backends.base import Backend, MaskOutput, ReferenceOutput
from seg_ros.engine.errors import BackendError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.types import RgbImage

#: Methods a fault can be armed on.
METHODS = ("step", "add_prompt", "remove_object", "reset", "detect", "segment", "add_reference")

ErrorFactory = Callable[[str, int], Exception]


def backend_error(method: str, call: int) -> Exception:
    """The engine's own failure type, as a backend that wraps its model errors raises."""
    return BackendError(f"injected failure in {method} (call {call})")


def cuda_oom(method: str, call: int) -> Exception:
    """What torch raises when the GPU runs out of memory (a RuntimeError subclass)."""
    text = f"CUDA out of memory. Tried to allocate 2.00 GiB (injected in {method}, call {call})"
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed wherever the models run
        return RuntimeError(text)
    return torch.cuda.OutOfMemoryError(text)


def value_error(method: str, call: int) -> Exception:
    """A plain bug-like exception (not a SegRosError): the caller must survive it too."""
    return ValueError(f"injected bug in {method} (call {call})")


class FaultyBackend(Backend):
    """Delegates to `inner`; raises on the calls it was armed for (see the module docstring)."""

    def __init__(self, inner: Backend, error: ErrorFactory = backend_error) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]  # mirrors the wrapped backend
        self.capabilities = inner.capabilities
        self.error = error
        self.calls: Counter[str] = Counter()
        self.raised: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._on: dict[str, set[int]] = {m: set() for m in METHODS}
        self._every: dict[str, int] = dict.fromkeys(METHODS, 0)
        self._next: dict[str, int] = dict.fromkeys(METHODS, 0)

    # ------------------------------------------------------------------ arming
    def fail_on(self, method: str, calls: Iterable[int]) -> None:
        """Fail these call numbers of `method` (1-based, counted from the wrapper's creation)."""
        with self._lock:
            self._methods(method).update(int(c) for c in calls)

    def fail_every(self, method: str, n: int) -> None:
        """Fail every n-th call of `method` (0 = stop)."""
        self._methods(method)
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._every[method] = n

    def fail_next(self, method: str, count: int = 1) -> None:
        """Fail the next `count` calls of `method`."""
        self._methods(method)
        with self._lock:
            self._next[method] += count

    def disarm(self) -> None:
        with self._lock:
            for method in METHODS:
                self._on[method].clear()
                self._every[method] = 0
                self._next[method] = 0

    def _methods(self, method: str) -> set[int]:
        if method not in self._on:
            raise ValueError(f"unknown method '{method}'; faults go on {', '.join(METHODS)}")
        return self._on[method]

    def _enter(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1
            call = self.calls[method]
            every = self._every[method]
            fail = call in self._on[method] or bool(every and call % every == 0)
            if not fail and self._next[method] > 0:
                self._next[method] -= 1
                fail = True
            if fail:
                self.raised[method] += 1
        if fail:
            raise self.error(method, call)

    # ------------------------------------------------------------------ Backend
    @property
    def memory_frames(self) -> int:
        return self.inner.memory_frames

    def step(self, frame_index: int, image: RgbImage) -> dict[int, MaskOutput]:
        self._enter("step")
        return self.inner.step(frame_index, image)

    def add_prompt(
        self, frame_index: int, obj: int, prompt: Prompt, multimask: bool = False
    ) -> MaskOutput:
        self._enter("add_prompt")
        return self.inner.add_prompt(frame_index, obj, prompt, multimask)

    def remove_object(self, obj: int) -> None:
        self._enter("remove_object")
        self.inner.remove_object(obj)

    def reset(self) -> None:
        self._enter("reset")
        self.inner.reset()

    def detect(
        self,
        frame_index: int,
        text: str,
        score_threshold: float,
        max_objects: int,
        geometry: Prompt | None = None,
    ) -> list[MaskOutput]:
        self._enter("detect")
        return self.inner.detect(frame_index, text, score_threshold, max_objects, geometry)

    def segment(
        self, image: RgbImage, prompt: Prompt, multimask: bool = False, score_threshold: float = 0.0
    ) -> list[MaskOutput]:
        self._enter("segment")
        return self.inner.segment(image, prompt, multimask, score_threshold)

    def add_reference(
        self, obj: int, image: RgbImage, prompt: Prompt, multimask: bool = False
    ) -> ReferenceOutput:
        self._enter("add_reference")
        return self.inner.add_reference(obj, image, prompt, multimask)

    def remove_reference(self, obj: int, reference: int) -> None:
        self.inner.remove_reference(obj, reference)

    def references(self, obj: int) -> list[int]:
        return self.inner.references(obj)

    def tracked_apart_from_references(self, obj: int) -> bool:
        return self.inner.tracked_apart_from_references(obj)

    def close(self) -> None:
        if self.inner.closed_reason is None:
            self.inner.closed_reason = self.closed_reason  # e.g. its model was closed
        self.inner.close()
        super().close()  # leaves the model (and closes it when this stream owns it)

    def stats(self) -> dict[str, float]:
        return {**self.inner.stats(), "injected_faults": float(sum(self.raised.values()))}
