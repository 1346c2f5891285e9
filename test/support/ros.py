"""Shared helpers for the ros_bridge tests: rosbags messages and a fake predictor (no tests here)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from shapemask_ros.ros_bridge.detections import identity_pose_with_covariance
from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.typestore import get_typestore
from shapemask_ros.runtime.instances import Instances

# rclpy exists only in a ROS environment: the node and the tools that drive a node process (the test lane
# and the node benchmarks) are the only modules that import it at module level (test_layering,
# test_ros_package)
NEEDS_RCLPY = (
    "shapemask_ros.node",
    "shapemask_ros.bench.node_driver",
    "shapemask_ros.bench.node_bench",
    "shapemask_ros.bench.wire_bench",
)

TS = get_typestore("humble")
FACTORY = RosbagsFactory(TS)


def header(sec: int = 1, nanosec: int = 0, frame_id: str = "camera") -> object:
    stamp = FACTORY.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)
    return FACTORY.make("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)


def image_msg(raw: bytes | np.ndarray, height: int, width: int, encoding: str, step: int, hdr=None, big=0):
    return FACTORY.make(
        "sensor_msgs/msg/Image",
        header=hdr if hdr is not None else header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=big,
        step=step,
        data=np.frombuffer(bytes(raw), np.uint8).copy() if not isinstance(raw, np.ndarray) else raw,
    )


def rgb_image_msg(rgb: np.ndarray, hdr=None):
    h, w = rgb.shape[:2]
    return image_msg(np.ascontiguousarray(rgb).reshape(-1), h, w, "rgb8", 3 * w, hdr)


def compressed_msg(data: np.ndarray, fmt: str, hdr=None):
    return FACTORY.make(
        "sensor_msgs/msg/CompressedImage",
        header=hdr if hdr is not None else header(),
        format=fmt,
        data=np.asarray(data, np.uint8).reshape(-1),
    )


def detection(box_xyxy, class_id: str | None = "cup", score: float = 0.9, det_id: str = "", hdr=None, theta=0.0):
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    pose = identity_pose_with_covariance(FACTORY)
    results = []
    if class_id is not None:
        hyp = FACTORY.make("vision_msgs/msg/ObjectHypothesis", class_id=class_id, score=score)
        results.append(FACTORY.make("vision_msgs/msg/ObjectHypothesisWithPose", hypothesis=hyp, pose=pose))
    center = FACTORY.make(
        "vision_msgs/msg/Pose2D",
        position=FACTORY.make("vision_msgs/msg/Point2D", x=(x1 + x2) / 2, y=(y1 + y2) / 2),
        theta=theta,
    )
    bbox = FACTORY.make("vision_msgs/msg/BoundingBox2D", center=center, size_x=x2 - x1, size_y=y2 - y1)
    return FACTORY.make(
        "vision_msgs/msg/Detection2D",
        header=hdr if hdr is not None else header(),
        results=results,
        bbox=bbox,
        id=det_id,
    )


def detection_array(dets: list, hdr=None):
    return FACTORY.make(
        "vision_msgs/msg/Detection2DArray", header=hdr if hdr is not None else header(), detections=dets
    )


def ellipse_mask(box: np.ndarray, region: np.ndarray) -> np.ndarray:
    """{0,1} ellipse inscribed in `box`, drawn in the coordinates of `region` (x, y, w, h)."""
    x, y, w, h = (int(v) for v in region)
    yy, xx = np.mgrid[y : y + h, x : x + w] + 0.5  # pixel centres
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    ax, ay = max((box[2] - box[0]) / 2, 1e-6), max((box[3] - box[1]) / 2, 1e-6)
    return (((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0).astype(np.uint8)


class FakePredictor:
    """Predictor stand-in: each mask is the ellipse inscribed in its box; region = 1.25x box, clipped."""

    backend = "fake"
    mask_threshold = 0.5  # PredictorProtocol's settings (the fake's masks are already binary)
    flip_average = False

    def __init__(self, class_names=("person", "cup"), self_boxes=None, self_scores=None, self_classes=None):
        self.class_names = list(class_names)
        self.self_boxes = np.asarray(self_boxes if self_boxes is not None else np.zeros((0, 4)), np.float32)
        self.self_scores = np.asarray(self_scores if self_scores is not None else [], np.float32)
        self.self_classes = np.asarray(self_classes if self_classes is not None else [], np.int32)
        self.calls: list[dict] = []
        self.fail = False

    def predict(self, image, boxes, classes, score_threshold=None) -> Instances:
        self.calls.append({"image": image, "boxes": boxes, "classes": classes, "score_threshold": score_threshold})
        if self.fail:
            raise RuntimeError("simulated backend failure")
        h, w = image.shape[:2]
        if boxes is None:
            keep = self.self_scores >= (score_threshold or 0.0)
            boxes, scores, cls = self.self_boxes[keep], self.self_scores[keep], self.self_classes[keep]
            src = np.flatnonzero(keep).astype(np.int32)
        else:
            boxes = np.asarray(boxes, np.float32)
            scores = np.ones(len(boxes), np.float32)
            cls = np.asarray(classes if classes is not None else -np.ones(len(boxes)), np.int32)
            src = np.arange(len(boxes), dtype=np.int32)
        regions, masks = [], []
        for b in boxes:
            cx, cy, bw, bh = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) * 1.25, (b[3] - b[1]) * 1.25
            x1, y1 = max(math.floor(cx - bw / 2), 0), max(math.floor(cy - bh / 2), 0)
            x2, y2 = min(math.ceil(cx + bw / 2), w), min(math.ceil(cy + bh / 2), h)
            region = np.array([x1, y1, x2 - x1, y2 - y1], np.int32)
            regions.append(region)
            masks.append(ellipse_mask(b, region))
        return Instances(
            boxes=boxes.reshape(-1, 4),
            scores=scores,
            class_ids=cls,
            masks=masks,
            regions=np.asarray(regions, np.int32).reshape(-1, 4),
            mask_scores=np.full(len(boxes), 0.75, np.float32),
            source_index=src,
            image_size=(h, w),
            backend=self.backend,
        )


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def jpeg_bytes(rgb: np.ndarray, ext: str = ".png") -> np.ndarray:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.reshape(-1)


def get_message(type_name: str) -> Any:
    """The typestore's message class for 'pkg/msg/Type' (what rosidl_runtime_py.utilities.get_message does)."""
    from shapemask_ros.ros_bridge.typestore import normalize_type_name

    return TS.types[normalize_type_name(type_name)]
