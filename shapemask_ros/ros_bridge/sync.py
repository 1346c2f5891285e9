"""Pairing images with the detections computed from them, newest first.

Detectors publish their Detection2DArray with the image's header, some time (the detector latency)
after the image. So images wait in a small cache keyed by header stamp, and a detection array is paired
with the image of exactly its stamp or, failing that, the nearest image within `slop_s`. Only the
newest pair is ever handed out: a node that works through a backlog publishes masks of the past.

Drop counters (`Synchronizer.counters`):
- superseded:  a matched detection array skipped because a newer pair was ready;
- no_match:    a detection array whose image can no longer arrive (the image stream is already past
               it by more than the slop, e.g. the image was lost or evicted);
- evicted:     an image (or pending detection array) pushed out of its full cache;
- image_unused: an image older than a processed pair that never had detections (normal when the
               detector runs slower than the camera);
- zero_stamp:  a warning, not a drop: stamp (0, 0) is legal (some drivers never stamp) and still
               matches exactly, but only the newest such image can be matched.

`StampCache` applies the same matching rule (exact stamp, then the nearest within the slop, ties to the
newer) to a side stream that is paired with frames after they are chosen: the depth image of a frame.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, NamedTuple

from shapemask_ros.ros_bridge.factory import stamp_to_ns

Stamp = tuple[int, int]


class Pair(NamedTuple):
    """A matched image and detection array with their header stamps."""

    image: Any
    detections: Any
    image_stamp: Stamp
    detections_stamp: Stamp


class Synchronizer:
    """Exact-then-approximate stamp matching that hands out only the newest pair (see module docstring)."""

    def __init__(self, slop_s: float, image_cache_size: int) -> None:
        self._images: dict[int, tuple[Stamp, Any]] = {}
        self._detections: dict[int, tuple[Stamp, Any]] = {}
        self.counters: Counter = Counter()
        self.slop_ns = 0
        self.cache_size = 1
        self.configure(slop_s, image_cache_size)

    def configure(self, slop_s: float, image_cache_size: int) -> None:
        """Change the slop and cache size (a smaller cache evicts the oldest entries now)."""
        if not (math.isfinite(slop_s) and slop_s >= 0):
            raise ValueError(f"slop_s must be >= 0, got {slop_s}")
        if int(image_cache_size) < 1:
            raise ValueError(f"image_cache_size must be >= 1, got {image_cache_size}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.cache_size = int(image_cache_size)
        self._evict(self._images)
        self._evict(self._detections)

    def clear(self) -> None:
        """Forget everything cached (e.g. after the clock jumped back); counters are kept."""
        self._images.clear()
        self._detections.clear()

    def __len__(self) -> int:
        return len(self._images)

    @property
    def pending_detections(self) -> int:
        return len(self._detections)

    def _evict(self, cache: dict[int, tuple[Stamp, Any]]) -> None:
        while len(cache) > self.cache_size:
            del cache[min(cache)]
            self.counters["evicted"] += 1

    def add_image(self, stamp: Stamp, item: Any) -> None:
        """Cache an image under its header stamp; a second image with the same stamp replaces the first."""
        key = stamp_to_ns(stamp)
        if key == 0:
            self.counters["zero_stamp"] += 1
        self._images[key] = (stamp, item)
        self._evict(self._images)

    def add_detections(self, stamp: Stamp, item: Any) -> None:
        """Queue a detection array under its header stamp (a newer array for the same stamp replaces it)."""
        key = stamp_to_ns(stamp)
        if key == 0:
            self.counters["zero_stamp"] += 1
        if key in self._detections:
            self.counters["superseded"] += 1
        self._detections[key] = (stamp, item)
        self._evict(self._detections)

    def _match(self, key: int) -> int | None:
        if key in self._images:
            return key
        best = min(self._images, key=lambda k: (abs(k - key), -k), default=None)
        if best is not None and abs(best - key) <= self.slop_ns:
            return best
        return None

    def pop_newest_pair(self) -> Pair | None:
        """The newest ready (image, detections) pair, dropping everything older (counted); None if none."""
        if not self._detections:
            return None
        matches = {d: self._match(d) for d in self._detections}
        newest_image = max(self._images, default=None)
        ready = [d for d, m in matches.items() if m is not None]
        if not ready:
            self._drop_unmatchable(matches, newest_image)
            return None
        d = max(ready)
        i = matches[d]
        assert i is not None
        det_stamp, det_item = self._detections.pop(d)
        img_stamp, img_item = self._images.pop(i)
        for k in [k for k in self._detections if k < d]:
            del self._detections[k]
            self.counters["superseded" if matches[k] is not None else "no_match"] += 1
        for k in [k for k in self._images if k < i]:
            del self._images[k]
            self.counters["image_unused"] += 1
        self._drop_unmatchable(matches, max(self._images, default=i))
        return Pair(img_item, det_item, img_stamp, det_stamp)

    def _drop_unmatchable(self, matches: dict[int, int | None], newest_image: int | None) -> None:
        """Detections the image stream has passed by more than the slop can never be paired."""
        if newest_image is None:
            return
        for k in [k for k in self._detections if matches.get(k) is None and newest_image - k > self.slop_ns]:
            del self._detections[k]
            self.counters["no_match"] += 1


class StampCache:
    """Messages of one stream keyed by header stamp, matched to a frame stamp like `Synchronizer` does.

    Holds at most `size` entries (the oldest pushed out is counted under `evicted_key`); `take` removes
    the match and everything older, counting those under `unused_key` (normal when the stream is faster
    than processing).
    """

    def __init__(self, slop_s: float, size: int, counters: Counter, evicted_key: str, unused_key: str) -> None:
        self._items: dict[int, tuple[Stamp, Any]] = {}
        self.counters = counters
        self.evicted_key, self.unused_key = evicted_key, unused_key
        self.slop_ns = 0
        self.size = 1
        self.configure(slop_s, size)

    def configure(self, slop_s: float, size: int) -> None:
        """Change the slop and size (a smaller cache evicts the oldest entries now)."""
        if not (math.isfinite(slop_s) and slop_s >= 0):
            raise ValueError(f"slop_s must be >= 0, got {slop_s}")
        if int(size) < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.size = int(size)
        self._evict()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget everything cached (counters are kept)."""
        self._items.clear()

    @property
    def newest_ns(self) -> int | None:
        """Stamp (ns) of the newest cached entry, None when empty."""
        return max(self._items, default=None)

    def _evict(self) -> None:
        while len(self._items) > self.size:
            del self._items[min(self._items)]
            self.counters[self.evicted_key] += 1

    def add(self, stamp: Stamp, item: Any) -> None:
        """Cache `item` under its stamp (a second item with the same stamp replaces the first)."""
        self._items[stamp_to_ns(stamp)] = (stamp, item)
        self._evict()

    def find(self, stamp: Stamp) -> int | None:
        """Key of the entry matching `stamp`: exact, else the nearest within the slop (ties: newer)."""
        key = stamp_to_ns(stamp)
        if key in self._items:
            return key
        best = min(self._items, key=lambda k: (abs(k - key), -k), default=None)
        if best is not None and abs(best - key) <= self.slop_ns:
            return best
        return None

    def passed(self, stamp: Stamp) -> bool:
        """True when the stream is already past `stamp` by more than the slop: its match cannot arrive."""
        newest = self.newest_ns
        return newest is not None and newest - stamp_to_ns(stamp) > self.slop_ns

    def take(self, stamp: Stamp) -> tuple[Stamp, Any] | None:
        """Remove and return the match of `stamp` (None if none); older entries are dropped (counted)."""
        key = self.find(stamp)
        if key is None:
            return None
        found = self._items.pop(key)
        self.discard_older(key)
        return found

    def discard_older(self, key_ns: int) -> int:
        """Drop entries stamped before `key_ns` (counted under `unused_key`); returns how many."""
        old = [k for k in self._items if k < key_ns]
        for k in old:
            del self._items[k]
        self.counters[self.unused_key] += len(old)
        return len(old)
