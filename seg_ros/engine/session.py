"""The streaming session: object ids, labels, prompts at any time, one frame at a time.

The session is what a node (or any program) talks to. It is thread-safe: one lock serialises
frames and prompts, so a prompt lands between two frames and never sees a half-updated state.
It never raises on bad input other than `SegRosError` subclasses, and a refused request leaves
every tracked object as it was.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from seg_ros.engine.backends.base import TEXT_BACKENDS, Backend, MaskOutput, Model
from seg_ros.engine.concepts import (
    Detection,
    Member,
    QueryInfo,
    QueryOptions,
    StandingQuery,
    associate,
    mask_iou,
    snapshot,
    split_phrases,
)
from seg_ros.engine.errors import (
    BatchStepError,
    CapacityError,
    FrameError,
    NoFrameError,
    PromptError,
    SegRosError,
    UnknownObjectError,
    UnsupportedPromptError,
)
from seg_ros.engine.prompts import MAX_TEXT_LENGTH, Prompt
from seg_ros.engine.results import FrameResult, ObjectMask
from seg_ros.engine.sam.everything import EverythingOptions
from seg_ros.engine.types import BoolArray, RgbImage

#: What a backend answers for a new object (a MaskOutput, or a ReferenceOutput).
_Output = TypeVar("_Output")

#: Mask values are uint16 in the label image; 0 is background.
MAX_MASK_VALUE = 65535
#: Longest accepted object label.
MAX_LABEL_LENGTH = 256
#: Most phrases in a segment-everything vocabulary (each is one detector pass).
MAX_VOCABULARY = 16
#: A segment-everything mask takes a phrase's name when a detection of it overlaps it this much.
VOCABULARY_IOU = 0.5
#: Backends that take a reference from another image; named in the error another one gives.
REFERENCE_BACKENDS = ("classic", "sam2", "sam3")


@dataclass(frozen=True)
class PromptResult:
    """What a prompt did: the object it created or refined, as it looks on the prompted frame."""

    object_id: str
    object: ObjectMask
    frame_index: int
    stamp_ns: int


@dataclass(frozen=True, eq=False)
class ReferenceResult:
    """What `add_reference` did: the object the reference belongs to and what was taken from it.

    Attributes:
        object_id: the object (new, or the one named); listed with visible=False until a frame
            of the stream shows it.
        reference: the reference's id within the object (for `remove_reference`), from 1.
        mask: (H, W) bool of the reference image: the region the prompt designated there.
        score: how sure the backend is of that region, in [0, 1].
        label: the object's label ("" when none was given).
    """

    object_id: str
    reference: int
    mask: BoolArray
    score: float
    label: str


@dataclass(frozen=True)
class QueryResult:
    """What `add_query` did: the query's id and the objects it found on the latest frame."""

    query_id: str
    objects: list[ObjectMask]


@dataclass
class _Track:
    mask_value: int
    label: str
    query: str = ""  # the standing query that made it ("" = a prompt)


def check_image(image: np.ndarray) -> RgbImage:
    """Validate an RGB uint8 (H, W, 3) frame; return it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise FrameError(f"a frame must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise FrameError(f"a frame must be RGB uint8 (H, W, 3); got {image.dtype} {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise FrameError(f"frame of {image.shape[1]}x{image.shape[0]} pixels is too small")
    return np.ascontiguousarray(image)


def _check_label(label: str) -> str:
    if len(label) > MAX_LABEL_LENGTH:
        raise PromptError(f"label is longer than {MAX_LABEL_LENGTH} characters")
    return label.strip()


class SegmentationSession:
    """Tracks prompted objects over a live stream with a backend's bounded memory.

    Args:
        backend: the model.
        max_objects: most objects tracked at once; more is refused with CapacityError.
        score_threshold: an object whose score is below it is reported not visible.
    """

    def __init__(
        self, backend: Backend, *, max_objects: int = 16, score_threshold: float = 0.0
    ) -> None:
        if max_objects < 1:
            raise ValueError("max_objects must be >= 1")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError("score_threshold must be in [0, 1]")
        self.backend = backend
        self.max_objects = max_objects
        self.score_threshold = score_threshold
        self._lock = threading.RLock()
        self._tracks: dict[int, _Track] = {}
        self._next_value = 1
        self._frame_index = -1
        self._size: tuple[int, int] | None = None
        # (stamp_ns, frame_index) of the frames the backend still holds, newest last.
        self._stamps: deque[tuple[int, int]] = deque(maxlen=max(1, backend.memory_frames))
        self._latest_image: RgbImage | None = None
        self._latest: FrameResult | None = None
        self._closed = False
        # Standing queries (engine/concepts.py), in the order they were added.
        self._queries: dict[str, StandingQuery] = {}
        self._next_query = 1

    # ------------------------------------------------------------------ queries
    @property
    def object_ids(self) -> list[str]:
        with self._lock:
            return [str(v) for v in self._tracks]

    @property
    def frame_index(self) -> int:
        """Index of the latest processed frame (-1 before the first)."""
        return self._frame_index

    @property
    def latest(self) -> FrameResult | None:
        return self._latest

    @property
    def latest_image(self) -> RgbImage | None:
        return self._latest_image

    def label_of(self, object_id: str) -> str:
        with self._lock:
            return self._track(object_id)[1].label

    @property
    def queries(self) -> list[QueryInfo]:
        """The standing queries, oldest first, with their objects and what they did so far."""
        with self._lock:
            return [snapshot(q) for q in self._queries.values()]

    # ------------------------------------------------------------------ frames
    def step(self, image: RgbImage, stamp_ns: int = 0) -> FrameResult:
        """Process the next frame (RGB uint8 HxWx3); return every tracked object on it.

        A frame of another size than the stream's is refused while objects are tracked (their
        memory is in the old geometry); with nothing tracked the stream takes the new size.
        """
        image = check_image(image)
        with self._lock:
            index = self._begin_step(image)
            outputs = self.backend.step(index, image)
            return self._end_step(index, image, stamp_ns, outputs)

    def _begin_step(self, image: RgbImage) -> int:
        """Checks before a frame (under the lock); the frame's index."""
        self._check_open()
        size = (int(image.shape[0]), int(image.shape[1]))
        if self._size is not None and size != self._size:
            if self._tracks:
                raise FrameError(
                    f"frame is {size[1]}x{size[0]} but the tracked objects live on "
                    f"{self._size[1]}x{self._size[0]} frames; reset to change resolution"
                )
            self._clear_stream()
        return self._frame_index + 1

    def _end_step(
        self, index: int, image: RgbImage, stamp_ns: int, outputs: dict[int, MaskOutput]
    ) -> FrameResult:
        """Only a frame the backend took advances the stream (under the lock)."""
        self._frame_index = index
        self._size = (int(image.shape[0]), int(image.shape[1]))
        self._stamps.append((int(stamp_ns), index))
        self._latest_image = image
        if self._queries:
            outputs = self._run_queries(index, int(stamp_ns), dict(outputs))
        result = self._frame_result(index, int(stamp_ns), outputs)
        self._latest = result
        return result

    # ------------------------------------------------------------------ prompts
    def add_prompt(
        self,
        prompt: Prompt,
        object_id: str = "",
        *,
        label: str = "",
        stamp_ns: int = 0,
        multimask: bool = False,
    ) -> PromptResult:
        """Create a new object (`object_id` empty) or refine an existing one.

        `stamp_ns` names the frame the prompt was made on (0 = latest); it must still be in
        memory. A prompt with text and geometry picks, among the text's matches, the one the
        geometry designates, and refines it with that geometry.
        """
        label = _check_label(label)
        with self._lock:
            self._check_open()
            index, stamp = self._resolve_stamp(stamp_ns)
            assert self._size is not None  # set with the first frame
            prompt.check_fits(*self._size)
            if not prompt.has_geometry:
                raise PromptError("this request needs points, a box or a mask; use add_text")
            if multimask and not self.backend.capabilities.multimask:
                raise UnsupportedPromptError(
                    f"the '{self.backend.name}' backend gives one mask per prompt (no multimask)"
                )
            if object_id:
                value, track = self._track(object_id)
                new = False
            else:
                value = self._allocate()
                track = _Track(value, label)
                new = True
            geometry = self._compose_text(index, prompt) if prompt.text else prompt
            if new:
                output = self._create(index, value, geometry, multimask)
                self._tracks[value] = track
            else:
                output = self.backend.add_prompt(index, value, geometry, multimask)
            if label:
                track.label = label
            elif not track.label and prompt.text:
                track.label = prompt.text
            obj = self._object(value, output)
            self._update_latest(index, obj)
            return PromptResult(str(value), obj, index, stamp)

    def add_reference(
        self,
        image: RgbImage,
        prompt: Prompt,
        object_id: str = "",
        *,
        label: str = "",
        multimask: bool = False,
    ) -> ReferenceResult:
        """Show the session an object on `image`, an image that is NOT a frame of the stream (a
        photo, another camera, a frame saved earlier): the backend searches for it on every
        frame that follows and tracks it once found, with no prompt on the stream.

        image: RGB uint8 (H, W, 3), any size. prompt: a mask, a box and / or points in pixels of
        `image` (no text). `object_id` empty creates a new object (it counts against
        max_objects and is listed with visible=False until found); otherwise the reference is
        added to that object (its tracking goes on). May be called before the first frame.
        Raises UnsupportedPromptError for a backend without references (nothing created).
        """
        label = _check_label(label)
        image = check_image(image)
        with self._lock:
            self._check_open()
            if not self.backend.capabilities.references:
                raise UnsupportedPromptError(
                    f"the '{self.backend.name}' backend cannot take a reference from another "
                    f"image; use one that can ({', '.join(REFERENCE_BACKENDS)})"
                )
            if prompt.text or not prompt.has_geometry:
                raise PromptError(
                    "a reference needs a mask, a box or points on the reference image (no text)"
                )
            prompt.check_fits(int(image.shape[0]), int(image.shape[1]))
            if multimask and not self.backend.capabilities.multimask:
                raise UnsupportedPromptError(
                    f"the '{self.backend.name}' backend gives one mask per prompt (no multimask)"
                )
            if object_id:
                value, track = self._track(object_id)
                output = self.backend.add_reference(value, image, prompt, multimask)
            else:
                value = self._allocate()
                track = _Track(value, label)
                output = self._new_object(
                    value, lambda: self.backend.add_reference(value, image, prompt, multimask)
                )
                self._tracks[value] = track
                latest = self._latest
                if latest is not None:  # listed from now on, not visible until found
                    empty = np.zeros((latest.height, latest.width), dtype=bool)
                    self._update_latest(
                        latest.frame_index, self._object(value, MaskOutput(empty, 0.0, False))
                    )
            if label:
                track.label = label
            return ReferenceResult(
                str(value), int(output.reference), output.mask, float(output.score), track.label
            )

    def remove_reference(self, object_id: str, reference: int = 0) -> list[int]:
        """Forget reference `reference` of an object (0 = all of them); the object stays, tracked
        from its other memory. Returns the references removed.

        PromptError, nothing removed: an unknown reference, or the last references of an object
        they are all that finds or tracks (created from a reference and not found yet, or, on
        SAM, never prompted on the stream): remove the object instead."""
        with self._lock:
            self._check_open()
            value, _ = self._track(object_id)
            known = self.backend.references(value)
            if reference == 0 and not known:
                raise PromptError(f"object {object_id} has no references")
            removing = known if reference == 0 else [int(reference)]
            if (
                known
                and set(known) <= set(removing)
                and not self.backend.tracked_apart_from_references(value)
            ):
                which = "its references are" if len(known) > 1 else f"reference {known[0]} is"
                raise PromptError(
                    f"{which} all object {object_id} is tracked from (it was not prompted on "
                    "the stream or found since): remove the object instead, or prompt it first"
                )
            for ref in removing:
                self.backend.remove_reference(value, ref)
            return removing

    def references(self, object_id: str) -> list[int]:
        """The reference ids an object keeps, oldest first."""
        with self._lock:
            self._check_open()
            value, _ = self._track(object_id)
            return self.backend.references(value)

    def add_text(
        self, text: str, *, score_threshold: float | None = None, max_objects: int = 0
    ) -> list[ObjectMask]:
        """Add every instance matching `text` on the latest frame as a new labelled object.

        No match is a normal answer: an empty list.
        """
        text = " ".join(str(text).split())
        if not text:
            raise PromptError("text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise PromptError(f"text is longer than {MAX_TEXT_LENGTH} characters")
        if max_objects < 0:
            raise PromptError("max_objects must be >= 0")
        threshold = self._threshold(score_threshold)
        with self._lock:
            self._check_open()
            index, _ = self._resolve_stamp(0)
            room = self.max_objects - len(self._tracks)
            if room <= 0:
                raise CapacityError(f"already tracking max_objects={self.max_objects} objects")
            limit = room if max_objects == 0 else min(room, max_objects)
            detections = self.backend.detect(index, text, threshold, limit)[:limit]
            return self._track_masks(index, detections, text)

    def add_query(
        self,
        text: str | list[str] | tuple[str, ...],
        options: QueryOptions | None = None,
        *,
        label: str = "",
        score_threshold: float | None = None,
    ) -> QueryResult:
        """Register a standing query: `text` (one phrase, several separated by ';', or a list)
        keeps finding new instances on later frames (policy: engine/concepts.py).

        Runs the detector on the latest frame at once when there is one (its matches are the
        objects returned); before the first frame it only registers the query, which then runs
        from the first frame on. The objects are labelled `label` (default: the text) and carry
        the query's id in `ObjectMask.query`. `score_threshold` (0 / None = the session's) is
        the least score a detection needs to confirm or re-find an object; a new object needs
        `options.new_instance_threshold`.

        Raises UnsupportedPromptError for a backend without text (nothing is registered).
        """
        phrases = split_phrases(text)
        label = _check_label(label) or "; ".join(phrases)
        threshold = self._threshold(score_threshold)
        options = options or QueryOptions()
        with self._lock:
            self._check_open()
            if not self.backend.capabilities.text:
                raise UnsupportedPromptError(
                    f"the '{self.backend.name}' backend has no text detector: a standing query "
                    "needs one (sam3, or a backend with a text detector)"
                )
            query_id = f"q{self._next_query}"
            query = StandingQuery(
                query_id, phrases, label, options, threshold, start_frame=self._frame_index + 1
            )
            found: list[ObjectMask] = []
            if self._stamps:
                index, stamp = self._resolve_stamp(0)
                query.start_frame = index
                latest = self._latest
                seen = {}
                if latest is not None and latest.frame_index == index:
                    seen = {o.mask_value: o.mask for o in latest.objects if o.visible}
                try:
                    changed = self._detect_for(query, index, stamp, seen)
                except BaseException:
                    for value in query.members:  # nothing registered: take its objects back
                        self.backend.remove_object(value)
                        self._tracks.pop(value, None)
                    raise
                found = [self._object(value, out) for value, out in changed.items()]
                for obj in found:
                    self._update_latest(index, obj)
            self._queries[query_id] = query
            self._next_query += 1
            return QueryResult(query_id, found)

    def remove_query(self, query_id: str, keep_objects: bool = True) -> list[str]:
        """Stop a standing query. Its objects stay tracked as ordinary objects (`keep_objects`)
        or are removed. Returns their ids. Raises UnknownObjectError for an unknown query."""
        with self._lock:
            self._check_open()
            query = self._queries.get(query_id)
            if query is None:
                known = ", ".join(self._queries) or "none"
                raise UnknownObjectError(f"unknown query id '{query_id}' (queries: {known})")
            del self._queries[query_id]
            ids = [str(v) for v in sorted(query.members)]
            if not keep_objects:
                for value in sorted(query.members):
                    if value in self._tracks:
                        self.remove_object(str(value))
            return ids

    def segment_everything(
        self,
        options: EverythingOptions | None = None,
        *,
        track: bool = False,
        label: str = "",
        vocabulary: Sequence[str] = (),
    ) -> list[ObjectMask]:
        """Every object on the latest frame (SAM's automatic mask generator), best first.

        With `track`, each becomes a new tracked object (all or nothing): more masks than the
        free room under max_objects is refused with CapacityError, nothing created. Without it
        tracking is untouched and the objects have no id (like `segment`).

        `vocabulary` (open-vocabulary labels, e.g. ["person", "chair", "mug"]) names each mask
        by the phrase whose detection on the same frame overlaps it best (mask IoU >=
        `VOCABULARY_IOU`); the others keep `label`. It needs a backend with text (sam3, or sam2
        with a text_detector): one detector pass per phrase on the frame's cached features.
        """
        label = _check_label(label)
        phrases = _check_vocabulary(vocabulary)
        with self._lock:
            self._check_open()
            index, _ = self._resolve_stamp(0)
            if phrases and not self.backend.capabilities.text:
                raise UnsupportedPromptError(
                    f"the '{self.backend.name}' backend cannot name masks from a vocabulary: "
                    f"it has no text prompts ({', '.join(TEXT_BACKENDS)} have)"
                )
            found = self.backend.segment_everything(index, options or EverythingOptions())
            if phrases and found:
                detections = [
                    (phrase, det.mask)
                    for phrase in phrases
                    for det in self.backend.detect(index, phrase, self.score_threshold, 0)
                ]
                named = vocabulary_labels([out.mask for out in found], detections)
                found = [replace(out, label=name) for out, name in zip(found, named, strict=True)]
            if track:
                room = self.max_objects - len(self._tracks)
                if len(found) > room:
                    raise CapacityError(
                        f"segment everything found {len(found)} objects but only {room} more "
                        f"fit under max_objects={self.max_objects}; raise the thresholds or "
                        "min_area, or remove objects"
                    )
                return self._track_masks(index, found, label)
        return _untracked(found, "", self.score_threshold, fallback=label)

    def remove_object(self, object_id: str) -> None:
        with self._lock:
            self._check_open()
            value, _ = self._track(object_id)
            self.backend.remove_object(value)
            del self._tracks[value]
            for query in self._queries.values():
                query.members.pop(value, None)
            if self._latest is not None:
                kept = tuple(o for o in self._latest.objects if o.mask_value != value)
                self._latest = FrameResult(
                    self._latest.frame_index,
                    self._latest.stamp_ns,
                    self._latest.height,
                    self._latest.width,
                    kept,
                )

    def reset(self) -> None:
        """Forget every object and frame; the next frame starts a new stream.

        Ids keep counting: an object created after a reset never takes the id of one from
        before it, so a consumer holding an old id cannot mistake a new object for it.
        Standing queries stay (they are configuration, e.g. the node's `concepts`): they
        forget their objects and find instances again from the next frame.
        """
        with self._lock:
            self._check_open()
            self._clear_stream()
            self._tracks.clear()
            for query in self._queries.values():
                query.members.clear()
                query.start_frame = self._frame_index + 1

    def segment(
        self,
        prompt: Prompt,
        image: RgbImage | None = None,
        *,
        multimask: bool = False,
        score_threshold: float | None = None,
        label: str = "",
    ) -> list[ObjectMask]:
        """One-shot segmentation of `image` (None = the latest frame); tracking is untouched."""
        label = _check_label(label)
        threshold = self._threshold(score_threshold)
        with self._lock:
            self._check_open()
            if image is None:
                if self._latest_image is None:
                    raise NoFrameError("no frame received yet: send an image with the request")
                image = self._latest_image
            else:
                image = check_image(image)
            prompt.check_fits(int(image.shape[0]), int(image.shape[1]))
            if prompt.text and not self.backend.capabilities.text:
                self.backend.detect(self._frame_index, prompt.text, threshold, 0)  # raises
            if multimask and not self.backend.capabilities.multimask:
                raise UnsupportedPromptError(
                    f"the '{self.backend.name}' backend gives one mask per prompt (no multimask)"
                )
            outputs = self.backend.segment(image, prompt, multimask, threshold)
        # A given label names every answer; else a text detector's phrase, else the text.
        return _untracked(outputs, label, threshold, fallback=prompt.text)

    def close(self) -> None:
        """Free the backend. Idempotent; the session refuses work afterwards."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.backend.close()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        if self._closed:
            raise FrameError("the session is closed")

    def _threshold(self, value: float | None) -> float:
        if value is None or value == 0.0:
            return self.score_threshold
        if not (0.0 <= value <= 1.0):  # also refuses NaN
            raise PromptError(f"score_threshold must be in [0, 1]; got {value}")
        return float(value)

    def _clear_stream(self) -> None:
        self.backend.reset()
        self._stamps.clear()
        self._latest = None
        self._latest_image = None
        self._size = None

    def _track(self, object_id: str) -> tuple[int, _Track]:
        try:
            value = int(object_id)
        except (TypeError, ValueError):
            value = -1
        track = self._tracks.get(value)
        if track is None or str(value) != object_id:
            known = ", ".join(str(v) for v in self._tracks) or "none"
            raise UnknownObjectError(f"unknown object id '{object_id}' (tracked: {known})")
        return value, track

    def _allocate(self) -> int:
        """The id the next new object gets; it is only used up once `_create` succeeds."""
        if len(self._tracks) >= self.max_objects:
            raise CapacityError(
                f"already tracking max_objects={self.max_objects} objects; remove one first"
            )
        # Ids increase and wrap at the uint16 limit, skipping live ones, so a downstream consumer
        # never sees a removed object's id come back soon after.
        value = self._next_value
        while value in self._tracks:
            value = value % MAX_MASK_VALUE + 1
        return value

    def _create(self, index: int, value: int, prompt: Prompt, multimask: bool) -> MaskOutput:
        """Give new object `value` to the backend from a prompt on frame `index`."""
        return self._new_object(
            value, lambda: self.backend.add_prompt(index, value, prompt, multimask)
        )

    def _new_object(self, value: int, make: Callable[[], _Output]) -> _Output:
        """`make()` creates object `value` in the backend. On failure the backend forgets it and
        the id stays free for the next object; on success the id is used up."""
        try:
            output = make()
        except BaseException:
            with contextlib.suppress(Exception):  # the original error is the one to report
                self.backend.remove_object(value)
            raise
        self._next_value = value % MAX_MASK_VALUE + 1
        return output

    def _track_masks(self, index: int, found: list[MaskOutput], label: str) -> list[ObjectMask]:
        """Each found mask becomes a new object on frame `index`, all or nothing."""
        created: list[tuple[int, MaskOutput]] = []
        try:
            for det in found:
                value = self._allocate()
                output = self._create(index, value, Prompt(mask=det.mask), False)
                # A detection's phrase ("person" of "person. red mug") names it, else `label`.
                self._tracks[value] = _Track(value, det.label or label)
                # A mask prompt is certain of itself: the finder's score is the confidence.
                created.append((value, replace(output, score=min(output.score, det.score))))
        except BaseException:
            # All or nothing: a failure on the k-th mask takes back the k-1 before it.
            for value, _ in created:
                self.backend.remove_object(value)
                del self._tracks[value]
            raise
        added = [self._object(value, output) for value, output in created]
        for obj in added:
            self._update_latest(index, obj)
        return added

    def _resolve_stamp(self, stamp_ns: int) -> tuple[int, int]:
        if not self._stamps:
            raise NoFrameError("no frame processed yet: prompts apply to a frame already seen")
        if stamp_ns == 0:
            stamp, index = self._stamps[-1]
            return index, stamp
        for stamp, index in reversed(self._stamps):
            if stamp == stamp_ns:
                if index != self._frame_index and not self.backend.capabilities.past_frames:
                    raise PromptError(
                        f"the '{self.backend.name}' backend takes prompts on the latest frame only"
                    )
                return index, stamp
        oldest, newest = self._stamps[0][0], self._stamps[-1][0]
        raise PromptError(
            f"no frame with stamp {stamp_ns} ns in memory (frames kept: {len(self._stamps)}, "
            f"stamps {oldest}..{newest} ns); use 0 for the latest frame"
        )

    def _compose_text(self, index: int, prompt: Prompt) -> Prompt:
        """Text + geometry: the match the geometry designates, refined by that geometry."""
        matches = self.backend.detect(index, prompt.text, self.score_threshold, 0, geometry=prompt)
        if not matches:
            return prompt.geometry_only()
        best = max(matches, key=lambda m: prompt.agreement(m.mask))
        if prompt.agreement(best.mask) <= 0.0:
            return prompt.geometry_only()
        return Prompt(
            points=prompt.points,
            point_labels=prompt.point_labels,
            box=prompt.box,
            mask=best.mask if prompt.mask is None else (best.mask & prompt.mask),
        )

    def _seen(self, out: MaskOutput) -> bool:
        """Whether an output counts as visible (the one rule for results and queries)."""
        return bool(out.visible and out.score >= self.score_threshold and out.mask.any())

    def _object(self, value: int, out: MaskOutput) -> ObjectMask:
        track = self._tracks.get(value)
        visible = self._seen(out)
        return ObjectMask(
            object_id=str(value),
            mask_value=value,
            label=track.label if track else "",
            score=float(out.score),
            visible=visible,
            mask=out.mask if visible else np.zeros_like(out.mask),
            candidates=out.candidates,
            query=track.query if track else "",
        )

    # ------------------------------------------------------------------ standing queries
    def _run_queries(
        self, index: int, stamp_ns: int, outputs: dict[int, MaskOutput]
    ) -> dict[int, MaskOutput]:
        """After the tracker's step on frame `index`: each query's detection (when due or when
        one of its objects was just lost), association and timeouts. Returns the outputs with
        re-found and new objects in and dropped ones out.

        A failing detector or prompt is counted in the query's stats (with its message) and
        does not drop the frame: the tracker's results for it are still good.
        """
        for query in list(self._queries.values()):
            just_lost = False
            for value, member in query.members.items():
                out = outputs.get(value)
                if out is not None and self._seen(out):
                    member.last_mask = out.mask
                    member.last_seen_frame, member.last_seen_ns = index, stamp_ns
                    member.lost = False
                else:
                    just_lost = just_lost or not member.lost
                    member.lost = True
            if query.due(index) or just_lost:
                seen = {v: o.mask for v, o in outputs.items() if self._seen(o)}
                try:
                    outputs.update(self._detect_for(query, index, stamp_ns, seen))
                except SegRosError as exc:
                    query.stats.errors += 1
                    query.stats.last_error = str(exc)
            for value, member in list(query.members.items()):
                if query.options.drop_lost and query.expired(member, index, stamp_ns):
                    self.backend.remove_object(value)
                    self._tracks.pop(value, None)
                    del query.members[value]
                    outputs.pop(value, None)
                    query.stats.dropped += 1
        return outputs

    def _detect_for(
        self, query: StandingQuery, index: int, stamp_ns: int, seen: dict[int, np.ndarray]
    ) -> dict[int, MaskOutput]:
        """Detect the query's phrases on frame `index` and apply the policy.

        `seen`: value -> mask of every object visible on the frame. Returns the outputs of the
        objects it re-found or created.
        """
        threshold = min(query.score_threshold, query.options.new_instance_threshold)
        found: list[Detection] = []
        for phrase in query.phrases:
            # The backend's own limit is not used: which detections matter is the policy's call.
            for det in self.backend.detect(index, phrase, threshold, 0):
                if det.mask.any():
                    found.append(Detection(det.mask, float(det.score)))
        found.sort(key=lambda d: -d.score)  # stable: phrase order breaks ties
        query.stats.detections_run += 1
        members = {v: (m.last_mask, not m.lost) for v, m in query.members.items()}
        others = [mask for v, mask in seen.items() if v not in query.members]
        decision = associate(found, members, others, query.options)
        changed: dict[int, MaskOutput] = {}
        for value, d in decision.confirmed.items():
            member = query.members[value]
            if value in decision.refound:
                # Old id back: the tracker takes the detection as a fresh mask prompt.
                out = self.backend.add_prompt(index, value, Prompt(mask=found[d].mask), False)
                changed[value] = replace(out, score=min(out.score, found[d].score))
                member.last_mask = found[d].mask
                member.lost = not self._seen(changed[value])
                query.stats.refound += 1
            member.last_seen_frame, member.last_seen_ns = index, stamp_ns
        query.stats.duplicates += len(decision.duplicates)
        for d in decision.new:
            if len(self._tracks) >= self.max_objects:
                query.stats.skipped_capacity += 1
                continue
            value = self._allocate()
            out = self._create(index, value, Prompt(mask=found[d].mask), False)
            self._tracks[value] = _Track(value, query.label, query.query_id)
            # A mask prompt is certain of itself: the detector's score is the confidence.
            changed[value] = replace(out, score=min(out.score, found[d].score))
            query.members[value] = Member(value, found[d].mask, index, stamp_ns)
            query.stats.added += 1
        return changed

    def _frame_result(
        self, index: int, stamp_ns: int, outputs: dict[int, MaskOutput]
    ) -> FrameResult:
        assert self._size is not None
        height, width = self._size
        empty = np.zeros((height, width), dtype=bool)
        objects = []
        for value in self._tracks:
            out = outputs.get(value) or MaskOutput(empty, 0.0, False)
            objects.append(self._object(value, out))
        return FrameResult(index, stamp_ns, height, width, tuple(objects))

    def _update_latest(self, index: int, obj: ObjectMask) -> None:
        """A prompt on the latest frame changes what that frame's result says."""
        latest = self._latest
        if latest is None or latest.frame_index != index:
            return
        others: Iterable[ObjectMask] = (o for o in latest.objects if o.mask_value != obj.mask_value)
        self._latest = FrameResult(
            latest.frame_index, latest.stamp_ns, latest.height, latest.width, (*others, obj)
        )


def step_sessions(
    model: Model, items: Sequence[tuple[SegmentationSession, RgbImage, int]]
) -> list[FrameResult | SegRosError]:
    """The next frame of several sessions on one model (`Model.step_batch`: one batched image
    encoder pass where the model batches), each result as its session's `step` would give it.

    items: (session, image, stamp_ns), every session on a stream of `model`, each at most once.
    A session that refuses its frame (closed, another size) gets its SegRosError in its place and
    the others go on; an error of the model itself raises (every frame of the batch is lost).
    """
    results: list[FrameResult | SegRosError | None] = [None] * len(items)
    with ExitStack() as stack:
        batch: list[tuple[int, SegmentationSession, RgbImage, int, int]] = []
        for i, (session, image, stamp_ns) in enumerate(items):
            stack.enter_context(session._lock)
            try:
                image = check_image(image)
                batch.append((i, session, image, stamp_ns, session._begin_step(image)))
            except SegRosError as exc:
                results[i] = exc
        if batch:
            items_ = [(s.backend, index, img) for _, s, img, _, index in batch]
            errors: list[SegRosError | None] = [None] * len(batch)
            try:
                outputs: list[dict[int, MaskOutput] | None] = list(model.step_batch(items_))
            except BatchStepError as exc:  # the others took their frames
                outputs, errors = list(exc.outputs), list(exc.errors)
            for (i, session, image, stamp_ns, index), out, error in zip(
                batch, outputs, errors, strict=True
            ):
                if error is not None or out is None:
                    results[i] = error or FrameError("the model gave no answer for this frame")
                else:
                    results[i] = session._end_step(index, image, stamp_ns, out)
    return [r for r in results if r is not None]


def _check_vocabulary(vocabulary: Sequence[str]) -> tuple[str, ...]:
    """The phrases of a segment-everything vocabulary, stripped; PromptError when malformed."""
    phrases = tuple(" ".join(str(v).split()) for v in vocabulary)
    if len(phrases) > MAX_VOCABULARY:
        raise PromptError(f"at most {MAX_VOCABULARY} phrases in a vocabulary; got {len(phrases)}")
    for phrase in phrases:
        if not phrase:
            raise PromptError("a vocabulary phrase is empty")
        if len(phrase) > MAX_TEXT_LENGTH:
            raise PromptError(f"a vocabulary phrase is longer than {MAX_TEXT_LENGTH} characters")
    if len(set(phrases)) != len(phrases):
        raise PromptError("a vocabulary names a phrase twice")
    return phrases


def vocabulary_labels(
    masks: Sequence[BoolArray], detections: Sequence[tuple[str, BoolArray]]
) -> list[str]:
    """Each mask's phrase: the one of the detection (phrase, mask) it overlaps best, when that
    mask IoU is >= VOCABULARY_IOU; "" otherwise. Masks and detections are bool (H, W)."""
    names = []
    for mask in masks:
        best, name = VOCABULARY_IOU, ""
        for phrase, det in detections:
            iou = mask_iou(mask, det)
            if iou >= best:
                best, name = iou, phrase
        names.append(name)
    return names


def _untracked(
    outputs: list[MaskOutput], label: str, threshold: float, fallback: str = ""
) -> list[ObjectMask]:
    """One-shot answers as untracked objects (no id; mask values 1..n in answer order), labelled
    `label`, else each answer's own (a detected phrase), else `fallback`."""
    return [
        ObjectMask(
            object_id="",
            mask_value=i + 1,
            label=label or out.label or fallback,
            score=out.score,
            visible=out.visible and out.score >= threshold,
            mask=out.mask,
            candidates=out.candidates,
        )
        for i, out in enumerate(outputs)
    ]
