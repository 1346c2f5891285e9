"""Shared helpers of the synthetic bags (`demo_bag`: moving shapes; `tote_bag`: the real ARC 2017 tote): the
message builders of their camera and detector topics, and the simulated detector that turns ground-truth
boxes into noisy detections."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from shapemask_ros.ros_bridge.detections import bounding_box_2d, identity_pose_with_covariance
from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.image_codec import depth_to_image_msg
from shapemask_ros.ros_bridge.msg_types import CAMERA_INFO_TYPE, DETECTION_ARRAY_TYPE
from shapemask_ros.ros_bridge.typestore import get_typestore

FRAME_ID = "camera_color_optical_frame"


class DetectorNoise(Protocol):
    """What the simulated detector reads of a bag's config (`demo_bag.DemoBagConfig` has it all)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def miss_prob(self) -> float: ...
    @property
    def box_jitter(self) -> float: ...
    @property
    def spurious_per_frame(self) -> float: ...


def simulate_detector(
    boxes: list[tuple[str, str, tuple[float, float, float, float]]],
    cfg: DetectorNoise,
    rng: np.random.Generator,
    frame: int,
    family_names: list[str],
) -> tuple[list[tuple[str, str, float, tuple[float, float, float, float]]], dict[str, int]]:
    """[(class_id, id, score, box)] from ground-truth (class, track id, box): jitter, misses, false boxes."""
    out = []
    stats = {"true": 0, "missed": 0, "spurious": 0}
    w_img, h_img = cfg.width, cfg.height
    for cls, track_id, (x1, y1, x2, y2) in boxes:
        if rng.random() < cfg.miss_prob:
            stats["missed"] += 1
            continue
        w, h = x2 - x1, y2 - y1
        cx = (x1 + x2) / 2 + rng.normal(0, cfg.box_jitter) * w
        cy = (y1 + y2) / 2 + rng.normal(0, cfg.box_jitter) * h
        w *= math.exp(rng.normal(0, cfg.box_jitter))
        h *= math.exp(rng.normal(0, cfg.box_jitter))
        box = (max(cx - w / 2, 0.0), max(cy - h / 2, 0.0), min(cx + w / 2, w_img), min(cy + h / 2, h_img))
        out.append((cls, track_id, float(rng.uniform(0.55, 0.99)), box))
        stats["true"] += 1
    for j in range(int(rng.poisson(cfg.spurious_per_frame))):
        side = min(w_img, h_img)
        w, h = rng.uniform(0.06, 0.25, 2) * side
        x1, y1 = rng.uniform(0, w_img - w), rng.uniform(0, h_img - h)
        cls = family_names[int(rng.integers(0, len(family_names)))]
        out.append((cls, f"fp{frame}_{j}", float(rng.uniform(0.3, 0.55)), (x1, y1, x1 + w, y1 + h)))
        stats["spurious"] += 1
    return out, stats


class Messages:
    """Message builders for the synthetic bags' topics (rosbags classes via the project factory)."""

    def __init__(self) -> None:
        self.store = get_typestore()
        self.f = RosbagsFactory(self.store)

    def header(self, stamp_ns: int) -> Any:
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return self.f.make(
            "std_msgs/msg/Header",
            stamp=self.f.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec),
            frame_id=FRAME_ID,
        )

    def depth(self, header: Any, mm: np.ndarray) -> Any:
        return depth_to_image_msg(self.f, mm, header)

    def camera_info(self, header: Any, k: np.ndarray, width: int, height: int) -> Any:
        p = np.zeros((3, 4))
        p[:, :3] = k
        return self.f.make(
            CAMERA_INFO_TYPE,
            header=header,
            height=height,
            width=width,
            distortion_model="plumb_bob",
            d=np.zeros(5),
            k=k.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1),
            p=p.reshape(-1),
            binning_x=0,
            binning_y=0,
            roi=self.f.make(
                "sensor_msgs/msg/RegionOfInterest",
                x_offset=0,
                y_offset=0,
                height=0,
                width=0,
                do_rectify=False,
            ),
        )

    def detections(self, header: Any, dets: Sequence[tuple[str, str, float, tuple[float, ...]]]) -> Any:
        items = []
        for cls, det_id, score, box in dets:
            hyp = self.f.make(
                "vision_msgs/msg/ObjectHypothesisWithPose",
                hypothesis=self.f.make("vision_msgs/msg/ObjectHypothesis", class_id=cls, score=score),
                pose=identity_pose_with_covariance(self.f),
            )
            items.append(
                self.f.make(
                    "vision_msgs/msg/Detection2D",
                    header=header,
                    results=[hyp],
                    bbox=bounding_box_2d(self.f, np.asarray(box)),
                    id=det_id,
                )
            )
        return self.f.make(DETECTION_ARRAY_TYPE, header=header, detections=items)
