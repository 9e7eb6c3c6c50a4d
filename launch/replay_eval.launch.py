"""Replay scene bags into the segmenter and score its masks live: bag_player + segmenter + evaluator.

    ros2 launch scannernet_ros replay_eval.launch.py bag:=bags/ model:=scannernet rate:=0.0

The launch ends by itself, and its exit code is the verdict: 0 when the evaluator wrote an ok
report, 1 when the report says FAIL or a node failed (a bag that cannot be read, a bad model or
device), saying which.  The params file sets every parameter it names; a launch argument
overrides it only when given on the command line.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from scannernet_ros.launching import end_when_exits, given, nodes_from, override

PLAYER = {"bag": (("bag",), str), "rate": (("rate",), float)}
SEGMENTER = {"model": (("model",), str), "device": (("device",), str), "threshold": (("threshold",), float)}
EVALUATOR = {"report": (("report_path",), str)}


def make_nodes(context) -> list:
    params_file, namespace = LaunchConfiguration("params_file"), LaunchConfiguration("namespace")
    player = Node(package="scannernet_ros", executable="bag_player", name="bag_player", namespace=namespace,
                  output="screen", parameters=[params_file, given(context, PLAYER)])
    segmenter = Node(package="scannernet_ros", executable="segmenter", name="segmenter", namespace=namespace,
                     output="screen", parameters=[params_file, given(context, SEGMENTER)])
    evaluator = Node(package="scannernet_ros", executable="evaluator", name="evaluator", namespace=namespace,
                     output="screen", parameters=[params_file, given(context, EVALUATOR)])
    return [player, segmenter, evaluator,
            end_when_exits(evaluator, "the evaluator", done="the evaluator wrote an ok report"),
            end_when_exits(segmenter, "the segmenter", success_ends=False),
            end_when_exits(player, "the bag player", success_ends=False)]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("scannernet_ros"), "config", "replay_eval.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="a scene bag or a folder of them (scannernet convert)"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters of the three nodes; launch arguments given on the "
                                          "command line override it"),
        override("model", "registry name or .safetensors path"),
        override("device", "cpu, cuda, cuda:N or auto"),
        override("threshold", "cloud probability at which a pixel is cloud"),
        override("rate", "playback speed; 0 = as fast as lossless"),
        override("report", "JSON report path"),
        DeclareLaunchArgument("namespace", default_value="pushbroom", description="namespace of the three nodes"),
        nodes_from(make_nodes),
    ])
