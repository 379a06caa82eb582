"""Show the running node an object on an image file: `~/add_reference` from the command line.

    python -m seg_ros.tools.add_reference mug.jpg --mask mug_mask.png --label mug
    python -m seg_ros.tools.add_reference shelf.png --box 120 80 60 90 --label mug
    python -m seg_ros.tools.add_reference shelf.png --point 150 120 --object-id 3
        [--node /segmentation_node] [--camera head] [--save-mask taken.png] [--timeout 30]

A `ros2 service call` cannot carry a photo (the request holds a sensor_msgs/Image): this sends
the file's pixels as bgr8 (what OpenCV reads; the node converts), the mask file (any image:
non-zero = object, the photo's size) as mono8, a box as x y width height, points with
`--point X Y` (repeatable; `--background X Y` for a background point). It prints the node's
answer (object id, reference id, score) and exits 0 when the node accepted the reference.
`--save-mask` writes the region the node took from the photo (to check a box or a click).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import cv2
import numpy as np

#: Service answer timeout (s): the node may be loading its model.
CALL_TIMEOUT = 30.0


def build_request(
    image_path: str | pathlib.Path,
    *,
    mask_path: str | pathlib.Path | None = None,
    box: tuple[int, int, int, int] | None = None,
    points: list[tuple[float, float]] | None = None,
    point_labels: list[int] | None = None,
    label: str = "",
    object_id: str = "",
) -> Any:
    """The `seg_ros/AddReference` request for an image file and a mask file, box (x, y, width,
    height, pixels of the image) or points; ValueError for an unreadable file."""
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import RegionOfInterest

    from seg_ros.conversions import numpy_to_image
    from seg_ros.srv import AddReference

    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {image_path}")
    req = AddReference.Request(object_id=object_id, label=label)
    req.image = numpy_to_image(np.ascontiguousarray(bgr), "bgr8")
    req.image.header.frame_id = pathlib.Path(image_path).name
    if mask_path is not None:
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ValueError(f"cannot read mask {mask_path}")
        req.mask = numpy_to_image(((mask > 0) * 255).astype(np.uint8), "mono8")
    if box is not None:
        x, y, w, h = (int(v) for v in box)
        req.box = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
    for px, py in points or ():
        req.points.append(Point(x=float(px), y=float(py)))
    req.point_labels = [int(v) for v in (point_labels or [1] * len(req.points))]
    return req


def call(
    request: Any,
    node_name: str = "/segmentation_node",
    camera: str = "",
    timeout: float = CALL_TIMEOUT,
) -> Any:
    """Send `request` to `<node_name>[/<camera>]/add_reference`; the response (None: no answer
    within `timeout`)."""
    import rclpy

    from seg_ros.srv import AddReference

    rclpy.init()
    try:
        node = rclpy.create_node("seg_ros_add_reference")
        service = f"{node_name.rstrip('/')}" + (f"/{camera}" if camera else "") + "/add_reference"
        client = node.create_client(AddReference, service)
        if not client.wait_for_service(timeout_sec=timeout):
            print(f"{service} is not available (is the node running?)", file=sys.stderr)
            return None
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        return future.result() if future.done() else None
    finally:
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="the image file the object is on (any OpenCV format)")
    parser.add_argument("--mask", help="mask file of the image's size: non-zero = the object")
    parser.add_argument("--box", type=int, nargs=4, metavar=("X", "Y", "W", "H"))
    parser.add_argument("--point", type=float, nargs=2, action="append", default=[])
    parser.add_argument("--background", type=float, nargs=2, action="append", default=[])
    parser.add_argument("--label", default="")
    parser.add_argument("--object-id", default="", help="add to this object (default: new)")
    parser.add_argument("--node", default="/segmentation_node")
    parser.add_argument("--camera", default="", help="the camera's name with `cameras`")
    parser.add_argument("--save-mask", default="", help="write the region the node took here")
    parser.add_argument("--timeout", type=float, default=CALL_TIMEOUT)
    args = parser.parse_args(argv)
    points = [(float(x), float(y)) for x, y in args.point + args.background]
    labels = [1] * len(args.point) + [0] * len(args.background)
    try:
        request = build_request(
            args.image,
            mask_path=args.mask,
            box=tuple(args.box) if args.box else None,
            points=points,
            point_labels=labels,
            label=args.label,
            object_id=args.object_id,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    response = call(request, args.node, args.camera, args.timeout)
    if response is None:
        print("no answer from the node", file=sys.stderr)
        return 1
    if not response.success:
        print(f"refused: {response.message}", file=sys.stderr)
        return 1
    print(
        f"object_id: '{response.object_id}' reference_id: {response.reference_id} "
        f"score: {response.score:.2f} ({response.message})"
    )
    if args.save_mask:
        from seg_ros.conversions import image_to_numpy

        cv2.imwrite(args.save_mask, image_to_numpy(response.reference_mask))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
