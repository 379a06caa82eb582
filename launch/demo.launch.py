"""The demo on a robot: sample camera + segmentation node + prompting client.

    ros2 launch seg_ros demo.launch.py [backend:=classic] [frames:=300] [fps:=15.0] \\
        [output_dir:=demo_out]
    ros2 launch seg_ros demo.launch.py --show-args      # what each argument does

Same three nodes that `make demo` starts as processes (seg_ros/demo.py).
"""

import json
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from seg_ros.tools.demo_camera import demo_plan


def generate_launch_description() -> LaunchDescription:
    params_file = os.path.join(get_package_share_directory("seg_ros"), "config", "seg_ros.yaml")
    width, height = 640, 480
    camera = Node(
        package="seg_ros",
        executable="demo_camera",
        name="demo_camera",
        parameters=[{"width": width, "height": height, "fps": LaunchConfiguration("fps")}],
    )
    segmentation = Node(
        package="seg_ros",
        executable="segmentation_node",
        name="segmentation_node",
        # Reliable input: camera and node share the host, where best-effort 640x480 frames over
        # loopback UDP are often lost in fragments (see seg_ros/demo.py).
        parameters=[
            params_file,
            {"backend": LaunchConfiguration("backend"), "qos_reliability": "reliable"},
        ],
        remappings=[("image", "/demo_camera/image")],
    )
    client = Node(
        package="seg_ros",
        executable="demo_client",
        name="demo_client",
        output="screen",
        parameters=[
            {
                "output_dir": LaunchConfiguration("output_dir"),
                "frames": LaunchConfiguration("frames"),
                # A string parameter: launch_ros would otherwise parse the JSON as YAML (a dict).
                "plan": ParameterValue(json.dumps(demo_plan(width, height)), value_type=str),
            }
        ],
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "backend",
                default_value="classic",
                description="Segmentation backend: classic | sam2 | sam3 | fake",
            ),
            DeclareLaunchArgument(
                "frames",
                default_value="300",
                description="Processed frames the client follows; then the demo shuts down",
            ),
            DeclareLaunchArgument(
                "fps", default_value="15.0", description="Frame rate of the sample camera"
            ),
            DeclareLaunchArgument(
                "output_dir",
                default_value="demo_out",
                description="Folder for the overlays (PNG + MP4) and summary.json",
            ),
            camera,
            segmentation,
            client,
            RegisterEventHandler(
                OnProcessExit(target_action=client, on_exit=[EmitEvent(event=Shutdown())])
            ),
        ]
    )
