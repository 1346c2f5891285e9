"""Offline pairing of a bag's images with their detections, depth images and camera infos.

Pairing offline (no frame is dropped for being old): images and detection arrays go through the node's
`Synchronizer` (exact stamp first, then the nearest image within `sync_slop_s`), and the ready pair is
taken after *every* message, so the node's "newest pair only" policy never has an older ready pair to
discard. What still cannot be paired is counted: an image whose detections never come (`image_unused`),
a detection array whose image is missing (`no_match`), an image pushed out of the cache because its
detections came more than the cache (`64` images by default offline) later (`evicted`). Without a
detections topic every image is processed with the model's own boxes. A paired frame then waits for its
depth image (exact stamp, then nearest within the slop) for at most `depth_wait_s` of bag time (then
it goes out without 3D, counted `no_depth_match`); camera info is matched the same way, else the latest
one received is used (counted `camera_info_unsynced`). The 3D stage itself is the processor's.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ros_bridge.sync import StampCache, Synchronizer

OFFLINE_IMAGE_CACHE = 64  # images waiting for detections; offline memory is cheap, lost frames are not
STAMP_CACHE = 64  # depth images / camera infos kept for matching


@dataclass
class PairInput:
    """One decoded message and what it cost to get it."""

    msg: Any
    stamp_ns: int
    log_time_ns: int
    io_s: float
    io_cpu_s: float
    type_name: str = ""


@dataclass
class PairedFrame:
    """An image with what was paired to it; `detections` None = self-detection."""

    image: PairInput
    detections: PairInput | None
    ready_log_ns: int  # bag time at which the pair became complete
    depth: PairInput | None = None
    info: PairInput | None = None


def _stamp(ns: int) -> tuple[int, int]:
    return divmod(int(ns), 1_000_000_000)


class Pairer:
    """Offline pairing (see the module docstring): frames come out in the order they become complete."""

    def __init__(self, cfg: NodeConfig, self_detect: bool, need_depth: bool, drops: collections.Counter) -> None:
        self.self_detect = self_detect
        self.need_depth = need_depth
        self.drops = drops
        self.sync = Synchronizer(cfg.sync_slop_s, OFFLINE_IMAGE_CACHE)
        self.sync.counters = drops
        self.depth = StampCache(cfg.sync_slop_s, STAMP_CACHE, drops, "depth_evicted", "depth_unused")
        self.info = StampCache(cfg.sync_slop_s, STAMP_CACHE, drops, "camera_info_evicted", "camera_info_unused")
        self.latest_info: PairInput | None = None
        self.wait_ns = int(round(max(cfg.depth_wait_s, cfg.sync_slop_s) * 1e9))  # bag time
        self.waiting: collections.deque[PairedFrame] = collections.deque()

    def add_image(self, item: PairInput) -> None:
        if self.self_detect:
            self.waiting.append(PairedFrame(item, None, item.log_time_ns))
            return
        self.sync.add_image(_stamp(item.stamp_ns), item)
        self._pop(item.log_time_ns)

    def add_detections(self, item: PairInput) -> None:
        self.sync.add_detections(_stamp(item.stamp_ns), item)
        self._pop(item.log_time_ns)

    def add_depth(self, item: PairInput) -> None:
        self.depth.add(_stamp(item.stamp_ns), item)

    def add_camera_info(self, item: PairInput) -> None:
        self.info.add(_stamp(item.stamp_ns), item)
        if self.latest_info is None or item.stamp_ns >= self.latest_info.stamp_ns:
            self.latest_info = item

    def _pop(self, now_ns: int) -> None:
        while (pair := self.sync.pop_newest_pair()) is not None:
            self.waiting.append(PairedFrame(pair.image, pair.detections, now_ns))

    def ready(self, now_ns: int, final: bool = False) -> list[PairedFrame]:
        """Frames to process now: complete ones, and those whose depth can no longer come (the depth
        stream is past them, it waited depth_wait_s of bag time, or the bag ended)."""
        out: list[PairedFrame] = []
        keep: collections.deque[PairedFrame] = collections.deque()
        for fr in self.waiting:
            if self.need_depth:
                stamp = _stamp(fr.image.stamp_ns)
                found = self.depth.take(stamp)
                fr.depth = found[1] if found else None
                waited = now_ns - fr.ready_log_ns > self.wait_ns
                if fr.depth is None and not (final or waited or self.depth.passed(stamp)):
                    keep.append(fr)
                    continue
                info = self.info.take(stamp)
                fr.info = info[1] if info else self.latest_info
                if info is None and fr.info is not None:
                    self.drops["camera_info_unsynced"] += 1  # static intrinsics: the newest one is used
            out.append(fr)
        self.waiting = keep
        return out

    def finish(self) -> None:
        """Count what is left unpaired at the end of the bag."""
        self.drops["image_unused"] += len(self.sync)
        self.drops["no_match"] += self.sync.pending_detections
        self.sync.clear()
