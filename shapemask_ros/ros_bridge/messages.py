"""Output messages: Instances -> shapemask_ros/InstanceMaskArray, Objects3D -> ObjectGeometryArray."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shapemask_ros.geometry.objects3d import Objects3D
from shapemask_ros.ros_bridge.detections import ParsedDetections, bounding_box_2d, instance_labels
from shapemask_ros.ros_bridge.factory import MessageFactory
from shapemask_ros.ros_bridge.image_codec import mono8_to_image_msg
from shapemask_ros.ros_bridge.msg_types import MASK_ARRAY_TYPE, MASK_TYPE, OBJECT3D_TYPE, OBJECTS3D_TYPE
from shapemask_ros.runtime.instances import Instances


def _mono8(mask: np.ndarray) -> np.ndarray:
    """0/255 uint8 of `mask > 0` (a bool view times 255: ~7x faster than np.where on a 120x150 mask)."""
    return (mask > 0).view(np.uint8) * np.uint8(255)


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
                mask=mono8_to_image_msg(factory, _mono8(mask), header),
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


def objects3d_message(
    factory: MessageFactory,
    header: Any,
    objects: Objects3D,
    detection_ids: Sequence[str] | None = None,
) -> Any:
    """shapemask_ros/msg/ObjectGeometryArray for `objects`; `header` should be the depth image's header.

    detection_ids[i] is the id of the source detection of object i ("" when unknown). NaN values (objects
    without depth) are published as NaN; consumers must check `status`.
    """
    ids = list(detection_ids) if detection_ids is not None else [""] * len(objects)
    if len(ids) != len(objects):
        raise ValueError(f"{len(objects)} objects but {len(ids)} detection ids")
    items = []
    for i in range(len(objects)):
        c, bc, bs, q = (
            objects.centroids[i],
            objects.box_centers[i],
            objects.box_sizes[i],
            objects.box_quaternions[i],
        )
        pose = factory.make(
            "geometry_msgs/msg/Pose",
            position=factory.make("geometry_msgs/msg/Point", x=float(bc[0]), y=float(bc[1]), z=float(bc[2])),
            orientation=factory.make(
                "geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])
            ),
        )
        items.append(
            factory.make(
                OBJECT3D_TYPE,
                instance_index=int(objects.instance_index[i]),
                detection_id=str(ids[i]),
                centroid=factory.make("geometry_msgs/msg/Point", x=float(c[0]), y=float(c[1]), z=float(c[2])),
                bbox=factory.make(
                    "vision_msgs/msg/BoundingBox3D",
                    center=pose,
                    size=factory.make("geometry_msgs/msg/Vector3", x=float(bs[0]), y=float(bs[1]), z=float(bs[2])),
                ),
                num_valid_points=int(objects.num_valid_points[i]),
                num_inliers=int(objects.num_inliers[i]),
                valid_fraction=float(objects.valid_fraction[i]),
                status=objects.status[i],
            )
        )
    return factory.make(OBJECTS3D_TYPE, header=header, objects=items)
