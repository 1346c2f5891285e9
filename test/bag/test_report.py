"""Report pieces: latency statistics, strict JSON, ground truth validation, mask matching, 3D error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from shapemask_ros.bag.evaluation.report import (
    FramePrediction,
    GroundTruth,
    encode_mask,
    geometry_summary,
    latency_stats,
    match_masks,
    render_markdown,
)
from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.utils.formatting import json_safe


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def _square(y: int, x: int, s: int, shape=(40, 60)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y : y + s, x : x + s] = 1
    return m


def test_latency_stats_match_numpy_and_handle_empty():
    rng = np.random.default_rng(0)
    v = rng.uniform(0.01, 0.2, 101)
    s = latency_stats(v)
    assert s["n"] == 101
    assert s["p50_ms"] == pytest.approx(np.median(v) * 1e3)
    assert s["p99_ms"] == pytest.approx(np.percentile(v, 99) * 1e3)
    assert s["max_ms"] == pytest.approx(v.max() * 1e3)
    assert latency_stats([])["p50_ms"] is None


def test_json_safe_gives_strict_json():
    data = {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(3), math.inf], 4: np.arange(2)}
    text = json.dumps(json_safe(data), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": 1.5, "c": [3, None], "4": [0, 1]}


def test_encode_mask_places_the_crop_and_clips_it():
    crop = np.ones((5, 4), np.uint8)
    rle = encode_mask(crop, (57, 37, 4, 5), (40, 60))  # runs 1 px past the right and 2 px past the bottom
    full = mask_utils.decode(rle)
    assert full.shape == (40, 60) and full.sum() == 3 * 3
    assert full[37:40, 57:60].all()


def test_ground_truth_json_validation(tmp_path):
    good = {
        "images": [{"id": 1, "width": 60, "height": 40, "stamp_ns": 5}],
        "annotations": [],
        "categories": [{"id": 7, "name": "cup"}],
    }
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(good))
    gt = GroundTruth.from_json(str(p))
    assert gt.image_by_stamp == {5: 1}
    assert gt.category_id("cup") == 7 and gt.category_id("7") == 7 and gt.category_id("plate") is None
    for bad, msg in (
        ({**good, "images": [{"id": 1, "width": 60, "height": 40}]}, "stamp_ns"),
        ({**good, "images": [{"id": 1, "stamp_ns": 5}, {"id": 2, "stamp_ns": 5}]}, "two images"),
        ({"images": []}, "annotations"),
    ):
        p.write_text(json.dumps(bad))
        with pytest.raises(BagError, match=msg):
            GroundTruth.from_json(str(p))
    p.write_text("{not json")
    with pytest.raises(BagError, match="not readable JSON"):
        GroundTruth.from_json(str(p))
    with pytest.raises(BagError, match="not found"):
        GroundTruth.from_json(str(tmp_path / "missing.json"))


def test_match_masks_is_greedy_one_to_one_above_threshold():
    gt = [_rle(_square(0, 0, 10)), _rle(_square(20, 30, 10))]
    dt = [
        _rle(_square(21, 30, 10)),  # IoU 0.82 with gt 1
        _rle(_square(0, 0, 10)),  # exact gt 0
        _rle(_square(1, 0, 10)),  # also overlaps gt 0 (0.82) but gt 0 is taken by the exact one
        _rle(_square(0, 40, 5)),  # overlaps nothing
    ]
    pairs = match_masks(dt, gt)
    assert sorted((d, g) for d, g, _ in pairs) == [(0, 1), (1, 0)]
    assert [p[2] for p in pairs] == sorted((p[2] for p in pairs), reverse=True)
    assert match_masks(dt, []) == [] and match_masks([], gt) == []


def test_geometry_summary_centroid_error_against_truth():
    masks = [_square(0, 0, 10), _square(20, 30, 10)]
    truth = [[0.1, 0.2, 1.0], [-0.3, 0.0, 2.0]]
    gt = GroundTruth(
        {
            "images": [{"id": 1, "width": 60, "height": 40, "stamp_ns": 9}],
            "annotations": [
                {"id": k + 1, "image_id": 1, "category_id": 1, "segmentation": _rle(m), "centroid_m": c}
                for k, (m, c) in enumerate(zip(masks, truth, strict=True))
            ],
            "categories": [{"id": 1, "name": "x"}],
        },
        "test",
        {9: 1},
    )
    offset = np.array([0.003, 0.0, -0.004])  # 5 mm, 4 mm nearer
    pred = FramePrediction(
        stamp_ns=9,
        image_size=(40, 60),
        num_objects=2,
        rles=[_rle(masks[1]), _rle(masks[0])],  # reversed order: matching is by mask, not by index
        boxes_xywh=np.zeros((2, 4)),
        scores=np.ones(2),
        class_names=["x", "x"],
        centroids=np.array([truth[1], np.array(truth[0]) + offset]),
        status=["ok", "ok"],
    )
    s = geometry_summary([pred], gt)
    ce = s["centroid_error"]
    assert ce["evaluated"] == 2 and ce["gt_objects"] == 2
    assert ce["error_mm"]["max"] == pytest.approx(5.0)
    assert ce["error_mm"]["median"] == pytest.approx(2.5)
    assert ce["z_bias_mm"] == pytest.approx(-2.0)
    assert s["status"] == {"ok": 2}
    pred.status = ["ok", "no_depth"]  # objects without usable geometry are counted, not scored
    ce = geometry_summary([pred], gt)["centroid_error"]
    assert ce["evaluated"] == 1 and ce["matched_without_geometry"] == 1


def test_markdown_renders_a_minimal_report():
    r = {
        "input": {"bag": "b", "image_topic": "/i", "detections_topic": None},
        "model": {"path": "m", "backend": "fake"},
        "output": {"bag": "bag", "overlays": [], "video": None},
        "frames": {"images_read": 3, "processed": 2, "objects": 4},
        "timing": {"per_frame": {"total": latency_stats([0.1, 0.2])}, "overhead_fraction": 0.25},
        "drops": {"processor": {"bad_size": 1}},
    }
    md = render_markdown(r)
    assert "self-detection" in md and "processor.bad_size | 1" in md and "**25.0 %**" in md
