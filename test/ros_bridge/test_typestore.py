"""Typestore registration and rosbag2 I/O with our messages (ros_bridge.typestore)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg
from rosbags.typesys import get_typestore as stock_typestore

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ros_bridge.frame_processor import FrameProcessor
from shapemask_ros.ros_bridge.typestore import (
    MSGDEF_SEPARATOR,
    get_typestore,
    message_definition,
    normalize_type_name,
)
from support import REPO as REPO_ROOT
from support.ros import FACTORY, TS, FakePredictor, detection, detection_array, header, rgb_image_msg

REPO_MSG = REPO_ROOT / "msg"


def test_normalize_type_name():
    assert normalize_type_name("sensor_msgs/Image") == "sensor_msgs/msg/Image"
    assert normalize_type_name("/sensor_msgs/msg/Image") == "sensor_msgs/msg/Image"
    for bad in ("Image", "a/b/c/d", "a//b"):
        with pytest.raises(ValueError):
            normalize_type_name(bad)


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_typestores_have_vision_msgs_and_ours(distro):
    ts = get_typestore(distro)
    assert ts is get_typestore(distro)  # cached
    for t in (
        "vision_msgs/msg/Detection2DArray",
        "vision_msgs/msg/Pose2D",
        "shapemask_ros/msg/InstanceMaskArray",
    ):
        assert t in ts.types
    names = [f for f, _ in ts.fielddefs["vision_msgs/msg/BoundingBox2D"][1]]
    assert names == ["center", "size_x", "size_y"]
    names = [f for f, _ in ts.fielddefs["shapemask_ros/msg/InstanceMask"][1]]
    assert names == ["detection_id", "detection_index", "hypotheses", "bbox", "roi", "mask", "mask_score"]
    with pytest.raises(ValueError):
        get_typestore("foxy")


def test_msg_dir_env_override(tmp_path, monkeypatch):
    for name in ("InstanceMask.msg", "InstanceMaskArray.msg"):
        shutil.copy(REPO_MSG / name, tmp_path / name)
    with open(tmp_path / "InstanceMaskArray.msg", "a") as f:
        f.write("float32 extra_field_for_test\n")
    (tmp_path / "Extra.msg").write_text("# a later message of the package\nvision_msgs/BoundingBox3D box\n")
    monkeypatch.setenv("SHAPEMASK_MSG_DIR", str(tmp_path))
    get_typestore.cache_clear()
    try:
        ts = get_typestore("humble")
        fields = [f for f, _ in ts.fielddefs["shapemask_ros/msg/InstanceMaskArray"][1]]
        assert fields[-1] == "extra_field_for_test"
        assert "shapemask_ros/msg/Extra" in ts.types  # every .msg in the directory is registered
        assert message_definition(ts, "shapemask_ros/msg/Extra")[0].startswith("# a later message")
        for text in ("uint8\n", "vision_msgs/BoundingBox9D box\n"):
            (tmp_path / "Broken.msg").write_text(text)
            get_typestore.cache_clear()
            with pytest.raises(ValueError, match="Broken"):
                get_typestore("humble")
    finally:
        get_typestore.cache_clear()


def _frames():
    """Three frames through the real FrameProcessor: (image, detections, masks)."""
    proc = FrameProcessor(FakePredictor(), NodeConfig(), FACTORY)
    out = []
    for s in range(3):
        hdr = header(10 + s, 500, "cam")
        img = rgb_image_msg(np.full((12, 16, 3), 40 * s, np.uint8), hdr)
        dets = detection_array([detection((2, 2, 10, 9), "cup", 0.8, f"id{s}", hdr)], hdr)
        out.append((img, dets, proc.process(img, dets).masks))
    return out


@pytest.mark.parametrize("plugin", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_rosbag2_write_read_with_our_definitions(tmp_path, plugin):
    topics = {
        "/camera/image_raw": "sensor_msgs/msg/Image",
        "/detections": "vision_msgs/msg/Detection2DArray",
        "/shapemask/masks": "shapemask_ros/msg/InstanceMaskArray",
    }
    frames = _frames()
    path = tmp_path / "bag"
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns = {}
        for topic, typ in topics.items():
            msgdef, digest = message_definition(TS, typ)
            conns[topic] = w.add_connection(topic, typ, msgdef=msgdef, rihs01=digest)
        for img, dets, masks in frames:
            t = img.header.stamp.sec * 1_000_000_000 + img.header.stamp.nanosec
            for topic, msg in zip(topics, (img, dets, masks), strict=True):
                w.write(conns[topic], t, TS.serialize_cdr(msg, topics[topic]))

    with Reader(path) as r:
        by_topic = {c.topic: c for c in r.connections}
        mask_conn = by_topic["/shapemask/masks"]
        msgdef = mask_conn.msgdef.data
        # the stored definition is our .msg text (top level first, then dependencies, rosbag2 layout)
        array_text = (REPO_MSG / "InstanceMaskArray.msg").read_text()
        mask_text = (REPO_MSG / "InstanceMask.msg").read_text()
        assert msgdef.startswith(array_text.rstrip("\n") + "\n" + MSGDEF_SEPARATOR + "\n")
        assert f"{MSGDEF_SEPARATOR}\nMSG: shapemask_ros/msg/InstanceMask\n{mask_text}" in msgdef
        assert "MSG: vision_msgs/msg/BoundingBox2D\n" in msgdef
        assert mask_conn.digest == TS.hash_rihs01("shapemask_ros/msg/InstanceMaskArray")
        # a reader that only has the stock types can decode the bag from the stored definitions alone
        fresh = stock_typestore(Stores.ROS2_HUMBLE)
        for c in r.connections:
            fresh.register(get_types_from_msg(c.msgdef.data, c.msgtype))
        got = {t: [] for t in topics}
        for c, _t, raw in r.messages():
            got[c.topic].append(fresh.deserialize_cdr(raw, c.msgtype))
    assert [m.header.stamp.sec for m in got["/shapemask/masks"]] == [10, 11, 12]
    for (img, dets, masks), m, d, i in zip(
        frames, got["/shapemask/masks"], got["/detections"], got["/camera/image_raw"], strict=True
    ):
        np.testing.assert_array_equal(i.data, img.data)
        assert d.detections[0].id == dets.detections[0].id
        assert len(m.instances) == 1 and m.backend == "fake"
        np.testing.assert_array_equal(m.instances[0].mask.data, masks.instances[0].mask.data)
        assert m.instances[0].roi.width == masks.instances[0].roi.width
