"""The installed package driven by the real ROS 2 tools, as a robot engineer drives it.

`ros2 launch`, `ros2 run`, `ros2 node / param / service / topic / lifecycle`: the real CLI
(ros2cli, launch, launch_ros), present on a robot with ROS 2 from apt and here after
`make setup ROS_SRC=../shared/ros-src`. Where it is absent these tests skip, unless
SEG_ROS_REQUIRE_ROS_TOOLS=1 (set by .ci/run when it installed them): then absence fails.

Every launch runs as a user starts it (a subprocess in its own session, like a terminal's
process group) in its own ROS domain, so the variants start together and never see each other.
Ctrl-C is SIGINT to that process group; a clean exit is code 0 and no traceback. The service
calls are the README's own example lines, parsed from README.md (the README cannot drift).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from seg_ros.testing.graph import DOMAIN_ID, wait_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NODE = "/segmentation_node"
#: The tools' Python modules this file needs besides the `ros2` executable.
MODULES = ("launch", "launch_ros", "ros2launch", "ros2lifecycle", "ros2param", "ros2service")
#: Generous: CLI start-up and DDS discovery on a loaded 2-core VM take seconds each.
TIMEOUT = 90.0

pytestmark = pytest.mark.graph


def _ros2() -> str | None:
    """The `ros2` executable: beside this interpreter (a venv prefix), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "ros2"
    return str(beside) if beside.exists() else shutil.which("ros2")


ROS2 = _ros2()
MISSING = [m for m in MODULES if importlib.util.find_spec(m) is None]
REASON = (
    "the real ROS 2 CLI is not installed (apt: ros-jazzy-ros2cli ros-jazzy-ros2launch; here: "
    f"make setup ROS_SRC=../shared/ros-src); missing: {['ros2'] * (ROS2 is None) + MISSING}"
)


@pytest.fixture(scope="module")
def tools() -> Iterator[None]:
    """Skips (fails under SEG_ROS_REQUIRE_ROS_TOOLS=1) where the real tools are absent.

    Every query here passes --no-daemon; should one still start a `ros2` daemon in one of this
    module's domains, it is stopped at the end (nothing of the tests may keep running).
    """
    if ROS2 is None or MISSING:
        if os.environ.get("SEG_ROS_REQUIRE_ROS_TOOLS") == "1":
            pytest.fail(REASON)
        pytest.skip(REASON)
    yield
    try:
        import psutil
    except ImportError:
        return
    ours = {str(_domain(k)) for k in range(len(LAUNCHES) + 2)}
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        daemon = "ros2-daemon" in cmd and "--ros-domain-id" in cmd
        if daemon and cmd[cmd.index("--ros-domain-id") + 1] in ours:
            with contextlib.suppress(psutil.Error):
                proc.terminate()


def _domain(k: int) -> int:
    """A domain of its own for launch k, away from conftest's 1..100 (valid up to 232)."""
    return 101 + (DOMAIN_ID * 7 + 13 * k) % 130


def _env(domain: int) -> dict[str, str]:
    """What a user's shell has after `source <prefix>/setup.bash`, PATH without the venv."""
    env = {
        **os.environ,
        "ROS_DOMAIN_ID": str(domain),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
        # The venv is the prefix; on a robot `source install/setup.bash` has set it already.
        "AMENT_PREFIX_PATH": os.environ.get("AMENT_PREFIX_PATH") or sys.prefix,
    }
    venv_bin = str(pathlib.Path(sys.executable).parent)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env["PATH"] = os.pathsep.join(path or ["/usr/bin", "/bin"])
    return env


class Proc:
    """A `ros2 ...` process in its own session; its output is collected line by line."""

    def __init__(self, args: list[str], domain: int) -> None:
        assert ROS2 is not None
        self.args = args
        self.domain = domain
        self.popen = subprocess.Popen(
            [ROS2, *args],
            env=_env(domain),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = TIMEOUT) -> str:
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in list(self.lines) if regex.search(line)), None)

        ok = wait_for(lambda: found() or self.popen.poll() is not None, timeout, period=0.1)
        line = found()
        assert ok and line, f"no line matching {pattern!r} from ros2 {self.args}:\n{self.output}"
        return line

    def ctrl_c(self, timeout: float = 60.0) -> int:
        """SIGINT to the whole process group, as Ctrl-C in its terminal; the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGINT)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ros2 {self.args} ignored Ctrl-C:\n{self.output}") from None
        self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def ros2(domain: int, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run one `ros2` command to completion (no daemon: nothing is left running)."""
    assert ROS2 is not None
    return subprocess.run(
        [ROS2, *args], env=_env(domain), capture_output=True, text=True, timeout=timeout
    )


def until(domain: int, *args: str, ok: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
    """Repeat a `ros2` query until `ok(its output)` (discovery takes a while); that output."""
    last: list[str] = [""]

    def check() -> bool:
        run = ros2(domain, *args)
        last[0] = run.stdout + run.stderr
        return ok(last[0])

    assert wait_for(check, timeout, period=0.5), f"ros2 {' '.join(args)}:\n{last[0]}"
    return last[0]


#: What a fresh `ros2` process says while it has not discovered the node yet.
NOT_YET = ("Node not found", "not available")


def once_found(domain: int, *args: str) -> str:
    """Run a `ros2` command against the node, again while it is not discovered yet; output."""
    return until(domain, *args, ok=lambda out: not any(text in out for text in NOT_YET))


def assert_clean_exit(code: int, proc: Proc) -> None:
    out = proc.output
    assert code == 0, out
    assert "Traceback" not in out and "process has died" not in out, out


# ------------------------------------------------------------------ launches, started together
#: name -> `ros2 launch` arguments. Each runs in _domain(index).
LAUNCHES: dict[str, list[str]] = {
    "plain": [
        "segment.launch.py",
        "image:=/demo_camera/image",
        "qos_reliability:=reliable",
        "qos_depth:=2",
    ],
    "lifecycle": ["segment.launch.py", "lifecycle:=true", "autostart:=true"],
    # fake: a box prompt's mask is the box, so its 3D is the synthetic plane's exactly.
    "depth": ["segment.launch.py", "image:=/cam/image", "depth:=/cam/depth", "backend:=fake"],
    "namespace": ["segment.launch.py", "namespace:=robot1"],
    "compressed": ["segment.launch.py", "image:=/cam/color", "use_compressed:=true"],
    # Two cameras on one model: topics remapped in order, services under each camera's name.
    "cameras": [
        "segment.launch.py",
        "cameras:=head wrist",
        "images:=/head/color/image_raw /wrist/color/image_raw",
        "backend:=fake",
        "concepts:=person,red mug",  # reaches every camera (fake has no text: refused, logged)
    ],
}


class Launches:
    def __init__(self) -> None:
        self.procs: dict[str, Proc] = {}
        self.domains = {name: _domain(k) for k, name in enumerate(LAUNCHES)}
        self.camera: Proc | None = None

    def start(self) -> None:
        for name, args in LAUNCHES.items():
            self.procs[name] = Proc(["launch", "seg_ros", *args], self.domains[name])
        # The README's example coordinates are for 640x480 frames: the sample camera's size.
        # `ros2 run` with the venv's bin off PATH: the installed script names its interpreter.
        self.camera = Proc(
            ["run", "seg_ros", "demo_camera", "--ros-args", "-p", "fps:=5.0"],
            self.domains["plain"],
        )

    def close(self) -> None:
        for proc in [*self.procs.values(), self.camera]:
            if proc is not None and proc.popen.poll() is None:
                proc.kill()


@pytest.fixture(scope="module")
def launches(tools: None) -> Iterator[Launches]:
    group = Launches()
    group.start()
    try:
        yield group
    finally:
        group.close()


def _segmenting(proc: Proc) -> str:
    return proc.wait_for_line(r"segmentation_node\]: segmenting ")  # [ns.name] with a namespace


# ------------------------------------------------------------------ README examples
def readme_service_calls() -> list[tuple[str, list[str]]]:
    """(comment above it, argv) of each `ros2 service call` line of the README's examples."""
    text = README.read_text()
    start = text.index("### Examples, as a robot user types them")
    block = text[text.index("```bash", start) + len("```bash") : text.index("```\n", start + 50)]
    calls: list[tuple[str, list[str]]] = []
    comment, pending = "", ""
    for raw in block.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            comment = line
            continue
        pending += line.removesuffix("\\")
        if line.endswith("\\"):
            continue
        if pending:
            argv = shlex.split(pending)
            assert argv[:3] == ["ros2", "service", "call"], pending
            calls.append((comment, argv[1:]))
            comment = ""  # a comment belongs to the command right below it
        pending = ""
    return calls


def backends_needed(comment: str) -> set[str]:
    """Backends a README comment names for its call: "(sam2 / sam3 backends: ...)"."""
    found = re.search(r"\(([\w /]+?) backends?\b", comment)
    return {b.strip() for b in found.group(1).split("/")} if found else set()


def response(out: str) -> tuple[bool, str]:
    """success and message of a `ros2 service call` answer."""
    found = re.search(r"_Response\(success=(True|False), message=(['\"])(.*?)\2", out)
    assert found, out[-3000:]
    return found.group(1) == "True", found.group(3)


def test_readme_examples_are_parsed() -> None:
    calls = readme_service_calls()
    services = [argv[2] for _, argv in calls]
    for name in ("add_points", "add_box", "add_text", "remove_object", "reset", "segment"):
        assert f"{NODE}/{name}" in services
    assert {frozenset(backends_needed(c)) for c, _ in calls} >= {
        frozenset(),
        frozenset({"sam3"}),
        frozenset({"sam2", "sam3"}),
    }


# ------------------------------------------------------------------ the tests
def test_plain_launch_graph_params_and_readme_service_calls(launches: Launches) -> None:
    proc, domain = launches.procs["plain"], launches.domains["plain"]
    line = _segmenting(proc)
    assert "/demo_camera/image, reliable, history 2" in line, line  # the QoS launch arguments
    until(domain, "node", "list", "--no-daemon", ok=lambda out: NODE in out.split())
    got = once_found(domain, "param", "get", NODE, "qos_reliability", "--no-daemon")
    assert "String value is: reliable" in got, got
    described = once_found(domain, "param", "describe", NODE, "qos_depth", "--no-daemon")
    assert "Read only: true" in described and "Min value: 1" in described, described
    refused = once_found(domain, "param", "set", NODE, "max_objects", "3", "--no-daemon")
    assert "Setting parameter failed" in refused and "read-only" in refused, refused
    services = until(
        domain, "service", "list", "--no-daemon", ok=lambda out: f"{NODE}/segment" in out
    ).split()
    for name in ("add_points", "add_box", "add_mask", "add_text", "remove_object", "reset"):
        assert f"{NODE}/{name}" in services

    # The node must have a frame before prompts: the camera streams once the node subscribes.
    assert launches.camera is not None
    launches.camera.wait_for_line(r"demo clip 640x480")
    until(
        domain,
        "topic",
        "echo",
        "--once",
        "--no-daemon",
        "--qos-reliability",
        "reliable",
        "--field",
        "header.frame_id",
        f"{NODE}/instances",
        ok=lambda out: "demo_camera_optical_frame" in out,
    )
    results = []
    for comment, argv in readme_service_calls():
        ok, message = response(ros2(domain, *argv).stdout)  # it waits for the service
        results.append((argv[2], ok, message))
        needed = backends_needed(comment)
        if needed and "classic" not in needed:  # the default backend refuses, saying why
            assert not ok, (comment, message)
            assert "text" in message or "one mask per prompt" in message, message
        else:
            assert ok, (comment, argv, message)
    names = [(name.rsplit("/", 1)[1], message) for name, _, message in results]
    assert names[0] == ("add_points", "created object 1 'mug'"), names
    assert names[1][1].startswith("refined object 1"), names
    assert names[2][1].startswith("created object 2 'box'"), names

    # Reliable outputs, read the way the README says (the node's own rates in /diagnostics).
    diag = until(
        domain,
        "topic",
        "echo",
        "--once",
        "--no-daemon",
        "/diagnostics",
        ok=lambda out: "processed_hz" in out,
    )
    assert "seg_ros: /segmentation_node" in diag

    assert_clean_exit(proc.ctrl_c(), proc)
    code = launches.camera.ctrl_c()
    assert code == 0 and "Traceback" not in launches.camera.output, launches.camera.output


def test_lifecycle_launch_autostarts_then_every_transition_with_ros2_lifecycle(
    launches: Launches,
) -> None:
    proc, domain = launches.procs["lifecycle"], launches.domains["lifecycle"]
    _segmenting(proc)  # autostart: configured and activated by the launch file
    until(domain, "lifecycle", "get", NODE, "--no-daemon", ok=lambda out: out.startswith("active"))
    for transition, services in (
        ("deactivate", False),
        ("activate", True),
        ("deactivate", None),
        ("cleanup", None),
        ("configure", None),
        ("activate", None),
        ("shutdown", False),
    ):
        run = once_found(domain, "lifecycle", "set", NODE, transition, "--no-daemon")
        assert "Transitioning successful" in run, (transition, run)
        if services is not None:  # the node's own services exist only while active
            until(
                domain,
                "service",
                "list",
                "--no-daemon",
                ok=lambda out, want=services: (f"{NODE}/add_box" in out.split()) == want,
            )
    got = once_found(domain, "lifecycle", "get", NODE, "--no-daemon")
    assert got.startswith("finalized"), got
    assert_clean_exit(proc.ctrl_c(), proc)


def test_depth_launch_syncs_with_message_filters_and_stops_cleanly(launches: Launches) -> None:
    """image + depth + camera_info through the real message_filters, 3D out, then Ctrl-C."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from visualization_msgs.msg import MarkerArray

    from seg_ros.msg import InstanceArray
    from seg_ros.srv import AddBox
    from seg_ros.testing.rgbd_scene import PLANE_BOX, rgbd

    proc, domain = launches.procs["depth"], launches.domains["depth"]
    line = _segmenting(proc)
    assert "/cam/image + /cam/depth + /cam/camera_info" in line, line  # camera_info beside
    assert "(message_filters approximate-time sync)" in line, line
    assert "history 5" in line, line  # depth sync keeps >= 5 per input

    context = Context()
    rclpy.init(context=context, domain_id=domain)
    executor = SingleThreadedExecutor(context=context)
    node = rclpy.create_node("rgbd_camera", context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        pubs = [
            node.create_publisher(Image, "/cam/image", qos),
            node.create_publisher(Image, "/cam/depth", qos),
            node.create_publisher(CameraInfo, "/cam/camera_info", qos),
        ]
        instances: list[Any] = []
        markers: list[Any] = []
        node.create_subscription(InstanceArray, f"{NODE}/instances", instances.append, qos)
        node.create_subscription(MarkerArray, f"{NODE}/markers", markers.append, qos)
        assert wait_for(lambda: all(p.get_subscription_count() for p in pubs), TIMEOUT)
        sec = iter(range(1, 10_000))

        def streamed(match: Callable[[Any], bool]) -> bool:
            s = next(sec)
            for pub, msg in zip(pubs, rgbd(s), strict=True):
                pub.publish(msg)
            return any(match(m) for m in instances)

        assert wait_for(lambda: streamed(lambda m: True), TIMEOUT, period=0.2)
        client = node.create_client(AddBox, f"{NODE}/add_box")
        assert client.wait_for_service(timeout_sec=TIMEOUT)
        future = client.call_async(AddBox.Request(box=PLANE_BOX, label="plane"))
        assert wait_for(future.done, TIMEOUT)
        assert future.result().success, future.result().message
        assert wait_for(
            lambda: streamed(
                lambda m: bool(m.instances) and math.isfinite(m.instances[0].centroid.z)
            ),
            TIMEOUT,
            period=0.2,
        )
        assert wait_for(lambda: streamed(lambda m: bool(markers and markers[-1].markers)), 30)
        for _ in range(3):  # frames still coming when Ctrl-C arrives
            streamed(lambda m: False)
        code = proc.ctrl_c()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        spinner.join(timeout=5)
    z = [m.instances[0].centroid.z for m in instances if m.instances]
    assert any(abs(v - 1.5) < 1e-6 for v in z), z  # the plane at 1.5 m of the synthetic depth
    assert_clean_exit(code, proc)


def test_namespace_and_compressed_launches(launches: Launches) -> None:
    ns, dn = launches.procs["namespace"], launches.domains["namespace"]
    comp, dc = launches.procs["compressed"], launches.domains["compressed"]
    assert "segmenting /robot1/image," in _segmenting(ns)
    assert "segmenting /cam/color/compressed," in _segmenting(comp)
    until(dn, "node", "list", "--no-daemon", ok=lambda out: "/robot1/segmentation_node" in out)
    services = until(
        dn,
        "service",
        "list",
        "--no-daemon",
        ok=lambda out: "/robot1/segmentation_node/add_points" in out,
    )
    assert f"{NODE}/add_points" not in services.split()
    info = until(
        dc,
        "topic",
        "info",
        "/cam/color/compressed",
        "--no-daemon",
        ok=lambda out: "Subscription count: 1" in out,
    )
    assert "sensor_msgs/msg/CompressedImage" in info, info
    for proc in (ns, comp):
        assert_clean_exit(proc.ctrl_c(), proc)


def test_cameras_launch_serves_each_camera_under_its_name(launches: Launches) -> None:
    proc, domain = launches.procs["cameras"], launches.domains["cameras"]
    for name in ("head", "wrist"):
        line = proc.wait_for_line(rf"camera '{name}': segmenting ")
        assert f"segmenting /{name}/color/image_raw," in line, line
    services = until(
        domain,
        "service",
        "list",
        "--no-daemon",
        ok=lambda out: all(f"{NODE}/{c}/add_points" in out for c in ("head", "wrist")),
    )
    assert f"{NODE}/add_points" not in services.split()  # no camera without a name
    until(
        domain,
        "topic",
        "info",
        "/wrist/color/image_raw",
        "--no-daemon",
        ok=lambda out: "Subscription count: 1" in out,
    )
    topics = until(
        domain, "topic", "list", "--no-daemon", ok=lambda out: f"{NODE}/head/instances" in out
    )
    assert f"{NODE}/wrist/instances" in topics and "/wrist/color/camera_info" in topics
    # The launch argument's standing queries reached each camera's session (the fake backend
    # has no text detector, so each is refused with the reason, and the node goes on).
    for name in ("head", "wrist"):
        for text in ("person", "red mug"):
            proc.wait_for_line(rf"camera '{name}': concept '{text}' not started: .*text")
    assert_clean_exit(proc.ctrl_c(), proc)


def test_lifecycle_launch_with_a_bad_model_says_it_stays_unconfigured(
    tools: None, tmp_path: pathlib.Path
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    backend: fake\n"
        "    backend_options: '{\"no_such_option\": 1}'\n"
    )
    domain = _domain(len(LAUNCHES))
    proc = Proc(
        ["launch", "seg_ros", "segment.launch.py", "lifecycle:=true", f"params_file:={params}"],
        domain,
    )
    try:
        proc.wait_for_line(r"no_such_option.*stays unconfigured")
        assert "services answer" not in proc.output, proc.output
        until(domain, "lifecycle", "get", NODE, "--no-daemon", ok=lambda o: "unconfigured" in o)
        assert_clean_exit(proc.ctrl_c(), proc)
    finally:
        proc.kill()


def test_demo_launch_runs_to_completion(tools: None, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "demo_out"
    proc = Proc(
        ["launch", "seg_ros", "demo.launch.py", "frames:=40", f"output_dir:={out}"],
        _domain(len(LAUNCHES) + 1),
    )
    try:
        code = proc.popen.wait(timeout=240)
        proc._reader.join(timeout=10)
    finally:
        proc.kill()
    assert code == 0, proc.output[-4000:]
    assert "Traceback" not in proc.output and "process has died" not in proc.output, proc.output
    assert (out / "summary.json").exists() and list(out.glob("overlay_*.png")), proc.output[-2000:]


def test_demo_launch_arguments_are_described(tools: None) -> None:
    run = ros2(_domain(0), "launch", "seg_ros", "demo.launch.py", "--show-args")
    assert run.returncode == 0, run
    for name in ("backend", "frames", "fps", "output_dir"):
        assert f"'{name}':" in run.stdout
    assert "no description given" not in run.stdout, run.stdout


def test_ros2_run_works_without_the_venv_first_on_path(tools: None) -> None:
    """`ros2 run seg_ros <script>` runs the interpreter the package was built for."""
    for script in ("seg-ros-download", "add_reference"):
        run = ros2(_domain(0), "run", "seg_ros", script, "--help")
        assert run.returncode == 0 and "usage" in run.stdout.lower(), run


def _installed_scripts() -> list[pathlib.Path]:
    prefix = pathlib.Path(sys.prefix)
    with contextlib.suppress(Exception):  # ament_index finds the install on a robot
        from ament_index_python.packages import get_package_prefix

        prefix = pathlib.Path(get_package_prefix("seg_ros"))
    return sorted((prefix / "lib" / "seg_ros").glob("*"))


def test_installed_scripts_name_an_interpreter_that_has_seg_ros() -> None:
    """No ROS CLI needed: each lib/seg_ros script's interpreter imports seg_ros, PATH or not."""
    scripts = _installed_scripts()
    if not scripts:
        pytest.skip("seg_ros is not installed (make setup)")
    names = {s.name for s in scripts}
    assert {"segmentation_node", "segmentation_lifecycle_node", "seg-ros-download"} <= names
    env = _env(_domain(0))
    for script in scripts:
        shebang = script.read_text().splitlines()[0]
        assert shebang.startswith("#!"), script
        interpreter = shlex.split(shebang[2:])
        check = subprocess.run(
            [*interpreter, "-c", "import seg_ros.segmentation_node"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, (script, shebang, check.stderr[-2000:])
    run = subprocess.run(
        [str(scripts[0].parent / "seg-ros-download"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0 and "usage" in run.stdout.lower(), run
