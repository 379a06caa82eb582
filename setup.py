"""Python packaging of seg_ros's sources.

In a ROS 2 workspace, colcon builds this package with ament_cmake (see package.xml and
CMakeLists.txt), which generates the msg/srv modules and installs these sources beside them.
This file serves `pip install .` where only the engine is wanted (no ROS): the engine, the
benchmarks and the `seg-ros-download` tool.
"""

from setuptools import find_packages, setup

setup(
    name="seg_ros",
    version="0.1.0",
    description="Promptable segmentation with video memory for ROS 2 (SAM 2.1, EdgeTAM, SAM 3)",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["seg_ros", "seg_ros.*"]),
    install_requires=["numpy", "opencv-python-headless"],
    extras_require={
        "models": ["torch", "transformers>=5.23,<5.24", "safetensors", "huggingface_hub", "timm"],
    },
    entry_points={
        "console_scripts": [
            "seg-ros-download = seg_ros.tools.download:main",
            "seg-ros-bench = seg_ros.bench.__main__:main",
        ]
    },
)
