"""A camera that plays the demo clip: a real recording (`clip`, e.g. data/bedroom.mp4) or the
synthetic one, three toys on a tiled floor (seg_ros.tools.synthetic).

Publishes `~/image` (sensor_msgs/Image, rgb8, reliable depth 1) at `fps`, stamped with the
time of publication, frame_id `frame_id`, looping the clip. The clip starts when the first
subscriber appears, so a node that starts late still sees the still opening where the demo's
prompts (`demo_plan`) land on their objects.

With `pace_topic` (a node's `~/instances`), the camera publishes the next frame only once the
node has answered the previous one (an InstanceArray with its stamp), or after
`pace_timeout_s`: the node then sees every frame of the clip, whatever the machine's load (a
test's reproducible run; a real camera does not wait, and `make demo` does not either). Paced,
the still opening (`hold_first_s`) is counted in frames (hold_first_s x fps), not in time.

    python -m seg_ros.tools.demo_camera --ros-args -p width:=640 -p height:=480 -p fps:=15.0

`demo_plan(width, height)` gives the prompts the demo client sends for this clip; it needs no
ROS (launch files and `seg_ros.tools.demo` import it).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np

from seg_ros.tools.synthetic import DEMO_FRAMES, box_of, interior_point, make_sequence


def demo_plan(width: int = 640, height: int = 480) -> dict[str, Any]:
    """Prompts for the demo clip at `width` x `height`, in pixels.

    Returns {"point": (x, y) on the red ball during the whole clip, "background_point": (x, y)
    on the floor beside the ball, never covered by it, "box": (x, y, w, h) around the blue box
    while it rests in the clip's still opening}.
    """
    seq = make_sequence("demo", width, height)
    frames = range(0, len(seq), 3)
    always = np.ones((height, width), bool)
    ever = np.zeros((height, width), bool)
    for i in frames:
        ball = seq.object_mask(1, i)
        always &= ball
        ever |= ball
    point = interior_point(always)
    reach = box_of(ever)
    rest = box_of(seq.object_mask(2, 0))
    if point is None or reach is None or rest is None:
        raise ValueError(f"the demo clip is too small to prompt at {width}x{height}")
    # Left of everywhere the ball goes, by a few percent of the frame, at the point's height.
    bg_x = max(0.0, reach[0] - 0.03 * width)
    margin = max(2, int(0.06 * max(rest[2] - rest[0], rest[3] - rest[1])))
    x0, y0 = max(0, rest[0] - margin), max(0, rest[1] - margin)
    x1, y1 = min(width, rest[2] + margin), min(height, rest[3] + margin)
    return {
        "point": (round(point[0], 1), round(point[1], 1)),
        "background_point": (round(bg_x, 1), round(point[1], 1)),
        "box": (int(x0), int(y0), int(x1 - x0), int(y1 - y0)),
    }


#: The shipped real clip's prompts, pixels of its 960x540 frame 0 (data/README.md).
BEDROOM: dict[str, Any] = {
    "size": (960, 540),
    "point": (228.0, 262.0),  # the boy's white shirt
    "box": (310, 0, 205, 400),  # the girl (x, y, w, h)
    "extra_boxes": ((530, 288, 150, 124),),  # the pillow
    "background_point": (600.0, 200.0),  # the striped wall right of the girl
    "labels": ("boy", "girl", "pillow"),
}


def clip_plan(width: int) -> dict[str, Any]:
    """Prompts for the shipped bedroom clip played `width` pixels wide (aspect kept), stamped
    on the first frame the client sees (where they were drawn), at processed frames 3, 6, 12,
    20: all within the classic backend's 30 kept frames."""
    s = width / BEDROOM["size"][0]

    def scale(v: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(round(c * s, 1) for c in v)

    def box(b: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(int(round(c * s)) for c in b)

    return {
        "point": scale(BEDROOM["point"]),
        "box": box(BEDROOM["box"]),
        "extra_boxes": [box(b) for b in BEDROOM["extra_boxes"]],
        "background_point": scale(BEDROOM["background_point"]),
        "at_frames": (3, 6, 12, 20),
        "on_first_frame": True,
        "labels": BEDROOM["labels"],
    }


class ClipReader:
    """Frames of a video file as RGB uint8, `width` pixels wide (aspect kept), looping."""

    def __init__(self, path: str, width: int) -> None:
        import cv2

        self._cv2 = cv2
        self.path = path
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            raise ValueError(f"cannot open clip {path!r}")
        w = self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)
        h = self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        self.width = int(width)
        self.height = int(round(h * width / w)) if w else int(width)

    def next(self) -> np.ndarray:
        cv2 = self._cv2
        ok, bgr = self._cap.read()
        if not ok:  # end of the clip: start again
            self._cap.release()
            self._cap = cv2.VideoCapture(self.path)
            ok, bgr = self._cap.read()
            if not ok:
                raise ValueError(f"clip {self.path!r} has no frame")
        small = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from seg_ros.conversions import numpy_to_image
    from seg_ros.tools.spin import spin_in_background

    class DemoCamera(Node):
        def __init__(self) -> None:
            super().__init__("demo_camera")
            self.declare_parameter("width", 640)
            self.declare_parameter("height", 480)
            self.declare_parameter("fps", 15.0)
            self.declare_parameter("frames", DEMO_FRAMES)  # clip length (it loops)
            self.declare_parameter("frame_id", "demo_camera_optical_frame")
            self.declare_parameter("wait_for_subscriber", True)
            self.declare_parameter("clip", "")  # a video file; "" = the synthetic clip
            # Repeat the clip's first frame this long before playing it: prompts drawn on it
            # (clip_plan) land on it, however long the node and the client take to start.
            self.declare_parameter("hold_first_s", 0.0)
            self.declare_parameter("pace_topic", "")  # e.g. /segmentation_node/instances
            self.declare_parameter("pace_timeout_s", 3.0)
            width = int(self.get_parameter("width").value)
            height = int(self.get_parameter("height").value)
            fps = float(self.get_parameter("fps").value)
            if not (16 <= width <= 4096 and 16 <= height <= 4096):
                raise ValueError(f"width and height must be in [16, 4096]; got {width}x{height}")
            if not 0.1 <= fps <= 240.0:
                raise ValueError(f"fps must be in [0.1, 240]; got {fps}")
            self.frame_id = str(self.get_parameter("frame_id").value)
            self.wait = bool(self.get_parameter("wait_for_subscriber").value)
            clip = str(self.get_parameter("clip").value)
            self.clip = ClipReader(clip, width) if clip else None
            self.hold_s = max(0.0, float(self.get_parameter("hold_first_s").value))
            self.play_at: float | None = None  # when the clip starts to move (monotonic s)
            # Paced, the hold is counted in frames (hold_first_s x fps, from the node's first
            # answer): the same number of still frames every run, however loaded the machine.
            self.hold_frames = round(self.hold_s * fps)
            self.held = 0
            self.first: np.ndarray | None = None
            if self.clip is not None:
                width, height = self.clip.width, self.clip.height
            self.seq = make_sequence(
                "demo", width, height, int(self.get_parameter("frames").value) if not clip else 2
            )
            # Reliable, depth 1: matches best-effort (sensor data) and reliable subscribers alike,
            # and never queues more than the newest frame.
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
            qos_answers = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            self.pub = self.create_publisher(Image, "~/image", qos)
            self.answered = threading.Condition()
            self.answered_ns = -1  # stamp of the newest frame the node answered
            self.pace_timeout = float(self.get_parameter("pace_timeout_s").value)
            pace = str(self.get_parameter("pace_topic").value)
            if pace:
                from seg_ros.msg import InstanceArray

                # Reliable, as the node publishes its outputs: a lost answer would stall a frame.
                self.create_subscription(InstanceArray, pace, self._on_answer, qos_answers)
            self.paced = bool(pace)
            self.index = 0
            self.period = 1.0 / fps
            self.get_logger().info(
                f"demo clip {width}x{height} at {fps:g} fps on {self.pub.topic_name}"
                + (" (starts with the first subscriber)" if self.wait else "")
            )

        def _on_answer(self, msg: Any) -> None:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self.answered:
                self.answered_ns = max(self.answered_ns, stamp_ns)
                self.answered.notify_all()

        def wait_answer(self, stamp_ns: int) -> None:
            """Paced: until the node answered the frame stamped `stamp_ns` (or the timeout)."""
            with self.answered:
                self.answered.wait_for(
                    lambda: self.answered_ns >= stamp_ns or not rclpy.ok(), self.pace_timeout
                )

        def publish_next(self) -> int:
            """Publish the next frame; its stamp (ns)."""
            if self.clip is not None:
                if self.first is None:
                    self.first = self.clip.next()
                now = time.monotonic()
                if self.paced:  # in frames, from the node's first answer (it is up)
                    if self.answered_ns >= 0:
                        self.held += 1
                    playing = self.held > self.hold_frames
                else:  # in time
                    if self.play_at is None:
                        self.play_at = now + self.hold_s
                    playing = now >= self.play_at
                image = self.clip.next() if playing else self.first
            else:
                image = self.seq.frame(self.index % len(self.seq)).image
            msg = numpy_to_image(image, "rgb8")
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = self.frame_id
            self.pub.publish(msg)
            self.index += 1
            return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = DemoCamera()
    # Frames are rendered and published from this thread at a steady rate; spinning (for
    # parameter services) runs beside it.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = spin_in_background(executor)
    try:
        while node.wait and node.pub.get_subscription_count() == 0 and rclpy.ok():
            time.sleep(0.05)
        next_t = time.monotonic()
        while rclpy.ok():
            stamp_ns = node.publish_next()
            if node.paced:
                node.wait_answer(stamp_ns)
            next_t += node.period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:  # rendering fell behind: do not try to catch up with a burst
                next_t = time.monotonic()
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if rclpy.ok():  # a real failure; after Ctrl-C a publish on the dead context is not
            node.get_logger().error(f"demo camera stopped: {exc}")
            raise
    finally:
        executor.shutdown()
        spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
