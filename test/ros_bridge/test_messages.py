"""InstanceMaskArray building, CDR round trip and the overlay (ros_bridge.messages)."""

from __future__ import annotations

import numpy as np

from shapemask_ros.ros_bridge.messages import instances_to_mask_array
from shapemask_ros.runtime.instances import Instances
from shapemask_ros.runtime.overlay import instance_color, overlay_image
from support.ros import FACTORY, TS, header


def _instances() -> Instances:
    m0 = np.zeros((4, 6), np.uint8)
    m0[1:3, 2:5] = 1
    m1 = np.ones((3, 3), np.uint8)
    return Instances(
        boxes=np.array([[3, 2, 7, 5], [10, 8, 13, 11]], np.float32),
        scores=np.array([0.9, 0.6], np.float32),
        class_ids=np.array([1, 5], np.int32),  # 5 is outside class_names -> ""
        masks=[m0, m1],
        regions=np.array([[2, 1, 6, 4], [10, 8, 3, 3]], np.int32),
        mask_scores=np.array([0.8, 0.3], np.float32),
        source_index=np.array([0, 1], np.int32),
        image_size=(12, 16),
        backend="onnxruntime",
    )


def test_mask_array_fields_and_cdr_round_trip():
    inst = _instances()
    hdr = header(42, 7, "cam")
    msg = instances_to_mask_array(FACTORY, inst, hdr, ["person", "cup"])
    assert (msg.image_height, msg.image_width, msg.backend) == (12, 16, "onnxruntime")
    first = msg.instances[0]
    assert (first.roi.x_offset, first.roi.y_offset, first.roi.width, first.roi.height) == (2, 1, 6, 4)
    assert first.hypotheses[0].class_id == "cup" and msg.instances[1].hypotheses[0].class_id == ""
    assert (first.detection_id, first.detection_index) == ("", -1)
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (5.0, 3.5)
    np.testing.assert_array_equal(first.mask.data.reshape(4, 6), inst.masks[0] * 255)
    raw = TS.serialize_cdr(msg, "shapemask_ros/msg/InstanceMaskArray")
    back = TS.deserialize_cdr(raw, "shapemask_ros/msg/InstanceMaskArray")
    assert back.header.stamp.sec == 42 and back.header.frame_id == "cam"
    assert back.instances[1].mask_score == np.float32(0.3)
    np.testing.assert_array_equal(back.instances[0].mask.data, first.mask.data)
    assert back.instances[0].mask.header.stamp.nanosec == 7


def test_overlay_blends_mask_pixels_only():
    inst = _instances()
    rgb = np.full((12, 16, 3), 100, np.uint8)
    out = overlay_image(rgb, inst, alpha=0.5)
    c0 = np.array(instance_color(0), np.float32)
    np.testing.assert_array_equal(out[3, 5], np.round(100 * 0.5 + c0 * 0.5).astype(np.uint8))  # inside mask 0
    assert tuple(out[2, 3]) == instance_color(0)  # box outline (top-left corner)
    assert (out[0, 0] == 100).all() and (out[11, 0] == 100).all()  # far from both objects
    assert (rgb == 100).all()  # input untouched
    assert instance_color(0) != instance_color(1)
