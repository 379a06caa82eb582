"""`make demo`: the package's main job, without `ros2 launch`.

Starts three processes over DDS, exactly as `ros2 launch seg_ros demo.launch.py` does on a robot:
the segmentation node (default backend from config/seg_ros.yaml), a camera publishing the sample
clip, and a client that prompts the node through its services and writes the overlays to
`--out`. Prints the client's per-frame instance summaries and the achieved frame rate.

The clip is real footage, `data/bedroom.mp4` of the source checkout (two children jumping on a
bed and a pillow; Apache-2.0, data/LICENSE-bedroom): the client clicks the boy, boxes the girl
and the pillow on the first frame it saw (stamped prompts: the node keeps recent frames) and
refines the boy with a background click. `--clip synthetic` plays the generated clip instead
(the default where the real one is absent, e.g. from an install without the source tree).

    python -m seg_ros.tools.demo [--frames 300] [--fps 15] [--backend classic] [--out demo_out]
        [--clip data/bedroom.mp4 | synthetic] [--paced]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from seg_ros.tools.demo_camera import clip_plan, demo_plan

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[2]
#: The real clip shipped in the source checkout.
DEFAULT_CLIP = PACKAGE_ROOT / "data" / "bedroom.mp4"


def _params_file() -> str:
    """The source checkout's config when run from it, else the installed share/ copy."""
    local = PACKAGE_ROOT / "config" / "seg_ros.yaml"
    if local.is_file():
        return str(local)
    return str(pathlib.Path(sys.prefix) / "share" / "seg_ros" / "config" / "seg_ros.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="frames to process, then stop")
    parser.add_argument("--fps", type=float, default=15.0, help="camera rate")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--backend", default="", help="override the params file's backend")
    parser.add_argument("--out", default="demo_out", help="folder for overlay PNGs and MP4")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument(
        "--clip",
        default=str(DEFAULT_CLIP) if DEFAULT_CLIP.is_file() else "synthetic",
        help="video file to play (its prompts: the bedroom clip's), or 'synthetic'",
    )
    # Camera and node share this host: a best-effort subscription over loopback UDP loses about
    # half the 640x480 frames (a 0.9 MB message is ~15 fragments; one lost drops the frame):
    # measured 7.8 vs 14.6 fps delivered of 15. The demo camera publishes reliable (depth 1), so
    # either choice connects.
    parser.add_argument(
        "--input-qos",
        choices=("best_effort", "reliable"),
        default="reliable",
        help="the node's input QoS reliability (the params file says best_effort)",
    )
    parser.add_argument(
        "--paced",
        action="store_true",
        help="the camera waits until the client is done with each frame (the node's answer "
        "received, the prompts due on it answered): every frame processed and every prompt "
        "landing on the same frame, whatever the load (reproducible runs for tests); a real "
        "camera does not wait",
    )
    args = parser.parse_args(argv)

    env = dict(os.environ)
    # A private DDS domain on loopback: the demo never talks to (or disturbs) a robot nearby.
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))  # valid with default ports
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONUNBUFFERED"] = "1"
    py = sys.executable
    node_cmd = [
        py, "-m", "seg_ros.segmentation_node", "--ros-args",
        "--params-file", _params_file(),
        "-r", "image:=/demo_camera/image",
    ]  # fmt: skip
    if args.backend:
        node_cmd += ["-p", f"backend:={args.backend}"]
    if args.input_qos:
        node_cmd += ["-p", f"qos_reliability:={args.input_qos}"]
    camera_cmd = [
        py, "-m", "seg_ros.tools.demo_camera", "--ros-args",
        "-p", f"width:={args.width}", "-p", f"height:={args.height}", "-p", f"fps:={args.fps}",
    ]  # fmt: skip
    if args.paced:
        # The next frame once the client is done with the last one (its prompts answered):
        # the node sees the same frames, prompted at the same frames, every run.
        camera_cmd += ["-p", "pace_topic:=/demo_client/done"]
    real = args.clip != "synthetic"
    if real:
        if not pathlib.Path(args.clip).is_file():
            parser.error(f"--clip {args.clip!r} is not a file")
        # The camera holds frame 0 for 4 s (node and client start meanwhile), then plays.
        camera_cmd += [
            "-p",
            f"clip:={pathlib.Path(args.clip).resolve()}",
            "-p",
            "hold_first_s:=4.0",
        ]
        # The bedroom prompts, stamped on the first frame seen, sent within the kept frames.
        plan = json.dumps(clip_plan(args.width))
    else:
        plan_dict = demo_plan(args.width, args.height)
        # Prompts at processed frames 5, 10, 30, 60; a short run squeezes them into its first
        # half.
        at = [5, 10, 30, 60]
        if args.frames < 2 * at[-1]:
            at = [max(1 + i, round(f * args.frames / (2 * at[-1]))) for i, f in enumerate(at)]
        plan = json.dumps({**plan_dict, "at_frames": at})
    client_cmd = [
        py, "-m", "seg_ros.tools.demo_client", "--ros-args",
        "-p", f"output_dir:={args.out}", "-p", f"frames:={args.frames}", "-p", f"plan:='{plan}'",
    ]  # fmt: skip
    print(f"[demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}; overlays -> {args.out}/", flush=True)
    procs = [subprocess.Popen(node_cmd, env=env), subprocess.Popen(camera_cmd, env=env)]
    start = time.monotonic()
    try:
        client = subprocess.run(client_cmd, env=env, timeout=args.timeout, check=False)
        code = client.returncode
    except subprocess.TimeoutExpired:
        print(f"[demo] no result after {args.timeout:.0f} s; stopping", flush=True)
        code = 1
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"[demo] finished in {time.monotonic() - start:.1f} s", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
