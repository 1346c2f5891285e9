"""PointCloud2 bytes (shapemask_ros.ros_bridge.pointcloud): layout, reader, and a rosbags CDR round trip."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from shapemask_ros.geometry.depth import CameraIntrinsics, depth_to_metres
from shapemask_ros.geometry.objects3d import compute_objects3d
from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.pointcloud import (
    FLOAT32,
    UINT32,
    make_pointcloud,
    objects_pointcloud,
    pointcloud_fields,
    pointcloud_to_arrays,
)

TS = get_typestore(Stores.ROS2_HUMBLE)


class NsFactory:
    """Plain namespaces and bytes, like a binding that wants `bytes` for uint8[]."""

    def make(self, type_name: str, **fields: Any) -> SimpleNamespace:
        return SimpleNamespace(type_name=type_name, **fields)

    def u8(self, data: np.ndarray) -> bytes:
        return data.tobytes()


def header():
    t = TS.types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=5, nanosec=7), frame_id="depth")


POINTS = np.array([[0.1, -0.2, 0.9], [1.5, 2.5, 3.25], [-1e-3, 0.0, 12.0]])
IDS = np.array([0, 7, 70000])


def test_layout_is_packed_little_endian_xyz_float32_and_uint32_id():
    f = pointcloud_fields(NsFactory(), None, POINTS, IDS)
    assert [(x.name, x.offset, x.datatype, x.count) for x in f["fields"]] == [
        ("x", 0, FLOAT32, 1),
        ("y", 4, FLOAT32, 1),
        ("z", 8, FLOAT32, 1),
        ("instance_id", 12, UINT32, 1),
    ]
    assert (f["height"], f["width"], f["point_step"], f["row_step"]) == (1, 3, 16, 48)
    assert f["is_bigendian"] is False and f["is_dense"] is True
    # create_cloud packs each point as struct '<fffI' with no padding: compare byte for byte
    expected = b"".join(struct.pack("<fffI", *p, i) for p, i in zip(POINTS, IDS.tolist(), strict=True))
    assert f["data"] == expected


def test_reader_roundtrip_and_pcl_label_name():
    msg = make_pointcloud(NsFactory(), None, POINTS, IDS, id_field="label")
    arrays = pointcloud_to_arrays(msg)
    assert list(arrays) == ["x", "y", "z", "label"]
    np.testing.assert_allclose(np.stack([arrays["x"], arrays["y"], arrays["z"]], -1), POINTS, rtol=1e-6)
    np.testing.assert_array_equal(arrays["label"], IDS)
    assert arrays["label"].dtype == np.uint32


def test_non_finite_points_dropped_and_bad_ids_rejected():
    pts = np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.0, np.inf, 1.0], [1.0, 1.0, 1.0]])
    f = pointcloud_fields(NsFactory(), None, pts, np.arange(4))
    assert f["width"] == 2
    np.testing.assert_array_equal(pointcloud_to_arrays(SimpleNamespace(**f))["instance_id"], [0, 3])
    with pytest.raises(ValueError, match="uint32"):
        pointcloud_fields(NsFactory(), None, POINTS, -1)


def test_reader_handles_big_endian_padding_rows_and_counts():
    # 2 x 2 organised cloud, big-endian, point_step 20 (4 bytes padding), rows padded to 48 bytes,
    # an INT16 field and a FLOAT64 field with count 1, a UINT8 field with count 2.
    fields = [
        SimpleNamespace(name="z", offset=0, datatype=8, count=1),
        SimpleNamespace(name="ring", offset=8, datatype=3, count=1),
        SimpleNamespace(name="rgb", offset=10, datatype=2, count=2),
    ]
    rows = []
    for r in range(2):
        row = b"".join(struct.pack(">dhBB4x", 10.0 * r + c, -r - c, r, c) + b"\0" * 4 for c in range(2))
        rows.append(row + b"\xee" * (48 - len(row)))
    msg = SimpleNamespace(
        height=2, width=2, fields=fields, is_bigendian=True, point_step=20, row_step=48, data=b"".join(rows)
    )
    a = pointcloud_to_arrays(msg)
    np.testing.assert_array_equal(a["z"], [0.0, 1.0, 10.0, 11.0])
    np.testing.assert_array_equal(a["ring"], [0, -1, -1, -2])
    np.testing.assert_array_equal(a["rgb"], [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert a["z"].dtype == np.float64 and a["z"].dtype.byteorder in ("=", "<")


def test_reader_rejects_inconsistent_clouds():
    f = [SimpleNamespace(name="x", offset=0, datatype=FLOAT32, count=1)]
    short = SimpleNamespace(height=1, width=4, fields=f, is_bigendian=False, point_step=4, row_step=16, data=b"\0" * 8)
    with pytest.raises(ValueError, match="needs more"):
        pointcloud_to_arrays(short)
    wide = [SimpleNamespace(name="x", offset=2, datatype=FLOAT32, count=1)]
    bad = SimpleNamespace(height=1, width=1, fields=wide, is_bigendian=False, point_step=4, row_step=4, data=b"\0" * 4)
    with pytest.raises(ValueError, match="does not fit"):
        pointcloud_to_arrays(bad)
    unknown = [SimpleNamespace(name="x", offset=0, datatype=42, count=1)]
    bad = SimpleNamespace(height=1, width=1, fields=unknown, is_bigendian=False, point_step=4, row_step=4, data=b"1234")
    with pytest.raises(ValueError, match="datatype"):
        pointcloud_to_arrays(bad)


def test_objects_cloud_through_rosbags_cdr():
    intr = CameraIntrinsics.from_matrix([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]], 64, 48)
    depth_mm = np.full((48, 64), 1000, np.uint16)
    depth_mm[30:40, 40:50] = 500
    depth_mm[12, 12] = 0  # a hole inside object 0
    masks = np.zeros((2, 48, 64), np.uint8)
    masks[0, 10:20, 10:20] = 1
    masks[1, 30:40, 40:50] = 1
    obj = compute_objects3d(depth_to_metres(depth_mm, "16UC1"), intr, masks, return_points=True)
    factory = RosbagsFactory(TS)
    msg = objects_pointcloud(factory, header(), obj)
    raw = TS.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")
    back = TS.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    assert (back.height, back.width, back.point_step, back.row_step) == (1, 199, 16, 199 * 16)
    assert back.header.frame_id == "depth" and back.header.stamp.sec == 5
    assert [(f.name, f.offset, f.datatype, f.count) for f in back.fields] == [
        ("x", 0, 7, 1),
        ("y", 4, 7, 1),
        ("z", 8, 7, 1),
        ("instance_id", 12, 6, 1),
    ]
    # read the bytes with an explicit structured dtype, independent of pointcloud_to_arrays
    dt = np.dtype({"names": ["x", "y", "z", "id"], "formats": ["<f4", "<f4", "<f4", "<u4"], "itemsize": 16})
    recs = np.frombuffer(np.asarray(back.data, np.uint8).tobytes(), dt)
    np.testing.assert_array_equal(np.bincount(recs["id"]), [99, 100])
    pts = np.stack([recs["x"], recs["y"], recs["z"]], -1)
    np.testing.assert_allclose(pts[recs["id"] == 1].mean(0), obj.centroids[1], atol=1e-6)
    np.testing.assert_allclose(pts[recs["id"] == 1][:, 2], 0.5, atol=1e-6)
    arrays = pointcloud_to_arrays(back)
    np.testing.assert_array_equal(arrays["instance_id"], recs["id"])
    np.testing.assert_array_equal(arrays["z"], recs["z"])


def test_objects_cloud_requires_points():
    intr = CameraIntrinsics.from_matrix([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]], 64, 48)
    obj = compute_objects3d(np.ones((48, 64), np.float32), intr, np.ones((1, 48, 64), np.uint8))
    with pytest.raises(ValueError, match="return_points"):
        objects_pointcloud(NsFactory(), None, obj)
