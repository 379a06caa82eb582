"""visualization_msgs/MarkerArray for RViz: a box and a label per object with known 3D.

Per object with a finite centroid, visible on the frame:
  * a CUBE (or SPHERE) at `Instance.centroid` scaled by `Instance.extent`, in the object's colour
    (`seg_ros.outputs.colors.color_rgba_float(mask_value)`, the overlay's colour);
  * a TEXT_VIEW_FACING "id: label score" just above it ("above" in the image: -y in the camera
    optical frame, y pointing down).

Marker identity is (namespace, id) = ("<ns>/boxes" or "<ns>/labels", mask_value): the mask value
is stable for an object's whole life, so RViz updates a marker in place instead of stacking new
ones. `MarkerPublisherState` remembers which ids are on screen and emits DELETE for objects that
disappeared (removed, lost, or without depth now), and DELETEALL on reset. Every marker carries the
source image's header (frame_id + stamp), never now().
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from seg_ros.outputs.colors import color_rgba_float


@dataclass(frozen=True)
class MarkerStyle:
    """How markers look.

    Attributes:
        namespace: prefix of the marker namespaces ("<namespace>/boxes", "<namespace>/labels").
        shape: "cube" or "sphere".
        alpha: opacity of the boxes in [0, 1] (labels are opaque).
        text_height_m: height of the label text (metres).
        min_scale_m: smallest box side (metres); RViz rejects zero scales, and a NaN extent with
            a known centroid still gets a small box.
        lifetime_s: marker lifetime in seconds, 0 = until deleted (this module deletes them).
    """

    namespace: str = "seg_ros"
    shape: str = "cube"
    alpha: float = 0.5
    text_height_m: float = 0.05
    min_scale_m: float = 0.01
    lifetime_s: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in ("cube", "sphere"):
            raise ValueError(f"shape must be 'cube' or 'sphere'; got {self.shape!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1]; got {self.alpha}")
        if not (self.text_height_m > 0 and self.min_scale_m > 0 and self.lifetime_s >= 0):
            raise ValueError("text_height_m and min_scale_m must be > 0, lifetime_s >= 0")

    @property
    def box_ns(self) -> str:
        return f"{self.namespace}/boxes"

    @property
    def label_ns(self) -> str:
        return f"{self.namespace}/labels"


def label_text(instance: Any) -> str:
    """ "id: label score", e.g. "3: mug 0.87" ("3: 0.87" without a label)."""
    label = f" {instance.label}" if instance.label else ""
    return f"{instance.id}:{label} {float(instance.score):.2f}"


def has_3d(instance: Any) -> bool:
    """True for a visible instance with a finite centroid."""
    c = instance.centroid
    return bool(instance.visible) and all(math.isfinite(v) for v in (c.x, c.y, c.z))


class MarkerPublisherState:
    """Builds each frame's MarkerArray and remembers which objects are on screen.

    Thread-safe: `update` (frame callback) and `reset` (service callback) may run concurrently.
    """

    def __init__(self, style: MarkerStyle | None = None) -> None:
        self.style = style or MarkerStyle()
        self._shown: set[int] = set()
        self._header: Any = Header()  # of the last update: a DELETEALL goes to its frame_id
        self._lock = threading.Lock()

    @property
    def shown(self) -> frozenset[int]:
        """Mask values whose markers are currently on screen."""
        with self._lock:
            return frozenset(self._shown)

    def update(self, header: Any, instances: Iterable[Any]) -> MarkerArray:
        """Markers for one frame: DELETE for objects gone since the last call, then ADD / modify.

        Args:
            header: std_msgs/Header of the source image (frame_id = its optical frame, stamp).
            instances: seg_ros/Instance messages (or anything with id, label, score, visible,
                mask_value, centroid.{x,y,z}, extent.{x,y,z}); those without 3D get no marker.
        """
        now: dict[int, Any] = {}
        for inst in instances:
            if has_3d(inst):
                now[int(inst.mask_value)] = inst
        out = MarkerArray()
        with self._lock:
            gone = sorted(self._shown - now.keys())
            self._shown = set(now)
            self._header = header
        for value in gone:
            out.markers.append(self._delete(header, self.style.box_ns, value))
            out.markers.append(self._delete(header, self.style.label_ns, value))
        for value in sorted(now):
            out.markers.extend(self._object_markers(header, value, now[value]))
        return out

    def reset(self, header: Any = None) -> MarkerArray:
        """DELETEALL in both namespaces (after the node's reset); forgets what was shown.

        `header` defaults to the last update's, so RViz clears the frame the boxes were drawn in.
        """
        with self._lock:
            self._shown.clear()
            if header is None:
                header = self._header
        out = MarkerArray()
        for ns in (self.style.box_ns, self.style.label_ns):
            m = Marker(header=header, ns=ns, id=0)
            m.action = Marker.DELETEALL
            out.markers.append(m)
        return out

    def _delete(self, header: Any, ns: str, value: int) -> Marker:
        m = Marker(header=header, ns=ns, id=value)
        m.action = Marker.DELETE
        return m

    def _object_markers(self, header: Any, value: int, inst: Any) -> tuple[Marker, Marker]:
        style = self.style
        c, e = inst.centroid, inst.extent
        scale = [
            v if math.isfinite(v) and v > style.min_scale_m else style.min_scale_m
            for v in (e.x, e.y, e.z)
        ]
        r, g, b, _ = color_rgba_float(value)
        lifetime = _duration(style.lifetime_s)

        box = Marker(header=header, ns=style.box_ns, id=value)
        box.type = Marker.CUBE if style.shape == "cube" else Marker.SPHERE
        box.action = Marker.ADD
        box.pose = Pose(
            position=Point(x=float(c.x), y=float(c.y), z=float(c.z)),
            orientation=Quaternion(w=1.0),
        )
        box.scale = Vector3(x=scale[0], y=scale[1], z=scale[2])
        box.color = ColorRGBA(r=r, g=g, b=b, a=style.alpha)
        box.lifetime = lifetime

        text = Marker(header=header, ns=style.label_ns, id=value)
        text.type = Marker.TEXT_VIEW_FACING
        text.action = Marker.ADD
        lift = scale[1] / 2 + style.text_height_m
        text.pose = Pose(
            position=Point(x=float(c.x), y=float(c.y) - lift, z=float(c.z)),
            orientation=Quaternion(w=1.0),
        )
        text.scale = Vector3(z=style.text_height_m)  # TEXT_VIEW_FACING uses only scale.z
        text.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        text.text = label_text(inst)
        text.lifetime = lifetime
        return box, text


def _duration(seconds: float) -> Duration:
    sec, nanosec = divmod(round(seconds * 1e9), 1_000_000_000)
    return Duration(sec=int(sec), nanosec=int(nanosec))
