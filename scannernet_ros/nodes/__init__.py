"""Thin rclpy nodes: ROS in, a call into the ROS-free core, ROS out."""
