"""What the node's subscription callbacks hand to its processing thread (no rclpy here).

Callbacks only enqueue, so a slow model never blocks the executor; queues are bounded and keep the newest
messages, and a message pushed out is reported so the node can count it (`drop.inbox_overflow`).
"""

from __future__ import annotations

import collections
import threading
import typing
from typing import Any


class Drained(typing.NamedTuple):
    """Everything the callbacks queued since the last drain, oldest first."""

    images: list[tuple[Any, str]]
    detections: list[Any]
    depth: list[Any]
    camera_info: list[Any]


class Inbox:
    """What subscription callbacks hand to the processing thread: bounded queues, newest kept."""

    def __init__(self, image_capacity: int, detection_capacity: int = 16) -> None:
        self._lock = threading.Lock()
        self.images: collections.deque[tuple[Any, str]] = collections.deque(maxlen=max(1, image_capacity))
        self.detections: collections.deque[Any] = collections.deque(maxlen=max(1, detection_capacity))
        # depth waits for its frame like images do; of CameraInfo only the newest matters
        self.depth: collections.deque[Any] = collections.deque(maxlen=max(1, image_capacity))
        self.camera_info: collections.deque[Any] = collections.deque(maxlen=1)

    def put(self, queue: collections.deque, item: Any) -> bool:
        """Append; returns True when the oldest entry was pushed out."""
        with self._lock:
            full = len(queue) == queue.maxlen
            queue.append(item)
            return full

    def drain(self) -> Drained:
        """Take everything queued (one lock, so a frame's messages are not split)."""
        with self._lock:
            out = Drained(list(self.images), list(self.detections), list(self.depth), list(self.camera_info))
            for queue in (self.images, self.detections, self.depth, self.camera_info):
                queue.clear()
            return out
