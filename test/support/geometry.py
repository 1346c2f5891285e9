"""rosbags CameraInfo messages for the geometry tests (any K, distortion, binning, ROI)."""

from __future__ import annotations

import numpy as np
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_HUMBLE)


def camera_info(k, d=(0.0,) * 5, model="plumb_bob", width=64, height=48, binning=(0, 0), roi=(0, 0, 0, 0), p=None):
    """A rosbags sensor_msgs/msg/CameraInfo (ROS 2 field names)."""
    t = TS.types
    k = np.asarray(k, np.float64).reshape(-1)
    if p is None:
        p = np.concatenate([k.reshape(3, 3), np.zeros((3, 1))], axis=1).reshape(-1)
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="cam")
    roi_msg = t["sensor_msgs/msg/RegionOfInterest"](
        x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3], do_rectify=False
    )
    return t["sensor_msgs/msg/CameraInfo"](
        header=header,
        height=height,
        width=width,
        distortion_model=model,
        d=np.asarray(d, np.float64),
        k=k,
        r=np.eye(3).reshape(-1),
        p=np.asarray(p, np.float64),
        binning_x=binning[0],
        binning_y=binning[1],
        roi=roi_msg,
    )
