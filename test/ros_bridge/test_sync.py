"""Stamp synchroniser (ros_bridge.sync): exact vs slop, stale/no_match, superseded, eviction, zero stamps."""

from __future__ import annotations

import pytest

from shapemask_ros.config.node_config import cache_size_for
from shapemask_ros.ros_bridge.sync import Synchronizer

MS = 1_000_000  # nanoseconds


def t(ms: int) -> tuple[int, int]:
    """Stamp at 100 s + ms milliseconds."""
    return 100 + ms // 1000, (ms % 1000) * MS


def test_cache_size_formula():
    assert cache_size_for(30.0, 0.5) == 17  # ceil(15) + 2
    assert cache_size_for(30.0, 0.51) == 18
    assert cache_size_for(10.0, 0.0) == 2
    with pytest.raises(ValueError):
        cache_size_for(0.0, 0.5)
    with pytest.raises(ValueError):
        cache_size_for(30.0, -1.0)


def test_exact_match_preferred_over_nearer_slop_candidate():
    s = Synchronizer(slop_s=0.05, image_cache_size=10)
    for ms in (0, 33, 66):
        s.add_image(t(ms), f"img{ms}")
    s.add_detections(t(33), "det33")
    pair = s.pop_newest_pair()
    assert (pair.image, pair.detections, pair.image_stamp) == ("img33", "det33", t(33))
    assert s.counters["image_unused"] == 1  # img0 can no longer be used
    assert len(s) == 1  # img66 still waits for its detections


def test_slop_match_nearest_image_within_window():
    s = Synchronizer(slop_s=0.01, image_cache_size=10)
    s.add_image(t(0), "img0")
    s.add_image(t(33), "img33")
    s.add_detections(t(38), "det38")  # 5 ms from img33, 38 ms from img0
    assert s.pop_newest_pair().image == "img33"
    s.add_image(t(66), "img66")
    s.add_detections(t(80), "det80")  # 14 ms away: outside the slop, but the image could still come
    assert s.pop_newest_pair() is None and s.pending_detections == 1
    s.add_image(t(100), "img100")  # the stream passed 80 ms by more than the slop: it can never match
    assert s.pop_newest_pair() is None
    assert s.counters["no_match"] == 1 and s.pending_detections == 0


def test_detection_older_than_every_cached_image_is_no_match():
    s = Synchronizer(slop_s=0.01, image_cache_size=2)
    for ms in (0, 33, 66, 100):
        s.add_image(t(ms), ms)
    assert s.counters["evicted"] == 2
    s.add_detections(t(0), "late")  # its image was evicted
    assert s.pop_newest_pair() is None
    assert s.counters["no_match"] == 1


def test_only_newest_pair_is_returned_and_older_are_superseded():
    s = Synchronizer(slop_s=0.0, image_cache_size=10)
    for ms in (0, 33, 66, 100):
        s.add_image(t(ms), ms)
    s.add_detections(t(0), "d0")
    s.add_detections(t(33), "d33")
    s.add_detections(t(50), "d50")  # no image at 50 ms and slop 0: never matchable
    s.add_detections(t(66), "d66")
    pair = s.pop_newest_pair()
    assert pair.detections == "d66" and pair.image == 66
    assert s.counters["superseded"] == 2 and s.counters["no_match"] == 1
    assert s.pop_newest_pair() is None  # nothing left for img100 yet
    s.add_detections(t(100), "d100")
    assert s.pop_newest_pair().image == 100


def test_zero_stamps_match_exactly_and_are_counted():
    s = Synchronizer(slop_s=0.05, image_cache_size=5)
    s.add_image((0, 0), "a")
    s.add_image((0, 0), "b")  # same key: replaces, only the newest zero-stamped image is kept
    s.add_detections((0, 0), "d")
    pair = s.pop_newest_pair()
    assert (pair.image, pair.detections) == ("b", "d")
    assert s.counters["zero_stamp"] == 3


def test_shrinking_cache_evicts_oldest():
    s = Synchronizer(slop_s=0.0, image_cache_size=5)
    for ms in range(0, 500, 100):
        s.add_image(t(ms), ms)
    s.configure(0.0, 2)
    assert len(s) == 2 and s.counters["evicted"] == 3
    s.add_detections(t(300), "d")
    assert s.pop_newest_pair().image == 300
    with pytest.raises(ValueError):
        s.configure(-0.1, 2)
