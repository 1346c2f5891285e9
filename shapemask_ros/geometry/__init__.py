"""ROS-free 3D outputs for grasp planners: depth conversion, back-projection, per-object geometry, clouds.

Modules: depth (encodings, CameraInfo, colour/depth alignment), backproject, objects3d (centroids and
oriented boxes per mask), pointcloud (sensor_msgs/PointCloud2 bytes). See docs/geometry.md.
"""
