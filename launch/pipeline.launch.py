"""Camera + segmenter + waterfall under /pushbroom, parameters from config/pipeline.yaml.

    ros2 launch scannernet_ros pipeline.launch.py model:=scannernet device:=cuda line_rate:=225.0
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("scannernet_ros"), "config", "pipeline.yaml"])
    model = LaunchConfiguration("model")
    device = LaunchConfiguration("device")
    source = LaunchConfiguration("source")
    line_rate = ParameterValue(LaunchConfiguration("line_rate"), value_type=float)
    namespace = LaunchConfiguration("namespace")
    return LaunchDescription([
        DeclareLaunchArgument("model", default_value="scannernet_small",
                              description="registry name (shipped weights) or path to a .safetensors file"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or auto"),
        DeclareLaunchArgument("source", default_value="synthetic",
                              description="'synthetic', a 38-Cloud patch/scene, an L8 Biome patch or an image file"),
        DeclareLaunchArgument("line_rate", default_value="225.0",
                              description="camera line rate in lines per second (0 = as fast as possible)"),
        DeclareLaunchArgument("namespace", default_value="pushbroom", description="namespace of the three nodes"),
        Node(package="scannernet_ros", executable="pushbroom_camera", name="pushbroom_camera",
             namespace=namespace, output="screen",
             parameters=[config, {"source": source, "line_rate_hz": line_rate}]),
        Node(package="scannernet_ros", executable="segmenter", name="segmenter",
             namespace=namespace, output="screen",
             parameters=[config, {"model": model, "device": device}]),
        Node(package="scannernet_ros", executable="waterfall", name="waterfall",
             namespace=namespace, output="screen", parameters=[config]),
    ])
