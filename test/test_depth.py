"""Masked depth -> 3D with synthetic depth of known geometry (pinhole model, exact numbers)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from seg_ros.engine.errors import FrameError
from seg_ros.geometry import (
    DepthParams,
    Intrinsics,
    depth_array_from_msg,
    depth_to_metres,
    object_geometry,
    project_mask,
    resize_mask_nearest,
    subsample,
)

W, H = 160, 120
FX = FY = 100.0
# Principal point at the image centre, between pixels: masks symmetric about it give x = y = 0.
K = Intrinsics(fx=FX, fy=FY, cx=(W - 1) / 2, cy=(H - 1) / 2, width=W, height=H)
EXACT = DepthParams(extent_percentile=0.0)


def rect_mask(u0: int, v0: int, u1: int, v1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[v0:v1, u0:u1] = True
    return m


def pinhole(u: np.ndarray, v: np.ndarray, z: np.ndarray, k: Intrinsics = K) -> np.ndarray:
    """Independent oracle: pixel + depth -> (N, 3) points, float64."""
    return np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)


def sphere_depth(center: tuple[float, float, float], radius: float) -> np.ndarray:
    """Ray-traced z-depth (metres) of a sphere; NaN where the ray misses it."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    d = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    c = np.asarray(center)
    dc = d @ c
    dd = (d * d).sum(-1)
    disc = dc**2 - dd * (c @ c - radius**2)
    with np.errstate(invalid="ignore"):
        t = (dc - np.sqrt(disc)) / dd  # nearest hit; z = t because d_z = 1
    return np.where(disc >= 0, t, np.nan)


def test_fronto_parallel_plane_at_1_5_m_is_exact() -> None:
    depth = np.full((H, W), 1.5, dtype=np.float32)
    u0, v0, u1, v1 = 40, 30, 100, 70
    geo = object_geometry(depth_to_metres(depth), K, rect_mask(u0, v0, u1, v1), EXACT)
    assert geo.known and geo.num_points == (u1 - u0) * (v1 - v0)
    x_lo, x_hi = (u0 - K.cx) * 1.5 / FX, (u1 - 1 - K.cx) * 1.5 / FX
    y_lo, y_hi = (v0 - K.cy) * 1.5 / FY, (v1 - 1 - K.cy) * 1.5 / FY
    np.testing.assert_allclose(geo.lower, (x_lo, y_lo, 1.5), atol=1e-6)
    np.testing.assert_allclose(geo.upper, (x_hi, y_hi, 1.5), atol=1e-6)
    np.testing.assert_allclose(geo.extent, (x_hi - x_lo, y_hi - y_lo, 0.0), atol=1e-6)
    np.testing.assert_allclose(geo.centroid, ((x_lo + x_hi) / 2, (y_lo + y_hi) / 2, 1.5), atol=1e-6)
    # 60 px at 1.5 m with f = 100 px: 59 pixel pitches of 1.5 cm.
    assert geo.extent[0] == pytest.approx(59 * 0.015, abs=1e-6)


def test_millimetres_and_metres_give_the_same_geometry() -> None:
    mask = rect_mask(10, 20, 90, 60)
    mm = np.full((H, W), 1500, dtype=np.uint16)
    mm[:, 50:] = 1523
    metres = mm.astype(np.float32) / 1000.0
    a = object_geometry(depth_to_metres(mm), K, mask, EXACT)
    b = object_geometry(depth_to_metres(metres), K, mask, EXACT)
    np.testing.assert_allclose(a.centroid, b.centroid, atol=1e-6)
    np.testing.assert_allclose(a.extent, b.extent, atol=1e-6)
    assert a.upper[2] == pytest.approx(1.523, abs=1e-6)


def test_box_in_front_of_a_wall_ignores_mask_bleed_onto_the_wall() -> None:
    # A 40 x 30 px box face at 1.2 m on a wall at 2.0 m; the mask overflows the box by 3 px on
    # every side (a typical segmentation edge error), so ~20 % of masked pixels see the wall.
    depth = np.full((H, W), 2.0, dtype=np.float32)
    bu0, bv0, bu1, bv1 = 60, 40, 100, 70
    depth[bv0:bv1, bu0:bu1] = 1.2
    geo = object_geometry(
        depth_to_metres(depth), K, rect_mask(bu0 - 3, bv0 - 3, bu1 + 3, bv1 + 3), EXACT
    )
    u, v = np.meshgrid(np.arange(bu0, bu1), np.arange(bv0, bv1))
    face = pinhole(u.ravel().astype(float), v.ravel().astype(float), np.full(u.size, 1.2))
    assert geo.num_points == face.shape[0]
    np.testing.assert_allclose(geo.lower, face.min(0), atol=1e-6)
    np.testing.assert_allclose(geo.upper, face.max(0), atol=1e-6)
    np.testing.assert_allclose(geo.centroid, face.mean(0), atol=1e-6)


def test_holes_and_outlier_spikes_are_ignored() -> None:
    rng = np.random.default_rng(0)
    depth = np.full((H, W), 1.5, dtype=np.float32)
    u0, v0, u1, v1 = 30, 20, 130, 100
    mask = rect_mask(u0, v0, u1, v1)
    inside = np.argwhere(mask)
    picks = inside[rng.choice(len(inside), size=400, replace=False)]
    holes, spikes_near, spikes_far = picks[:200], picks[200:300], picks[300:]
    depth[holes[:100, 0], holes[:100, 1]] = np.nan
    depth[holes[100:150, 0], holes[100:150, 1]] = 0.0
    depth[holes[150:, 0], holes[150:, 1]] = np.inf
    depth[spikes_near[:, 0], spikes_near[:, 1]] = 0.3  # flying pixels / dust
    depth[spikes_far[:, 0], spikes_far[:, 1]] = 8.0  # background seen through the mask
    geo = object_geometry(depth_to_metres(depth), K, mask, EXACT)
    keep = mask.copy()
    keep[picks[:, 0], picks[:, 1]] = False
    v, u = np.nonzero(keep)
    expected = pinhole(u.astype(float), v.astype(float), np.full(u.size, 1.5))
    assert geo.num_valid == mask.sum() - 200  # holes are not valid; spikes are, then gated
    assert geo.num_points == expected.shape[0]
    np.testing.assert_allclose(geo.centroid, expected.mean(0), atol=1e-6)
    np.testing.assert_allclose(geo.lower, expected.min(0), atol=1e-6)
    np.testing.assert_allclose(geo.upper, expected.max(0), atol=1e-6)


def test_default_percentile_clipping_ignores_a_thin_mask_leak() -> None:
    # A 60 x 40 px object whose mask leaks 20 px to the right along a 1 px line (a cable, a
    # shadow) at the same depth, so the depth gate cannot see it: 20 of 2420 points < 1 %.
    depth = np.full((H, W), 1.5, dtype=np.float32)
    mask = rect_mask(40, 30, 100, 70)
    mask[50, 100:120] = True
    exact = object_geometry(depth_to_metres(depth), K, mask, EXACT)
    robust = object_geometry(depth_to_metres(depth), K, mask)  # 1st .. 99th percentile
    assert exact.upper[0] == pytest.approx((119 - K.cx) * 1.5 / FX, abs=1e-6)
    assert robust.upper[0] == pytest.approx((99 - K.cx) * 1.5 / FX, abs=1e-6)
    assert robust.lower == pytest.approx(exact.lower, abs=1e-6)


def test_sphere_matches_the_pinhole_model() -> None:
    r, zc = 0.1, 1.5
    geo = object_geometry(
        depth_to_metres(sphere_depth((0.0, 0.0, zc), r).astype(np.float32)),
        K,
        np.ones((H, W), dtype=bool),  # mask = whole image: the misses are holes
        DepthParams(extent_percentile=0.0, gate_mads=10.0),
    )
    assert geo.known
    # Symmetric sampling about the axis: the visible cap is centred on it.
    assert abs(geo.centroid[0]) < 1e-6 and abs(geo.centroid[1]) < 1e-6
    # Nearest point: the rays of the four pixels around the axis, half a pixel off it in x and y.
    d = np.array([0.5 / FX, 0.5 / FY, 1.0])
    dc, dd = d[2] * zc, d @ d
    t_near = (dc - math.sqrt(dc**2 - dd * (zc**2 - r**2))) / dd
    assert geo.lower[2] == pytest.approx(t_near, abs=1e-6)
    assert zc - r < t_near < zc - r + 1e-3
    # Silhouette: tangent rays touch the sphere at radius r * sqrt(1 - r^2 / zc^2) from the axis,
    # depth zc - r^2 / zc. Pixel sampling can only fall short of them by about one pixel.
    rim_half_width = r * math.sqrt(1 - r**2 / zc**2)
    pitch = zc / FX
    assert 2 * rim_half_width - 2 * pitch <= geo.extent[0] <= 2 * rim_half_width
    assert geo.extent[0] == pytest.approx(geo.extent[1], abs=1e-6)
    assert geo.upper[2] <= zc - r**2 / zc
    # The depth of the visible cap's centroid lies between pole and rim.
    assert zc - r < geo.centroid[2] < zc - r**2 / zc


def test_unknown_without_enough_valid_depth() -> None:
    depth = np.full((H, W), np.nan, dtype=np.float32)
    depth[50, 50:55] = 1.0
    geo = object_geometry(depth, K, rect_mask(40, 40, 80, 80))
    assert not geo.known and geo.num_valid == 5 and geo.num_points == 0
    assert all(math.isnan(v) for v in (*geo.centroid, *geo.extent))
    empty = object_geometry(depth, K, np.zeros((H, W), dtype=bool))
    assert not empty.known and empty.points.shape == (0, 3)


def test_sensor_range_limits_are_holes() -> None:
    mm = np.full((H, W), 1500, dtype=np.uint16)
    mm[:, :80] = 150  # closer than the sensor's minimum
    params = DepthParams(min_depth_m=0.2, max_depth_m=10.0, extent_percentile=0.0)
    depth = depth_to_metres(mm, params)
    assert np.isnan(depth[:, :80]).all() and (depth[:, 80:] == np.float32(1.5)).all()


def test_depth_at_half_resolution_scales_the_intrinsics_and_the_mask() -> None:
    # Colour (and CameraInfo) at 160x120, registered depth at 80x60.
    depth_half = np.full((H // 2, W // 2), 1.5, dtype=np.float32)
    u0, v0, u1, v1 = 40, 30, 100, 70  # even bounds: the halved mask is [20, 50) x [15, 35)
    geo = object_geometry(depth_half, K, rect_mask(u0, v0, u1, v1), EXACT)
    half = K.scaled_to(W // 2, H // 2)
    assert (half.fx, half.cx, half.width) == (FX / 2, K.cx / 2, W // 2)
    u, v = np.meshgrid(np.arange(20, 50, dtype=float), np.arange(15, 35, dtype=float))
    expected = pinhole(u.ravel(), v.ravel(), np.full(u.size, 1.5), half)
    assert geo.num_points == expected.shape[0]
    np.testing.assert_allclose(geo.lower, expected.min(0), atol=1e-6)
    np.testing.assert_allclose(geo.upper, expected.max(0), atol=1e-6)
    # Same object as seen at full resolution, to within a colour pixel per side.
    full = object_geometry(np.full((H, W), 1.5, np.float32), K, rect_mask(u0, v0, u1, v1), EXACT)
    np.testing.assert_allclose(geo.extent, full.extent, atol=2 * 1.5 / FX)
    np.testing.assert_allclose(geo.centroid, full.centroid, atol=1.5 / FX)


def test_depth_at_double_resolution_and_camera_info_at_depth_resolution() -> None:
    depth2 = np.full((2 * H, 2 * W), 1.5, dtype=np.float32)
    k2 = K.scaled_to(2 * W, 2 * H)  # CameraInfo of the depth stream
    mask = rect_mask(40, 30, 100, 70)
    a = object_geometry(depth2, k2, mask, EXACT)
    b = object_geometry(depth2, K, mask, EXACT)  # colour CameraInfo: scaled the same way
    np.testing.assert_allclose(a.centroid, b.centroid, atol=1e-9)
    full = object_geometry(np.full((H, W), 1.5, np.float32), K, mask, EXACT)
    np.testing.assert_allclose(a.extent, full.extent, atol=1.5 / FX)


def test_unregistered_aspect_ratio_is_refused() -> None:
    with pytest.raises(FrameError, match="registered"):
        project_mask(np.ones((90, 160), np.float32), K, np.ones((H, W), bool))


def test_resize_mask_nearest() -> None:
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    np.testing.assert_array_equal(
        resize_mask_nearest(m, 4, 4), np.kron(m, np.ones((2, 2), dtype=bool))
    )
    big = np.zeros((4, 4), bool)
    big[1::2, 1::2] = True  # halving samples pixels 1 and 3
    assert resize_mask_nearest(big, 2, 2).all()


def test_intrinsics_from_camera_info_and_validation() -> None:
    info = SimpleNamespace(k=[600.0, 0, 320.5, 0, 610.0, 240.5, 0, 0, 1], width=640, height=480)
    k = Intrinsics.from_camera_info(info)
    assert (k.fx, k.fy, k.cx, k.cy, k.width, k.height) == (600.0, 610.0, 320.5, 240.5, 640, 480)
    with pytest.raises(ValueError, match="not calibrated"):
        Intrinsics.from_camera_info(SimpleNamespace(k=[0.0] * 9, width=640, height=480))
    with pytest.raises(ValueError, match="size"):
        Intrinsics(fx=1, fy=1, cx=0, cy=0, width=0, height=10)


def test_depth_array_from_msg_handles_padding_and_byte_order() -> None:
    mm = np.arange(12, dtype=np.uint16).reshape(3, 4) * 100
    padded = np.zeros((3, 5), dtype=">u2")  # one pad column, big-endian
    padded[:, :4] = mm
    msg = SimpleNamespace(
        encoding="16UC1", height=3, width=4, step=10, is_bigendian=1, data=padded.tobytes()
    )
    out = depth_array_from_msg(msg)
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, mm)
    f = np.array([[1.5, np.nan]], dtype="<f4")
    msg32 = SimpleNamespace(
        encoding="32FC1", height=1, width=2, step=8, is_bigendian=0, data=list(f.tobytes())
    )
    np.testing.assert_array_equal(depth_array_from_msg(msg32), f)
    with pytest.raises(FrameError, match="encoding"):
        depth_array_from_msg(SimpleNamespace(encoding="rgb8", height=1, width=1, step=3, data=b""))
    with pytest.raises(FrameError, match="does not fit"):
        depth_array_from_msg(
            SimpleNamespace(encoding="16UC1", height=2, width=2, step=4, is_bigendian=0, data=b"12")
        )


def test_depth_array_from_a_real_image_message() -> None:
    from sensor_msgs.msg import Image

    mm = np.array([[0, 1500], [2000, 65535]], dtype=np.uint16)
    msg = Image(height=2, width=2, encoding="16UC1", is_bigendian=0, step=4, data=mm.tobytes())
    depth = depth_to_metres(depth_array_from_msg(msg))
    assert math.isnan(depth[0, 0])
    np.testing.assert_allclose(depth[0, 1:], [1.5])
    np.testing.assert_allclose(depth[1], [2.0, 65.535], rtol=1e-6)


def test_bad_depth_arrays_are_refused() -> None:
    with pytest.raises(FrameError, match="2-D"):
        depth_to_metres(np.zeros((2, 2, 1), np.float32))
    with pytest.raises(FrameError, match="uint16"):
        depth_to_metres(np.zeros((2, 2), np.int32))


def test_subsample_is_deterministic_and_bounded() -> None:
    pts = np.arange(30, dtype=np.float32).reshape(10, 3)
    assert subsample(pts, None) is pts and subsample(pts, 20) is pts
    sub = subsample(pts, 4)
    assert sub.shape == (4, 3)
    np.testing.assert_array_equal(sub[:, 0], pts[[0, 2, 5, 7], 0])


def test_statistics_on_a_strided_sample_match_the_full_computation() -> None:
    # 480 x 640 noisy tilted plane with 5 % holes and 2 % far spikes: 270k masked pixels.
    rng = np.random.default_rng(3)
    k = Intrinsics(fx=615.0, fy=615.0, cx=319.5, cy=239.5, width=640, height=480)
    u = np.mgrid[0:480, 0:640][1]
    depth = (1.2 + 0.001 * u + rng.normal(0, 0.004, u.shape)).astype(np.float32)
    depth[rng.random(u.shape) < 0.05] = np.nan
    depth[rng.random(u.shape) < 0.02] = 6.0
    mask = np.zeros((480, 640), bool)
    mask[30:450, 0:640] = True
    fast = object_geometry(depth, k, mask)
    full = object_geometry(depth, k, mask, DepthParams(max_stat_points=0))
    assert fast.num_points == full.num_points  # the gate (from the sample) lets the same points in
    np.testing.assert_allclose(fast.centroid, full.centroid, atol=1e-9)
    np.testing.assert_allclose(fast.lower, full.lower, atol=2e-3)
    np.testing.assert_allclose(fast.upper, full.upper, atol=2e-3)
    assert full.upper[2] < 2.0  # the spikes were gated out
