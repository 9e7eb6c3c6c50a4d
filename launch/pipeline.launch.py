"""Camera + segmenter + waterfall under /pushbroom, parameters from a params file (config/pipeline.yaml).

    ros2 launch scannernet_ros pipeline.launch.py model:=scannernet device:=cuda line_rate:=225.0

``line_rate`` paces the camera and tells the segmenter the line period (lines per second, > 0).
The launch ends, saying why, when the camera or the segmenter exits (a bad model, device:=cuda
without CUDA, the end of a scene that does not loop): the pipeline cannot work without either.
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
    default_params = PathJoinSubstitution([FindPackageShare("scannernet_ros"), "config", "pipeline.yaml"])
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    line_rate = ParameterValue(LaunchConfiguration("line_rate"), value_type=float)
    camera = Node(package="scannernet_ros", executable="pushbroom_camera", name="pushbroom_camera",
                  namespace=namespace, output="screen",
                  parameters=[params_file, {"source": LaunchConfiguration("source"), "line_rate_hz": line_rate,
                                            "stamp_rate_hz": line_rate}])
    segmenter = Node(package="scannernet_ros", executable="segmenter", name="segmenter",
                     namespace=namespace, output="screen",
                     parameters=[params_file, {
                         "model": LaunchConfiguration("model"),
                         "device": LaunchConfiguration("device"),
                         "line_rate_hz": line_rate,
                         "threshold": ParameterValue(LaunchConfiguration("threshold"), value_type=float),
                         "qos_reliability": LaunchConfiguration("qos_reliability"),
                         "qos_depth": ParameterValue(LaunchConfiguration("qos_depth"), value_type=int),
                         "diagnostics_period_s": ParameterValue(LaunchConfiguration("diagnostics_period"), value_type=float),
                         "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
                     }])
    waterfall = Node(package="scannernet_ros", executable="waterfall", name="waterfall",
                     namespace=namespace, output="screen", parameters=[params_file])
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML parameters of the three nodes (launch arguments override it)"),
        DeclareLaunchArgument("model", default_value="scannernet",
                              description="registry name (shipped weights) or path to a .safetensors file"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu, cuda, cuda:N or auto"),
        DeclareLaunchArgument("source", default_value="synthetic",
                              description="'synthetic', a 38-Cloud patch/scene, an L8 Biome patch or an image file"),
        DeclareLaunchArgument("line_rate", default_value="225.0",
                              description="sensor line rate in lines per second, > 0: camera pacing and segmenter line period"),
        DeclareLaunchArgument("threshold", default_value="0.5", description="cloud probability at which a pixel is cloud"),
        DeclareLaunchArgument("qos_reliability", default_value="reliable", description="scanline QoS: reliable or best_effort"),
        DeclareLaunchArgument("qos_depth", default_value="10000", description="segmenter scanline queue depth (0 = keep all)"),
        DeclareLaunchArgument("diagnostics_period", default_value="1.0", description="seconds between segmenter /diagnostics reports"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="segmenter configures and activates itself; false: wait for `ros2 lifecycle set`"),
        DeclareLaunchArgument("namespace", default_value="pushbroom", description="namespace of the three nodes"),
        camera, segmenter, waterfall,
        shutdown_when_exits(segmenter, "the segmenter exited"),
        shutdown_when_exits(camera, "the camera exited"),
    ])
