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


def _passed_through() -> list[str]:
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "PASSED_THROUGH":
            return list(ast.literal_eval(node.value))
    raise AssertionError("segment.launch.py has no PASSED_THROUGH table")


def test_arguments_passed_through_are_declared_node_parameters() -> None:
    """`text_detector` (and backend, model, ...) set the node parameter of the same name."""
    names = _passed_through()
    assert "text_detector" in names
    declared = set(_launch_arguments())
    params = (ROOT / "config" / "seg_ros.yaml").read_text()
    for name in names:
        assert name in declared, name
        assert re.search(rf"^\s+{name}:", params, re.MULTILINE), f"{name} is no parameter"


def test_parameter_overrides_pass_text_detector_only_when_given() -> None:
    """The launch file's own function (imported: needs `launch`, skipped without it)."""
    import importlib.util

    import pytest

    for module in ("launch", "launch_ros", "lifecycle_msgs", "ament_index_python"):
        pytest.importorskip(module)
    spec = importlib.util.spec_from_file_location("segment_launch", LAUNCH)
    assert spec is not None and spec.loader is not None
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    given = {"text_detector": " /opt/models/mm-gdino ", "concepts": "person, red mug"}
    overrides = launch_file.parameter_overrides(lambda name: given.get(name, ""))
    assert overrides == {
        "input_compressed": False,
        "text_detector": "/opt/models/mm-gdino",
        "concepts": ["person", "red mug"],
    }
    assert "text_detector" not in launch_file.parameter_overrides(lambda name: "")
