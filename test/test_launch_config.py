"""launch/segment.launch.py and config/seg_ros.yaml agree with the README and the node.

These checks read the launch file as source (compiled, not imported), so they run where
`launch` is absent too (the PyPI wheels lack it); test_ros_tools.py runs the file for real with
`ros2 launch` where the real tools are installed (`make setup ROS_SRC=...`, as CI does).
"""

from __future__ import annotations

import ast
import pathlib
import py_compile
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch" / "segment.launch.py"


def _launch_arguments() -> list[str]:
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ARGUMENTS":
            return [ast.literal_eval(item)[0] for item in node.value.elts]  # type: ignore[attr-defined]
    raise AssertionError("segment.launch.py has no ARGUMENTS table")


def test_launch_file_compiles_and_declares_the_readme_arguments() -> None:
    py_compile.compile(str(LAUNCH), doraise=True, cfile=None)
    readme = (ROOT / "README.md").read_text()
    start = readme.index("Launch arguments of `segment.launch.py`:")
    sentence = readme[start : readme.index("`ros2 launch", start)]
    documented = [
        name for name in re.findall(r"`([^`]+)`", sentence)[1:] if re.fullmatch(r"[a-z_]+", name)
    ]
    assert _launch_arguments() == documented
    text = LAUNCH.read_text()
    for declared in ("DeclareLaunchArgument(", "OpaqueFunction(", "generate_launch_description"):
        assert declared in text
