"""vision_msgs/Detection2DArray (4.x) <-> box arrays, with validation against the camera image.

Boxes from another detector are the most common source of silently wrong masks (boxes in the pixel
frame of a resized image, NaNs, boxes off the image), so every detection is either kept -- possibly
clipped -- or dropped with a counted reason: bad_box, low_score, filtered, over_max (and `clipped` /
`rotated` count kept-but-changed boxes).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ros_bridge.factory import MessageFactory
from shapemask_ros.ros_bridge.msg_types import DETECTION_ARRAY_TYPE
from shapemask_ros.runtime.instances import Instances


@dataclass
class ParsedDetections:
    """Valid detections of one Detection2DArray, in camera-image pixels.

    boxes:        [N, 4] float32 (x1, y1, x2, y2), clipped to the camera image.
    class_ids:    N class_id strings of the best hypothesis ("" when a detection has none).
    scores:       [N] float64 score of the best hypothesis (1.0 when a detection has none).
    ids:          N Detection2D.id strings.
    source_index: [N] int32 index of each kept detection in `msg.detections`.
    dropped:      counts by reason (bad_box, low_score, filtered, over_max, clipped, rotated).
    """

    boxes: np.ndarray
    class_ids: list[str]
    scores: np.ndarray
    ids: list[str]
    source_index: np.ndarray
    dropped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def _best_hypothesis(det: Any) -> tuple[str, float] | None:
    """(class_id, score) of the highest-scoring hypothesis; ("", 1.0) without any; None if scores are bad."""
    results = list(getattr(det, "results", None) or [])
    if not results:
        return "", 1.0
    best: tuple[str, float] | None = None
    for r in results:
        hyp = r.hypothesis
        score = float(hyp.score)
        if not math.isfinite(score):
            continue
        if best is None or score > best[1]:
            best = (str(hyp.class_id), score)
    return best


def _axis_aligned(det: Any) -> tuple[float, float, float, float, float]:
    """(x1, y1, x2, y2, theta) of the axis-aligned hull of the (possibly rotated) box."""
    bbox = det.bbox
    cx, cy = float(bbox.center.position.x), float(bbox.center.position.y)
    w, h = float(bbox.size_x), float(bbox.size_y)
    theta = float(bbox.center.theta)
    if theta != 0.0 and math.isfinite(theta):
        c, s = abs(math.cos(theta)), abs(math.sin(theta))
        w, h = w * c + h * s, w * s + h * c  # hull of the rotated rectangle
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, theta


def detection_scale(cfg: NodeConfig, image_size: tuple[int, int]) -> tuple[float, float]:
    """(sx, sy) from the detector's image to the camera image.

    detection_image_width/height = 0 means the same image; when only one of them is set the scale is
    uniform (aspect ratio kept), so a half-finished parameter update never distorts boxes.
    """
    h, w = image_size
    dw, dh = int(cfg.detection_image_width), int(cfg.detection_image_height)
    if dw > 0 and dh > 0:
        return w / dw, h / dh
    if dw > 0:
        return w / dw, w / dw
    if dh > 0:
        return h / dh, h / dh
    return 1.0, 1.0


def detections_to_arrays(msg: Any, image_size: tuple[int, int], cfg: NodeConfig) -> ParsedDetections:
    """Validate and convert a vision_msgs 4.x Detection2DArray; see the module docstring for drop reasons.

    `image_size` is the camera image (height, width). Order: malformed/non-finite/empty boxes -> bad_box;
    rescale to the camera image; score < cfg.score_threshold -> low_score; class not in a non-empty
    cfg.class_filter -> filtered; off the image -> bad_box (partly off: clipped and counted `clipped`);
    above cfg.max_objects the highest scores are kept (`over_max`). Kept detections stay in message order.
    """
    h, w = int(image_size[0]), int(image_size[1])
    sx, sy = detection_scale(cfg, (h, w))
    dropped: Counter = Counter()
    boxes: list[tuple[float, float, float, float]] = []
    classes: list[str] = []
    scores: list[float] = []
    ids: list[str] = []
    index: list[int] = []
    try:
        detections = list(msg.detections)
    except (AttributeError, TypeError):
        detections = []
        dropped["bad_message"] += 1
    allowed = set(cfg.class_filter)
    for i, det in enumerate(detections):
        try:
            x1, y1, x2, y2, theta = _axis_aligned(det)
            best = _best_hypothesis(det)
            det_id = str(getattr(det, "id", "") or "")
        except (AttributeError, TypeError, ValueError, OverflowError):
            dropped["bad_box"] += 1
            continue
        if best is None or not all(math.isfinite(v) for v in (x1, y1, x2, y2, theta)) or x2 <= x1 or y2 <= y1:
            dropped["bad_box"] += 1
            continue
        if theta != 0.0:
            dropped["rotated"] += 1
        x1, x2, y1, y2 = x1 * sx, x2 * sx, y1 * sy, y2 * sy
        class_id, score = best
        if score < cfg.score_threshold:
            dropped["low_score"] += 1
            continue
        if allowed and class_id not in allowed:
            dropped["filtered"] += 1
            continue
        cx1, cy1, cx2, cy2 = (
            min(max(x1, 0.0), w),
            min(max(y1, 0.0), h),
            min(max(x2, 0.0), w),
            min(max(y2, 0.0), h),
        )
        # the boxes go on as float32: a sliver that is positive in float64 (e.g. width 1e-300 from a rotated
        # box) collapses to zero width there, so check the extent after rounding (found by `make fuzz`)
        f1, g1, f2, g2 = (float(np.float32(v)) for v in (cx1, cy1, cx2, cy2))
        if f2 <= f1 or g2 <= g1:
            dropped["bad_box"] += 1
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            dropped["clipped"] += 1
        boxes.append((cx1, cy1, cx2, cy2))
        classes.append(class_id)
        scores.append(score)
        ids.append(det_id)
        index.append(i)
    keep = np.arange(len(boxes))
    if len(boxes) > cfg.max_objects:
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[: max(int(cfg.max_objects), 0)]
        keep = np.sort(order)
        dropped["over_max"] += len(boxes) - len(keep)
    return ParsedDetections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4)[keep],
        class_ids=[classes[k] for k in keep],
        scores=np.asarray(scores, np.float64)[keep],
        ids=[ids[k] for k in keep],
        source_index=np.asarray(index, np.int32)[keep],
        dropped=dropped,
    )


def instance_labels(
    instances: Instances, class_names: Sequence[str], source: ParsedDetections | None = None
) -> list[tuple[str, float, str, int]]:
    """Per instance (class_id, score, detection_id, detection_index).

    With `source` (the detections given to the predictor, `instances.source_index` indexing them) the
    detector's own class string, score and id are kept; in self-detection the model's class name and
    score are used with id "" and index -1.
    """
    out = []
    for i in range(len(instances)):
        if source is not None and len(source):
            s = int(instances.source_index[i])
            out.append((source.class_ids[s], float(source.scores[s]), source.ids[s], int(source.source_index[s])))
        else:
            cid = int(instances.class_ids[i])
            name = class_names[cid] if 0 <= cid < len(class_names) else ""
            out.append((name, float(instances.scores[i]), "", -1))
    return out


def identity_pose_with_covariance(factory: MessageFactory) -> Any:
    """geometry_msgs/PoseWithCovariance at the origin (vision_msgs carries a 6D pose we do not estimate)."""
    return factory.make(
        "geometry_msgs/msg/PoseWithCovariance",
        pose=factory.make(
            "geometry_msgs/msg/Pose",
            position=factory.make("geometry_msgs/msg/Point", x=0.0, y=0.0, z=0.0),
            orientation=factory.make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, np.float64),
    )


def bounding_box_2d(factory: MessageFactory, box: np.ndarray) -> Any:
    """(x1, y1, x2, y2) -> vision_msgs/BoundingBox2D (centre + size, theta 0)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return factory.make(
        "vision_msgs/msg/BoundingBox2D",
        center=factory.make(
            "vision_msgs/msg/Pose2D",
            position=factory.make("vision_msgs/msg/Point2D", x=(x1 + x2) / 2, y=(y1 + y2) / 2),
            theta=0.0,
        ),
        size_x=x2 - x1,
        size_y=y2 - y1,
    )


def instances_to_detections(
    factory: MessageFactory,
    instances: Instances,
    header: Any,
    class_names: Sequence[str],
    source: ParsedDetections | None = None,
) -> Any:
    """Refined vision_msgs/Detection2DArray: the predictor's tight boxes with the detector's class/score/id.

    `header` is used verbatim for the array and every detection; labels follow `instance_labels`.
    """
    dets = []
    for box, (class_id, score, det_id, _index) in zip(
        instances.boxes, instance_labels(instances, class_names, source), strict=True
    ):
        hyp = factory.make(
            "vision_msgs/msg/ObjectHypothesisWithPose",
            hypothesis=factory.make("vision_msgs/msg/ObjectHypothesis", class_id=class_id, score=score),
            pose=identity_pose_with_covariance(factory),
        )
        dets.append(
            factory.make(
                "vision_msgs/msg/Detection2D",
                header=header,
                results=[hyp],
                bbox=bounding_box_2d(factory, box),
                id=det_id,
            )
        )
    return factory.make(DETECTION_ARRAY_TYPE, header=header, detections=dets)
