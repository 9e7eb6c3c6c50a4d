"""Camera + segmenter + waterfall under /pushbroom, parameters from a params file (config/pipeline.yaml).

    ros2 launch scannernet_ros pipeline.launch.py model:=scannernet device:=cuda line_rate:=225.0

The params file sets every parameter it names; a launch argument overrides it only when given on
the command line (``threshold:=0.7``).  ``line_rate`` paces the camera and tells the segmenter the
line period (lines per second, > 0).  The launch ends when the camera or the segmenter exits: with
exit code 0 when the camera finished a scene that does not loop, 1 when a node failed (a bad model,
device:=cuda without CUDA), saying which.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from scannernet_ros.launching import end_when_exits, given, nodes_from, override

# launch argument -> (parameters it sets, type); the camera's and the segmenter's separately
CAMERA = {"source": (("source",), str), "line_rate": (("line_rate_hz", "stamp_rate_hz"), float)}
SEGMENTER = {
    "model": (("model",), str), "device": (("device",), str), "line_rate": (("line_rate_hz",), float),
    "threshold": (("threshold",), float), "qos_reliability": (("qos_reliability",), str),
    "qos_depth": (("qos_depth",), int), "diagnostics_period": (("diagnostics_period_s",), float),
    "autostart": (("autostart",), bool),
}


def make_nodes(context) -> list:
    params_file, namespace = LaunchConfiguration("params_file"), LaunchConfiguration("namespace")
    camera = Node(package="scannernet_ros", executable="pushbroom_camera", name="pushbroom_camera",
                  namespace=namespace, output="screen", parameters=[params_file, given(context, CAMERA)])
    segmenter = Node(package="scannernet_ros", executable="segmenter", name="segmenter",
                     namespace=namespace, output="screen", parameters=[params_file, given(context, SEGMENTER)])
    waterfall = Node(package="scannernet_ros", executable="waterfall", name="waterfall",
                     namespace=namespace, output="screen", parameters=[params_file])
    return [camera, segmenter, waterfall,
            end_when_exits(camera, "the camera", done="the camera finished its scene"),
            # exit 0 from these two means they were asked to stop: only a failure ends the launch
            end_when_exits(segmenter, "the segmenter", success_ends=False),
            end_when_exits(waterfall, "the waterfall", success_ends=False)]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("scannernet_ros"), "config", "pipeline.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters of the three nodes; launch arguments given on the "
                                          "command line override it"),
        override("model", "registry name (shipped weights) or path to a .safetensors file"),
        override("device", "cpu, cuda, cuda:N or auto"),
        override("source", "'synthetic', a 38-Cloud patch/scene, an L8 Biome patch or an image file"),
        override("line_rate", "sensor line rate in lines per second, > 0: camera pacing and segmenter line period"),
        override("threshold", "cloud probability at which a pixel is cloud"),
        override("qos_reliability", "scanline QoS: reliable or best_effort"),
        override("qos_depth", "segmenter scanline queue depth (0 = keep all)"),
        override("diagnostics_period", "seconds between segmenter /diagnostics reports"),
        override("autostart", "segmenter configures and activates itself; false: wait for `ros2 lifecycle set`"),
        DeclareLaunchArgument("namespace", default_value="pushbroom", description="namespace of the three nodes"),
        nodes_from(make_nodes),
    ])
