"""The SAM 2 video model's per-frame steps, over the library adapter: the model math, no state.

One frame of SAM 2-family tracking is four model steps; `ModelSteps` runs each of them in the
library's own order and with the library's own operations (so one object per call is
bit-identical to the library's session), batched over B objects where the model allows:

1. image encoder (`encode`): (1, 3, S, S) pixels -> feature levels, each (H*W, 1, C), finest
   first, plus one position encoding of the top level; S = image_size, the top level is
   S/16 x S/16 with C = hidden_dim. Runs once a frame, whatever the number of objects.
2. memory attention (`memory_inputs`, `attend`): an object's memory (its prompted frames, its
   last `memory_frames` tracked frames, its object pointers) -> (B, C, H, W) top-level features
   conditioned on that memory. A frame seen without memory (a first prompt, `segment`) takes
   the model's no-memory embedding instead (`no_memory`).
3. prompt encoder + mask decoder (`decode`): points / a dense mask hint -> low-resolution mask
   logits (B, 1, S/4, S/4), the same upsampled to (B, 1, S, S), the object presence logit and
   the object pointer (B, 1, C). A mask prompt alone is taken as the output (`mask_as_output`).
4. memory encoder (`encode_memory`, `encode_objects`): the high-resolution mask + the frame's
   features -> the spatial memory the next frames attend to.

What is stored and for how long is the tracker's business (tracker.py, memory.py); every private
transformers call goes through the `LibraryAdapter` (adapter.py). Tensors stay on the model's
device; callers run these under `torch.inference_mode()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from seg_ros.engine.errors import PromptError
from seg_ros.engine.sam.adapter import LibraryAdapter

if TYPE_CHECKING:
    import torch

#: The library's "no object" mask logit (masks of an absent object are filled with it).
NO_OBJECT_LOGIT = -1024.0


@dataclass(frozen=True, eq=False)
class TrackedMask:
    """One object's answer on one frame, in the model's input geometry (on the model's device).

    Attributes:
        mask_logits: (h, w) float low-resolution mask logits, h = w = image_size / 4; > 0 is the
            object. Filled with NO_OBJECT_LOGIT when the model says the object is absent.
        object_score_logit: object presence logit; > 0 means present (visible).
        iou: the decoder's predicted IoU of the chosen mask (1.0 for a mask prompt).
        object_pointer: (C,) the object pointer the memory keeps for this frame.
        candidate_logits: (K, h, w) alternative masks, best first (multimask prompts), else None.
        candidate_scores: predicted IoU of each candidate, same order.
    """

    mask_logits: torch.Tensor
    object_score_logit: float
    iou: float
    object_pointer: torch.Tensor
    candidate_logits: torch.Tensor | None = None
    candidate_scores: tuple[float, ...] = ()


@dataclass
class Decoded:
    """Mask decoder output for a batch of B objects (tensors on the model's device)."""

    low_res: torch.Tensor  # (B, 1, h, w) chosen mask logits, no-object filled
    high_res: torch.Tensor  # (B, 1, S, S) the same, upsampled to the input size
    object_score_logits: torch.Tensor  # (B, 1, 1)
    object_pointer: torch.Tensor  # (B, 1, C)
    iou: torch.Tensor  # (B, K) predicted IoU of every mask the decoder returned
    best: torch.Tensor  # (B,) index of the chosen mask among the K
    multimasks: torch.Tensor  # (B, K, h, w) every mask, no-object filled

    def mask(self, i: int, *, candidates: bool) -> TrackedMask:
        """Object i of the batch as a TrackedMask (candidates sorted best first)."""
        import torch

        candidate_logits = None
        candidate_scores: tuple[float, ...] = ()
        if candidates:
            order = torch.argsort(self.iou[i].float(), descending=True)
            candidate_logits = self.multimasks[i][order]
            candidate_scores = tuple(float(v) for v in self.iou[i][order].float().tolist())
        return TrackedMask(
            mask_logits=self.low_res[i, 0],
            object_score_logit=float(self.object_score_logits[i].float().reshape(-1)[0]),
            iou=float(self.iou[i, self.best[i]].float()),
            object_pointer=self.object_pointer[i, 0],
            candidate_logits=candidate_logits,
            candidate_scores=candidate_scores,
        )


@dataclass(frozen=True, eq=False)
class EncodedFrame:
    """One frame's image-encoder output: feature levels, each (H*W, 1, C), finest first, and the
    top level's position encoding (H*W, 1, C)."""

    levels: list[torch.Tensor]
    position: torch.Tensor


def encode_batch(model: Any, pixels: Sequence[torch.Tensor]) -> list[EncodedFrame]:
    """Several frames (each (1, 3, S, S), same device and dtype) through the image encoder in ONE
    pass (the library's get_image_features on a batch); each frame's output, in order.

    Each frame gets its own copy with the layout a one-frame pass gives (the encoder output is
    (H*W, N, C)); a frame's features then hold only its own memory, and the steps after the
    encoder see the same tensors as after a one-frame pass. On the tiny SAM 2.1 model on a CPU
    the batched output equals the one-frame outputs bit for bit (test/test_streams.py).
    """
    import torch

    with torch.inference_mode():
        out = model.get_image_features(torch.cat(list(pixels)), return_dict=True)
        levels = list(out.fpn_hidden_states)
        position = out.fpn_position_encoding[-1]
        return [
            EncodedFrame([x[:, i : i + 1].clone() for x in levels], position[:, i : i + 1].clone())
            for i in range(len(pixels))
        ]


class ModelSteps:
    """The model steps of SAM 2-family tracking (see the module docstring), for one model.

    Holds no tracking state: only what depends on the model and the input size (the position
    encodings) and the work counters the tracker reports.

    Args:
        lib: the model and its session, through which every private library call is made.
        memory_frames: recent tracked frames whose spatial memory an object attends to.
        counters: the tracker's work counters; the steps count their own calls into it
            ("encoder_calls", "decoder_calls", "memory_attention_calls", "memory_encoder_calls").
    """

    def __init__(self, lib: LibraryAdapter, memory_frames: int, counters: dict[str, int]) -> None:
        import torch

        self.lib = lib
        self.memory_frames = memory_frames
        self.counters = counters
        model = lib.model
        self.device: torch.device = lib.device
        self.dtype: torch.dtype = lib.dtype
        self.image_size = int(model.config.image_size)
        self.hidden_dim = int(model.hidden_dim)
        self.feature_sizes = [tuple(int(v) for v in s) for s in model.backbone_feature_sizes]
        # EdgeTAM's memory attention needs the count of spatial memory frames (perceiver layout).
        self._attention_kwargs_spatial = lib.takes_spatial_count
        # EdgeTAM's memory encoder returns (batch, tokens, C); SAM 2's (tokens, batch, C).
        self._memory_batch_dim = 0 if lib.has_perceiver else 1
        # EdgeTAM's perceiver resampler `view`s an expanded tensor: it only takes one object.
        self.memory_encoder_batches = not lib.has_perceiver
        with torch.inference_mode():
            self._image_pe = model.get_image_wide_positional_embeddings()
        #: Top-level position encoding of the image features (set by the first `encode`).
        self.pos: torch.Tensor | None = None

    @property
    def model(self) -> Any:
        """The video model (None once its backend closed)."""
        return self.lib.model

    def reset(self) -> None:
        """Forget the position encoding (a new stream encodes it again on its first frame)."""
        self.pos = None

    # ------------------------------------------------------------------ 1. image encoder
    def as_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(1, 3, S, S) or (3, S, S) preprocessed pixels -> (1, 3, S, S) on the model's device
        and dtype; ValueError for any other shape."""
        if pixel_values.dim() == 3:
            pixel_values = pixel_values[None]
        size = self.image_size
        if tuple(pixel_values.shape) != (1, 3, size, size):
            raise ValueError(
                f"pixel_values must be (1, 3, {size}, {size}); got {tuple(pixel_values.shape)}"
            )
        return pixel_values.to(self.device, self.dtype)

    def encode(
        self, pixel_values: torch.Tensor, encoded: EncodedFrame | None = None
    ) -> list[torch.Tensor]:
        """Image encoder + the decoder's feature projections (the library's get_image_features).

        Returns the feature levels, each (H*W, 1, C). The position encodings depend only on the
        input size: the first frame's are kept for every frame. `encoded`: this frame's output
        of a batched pass (`encode_batch`), used instead of running the encoder.
        """
        self.counters["encoder_calls"] += 1
        if encoded is None:
            out = self.model.get_image_features(pixel_values, return_dict=True)
            encoded = EncodedFrame(list(out.fpn_hidden_states), out.fpn_position_encoding[-1])
        if self.pos is None:
            self.pos = encoded.position
        return list(encoded.levels)

    def high_res(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """(H*W, 1, C) levels -> (1, C, H, W) maps for the decoder's high-resolution path."""
        return [
            x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *size)
            for x, size in zip(feats[:-1], self.feature_sizes[:-1], strict=True)
        ]

    # ------------------------------------------------------------------ 2. memory attention
    def no_memory(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Top-level features of a frame seen without memory (initial conditioning frames)."""
        top: torch.Tensor = feats[-1] + self.model.no_memory_embedding
        return top.permute(1, 2, 0).reshape(1, self.hidden_dim, *self.feature_sizes[-1])

    def memory_inputs(
        self,
        obj_idx: int,
        frame_index: int,
        references: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The memory `obj_idx` attends to on `frame_index`, in the library's order.

        Conditioning frames first (the ones the model's max_cond_frame_num selects), then tracked
        frames frame_index - memory_frames .. frame_index - 1, then object pointers.

        `references` are (virtual frame index, stored output) pairs of regions shown on images
        that are not frames (tracker.py, `add_reference`): each enters as a conditioning frame
        standing at its virtual index, ahead of the prompted frames, always attended (never
        subject to max_cond_frame_num): its spatial memory with the conditioning frames' temporal
        encoding, its object pointer at offset frame_index - virtual (only once virtual <=
        frame_index, as the library's eval mode takes pointers of past conditioning frames only).
        Without references this is the library's memory exactly.
        Returns (memory (M, 1, C_mem), positions (M, 1, C_mem), pointer tokens, spatial frames).
        """
        import torch

        conditioning = self.lib.conditioning_outputs(obj_idx)
        if not conditioning and not references:
            raise RuntimeError(f"object index {obj_idx} has no prompted frame to track from")
        selected, unselected = self.lib.select_conditioning(frame_index, conditioning)
        gathered: list[tuple[int, Any]] = [(0, out) for _, out in references]
        gathered += [(0, out) for out in selected.values()]
        tracked = self.lib.tracked_outputs(obj_idx)
        for offset in range(self.memory_frames, 0, -1):
            previous = frame_index - offset
            gathered.append((offset, tracked.get(previous, unselected.get(previous))))
        memories, positions = self.lib.memory_tensors(gathered)
        n_spatial = len(memories)
        offsets, tokens, max_pointers = self.lib.object_pointers(obj_idx, frame_index)
        seen = [(frame_index - at, out) for at, out in references if at <= frame_index]
        if seen:
            # Ahead of the library's own pointers (its conditioning frames' come first too).
            offsets = [offset for offset, _ in seen] + list(offsets)
            tokens = [out["object_pointer"].to(self.device) for _, out in seen] + list(tokens)
        n_pointers = 0
        if tokens:
            pointers, pointer_pos = self.lib.pointer_tensors(offsets, tokens, max_pointers)
            memories.append(pointers)
            positions.append(pointer_pos)
            n_pointers = int(pointers.shape[0])
        memory = torch.cat(memories, dim=0).to(dtype=self.dtype)
        return memory, torch.cat(positions, dim=0), n_pointers, n_spatial

    def attend(
        self,
        feats: Sequence[torch.Tensor],
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        n_pointers: int,
        n_spatial: int,
    ) -> torch.Tensor:
        """Memory attention for B objects at once -> (B, C, H, W) conditioned top-level features."""
        assert self.pos is not None
        batch = memory.shape[1]
        self.counters["memory_attention_calls"] += 1
        out: torch.Tensor = self.lib.memory_attention(
            feats[-1].expand(-1, batch, -1),
            self.pos.expand(-1, batch, -1),
            memory,
            memory_pos,
            n_pointers,
            n_spatial if self._attention_kwargs_spatial else None,
        )
        # (1, B, H*W, C) -> (B, C, H, W). The library's own reshape only holds for B = 1.
        return out[0].transpose(1, 2).reshape(batch, self.hidden_dim, *self.feature_sizes[-1])

    # ------------------------------------------------------------------ 3. prompt + mask decoder
    def decode(
        self,
        embeddings: list[torch.Tensor],
        *,
        points: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        dense: torch.Tensor | None = None,
        multimask: bool,
        upsample: bool = True,
    ) -> Decoded:
        """Prompt encoder + mask decoder for B objects, as the library's `_single_frame_forward`.

        Same operations in the same order (so B = 1 is bit-identical), with batch-correct
        indexing and every candidate mask kept for multimask answers. `upsample=False` leaves
        `high_res` at the low resolution (segment-everything never reads it).
        """
        import torch
        import torch.nn.functional as F

        model = self.model
        top = embeddings[-1]
        batch = top.shape[0]
        if points is None:
            # No point: one padding point (label -1), as the library does.
            points = torch.zeros(batch, 1, 1, 2, dtype=top.dtype, device=top.device)
            labels = -torch.ones(batch, 1, 1, dtype=torch.int32, device=top.device)
        if dense is not None and tuple(dense.shape[-2:]) != tuple(
            model.prompt_encoder.mask_input_size
        ):
            dense = F.interpolate(
                dense.float(),
                size=model.prompt_encoder.mask_input_size,
                align_corners=False,
                mode="bilinear",
                antialias=True,
            ).to(dense.dtype)
        sparse, dense_embeddings = model.prompt_encoder(
            input_points=points, input_labels=labels, input_boxes=None, input_masks=dense
        )
        self.counters["decoder_calls"] += 1
        low_multi, iou, tokens, object_logits = model.mask_decoder(
            image_embeddings=top,
            image_positional_embeddings=self._image_pe.repeat(batch, 1, 1, 1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense_embeddings,
            multimask_output=multimask,
            high_resolution_features=embeddings[:-1],
        )
        appearing = object_logits > 0  # (B, 1, 1)
        low_multi = torch.where(appearing[:, None, None], low_multi, NO_OBJECT_LOGIT)
        # All K planes upsampled, then one picked: what the library does (the reference tests
        # compare bit for bit). Segment-everything skips it (`upsample=False`): it never reads
        # `high_res`, and at 512 px its 3,072 candidates would be 3 GB of float32.
        high_multi = low_multi
        if upsample:
            high_multi = (
                F.interpolate(
                    low_multi.squeeze(1).float(),
                    size=(self.image_size, self.image_size),
                    mode="bilinear",
                    align_corners=False,
                )
                .unsqueeze(1)
                .to(low_multi.dtype)
            )
        rows = torch.arange(batch, device=top.device)
        if multimask:
            best = torch.argmax(iou[:, 0], dim=-1)  # (B,)
            low = low_multi[rows, 0, best][:, None]
            high = high_multi[rows, 0, best][:, None]
            token = tokens[rows, 0, best] if tokens.size(2) > 1 else tokens[:, 0, 0]
        else:
            best = torch.zeros(batch, dtype=torch.long, device=top.device)
            low, high = low_multi[:, :, 0], high_multi[:, :, 0]
            token = tokens[:, 0, 0]
        pointer = model.object_pointer_proj(token[:, None])  # (B, 1, C)
        weight = appearing.to(pointer.dtype)
        pointer = weight * pointer + (1 - weight) * model.no_object_pointer
        return Decoded(
            low_res=low,
            high_res=high,
            object_score_logits=object_logits,
            object_pointer=pointer,
            iou=iou[:, 0],
            best=best,
            multimasks=low_multi[:, 0],
        )

    def decode_clicks(
        self,
        high_res: Sequence[torch.Tensor],
        top: torch.Tensor,
        clicks: torch.Tensor,
        min_iou: float | None = None,
    ) -> Decoded:
        """One positive click each for N prompts on ONE image: `decode(top.expand(N, ...),
        points=clicks[:, None, None], labels=1, multimask=True, upsample=False)`, without the
        per-click copies of the image side (`LibraryAdapter.decode_many_prompts`).

        `high_res`: the (1, C, H, W) maps of `high_res`; `top`: (1, C, H, W); `clicks`: (N, 2)
        XY in the model's input square. `high_res` of the result is the low-resolution mask.
        `min_iou`: the masks of a click none of whose predicted IoUs reaches it are not
        computed (NO_OBJECT_LOGIT everywhere; for a caller that drops them anyway).
        """
        import torch

        model = self.model
        batch = clicks.shape[0]
        sparse, dense = model.prompt_encoder(
            input_points=clicks[:, None, None, :],
            input_labels=torch.ones(batch, 1, 1, dtype=torch.int32, device=clicks.device),
            input_boxes=None,
            input_masks=None,
        )
        self.counters["decoder_calls"] += 1
        low_multi, iou, tokens, object_logits = self.lib.decode_many_prompts(
            top, self._image_pe, sparse[:, 0], dense[:1], list(high_res), min_iou, NO_OBJECT_LOGIT
        )
        appearing = object_logits[:, :, None] > 0  # (B, 1, 1)
        low_multi = torch.where(appearing[:, :, :, None], low_multi, NO_OBJECT_LOGIT)
        rows = torch.arange(batch, device=top.device)
        best = torch.argmax(iou, dim=-1)  # (B,)
        low = low_multi[rows, best][:, None]
        pointer = model.object_pointer_proj(tokens[rows, best][:, None])  # (B, 1, C)
        weight = appearing.to(pointer.dtype)
        pointer = weight * pointer + (1 - weight) * model.no_object_pointer
        return Decoded(
            low_res=low,
            high_res=low,
            object_score_logits=object_logits[:, :, None],
            object_pointer=pointer,
            iou=iou,
            best=best,
            multimasks=low_multi,
        )

    def mask_as_output(
        self, feats: Sequence[torch.Tensor], high_res: list[torch.Tensor], mask: torch.Tensor
    ) -> Decoded:
        """A mask prompt is the object's mask on its frame (the library's `_use_mask_as_output`)."""
        import torch

        size = self.image_size
        mask = mask.to(self.device, self.dtype).reshape(1, 1, *mask.shape[-2:])
        if tuple(mask.shape[-2:]) != (size, size):
            raise PromptError(f"mask must be {size}x{size} (model input size)")
        pix_feat = feats[-1].permute(1, 2, 0).reshape(-1, self.hidden_dim, *self.feature_sizes[-1])
        self.counters["decoder_calls"] += 1
        out = self.lib.mask_as_output(pix_feat, high_res, mask)
        best = torch.zeros(1, dtype=torch.long, device=self.device)
        return Decoded(
            low_res=out.pred_masks,
            high_res=out.high_res_masks,
            object_score_logits=out.object_score_logits.reshape(1, 1, 1),
            object_pointer=out.object_pointer.reshape(1, 1, -1),
            iou=out.iou_scores.reshape(1, 1).to(self.dtype),
            best=best,
            multimasks=out.pred_masks[:, :1],
        )

    def dense_prompt(self, mask: torch.Tensor) -> torch.Tensor:
        """A {0, 1} mask at the input size -> (1, 1, S, S) logits (+10 inside, -10 outside)."""
        mask = mask.to(self.device, self.dtype).reshape(1, 1, *mask.shape[-2:])
        return mask * 20.0 - 10.0

    # ------------------------------------------------------------------ 4. memory encoder
    def encode_memory(
        self,
        feats: Sequence[torch.Tensor],
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        from_prompt: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory encoder for B objects on one frame -> (features, positions), batched."""
        batch = high_res_masks.shape[0]
        self.counters["memory_encoder_calls"] += 1
        return self.lib.encode_memory(
            feats[-1].expand(-1, batch, -1),
            high_res_masks,
            object_score_logits,
            from_prompt,
        )

    def encode_objects(
        self,
        feats: Sequence[torch.Tensor],
        masks: torch.Tensor,
        scores: torch.Tensor,
        from_prompt: bool,
        batched: bool,
    ) -> tuple[list[tuple[int, int]], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Memory of a frame's B objects: one batched call, or one call per object (bit-exact
        to one-object sessions). -> ((start, stop) object spans, their encoder results)."""
        if batched:
            return [(0, masks.shape[0])], [self.encode_memory(feats, masks, scores, from_prompt)]
        spans = [(i, i + 1) for i in range(masks.shape[0])]
        encoded = [
            self.encode_memory(feats, masks[a:b], scores[a:b], from_prompt) for a, b in spans
        ]
        return spans, encoded

    def memory_slice(self, tensor: torch.Tensor, i: int) -> torch.Tensor:
        """Object i's memory out of a batched memory-encoder result (a copy: the batch is freed)."""
        if self._memory_batch_dim == 0:
            return tensor[i : i + 1].clone()
        return tensor[:, i : i + 1].clone()
