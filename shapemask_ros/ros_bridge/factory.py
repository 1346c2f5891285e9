"""Building messages without knowing whose message classes they are.

The builders in this package call `factory.make("sensor_msgs/msg/Image", **every_field)` and
`factory.u8(buffer)` for uint8[] fields. `RosbagsFactory` implements it with rosbags typestore classes
(dataclasses: every field must be given, uint8[] is a NumPy uint8 array): bag I/O, bag-eval and the node,
which reads and writes CDR bytes with the same typestore (ros_bridge/wire.py). The protocol keeps the
builders open to other message implementations (rclpy's generated classes take the same keyword fields;
`python -m shapemask_ros.bench.wire_bench` builds with them for comparison). The field names are the same
in all, so readers of messages (`msg.header.stamp.sec`, ...) need no adapter.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from rosbags.typesys.store import Typestore

from shapemask_ros.ros_bridge.typestore import normalize_type_name


@runtime_checkable
class MessageFactory(Protocol):
    """What the message builders need from a message implementation."""

    def make(self, type_name: str, **fields: Any) -> Any:
        """Instantiate message `type_name` ('pkg/msg/Type' or 'pkg/Type') with all `fields` given."""
        ...

    def u8(self, array: np.ndarray) -> Any:
        """Convert a uint8 buffer (any shape, flattened in C order) to what a uint8[] field wants."""
        ...


class RosbagsFactory:
    """`MessageFactory` backed by a rosbags `Typestore` (bag I/O, tests, bag-eval)."""

    def __init__(self, typestore: Typestore) -> None:
        self.typestore = typestore
        # type name as given -> class: a frame builds ~200 messages; normalising each name costs ~1 us
        self._classes: dict[str, Any] = {}

    def make(self, type_name: str, **fields: Any) -> Any:
        """Instantiate a typestore class; a missing or unknown field raises TypeError (dataclass)."""
        cls = self._classes.get(type_name)
        if cls is None:
            name = normalize_type_name(type_name)
            try:
                cls = self.typestore.types[name]
            except KeyError:
                raise KeyError(f"message type {name!r} is not in the typestore") from None
            self._classes[type_name] = cls
        return cls(**fields)

    def u8(self, array: np.ndarray) -> np.ndarray:
        """rosbags stores uint8[] as a flat, contiguous uint8 NumPy array."""
        return np.ascontiguousarray(array, dtype=np.uint8).reshape(-1)


def stamp_of(msg: Any) -> tuple[int, int]:
    """(sec, nanosec) of `msg.header.stamp`; ValueError when the header is missing or malformed."""
    try:
        stamp = msg.header.stamp
        sec, nsec = int(stamp.sec), int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"message has no valid header.stamp: {e}") from e
    if not 0 <= nsec < 1_000_000_000:
        raise ValueError(f"header.stamp.nanosec out of range: {nsec}")
    return sec, nsec


def stamp_to_ns(stamp: tuple[int, int]) -> int:
    """(sec, nanosec) -> integer nanoseconds (exact; no float rounding when comparing stamps)."""
    return int(stamp[0]) * 1_000_000_000 + int(stamp[1])
