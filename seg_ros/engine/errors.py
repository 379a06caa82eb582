"""Engine exceptions. Every one carries a message meant for the person who sent the request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class SegRosError(Exception):
    """Base class: a request or a frame that the engine refused, with the reason."""


class PromptError(SegRosError, ValueError):
    """A prompt is malformed or does not fit the frame (shape, range, finiteness, bounds)."""


class UnknownObjectError(SegRosError, KeyError):
    """An object id that the session does not track."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "unknown object"


class UnsupportedPromptError(SegRosError):
    """The backend cannot take this kind of prompt (e.g. text on a backend without text)."""


class CapacityError(SegRosError):
    """More objects than the session's max_objects."""


class FrameError(SegRosError, ValueError):
    """A frame that cannot be processed (shape, dtype, size change without reset)."""


class NoFrameError(SegRosError):
    """A prompt or one-shot request that needs a frame before the first frame arrived."""


class ModelLoadError(SegRosError):
    """Weights or config missing, corrupt, or of the wrong architecture."""


class BackendError(SegRosError):
    """The model failed on a step (e.g. out of GPU memory); the frame is dropped."""


class ClosedError(BackendError):
    """A stream, or the loaded model it runs on, was closed: it takes no more work."""


class BatchStepError(BackendError):
    """Some streams of one `Model.step_batch` refused or failed their frame; the others took
    theirs (each stream's step is all or nothing).

    Attributes:
        outputs: per item of the batch, that stream's step answer, or None where it failed.
        errors: per item, its SegRosError, or None where it succeeded.
    """

    def __init__(self, outputs: list[Any], errors: list[SegRosError | None]) -> None:
        failed = [(n, e) for n, e in enumerate(errors) if e is not None]
        first = failed[0]
        super().__init__(
            f"{len(failed)} of {len(errors)} streams failed their frame; item {first[0]}: "
            f"{first[1]}"
        )
        self.outputs = outputs
        self.errors = errors


#: What model code raises when it fails on an input: torch raises RuntimeError (its CUDA
#: out-of-memory error is one) or ValueError (shapes); the engine's own errors pass unchanged.
MODEL_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError)


@contextmanager
def backend_errors(what: str, errors: tuple[type[Exception], ...] = MODEL_ERRORS) -> Iterator[None]:
    """Re-raise a model failure inside the block as BackendError(f"{what}: {exc}").

    A SegRosError (a refused prompt, ...) passes unchanged. `errors` names what a model raises
    (the classic backend passes OpenCV's `cv2.error`).
    """
    try:
        yield
    except SegRosError:
        raise
    except errors as exc:
        raise BackendError(f"{what}: {exc}") from exc
