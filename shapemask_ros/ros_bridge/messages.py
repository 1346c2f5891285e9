"""Instances -> shapemask_ros/InstanceMaskArray, and the debug overlay image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from shapemask_ros.ros_bridge.detections import ParsedDetections, bounding_box_2d, instance_labels
from shapemask_ros.ros_bridge.factory import MessageFactory
from shapemask_ros.ros_bridge.image_codec import mono8_to_image_msg
from shapemask_ros.runtime.instances import Instances

MASK_ARRAY_TYPE = "shapemask_ros/msg/InstanceMaskArray"
MASK_TYPE = "shapemask_ros/msg/InstanceMask"


def instances_to_mask_array(
    factory: MessageFactory,
    instances: Instances,
    header: Any,
    class_names: Sequence[str],
    source: ParsedDetections | None = None,
    backend: str = "",
) -> Any:
    """Build an InstanceMaskArray: per object a mono8 0/255 mask cropped to `instances.regions[i]`.

    `header` is used verbatim for the array and for every mask image. `source` (the detections the
    predictor was given) supplies detection_id / detection_index and the detector's hypothesis; without
    it (self-detection) the model's class name and score are used and detection_index is -1.
    """
    height, width = (int(v) for v in instances.image_size)
    items = []
    labels = instance_labels(instances, class_names, source)
    for i, (class_id, score, det_id, det_index) in enumerate(labels):
        x, y, rw, rh = (int(v) for v in instances.regions[i])
        mask = np.asarray(instances.masks[i])
        if mask.shape != (rh, rw):
            raise ValueError(f"instance {i}: mask shape {mask.shape} != region (h={rh}, w={rw})")
        items.append(
            factory.make(
                MASK_TYPE,
                detection_id=det_id,
                detection_index=det_index,
                hypotheses=[factory.make("vision_msgs/msg/ObjectHypothesis", class_id=class_id, score=score)],
                bbox=bounding_box_2d(factory, instances.boxes[i]),
                roi=factory.make(
                    "sensor_msgs/msg/RegionOfInterest",
                    x_offset=x,
                    y_offset=y,
                    height=rh,
                    width=rw,
                    do_rectify=False,
                ),
                mask=mono8_to_image_msg(factory, np.where(mask > 0, 255, 0).astype(np.uint8), header),
                mask_score=float(instances.mask_scores[i]),
            )
        )
    return factory.make(
        MASK_ARRAY_TYPE,
        header=header,
        image_height=height,
        image_width=width,
        instances=items,
        backend=backend or instances.backend,
    )


def instance_color(i: int) -> tuple[int, int, int]:
    """Distinct, stable RGB colour of instance i (golden-ratio hue steps, full saturation)."""
    hue = int((i * 0.618033988749895 % 1.0) * 180)  # OpenCV hue range is [0, 180)
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def overlay_image(rgb: np.ndarray, instances: Instances, alpha: float = 0.5) -> np.ndarray:
    """Debug view: each mask alpha-blended in its own colour, its tight box outlined (uint8 RGB copy)."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    for i in range(len(instances)):
        color = np.array(instance_color(i), np.float32)
        x, y, rw, rh = (int(v) for v in instances.regions[i])
        view = out[y : y + rh, x : x + rw]
        m = np.asarray(instances.masks[i]).astype(bool)[: view.shape[0], : view.shape[1]]
        view[m] = (view[m].astype(np.float32) * (1 - alpha) + color * alpha).round().astype(np.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in instances.boxes[i])
        cv2.rectangle(out, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), instance_color(i), 1)
    return out
