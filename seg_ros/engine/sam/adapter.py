"""The ONE place that touches transformers' private SAM 2-family video API: `LibraryAdapter`.

`StreamingVideoTracker` (tracker.py) re-uses the library's own building blocks so that its
results are the library's to the bit; several of them are private (underscore methods, the
inference session's dictionaries, a misspelt keyword). Every such use goes through
`LibraryAdapter` (a model and its inference session), and `check_library` verifies, before a
model is used, that each one still exists with the parameters it is called with. A transformers
release that renames or re-shapes one of them then fails at load time (and in
test/test_sam2.py) with a message naming the call, instead of silently changing results.

Tested with transformers `TESTED_TRANSFORMERS` (pinned in setup.py; requirements-model.txt pins a
version inside it). The SAM 2.1 / EdgeTAM equality tests also pass on 5.24.0 and 5.25.0, but the
whole suite was only run on 5.23 (SAM 3 does not load on 5.25.0 without the `kernels` package).

torch and transformers are imported by the functions that use them: importing this module is free.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from seg_ros.engine.errors import ModelLoadError

#: The transformers versions this module was tested with (setup.py pins the same range).
TESTED_TRANSFORMERS = ">=5.23,<5.24"

#: Keys of the session's per-object output dictionaries (the library's helpers read them).
CONDITIONING = "cond_frame_outputs"
TRACKED = "non_cond_frame_outputs"
#: Keys of one stored output (the library's memory helpers read exactly these).
OUTPUT_KEYS = ("object_pointer", "object_score_logits", "maskmem_features", "maskmem_pos_enc")

#: Model methods called: the parameters passed by position (the leading ones, in this order) and
#: a trailing "*"-prefixed name for each passed by keyword.
MODEL_CALLS: dict[str, tuple[str, ...]] = {
    "get_image_features": ("pixel_values",),
    "get_image_wide_positional_embeddings": (),
    "_select_closest_cond_frames": ("frame_idx", "cond_frame_outputs", "*max_cond_frame_num"),
    "_build_memory_attention_inputs": ("temporal_positions_and_previous_outputs", "device"),
    "_get_object_pointers": (
        "inference_session",
        "obj_idx",
        "frame_idx",
        "num_total_frames",
        "device",
        "track_in_reverse_time",
        "streaming",
    ),
    "_process_object_pointers": (
        "temporal_offsets",
        "pointer_tokens",
        "max_object_pointers_to_use",
        "batch_size",
        "num_channels",
        "device",
    ),
    "_use_multimask": ("is_init_cond_frame", "point_inputs"),
    "_use_mask_as_output": ("backbone_features", "high_res_features", "mask_inputs"),
    "_encode_new_memory": (
        "*current_vision_feats",
        "*pred_masks_high_res",
        "*object_score_logits",
        "*is_mask_from_pts",
    ),
}
#: Sub-module forwards, all called by keyword.
MODULE_CALLS: dict[str, tuple[str, ...]] = {
    "memory_attention": (
        "*current_vision_features",
        "*current_vision_position_embeddings",
        "*memory",
        "*memory_posision_embeddings",  # sic: the library's keyword
        "*num_object_pointer_tokens",
    ),
    "prompt_encoder": ("*input_points", "*input_labels", "*input_boxes", "*input_masks"),
    "mask_decoder": (
        "*image_embeddings",
        "*image_positional_embeddings",
        "*sparse_prompt_embeddings",
        "*dense_prompt_embeddings",
        "*multimask_output",
        "*high_resolution_features",
    ),
}
#: Model attributes read.
MODEL_ATTRIBUTES = (
    "config",
    "hidden_dim",
    "backbone_feature_sizes",
    "no_memory_embedding",
    "no_object_pointer",
    "object_pointer_proj",
    "mask_decoder",
    "prompt_encoder",
    "memory_attention",
)
#: Config fields read.
CONFIG_FIELDS = (
    "image_size",
    "num_maskmem",
    "max_object_pointers_in_encoder",
    "max_cond_frame_num",
)
#: Inference-session constructor parameters and members used.
SESSION_PARAMETERS = (
    "*inference_device",
    "*inference_state_device",
    "*video_storage_device",
    "*dtype",
)
SESSION_CALLS: dict[str, tuple[str, ...]] = {
    "obj_id_to_idx": ("obj_id",),
    "get_obj_num": (),
    "store_output": ("obj_idx", "frame_idx", "*output_value", "*is_conditioning_frame"),
}
SESSION_ATTRIBUTES = (
    "obj_ids",
    "output_dict_per_obj",
    "point_inputs_per_obj",
    "mask_inputs_per_obj",
    "frames_tracked_per_obj",
)


class UnsupportedLibraryError(ModelLoadError):
    """The installed transformers lacks, or changed, a call the tracker relies on."""


def session_class_for(model: Any) -> Any:
    """The inference-session class shipped with `model`'s (FooModel -> FooInferenceSession)."""
    cls = type(model)
    name = cls.__name__.removesuffix("Model") + "InferenceSession"
    module = importlib.import_module(cls.__module__)
    session_cls = getattr(module, name, None)
    if session_cls is None:
        raise UnsupportedLibraryError(
            f"{cls.__name__} has no {name} in {cls.__module__}; {_tested()}"
        )
    return session_cls


def _tested() -> str:
    try:
        import transformers

        version = transformers.__version__
    except ImportError:  # pragma: no cover - the backends need it installed
        version = "not installed"
    return f"seg_ros is tested with transformers{TESTED_TRANSFORMERS} (installed: {version})"


def _check_parameters(where: str, fn: Callable[..., Any], expected: tuple[str, ...]) -> None:
    try:
        parameters = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError) as exc:
        raise UnsupportedLibraryError(f"{where}: no signature ({exc}); {_tested()}") from exc
    parameters = [p for p in parameters if p != "self"]
    positional = [name for name in expected if not name.startswith("*")]
    keywords = {name[1:] for name in expected if name.startswith("*")}
    if parameters[: len(positional)] != positional or not keywords <= set(parameters):
        called = ", ".join(positional + [f"{k}=" for k in sorted(keywords)])
        raise UnsupportedLibraryError(
            f"{where} takes ({', '.join(parameters)}); seg_ros calls it with "
            f"({called}); {_tested()}"
        )


def check_library(model: Any, session_cls: Any = None) -> Any:
    """Verify every private call and attribute the tracker uses; returns the session class.

    Raises UnsupportedLibraryError naming the first missing or changed one.
    """
    name = type(model).__name__
    for attribute in MODEL_ATTRIBUTES:
        if not hasattr(model, attribute):
            raise UnsupportedLibraryError(f"{name}.{attribute} is missing; {_tested()}")
    for field in CONFIG_FIELDS:
        if not hasattr(model.config, field):
            raise UnsupportedLibraryError(f"{name}.config.{field} is missing; {_tested()}")
    for method, expected in MODEL_CALLS.items():
        fn = getattr(model, method, None)
        if not callable(fn):
            raise UnsupportedLibraryError(f"{name}.{method} is missing; {_tested()}")
        _check_parameters(f"{name}.{method}", fn, expected)
    for module, expected in MODULE_CALLS.items():
        forward = getattr(getattr(model, module), "forward", None)
        if forward is None:
            raise UnsupportedLibraryError(f"{name}.{module}.forward is missing; {_tested()}")
        _check_parameters(f"{name}.{module}.forward", forward, expected)
    if session_cls is None:
        session_cls = session_class_for(model)
    session_name = session_cls.__name__
    _check_parameters(
        f"{session_name}.__init__",
        session_cls.__init__,
        SESSION_PARAMETERS,
    )
    for method, expected in SESSION_CALLS.items():
        fn = getattr(session_cls, method, None)
        if not callable(fn):
            raise UnsupportedLibraryError(f"{session_name}.{method} is missing; {_tested()}")
        _check_parameters(f"{session_name}.{method}", fn, expected)
    import torch

    session = session_cls(inference_device="cpu", dtype=torch.float32)
    for attribute in SESSION_ATTRIBUTES:
        if not hasattr(session, attribute):
            raise UnsupportedLibraryError(f"{session_name}.{attribute} is missing; {_tested()}")
    outputs = session.output_dict_per_obj[session.obj_id_to_idx(0)]
    if set(outputs) != {CONDITIONING, TRACKED}:
        raise UnsupportedLibraryError(
            f"{session_name}.output_dict_per_obj holds {sorted(outputs)}, not "
            f"['{CONDITIONING}', '{TRACKED}']; {_tested()}"
        )
    return session_cls


class LibraryAdapter:
    """A SAM 2-family video model and one inference session of it, as the tracker uses them.

    Construction runs `check_library`. The session holds the per-object outputs in the library's
    own dictionaries, so that the library's memory helpers read them as usual; the tracker
    decides what goes in and what is evicted (memory.py).

    Args:
        model: a loaded video model in eval mode, on its device and dtype.
        session_cls: the model's inference-session class; None = found from the model's class.
    """

    def __init__(self, model: Any, session_cls: Any = None) -> None:
        self.model = model
        self.session_cls = check_library(model, session_cls)
        first = next(model.mask_decoder.parameters())
        self.device = first.device
        self.dtype = first.dtype
        self.session = self.new_session()

    # ------------------------------------------------------------------ model facts
    @property
    def has_perceiver(self) -> bool:
        """EdgeTAM: the memory encoder ends in a perceiver resampler (batch-first, one object)."""
        return hasattr(self.model, "spatial_perceiver")

    @property
    def takes_spatial_count(self) -> bool:
        """EdgeTAM's memory attention needs the count of spatial memory frames."""
        return (
            "num_spatial_memory_tokens"
            in inspect.signature(self.model.memory_attention.forward).parameters
        )

    @property
    def batches_memory_flag(self) -> bool:
        """Whether one library session encodes every object of a frame with ONE is_mask_from_pts.

        SAM 2.1's and SAM 3's forward collect the objects of a frame into `_batch_encode_memories`
        with `any(...)` of their flags; EdgeTAM's encodes each object with its own flag.
        """
        return hasattr(self.model, "_batch_encode_memories")

    # ------------------------------------------------------------------ session
    def new_session(self) -> Any:
        """An empty library session on the model's device (inputs, state and frames there)."""
        import torch

        dtype = self.dtype
        # dtype must be a torch.dtype: the session's string default crashes (transformers 5.23).
        return self.session_cls(
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32,
        )

    def reset(self) -> None:
        """Forget every object and output."""
        self.session = self.new_session()

    def object_index(self, obj_id: int) -> int:
        """The session's index of `obj_id` (created when new)."""
        return int(self.session.obj_id_to_idx(obj_id))

    @property
    def object_ids(self) -> list[int]:
        return list(self.session.obj_ids)

    @property
    def object_count(self) -> int:
        return int(self.session.get_obj_num())

    def conditioning_outputs(self, idx: int) -> dict[int, Any]:
        """Prompted-frame outputs of object index `idx`, by frame (the library's own dict)."""
        result: dict[int, Any] = self.session.output_dict_per_obj[idx][CONDITIONING]
        return result

    def tracked_outputs(self, idx: int) -> dict[int, Any]:
        """Tracked-frame outputs of object index `idx`, by frame (the library's own dict)."""
        result: dict[int, Any] = self.session.output_dict_per_obj[idx][TRACKED]
        return result

    def all_outputs(self) -> Any:
        """Every object's outputs (for counting the tensors held)."""
        return self.session.output_dict_per_obj

    def store_output(
        self, idx: int, frame_index: int, value: dict[str, Any], conditioning: bool
    ) -> None:
        """Store one frame's output where the library's memory helpers look for it."""
        self.session.store_output(
            idx, frame_index, output_value=value, is_conditioning_frame=conditioning
        )

    @staticmethod
    def output(pointer: Any, score_logits: Any, memory: Any, memory_pos: Any) -> dict[str, Any]:
        """One frame's output of one object, under the keys the library's helpers read."""
        return dict(zip(OUTPUT_KEYS, (pointer, score_logits, memory, memory_pos), strict=True))

    def remove_object(self, obj_id: int) -> None:
        """A fresh session given every object but `obj_id`, in order.

        The library's session cannot forget an object; its indices must stay dense.
        """
        session, fresh = self.session, self.new_session()
        for other in session.obj_ids:
            if other == obj_id:
                continue
            i, j = session.obj_id_to_idx(other), fresh.obj_id_to_idx(other)
            fresh.output_dict_per_obj[j] = session.output_dict_per_obj[i]
            fresh.point_inputs_per_obj[j] = session.point_inputs_per_obj[i]
            fresh.mask_inputs_per_obj[j] = session.mask_inputs_per_obj[i]
            fresh.frames_tracked_per_obj[j] = session.frames_tracked_per_obj[i]
        self.session = fresh

    # ------------------------------------------------------------------ model calls
    def select_conditioning(
        self, frame_index: int, conditioning: dict[int, Any]
    ) -> tuple[dict[int, Any], dict[int, Any]]:
        """(selected, unselected) prompted frames for `frame_index` (config.max_cond_frame_num)."""
        model = self.model
        selected, unselected = model._select_closest_cond_frames(
            frame_index, conditioning, max_cond_frame_num=model.config.max_cond_frame_num
        )
        return selected, unselected

    def memory_tensors(self, gathered: list[tuple[int, Any]]) -> tuple[list[Any], list[Any]]:
        """(offset, output) pairs -> spatial memories and their (temporal) position encodings."""
        memories, positions = self.model._build_memory_attention_inputs(gathered, self.device)
        return list(memories), list(positions)

    def object_pointers(self, idx: int, frame_index: int) -> tuple[list[int], list[Any], int]:
        """(temporal offsets, pointer tokens, max pointers) as the library's streaming forward."""
        offsets, tokens, max_pointers = self.model._get_object_pointers(
            self.session, idx, frame_index, None, self.device, False, True
        )
        return offsets, tokens, int(max_pointers)

    def pointer_tensors(
        self, offsets: list[int], tokens: list[Any], max_pointers: int
    ) -> tuple[Any, Any]:
        """Pointer tokens -> (pointer memory, its position encoding), batch of one."""
        model = self.model
        return model._process_object_pointers(  # type: ignore[no-any-return]
            offsets, tokens, max_pointers, 1, int(model.hidden_dim), self.device
        )

    def use_multimask(self, is_init: bool, point_inputs: dict[str, Any] | None) -> bool:
        return bool(self.model._use_multimask(is_init, point_inputs))

    def mask_as_output(self, pix_feat: Any, high_res: list[Any], mask: Any) -> Any:
        """A mask prompt as the object's output (the library's video semantics)."""
        return self.model._use_mask_as_output(pix_feat, high_res, mask)

    def encode_memory(
        self, vision: Any, high_res_masks: Any, object_score_logits: Any, from_prompt: bool
    ) -> tuple[Any, Any]:
        """Memory encoder for a batch; `from_prompt` binarises the masks (the library's flag)."""
        features, positions = self.model._encode_new_memory(
            current_vision_feats=vision,
            pred_masks_high_res=high_res_masks,
            object_score_logits=object_score_logits,
            is_mask_from_pts=from_prompt,
        )
        return features, positions

    def memory_attention(
        self,
        vision: Any,
        vision_pos: Any,
        memory: Any,
        memory_pos: Any,
        n_pointers: int,
        n_spatial: int | None,
    ) -> Any:
        """The memory attention; `n_spatial` only for models that take it (EdgeTAM's perceiver)."""
        kwargs: dict[str, Any] = {}
        if n_spatial is not None:
            kwargs["num_spatial_memory_tokens"] = n_spatial
        return self.model.memory_attention(
            current_vision_features=vision,
            current_vision_position_embeddings=vision_pos,
            memory=memory,
            memory_posision_embeddings=memory_pos,  # sic: the library's keyword
            num_object_pointer_tokens=n_pointers,
            **kwargs,
        )


def sam3_vision_output(last_hidden_state: Any, fpn: Any, positions: Any) -> Any:
    """SAM 3's vision-encoder output record (a class of transformers' internal sam3 module).

    The sam3 backend builds one for its shared backbone: the detector's neck reads it, and the
    tracker's stand-in vision encoder returns it to the library's `get_image_features`.
    """
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    return Sam3VisionEncoderOutput(
        last_hidden_state=last_hidden_state, fpn_hidden_states=fpn, fpn_position_encoding=positions
    )
