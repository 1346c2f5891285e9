"""The synthetic demo bag: determinism, consistency of its ground truth with its own depth and K, detector."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from shapemask_ros.bag.recording.reader import BagReader
from shapemask_ros.bag.scenes import demo_bag
from shapemask_ros.ros_bridge.image_codec import depth_to_array

SMALL = {"frames": 5, "width": 96, "height": 72}


def _messages(path) -> list[tuple[str, int, bytes]]:
    with BagReader(path) as r:
        return [(m.topic, m.log_time_ns, bytes(m.raw)) for m in r.messages()]


def test_same_seed_same_bag_other_seed_other_bag(tmp_path):
    a = demo_bag.make_demo_bag(tmp_path / "a", demo_bag.DemoBagConfig(**SMALL, seed=1))
    b = demo_bag.make_demo_bag(tmp_path / "b", demo_bag.DemoBagConfig(**SMALL, seed=1, storage="sqlite3"))
    c = demo_bag.make_demo_bag(tmp_path / "c", demo_bag.DemoBagConfig(**SMALL, seed=2))
    assert _messages(a.bag) == _messages(b.bag)  # storage does not change a byte of any message
    assert json.loads(a.gt.read_text())["annotations"] == json.loads(b.gt.read_text())["annotations"]
    assert _messages(a.bag) != _messages(c.bag)
    assert a.gt == tmp_path / "a.gt.json"
    with pytest.raises(FileExistsError):
        demo_bag.make_demo_bag(tmp_path / "a", demo_bag.DemoBagConfig(**SMALL))


def test_topics_stamps_and_receive_order(tmp_path):
    cfg = demo_bag.DemoBagConfig(**SMALL, seed=4)
    db = demo_bag.make_demo_bag(tmp_path / "bag", cfg)
    assert db.counts == {t: cfg.frames for t in demo_bag.TOPIC_TYPES}
    period = 1e9 / cfg.fps
    with BagReader(db.bag) as r:
        assert {t: i.msgtype for t, i in r.topics.items()} == demo_bag.TOPIC_TYPES
        seen = [(m.topic, m.log_time_ns, r.decode(m)) for m in r.messages()]
    log_times = [t for _topic, t, _m in seen]
    assert log_times == sorted(log_times)  # written in receive order
    for topic, t, m in seen:
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        k = round((stamp - cfg.start_time_s * 1e9) / period)
        assert abs(stamp - (cfg.start_time_s * 1e9 + k * period)) < 2  # every topic carries the frame stamp
        assert m.header.frame_id == demo_bag.FRAME_ID
        if topic == demo_bag.DETECTIONS_TOPIC:  # simulated detector latency
            assert cfg.latency_s[0] * 1e9 <= t - stamp <= cfg.latency_s[1] * 1e9
        else:
            assert 0 < t - stamp < 10_000_000


def test_ground_truth_agrees_with_depth_and_camera_info(tmp_path):
    cfg = demo_bag.DemoBagConfig(**SMALL, seed=5)
    db = demo_bag.make_demo_bag(tmp_path / "bag", cfg)
    gt = json.loads(db.gt.read_text())
    k = np.asarray(gt["camera"]["k"]).reshape(3, 3)
    by_stamp = {im["stamp_ns"]: im["id"] for im in gt["images"]}
    anns = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    with BagReader(db.bag) as r:
        for m in r.messages([demo_bag.DEPTH_TOPIC, demo_bag.CAMERA_INFO_TOPIC]):
            msg = r.decode(m)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            if m.topic == demo_bag.CAMERA_INFO_TOPIC:
                np.testing.assert_allclose(np.asarray(msg.k).reshape(3, 3), k)
                continue
            depth = depth_to_array(msg)
            for a in anns[by_stamp[stamp]]:
                mask = mask_utils.decode(a["segmentation"]).astype(bool)
                z = depth[mask]
                z = z[np.isfinite(z)]
                # the visible pixels of the object read its plane's depth (mm quantisation + noise)
                assert abs(float(np.median(z)) - a["depth_m"]) < 0.004
                ys, xs = np.nonzero(mask)
                x = (xs - k[0, 2]) / k[0, 0] * a["depth_m"]
                y = (ys - k[1, 2]) / k[1, 1] * a["depth_m"]
                np.testing.assert_allclose(a["centroid_m"], [x.mean(), y.mean(), a["depth_m"]], atol=1e-9)
                assert a["bbox"] == [float(v) for v in mask_utils.toBbox(a["segmentation"])]


def test_simulated_detector_misses_and_adds_boxes(tmp_path):
    cfg = demo_bag.DemoBagConfig(**{**SMALL, "frames": 30}, seed=0, miss_prob=0.2, spurious_per_frame=0.5)
    db = demo_bag.make_demo_bag(tmp_path / "bag", cfg)
    gt = json.loads(db.gt.read_text())
    assert db.detector["true"] + db.detector["missed"] == len(gt["annotations"])
    assert db.detector["missed"] > 0 and db.detector["spurious"] > 0
    names = {c["name"] for c in gt["categories"]}
    objects = {a["object_id"] for a in gt["annotations"]}
    n_true = n_fp = 0
    with BagReader(db.bag) as r:
        for m in r.messages([demo_bag.DETECTIONS_TOPIC]):
            for d in r.decode(m).detections:
                assert d.results[0].hypothesis.class_id in names
                n_true += d.id in objects
                n_fp += d.id.startswith("fp")
    assert (n_true, n_fp) == (db.detector["true"], db.detector["spurious"])


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="frames"):
        demo_bag.make_demo_bag(tmp_path / "x", demo_bag.DemoBagConfig(frames=0))
    with pytest.raises(ValueError, match="storage"):
        demo_bag.make_demo_bag(tmp_path / "x", demo_bag.DemoBagConfig(storage="rosbag1"))
    assert not (tmp_path / "x").exists()
