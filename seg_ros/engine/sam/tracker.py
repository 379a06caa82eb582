"""Live multi-object tracking with a BOUNDED memory on a transformers SAM 2-family video model.

Where is the tracking memory bounded? In memory.py (`MemoryPlan`: what is kept, and why); this
module applies the plan after every frame (`StreamingVideoTracker._prune`).

transformers' video models (`Sam2VideoModel`, `EdgeTamVideoModel`, `Sam3TrackerVideoModel`) ship
with an inference session that keeps every frame, every cached feature and every per-object output
for the whole video (+7.9 GB RSS after 300 frames at 1024 px). A robot streams for hours, so this
module drives the same model internals frame by frame and forgets what the model can no longer
attend to. It keeps, per object, the prompted (conditioning) frames and the most recent frames of
the memory window, and for the whole stream the last few frames a late prompt may still name.
This module is the orchestration: object ids, which frames and outputs are kept, which objects
run together, what a prompt changes. The model math (image encoder, memory attention, prompt
encoder + mask decoder, memory encoder) is steps.py (`ModelSteps`): the library's own functions in
the order it uses them; the private ones are reached only through adapter.py, which checks them
against the tested transformers release.

The reference (what the shipped defaults reproduce, bit for bit, tested in test/test_sam2.py):
transformers' own streaming inference session (`Sam2VideoInferenceSession`, ... ) with ONE
SESSION PER OBJECT, driven as its documented streaming use: `model(session, frame=pixels)` for
each frame; a prompt = `processor.add_inputs_to_inference_session(...)` on the frame it names,
then `model(session, frame_idx=i, frame=pixels_i)`. That is SAM 2.1's per-object independent
inference (an object's masks depend on its own prompts only) with the library's default prompt
semantics:
- a prompt on a frame the object was not tracked on (its first frame, a refinement there, a
  frame before it existed) is a conditioning frame, decoded without memory;
- a correction on a tracked frame is decoded with memory and stored as an ordinary tracked
  frame, which leaves memory with the window (SAM 2's `add_all_frames_to_correct_as_cond=False`);
- more clicks on the same frame add to the earlier ones (`clear_old_inputs=False`); a box
  restarts them (the library's box + points).
The results equal the library's as long as the library's session would read nothing the bound
evicted: a prompt names one of the last `prompt_frames` frames, and an object keeps at most
`max_conditioning_frames` prompted frames (beyond that the lowest frame index is forgotten; the
library keeps all of them as memory and pointers, so results differ from then on). Bit-exact means
one object per call (`batch_objects=False`, the CPU default); batched calls (the CUDA default)
round differently. (Calling the library's forward for a prompt WITHOUT `frame=` switches it to its
non-streaming pointer encoding, which differs for corrections within the first 15 frames.)

Options that depart from the reference, each tested against its own reference:
- `independent_objects=False`: one library session holding every object. Its batched memory
  encoder takes one `is_mask_from_pts` flag per frame, so a prompt on one object re-tracks every
  other object on that frame and stores their memory from a binarised mask (SAM 2.1 and SAM 3;
  EdgeTAM encodes each object with its own flag, so there both are the same).
- `corrections_as_conditioning=True`: a correction becomes a conditioning frame (SAM 2's
  `add_all_frames_to_correct_as_cond=True`), kept until `max_conditioning_frames` newer ones
  replace it; the library has no such mode.

References (`add_reference`): an object may also be shown on an image that is not a frame of the
stream (a photo, another camera). The region is decoded there as on a conditioning frame and only
its memory entry is kept (spatial memory + object pointer), apart from the stream's frames and
bounded on its own (`max_references` per object). It stands, in time, just before the first frame
it is attended on, as a prompted frame would: so a reference made of frame 0 of a clip, then
frames 1..N, gives the results of a prompt on frame 0 of the stream, bit for bit (tested in
test/test_references_sam.py). Unlike prompted frames, references are always attended (the model's
max_cond_frame_num selects among prompted frames only).

Frames arrive one at a time: `step(frame_index, pixels)` encodes the frame once (one image-encoder
pass serves every object) and tracks every object, batching objects whose memories have the same
layout through one memory-attention and one mask-decoder call. `add_prompt` re-uses the cached
image features of the frame it names: only the prompt encoder, the mask decoder and the memory
encoder run. Coordinates here are in the model's input frame (a square of `image_size` pixels):
callers scale from their source images.

torch and transformers are imported by the functions that use them: importing this module is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seg_ros.engine.errors import PromptError
from seg_ros.engine.sam.adapter import (
    LibraryAdapter,
    session_class_for,  # noqa: F401 (re-exported)
)
from seg_ros.engine.sam.everything import (
    EverythingOptions,
    grid_levels,
    grid_points,
    passes_filters,
)
from seg_ros.engine.sam.memory import MemoryBounds, MemoryPlan
from seg_ros.engine.sam.steps import NO_OBJECT_LOGIT as NO_OBJECT_LOGIT  # re-exported
from seg_ros.engine.sam.steps import Decoded, EncodedFrame, ModelSteps
from seg_ros.engine.sam.steps import TrackedMask as TrackedMask  # the tracker's answer

if TYPE_CHECKING:
    import torch

#: Box corners enter SAM's prompt encoder as two points with these labels (top-left, bottom-right).
BOX_LABELS = (2, 3)


@dataclass
class _PointPrompt:
    """Points (box corners first) given for one object on one frame, in model input pixels."""

    coords: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        box: Sequence[float] | None,
        previous: _PointPrompt | None = None,
    ) -> _PointPrompt:
        """A prompt's points, joined to `previous` (earlier clicks on its frame) unless a box
        restarts them."""
        merged = cls()
        if box is not None:
            merged.coords += [(float(box[0]), float(box[1])), (float(box[2]), float(box[3]))]
            merged.labels += list(BOX_LABELS)
        elif previous is not None:
            merged.coords += previous.coords
            merged.labels += previous.labels
        merged.coords += [(float(x), float(y)) for x, y in points]
        merged.labels += [int(v) for v in labels]
        return merged


@dataclass
class _Reference:
    """One reference of an object: what a region shown on an image that is NOT a frame of the
    stream left in the object's memory (the image's features are not kept).

    Attributes:
        output: the stored output, as a conditioning frame's (adapter.OUTPUT_KEYS): object
            pointer (1, 1, C), object score logit (1, 1, 1), spatial memory and its position
            encoding (the memory encoder's layout), on the model's device.
        at: the frame index the reference stands at (None until first attended): the frame
            before the first one its object is tracked or corrected on after it was added.
        bound_on: the frame on which `at` was set (undone if that frame is discarded).
    """

    output: dict[str, Any]
    at: int | None = None
    bound_on: int | None = None


def _check_prompt(
    points: Sequence[Sequence[float]],
    labels: Sequence[int],
    box: Sequence[float] | None,
    mask: torch.Tensor | None,
) -> None:
    """Raises PromptError for an empty prompt or points without one label each."""
    if len(points) != len(labels):
        raise PromptError(f"got {len(points)} points but {len(labels)} point labels")
    if not len(points) and box is None and mask is None:
        raise PromptError("a prompt needs points, a box or a mask")


def tensor_bytes(*roots: Any) -> int:
    """Bytes of the tensor storages reachable through dicts / lists / tuples (each once)."""
    import torch

    seen: set[int] = set()
    total = 0
    stack = list(roots)
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


class StreamingVideoTracker:
    """Live multi-object tracker with a bounded memory, generic over SAM 2-family video models.

    Works with any transformers video model that has the SAM 2 video internals
    (`get_image_features`, `prompt_encoder`, `mask_decoder`, `memory_attention`,
    `_encode_new_memory`, `_use_mask_as_output`, `_get_object_pointers`, ...): `Sam2VideoModel`
    (SAM 2 / 2.1), `EdgeTamVideoModel` and `Sam3TrackerVideoModel` (SAM 3's tracker). The model's
    own inference session (`session_cls`, found from the model's class by default) stores the
    per-object outputs so that the library's helpers read them as usual; this class decides what
    goes in and what is evicted.

    Frame indices must increase from one `step` to the next (gaps are allowed; `reset` starts a new
    stream). Object ids are any ints chosen by the caller.

    Public API (kept stable for the other backends):
        step(frame_index, pixel_values) -> {obj_id: TrackedMask}   encode once + track all
        encode_frame(frame_index, pixel_values)                     encode only
        track(frame_index) -> {obj_id: TrackedMask}                 track all on an encoded frame
        add_prompt(frame_index, obj_id, points=, labels=, box=, mask=, multimask=) -> TrackedMask
        add_reference(obj_id, pixel_values, points=, labels=, box=, mask=, multimask=)
            -> (reference id, TrackedMask on the reference image)
        remove_reference(obj_id, reference), references(obj_id), reference_positions(obj_id)
        remove_object(obj_id), reset(), discard_frame(frame_index)
        segment(pixel_values | features, points=, labels=, box=, mask=, multimask=) -> TrackedMask
        has_frame(i), object_ids, latest_frame, image_size, bounds, stats(), counters
        memory (the MemoryPlan: windows, bounds), lib (the LibraryAdapter: model + session),
        steps (the ModelSteps: the model math of a frame)

    Memory policy (`self.memory`, a `MemoryPlan` (memory.py), applied by `_prune` after every
    frame and by `_limit_conditioning` after a prompt; latest frame L):
        - input frames: the last `prompt_frames` (a late prompt may name one of them);
        - image features: the latest frame (plus one re-encoded past frame, for a late prompt);
        - per object, prompted frames: the newest `max_conditioning_frames` (oldest dropped);
        - per object, tracked frames: full spatial memory for the frames any prompt-able frame or
          the next frame attends to (`memory_frames` back from frame L - prompt_frames + 1), and
          the object pointer only for the model's longer pointer window; nothing older;
        - per object, references (regions shown on images that are not frames): the newest
          `max_references`, apart from the frames (see `add_reference`).

    Args:
        model: a loaded video model in eval mode, on its device and dtype.
        session_cls: the model's inference-session class; None = found from the model's class.
        memory_frames: recent tracked frames whose spatial memory each object attends to (0 = the
            model's own, num_maskmem - 1). Smaller bounds memory and cost; larger than the
            model's is refused. Object pointers (one vector a frame) keep the model's longer
            window (max_object_pointers_in_encoder - 1 frames).
        max_conditioning_frames: prompted frames kept per object (oldest dropped beyond).
        prompt_frames: recent frames a prompt may name (0 = memory_frames). Each costs one stored
            input frame; a prompt on a past frame re-runs the image encoder on it.
        batch_objects: run objects with equal memory layouts through one batched call. The
            reference equality is bit-exact one object per call; batched kernels round
            differently (within 1e-5 on the tiny test models).
        corrections_as_conditioning: a prompt on a frame where the object was tracked becomes a
            conditioning frame (kept until `max_conditioning_frames` newer ones replace it), as
            SAM 2's `add_all_frames_to_correct_as_cond=True`. False (default, the reference) keeps
            the library's semantics: an ordinary tracked frame that leaves memory with the window.
        independent_objects: True (default, the reference): each object's memory is encoded
            with its own prompt flag, as one library session per object. False: as one library
            session holding every object (see the module docstring).
        max_references: references kept per object (`add_reference`; the oldest dropped beyond).
    """

    def __init__(
        self,
        model: Any,
        session_cls: Any = None,
        *,
        memory_frames: int = 0,
        max_conditioning_frames: int = 4,
        prompt_frames: int = 0,
        batch_objects: bool = True,
        corrections_as_conditioning: bool = False,
        independent_objects: bool = True,
        max_references: int = 4,
    ) -> None:
        config = model.config
        model_window = int(config.num_maskmem) - 1
        if model_window < 1:
            raise ValueError(f"{type(model).__name__} has no video memory (num_maskmem < 2)")
        if memory_frames < 0 or memory_frames > model_window:
            raise ValueError(
                f"memory_frames={memory_frames} is outside what the model attends to: "
                f"1..{model_window} (num_maskmem - 1), or 0 for the model's own"
            )
        if max_conditioning_frames < 1:
            raise ValueError("max_conditioning_frames must be >= 1")
        if prompt_frames < 0:
            raise ValueError("prompt_frames must be >= 0")
        if max_references < 1:
            raise ValueError("max_references must be >= 1")
        self.max_references = max_references
        # The model and its session; every private library call is made through it (and
        # checked, on construction, to exist with the parameters it is called with).
        self.lib = LibraryAdapter(model, session_cls)
        self.device: torch.device = self.lib.device
        self.dtype: torch.dtype = self.lib.dtype
        self.image_size = int(config.image_size)
        memory_frames = memory_frames or model_window
        #: What is kept and what is forgotten (memory.py): the tracking memory's bound.
        self.memory = MemoryPlan(
            memory_frames=memory_frames,
            # The model attends to object pointers of this many previous tracked frames.
            pointer_frames=max(0, int(config.max_object_pointers_in_encoder) - 1),
            prompt_frames=prompt_frames or memory_frames,
            max_conditioning_frames=max_conditioning_frames,
        )
        self.batch_objects = batch_objects
        self.corrections_as_conditioning = corrections_as_conditioning
        self.independent_objects = independent_objects
        # One library session re-encodes every object of a prompted frame (SAM 2.1, SAM 3).
        self._shared_prompt_flag = not independent_objects and self.lib.batches_memory_flag
        #: Work counters (tests and benchmarks read them); the model steps count their calls.
        self.counters: dict[str, int] = {}
        #: The model math of one frame (steps.py): encoder, memory attention, decoder, memory.
        self.steps = ModelSteps(self.lib, memory_frames, self.counters)
        self.reset()

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> Any:
        """The video model (None once its backend closed)."""
        return self.lib.model

    @property
    def bounds(self) -> MemoryBounds:
        """The most this tracker holds at once (the memory plan's bounds)."""
        return self.memory.bounds

    @property
    def object_ids(self) -> list[int]:
        return self.lib.object_ids

    @property
    def latest_frame(self) -> int | None:
        return self._latest

    def conditioning_frames(self, obj_id: int) -> list[int]:
        """Frames kept as prompted (conditioning) frames of `obj_id`, oldest first."""
        return sorted(self.lib.conditioning_outputs(self._idx(obj_id)))

    def tracked_frames(self, obj_id: int, *, spatial: bool = False) -> list[int]:
        """Tracked frames of `obj_id` with an output kept (`spatial`: with spatial memory)."""
        outputs = self.lib.tracked_outputs(self._idx(obj_id))
        return sorted(i for i, o in outputs.items() if not spatial or "maskmem_features" in o)

    def has_frame(self, frame_index: int) -> bool:
        """Whether a prompt may still name `frame_index`."""
        return frame_index in self._frames or frame_index in self._features

    # ------------------------------------------------------------------ stream
    def reset(self) -> None:
        """Forget every object, frame and cached feature."""
        self.lib.reset()
        self._frames: dict[int, torch.Tensor] = {}
        self._features: dict[int, list[torch.Tensor]] = {}
        self._latest: int | None = None
        self._prompts: dict[int, dict[int, _PointPrompt]] = {}
        self._tracked: dict[int, set[int]] = {}
        #: Per object: its references by id (oldest first), and the id its next one gets.
        self._references: dict[int, dict[int, _Reference]] = {}
        self._next_reference: dict[int, int] = {}
        self.steps.reset()
        # Zeroed in place: the model steps count into this same dict.
        self.counters.update(
            encoder_calls=0,
            decoder_calls=0,
            memory_attention_calls=0,
            batched_objects=0,
            memory_encoder_calls=0,
        )

    def encodes_on_step(self, lazy: bool) -> bool:
        """Whether `step(..., lazy=lazy)` runs the image encoder now (a lazy step with no object
        only stores its frame)."""
        return not (lazy and not self.object_ids)

    def step(
        self,
        frame_index: int,
        pixel_values: torch.Tensor,
        *,
        lazy: bool = False,
        encoded: EncodedFrame | None = None,
    ) -> dict[int, TrackedMask]:
        """Take the next frame: encode it once, track every object, evict what is out of reach.

        Args:
            frame_index: larger than the previous frame's.
            pixel_values: (1, 3, S, S) or (3, S, S) preprocessed image, S = image_size.
            lazy: while no object is tracked, only keep the frame; the image encoder runs when a
                prompt names it (an idle stream then costs no encoder pass).
            encoded: this frame's image-encoder output from a batched pass over several
                streams' frames (`steps.encode_batch`); the encoder then does not run here.
        Returns: every object's mask on this frame.
        """
        self.encode_frame(
            frame_index, pixel_values, lazy=not self.encodes_on_step(lazy), encoded=encoded
        )
        try:
            outputs = self.track(frame_index)
        except BaseException:
            self.discard_frame(frame_index)
            raise
        self._prune()
        return outputs

    def encode_frame(
        self,
        frame_index: int,
        pixel_values: torch.Tensor,
        *,
        lazy: bool = False,
        encoded: EncodedFrame | None = None,
    ) -> None:
        """Make `frame_index` the latest frame and run the image encoder on it.

        `lazy` stores `pixel_values` without encoding them (encoded when first needed);
        `encoded` is their encoder output from a batched pass (see `step`).
        SAM 3 shares its backbone between detector and tracker by standing in for the
        tracker's vision encoder (backends/sam3.py), so this always takes pixels.
        """
        import torch

        if self._latest is not None and frame_index <= self._latest:
            raise ValueError(
                f"frame index {frame_index} does not follow the latest frame {self._latest}"
            )
        pixel_values = self.steps.as_pixels(pixel_values)
        feats: list[torch.Tensor] | None = None
        if not lazy:
            with torch.inference_mode():
                feats = self.steps.encode(pixel_values, encoded)
        self._frames[frame_index] = pixel_values
        # A new latest frame drops every other frame's features: a late prompt re-encodes.
        keep = self.memory.features_after_encoding(frame_index, frame_index)
        self._features = {i: f for i, f in self._features.items() if i in keep}
        if feats is not None:
            self._features[frame_index] = feats
        self._latest = frame_index

    def discard_frame(self, frame_index: int) -> None:
        """Undo `encode_frame` for a frame whose tracking failed (the stream does not advance)."""
        self._frames.pop(frame_index, None)
        self._features.pop(frame_index, None)
        for idx in range(self.lib.object_count):
            self.lib.tracked_outputs(idx).pop(frame_index, None)
        for tracked in self._tracked.values():
            tracked.discard(frame_index)
        for refs in self._references.values():
            for ref in refs.values():
                if ref.bound_on == frame_index:
                    ref.at = ref.bound_on = None
        earlier = [i for i in self._frames if i < frame_index]
        self._latest = max(earlier) if earlier else None

    def track(self, frame_index: int) -> dict[int, TrackedMask]:
        """Track every object on an encoded frame (one batched pass per memory layout)."""
        import torch

        obj_ids = [
            obj_id
            for obj_id in self.object_ids
            if frame_index not in self.lib.conditioning_outputs(self._idx(obj_id))
        ]
        results: dict[int, TrackedMask] = {}
        if not obj_ids:
            return results
        with torch.inference_mode():
            feats = self._features_of(frame_index)
            high_res = self.steps.high_res(feats)
            # Group objects whose memory has the same layout: one attention + decoder call each.
            groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor, torch.Tensor]]] = {}
            layouts: dict[tuple[int, ...], tuple[int, int]] = {}
            for n, obj_id in enumerate(obj_ids):
                memory, memory_pos, n_ptr, n_spatial = self._memory_inputs(obj_id, frame_index)
                key: tuple[int, ...] = (
                    (memory.shape[0], n_ptr, n_spatial) if self.batch_objects else (n,)
                )
                groups.setdefault(key, []).append((obj_id, memory, memory_pos))
                layouts[key] = (n_ptr, n_spatial)
            decoded: dict[int, tuple[Decoded, int]] = {}
            multimask = self.lib.use_multimask(False, None)
            for key, members in groups.items():
                memory = torch.cat([m[1] for m in members], dim=1)
                memory_pos = torch.cat([m[2] for m in members], dim=1)
                pix_feat = self.steps.attend(feats, memory, memory_pos, *layouts[key])
                batch = len(members)
                embeddings = [h.expand(batch, -1, -1, -1) for h in high_res] + [pix_feat]
                out = self.steps.decode(embeddings, multimask=multimask)
                if batch > 1:
                    self.counters["batched_objects"] += batch
                for i, (obj_id, _, _) in enumerate(members):
                    decoded[obj_id] = (out, i)
            # Memory encoder: one batched pass for every object when batching (and the model) allow.
            order = list(decoded)
            masks = torch.cat([decoded[o][0].high_res[decoded[o][1]][None] for o in order])
            scores = torch.cat(
                [decoded[o][0].object_score_logits[decoded[o][1]][None] for o in order]
            )
            # One library session encodes a frame's objects in one batch (it rounds differently
            # from one-object calls): so does `independent_objects=False`.
            batch_memory = self.batch_objects or self._shared_prompt_flag
            spans, encoded = self.steps.encode_objects(
                feats, masks, scores, False, batch_memory and self.steps.memory_encoder_batches
            )
            for (start, stop), (maskmem, maskmem_pos) in zip(spans, encoded, strict=True):
                for j, obj_id in enumerate(order[start:stop]):
                    out, i = decoded[obj_id]
                    stored = self.lib.output(
                        out.object_pointer[i : i + 1],
                        out.object_score_logits[i : i + 1],
                        self.steps.memory_slice(maskmem, j),
                        self.steps.memory_slice(maskmem_pos, j),
                    )
                    self.lib.store_output(self._idx(obj_id), frame_index, stored, False)
                    self._tracked.setdefault(obj_id, set()).add(frame_index)
                    results[obj_id] = out.mask(i, candidates=False)
        return results

    # ------------------------------------------------------------------ prompts
    def add_prompt(
        self,
        frame_index: int,
        obj_id: int,
        *,
        points: Sequence[Sequence[float]] = (),
        labels: Sequence[int] = (),
        box: Sequence[float] | None = None,
        mask: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> TrackedMask:
        """Create `obj_id` or refine it on a frame in memory; only the decoder side runs.

        Args:
            frame_index: a frame still in memory (`has_frame`), usually the latest.
            obj_id: a new id creates an object, a known one refines it.
            points: (N, 2) XY in model input pixels (0..image_size); labels 1 fg / 0 bg.
                Points given earlier for this object on the same frame are kept (refinement
                clicks accumulate, as in SAM's interactive use); a box replaces them.
            box: XYXY in model input pixels.
            mask: (S, S) {0, 1} float tensor at the input size. Alone it is taken as the
                object's mask (the library's video semantics); with points or a box it is a dense
                hint for the decoder.
            multimask: return the decoder's candidate masks (best first).
        Returns: the object's mask on `frame_index`.
        Raises: PromptError when the frame is no longer in memory or the prompt is empty.
        """
        import torch

        if not self.has_frame(frame_index):
            kept = sorted(set(self._frames) | set(self._features))
            raise PromptError(
                f"frame {frame_index} is no longer in memory (frames kept: {kept or 'none'})"
            )
        _check_prompt(points, labels, box, mask)
        new = obj_id not in self.object_ids
        tracked = self._tracked.get(obj_id, set())
        is_init = frame_index not in tracked
        with torch.inference_mode():
            feats = self._features_of(frame_index)
            high_res = self.steps.high_res(feats)
            # The previous output on this frame must not feed its own replacement.
            idx = None if new else self._idx(obj_id)
            previous = self._pop_outputs(idx, frame_index) if idx is not None else {}
            try:
                point_prompt: _PointPrompt | None = None
                if mask is None or len(points) or box is not None:
                    point_prompt = self._merge_points(obj_id, frame_index, points, labels, box)
                memory = None if is_init else (obj_id, frame_index)
                out, candidates = self._decode_prompt(
                    feats, high_res, point_prompt, mask, multimask, memory
                )
                others: dict[int, dict[str, torch.Tensor]] = {}
                if self._shared_prompt_flag:
                    others = self._retrack_others(frame_index, obj_id, feats, high_res, out)
                    maskmem, maskmem_pos = others.pop(obj_id)["memory"]
                else:
                    maskmem, maskmem_pos = self.steps.encode_memory(
                        feats, out.high_res, out.object_score_logits, from_prompt=True
                    )
            except BaseException:
                if idx is not None:
                    self._restore_outputs(idx, frame_index, previous)
                raise
            # Commit: nothing above changed the tracker's state (a failure restored the
            # outputs popped for this frame; only the feature cache may have changed).
            if new:
                idx = self.lib.object_index(obj_id)
            assert idx is not None
            conditioning = is_init or self.corrections_as_conditioning
            stored = self.lib.output(
                out.object_pointer, out.object_score_logits, maskmem, maskmem_pos
            )
            self.lib.store_output(idx, frame_index, stored, conditioning)
            prompts = self._prompts.setdefault(obj_id, {})
            if point_prompt is None:
                prompts.pop(frame_index, None)
            else:
                prompts[frame_index] = point_prompt
            self._tracked.setdefault(obj_id, set())
            if conditioning:
                self._limit_conditioning(obj_id)
            for other, other_stored in others.items():
                self.lib.store_output(self._idx(other), frame_index, other_stored, False)
                self._tracked.setdefault(other, set()).add(frame_index)
            return out.mask(0, candidates=candidates)

    def _decode_prompt(
        self,
        feats: Sequence[torch.Tensor],
        high_res: list[torch.Tensor],
        point_prompt: _PointPrompt | None,
        mask: torch.Tensor | None,
        multimask: bool,
        memory: tuple[int, int] | None,
    ) -> tuple[Decoded, bool]:
        """A prompt through the decoder, as the library decodes it on its frame.

        `point_prompt` None: `mask` alone is the object's mask (`mask_as_output`); else the
        points (a box as its two corner points) with `mask`, if any, as a dense hint.
        `memory`: (obj_id, frame_index) to decode with that object's memory on that frame (a
        correction); None decodes without memory (a conditioning frame, a reference).
        Returns (decoded, whether its candidates are to be returned).
        """
        import torch

        if point_prompt is None:
            assert mask is not None
            return self.steps.mask_as_output(feats, high_res, mask), False
        coords = torch.tensor([point_prompt.coords], dtype=torch.float32, device=self.device)[None]
        point_labels = torch.tensor([point_prompt.labels], dtype=torch.int32, device=self.device)[
            None
        ]
        point_inputs = {"point_coords": coords, "point_labels": point_labels}
        if memory is None:
            pix_feat = self.steps.no_memory(feats)
        else:
            attended, memory_pos, n_ptr, n_spatial = self._memory_inputs(*memory)
            pix_feat = self.steps.attend(feats, attended, memory_pos, n_ptr, n_spatial)
        dense = self.steps.dense_prompt(mask) if mask is not None else None
        decode_multi = multimask or self.lib.use_multimask(memory is None, point_inputs)
        out = self.steps.decode(
            [*high_res, pix_feat],
            points=coords.to(self.dtype),
            labels=point_labels,
            dense=dense,
            multimask=decode_multi,
        )
        return out, multimask

    def _retrack_others(
        self,
        frame_index: int,
        obj_id: int,
        feats: Sequence[torch.Tensor],
        high_res: list[torch.Tensor],
        prompted: Decoded,
    ) -> dict[int, dict[str, Any]]:
        """`independent_objects=False`: what one library session does on a prompted frame.

        Its forward there re-runs every other object without a prompt on that frame (tracking it
        there, even one created later), then encodes the memory of all of them and of the
        prompted object (`prompted`) in one batch, in session order, with ONE is_mask_from_pts
        flag, true because of the prompt: every mask enters memory binarised. Returns the other
        objects' outputs to store, by id, and under `obj_id` {"memory": (features, positions)}.
        """
        import torch

        multimask = self.lib.use_multimask(False, None)
        decoded: dict[int, Decoded] = {}
        known = self.object_ids
        for other in [*known, *([] if obj_id in known else [obj_id])]:
            if other == obj_id:
                decoded[other] = prompted
                continue
            idx = self._idx(other)
            if frame_index in self.lib.conditioning_outputs(idx):
                continue  # the library re-uses a prompted frame's output as it is
            memory, memory_pos, n_ptr, n_spatial = self._memory_inputs(other, frame_index)
            pix_feat = self.steps.attend(feats, memory, memory_pos, n_ptr, n_spatial)
            decoded[other] = self.steps.decode([*high_res, pix_feat], multimask=multimask)
        order = list(decoded)
        masks = torch.cat([decoded[o].high_res for o in order])
        scores = torch.cat([decoded[o].object_score_logits for o in order])
        spans, encoded = self.steps.encode_objects(
            feats, masks, scores, True, self.steps.memory_encoder_batches
        )
        result: dict[int, dict[str, Any]] = {}
        for (start, stop), (maskmem, maskmem_pos) in zip(spans, encoded, strict=True):
            for j, other in enumerate(order[start:stop]):
                memory_pair = (
                    self.steps.memory_slice(maskmem, j),
                    self.steps.memory_slice(maskmem_pos, j),
                )
                if other == obj_id:
                    result[other] = {"memory": memory_pair}
                    continue
                out = decoded[other]
                result[other] = self.lib.output(
                    out.object_pointer, out.object_score_logits, *memory_pair
                )
        return result

    def remove_object(self, obj_id: int) -> None:
        """Forget `obj_id` and every output it had (unknown ids are ignored)."""
        if obj_id not in self.object_ids:
            return
        self.lib.remove_object(obj_id)
        self._prompts.pop(obj_id, None)
        self._tracked.pop(obj_id, None)
        self._references.pop(obj_id, None)
        self._next_reference.pop(obj_id, None)

    # ------------------------------------------------------------------ references
    def add_reference(
        self,
        obj_id: int,
        pixel_values: torch.Tensor,
        *,
        points: Sequence[Sequence[float]] = (),
        labels: Sequence[int] = (),
        box: Sequence[float] | None = None,
        mask: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> tuple[int, TrackedMask]:
        """Create `obj_id`, or add to it, from a region shown on an image that is NOT a frame.

        The image (a photo, another camera's view) is encoded once and the prompt decoded on it
        as on a conditioning frame (without memory; a mask alone is the object's mask); the
        memory encoder then turns the region into a memory entry (spatial memory + object
        pointer), which is all that is kept: the image and its features are not.

        Where a reference sits in time: it behaves as a prompted (conditioning) frame standing
        just before the first frame its object is tracked on (or corrected on) after it was
        added: its index `at` is that frame's index - 1, set then (`_memory_inputs`). It is
        attended like a conditioning frame (spatial memory with the conditioning temporal
        encoding; object pointer at temporal offset frame_index - at), ahead of the object's
        prompted frames and in addition to them. So a reference made of frame 0 of a clip, then
        frames 1..N streamed, tracks as a prompt on frame 0 of the stream would.

        It is apart from the stream's frames: no frame index names it (`has_frame`, prompts and
        `latest_frame` ignore it), the memory window never prunes it, and prompts'
        `max_conditioning_frames` never evict it; its own bound is `max_references` per object
        (the oldest is dropped beyond). May be called before the first frame.

        Args:
            obj_id: a new id creates an object (tracked from the next frame on); a known one
                gains a reference (its other memory stays).
            pixel_values: (1, 3, S, S) or (3, S, S) preprocessed reference image.
            points, labels, box, mask: as `add_prompt`, on the reference image in model input
                pixels (points are not merged with any earlier prompt).
            multimask: return the decoder's candidate masks (best first).
        Returns: (the reference's id within the object, increasing from 1; its mask on the
            reference image).
        Raises: PromptError for an empty prompt; ValueError for pixels of the wrong shape.
        """
        import torch

        _check_prompt(points, labels, box, mask)
        pixels = self.steps.as_pixels(pixel_values)
        with torch.inference_mode():
            feats = self.steps.encode(pixels)
            high_res = self.steps.high_res(feats)
            point_prompt = None
            if mask is None or len(points) or box is not None:
                point_prompt = _PointPrompt.build(points, labels, box)
            out, candidates = self._decode_prompt(
                feats, high_res, point_prompt, mask, multimask, None
            )
            maskmem, maskmem_pos = self.steps.encode_memory(
                feats, out.high_res, out.object_score_logits, from_prompt=True
            )
        del feats, high_res  # nothing of the image is kept
        # Commit (nothing above changed the tracker's state).
        self.lib.object_index(obj_id)  # created when new
        self._tracked.setdefault(obj_id, set())
        reference = self._next_reference.get(obj_id, 1)
        self._next_reference[obj_id] = reference + 1
        refs = self._references.setdefault(obj_id, {})
        refs[reference] = _Reference(
            self.lib.output(out.object_pointer, out.object_score_logits, maskmem, maskmem_pos)
        )
        while len(refs) > self.max_references:
            del refs[min(refs)]
        return reference, out.mask(0, candidates=candidates)

    def remove_reference(self, obj_id: int, reference: int) -> None:
        """Forget one reference of `obj_id`; the object stays, tracked from its other memory.

        Raises PromptError for an unknown object or reference, and for the last reference of
        an object that has no prompted frame: SAM tracks from a prompted frame or a reference,
        never from tracked frames alone (remove the object instead); the object is kept.
        """
        refs = self._references.get(obj_id, {})
        if obj_id not in self.object_ids:
            raise PromptError(f"object {obj_id} is not tracked")
        if reference not in refs:
            raise PromptError(
                f"object {obj_id} has no reference {reference} (its references: "
                f"{sorted(refs) or 'none'})"
            )
        if len(refs) == 1 and not self.has_prompted_frame(obj_id):
            raise PromptError(
                f"reference {reference} is all object {obj_id} is tracked from (it has no "
                "prompted frame): remove the object instead, or prompt it first"
            )
        del refs[reference]

    def has_prompted_frame(self, obj_id: int) -> bool:
        """Whether `obj_id` has a prompted (conditioning) frame of the stream: what SAM tracks
        from besides its references."""
        return obj_id in self.object_ids and bool(self.lib.conditioning_outputs(self._idx(obj_id)))

    def references(self, obj_id: int) -> list[int]:
        """The reference ids `obj_id` keeps, oldest first ([] for an unknown object)."""
        return sorted(self._references.get(obj_id, {}))

    def reference_positions(self, obj_id: int) -> dict[int, int | None]:
        """Where each reference of `obj_id` stands in time, by id: the frame index it is
        attended as (a conditioning frame there), None until first attended."""
        return {i: ref.at for i, ref in sorted(self._references.get(obj_id, {}).items())}

    def _memory_inputs(
        self, obj_id: int, frame_index: int
    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """`steps.memory_inputs` of `obj_id` on `frame_index`, with its references; a reference
        first attended here is placed at frame_index - 1 (see `add_reference`)."""
        refs = self._references.get(obj_id, {})
        for ref in refs.values():
            if ref.at is None:
                ref.at, ref.bound_on = frame_index - 1, frame_index
        placed = [(ref.at, ref.output) for ref in refs.values() if ref.at is not None]
        return self.steps.memory_inputs(self._idx(obj_id), frame_index, placed)

    def segment(
        self,
        pixel_values: torch.Tensor | None = None,
        *,
        features: Sequence[torch.Tensor] | None = None,
        points: Sequence[Sequence[float]] = (),
        labels: Sequence[int] = (),
        box: Sequence[float] | None = None,
        mask: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> TrackedMask:
        """One-shot segmentation of one image, as SAM does on a still image; state untouched.

        A mask here is a dense hint to the decoder (SAM's mask prompt), never copied as output.
        `features` (fpn_hidden_states) skips the encoder, e.g. for the latest frame.
        """
        import torch

        _check_prompt(points, labels, box, mask)
        with torch.inference_mode():
            if features is None:
                if pixel_values is None:
                    raise ValueError("segment needs pixel_values or features")
                feats = self.steps.encode(self.steps.as_pixels(pixel_values))
            else:
                feats = list(features)
            prompt = _PointPrompt.build(points, labels, box)
            coords = labels_t = None
            if prompt.coords:
                coords = torch.tensor([[prompt.coords]], dtype=self.dtype, device=self.device)
                labels_t = torch.tensor([[prompt.labels]], dtype=torch.int32, device=self.device)
            dense = self.steps.dense_prompt(mask) if mask is not None else None
            out = self.steps.decode(
                [*self.steps.high_res(feats), self.steps.no_memory(feats)],
                points=coords,
                labels=labels_t,
                dense=dense,
                multimask=multimask or len(prompt.coords) <= 1,
            )
            return out.mask(0, candidates=multimask)

    def segment_everything(
        self, features: Sequence[torch.Tensor], options: EverythingOptions
    ) -> list[TrackedMask]:
        """Every object on a frame from its cached features, as SAM's automatic mask generator.

        A grid of single positive clicks (`options.points_per_side` squared) goes through the
        prompt encoder and the mask decoder, `options.chunk` clicks per call on the same
        features (the image encoder does not run); each click's K candidate masks are filtered
        by `everything.keep_masks` (the filters per chunk, then mask NMS). State untouched.
        `options.coarse_to_fine`: the grid in `grid_levels` passes, NMS after each, and a point
        inside a mask kept so far is not clicked. Returns the kept masks, best predicted IoU
        first (`object_pointer` is its click's, `iou` the mask's predicted IoU).
        """
        import torch

        from seg_ros.engine.sam.detector import mask_nms

        feats = list(features)
        with torch.inference_mode():
            high_res = self.steps.high_res(feats)
            top = self.steps.no_memory(feats)
            side = options.points_per_side
            grid = grid_points(side, self.image_size).to(self.device, self.dtype)
            levels = grid_levels(side) if options.coarse_to_fine else [list(range(side * side))]
            logits, scores, object_logits, pointers = [], [], [], []
            all_logits = all_scores = torch.zeros(0)
            kept: list[int] = []
            for level in levels:
                todo = torch.tensor(level, dtype=torch.long, device=self.device)
                if kept:
                    # Coarse to fine: a point inside a kept mask is not clicked.
                    todo = todo[~self._inside(grid[todo], all_logits[kept])]
                for start in range(0, todo.numel(), options.chunk):
                    clicks = grid[todo[start : start + options.chunk]]
                    # Same features for every click: the decoder's image side runs once a
                    # chunk, and a click whose masks all fail the predicted-IoU filter below
                    # is not upscaled (the filter, applied first: same answer).
                    out = self.steps.decode_clicks(
                        high_res, top, clicks, min_iou=options.pred_iou_threshold
                    )
                    k = out.multimasks.shape[1]
                    chunk_logits = out.multimasks.flatten(0, 1)
                    chunk_scores = out.iou.reshape(-1)
                    # Filter each chunk at once: only the survivors are kept and reach NMS.
                    good = passes_filters(chunk_logits, chunk_scores, options)
                    logits.append(chunk_logits[good])
                    scores.append(chunk_scores[good])
                    object_logits.append(
                        out.object_score_logits.reshape(-1).repeat_interleave(k)[good]
                    )
                    pointers.append(out.object_pointer[:, 0].repeat_interleave(k, dim=0)[good])
                if not logits:
                    continue
                all_logits = torch.cat(logits)
                all_scores = torch.cat(scores)
                if all_logits.shape[0] > 0:
                    kept = mask_nms(
                        (all_logits.float() > 0).cpu(), all_scores.float().cpu(), options.nms_iou
                    )
            if not kept:
                return []
            object_all = torch.cat(object_logits)
            pointer_all = torch.cat(pointers)
            return [
                TrackedMask(
                    mask_logits=all_logits[i],
                    object_score_logit=float(object_all[i]),
                    iou=float(all_scores[i]),
                    object_pointer=pointer_all[i],
                )
                for i in kept
            ]

    def _inside(self, points: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(N,) bool: whether each (N, 2) XY point of the input square lies inside one of the
        (M, h, w) masks (logit > 0 at the low-resolution pixel that contains it)."""
        union = (logits > 0).any(dim=0)
        h, w = union.shape
        scale = self.image_size
        cols = (points[:, 0] * w / scale).long().clamp(0, w - 1)
        rows = (points[:, 1] * h / scale).long().clamp(0, h - 1)
        return union[rows, cols]

    def encode_image(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The image features of an image that is not a frame (one encoder pass, nothing kept),
        for several one-shot prompts on it (`segment(features=...)`)."""
        import torch

        with torch.inference_mode():
            return self.steps.encode(self.steps.as_pixels(pixel_values))

    def frame_features(self, frame_index: int) -> list[torch.Tensor]:
        """A frame's image features (cached, or re-encoded once from its kept input).

        Raises PromptError when the frame is no longer in memory.
        """
        return self._features_of(frame_index)

    def latest_features(self) -> list[torch.Tensor] | None:
        """The latest frame's image features (for `segment` on that frame), encoded on demand.

        None before the first frame. (The latest frame's input is always kept: prompt_frames
        >= 1, so a lazily stored frame can be encoded here.)
        """
        if self._latest is None:
            return None
        return self._features_of(self._latest)

    # ------------------------------------------------------------------ memory bound
    def _prune(self) -> None:
        """Forget what the memory plan says no allowed prompt or next frame can reach."""
        if self._latest is None:
            return
        plan, latest = self.memory, self._latest
        for index in plan.stale_frames(latest, self._frames):
            del self._frames[index]
        for index in plan.stale_features(latest, self._features):
            del self._features[index]
        for obj_id in self.object_ids:
            outputs = self.lib.tracked_outputs(self._idx(obj_id))
            forget, pointer_only = plan.stale_outputs(
                latest, {i: "maskmem_features" in o for i, o in outputs.items()}
            )
            for index in forget:
                del outputs[index]
            for index in pointer_only:
                # The pointer window is longer than the spatial one: keep only the pointer.
                outputs[index] = {"object_pointer": outputs[index]["object_pointer"]}
            tracked = self._tracked.get(obj_id, set())
            for index in plan.stale_frames(latest, tracked):
                tracked.discard(index)
            prompts = self._prompts.get(obj_id, {})
            for index in plan.stale_frames(latest, prompts):
                del prompts[index]

    def _limit_conditioning(self, obj_id: int) -> None:
        """Keep the newest `max_conditioning_frames` prompted frames of `obj_id`."""
        conditioning = self.lib.conditioning_outputs(self._idx(obj_id))
        for index in self.memory.surplus_conditioning(conditioning):
            del conditioning[index]

    def held_bytes(self) -> int:
        """Bytes of tensor storage the tracker holds: frames, features, per-object outputs.

        Counted from the tensors themselves, so unlike RSS it does not depend on what the
        allocator keeps; the model's weights are not included.
        """
        references = [ref.output for refs in self._references.values() for ref in refs.values()]
        return tensor_bytes(
            self._frames, self._features, self.lib.all_outputs(), self.steps.pos, references
        )

    def stats(self) -> dict[str, float]:
        """What the tracker holds now (frames, features, outputs) and its work counters."""
        cond = full = pointer = 0
        for obj_id in self.object_ids:
            idx = self._idx(obj_id)
            cond = max(cond, len(self.lib.conditioning_outputs(idx)))
            tracked = self.lib.tracked_outputs(idx)
            full = max(full, sum("maskmem_features" in o for o in tracked.values()))
            pointer = max(pointer, len(tracked))
        stats = {
            "objects": float(len(self.object_ids)),
            "frames_in_memory": float(len(self._frames)),
            "feature_frames": float(len(self._features)),
            "max_conditioning_per_object": float(cond),
            "max_full_outputs_per_object": float(full),
            "max_pointer_outputs_per_object": float(pointer),
            "max_references_per_object": float(
                max((len(r) for r in self._references.values()), default=0)
            ),
            "memory_frames": float(self.memory.memory_frames),
            "prompt_frames": float(self.memory.prompt_frames),
            "held_mb": self.held_bytes() / 2**20,
        }
        stats.update({k: float(v) for k, v in self.counters.items()})
        return stats

    # ------------------------------------------------------------------ helpers
    def _idx(self, obj_id: int) -> int:
        """The session's index of a known object id."""
        return self.lib.object_index(obj_id)

    def _features_of(self, frame_index: int) -> list[torch.Tensor]:
        """Cached features of a frame in memory; a past frame is re-encoded (once) on demand."""
        import torch

        feats = self._features.get(frame_index)
        if feats is not None:
            return feats
        if frame_index not in self._frames:
            raise PromptError(f"frame {frame_index} is no longer in memory")
        with torch.inference_mode():
            feats = self.steps.encode(self._frames[frame_index])
        # Keep the latest frame's features and this one (a second late prompt is likely).
        latest = frame_index if self._latest is None else self._latest
        keep = self.memory.features_after_encoding(latest, frame_index)
        self._features = {i: f for i, f in self._features.items() if i in keep}
        self._features[frame_index] = feats
        return feats

    def _merge_points(
        self,
        obj_id: int,
        frame_index: int,
        points: Sequence[Sequence[float]],
        labels: Sequence[int],
        box: Sequence[float] | None,
    ) -> _PointPrompt:
        """This prompt's points joined to the earlier ones on the same frame (a box restarts)."""
        previous = self._prompts.get(obj_id, {}).get(frame_index)
        return _PointPrompt.build(points, labels, box, previous)

    def _pop_outputs(self, idx: int, frame_index: int) -> dict[bool, Any]:
        found = {}
        for conditioning, outputs in (
            (True, self.lib.conditioning_outputs(idx)),
            (False, self.lib.tracked_outputs(idx)),
        ):
            if frame_index in outputs:
                found[conditioning] = outputs.pop(frame_index)
        return found

    def _restore_outputs(self, idx: int, frame_index: int, previous: dict[bool, Any]) -> None:
        for conditioning, value in previous.items():
            if conditioning:
                self.lib.conditioning_outputs(idx)[frame_index] = value
            else:
                self.lib.tracked_outputs(idx)[frame_index] = value
