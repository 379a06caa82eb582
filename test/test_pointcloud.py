"""PointCloud2 building: decode the bytes back and compare with the input points."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from seg_ros.outputs.colors import color_rgb
from seg_ros.outputs.pointcloud import POINT_DTYPE, build_pointcloud2, pointcloud2_to_array

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="camera_color_optical_frame")


def test_round_trip_of_two_instances() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3)).astype(np.float32)
    b = rng.normal(size=(7, 3))  # float64 input is converted
    msg = build_pointcloud2(HEADER, {3: a, 65535: b})
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 57, 20, 57 * 20)
    assert msg.is_dense and not msg.is_bigendian and len(msg.data) == 57 * 20
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
        ("instance", 16, PointField.UINT32, 1),
    ]
    # Decode the raw bytes independently of the module's decoder.
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(57, 20)
    xyz = raw[:, :12].copy().view("<f4").reshape(57, 3)
    rgb = raw[:, 12:16].copy().view("<u4").reshape(57)
    inst = raw[:, 16:].copy().view("<u4").reshape(57)
    np.testing.assert_array_equal(xyz[:50], a)
    np.testing.assert_array_equal(xyz[50:], b.astype(np.float32))
    np.testing.assert_array_equal(inst, [3] * 50 + [65535] * 7)
    # PCL packing: byte 2 red, byte 1 green, byte 0 blue (little-endian: B, G, R, 0 in memory).
    r, g, bl = color_rgb(3)
    assert tuple(raw[0, 12:16]) == (bl, g, r, 0)
    assert rgb[56] == (color_rgb(65535)[0] << 16) | (color_rgb(65535)[1] << 8) | color_rgb(65535)[2]
    # And through the module's decoder.
    decoded = pointcloud2_to_array(msg)
    np.testing.assert_array_equal(decoded["instance"], inst)
    np.testing.assert_array_equal(decoded["z"][:50], a[:, 2])


def test_serialised_message_round_trips() -> None:
    from rclpy.serialization import deserialize_message, serialize_message

    msg = build_pointcloud2(HEADER, [(1, np.array([[0.1, -0.2, 1.5]]))])
    back = deserialize_message(serialize_message(msg), PointCloud2)
    arr = pointcloud2_to_array(back)
    assert arr.shape == (1,) and arr["instance"][0] == 1
    np.testing.assert_allclose([arr["x"][0], arr["y"][0], arr["z"][0]], [0.1, -0.2, 1.5], 1e-6)


def test_non_finite_points_are_dropped_and_empty_input_is_an_empty_cloud() -> None:
    pts = np.array([[0, 0, 1], [np.nan, 0, 1], [0, np.inf, 1], [1, 1, 2]], dtype=np.float32)
    arr = pointcloud2_to_array(build_pointcloud2(HEADER, {2: pts}))
    np.testing.assert_array_equal(arr["z"], [1, 2])
    empty = build_pointcloud2(HEADER, {})
    assert empty.width == 0 and len(empty.data) == 0 and len(empty.fields) == 5
    assert pointcloud2_to_array(empty).dtype.names == POINT_DTYPE.names


def test_decoder_honours_padding_and_big_endian() -> None:
    pts = np.zeros(
        2, dtype=np.dtype({"names": ["z"], "formats": [">f8"], "offsets": [4], "itemsize": 16})
    )
    pts["z"] = [1.25, -3.0]
    msg = PointCloud2(height=1, width=2, point_step=16, row_step=40, is_bigendian=True)
    msg.fields = [PointField(name="z", offset=4, datatype=PointField.FLOAT64, count=1)]
    msg.data = pts.tobytes() + b"\0" * 8
    np.testing.assert_array_equal(pointcloud2_to_array(msg)["z"], [1.25, -3.0])


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        build_pointcloud2(HEADER, {1: np.zeros((4, 2))})
    with pytest.raises(ValueError, match="uint32"):
        build_pointcloud2(HEADER, {-1: np.zeros((1, 3))})
