"""Messages <-> numpy and engine values. Message types only: no node, no spinning, no model.

Images:
    `image_to_numpy`   sensor_msgs/Image -> array in the message's own channel order and dtype
                       (a zero-copy view of `msg.data` where the layout allows; row padding in
                       `step` and big-endian data honoured).
    `image_to_rgb`     sensor_msgs/Image -> RGB uint8 (H, W, 3), what the engine takes; refuses
                       depth / 16-bit encodings.
    `compressed_to_rgb` sensor_msgs/CompressedImage (jpeg / png) -> RGB uint8.
    `mask_from_image`  single-channel image -> bool (H, W), non-zero = object.
    `numpy_to_image`   array -> sensor_msgs/Image (bgr8 overlay, mono16 label image, mono8 masks).
Engine results -> messages: `instance_to_msg`, `candidate_instances`, `frame_to_msg`.
Requests -> engine: `build_prompt`, `roi_to_box`, `stamp_to_ns` / `ns_to_stamp`.

Every malformed message raises `ConversionError` (a ValueError) whose text says what is wrong,
so a node can drop the frame or answer the service with it.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from seg_ros.engine.prompts import Prompt
from seg_ros.engine.results import Candidate, FrameResult, ObjectMask
from seg_ros.engine.sam.everything import EverythingOptions
from seg_ros.engine.types import RgbImage
from seg_ros.msg import Instance, InstanceArray

try:  # Optional: widens the accepted encodings (bayer, yuv, ...); never needed for the listed ones.
    from cv_bridge import CvBridge  # type: ignore[import-not-found,unused-ignore]

    _BRIDGE: Any = CvBridge()
except ImportError:  # pragma: no cover - depends on the install
    _BRIDGE = None

#: Largest accepted image side in pixels: beyond it a message is a bug or an attack, not a camera.
MAX_SIDE = 16384

# encoding -> (dtype, channels). 8UC1 / 8UC3 are OpenCV's names (cv_bridge reads 8UC3 as BGR).
_LAYOUTS: dict[str, tuple[np.dtype[Any], int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
# Colour encodings -> cv2 conversion code to RGB (None: already RGB).
_TO_RGB: dict[str, int | None] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "8UC3": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
}
ENCODINGS = tuple(_LAYOUTS)
COLOR_ENCODINGS = tuple(_TO_RGB)

_NAN = float("nan")

#: Hook for 3D: given an object on the frame, its (centroid, extent) in the camera optical frame,
#: or None when unknown (no depth, no valid depth inside the mask). Instances get NaN then.
Locate3D = Callable[[ObjectMask], "tuple[Point, Vector3] | None"]


class ConversionError(ValueError):
    """A message that cannot be converted; the text says which field is wrong and why."""


# ---------------------------------------------------------------------------------- images in
def _check_size(height: int, width: int, what: str = "image") -> None:
    if height <= 0 or width <= 0:
        raise ConversionError(f"{what} is empty ({width}x{height} pixels)")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise ConversionError(
            f"{what} of {width}x{height} pixels exceeds the {MAX_SIDE}-pixel limit per side"
        )


def image_to_numpy(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array in the message's channel order.

    uint8 for *8 encodings, uint16 for mono16 / 16UC1, float32 for 32FC1, in native byte order.
    Without row padding and byte swapping the array is a view of `msg.data` (no copy): it stays
    valid as long as the array lives, and writing to it writes to the message.
    """
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        return _bridge_to_numpy(msg)
    dtype, channels = layout
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(height, width)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(
            f"step {step} is less than width * bytes per pixel = {width} * "
            f"{channels * dtype.itemsize} = {row_bytes} for '{encoding}'"
        )
    size = len(msg.data)
    if size != height * step:
        raise ConversionError(
            f"data has {size} bytes but height * step = {height} * {step} = {height * step}"
        )
    raw = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)
    if step != row_bytes:
        raw = raw[:, :row_bytes]  # row padding: a strided view, rows themselves contiguous
    if dtype.itemsize > 1:
        arr = raw.view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    else:
        arr = raw
    arr = arr.reshape((height, width, channels) if channels > 1 else (height, width))
    if not arr.dtype.isnative:
        arr = arr.astype(dtype)  # byte swap (one copy; only big-endian senders pay it)
    return arr


def _bridge_to_numpy(msg: Image, desired: str = "passthrough") -> np.ndarray:
    if _BRIDGE is None:
        raise ConversionError(
            f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(ENCODINGS)} "
            "(install cv_bridge for more)"
        )
    try:
        return np.asarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding=desired))
    except Exception as exc:  # cv_bridge raises its own CvBridgeError / TypeError
        raise ConversionError(f"cannot convert '{msg.encoding}' image: {exc}") from exc


def image_to_rgb(msg: Image) -> RgbImage:
    """sensor_msgs/Image -> RGB uint8 (H, W, 3) for the model.

    mono8 is replicated to three channels, alpha is dropped. Depth / 16-bit encodings (mono16,
    16UC1, 32FC1) are refused: they are not a colour stream.
    """
    encoding = msg.encoding
    if encoding in _LAYOUTS and encoding not in _TO_RGB:
        raise ConversionError(
            f"'{encoding}' is a depth / 16-bit encoding, not a colour image; the colour stream "
            f"takes {', '.join(COLOR_ENCODINGS)}"
        )
    if encoding not in _LAYOUTS:
        rgb = _bridge_to_numpy(msg, "rgb8")
        _check_size(int(rgb.shape[0]), int(rgb.shape[1]))
        return cast(RgbImage, rgb)
    arr = image_to_numpy(msg)
    code = _TO_RGB[encoding]
    return cast(RgbImage, arr if code is None else cv2.cvtColor(arr, code))


def compressed_to_rgb(msg: CompressedImage) -> RgbImage:
    """sensor_msgs/CompressedImage (jpeg / png, colour or grey) -> RGB uint8 (H, W, 3)."""
    if "compresseddepth" in msg.format.lower():
        raise ConversionError(
            f"'{msg.format}' is compressed depth, not a colour image; send jpeg or png"
        )
    # image_transport writes "<source encoding>; <codec> compressed ...": a depth source would be
    # decoded into a grey colour picture without complaint, so refuse it here.
    source = msg.format.split(";")[0].strip()
    if source in _LAYOUTS and source not in _TO_RGB:
        raise ConversionError(
            f"'{msg.format}' is a compressed {source} (depth / 16-bit) image, not a colour image"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ConversionError("compressed image has no data")
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:  # e.g. a header claiming more than OpenCV's pixel limit (a bomb)
        bgr = None
    if bgr is None:
        raise ConversionError(
            f"cannot decode the {data.size}-byte compressed image (format '{msg.format}'); "
            "expected jpeg or png"
        )
    _check_size(int(bgr.shape[0]), int(bgr.shape[1]), "decoded image")
    return cast(RgbImage, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def mask_from_image(msg: Image) -> npt.NDArray[np.bool_]:
    """Single-channel image (mono8 0/255, or any one-channel encoding) -> bool (H, W), != 0."""
    if msg.height == 0 or msg.width == 0:
        raise ConversionError("mask: image is empty; send a full-frame mono8 image")
    layout = _LAYOUTS.get(msg.encoding)
    if layout is None or layout[1] != 1:
        raise ConversionError(
            f"a mask must be a single-channel image (mono8, 0 = background); got '{msg.encoding}'"
        )
    try:
        mask: npt.NDArray[np.bool_] = image_to_numpy(msg) != 0
    except ConversionError as exc:
        raise ConversionError(f"mask: {exc}") from exc
    return mask


# --------------------------------------------------------------------------------- images out
def numpy_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Array -> sensor_msgs/Image with a tight `step`, in native byte order.

    `encoding` must match the array: bgr8 / rgb8 (H, W, 3) uint8, mono8 (H, W) uint8,
    mono16 / 16UC1 (H, W) uint16, 32FC1 (H, W) float32, ... One copy into the message.
    """
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ConversionError(f"unsupported encoding '{encoding}'; choose from {ENCODINGS}")
    dtype, channels = layout
    shape = arr.shape
    want = (2,) if channels == 1 else (3, channels)
    if arr.dtype != dtype or (arr.ndim, *shape[2:]) != want:
        layout_text = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ConversionError(
            f"'{encoding}' needs a {dtype} array of shape {layout_text}; got {arr.dtype} {shape}"
        )
    arr = np.ascontiguousarray(arr)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(shape[0]), int(shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(dtype.itemsize > 1 and sys.byteorder == "big")
    msg.step = int(shape[1]) * channels * dtype.itemsize
    data = array.array("B")
    # An array.array goes into the message as is; bytes or a list would be copied element-wise.
    data.frombytes(arr.data.cast("B"))
    msg.data = data
    return msg


# ---------------------------------------------------------------------- engine -> instances
def _point(xyz: tuple[float, float, float]) -> Point:
    return Point(x=xyz[0], y=xyz[1], z=xyz[2])


def instance_to_msg(obj: ObjectMask, header: Header, locate: Locate3D | None = None) -> Instance:
    """One object -> seg_ros/Instance: bbox, mono8 mask cropped to it (with `header`), 3D.

    `locate` gives the 3D centroid / extent (a depth-aware caller passes one); NaN without it.
    """
    msg = Instance()
    msg.id = obj.object_id
    msg.label = obj.label
    msg.score = float(obj.score)
    msg.visible = bool(obj.visible)
    msg.mask_value = int(obj.mask_value)
    box = obj.bbox
    if box is None:
        msg.mask = Image(header=header, encoding="mono8")
    else:
        x0, y0, x1, y1 = box
        msg.bbox = RegionOfInterest(x_offset=x0, y_offset=y0, width=x1 - x0, height=y1 - y0)
        crop = obj.mask[y0:y1, x0:x1].view(np.uint8) * np.uint8(255)
        msg.mask = numpy_to_image(crop, "mono8", header)
    where = locate(obj) if locate is not None else None
    if where is None:
        msg.centroid = _point((_NAN, _NAN, _NAN))
        msg.extent = Vector3(x=_NAN, y=_NAN, z=_NAN)
    else:
        msg.centroid, msg.extent = where
    return msg


def candidate_instances(
    obj: ObjectMask, header: Header, candidates: Sequence[Candidate] | None = None
) -> list[Instance]:
    """The alternatives of an ambiguous prompt, as Instances of the same object (best first)."""
    out = []
    for cand in obj.candidates if candidates is None else candidates:
        alt = ObjectMask(
            object_id=obj.object_id,
            mask_value=obj.mask_value,
            label=obj.label,
            score=float(cand.score),
            visible=bool(cand.mask.any()),
            mask=cand.mask,
        )
        out.append(instance_to_msg(alt, header))
    return out


def frame_to_msg(
    result: FrameResult, header: Header, locate: Locate3D | None = None
) -> InstanceArray:
    """Every tracked object on a frame -> seg_ros/InstanceArray carrying the frame's header."""
    msg = InstanceArray()
    msg.header = header
    msg.height, msg.width = int(result.height), int(result.width)
    msg.instances = [instance_to_msg(obj, header, locate) for obj in result.objects]
    return msg


# ------------------------------------------------------------------------ requests -> engine
def stamp_to_ns(stamp: Time) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (0 stays 0: "the latest frame")."""
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if sec < 0 or not 0 <= nanosec < 1_000_000_000:
        raise ConversionError(f"invalid stamp sec={sec} nanosec={nanosec}")
    return sec * 1_000_000_000 + nanosec


def ns_to_stamp(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def roi_to_box(roi: RegionOfInterest) -> npt.NDArray[np.float32]:
    """RegionOfInterest (top-left + size, pixels) -> XYXY box."""
    if roi.width == 0 or roi.height == 0:
        raise ConversionError(
            f"box needs width > 0 and height > 0; got {roi.width}x{roi.height} "
            f"at ({roi.x_offset}, {roi.y_offset})"
        )
    x0, y0 = float(roi.x_offset), float(roi.y_offset)
    return np.array([x0, y0, x0 + roi.width, y0 + roi.height], dtype=np.float32)


def points_to_array(points: Sequence[Point]) -> npt.NDArray[np.float32]:
    """geometry_msgs/Point[] -> (N, 2) pixel x, y (z ignored)."""
    return np.array([(p.x, p.y) for p in points], dtype=np.float32).reshape(-1, 2)


def build_prompt(
    *,
    points: Sequence[Point] = (),
    point_labels: Sequence[int] = (),
    box: RegionOfInterest | None = None,
    mask: Image | None = None,
    scribble: bool = False,
    text: str = "",
) -> Prompt:
    """Request fields -> one engine Prompt combining every kind given (None / empty = absent).

    Empty `point_labels` with points means every point is foreground. Raises ConversionError
    for a malformed message field and PromptError for a prompt the engine refuses.
    """
    return Prompt(
        points=points_to_array(points),
        point_labels=np.asarray(point_labels, dtype=np.int64),
        box=roi_to_box(box) if box is not None else None,
        mask=mask_from_image(mask) if mask is not None else None,
        scribble=scribble,
        text=text,
    )


def everything_options(req: Any) -> EverythingOptions:
    """A SegmentEverything request's options: 0 points per side = 32, a threshold < 0 (the
    request's default, -1) = SAM's (0.88 / 0.95); `min_area` in source pixels (< 0 refused with
    ValueError by EverythingOptions)."""
    defaults = EverythingOptions()
    return EverythingOptions(
        points_per_side=req.points_per_side or defaults.points_per_side,
        pred_iou_threshold=(
            float(req.pred_iou_threshold)
            if req.pred_iou_threshold >= 0
            else defaults.pred_iou_threshold
        ),
        stability_threshold=(
            float(req.stability_threshold)
            if req.stability_threshold >= 0
            else defaults.stability_threshold
        ),
        min_area=req.min_area,
        coarse_to_fine=req.coarse_to_fine,
    )
