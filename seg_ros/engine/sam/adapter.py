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
    check_decoder(model.mask_decoder)
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

    def decode_many_prompts(
        self,
        image: Any,
        image_pe: Any,
        sparse: Any,
        dense: Any,
        high_res: list[Any],
        min_iou: float | None = None,
        fill: float = 0.0,
    ) -> tuple[Any, Any, Any, Any]:
        """The mask decoder for N prompts on one image, multimask (`decode_many_prompts`)."""
        return decode_many_prompts(
            self.model.mask_decoder, image, image_pe, sparse, dense, high_res, min_iou, fill
        )

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


# ---------------------------------------------------------------------- one image, many prompts
#: Mask-decoder sub-modules `decode_many_prompts` reads (SAM 2.1, EdgeTAM and SAM 3's tracker
#: share this decoder, class for class, in transformers 5.23).
DECODER_ATTRIBUTES = (
    "num_mask_tokens",
    "obj_score_token",
    "iou_token",
    "mask_tokens",
    "transformer",
    "upscale_conv1",
    "upscale_conv2",
    "upscale_layer_norm",
    "output_hypernetworks_mlps",
    "iou_prediction_head",
    "pred_obj_score_head",
)
TRANSFORMER_ATTRIBUTES = ("layers", "final_attn_token_to_image", "layer_norm_final_attn")
LAYER_ATTRIBUTES = (
    "self_attn",
    "layer_norm1",
    "cross_attn_token_to_image",
    "layer_norm2",
    "mlp",
    "layer_norm3",
    "layer_norm4",
    "cross_attn_image_to_token",
    "skip_first_layer_pe",
)
ATTENTION_ATTRIBUTES = ("q_proj", "k_proj", "v_proj", "o_proj", "num_attention_heads", "scaling")


#: Floats of the largest upscaling intermediate `decode_many_prompts` makes at once (16 MB).
UPSCALE_FLOATS = 4 * 2**20


def check_decoder(decoder: Any) -> None:
    """Verify the mask decoder's layout `decode_many_prompts` re-implements; raises
    UnsupportedLibraryError naming the first missing piece."""
    name = type(decoder).__name__
    missing = [a for a in DECODER_ATTRIBUTES if not hasattr(decoder, a)]
    transformer: Any = getattr(decoder, "transformer", None)
    missing += [f"transformer.{a}" for a in TRANSFORMER_ATTRIBUTES if not hasattr(transformer, a)]
    if not missing:
        blocks = list(transformer.layers)
        attentions = [
            ("transformer.final_attn_token_to_image", transformer.final_attn_token_to_image)
        ]
        for i, block in enumerate(blocks):
            missing += [
                f"transformer.layers.{i}.{a}" for a in LAYER_ATTRIBUTES if not hasattr(block, a)
            ]
            for a in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
                attentions.append((f"transformer.layers.{i}.{a}", getattr(block, a, None)))
        for where, attention in attentions:
            missing += [f"{where}.{a}" for a in ATTENTION_ATTRIBUTES if not hasattr(attention, a)]
    if missing:
        raise UnsupportedLibraryError(f"{name}.{missing[0]} is missing; {_tested()}")


def _heads(x: Any, heads: int) -> Any:
    """(B, L, h*d) -> (B, h, L, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _attention(attention: Any, query: Any, key: Any, value: Any) -> Any:
    """The library's two-way-transformer attention (`Sam2VideoAttention`), batch-aware.

    query (Bq, Lq, C), key / value (Bk, Lk, C); a batch of 1 on one side is the same tensor for
    every prompt of the other: its projections run once and are broadcast, never copied. Where
    both sides are per prompt, the projections of the long (image) side are folded into the
    short (token) side (`_fold_image_queries`, `_fold_image_keys`). Returns (max(Bq, Bk), Lq, C).
    """
    import torch
    import torch.nn.functional as F

    heads = int(attention.num_attention_heads)
    bq, lq = query.shape[:2]
    bk, lk = key.shape[:2]
    if bq == bk and heads * min(lq, lk) < attention.q_proj.out_features:
        if lq > lk:
            return _fold_image_queries(attention, query, key, value, heads)
        return _fold_image_keys(attention, query, key, value, heads)
    q = _heads(attention.q_proj(query), heads)  # (Bq, h, Lq, d)
    k = _heads(attention.k_proj(key), heads)  # (Bk, h, Lk, d)
    v = _heads(attention.v_proj(value), heads)
    if bk == 1 and bq > 1:
        # Shared keys (the image): every prompt's queries in one attention over them.
        q = q.transpose(0, 1).reshape(1, heads, bq * lq, -1)
        out = F.scaled_dot_product_attention(q, k, v, scale=attention.scaling)
        out = out.reshape(heads, bq, lq, -1).permute(1, 2, 0, 3)  # (Bq, Lq, h, d)
        return attention.o_proj(out.flatten(2))
    if bq == 1 and bk > 1:
        # Shared queries (the image) over each prompt's few tokens: one product per head for
        # every prompt at once, softmax over each prompt's tokens, the output projection
        # folded into the values (`_project_values`).
        scores = torch.matmul(q[0], k.permute(1, 3, 0, 2).flatten(2)) * attention.scaling
        weights = scores.unflatten(-1, (bk, lk)).softmax(dim=-1)  # (h, Lq, Bk, Lk)
        weights = weights.permute(2, 1, 0, 3).flatten(2)  # (Bk, Lq, h*Lk)
        return torch.baddbmm(attention.o_proj.bias, weights, _project_values(attention, v))
    out = F.scaled_dot_product_attention(q, k, v, scale=attention.scaling)
    return attention.o_proj(out.transpose(1, 2).flatten(2))


def _project_values(attention: Any, v: Any) -> Any:
    """(B, h, T, d) values -> (B, h*T, C): each through its head's slice of the output
    projection, so that `weights @ this + bias` is the attention's output (h*T < C rows)."""
    import torch

    weight = attention.o_proj.weight.unflatten(1, (v.shape[1], -1))  # (C, h, d)
    return torch.einsum("nhtd,chd->nhtc", v, weight).flatten(1, 2)


def _fold_image_queries(attention: Any, image: Any, tokens: Any, values: Any, heads: int) -> Any:
    """Attention of per-prompt image queries (B, HW, C) over per-prompt tokens (B, T, C).

    q_h . k = x . (W_q,h^T k) + b_q,h . k: the query projection is folded into the few keys, and
    the output projection into the few values, so the image side takes two (HW x C) x (C x hT)
    products instead of the (HW x C) x (C x C') query and output projections (hT < C').
    """
    import torch

    k = _heads(attention.k_proj(tokens), heads) * attention.scaling  # (B, h, T, d)
    v = _heads(attention.v_proj(values), heads)
    weight = attention.q_proj.weight.unflatten(0, (heads, -1))  # (h, d, C)
    bias = attention.q_proj.bias.unflatten(0, (heads, -1))  # (h, d)
    folded = torch.einsum("nhtd,hdc->nhtc", k, weight).flatten(1, 2)  # (B, hT, C)
    offset = torch.einsum("nhtd,hd->nht", k, bias).flatten(1)[:, None]  # (B, 1, hT)
    scores = torch.baddbmm(offset, image, folded.transpose(1, 2))  # (B, HW, hT)
    weights = scores.reshape(*scores.shape[:2], heads, -1).softmax(dim=-1).flatten(2)
    return torch.baddbmm(attention.o_proj.bias, weights, _project_values(attention, v))


def _fold_image_keys(attention: Any, tokens: Any, image: Any, values: Any, heads: int) -> Any:
    """Attention of per-prompt tokens (B, T, C) over per-prompt image keys / values (B, HW, C).

    The key projection is folded into the few queries (q . (W_k x + b_k) = (W_k^T q) . x +
    q . b_k) and the value projection moved after the weighted sum (the weights of a query sum
    to 1: sum_p a_p (W_v x_p + b_v) = W_v (sum_p a_p x_p) + b_v), so the image side takes two
    (hT x C) x (C x HW) products instead of the (HW x C) x (C x C') key and value projections.
    """
    import torch

    q = _heads(attention.q_proj(tokens), heads) * attention.scaling  # (B, h, T, d)
    weight = attention.k_proj.weight.unflatten(0, (heads, -1))  # (h, d, C)
    bias = attention.k_proj.bias.unflatten(0, (heads, -1))
    folded = torch.einsum("nhtd,hdc->nhtc", q, weight).flatten(1, 2)  # (B, hT, C)
    offset = torch.einsum("nhtd,hd->nht", q, bias).flatten(1)[:, :, None]  # (B, hT, 1)
    weights = torch.baddbmm(offset, folded, image.transpose(1, 2)).softmax(dim=-1)  # (B, hT, HW)
    mixed = torch.bmm(weights, values)
    mixed = mixed.reshape(mixed.shape[0], heads, -1, mixed.shape[-1])  # (B, h, T, C)
    value_weight = attention.v_proj.weight.unflatten(0, (heads, -1))  # (h, d, C)
    value_bias = attention.v_proj.bias.unflatten(0, (heads, -1))[:, None]  # (h, 1, d)
    out = torch.einsum("nhtc,hdc->nhtd", mixed, value_weight) + value_bias  # (B, h, T, d)
    return attention.o_proj(out.transpose(1, 2).flatten(2))


def _blocks(features: Any) -> Any:
    """(1, C, 2H, 2W) -> (H, W, 2, 2, C): the 2x2 blocks of a stride-2 transposed conv's output."""
    _, c, h2, w2 = features.shape
    return features[0].reshape(c, h2 // 2, 2, w2 // 2, 2).permute(1, 3, 2, 4, 0)


def _conv_transpose_2x2(x: Any, conv: Any, skip: Any) -> Any:
    """A kernel-2 stride-2 ConvTranspose2d on channels-last rows, plus `skip`: (..., Cin) ->
    (..., 2, 2, Cout) + skip, where skip (broadcast over the leading prompt dimension) already
    holds the conv's bias (`_with_bias`).

    Each input pixel gives one 2x2 output block: a matrix product (the same sums as the conv).
    """
    import torch

    weight = conv.weight.permute(0, 2, 3, 1).flatten(1)  # (Cin, 2*2*Cout): (a, b, out)
    out = torch.mm(x.flatten(0, -2), weight)
    return out.reshape(*x.shape[:-1], 2, 2, conv.weight.shape[1]).add_(skip)


def _with_bias(blocks: Any, conv: Any) -> Any:
    """Skip features in 2x2-block layout (..., 2, 2, Cout) plus the conv's bias, contiguous."""
    return (blocks + conv.bias).contiguous()


def decode_many_prompts(
    decoder: Any,
    image: Any,
    image_pe: Any,
    sparse: Any,
    dense: Any,
    high_res: list[Any],
    min_iou: float | None = None,
    fill: float = 0.0,
) -> tuple[Any, Any, Any, Any]:
    """The library's mask decoder for N prompts on ONE image, multimask answers only.

    What `decoder(image_embeddings=image.expand(N, ...), ..., multimask_output=True)` computes,
    without its per-prompt copies of what does not depend on the prompt: the image side of the
    first two-way block (image + dense embedding, + position encoding, the keys / values of the
    token -> image attention and the queries of the image -> token one) runs once and is
    broadcast; the high-resolution features are added by broadcasting; the stride-2 upscaling
    convolutions run as matrix products in a 2x2-block layout, so the upscaled embedding is never
    transposed; the single-mask token's hypernetwork, never read, is skipped.
    Same operations otherwise (test/test_everything.py compares with the library's decoder).

    Args:
        decoder: the model's mask decoder (`check_decoder` layout).
        image: (1, C, H, W) top-level image embedding.
        image_pe: (1, C, H, W) its position encoding.
        sparse: (N, S, C) each prompt's sparse embeddings (the prompt encoder's, squeezed).
        dense: (1, C, H, W) the (shared) dense prompt embedding.
        high_res: [(1, C/8, 4H, 4W), (1, C/4, 2H, 2W)] projected high-resolution features.
        min_iou: a prompt none of whose K predicted IoUs reaches this (float32 compare) is not
            upscaled: its masks are `fill` everywhere. The predicted IoUs come from the tokens,
            before the upscaling (about half a prompt's work at 512 px), so a caller that drops
            masks below a predicted-IoU threshold anyway (segment everything) gets the same
            answer for less. None: every prompt's masks.
        fill: the logit of the masks not computed.

    Returns:
        (masks (N, K, 4H, 4W), iou (N, K), mask tokens (N, K, C), object score logits (N, 1)),
        K = the multimask outputs (the library's `mask_slice` 1:).
    """
    import torch
    import torch.nn.functional as F

    transformer = decoder.transformer
    n = sparse.shape[0]
    _, _, h, w = image.shape
    output_tokens = torch.cat(
        [decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight]
    )
    point_embeddings = torch.cat([output_tokens.expand(n, -1, -1), sparse], dim=1)
    point_embeddings = point_embeddings.to(decoder.iou_token.weight.dtype)
    keys = (
        (image + dense).flatten(2).transpose(1, 2)
    )  # (1, HW, C): shared until the first block ends
    pe = image_pe.flatten(2).transpose(1, 2)
    queries = point_embeddings
    for block in transformer.layers:
        if block.skip_first_layer_pe:
            queries = _attention(block.self_attn, queries, queries, queries)
        else:
            query = queries + point_embeddings
            queries = queries + _attention(block.self_attn, query, query, queries)
        queries = block.layer_norm1(queries)
        query = queries + point_embeddings
        key = keys + pe
        queries = queries + _attention(block.cross_attn_token_to_image, query, key, keys)
        queries = block.layer_norm2(queries)
        queries = block.layer_norm3(queries + block.mlp(queries))
        query = queries + point_embeddings
        keys = block.layer_norm4(
            keys + _attention(block.cross_attn_image_to_token, key, query, queries)
        )
    query = queries + point_embeddings
    attn_out = _attention(transformer.final_attn_token_to_image, query, keys + pe, keys)
    queries = transformer.layer_norm_final_attn(queries + attn_out)
    k = int(decoder.num_mask_tokens) - 1
    mask_tokens = queries[:, 3 : 3 + k]  # the multimask tokens (token 2 is the single mask's)

    # Upscaling in 2x2-block layout: (n, H, W, a, b, C/4), then (n, H, W, a, b, c, d, C/8); the
    # output pixel of block (i, j, a, b, c, d) is (4i + 2a + c, 4j + 2b + d). A few prompts at a
    # time: the largest tensor stays under ~16 MB (a fresh larger one costs page faults).
    feat_s0, feat_s1 = high_res
    s1 = _with_bias(_blocks(feat_s1), decoder.upscale_conv1)
    s0 = feat_s0[0].reshape(-1, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0)  # (i,j,a,b,c,d,C)
    s0 = _with_bias(s0, decoder.upscale_conv2)
    norm = decoder.upscale_layer_norm
    hyper = torch.stack(
        [decoder.output_hypernetworks_mlps[i + 1](mask_tokens[:, i]) for i in range(k)], dim=1
    )  # (N, K, C/8)
    iou = decoder.iou_prediction_head(queries[:, 1])[:, 1:]
    object_logits = decoder.pred_obj_score_head(queries[:, 0])
    run = None  # every prompt
    if min_iou is not None:  # the caller's predicted-IoU filter, before the upscaling
        passing = (iou.float() >= min_iou).any(dim=1)
        if not bool(passing.all()):
            run = torch.nonzero(passing).reshape(-1)
    if run is not None:
        keys, hyper = keys[run], hyper[run]
    step = max(1, UPSCALE_FLOATS // (16 * h * w * s0.shape[-1]))
    parts = [keys.new_zeros((0, k, 4 * h, 4 * w))]
    for start in range(0, keys.shape[0], step):
        part = keys[start : start + step]
        m = part.shape[0]
        up = _conv_transpose_2x2(part.reshape(m, h, w, -1), decoder.upscale_conv1, s1)
        up = F.gelu(F.layer_norm(up, norm.normalized_shape, norm.weight, norm.bias, norm.eps))
        up = F.gelu(_conv_transpose_2x2(up, decoder.upscale_conv2, s0))
        product = torch.bmm(
            up.reshape(m, -1, up.shape[-1]), hyper[start : start + m].transpose(1, 2)
        )
        product = product.reshape(m, h, w, 2, 2, 2, 2, k).permute(0, 7, 1, 3, 5, 2, 4, 6)
        parts.append(product.reshape(m, k, 4 * h, 4 * w))
    masks = torch.cat(parts)
    if run is not None:
        computed, masks = masks, masks.new_full((n, k, 4 * h, 4 * w), fill)
        masks[run] = computed
    return masks, iou, mask_tokens, object_logits
