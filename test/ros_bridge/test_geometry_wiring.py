"""NodeConfig <-> GeometryConfig (one source of defaults) and the depth stamp cache."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from shapemask_ros.config.node_config import (
    GEOMETRY_PARAMS,
    GeometryConfig,
    NodeConfig,
    geometry_config,
    validate_node_config,
)
from shapemask_ros.ros_bridge.sync import StampCache


def test_every_geometry_knob_is_a_node_parameter_with_the_same_default():
    geo_fields = {f.name for f in dataclasses.fields(GeometryConfig)}
    assert set(GEOMETRY_PARAMS.values()) == geo_fields, "a GeometryConfig field has no NodeConfig parameter"
    node, geo = NodeConfig(), GeometryConfig()
    for param, name in GEOMETRY_PARAMS.items():
        assert getattr(node, param) == getattr(geo, name), param
    assert geometry_config(node) == geo


def test_geometry_config_carries_the_parameters():
    cfg = NodeConfig(geometry_min_points=5, geometry_mad_k=2.5, depth_registration="scale", geometry_max_depth_m=3.0)
    geo = geometry_config(cfg)
    assert (geo.min_points, geo.mad_k, geo.registration, geo.max_depth_m) == (5, 2.5, "scale", 3.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"geometry_min_points": 0},
        {"geometry_min_band_m": -0.01},
        {"geometry_min_depth_m": 2.0, "geometry_max_depth_m": 1.0},
        {"depth_registration": "tf"},
        {"depth_wait_s": -1.0},
        {"depth_qos_depth": 0},
        {"camera_info_qos_reliability": "sometimes"},
    ],
)
def test_bad_3d_parameters_are_rejected_by_name(changes):
    cfg, rejected = validate_node_config(NodeConfig(), changes)
    assert set(rejected) == set(changes) and cfg == NodeConfig()


def test_stamp_cache_matches_exact_then_nearest_within_slop_and_counts():
    counters: Counter = Counter()
    cache = StampCache(0.02, 3, counters, "evicted", "unused")
    for nsec in (0, 10_000_000, 40_000_000):
        cache.add((5, nsec), f"d{nsec // 1_000_000}")
    assert cache.find((5, 10_000_000)) == 5_010_000_000  # exact
    assert cache.find((5, 24_000_000)) == 5_010_000_000  # nearest within the 20 ms slop
    assert cache.find((5, 25_000_000)) == 5_040_000_000  # a tie goes to the newer one
    assert cache.find((5, 100_000_000)) is None
    assert cache.passed((4, 900_000_000)) and not cache.passed((5, 30_000_000))
    stamp, item = cache.take((5, 38_000_000))
    assert item == "d40" and stamp == (5, 40_000_000)
    assert counters["unused"] == 2 and len(cache) == 0, "older entries cannot match newer frames"
    for sec in range(1, 6):
        cache.add((sec, 0), sec)
    assert counters["evicted"] == 2 and cache.newest_ns == 5_000_000_000
    with pytest.raises(ValueError, match="slop"):
        cache.configure(-1.0, 3)
