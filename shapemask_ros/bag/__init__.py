"""Offline rosbag2 work without ROS: read (reader), write atomically (writer), evaluate (bag_eval + report)
and generate the synthetic demo camera bag (demo_bag). See docs/bag_eval.md."""
