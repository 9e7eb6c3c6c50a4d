"""launch_testing: pipeline.launch.py comes up, mask lines flow with their scanlines' headers, and
every node exits cleanly when the launch shuts down.  Collected by launch_testing's pytest plugin
(``colcon test``, or ``launch_test`` by hand); without launch_testing it holds no test."""
from __future__ import annotations

import os
import time
import unittest

import pytest

try:
    import launch_testing
    import launch_testing.actions
    import launch_testing.asserts
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
except ImportError:   # no ROS 2 command line: the standalone venv of `make test`
    launch_testing = None

NAMESPACE = "launch_testing"

if launch_testing is not None:

    @pytest.mark.launch_test
    def generate_test_description():
        pipeline = os.path.join(get_package_share_directory("scannernet_ros"), "launch", "pipeline.launch.py")
        return LaunchDescription([
            IncludeLaunchDescription(PythonLaunchDescriptionSource(pipeline),
                                     launch_arguments={"namespace": NAMESPACE, "source": "demo"}.items()),
            launch_testing.actions.ReadyToTest(),
        ])

    class TestMasksFlow(unittest.TestCase):

        def test_mask_lines_arrive_with_the_camera_headers(self):
            import rclpy
            from sensor_msgs.msg import Image

            from scannernet_ros.nodes.ros_common import qos
            rclpy.init()
            node = rclpy.create_node("launch_testing_listener", namespace=NAMESPACE)
            masks = []
            node.create_subscription(Image, "mask_line", masks.append, qos("reliable", 0))
            try:
                deadline = time.monotonic() + 60
                while len(masks) < 100 and time.monotonic() < deadline:
                    rclpy.spin_once(node, timeout_sec=0.1)
            finally:
                node.destroy_node()
                rclpy.shutdown()
            self.assertGreaterEqual(len(masks), 100, "fewer than 100 mask lines in 60 s")
            stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in masks]
            self.assertEqual(stamps, sorted(stamps))       # the camera's stamps, in order
            self.assertEqual({m.encoding for m in masks}, {"mono8"})
            self.assertEqual({m.header.frame_id for m in masks}, {"pushbroom_optical_frame"})

    @launch_testing.post_shutdown_test()
    class TestShutdown(unittest.TestCase):

        def test_every_node_exits_0(self, proc_info):
            launch_testing.asserts.assertExitCodes(proc_info)
