"""Replay scene bags into the segmenter and score its masks live: bag_player + segmenter + evaluator.

    ros2 launch scannernet_ros replay_eval.launch.py bag:=bags/ model:=scannernet rate:=0.0

The launch ends when the evaluator has written its report (its exit code: 0 ok, 1 FAIL), or when
the segmenter exits (a bad model or device), saying why.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def shutdown_when_exits(node: Node, why: str) -> RegisterEventHandler:
    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[
        LogInfo(msg=f"{why}: shutting the launch down"), EmitEvent(event=Shutdown(reason=why))]))


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare("scannernet_ros"), "config", "replay_eval.yaml"])
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    player = Node(package="scannernet_ros", executable="bag_player", name="bag_player", namespace=namespace,
                  output="screen", parameters=[params_file, {
                      "bag": LaunchConfiguration("bag"),
                      "rate": ParameterValue(LaunchConfiguration("rate"), value_type=float)}])
    segmenter = Node(package="scannernet_ros", executable="segmenter", name="segmenter", namespace=namespace,
                     output="screen", parameters=[params_file, {
                         "model": LaunchConfiguration("model"),
                         "device": LaunchConfiguration("device"),
                         "threshold": ParameterValue(LaunchConfiguration("threshold"), value_type=float)}])
    evaluator = Node(package="scannernet_ros", executable="evaluator", name="evaluator", namespace=namespace,
                     output="screen", parameters=[params_file, {"report_path": LaunchConfiguration("report")}])
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="a scene bag or a folder of them (scannernet convert)"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters of the three nodes (launch arguments override it)"),
        DeclareLaunchArgument("model", default_value="scannernet", description="registry name or .safetensors path"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda, cuda:N or auto"),
        DeclareLaunchArgument("threshold", default_value="0.5", description="cloud probability at which a pixel is cloud"),
        DeclareLaunchArgument("rate", default_value="0.0", description="playback speed; 0 = as fast as lossless"),
        DeclareLaunchArgument("report", default_value="replay_evaluation.json", description="JSON report path"),
        DeclareLaunchArgument("namespace", default_value="pushbroom", description="namespace of the three nodes"),
        player, segmenter, evaluator,
        shutdown_when_exits(evaluator, "the evaluator wrote its report"),
        shutdown_when_exits(segmenter, "the segmenter exited"),
    ])
