"""The segmentation node's parameters: declared with descriptors, validated once, frozen.

Every parameter has a description and, where it makes sense, a range or a list of choices
(`ros2 param describe /segmentation_node <name>`). They are read at startup (read-only): change
them in config/seg_ros.yaml or with `-p name:=value` and restart. An invalid value raises
`ParameterError` naming the parameter, the value and what is allowed.

`SPECS` is the one source of truth for names, descriptions, ranges and defaults. The model's
defaults (backend, model, device, dtype, input_size, memory_frames, max_conditioning_frames,
compile, text_detector) are the engine's `BackendConfig` field defaults, read from it, not
repeated here.
`NodeParams` has no defaults of its own: `parse` fills what is not given from SPECS.
config/seg_ros.yaml lists every parameter at its default (test/test_params.py checks all three).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from seg_ros.engine.concepts import QueryOptions
from seg_ros.engine.config import DTYPES, BackendConfig
from seg_ros.engine.registry import available_backends

QOS_RELIABILITY = ("best_effort", "reliable")


class ParameterError(ValueError):
    """A parameter value the node cannot start with."""


@dataclass(frozen=True)
class _Spec:
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int, int] | None = None  # from, to, step (0 = any)
    float_range: tuple[float, float] | None = None


#: The engine's defaults for the model parameters (BackendConfig's own field defaults).
_ENGINE: dict[str, Any] = {f.name: f.default for f in fields(BackendConfig) if f.name != "options"}

# name -> spec, in the order of config/seg_ros.yaml.
SPECS: dict[str, _Spec] = {
    "cameras": _Spec(
        (),
        "Camera names; each gets <name>/image (depth, camera_info) in, ~/<name>/... topics and "
        "services out and its own tracking session, all on one loaded model. Empty = one camera "
        "with the single-camera names (image, ~/instances, ~/add_points ...)",
    ),
    "batch_cameras": _Spec(
        True,
        "With several cameras on CUDA, frames waiting together go through the image encoder as "
        "one batch (sam2, sam3); results are the same either way (on the CPU: one by one)",
    ),
    "backend": _Spec(_ENGINE["backend"], "Segmentation model", choices=tuple(available_backends())),
    "model": _Spec(
        _ENGINE["model"],
        "Local folder (config.json + *.safetensors) or hub id; empty = the backend's default",
    ),
    "device": _Spec(_ENGINE["device"], "auto (cuda when available), cuda, cuda:N or cpu"),
    "dtype": _Spec(_ENGINE["dtype"], "Compute dtype (float16 / bfloat16 on GPU)", choices=DTYPES),
    "input_size": _Spec(
        _ENGINE["input_size"],
        "Model input side in pixels, a multiple of 16; 0 = the model's own",
        int_range=(0, 4096, 16),
    ),
    "memory_frames": _Spec(
        _ENGINE["memory_frames"],
        "Recent frames the tracker attends to (bounds memory and cost); 0 = the model's own. "
        "classic: frames kept for prompts stamped on a past frame (0 = 30; ~0.5 MB each)",
        int_range=(0, 1024, 1),
    ),
    "max_conditioning_frames": _Spec(
        _ENGINE["max_conditioning_frames"],
        "Prompted frames kept per object (oldest dropped beyond it)",
        int_range=(1, 64, 1),
    ),
    "compile": _Spec(
        _ENGINE["compile"], "torch.compile the heavy modules (GPU; the first frames are slow)"
    ),
    "text_detector": _Spec(
        _ENGINE["text_detector"],
        "sam2: folder of an open-vocabulary detector (Grounding DINO, MM-Grounding-DINO, OWLv2) "
        "that gives text prompts to SAM 2.1 / EdgeTAM; empty = no text",
    ),
    "backend_options": _Spec(
        "", 'Backend-specific options as a JSON object, e.g. {"delay_s": 0.1} for fake; "" = none'
    ),
    "max_objects": _Spec(16, "Most objects tracked at once", int_range=(1, 1024, 1)),
    "score_threshold": _Spec(
        0.5, "Objects scoring below it are reported not visible", float_range=(0.0, 1.0)
    ),
    "concepts": _Spec(
        (),
        "Standing queries from start-up (live concepts): each entry a text, phrases separated "
        "by ';', whose instances are tracked as they appear, with stable ids (text-capable "
        "backend: sam3, or one with a text detector)",
    ),
    "concept_every_n": _Spec(
        5,
        "Standing queries detect every n-th frame (1 = every frame), and on a frame where one "
        "of their objects was just lost",
        int_range=(1, 10000, 1),
    ),
    "new_instance_threshold": _Spec(
        0.7,
        "Least detection score for a standing query to start a new object (SAM 3's own 0.7)",
        float_range=(0.0, 1.0),
    ),
    "concept_timeout_s": _Spec(
        2.0,
        "A standing query's object neither visible nor detected for this long (image stamps, "
        "seconds; 30 frames on a stream without stamps) is dropped, or kept lost",
        float_range=(0.01, 3600.0),
    ),
    "concept_drop_lost": _Spec(
        True, "Drop a standing query's object after concept_timeout_s (false: keep it lost)"
    ),
    "input_compressed": _Spec(False, "Subscribe to image/compressed (jpeg / png) instead of image"),
    "qos_reliability": _Spec(
        "best_effort",
        "Input image QoS reliability (sensor data: best_effort)",
        choices=QOS_RELIABILITY,
    ),
    "qos_depth": _Spec(
        1,
        "Input QoS history depth (the newest frame wins anyway; with use_depth at least 5 each)",
        int_range=(1, 100, 1),
    ),
    "publish_mask": _Spec(True, "Publish ~/mask, the mono16 label image"),
    "publish_overlay": _Spec(
        True, "Publish ~/overlay, the coloured bgr8 picture (rendered only when subscribed)"
    ),
    "overlay_alpha": _Spec(0.5, "Opacity of the mask colours in ~/overlay", float_range=(0.0, 1.0)),
    "use_depth": _Spec(
        False,
        "Also subscribe to depth (registered to image) and camera_info, approximately synchronised "
        "with image, and fill the instances' 3D centroid / extent",
    ),
    "sync_slop_s": _Spec(
        0.05,
        "Largest stamp difference within one image + depth + camera_info set (seconds)",
        float_range=(0.0, 1.0),
    ),
    "sync_queue_size": _Spec(
        10, "Messages kept per input while waiting for the other inputs", int_range=(1, 100, 1)
    ),
    "publish_markers": _Spec(
        True, "Publish ~/markers (RViz): a box + 'id: label score' per object with 3D"
    ),
    "publish_points": _Spec(
        True, "Publish ~/points, the masked depth points (use_depth; built only when subscribed)"
    ),
    "points_max_per_object": _Spec(
        5000,
        "Most points per object in ~/points (evenly strided); 0 = all",
        int_range=(0, 1_000_000, 1),
    ),
    "diagnostics_period_s": _Spec(
        1.0, "Period of the /diagnostics status in seconds; 0 = off", float_range=(0.0, 60.0)
    ),
    "click_prompts": _Spec(
        True,
        "Turn rqt_image_view left clicks (<image>_mouse_left, ~/overlay_mouse_left) and RViz "
        "Publish Point (/clicked_point, projected with camera_info) into point prompts: on an "
        "object refines it, elsewhere makes a new object",
    ),
    "click_min_interval_s": _Spec(
        0.5,
        "Clicks sooner than this after the previous accepted click are dropped (a double click "
        "makes one object), seconds; 0 = off",
        float_range=(0.0, 10.0),
    ),
}


@dataclass(frozen=True)
class NodeParams:
    """The node's validated parameter values: one field per SPECS entry (meaning, default).

    Made by `parse` (or `declare_parameters`); `NodeParams.defaults()` is every default.
    """

    cameras: tuple[str, ...]
    batch_cameras: bool
    backend: str
    model: str
    device: str
    dtype: str
    input_size: int
    memory_frames: int
    max_conditioning_frames: int
    compile: bool
    text_detector: str
    backend_options: dict[str, Any]  # the parsed JSON object of the parameter's text
    max_objects: int
    score_threshold: float
    concepts: tuple[str, ...]
    concept_every_n: int
    new_instance_threshold: float
    concept_timeout_s: float
    concept_drop_lost: bool
    input_compressed: bool
    qos_reliability: str
    qos_depth: int
    publish_mask: bool
    publish_overlay: bool
    overlay_alpha: float
    use_depth: bool
    sync_slop_s: float
    sync_queue_size: int
    publish_markers: bool
    publish_points: bool
    points_max_per_object: int
    diagnostics_period_s: float
    click_prompts: bool
    click_min_interval_s: float

    @classmethod
    def defaults(cls) -> NodeParams:
        return parse({})

    def backend_config(self) -> BackendConfig:
        return BackendConfig(
            backend=self.backend,
            model=self.model,
            device=self.device,
            dtype=self.dtype,
            input_size=self.input_size,
            memory_frames=self.memory_frames,
            max_conditioning_frames=self.max_conditioning_frames,
            compile=self.compile,
            text_detector=self.text_detector,
            options=dict(self.backend_options),
        )

    def query_options(
        self, every_n: int = 0, new_instance_threshold: float = 0.0, max_new: int = 0
    ) -> QueryOptions:
        """A standing query's options from the concept_* parameters (0 = the parameter's)."""
        return QueryOptions(
            every_n=every_n or self.concept_every_n,
            new_instance_threshold=new_instance_threshold or self.new_instance_threshold,
            timeout_s=self.concept_timeout_s,
            drop_lost=self.concept_drop_lost,
            max_new_per_frame=max_new,
        )

    def input_qos(self) -> QoSProfile:
        """Camera input: sensor-data QoS by default (best effort, depth 1)."""
        reliability = (
            ReliabilityPolicy.RELIABLE
            if self.qos_reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        return QoSProfile(depth=self.qos_depth, reliability=reliability)


def _descriptor(name: str, spec: _Spec) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, description=spec.description, read_only=True)
    if spec.choices:
        desc.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=step)]
    if spec.float_range is not None:
        lo_f, hi_f = spec.float_range
        desc.floating_point_range = [FloatingPointRange(from_value=lo_f, to_value=hi_f, step=0.0)]
    return desc


def _allowed(spec: _Spec) -> str:
    if isinstance(spec.default, tuple):
        return "a list of strings"
    if spec.choices:
        return "one of " + ", ".join(spec.choices)
    if spec.int_range is not None:
        lo, hi, step = spec.int_range
        return f"an integer in [{lo}, {hi}]" + (f", a multiple of {step}" if step > 1 else "")
    if spec.float_range is not None:
        return f"a number in [{spec.float_range[0]}, {spec.float_range[1]}]"
    return f"a {type(spec.default).__name__}"


def _declare(node: Node, name: str, spec: _Spec, default: Any, description: str = "") -> Any:
    """Declare one parameter (its SPECS descriptor, `default`); its value, or `default` when a
    params file left it unset. ParameterError names the parameter and what it allows."""
    descriptor = _descriptor(name, spec)
    if description:
        descriptor.description = description
    given = default
    if isinstance(default, tuple):
        # rclpy types an empty list as a byte array, which a string array given with `-p` or a
        # params file could not replace: such a parameter is typed when given (parse checks
        # it), and a params file's `[]` leaves it unset (None).
        descriptor.dynamic_typing = True
        given = list(default)
    try:
        value = node.declare_parameter(name, given, descriptor).value
    except ParameterException as exc:
        raise ParameterError(f"parameter '{name}': must be {_allowed(spec)} ({exc})") from exc
    return default if value is None else value


def declare_parameters(node: Node) -> NodeParams:
    """Declare every parameter on `node` and return the validated values."""
    return parse({name: _declare(node, name, spec, spec.default) for name, spec in SPECS.items()})


#: Input parameters a camera may set for itself (`<camera>.use_depth: true`); the rest are the
#: node's for every camera.
PER_CAMERA = ("input_compressed", "use_depth", "qos_reliability", "qos_depth", "concepts")


def declare_camera_parameters(node: Node, camera: str, params: NodeParams) -> NodeParams:
    """Declare `<camera>.<name>` for each PER_CAMERA parameter, defaulting to the node's value;
    the camera's NodeParams (validated like the node's)."""
    values: dict[str, Any] = {}
    for name in PER_CAMERA:
        spec = SPECS[name]
        full = f"{camera}.{name}"
        description = f"{camera}: {spec.description} (default: the node's {name})"
        values[name] = _declare(node, full, spec, getattr(params, name), description)
        if isinstance(spec.default, tuple):
            values[name] = tuple(
                v.strip() for v in _string_list(values, name, "['person']") if v.strip()
            )
        if spec.choices and values[name] not in spec.choices:
            raise ParameterError(
                f"parameter '{full}' is '{values[name]}'; must be {_allowed(spec)}"
            )
    return replace(params, **values)


def _string_list(values: dict[str, Any], name: str, example: str) -> list[str]:
    """A string-array parameter's value as a list; one string is a list of one."""
    value = values[name]
    if value is None:  # an empty list in a params file reaches the node untyped ("not set")
        return []
    if isinstance(value, str):  # `-p cameras:=head`: one entry
        return [value] if value else []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ParameterError(
            f"parameter '{name}' must be a list of strings, e.g. \"{example}\"; got {value!r}"
        )
    return list(value)


def parse(values: dict[str, Any]) -> NodeParams:
    """Validate raw values (as declared) into NodeParams; unknown names are refused.

    A parameter not in `values` takes its SPECS default.
    """
    unknown = set(values) - set(SPECS)
    if unknown:
        raise ParameterError(f"unknown parameters {sorted(unknown)}")
    values = {**{name: spec.default for name, spec in SPECS.items()}, **values}
    for name, value in values.items():
        spec = SPECS[name]
        if spec.choices and value not in spec.choices:
            raise ParameterError(f"parameter '{name}' is '{value}'; must be {_allowed(spec)}")
    options_text = str(values.get("backend_options", "")).strip()
    try:
        options = json.loads(options_text) if options_text else {}
    except json.JSONDecodeError as exc:
        raise ParameterError(f"parameter 'backend_options' is not valid JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise ParameterError("parameter 'backend_options' must be a JSON object ({...})")
    cameras = _string_list(values, "cameras", "[head, wrist]")
    concepts = [c.strip() for c in _string_list(values, "concepts", "['person', 'red mug']")]
    params = NodeParams(
        **{
            **values,
            "backend_options": options,
            "cameras": tuple(cameras),
            "concepts": tuple(c for c in concepts if c),
        }
    )
    try:
        params.backend_config()  # device / dtype / input_size checks live with the engine
    except ValueError as exc:
        raise ParameterError(f"invalid backend parameters: {exc}") from exc
    return params
