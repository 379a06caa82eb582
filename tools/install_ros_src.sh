#!/usr/bin/env bash
# Install upstream ROS 2 Jazzy sources (ros2cli, launch, launch_ros, rosidl_runtime_py,
# message_filters, vision_msgs, composition_interfaces) into the venv, which is the ROS prefix.
#
#   tools/install_ros_src.sh <folder with the *.tar.gz snapshots> <venv> [<build folder>]
#
# A robot with ROS 2 from apt has all of these; the `ros-jazzy-*` wheels do not, so `make setup
# ROS_SRC=<folder>` runs this to let the test suite drive the real `ros2` CLI, `ros2 launch`,
# message_filters and vision_msgs. Left out on purpose: launch_testing / launch_pytest /
# launch_testing_ros (their pytest plugins want pytest < 8; the tests drive `ros2 launch` as a
# subprocess instead) and message_filters' C++ part (needs rclcpp, which no wheel has).
set -euo pipefail

SRC=$(cd "$1" && pwd)
VENV=$(cd "$2" && pwd)
BUILD=${3:-build/ros-src}
mkdir -p "$BUILD"
BUILD=$(cd "$BUILD" && pwd)
PY="$VENV/bin/python"
INDEX="$VENV/share/ament_index/resource_index/packages"
HERE=$(cd "$(dirname "$0")/.." && pwd)

for archive in launch launch_ros ros2cli rosidl_runtime_py message_filters vision_msgs \
    rcl_interfaces; do
  test -f "$SRC/$archive.tar.gz" || { echo "missing $SRC/$archive.tar.gz" >&2; exit 1; }
  rm -rf "${BUILD:?}/$archive"
  tar xzf "$SRC/$archive.tar.gz" -C "$BUILD"
done

# Their PyPI dependencies, pinned (their install_requires name ROS packages PyPI does not have).
"$PY" -m pip install --quiet -r "$HERE/requirements-ros-src.txt"

# ament_python packages, in dependency order.
PACKAGES=(
  rosidl_runtime_py/.
  launch/launch launch/launch_xml launch/launch_yaml
  launch_ros/launch_ros
  ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2node ros2cli/ros2topic ros2cli/ros2service
  ros2cli/ros2param ros2cli/ros2interface ros2cli/ros2lifecycle ros2cli/ros2run
  ros2cli/ros2action
  launch_ros/ros2launch
)
for pkg in "${PACKAGES[@]}"; do
  "$PY" -m pip install --quiet --no-deps --no-build-isolation "$BUILD/$pkg"
done

# message_filters: the Python module only (its setup.py is catkin's distutils one, and the C++
# part needs rclcpp).
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$SITE/message_filters"
cp -r "$BUILD/message_filters/src/message_filters" "$SITE/message_filters"
mkdir -p "$VENV/share/message_filters"
cp "$BUILD/message_filters/package.xml" "$VENV/share/message_filters/"

# Message packages: cmake + rosidl into the prefix, as this package's own msg/srv.
for pkg in vision_msgs/vision_msgs rcl_interfaces/composition_interfaces; do
  name=$(basename "$pkg")
  PATH="$VENV/bin:$PATH" cmake -S "$BUILD/$pkg" -B "$BUILD/build-$name" \
    -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=Release > "$BUILD/$name.log" 2>&1 || { tail -40 "$BUILD/$name.log"; exit 1; }
  cmake --build "$BUILD/build-$name" -j2 >> "$BUILD/$name.log" 2>&1 \
    || { tail -40 "$BUILD/$name.log"; exit 1; }
  cmake --install "$BUILD/build-$name" >> "$BUILD/$name.log" 2>&1 \
    || { tail -40 "$BUILD/$name.log"; exit 1; }
done

# `ros2 pkg` / `ros2 launch` find a package only through its ament index marker.
mkdir -p "$INDEX"
for name in launch launch_xml launch_yaml launch_ros ros2launch ros2cli ros2pkg ros2node \
    ros2topic ros2service ros2param ros2interface ros2lifecycle ros2run ros2action \
    rosidl_runtime_py message_filters vision_msgs composition_interfaces; do
  test -e "$INDEX/$name" || touch "$INDEX/$name"
done

# Fail here, not in the tests, when something did not install.
env -u PYTHONPATH "$VENV/bin/ros2" --help > /dev/null
"$PY" -c 'import launch, launch_ros, ros2launch, message_filters, vision_msgs.msg, composition_interfaces.srv'
echo "real ROS 2 tools installed into $VENV from $SRC"
