"""Depth images and CameraInfo messages of a small RGB-D camera (frame processor, node and fuzz tests)."""

from __future__ import annotations

import numpy as np

from support.ros import FACTORY, header, image_msg

H, W = 48, 64


FX = FY = 60.0


CX, CY = 31.5, 23.5


FRAME = "camera_color_optical_frame"


def depth_msg(depth: np.ndarray, sec: int, nsec: int = 0, frame: str = FRAME, encoding: str = "16UC1"):
    h, w = depth.shape
    return image_msg(depth.astype("<u2").tobytes(), h, w, encoding, 2 * w, header(sec, nsec, frame))


def camera_info(w: int = W, h: int = H, k=None, d=(), model: str = "plumb_bob", frame: str = FRAME):
    k = np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1.0] if k is None else k, np.float64)
    p = np.concatenate([k.reshape(3, 3), np.zeros((3, 1))], axis=1).reshape(-1)
    roi = FACTORY.make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return FACTORY.make(
        "sensor_msgs/msg/CameraInfo",
        header=header(1, 0, frame),
        height=h,
        width=w,
        distortion_model=model,
        d=np.asarray(d, np.float64),
        k=k,
        r=np.eye(3).reshape(-1),
        p=p,
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
