"""ROS-free bridge between ROS 2 messages and the runtime: typestore, message factory, image and
detection conversions, message builders, stamp synchroniser and the frame processor shared by the
rclpy node and bag evaluation. Nothing here imports rclpy."""
