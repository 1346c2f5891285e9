"""Input transport decisions and loss accounting without rclpy: which reliability to subscribe with, and
how to tell "nobody publishes" from "publishers exist but nothing matches" from "messages get lost".

Measured on Fast DDS (Jazzy wheels, two processes on one 2-core host, 640x480 rgb8 at 10-30 Hz; docs/ros.md,
"QoS"): a best_effort subscription received about a third of the frames a reliable publisher sent, a reliable
one all of them. So `auto` (the default for images and depth) subscribes reliable when every publisher offers
reliable and best_effort otherwise -- what `ros2 bag record` does -- and follows the publishers as they come
and go (`shapemask_ros.node` re-subscribes when the choice changes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

RELIABLE, BEST_EFFORT, AUTO = "reliable", "best_effort", "auto"


def choose_reliability(requested: str, offered: Iterable[str]) -> str:
    """The reliability to subscribe with: `requested` unless it is 'auto'; then 'reliable' when there are
    publishers and every one offers reliable, else 'best_effort' (matches any publisher)."""
    if requested != AUTO:
        return requested
    offers = [str(o).lower() for o in offered]
    return RELIABLE if offers and all(o == RELIABLE for o in offers) else BEST_EFFORT


@dataclasses.dataclass
class SequenceGaps:
    """Messages a publisher sent that never arrived, from the gaps in its publication sequence numbers.

    rmw hands each message's `publication_sequence_number` (per publisher, +1 per publish). rclpy does not
    say which publisher sent a message, so gaps are counted only while exactly one publisher is matched;
    a number that does not increase means a new or restarted publisher (counting restarts there)."""

    last: int | None = None
    lost: int = 0

    def observe(self, sequence: int | None, publishers: int) -> int:
        """Record one arrival; returns how many messages were newly found missing."""
        if sequence is None or publishers != 1:
            self.last = None
            return 0
        missing = 0
        if self.last is not None and sequence > self.last + 1:
            missing = sequence - self.last - 1
        self.last = sequence
        self.lost += missing
        return missing


def silent_input_kind(publishers: int, incompatible_qos_events: int, arrivals: int) -> str:
    """Why an input is silent: 'no_publisher', 'incompatible_qos' (rmw reported a QoS mismatch with a
    publisher), 'never_arrived' (publishers matched, nothing ever came: type or transport trouble) or
    'stopped' (messages came before and stopped although publishers are still there)."""
    if publishers == 0:
        return "no_publisher"
    if incompatible_qos_events > 0:
        return "incompatible_qos"
    return "never_arrived" if arrivals == 0 else "stopped"
