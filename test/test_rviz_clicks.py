"""RViz "Publish Point" -> a point prompt (seg_ros.clicks, seg_ros.geometry): the projection and
the transform exactly on a known camera, then PointStamped on /clicked_point over DDS.

tf2_ros is not installed here: the transform path runs against a stand-in buffer with the same
`lookup_transform` surface the node calls, applying a known rotation + translation.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PointStamped, Quaternion, TransformStamped, Vector3
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from seg_ros.clicks import CLICKED_POINT_TOPIC, TF_TIMEOUT_S, ClickPrompts
from seg_ros.geometry import Intrinsics, project_mask, project_point, rigid_transform
from seg_ros.testing.graph import Client, RosGraph, grey_frame, reliable_qos, start_node, wait_for

W, H = 160, 120
#: The known camera: fx 200, fy 100, principal point (70, 50), off the image centre (80, 60).
CAMERA = Intrinsics(fx=200.0, fy=100.0, cx=70.0, cy=50.0, width=W, height=H)
OPTICAL = "cam_optical"
#: base_link -> cam_optical: a camera looking along base_link's +x (REP 103 body frame: x ahead,
#: y left, z up) from 0.1 m ahead of and 0.3 m above base_link's origin. Optical axes: x right =
#: -y body, y down = -z body, z ahead = x body; as a quaternion (x, y, z, w) mapping body
#: coordinates to optical ones: (0.5, -0.5, 0.5, 0.5). Its translation is base_link's origin in
#: the optical frame: body (-0.1, 0, -0.3) -> optical (0, 0.3, -0.1).
BODY_TO_OPTICAL_Q = (0.5, -0.5, 0.5, 0.5)
BODY_TO_OPTICAL_T = (0.0, 0.3, -0.1)


def camera_info(width: int = W, height: int = H, frame_id: str = OPTICAL) -> CameraInfo:
    info = CameraInfo(width=width, height=height, header=Header(frame_id=frame_id))
    s = width / W  # the same camera calibrated at another resolution
    info.k = [200.0 * s, 0.0, 70.0 * s, 0.0, 100.0 * s, 50.0 * s, 0.0, 0.0, 1.0]
    return info


# ------------------------------------------------------------------ projection, by hand
@pytest.mark.parametrize(
    "point, pixel",
    [
        ((0.0, 0.0, 1.0), (70, 50)),  # the optical axis: the principal point, not the centre
        ((0.0, 0.0, 7.5), (70, 50)),
        ((0.5, -0.25, 2.0), (120, 38)),  # u = 200 * 0.25 + 70, v = 100 * -0.125 + 50 = 37.5 -> 38
        ((-0.3, 0.6, 1.5), (30, 90)),  # u = 200 * -0.2 + 70, v = 100 * 0.4 + 50
        ((0.447, 0.0, 1.0), (159, 50)),  # u = 159.4: the last column
        ((-0.352, -0.5049, 1.0), (0, 0)),  # u = -0.4, v = -0.49: still pixel (0, 0)
    ],
)
def test_a_point_projects_onto_the_hand_computed_pixel(
    point: tuple[float, float, float], pixel: tuple[int, int]
) -> None:
    assert project_point(CAMERA, point) == pixel


@pytest.mark.parametrize("z", [0.0, -0.5, -1e-9, float("nan")])
def test_a_point_behind_the_camera_is_refused(z: float) -> None:
    with pytest.raises(ValueError, match="behind the camera"):
        project_point(CAMERA, (0.0, 0.0, z))


@pytest.mark.parametrize(
    "point",
    [(0.45, 0.0, 1.0), (-0.36, 0.0, 1.0), (0.0, 0.7, 1.0), (0.0, -0.51, 1.0), (1.0, 0.0, 1e-300)],
)
def test_a_point_outside_the_image_is_refused(point: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match=f"outside the {W}x{H} image"):
        project_point(CAMERA, point)


def test_projection_inverts_the_depth_back_projection_pixel_for_pixel() -> None:
    # A point of ~/points, clicked in RViz, must land on the pixel it came from.
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.3, 4.0, (H, W)).astype(np.float32)
    mask = np.zeros((H, W), bool)
    rows, cols = rng.integers(0, H, 50), rng.integers(0, W, 50)
    mask[rows, cols] = True
    points = project_mask(depth, CAMERA, mask)
    back = {project_point(CAMERA, p) for p in points}
    assert back == {(int(c), int(r)) for r, c in zip(rows, cols, strict=True)}


# ------------------------------------------------------------------ the transform, by hand
def test_rigid_transform_rotates_then_translates() -> None:
    quarter_turn_z = (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    x, y, z = rigid_transform((1.0, 2.0, 3.0), quarter_turn_z, (10.0, 0.0, -1.0))
    assert (x, y, z) == pytest.approx((10.0 - 2.0, 1.0, 2.0), abs=1e-12)
    # An unnormalised quaternion means the same rotation.
    assert rigid_transform((1.0, 0.0, 0.0), (0.0, 0.0, 2.0, 2.0), (0, 0, 0)) == pytest.approx(
        (0.0, 1.0, 0.0), abs=1e-12
    )
    # Body -> optical: 2 m ahead, 0.5 m left, 0.25 m up of base_link.
    optical = rigid_transform((2.0, 0.5, 0.25), BODY_TO_OPTICAL_Q, BODY_TO_OPTICAL_T)
    assert optical == pytest.approx((-0.5, 0.05, 1.9), abs=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        rigid_transform((1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0), (0, 0, 0))


class LookupError_(Exception):
    """What tf2_ros raises for an unknown frame (a TransformException)."""


class StandInBuffer:
    """tf2_ros.Buffer's `lookup_transform` for one known transform base_link -> cam_optical."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, Any]] = []

    def lookup_transform(self, target: str, source: str, time: Any, timeout: Any) -> Any:
        self.calls.append((target, source, time, timeout))
        if (target, source) != (OPTICAL, "base_link"):
            raise LookupError_(f'"{source}" passed to lookupTransform does not exist')
        tf = TransformStamped(header=Header(frame_id=target), child_frame_id=source)
        tf.transform.translation = Vector3(
            x=BODY_TO_OPTICAL_T[0], y=BODY_TO_OPTICAL_T[1], z=BODY_TO_OPTICAL_T[2]
        )
        qx, qy, qz, qw = BODY_TO_OPTICAL_Q
        tf.transform.rotation = Quaternion(x=qx, y=qy, z=qz, w=qw)
        return tf


def point_in(frame_id: str, x: float, y: float, z: float, sec: int = 0) -> PointStamped:
    msg = PointStamped(header=Header(frame_id=frame_id, stamp=Time(sec=sec)))
    msg.point.x, msg.point.y, msg.point.z = x, y, z
    return msg


def shown_frame(width: int = W, height: int = H, info: CameraInfo | None = None) -> Any:
    """What `to_pixel` reads of a ProcessedFrame: header, result size and the depth's info."""
    return SimpleNamespace(
        header=Header(frame_id=OPTICAL),
        result=SimpleNamespace(width=width, height=height),
        depth=None if info is None else SimpleNamespace(info=info),
    )


def prompts() -> ClickPrompts:
    camera = SimpleNamespace(topic=lambda n: n)  # the default camera's names
    return ClickPrompts(SimpleNamespace(resolve_topic_name=lambda n: f"/ns/{n}"), camera, 0.0)


def test_to_pixel_in_the_optical_frame_needs_no_tf_and_needs_camera_info() -> None:
    clicks = prompts()
    assert clicks.to_pixel(point_in(OPTICAL, 0.5, -0.25, 2.0), shown_frame()) == (
        "no CameraInfo received yet on /ns/camera_info"
    )
    clicks.camera_info = camera_info()
    assert clicks.to_pixel(point_in(OPTICAL, 0.5, -0.25, 2.0), shown_frame()) == (120, 38)
    # CameraInfo calibrated at twice the processed resolution: K is scaled to the image.
    clicks.camera_info = camera_info(2 * W, 2 * H)
    assert clicks.to_pixel(point_in(OPTICAL, 0.5, -0.25, 2.0), shown_frame()) == (120, 38)
    # With use_depth the frame's synchronised CameraInfo wins over the latest one.
    other = camera_info()
    other.k[2] = 80.0
    assert clicks.to_pixel(point_in(OPTICAL, 0.5, -0.25, 2.0), shown_frame(info=other)) == (
        130,
        38,
    )
    behind = clicks.to_pixel(point_in(OPTICAL, 0.0, 0.0, -1.0), shown_frame())
    assert isinstance(behind, str) and "behind the camera" in behind


def test_to_pixel_from_another_frame_goes_through_the_tf_buffer() -> None:
    clicks = prompts()
    clicks.camera_info = camera_info()
    refused = clicks.to_pixel(point_in("base_link", 2.0, 0.5, 0.25), shown_frame())
    assert isinstance(refused, str) and "install tf2_ros" in refused and f"'{OPTICAL}'" in refused
    buffer = StandInBuffer()
    clicks.tf_buffer = buffer
    # optical (-0.5, 0.05, 1.9): u = 200 * -0.5 / 1.9 + 70 = 17.37, v = 100 * 0.05 / 1.9 + 50 = 52.6
    assert clicks.to_pixel(point_in("base_link", 2.0, 0.5, 0.25, sec=7), shown_frame()) == (17, 53)
    target, source, time, timeout = buffer.calls[-1]
    assert (target, source) == (OPTICAL, "base_link")
    assert time.nanoseconds == 7 * 10**9  # at the click's stamp
    assert timeout.nanoseconds == int(TF_TIMEOUT_S * 1e9)
    # A point behind base_link's camera: transformed, then refused.
    behind = clicks.to_pixel(point_in("base_link", -1.0, 0.0, 0.3), shown_frame())
    assert isinstance(behind, str) and "behind the camera" in behind
    unknown = clicks.to_pixel(point_in("map", 1.0, 0.0, 0.0), shown_frame())
    assert isinstance(unknown, str)
    assert unknown.startswith(f"no transform 'map' -> '{OPTICAL}': LookupError_")


# ------------------------------------------------------------------ over DDS
def frame(sec: int) -> Any:
    return grey_frame(sec, W, H, frame_id=OPTICAL, value=100)


def test_rviz_points_become_objects_at_the_projected_pixel(ros_graph: RosGraph) -> None:
    node = start_node(ros_graph, click_min_interval_s=0.0)
    clicks = node.clicks
    clicks.tf_buffer = None  # tf2_ros absent (as here, even where it is installed)
    results: list[tuple[int, int] | str] = []
    to_pixel = clicks.to_pixel

    def recorded(msg: PointStamped, latest: Any) -> tuple[int, int] | str:
        results.append(to_pixel(msg, latest))
        return results[-1]

    clicks.to_pixel = recorded  # type: ignore[method-assign]
    client = Client(ros_graph, frame=frame)
    info_pub = client.node.create_publisher(CameraInfo, "camera_info", reliable_qos())
    point_pub = client.node.create_publisher(PointStamped, CLICKED_POINT_TOPIC, reliable_qos())
    assert wait_for(
        lambda: (
            client.connected()
            and point_pub.get_subscription_count()
            and info_pub.get_subscription_count()
        )
    )

    def info_arrived() -> bool:
        if clicks.camera_info is None:
            info_pub.publish(camera_info())  # best-effort input QoS: again until it lands
        return clicks.camera_info is not None

    assert wait_for(info_arrived)
    client.send_until_output(1)
    session = node.session
    assert session is not None

    # In front of the camera, in its optical frame: an object around pixel (120, 38).
    point_pub.publish(point_in(OPTICAL, 0.5, -0.25, 2.0))
    assert wait_for(lambda: session.object_ids == ["1"])
    assert results == [(120, 38)]
    box = client.send_until_output(2).instances[0].bbox
    assert box.x_offset <= 120 < box.x_offset + box.width
    assert box.y_offset <= 38 < box.y_offset + box.height

    # Behind the camera, then in another frame without tf2: refused, nothing made, node alive.
    point_pub.publish(point_in(OPTICAL, 0.0, 0.0, -1.0))
    point_pub.publish(point_in("base_link", 2.0, 0.5, 0.25))
    assert wait_for(lambda: len(results) == 3)
    assert isinstance(results[1], str) and "behind the camera" in results[1]
    assert isinstance(results[2], str) and "install tf2_ros" in results[2]
    out = client.send_until_output(3)
    assert session.object_ids == ["1"] and len(out.instances) == 1

    # With a tf buffer: the base_link point becomes an object at its projected pixel (17, 53).
    clicks.tf_buffer = StandInBuffer()
    point_pub.publish(point_in("base_link", 2.0, 0.5, 0.25))
    assert wait_for(lambda: session.object_ids == ["1", "2"])
    assert results[-1] == (17, 53)
    box = client.send_until_output(4).instances[1].bbox
    assert box.x_offset <= 17 < box.x_offset + box.width
    assert box.y_offset <= 53 < box.y_offset + box.height


def test_rviz_points_use_the_synchronised_camera_info_with_depth(ros_graph: RosGraph) -> None:
    node = start_node(ros_graph, namespace="/rgbd", use_depth=True)
    # Only the synchroniser subscribes camera_info: no second subscription for clicks.
    assert wait_for(lambda: node.count_subscribers("/clicked_point") >= 1)
    assert wait_for(lambda: node.count_subscribers("/rgbd/camera_info") == 1)
    assert node.clicks.camera_info is None
