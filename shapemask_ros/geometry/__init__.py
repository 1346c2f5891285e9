"""ROS-free 3D outputs for grasp planners: depth conversion, back-projection, per-object geometry, clouds.

Modules: depth (encodings, CameraInfo, colour/depth alignment), undistort (the ray solver on OpenCV 4.5 to
5.x), backproject, objects3d (centroids and oriented boxes per mask), pointcloud (sensor_msgs/PointCloud2
bytes). See docs/geometry.md.
"""
