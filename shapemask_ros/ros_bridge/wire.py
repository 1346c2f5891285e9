"""The node's data path on the wire: CDR bytes <-> the rosbags message objects bag evaluation uses.

The node subscribes to its inputs raw and publishes its outputs as serialised bytes, so rclpy's generated
Python classes (a setter with type checks for every field of every nested message) never sit on the data
path. Measured in the real Jazzy lane (`python -m shapemask_ros.bench.wire_bench`, one run): reading a
20-detection Detection2DArray costs 0.22 ms with the codec against 0.70 ms through rclpy's classes, a 640x480
Image 0.005 vs 0.09 ms (a NumPy view of the bytes, no copy), building + serialising a 20-instance
InstanceMaskArray 1.1 vs 1.9 ms, the same message on the wire. The frame processor then sees the same
message objects in the node as in `bag-eval`, whose typestore (vision_msgs 4.x and this package's own .msg
files) this is.
"""

from __future__ import annotations

import os
from typing import Any

from rosbags.typesys.store import Typestore

from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.typestore import get_typestore, normalize_type_name


def typestore_for_distro(distro: str | None = None) -> Typestore:
    """The typestore for `distro` (default: $ROS_DISTRO): Humble's stock types for humble, Jazzy's for
    every later distro (the types the node reads and writes did not change after Jazzy)."""
    distro = (distro if distro is not None else os.environ.get("ROS_DISTRO", "")).strip().lower()
    return get_typestore("humble" if distro == "humble" else "jazzy")


class WireCodec:
    """CDR (de)serialisation by type name; `factory` builds the messages `encode` takes."""

    def __init__(self, typestore: Typestore | None = None) -> None:
        self.typestore = typestore if typestore is not None else typestore_for_distro()
        self.factory = RosbagsFactory(self.typestore)

    def check(self, type_name: str) -> str:
        """The normalised name of `type_name`; KeyError naming it when the typestore lacks it."""
        name = normalize_type_name(type_name)
        if name not in self.typestore.types:
            raise KeyError(f"message type {name!r} is not in the node's typestore (shapemask_ros.ros_bridge.typestore)")
        return name

    def decode(self, raw: bytes | memoryview, type_name: str) -> Any:
        """A message object from its serialised bytes (uint8[] fields are NumPy views of `raw`: through a
        memoryview, as bytes would be sliced, i.e. copied, first: 0.04 vs 0.008 ms for a 640x480 frame)."""
        view = raw if isinstance(raw, memoryview) else memoryview(raw)
        return self.typestore.deserialize_cdr(view, normalize_type_name(type_name))

    def encode(self, msg: Any) -> bytes:
        """Serialised bytes of a message built by `factory` (what rclpy's Publisher.publish takes raw)."""
        return bytes(self.typestore.serialize_cdr(msg, msg.__msgtype__))
