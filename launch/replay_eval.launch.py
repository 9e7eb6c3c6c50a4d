"""Replay scene bags into the segmenter and score its masks live: bag_player + segmenter + evaluator.

    ros2 launch scannernet_ros replay_eval.launch.py bag:=bags/ model:=scannernet rate:=0.0
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("scannernet_ros"), "config", "replay_eval.yaml"])
    namespace = LaunchConfiguration("namespace")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="a scene bag or a folder of them (scannernet convert)"),
        DeclareLaunchArgument("model", default_value="scannernet_small", description="registry name or .safetensors path"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda or auto"),
        DeclareLaunchArgument("rate", default_value="0.0", description="playback speed; 0 = as fast as lossless"),
        DeclareLaunchArgument("report", default_value="replay_evaluation.json", description="JSON report path"),
        DeclareLaunchArgument("namespace", default_value="pushbroom", description="namespace of the three nodes"),
        Node(package="scannernet_ros", executable="bag_player", name="bag_player", namespace=namespace,
             output="screen", parameters=[config, {"bag": LaunchConfiguration("bag"),
                                                   "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float)}]),
        Node(package="scannernet_ros", executable="segmenter", name="segmenter", namespace=namespace,
             output="screen", parameters=[config, {"model": LaunchConfiguration("model"),
                                                   "device": LaunchConfiguration("device")}]),
        Node(package="scannernet_ros", executable="evaluator", name="evaluator", namespace=namespace,
             output="screen", parameters=[config, {"report_path": LaunchConfiguration("report")}]),
    ])
