"""Backend name -> builder. Backends that need torch / transformers / OpenCV load lazily."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from seg_ros.engine.backends.base import Backend
from seg_ros.engine.config import BackendConfig

# name -> "module:function"; the function takes a BackendConfig and returns a Backend.
_BUILDERS: dict[str, str] = {
    "classic": "seg_ros.engine.backends.classic:build",
    "sam2": "seg_ros.engine.backends.sam2:build",
    "sam3": "seg_ros.engine.backends.sam3:build",
    "fake": "seg_ros.engine.backends.fake:build",
}


def available_backends() -> list[str]:
    return sorted(_BUILDERS)


def build_backend(config: BackendConfig) -> Backend:
    """Build the backend `config.backend` names. Raises ValueError for an unknown name."""
    target = _BUILDERS.get(config.backend)
    if target is None:
        raise ValueError(
            f"unknown backend '{config.backend}'; choose one of {', '.join(available_backends())}"
        )
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    builder = cast(Callable[[BackendConfig], Backend], getattr(module, func_name))
    return builder(config)


class _OwnedModel:  # TEMPORARY shim until the Model/stream split lands (issue 15, engine half)
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.name = config.backend

    def open_stream(self) -> Backend:
        return build_backend(self.config)

    def close(self) -> None:
        pass


def load_model(config: BackendConfig) -> _OwnedModel:
    build_backend(config).close()  # fail early as a real load would
    return _OwnedModel(config)
