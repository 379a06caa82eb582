"""One source of truth for the node's parameters: SPECS, NodeParams, BackendConfig, the yaml.

SPECS (seg_ros.node_params) holds every name, description, range and default; the model's
defaults come from the engine's BackendConfig; NodeParams has one field per spec and no
defaults of its own; config/seg_ros.yaml lists every parameter at its default.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import typing

import pytest
import yaml

from seg_ros.engine.config import BackendConfig
from seg_ros.node_params import SPECS, NodeParams, ParameterError, declare_parameters, parse

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_spec_is_a_node_params_field_and_back_in_the_same_order() -> None:
    assert [f.name for f in dataclasses.fields(NodeParams)] == list(SPECS)


def test_node_params_has_no_defaults_of_its_own() -> None:
    for f in dataclasses.fields(NodeParams):
        assert f.default is dataclasses.MISSING, f.name
        assert f.default_factory is dataclasses.MISSING, f.name


def test_each_field_has_the_type_of_its_declared_default() -> None:
    hints = typing.get_type_hints(NodeParams)
    for name, spec in SPECS.items():
        declared = str if name == "backend_options" else hints[name]  # JSON text -> dict
        if typing.get_origin(declared) is tuple:  # tuple[str, ...]: a string array
            assert type(spec.default) is tuple and all(type(v) is str for v in spec.default), name
            continue
        assert type(spec.default) is declared, name  # 0.5 not 0, False not 0


def test_model_defaults_are_the_engines() -> None:
    overlap = [f for f in dataclasses.fields(BackendConfig) if f.name != "options"]
    assert overlap, "BackendConfig has no fields?"
    for f in overlap:
        assert SPECS[f.name].default == f.default, f.name
    assert NodeParams.defaults().backend_config() == BackendConfig()


def test_every_default_is_allowed_by_its_own_descriptor() -> None:
    for name, spec in SPECS.items():
        if spec.choices:
            assert spec.default in spec.choices, name
        if spec.int_range is not None:
            lo, hi, step = spec.int_range
            assert lo <= spec.default <= hi, name
            assert step == 0 or (spec.default - lo) % step == 0, name
        if spec.float_range is not None:
            assert spec.float_range[0] <= spec.default <= spec.float_range[1], name
            assert math.isfinite(spec.default), name
        assert spec.description.strip(), f"{name} has no description"


def test_params_file_lists_exactly_the_parameters_at_their_defaults() -> None:
    config = yaml.safe_load((ROOT / "config" / "seg_ros.yaml").read_text())
    params = config["/**"]["ros__parameters"]
    assert list(params) == list(SPECS)  # same names, same order as the descriptors
    for name, spec in SPECS.items():
        if isinstance(spec.default, tuple):  # a string array: YAML's [] (a list)
            assert params[name] == list(spec.default), name
            continue
        assert params[name] == spec.default, name
        assert type(params[name]) is type(spec.default), name  # 0.5 not 0, "" not null


def test_parse_fills_defaults_and_refuses_unknown_names() -> None:
    defaults = parse({})
    assert defaults == NodeParams.defaults()
    assert defaults.backend_options == {}
    for name, spec in SPECS.items():
        if name != "backend_options":
            assert getattr(defaults, name) == spec.default, name
    given = parse({"max_objects": 3, "backend_options": '{"delay_s": 0.1}'})
    assert (given.max_objects, given.backend_options) == (3, {"delay_s": 0.1})
    assert given.qos_depth == SPECS["qos_depth"].default
    with pytest.raises(ParameterError, match="unknown parameters"):
        parse({"no_such_parameter": 1})


@pytest.mark.graph
def test_a_node_declares_exactly_the_specs_with_their_defaults(ros_graph: object) -> None:
    from rclpy.node import Node

    node = Node("params_probe", context=ros_graph.context)  # type: ignore[attr-defined]
    try:
        params = declare_parameters(node)
        declared = {
            name: node.get_parameter(name).value
            for name in SPECS
            if node.has_parameter(name)  # a missing one fails the comparison below
        }
        # A string array is declared as a list (rclpy's parameter value), default [].
        arrays = {n: tuple(declared[n]) for n, spec in SPECS.items() if type(spec.default) is tuple}
        declared.update(arrays)
        assert declared == {name: spec.default for name, spec in SPECS.items()}
        for name in SPECS:
            assert node.describe_parameter(name).read_only, name
        assert params == NodeParams.defaults()
    finally:
        node.destroy_node()


def test_concepts_are_a_list_of_strings_and_make_query_options() -> None:
    params = parse({"concepts": ["person", " ", "red mug; blue mug"], "concept_every_n": 3})
    assert params.concepts == ("person", "red mug; blue mug")  # blank entries dropped
    options = params.query_options()
    assert (options.every_n, options.new_instance_threshold) == (3, 0.7)
    assert (options.timeout_s, options.drop_lost) == (2.0, True)
    # A request's own values win; 0 means the parameter's.
    asked = params.query_options(every_n=1, new_instance_threshold=0.9, max_new=2)
    assert (asked.every_n, asked.new_instance_threshold, asked.max_new_per_frame) == (1, 0.9, 2)
    assert parse({"concepts": "person"}).concepts == ("person",)  # `-p concepts:=person`
    for bad in ([1, 2], ["person", None], 3):
        with pytest.raises(ParameterError, match="concepts"):
            parse({"concepts": bad})


def test_the_launch_concepts_argument_is_split_at_commas() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "segment_launch", ROOT / "launch" / "segment.launch.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError:  # launch / launch_ros absent (the PyPI wheels lack them)
        pytest.skip("the launch packages are not installed")
    assert module.concept_list(" person, red mug;blue mug ,, ") == ["person", "red mug;blue mug"]
    assert module.concept_list("") == []
