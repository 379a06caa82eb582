"""seg_ros: promptable segmentation with video memory for ROS 2.

`seg_ros.engine` is pure Python + torch + numpy; the modules beside it are the thin ROS layer.
"""

from pkgutil import extend_path

# The generated interface modules (seg_ros.msg, seg_ros.srv and their typesupport libraries) are
# installed by colcon / `make build` into the install space. Extending the package path lets a
# source checkout (tests run from the repository root) import them beside the sources, as catkin
# devel spaces did. It adds no sys.path entry.
__path__ = extend_path(__path__, __name__)
