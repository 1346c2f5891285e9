"""The node's wire codec (ros_bridge.wire): CDR bytes <-> the typestore's message objects."""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.ros_bridge.messages import instances_to_mask_array
from shapemask_ros.ros_bridge.typestore import get_typestore
from shapemask_ros.ros_bridge.wire import WireCodec, typestore_for_distro
from support.ros import FakePredictor, detection, detection_array, header, random_rgb, rgb_image_msg

CODEC = WireCodec(get_typestore("jazzy"))


def _same(a, b) -> None:
    """Field-by-field equality of two message objects (NumPy arrays compared by value)."""
    assert type(a).__name__ == type(b).__name__
    for name in a.__dataclass_fields__:
        if name == "__msgtype__":
            continue
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, list):
            assert len(x) == len(y)
            for u, v in zip(x, y, strict=True):
                _same(u, v) if hasattr(u, "__dataclass_fields__") else (u == v or pytest.fail(f"{name}: {u} != {v}"))
        elif hasattr(x, "__dataclass_fields__"):
            _same(x, y)
        else:
            assert x == y, name


def test_inputs_and_outputs_survive_the_wire():
    hdr = header(7, 42, "camera_optical")
    img = rgb_image_msg(random_rgb(12, 16), hdr)
    dets = detection_array([detection((1, 2, 9, 10), "cup", 0.8, "a", hdr), detection((3, 3, 15, 11), "7", 0.5)], hdr)
    pred = FakePredictor(class_names=["person", "cup"])
    inst = pred.predict(random_rgb(12, 16), np.array([[1, 2, 9, 10]], np.float32), np.array([1], np.int32))
    masks = instances_to_mask_array(CODEC.factory, inst, hdr, pred.class_names, None, backend="fake")
    for msg in (img, dets, masks):
        raw = CODEC.encode(msg)
        assert isinstance(raw, bytes) and raw[:4] == b"\x00\x01\x00\x00"  # little-endian CDR, as rmw sends
        back = CODEC.decode(raw, msg.__msgtype__)
        _same(back, msg)
        assert CODEC.encode(back) == raw


def test_image_pixels_are_a_view_of_the_received_bytes():
    """A 640x480 frame is not copied when read: the pixels are a NumPy view of the bytes rclpy handed over."""
    img = rgb_image_msg(random_rgb(480, 640), header(1, 0))
    raw = CODEC.encode(img)
    data = CODEC.decode(raw, "sensor_msgs/Image").data
    assert data.nbytes == 480 * 640 * 3 and not data.flags.owndata
    assert np.shares_memory(data, np.frombuffer(raw, np.uint8))


def test_unknown_types_are_named():
    assert CODEC.check("sensor_msgs/Image") == "sensor_msgs/msg/Image"
    assert CODEC.check("shapemask_ros/msg/InstanceMaskArray") == "shapemask_ros/msg/InstanceMaskArray"
    with pytest.raises(KeyError, match="my_msgs/msg/Thing"):
        CODEC.check("my_msgs/Thing")


def test_typestore_follows_ros_distro(monkeypatch):
    assert typestore_for_distro("humble") is get_typestore("humble")
    for distro in ("jazzy", "kilted", "rolling", ""):
        assert typestore_for_distro(distro) is get_typestore("jazzy")
    monkeypatch.setenv("ROS_DISTRO", "humble")
    assert typestore_for_distro() is get_typestore("humble")
    assert WireCodec().typestore is get_typestore("humble")
