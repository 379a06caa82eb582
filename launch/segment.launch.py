"""The segmentation node on a camera stream.

    ros2 launch seg_ros segment.launch.py image:=/camera/color/image_raw backend:=sam2 \\
        model:=/opt/models/sam2.1-hiera-tiny device:=cuda
    # with 3D (RealSense: depth aligned to colour), RViz, as a managed node:
    ros2 launch seg_ros segment.launch.py image:=/camera/color/image_raw \\
        depth:=/camera/aligned_depth_to_color/image_raw rviz:=true lifecycle:=true
    # three cameras, one model (topics and services under each name: ~/head/add_points ...):
    ros2 launch seg_ros segment.launch.py cameras:="head wrist base" backend:=sam2 \\
        images:="/head/color/image_raw /wrist/color/image_raw /base/color/image_raw"

Arguments: namespace, image (input topic), use_compressed (subscribe to <image>/compressed),
qos_reliability / qos_depth (input QoS; override the params file when not empty), params_file
(default share/seg_ros/config/seg_ros.yaml), backend / model / text_detector / device (override the
params file when not empty; text_detector: an open-vocabulary detector folder that gives the sam2
backend text, hence add_text and concepts), depth and camera_info (topics for 3D; camera_info
defaults to the one beside image, as image_transport pairs them), use_depth (empty = true when
depth is given, else the params file's), cameras / images / depths (several cameras served by one
model: names, then each camera's image and depth topic in the same order; camera_info beside each
image), rviz (start RViz with config/seg_ros.rviz), lifecycle (run the managed node
seg_ros.lifecycle_node), autostart (with lifecycle: configure and activate it at launch; false
leaves it to a lifecycle manager) and concepts (standing queries tracked from start-up, comma
separated: `concepts:="person,red mug"`; ';' joins phrases of one query).
`ros2 launch seg_ros segment.launch.py --show-args` lists them.
"""

from collections.abc import Callable

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.action import Action
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

ARGUMENTS = (
    ("namespace", "", "Namespace of the node (its topics and services move with it)"),
    ("image", "image", "Input image topic (sensor_msgs/Image)"),
    ("use_compressed", "false", "Subscribe to <image>/compressed (jpeg / png) instead"),
    (
        "qos_reliability",
        "",
        "Input QoS: best_effort | reliable (camera on the same host); empty = the params file's",
    ),
    ("qos_depth", "", "Input QoS history depth (1..100); empty = the params file's"),
    ("params_file", "", "Parameter file; empty = share/seg_ros/config/seg_ros.yaml"),
    ("backend", "", "classic | sam2 | sam3 | fake; empty = the params file's"),
    ("model", "", "Model folder or hub id; empty = the params file's"),
    (
        "text_detector",
        "",
        "sam2: open-vocabulary detector folder (Grounding DINO, OWLv2) for text and concepts; "
        "empty = the params file's",
    ),
    ("device", "", "auto | cuda | cuda:N | cpu; empty = the params file's"),
    ("depth", "", "Depth topic registered to image (16UC1 mm or 32FC1 m); enables 3D"),
    ("camera_info", "", "CameraInfo topic of image; empty = <image's namespace>/camera_info"),
    ("use_depth", "", "true | false; empty = true when depth is given, else the params file's"),
    (
        "cameras",
        "",
        "Several cameras on one model: their names, e.g. 'head wrist' (then images, depths)",
    ),
    ("images", "", "With cameras: each camera's image topic, in the order of cameras"),
    ("depths", "", "With cameras: each camera's depth topic (enables 3D for all), in order"),
    ("rviz", "false", "Start RViz with config/seg_ros.rviz"),
    ("lifecycle", "false", "Run the managed (lifecycle) node"),
    ("autostart", "true", "With lifecycle: configure and activate at launch"),
    (
        "concepts",
        "",
        "Standing queries from start-up, comma separated ('person,red mug'; ';' joins phrases "
        "of one query); empty = the params file's",
    ),
)


#: Arguments that set the node parameter of the same name when not empty.
PASSED_THROUGH = ("backend", "model", "text_detector", "device", "qos_reliability")


def _true(text: str) -> bool:
    return text.strip().lower() in ("true", "1", "yes", "on")


def concept_list(text: str) -> list[str]:
    """The `concepts` argument as the parameter's list: 'person, red mug' -> two queries."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _arg(context: LaunchContext, name: str) -> str:
    return LaunchConfiguration(name).perform(context)


def _names(text: str) -> list[str]:
    """'head wrist', 'head,wrist' or '[head, wrist]' -> ['head', 'wrist']."""
    return [n for n in text.strip().strip("[]").replace(",", " ").split() if n]


def _camera_remaps(prefix: str, image: str, depth: str, camera_info: str) -> list[tuple[str, str]]:
    """One camera's input remappings: <prefix>image, depth, camera_info (beside the image)."""
    # image/compressed follows the `image` remap inside the node (as image_transport).
    remappings = [(prefix + "image", image)]
    if depth:
        remappings.append((prefix + "depth", depth))
    if not camera_info and "/" in image.strip("/"):
        camera_info = image.rsplit("/", 1)[0] + "/camera_info"  # beside the image topic
    if camera_info:
        remappings.append((prefix + "camera_info", camera_info))
    return remappings


def parameter_overrides(arg: Callable[[str], str]) -> dict[str, object]:
    """The node parameters that the launch arguments (`arg(name)` -> its text) set, besides
    cameras and depth: only those given (an empty argument keeps the params file's value)."""
    overrides: dict[str, object] = {"input_compressed": _true(arg("use_compressed"))}
    for name in PASSED_THROUGH:
        value = arg(name).strip()
        if value:
            overrides[name] = value
    qos_depth = arg("qos_depth").strip()
    if qos_depth:  # not a number: the node refuses it, naming the parameter
        overrides["qos_depth"] = int(qos_depth) if qos_depth.isdigit() else qos_depth
    concepts = concept_list(arg("concepts"))
    if concepts:
        overrides["concepts"] = concepts
    return overrides


def _segmentation_node(context: LaunchContext) -> list[Action]:
    """The node, with only the overrides that were given (an empty one keeps the file's)."""
    share = get_package_share_directory("seg_ros")
    params_file = _arg(context, "params_file") or f"{share}/config/seg_ros.yaml"
    overrides = parameter_overrides(lambda name: _arg(context, name))
    cameras = _names(_arg(context, "cameras"))
    use_depth = _arg(context, "use_depth")
    if cameras:
        overrides["cameras"] = cameras
        images = _names(_arg(context, "images"))
        depths = _names(_arg(context, "depths"))
        if len(images) != len(cameras) or (depths and len(depths) != len(cameras)):
            raise ValueError(
                f"cameras {cameras} need one topic each in images ({len(images)} given)"
                + (f" and depths ({len(depths)} given)" if depths else "")
            )
        remappings: list[tuple[str, str]] = []
        for k, name in enumerate(cameras):
            remappings += _camera_remaps(name + "/", images[k], depths[k] if depths else "", "")
        if use_depth or depths:
            overrides["use_depth"] = _true(use_depth) if use_depth else True
    else:
        image, depth = _arg(context, "image"), _arg(context, "depth")
        if use_depth or depth:
            overrides["use_depth"] = _true(use_depth) if use_depth else True
        remappings = _camera_remaps("", image, depth, _arg(context, "camera_info"))
    common = {
        "package": "seg_ros",
        "name": "segmentation_node",
        "namespace": LaunchConfiguration("namespace"),
        "output": "screen",
        "emulate_tty": True,
        "parameters": [params_file, overrides],
        "remappings": remappings,
    }
    if not _true(_arg(context, "lifecycle")):
        return [Node(executable="segmentation_node", **common)]
    node = LifecycleNode(executable="segmentation_lifecycle_node", **common)
    if not _true(_arg(context, "autostart")):
        return [node]
    configure = ChangeState(
        lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE
    )
    activate = ChangeState(
        lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_ACTIVATE
    )
    return [
        node,
        # Activate once, right after the first successful configure (a failed one stays
        # unconfigured and logs why; a manager's later transitions are left alone).
        RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state="configuring",
                goal_state="inactive",
                entities=[EmitEvent(event=activate)],
                handle_once=True,
            )
        ),
        EmitEvent(event=configure),
    ]


def generate_launch_description() -> LaunchDescription:
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=[
            "-d",
            PathJoinSubstitution([FindPackageShare("seg_ros"), "config", "seg_ros.rviz"]),
        ],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(
        [DeclareLaunchArgument(n, default_value=d, description=t) for n, d, t in ARGUMENTS]
        + [OpaqueFunction(function=_segmentation_node), rviz]
    )
