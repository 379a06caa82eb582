"""sensor_msgs/PointCloud2 of the masked depth points, one `instance` field per point.

Layout (20 bytes per point, little-endian, unorganised: height 1, width N):

    offset 0  x         float32  metres, camera optical frame
    offset 4  y         float32
    offset 8  z         float32
    offset 12 rgb       float32  PCL-style packed colour 0x00RRGGBB (the bits, not a number)
    offset 16 instance  uint32   the object's mask value (as in ~/mask and Instance.mask_value)

`rgb` is the object's colour from `seg_ros.outputs.colors` (the overlay's and the markers'),
so RViz's RGB8 colour transformer shows each object's points in its overlay colour; `instance`
is the field to segment by. Built with a numpy structured array, no per-point Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from sensor_msgs.msg import PointCloud2, PointField

from seg_ros.outputs.colors import color_rgb

#: One point of the cloud, in the byte order of the message (little-endian). `rgb` holds the
#: packed 0x00RRGGBB bits (stored as uint32 here; the message declares FLOAT32 as PCL does).
POINT_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("instance", "<u4")]
)

_FIELDS = (
    ("x", 0, PointField.FLOAT32),
    ("y", 4, PointField.FLOAT32),
    ("z", 8, PointField.FLOAT32),
    ("rgb", 12, PointField.FLOAT32),
    ("instance", 16, PointField.UINT32),
)

_NUMPY_OF_POINTFIELD = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}


def points_array(
    clouds: Mapping[int, npt.NDArray[Any]] | Iterable[tuple[int, npt.NDArray[Any]]],
) -> npt.NDArray[np.void]:
    """Concatenate per-instance (N_i, 3) xyz arrays into one `POINT_DTYPE` array.

    Args:
        clouds: mask value -> (N_i, 3) points in metres (any float dtype), or (value, points) pairs.
            Rows with a non-finite coordinate are dropped (the cloud is dense).

    Raises:
        ValueError: an array that is not (N, 3), or a mask value outside uint32.
    """
    items = clouds.items() if isinstance(clouds, Mapping) else clouds
    parts: list[npt.NDArray[np.void]] = []
    for value, pts in items:
        arr = np.asarray(pts)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"points of instance {value} must be (N, 3); got {arr.shape}")
        if not 0 <= int(value) <= np.iinfo(np.uint32).max:
            raise ValueError(f"instance value {value} does not fit uint32")
        arr = arr[np.isfinite(arr).all(axis=1)]
        part = np.empty(arr.shape[0], dtype=POINT_DTYPE)
        part["x"], part["y"], part["z"] = arr[:, 0], arr[:, 1], arr[:, 2]
        part["instance"] = int(value)
        r, g, b = color_rgb(int(value))
        part["rgb"] = (r << 16) | (g << 8) | b
        parts.append(part)
    if not parts:
        return np.empty(0, dtype=POINT_DTYPE)
    return np.concatenate(parts)


def build_pointcloud2(
    header: Any,
    clouds: Mapping[int, npt.NDArray[Any]] | Iterable[tuple[int, npt.NDArray[Any]]],
) -> PointCloud2:
    """A PointCloud2 (x, y, z, rgb, instance) with `header` (the source image's stamp + frame).

    Args:
        header: std_msgs/Header of the image the points come from (its optical frame).
        clouds: mask value -> (N_i, 3) points in metres (see `points_array`).
    """
    points = points_array(clouds)
    msg = PointCloud2()
    msg.header = header
    msg.height = 1
    msg.width = int(points.shape[0])
    msg.fields = [PointField(name=n, offset=o, datatype=t, count=1) for n, o, t in _FIELDS]
    msg.is_bigendian = False
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = True
    msg.data = points.tobytes()
    return msg


def pointcloud2_to_array(msg: Any) -> npt.NDArray[np.void]:
    """Decode any PointCloud2's named fields (count 1) into a structured array of `width * height`.

    Honours offsets, point_step, row_step padding and byte order; used by the tests and handy for
    consumers without sensor_msgs_py.
    """
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _NUMPY_OF_POINTFIELD:
            raise ValueError(f"field {f.name!r} has unknown datatype {f.datatype}")
        names.append(f.name)
        formats.append(order + _NUMPY_OF_POINTFIELD[f.datatype])
        offsets.append(f.offset)
    dtype = np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step}
    )
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    height, width = int(msg.height), int(msg.width)
    if raw.size < msg.row_step * height or msg.row_step < msg.point_step * width:
        raise ValueError("PointCloud2 data is shorter than height * row_step")
    rows = raw[: msg.row_step * height].reshape(height, msg.row_step)[:, : msg.point_step * width]
    out: npt.NDArray[np.void] = np.ascontiguousarray(rows).view(dtype).reshape(-1)
    return out
