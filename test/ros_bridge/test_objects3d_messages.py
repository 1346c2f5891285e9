"""msg/ObjectGeometry(Array).msg through the project typestore: fill from Objects3D, CDR round trip."""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.geometry.depth import CameraIntrinsics, depth_to_metres
from shapemask_ros.geometry.objects3d import (
    STATUS_BAD_MASK,
    STATUS_EMPTY_MASK,
    STATUS_NO_DEPTH,
    STATUS_OK,
    STATUS_TOO_FEW_POINTS,
    compute_objects3d,
)
from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.messages import objects3d_message
from shapemask_ros.ros_bridge.typestore import get_typestore


@pytest.fixture(scope="module", params=["humble", "jazzy"])
def typestore(request):
    """The project's typestore: stock types + vision_msgs 4.x + every msg/*.msg of the package."""
    return get_typestore(request.param)


def test_status_constants_match_code(typestore):
    cls = typestore.types["shapemask_ros/msg/ObjectGeometry"]
    assert (
        cls.STATUS_OK,
        cls.STATUS_TOO_FEW_POINTS,
        cls.STATUS_NO_DEPTH,
        cls.STATUS_EMPTY_MASK,
        cls.STATUS_BAD_MASK,
    ) == (
        STATUS_OK,
        STATUS_TOO_FEW_POINTS,
        STATUS_NO_DEPTH,
        STATUS_EMPTY_MASK,
        STATUS_BAD_MASK,
    )


def test_message_roundtrip(typestore):
    intr = CameraIntrinsics.from_matrix([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]], 64, 48)
    depth_mm = np.full((48, 64), 800, np.uint16)
    depth_mm[0:10, 0:10] = 0
    masks = np.zeros((3, 48, 64), np.uint8)
    masks[0, 20:40, 10:50] = 1
    masks[1, 0:10, 0:10] = 1  # no depth there
    masks[2, 45:47, 60:62] = 1  # 4 pixels
    obj = compute_objects3d(depth_to_metres(depth_mm, "16UC1"), intr, masks)
    t = typestore.types
    hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="depth_optical")
    msg = objects3d_message(RosbagsFactory(typestore), hdr, obj, ["det-a", "det-b", "det-c"])
    raw = typestore.serialize_cdr(msg, "shapemask_ros/msg/ObjectGeometryArray")
    back = typestore.deserialize_cdr(raw, "shapemask_ros/msg/ObjectGeometryArray")
    assert back.header.frame_id == "depth_optical" and back.header.stamp.nanosec == 4
    assert [o.status for o in back.objects] == ["ok", "no_depth", "too_few_points"]
    assert [o.detection_id for o in back.objects] == ["det-a", "det-b", "det-c"]
    assert [o.instance_index for o in back.objects] == [0, 1, 2]
    o = back.objects[0]
    np.testing.assert_allclose([o.centroid.x, o.centroid.y, o.centroid.z], obj.centroids[0])
    q = o.bbox.center.orientation
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], obj.box_quaternions[0])
    np.testing.assert_allclose([o.bbox.size.x, o.bbox.size.y, o.bbox.size.z], obj.box_sizes[0])
    assert o.bbox.size.x == pytest.approx(39 * 0.8 / 60)
    assert (o.num_valid_points, o.num_inliers, o.valid_fraction) == (800, 800, 1.0)
    assert np.isnan(back.objects[1].centroid.z) and back.objects[1].bbox.center.orientation.w == 1.0
    with pytest.raises(ValueError, match="detection ids"):
        objects3d_message(RosbagsFactory(typestore), hdr, obj, ["only-one"])
