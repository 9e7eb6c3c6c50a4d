import os
from glob import glob

from setuptools import Extension, find_packages, setup

package_name = "scannernet_ros"

# The ROS 2 wheels are for a standalone virtual environment only: in a sourced ROS 2 workspace
# (colcon build) the system's rclpy and message packages are used, so they stay out of
# install_requires and live in the opt-in "ros" / "standalone" extras.
ROS_WHEELS = [
    "ros-jazzy-rclpy[fastrtps]",
    "ros-jazzy-sensor-msgs",
    "ros-jazzy-std-msgs",
    "ros-jazzy-std-srvs",
    "ros-jazzy-diagnostic-msgs",
]

# ScannerNet's per-line step as one compiled call (scannernet_ros/_linestep.c).  Optional: where it
# cannot be built the numpy step runs instead.  -march=native because the package is built where
# it runs (colcon on the target); set SCANNERNET_KERNEL_CFLAGS to build for another CPU.
KERNEL = Extension(
    f"{package_name}._linestep",
    [f"{package_name}/_linestep.c"],
    extra_compile_args=os.environ.get("SCANNERNET_KERNEL_CFLAGS", "-O3 -march=native").split() + ["-pthread"],
    extra_link_args=["-pthread"],
    optional=True,
)

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    # the kernel's source (`scannernet bench --parts predict` reads it) and the demo's real scene
    package_data={package_name: ["_linestep.c"], f"{package_name}.scenes": ["demo/*.npy", "demo/README.md"]},
    ext_modules=[KERNEL],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
        (f"share/{package_name}/models", glob("models/*.safetensors") + glob("models/*.md")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy",
        "threadpoolctl",
        "torch",
        "safetensors",
        "tifffile",
        "rosbags",
        "pillow",
        "pyyaml",
        "matplotlib",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "standalone": ROS_WHEELS + ["torch==2.13.0"],
        "test": ["pytest", "hypothesis", "catkin_pkg", "psutil"],
        "bench": ["torchinfo", "psutil", "onnxruntime"],
        "export": ["onnx", "onnxruntime"],
    },
    zip_safe=False,
    maintainer="scannernet_ros maintainers",
    maintainer_email="maintainers@scannernet-ros.invalid",
    description="Line-by-line cloud segmentation of push-broom imagery with ScannerNet on ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "scannernet = scannernet_ros.tools.cli:main",
            "pushbroom_camera = scannernet_ros.executables:pushbroom_camera",
            "segmenter = scannernet_ros.executables:segmenter",
            "waterfall = scannernet_ros.executables:waterfall",
            "bag_player = scannernet_ros.executables:bag_player",
            "evaluator = scannernet_ros.executables:evaluator",
        ],
    },
)
