"""sensor_msgs/PointCloud2 of segmented objects, built and read with NumPy (no sensor_msgs_py needed).

Layout (little-endian, packed, 16 bytes per point; the bytes sensor_msgs_py.point_cloud2.create_cloud
writes for the same fields):
    offset 0 x FLOAT32 | 4 y FLOAT32 | 8 z FLOAT32 | 12 instance_id UINT32
instance_id is the object's index into the InstanceMaskArray / ObjectGeometryArray of the same stamp
(0-based; unlike the label image there is no background id because only object points are published).
UINT32 rather than UINT16 keeps every field 4-byte aligned and matches PCL's PointXYZL `label` type (pass
id_field="label" to get a cloud PCL reads as PointXYZL). The cloud is unorganised (height 1, width = number
of points) and is_dense is True because non-finite points are never written. Coordinates are metres in
the depth camera's optical frame; copy the depth image's header.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from shapemask_ros.ros_bridge.factory import MessageFactory
from shapemask_ros.ros_bridge.msg_types import POINTS_TYPE

log = logging.getLogger(__name__)

# sensor_msgs/PointField datatype constants
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_NUMPY_OF = {
    INT8: "i1",
    UINT8: "u1",
    INT16: "i2",
    UINT16: "u2",
    INT32: "i4",
    UINT32: "u4",
    FLOAT32: "f4",
    FLOAT64: "f8",
}


def point_dtype(id_field: str = "instance_id") -> np.dtype:
    """Structured little-endian dtype of one point (16 bytes)."""
    return np.dtype(
        {
            "names": ["x", "y", "z", id_field],
            "formats": ["<f4", "<f4", "<f4", "<u4"],
            "offsets": [0, 4, 8, 12],
            "itemsize": 16,
        }
    )


def pointcloud_fields(
    factory: MessageFactory,
    header: Any,
    points: np.ndarray,
    instance_ids: np.ndarray | int,
    *,
    id_field: str = "instance_id",
) -> dict[str, Any]:
    """Keyword arguments of sensor_msgs/msg/PointCloud2 for points [N, 3] (metres) and ids [N] (or one id).

    Rows with a non-finite coordinate are left out (counted and logged) so the cloud can be dense.
    """
    pts = np.asarray(points)
    # float32 input stays float32 (the cloud's type: same bytes, no float64 copy of the whole cloud)
    pts = (pts if pts.dtype == np.float32 else pts.astype(np.float64, copy=False)).reshape(-1, 3)
    ids = np.broadcast_to(np.asarray(instance_ids), (len(pts),))
    if ids.size and (np.any(ids < 0) or np.any(ids > np.iinfo(np.uint32).max)):
        raise ValueError("instance ids must fit in uint32")
    # column-wise: an axis-1 reduction over [N, 3] is slow in NumPy
    finite = np.isfinite(pts[:, 0]) & np.isfinite(pts[:, 1]) & np.isfinite(pts[:, 2])
    if not finite.all():
        log.warning("point cloud: dropped %d non-finite points of %d", int((~finite).sum()), len(pts))
        pts, ids = pts[finite], ids[finite]
    dt = point_dtype(id_field)
    arr = np.empty(len(pts), dt)
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    arr[id_field] = ids
    fields = [
        factory.make("sensor_msgs/msg/PointField", name=name, offset=off, datatype=dtype, count=1)
        for name, off, dtype in (
            ("x", 0, FLOAT32),
            ("y", 4, FLOAT32),
            ("z", 8, FLOAT32),
            (id_field, 12, UINT32),
        )
    ]
    return {
        "header": header,
        "height": 1,
        "width": len(arr),
        "fields": fields,
        "is_bigendian": False,
        "point_step": dt.itemsize,
        "row_step": dt.itemsize * len(arr),
        "data": factory.u8(arr.view(np.uint8).reshape(-1)),
        "is_dense": True,
    }


def make_pointcloud(
    factory: MessageFactory, header: Any, points: np.ndarray, instance_ids: np.ndarray | int, **kw: Any
) -> Any:
    """sensor_msgs/msg/PointCloud2 from points [N, 3] and ids (see pointcloud_fields)."""
    return factory.make(POINTS_TYPE, **pointcloud_fields(factory, header, points, instance_ids, **kw))


def objects_pointcloud(factory: MessageFactory, header: Any, objects: Any, *, id_field: str = "instance_id") -> Any:
    """One cloud of all objects' inlier points (objects3d.Objects3D computed with return_points=True)."""
    if objects.points is None:
        raise ValueError("Objects3D has no points: call compute_objects3d(..., return_points=True)")
    records = getattr(objects, "cloud_records", None)
    same_ids = records is not None and np.array_equal(objects.instance_index, np.arange(len(objects.instance_index)))
    if records is not None and same_ids and sys.byteorder == "little":
        # the compiled 3D kernel wrote the points in this message's layout (finite, id = object row): no copy
        fields = pointcloud_fields(factory, header, np.zeros((0, 3), np.float32), 0, id_field=id_field)
        step = fields["point_step"]
        fields.update(width=len(records), row_step=step * len(records), data=factory.u8(records.view(np.uint8)))
        return factory.make(POINTS_TYPE, **fields)
    pts = [np.asarray(p, np.float32).reshape(-1, 3) for p in objects.points]
    cloud = getattr(objects, "cloud", None)  # compute_objects3d's concatenation of `points`: no copy needed
    if cloud is not None:
        all_pts = cloud
    else:
        all_pts = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
    counts = [len(p) for p in pts]
    all_ids = np.repeat(np.asarray(objects.instance_index, np.int64)[: len(counts)], counts)
    return make_pointcloud(factory, header, all_pts, all_ids, id_field=id_field)


def _as_u8(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), np.uint8)  # array.array and other buffers
    except TypeError:
        return np.asarray(data, np.uint8)  # plain list


def pointcloud_to_arrays(msg: Any) -> dict[str, np.ndarray]:
    """Read any sensor_msgs/PointCloud2 into {field name: array [height * width] (or [.., count])}.

    Honours offsets, point_step, row_step (padded rows), is_bigendian and count; raises ValueError for a
    cloud whose fields or data do not fit its declared sizes.
    """
    h, w = int(msg.height), int(msg.width)
    step, row_step = int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        code = _NUMPY_OF.get(int(f.datatype))
        if code is None:
            raise ValueError(f"field {f.name!r}: unknown PointField datatype {f.datatype}")
        count = max(int(f.count), 1)
        fmt = np.dtype(order + code) if count == 1 else np.dtype((order + code, (count,)))
        if int(f.offset) + fmt.itemsize > step:
            raise ValueError(f"field {f.name!r} at offset {f.offset} does not fit point_step {step}")
        names.append(str(f.name))
        formats.append(fmt)
        offsets.append(int(f.offset))
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": step}) if step else None
    buf = _as_u8(msg.data)
    if h * w == 0:
        return {
            n: np.zeros((0,) + fmt.shape, fmt.base.newbyteorder("=")) for n, fmt in zip(names, formats, strict=True)
        }
    if dt is None or row_step < w * step or buf.size < row_step * (h - 1) + w * step:
        raise ValueError(f"cloud {h}x{w}, point_step {step}, row_step {row_step} needs more than {buf.size} bytes")
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, w * step), strides=(row_step, 1))
    recs = np.ascontiguousarray(rows).reshape(-1).view(dt)
    return {n: recs[n].astype(recs[n].dtype.newbyteorder("=")) for n in names}
