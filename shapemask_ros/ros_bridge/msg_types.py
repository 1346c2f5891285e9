"""The ROS message type names ('pkg/msg/Type') of the node's topics and of the messages it builds: one home
for each, imported by the builders (image_codec, detections, messages, pointcloud), the topic wiring
(node_params, the node) and bag-eval. No imports: the launch file and the parameter code read it cheaply."""

from __future__ import annotations

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
DETECTION_ARRAY_TYPE = "vision_msgs/msg/Detection2DArray"
MASK_ARRAY_TYPE = "shapemask_ros/msg/InstanceMaskArray"
MASK_TYPE = "shapemask_ros/msg/InstanceMask"
OBJECTS3D_TYPE = "shapemask_ros/msg/ObjectGeometryArray"
OBJECT3D_TYPE = "shapemask_ros/msg/ObjectGeometry"
