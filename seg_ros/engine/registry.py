"""Backend name -> loader. Backends that need torch / transformers / OpenCV load lazily.

`load_model(config)` loads a backend's model once (weights, device, dtype); each camera's stream
comes from its `open_stream()`. `build_backend(config)` is one stream on its own model, which it
owns (closing the stream closes the model): single-stream code is unchanged.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import cast

from seg_ros.engine.backends.base import Backend, Model
from seg_ros.engine.config import BackendConfig

# name -> "module:function"; the function takes a BackendConfig and returns a Model.
_LOADERS: dict[str, str] = {
    "classic": "seg_ros.engine.backends.classic:load",
    "sam2": "seg_ros.engine.backends.sam2:load",
    "sam3": "seg_ros.engine.backends.sam3:load",
    "fake": "seg_ros.engine.backends.fake:load",
}


def available_backends() -> list[str]:
    return sorted(_LOADERS)


def load_model(config: BackendConfig) -> Model:
    """Load the model of backend `config.backend`. Raises ValueError for an unknown name,
    ModelLoadError for weights that do not load."""
    target = _LOADERS.get(config.backend)
    if target is None:
        raise ValueError(
            f"unknown backend '{config.backend}'; choose one of {', '.join(available_backends())}"
        )
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    loader = cast(Callable[[BackendConfig], Model], getattr(module, func_name))
    return loader(config)


def build_backend(config: BackendConfig) -> Backend:
    """One stream of the backend `config.backend` names, owning its own model.

    Raises ValueError for an unknown name.
    """
    model = load_model(config)
    try:
        stream = model.open_stream()
    except BaseException:
        model.close()
        raise
    stream.owns_model = True
    return stream
