"""Standing queries ("live concepts"): text that keeps finding new instances, with stable ids.

A standing query is a text (one or several phrases) that stays active on the stream. Every
`every_n` frames (and on a frame where one of its objects was just lost) the session runs the
backend's `detect` on the frame it just stepped and hands the detections to `associate`, the
policy of this module, which is pure numpy and knows nothing of models:

1. Each detection is matched to the query's own objects, one to one, by mask IoU (best pairs
   first, IoU >= `match_iou`), the object's current mask when the tracker sees it, else its last
   seen mask. A detection left over is then matched to a left-over object *that is lost* by
   position: centroid distance <= `match_distance` x the larger of the two boxes' diagonals.
2. A matched object is confirmed; a matched object the tracker had lost is *re-found*: the
   session re-prompts the tracker with the detection's mask under the object's old id.
3. A detection left unmatched becomes a new object (label = the query's label) when its score is
   >= `new_instance_threshold` and it is not a duplicate: IoU >= `duplicate_iou` with ANY visible
   tracked object (of any query, or made by a click / box / mask), or with a detection already
   accepted as new on this frame, never creates a second id.
4. An object of the query neither visible in the tracker nor confirmed by a detection for
   longer than the timeout (`timeout_frames`, or `timeout_s` of image stamps) is dropped, or kept
   lost (`drop_lost` false: the tracker and later detections may still find it).

Where this follows transformers' `Sam3VideoModel` (modeling_sam3_video.py, `_associate_det_trk`
and `_process_hotstart`): mask IoU association with a loose match threshold (its
`assoc_iou_thresh` 0.1), a separate, higher score for a detection to become a new object
(`new_det_thresh` 0.7), and a keep-alive counted in frames (`init_trk_keep_alive` 30) before an
unconfirmed object goes. Where it deviates, and why:

- One-to-one matching, where Sam3Video lets many detections match one track and calls a
  detection "new" only when it overlaps no track at all (IoU < 0.1): with that rule a person who
  walks in front of a tracked one (10% overlap or more) never gets an id until they separate.
  Here the better-overlapping detection takes the track and the other one is new unless it is a
  duplicate (IoU >= 0.5 with a tracked object), which still guards against a second id.
- A position fallback for lost objects: Sam3Video only matches by IoU against the tracker's
  current (empty, once lost) mask, so an object that comes back gets a new id. Streaming for a
  robot means objects leave and return; the last seen mask and its position are the evidence.
- No hotstart (Sam3Video holds outputs back 15 frames to delete tracks that turn out unmatched
  or duplicated): a robot needs the answer on the frame, and in streaming mode the library also
  skips that removal (it needs future frames).
- Duplicates are checked against every tracked object, not only those of the same prompt
  (Sam3Video zeroes cross-prompt IoUs), because two queries ("person", "pedestrian") or a click
  and a query on the same thing must not make two ids.
- The timeout counts frames *or seconds* since the object was last seen (visible or confirmed),
  not a keep-alive that matched frames raise: a tracked, visible object is never dropped here.
- The new-object score applies on every frame: with nothing tracked Sam3Video takes every
  detection above its detection floor (`score_threshold_detection` 0.5) as new, so whether a
  0.6 detection starts an object would depend on whether something else is tracked.
- New detections that duplicate one another are one object; Sam3Video leaves that to its NMS,
  which it skips without the hub's `kernels` package.

test/test_concepts_library.py checks both: agreement with Sam3Video's streaming session and its
`_associate_det_trk` where this follows it, and each deviation above.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg_ros.engine.errors import PromptError
from seg_ros.engine.prompts import MAX_TEXT_LENGTH
from seg_ros.engine.types import BoolArray

#: Phrases of one query in one string are separated by this (a comma can be part of a phrase).
PHRASE_SEPARATOR = ";"
#: Most phrases in one query (each is one detector pass per detection frame).
MAX_PHRASES = 8


@dataclass(frozen=True)
class QueryOptions:
    """How a standing query finds, keeps and drops its objects.

    Attributes:
        every_n: run the detector on every n-th frame (1 = every frame), counted from the frame
            the query was added; also on a frame where one of its objects was just lost.
        new_instance_threshold: a detection needs this score to become a new object (Sam3Video's
            `new_det_thresh` 0.7); detections above the session's score_threshold still confirm
            and re-find existing objects.
        match_iou: mask IoU at which a detection is the same instance as an object (0.1, Sam3's
            `assoc_iou_thresh`).
        match_distance: a lost object and a detection are the same instance when their
            centroids are at most this many box diagonals apart (the larger box's).
        duplicate_iou: IoU with any visible tracked object at which a detection is a duplicate.
        timeout_frames: frames an object may go unseen (not visible, not confirmed) before it
            is dropped (or kept lost); used when `timeout_s` is 0 or the stream has no stamps.
        timeout_s: the same in seconds of image stamps; 0 = use `timeout_frames`.
        drop_lost: drop an object after the timeout (True), or keep it lost (False).
        max_new_per_frame: most new objects one detection frame may add (0 = no limit besides
            the session's max_objects).
    """

    every_n: int = 5
    new_instance_threshold: float = 0.7
    match_iou: float = 0.1
    match_distance: float = 0.5
    duplicate_iou: float = 0.5
    timeout_frames: int = 30
    timeout_s: float = 0.0
    drop_lost: bool = True
    max_new_per_frame: int = 0

    def __post_init__(self) -> None:
        if self.every_n < 1:
            raise PromptError(f"every_n must be >= 1; got {self.every_n}")
        for name in ("new_instance_threshold", "match_iou", "duplicate_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise PromptError(f"{name} must be in [0, 1]; got {value}")
        if not 0.0 <= self.match_distance <= 100.0:
            raise PromptError(f"match_distance must be in [0, 100]; got {self.match_distance}")
        if self.timeout_frames < 1:
            raise PromptError(f"timeout_frames must be >= 1; got {self.timeout_frames}")
        if not 0.0 <= self.timeout_s <= 86400.0:
            raise PromptError(f"timeout_s must be in [0, 86400]; got {self.timeout_s}")
        if self.max_new_per_frame < 0:
            raise PromptError("max_new_per_frame must be >= 0")


def split_phrases(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The phrases of a query: a list, or one string split at ';'; whitespace normalised."""
    raw = text.split(PHRASE_SEPARATOR) if isinstance(text, str) else list(text)
    phrases: list[str] = []
    for item in raw:
        phrase = " ".join(str(item).split())
        if len(phrase) > MAX_TEXT_LENGTH:
            raise PromptError(f"a phrase is longer than {MAX_TEXT_LENGTH} characters")
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    if not phrases:
        raise PromptError("text is empty")
    if len(phrases) > MAX_PHRASES:
        raise PromptError(f"a query takes at most {MAX_PHRASES} phrases; got {len(phrases)}")
    return tuple(phrases)


@dataclass
class Member:
    """One object of a standing query, as the policy remembers it.

    Attributes:
        value: the object's mask value (its id) in the session.
        last_mask: its mask on the last frame it was seen (visible or confirmed).
        last_seen_frame / last_seen_ns: when that was.
        lost: not visible on the latest frame.
    """

    value: int
    last_mask: BoolArray
    last_seen_frame: int
    last_seen_ns: int
    lost: bool = False


@dataclass
class QueryStats:
    """What a query did so far (listed by `SegmentationSession.queries`)."""

    detections_run: int = 0
    added: int = 0
    refound: int = 0
    dropped: int = 0
    duplicates: int = 0
    skipped_capacity: int = 0
    errors: int = 0
    last_error: str = ""


@dataclass
class StandingQuery:
    """A registered standing query and its objects (the session owns and locks it)."""

    query_id: str
    phrases: tuple[str, ...]
    label: str
    options: QueryOptions
    score_threshold: float
    start_frame: int
    members: dict[int, Member] = field(default_factory=dict)
    stats: QueryStats = field(default_factory=QueryStats)

    @property
    def text(self) -> str:
        return f"{PHRASE_SEPARATOR} ".join(self.phrases)

    def due(self, frame_index: int) -> bool:
        """Whether `every_n` says to detect on this frame."""
        return (frame_index - self.start_frame) % self.options.every_n == 0

    def expired(self, member: Member, frame_index: int, stamp_ns: int) -> bool:
        """Unseen (not visible, not confirmed) for longer than the timeout."""
        if not member.lost:
            return False
        options = self.options
        if options.timeout_s > 0 and stamp_ns and member.last_seen_ns:
            return (stamp_ns - member.last_seen_ns) / 1e9 > options.timeout_s
        return frame_index - member.last_seen_frame > options.timeout_frames


@dataclass(frozen=True)
class Detection:
    """One detection handed to the policy: its mask (H, W) bool and score in [0, 1]."""

    mask: BoolArray
    score: float


@dataclass(frozen=True)
class Association:
    """What `associate` decided for one frame's detections.

    Attributes:
        confirmed: object value -> index of the detection that matched it (IoU or position).
        refound: the confirmed objects that were lost (the session re-prompts them).
        new: indices of the detections that become new objects, best first.
        duplicates: indices of unmatched detections that duplicate a tracked object (or a new
            one accepted before them).
        weak: indices of unmatched detections scoring below `new_instance_threshold`.
    """

    confirmed: dict[int, int]
    refound: tuple[int, ...]
    new: tuple[int, ...]
    duplicates: tuple[int, ...]
    weak: tuple[int, ...]


def mask_iou(a: BoolArray, b: BoolArray) -> float:
    """Intersection over union of two (H, W) bool masks; 0 when both are empty."""
    union = int(np.count_nonzero(a | b))
    return int(np.count_nonzero(a & b)) / union if union else 0.0


def _centroid_and_diagonal(mask: BoolArray) -> tuple[float, float, float] | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    diagonal = float(np.hypot(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))
    return float(xs.mean()), float(ys.mean()), diagonal


def relative_distance(a: BoolArray, b: BoolArray) -> float:
    """Centroid distance of two masks over the larger box diagonal; inf when one is empty."""
    ca, cb = _centroid_and_diagonal(a), _centroid_and_diagonal(b)
    if ca is None or cb is None:
        return float("inf")
    return float(np.hypot(ca[0] - cb[0], ca[1] - cb[1]) / max(ca[2], cb[2]))


def associate(
    detections: list[Detection],
    members: dict[int, tuple[BoolArray, bool]],
    others: list[BoolArray],
    options: QueryOptions,
) -> Association:
    """Match one frame's detections to a query's objects (see the module docstring).

    Args:
        detections: the frame's detections, best first.
        members: the query's objects: value -> (mask, visible). The mask is the current one
            when visible, else the last seen one.
        others: masks of every other visible tracked object (other queries, clicks, ...).
        options: the query's thresholds.
    """
    values = list(members)
    # 1. One-to-one by IoU, best pairs first (greedy: the sets are small, <= max_objects).
    pairs = []
    for d, det in enumerate(detections):
        for value in values:
            iou = mask_iou(det.mask, members[value][0])
            if iou >= options.match_iou and iou > 0.0:
                pairs.append((iou, det.score, d, value))
    pairs.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    confirmed: dict[int, int] = {}
    taken: set[int] = set()
    for _, _, d, value in pairs:
        if d not in taken and value not in confirmed:
            confirmed[value] = d
            taken.add(d)
    # ... then a lost object and a left-over detection by position (nearest pairs first).
    near = []
    for d, det in enumerate(detections):
        if d in taken:
            continue
        for value in values:
            mask, visible = members[value]
            if visible or value in confirmed:
                continue
            distance = relative_distance(det.mask, mask)
            if distance <= options.match_distance:
                near.append((distance, -det.score, d, value))
    near.sort()
    for _, _, d, value in near:
        if d not in taken and value not in confirmed:
            confirmed[value] = d
            taken.add(d)
    refound = tuple(v for v in values if v in confirmed and not members[v][1])
    # 2. Left-over detections: new, duplicate or too weak to start an object.
    tracked = [m for m, seen in members.values() if seen] + list(others)
    new: list[int] = []
    duplicates: list[int] = []
    weak: list[int] = []
    for d, det in enumerate(detections):
        if d in taken:
            continue
        if det.score < options.new_instance_threshold:
            weak.append(d)
            continue
        claimed = tracked + [detections[n].mask for n in new]
        if any(mask_iou(det.mask, m) >= options.duplicate_iou for m in claimed):
            duplicates.append(d)
            continue
        if options.max_new_per_frame and len(new) >= options.max_new_per_frame:
            weak.append(d)
            continue
        new.append(d)
    return Association(confirmed, refound, tuple(new), tuple(duplicates), tuple(weak))


@dataclass(frozen=True)
class QueryInfo:
    """A snapshot of one standing query, as `SegmentationSession.queries` lists it."""

    query_id: str
    phrases: tuple[str, ...]
    label: str
    options: QueryOptions
    score_threshold: float
    object_ids: tuple[str, ...]
    lost_ids: tuple[str, ...]
    stats: QueryStats

    @property
    def text(self) -> str:
        return f"{PHRASE_SEPARATOR} ".join(self.phrases)


def snapshot(query: StandingQuery) -> QueryInfo:
    values = sorted(query.members)
    return QueryInfo(
        query_id=query.query_id,
        phrases=query.phrases,
        label=query.label,
        options=query.options,
        score_threshold=query.score_threshold,
        object_ids=tuple(str(v) for v in values),
        lost_ids=tuple(str(v) for v in values if query.members[v].lost),
        stats=QueryStats(**vars(query.stats)),
    )
