"""The segmentation node on a camera stream.

    ros2 launch seg_ros segment.launch.py image:=/camera/color/image_raw backend:=sam2 \\
        model:=/opt/models/sam2.1-hiera-tiny device:=cuda

Arguments: namespace, image (input topic), use_compressed (subscribe to <image>/compressed),
params_file (default share/seg_ros/config/seg_ros.yaml), backend / model / device (override the
params file when not empty), depth and camera_info (topics for 3D), rviz (start RViz with
config/seg_ros.rviz).
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = (
    ("namespace", "", "Namespace of the node (its topics and services move with it)"),
    ("image", "image", "Input image topic (sensor_msgs/Image)"),
    ("use_compressed", "false", "Subscribe to <image>/compressed (jpeg / png) instead"),
    ("params_file", "", "Parameter file; empty = share/seg_ros/config/seg_ros.yaml"),
    ("backend", "", "classic | sam2 | sam3 | fake; empty = the params file's"),
    ("model", "", "Model folder or hub id; empty = the params file's"),
    ("device", "", "auto | cuda | cuda:N | cpu; empty = the params file's"),
    ("depth", "depth", "Depth image topic, aligned with image (16UC1 mm or 32FC1 m)"),
    ("camera_info", "camera_info", "CameraInfo topic of the image stream"),
    ("rviz", "false", "Start RViz with config/seg_ros.rviz"),
)


def _segmentation_node(context: LaunchContext) -> list[Node]:
    """The node, with only the overrides that were given (an empty one keeps the file's)."""
    share = get_package_share_directory("seg_ros")
    params_file = LaunchConfiguration("params_file").perform(context) or (
        f"{share}/config/seg_ros.yaml"
    )
    overrides: dict[str, object] = {
        "input_compressed": LaunchConfiguration("use_compressed").perform(context).lower()
        in ("true", "1", "yes"),
    }
    for name in ("backend", "model", "device"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [
        Node(
            package="seg_ros",
            executable="segmentation_node",
            name="segmentation_node",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides],
            # image/compressed follows the `image` remap inside the node (as image_transport).
            remappings=[
                ("image", LaunchConfiguration("image")),
                ("depth", LaunchConfiguration("depth")),
                ("camera_info", LaunchConfiguration("camera_info")),
            ],
        )
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
