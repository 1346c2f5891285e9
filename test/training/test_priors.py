"""Shape priors: tight-box resampling, k-means recovers planted shapes, class-specific cases, I/O, CLI."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from shapemask_ros.datasets.synthetic import encode_mask, generate_dataset
from shapemask_training.priors import (
    add_priors_args,
    compute_priors,
    load_priors,
    mask_to_prior_frame,
    plot_priors,
    run_priors,
    save_priors,
)
from support import REPO as REPO_ROOT
from support.configs import require_shared_data

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)

# Planted templates as polygons in the unit box [0, 1]^2 (each touches all four box edges).
_T = np.linspace(0, 2 * np.pi, 64, endpoint=False)
TEMPLATES = {"disc": np.stack([0.5 + 0.5 * np.cos(_T), 0.5 + 0.5 * np.sin(_T)], 1)}
TEMPLATES["triangle"] = np.array([[0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
TEMPLATES["ell"] = np.array([[0, 0], [0.4, 0], [0.4, 0.6], [1, 0.6], [1, 1], [0, 1]], np.float64)


def _draw(poly: np.ndarray, box: tuple[float, float, float, float], h: int, w: int) -> np.ndarray:
    x, y, bw, bh = box
    pts = np.round((poly * [bw, bh] + [x, y] - 0.5) * 16).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [pts], 1, shift=4)
    return mask


def _template_32(name: str) -> np.ndarray:
    big = _draw(TEMPLATES[name], (0, 0, 320, 320), 320, 320).astype(np.float32)
    return cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA) >= 0.5


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / float((a | b).sum())


def _write_coco(path: Path, items: list[tuple[int, np.ndarray]], categories=(1, 2, 3)) -> str:
    """One image per (category_id, mask)."""
    images, anns = [], []
    for i, (cat, mask) in enumerate(items, start=1):
        h, w = mask.shape
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        rle = encode_mask(mask)
        ys, xs = np.nonzero(mask)
        x0, y0 = float(xs.min()), float(ys.min())
        bbox = [x0, y0, float(xs.max() + 1) - x0, float(ys.max() + 1) - y0]
        anns.append(
            {
                "id": i,
                "image_id": i,
                "category_id": cat,
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": bbox,
                "iscrowd": 0,
            }
        )
    cats = [{"id": c, "name": f"c{c}"} for c in categories]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def _planted(rng: np.random.Generator, name: str, n: int) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        bw, bh = rng.uniform(20, 70, 2)
        x, y = rng.uniform(2, 96 - bw), rng.uniform(2, 96 - bh)
        poly = TEMPLATES[name] + rng.normal(0, 0.01, TEMPLATES[name].shape)
        out.append(_draw(poly, (x, y, bw, bh), 100, 100))
    return out


def test_mask_to_prior_frame_uses_the_tight_box_frame():
    mask = np.zeros((80, 90), np.uint8)
    mask[10:30, 0:20] = 1  # two squares at opposite corners of a 40 x 40 tight box touching the image edge
    mask[30:50, 20:40] = 1
    p = mask_to_prior_frame(mask, 32)
    assert p.shape == (32, 32) and p.dtype == np.float32
    # Bilinear bin-centre sampling softens only the bins within half a pixel of an edge.
    assert np.all(p[1:15, 1:15] == 1) and np.all(p[17:31, 17:31] == 1)
    assert np.all(p[1:15, 17:31] == 0) and np.all(p[17:31, 1:15] == 0)
    full = np.zeros((50, 50), np.uint8)
    full[7:19, 3:40] = 1  # a filled box fills its own frame, also when smaller than 32 px
    q = mask_to_prior_frame(full, 32)
    assert q.min() >= 0.5 and np.all(q[2:-2, 2:-2] == 1)
    with pytest.raises(ValueError, match="empty"):
        mask_to_prior_frame(np.zeros((8, 8), np.uint8))


def test_kmeans_recovers_planted_shapes(tmp_path):
    rng = np.random.default_rng(0)
    items = [(1, m) for name in TEMPLATES for m in _planted(rng, name, 25)]
    path = _write_coco(tmp_path / "a.json", items)
    priors, info = compute_priors(path, k=3, progress=False)
    assert priors.shape == (1, 3, 32, 32) and priors.dtype == np.float32
    assert priors.min() >= 0 and priors.max() <= 1
    assert info["num_masks"] == 75 and info["k_effective"] == [3] and info["skipped"] == {}
    for name in TEMPLATES:
        best = max(_iou(p >= 0.5, _template_32(name)) for p in priors[0])
        assert best > 0.9, (name, best)


def test_class_specific_with_few_and_no_masks(tmp_path, caplog):
    rng = np.random.default_rng(1)
    many = [(1, m) for name in TEMPLATES for m in _planted(rng, name, 4)]
    few = [(2, _planted(rng, "disc", 1)[0]), (2, _planted(rng, "ell", 1)[0])]
    path = _write_coco(tmp_path / "b.json", many + few, categories=(1, 2, 7))
    priors, info = compute_priors(path, k=5, class_specific=True, progress=False)
    assert priors.shape == (3, 5, 32, 32)
    assert info["category_ids"] == [1, 2, 7]
    assert info["counts"] == [12, 2, 0] and info["k_effective"] == [5, 2, 0]
    distinct = np.unique(priors[1].reshape(5, -1), axis=0)
    assert len(distinct) == 2  # fewer masks than K -> that many distinct priors, rows repeated
    assert {_iou(d.reshape(32, 32) >= 0.5, _template_32("disc")) > 0.9 for d in distinct} == {True, False}
    np.testing.assert_array_equal(priors[2], 1.0)  # no masks -> uniform box prior, reported
    assert info["empty_category_ids"] == [7]

    agn, info = compute_priors(path, k=4, category_ids=[2], progress=False)
    assert agn.shape == (1, 4, 32, 32) and info["num_masks"] == 2 and info["k_effective"] == [2]
    with pytest.raises(ValueError, match="not in"):
        compute_priors(path, k=4, category_ids=[99], progress=False)


def test_save_load_round_trip_and_rejections(tmp_path):
    priors = np.random.default_rng(2).uniform(0, 1, (2, 4, 32, 32)).astype(np.float32)
    out = str(tmp_path / "p.npy")
    save_priors(out, priors, {"k": 4, "category_ids": [1, 2], "counts": [9, 3], "seed": 0})
    np.testing.assert_array_equal(load_priors(out, expected_shape=(2, None, 32, 32)), priors)
    side = json.loads(Path(out + ".json").read_text())
    assert side["shape"] == [2, 4, 32, 32] and side["counts"] == [9, 3] and side["category_ids"] == [1, 2]
    with pytest.raises(ValueError, match="does not match expected"):
        load_priors(out, expected_shape=(1, 4, 32, 32))

    def bad(name: str, arr: np.ndarray, match: str, pickle: bool = False) -> None:
        p = tmp_path / name
        np.save(p, arr, allow_pickle=pickle)
        with pytest.raises(ValueError, match=match):
            load_priors(str(p))

    nan = priors.copy()
    nan[0, 1, 3, 3] = np.nan
    bad("nan.npy", nan, "NaN")
    bad("range.npy", priors * 2, r"\[0, 1\]")
    bad("shape.npy", priors[0], r"\[C, K, n, n\]")
    bad("int.npy", (priors > 0.5).astype(np.int32), "float")
    bad("obj.npy", np.array([priors, None], dtype=object), "pickle", pickle=True)
    with pytest.raises(ValueError, match="NaN"):
        save_priors(str(tmp_path / "x.npy"), nan, {})
    assert not (tmp_path / "x.npy").exists()


def test_plot_priors_writes_png(tmp_path):
    priors = np.random.default_rng(3).uniform(0, 1, (5, 6, 32, 32)).astype(np.float32)
    path = str(tmp_path / "grid.png")
    plot_priors(priors, path, max_classes=3, class_ids=[1, 2, 3, 4, 5])
    img = cv2.imread(path)
    assert img is not None and img.shape[1] > img.shape[0]  # 3 rows x 6 priors: wider than tall
    plot_priors(priors[:1], path)
    square = cv2.imread(path)
    assert square is not None and abs(square.shape[0] - square.shape[1]) < 0.5 * square.shape[1]


def test_cli_on_synthetic_shapes_ring_priors_have_holes(tmp_path):
    ann = generate_dataset(str(tmp_path / "ds"), 14, 96, 96, seed=4, max_instances=4, families=["ellipse", "ring"])
    parser = add_priors_args(argparse.ArgumentParser())
    out, pic = str(tmp_path / "pri.npy"), str(tmp_path / "pri.png")
    args = parser.parse_args(
        [
            "--annotations",
            ann,
            "--class-specific",
            "--k",
            "2",
            "--split",
            "1,3",
            "--out",
            out,
            "--picture",
            pic,
            "--no-progress",
        ]
    )
    assert run_priors(args) == 0
    priors = load_priors(out)
    side = json.loads(Path(out + ".json").read_text())
    ids = side["category_ids"]
    assert priors.shape == (len(ids), 2, 32, 32) and os.path.getsize(pic) > 0
    ellipse, ring = priors[ids.index(1)], priors[ids.index(3)]
    assert ellipse[0, 15:17, 15:17].min() > 0.9
    assert ring[0, 15:17, 15:17].max() < 0.3 and ring[0, 16, 2:8].max() > 0.7  # hole inside, band around
    assert side["empty_category_ids"] == [i for i in ids if i not in (1, 3)]


def _coco_mini() -> Path | None:
    env = os.environ.get("SHAPEMASK_COCO_MINI")
    root = Path(env) if env else REPO_ROOT.parent / "shared/data/coco_mini"
    ann = root / "annotations/instances_train2017.json"
    return ann if ann.is_file() else None


def test_coco_mini_agnostic_and_class_specific():
    ann = require_shared_data(_coco_mini(), "coco_mini (SHAPEMASK_COCO_MINI)")
    priors, info = compute_priors(str(ann), k=100, progress=False, n_init=1)
    assert priors.shape == (1, 100, 32, 32) and np.all(np.isfinite(priors))
    assert info["num_masks"] == 731 and info["skipped"].get("crowd") == 8
    assert len(np.unique(priors[0].reshape(100, -1), axis=0)) == 100
    cs, info = compute_priors(str(ann), k=20, class_specific=True, progress=False, n_init=1)
    assert cs.shape == (80, 20, 32, 32) and sum(info["counts"]) == 731 and info["empty_category_ids"] == []
    assert info["k_effective"] == [min(20, c) for c in info["counts"]]
    assert sum(c < 20 for c in info["counts"]) > 40  # most classes have fewer masks than K
