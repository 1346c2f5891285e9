"""Repeat-factor sampling (LVIS) on imports: rare-category images repeated, counted before the agnostic collapse."""

from __future__ import annotations

import argparse
import json
import os

import cv2
import numpy as np
import pytest

from shapemask_training.data import importers
from shapemask_training.data.importers import import_dataset
from shapemask_training.data.repeat_factor import repeat_factor_sample, repeat_factors, stochastic_counts

pytestmark = pytest.mark.tf  # imports the training package (see conftest.py)

# ten images: cup on 1-8 and 10 (f = 0.9), kite on 9 and 10 (f = 0.2)
CATEGORIES = {1: "cup", 2: "kite"}
IMAGE_CATEGORIES = {i: [1] for i in range(1, 9)} | {9: [2], 10: [1, 2]}


def _toy_export(root) -> str:
    os.makedirs(root, exist_ok=True)
    images, anns = [], []
    for i, cats in IMAGE_CATEGORIES.items():
        cv2.imwrite(str(root / f"{i}.png"), np.full((20, 30, 3), 10 * i, np.uint8))
        images.append({"id": i, "file_name": f"{i}.png", "height": 20, "width": 30})
        for c in cats:
            x = 2 + 10 * (c - 1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": c,
                    "bbox": [x, 2, 8, 8],
                    "segmentation": [[x, 2, x + 8, 2, x + 8, 10, x, 10]],
                    "area": 64,
                    "iscrowd": 0,
                }
            )
    data = {"images": images, "annotations": anns, "categories": [{"id": k, "name": v} for k, v in CATEGORIES.items()]}
    path = root / "toy.json"
    path.write_text(json.dumps(data))
    return str(path)


def _counts(coco: dict) -> dict[str, int]:
    """file name -> how many image records use it."""
    out: dict[str, int] = {}
    for im in coco["images"]:
        out[im["file_name"]] = out.get(im["file_name"], 0) + 1
    return out


def test_rare_category_images_are_repeated_by_the_largest_factor_before_the_agnostic_collapse(tmp_path):
    ann = _toy_export(tmp_path / "src")
    out = tmp_path / "rfs.json"
    # t = 0.8: r(cup) = max(1, sqrt(0.8 / 0.9)) = 1, r(kite) = sqrt(0.8 / 0.2) = 2 (integral: no rounding draw)
    res = import_dataset([ann], [], str(out), agnostic=True, repeat_factor_threshold=0.8, seed=0)
    coco = json.loads(out.read_text())
    counts = _counts(coco)
    expected = {f"src/{i}.png": 2 if i in (9, 10) else 1 for i in IMAGE_CATEGORIES}  # 10: max(r(cup), r(kite))
    assert counts == expected
    assert len({im["id"] for im in coco["images"]}) == 12  # copies have their own ids
    assert coco["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert all(a["category_id"] == 1 for a in coco["annotations"])
    # each copy carries a copy of its original's annotations (image 10: two), with fresh annotation ids
    by_file = {}
    for im in coco["images"]:
        anns = sorted((a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"]), key=str)
        by_file.setdefault(im["file_name"], []).append(anns)
    assert all(len(v) == 2 and v[0] == v[1] for k, v in by_file.items() if k.endswith(("/9.png", "/10.png")))
    assert len(coco["annotations"]) == 11 + 3 and len({a["id"] for a in coco["annotations"]}) == 14
    s = res.repeats
    assert s is not None and (s.images_before, s.images_after, s.images_repeated) == (10, 12, 2)
    assert s.categories["kite"]["repeat"] == pytest.approx(2.0) and s.categories["kite"]["images_after"] == 4
    assert s.categories["cup"]["repeat"] == 1.0 and s.categories["cup"]["images_after"] == 10


def test_fractional_repeat_factors_round_stochastically_to_their_expectation():
    counts = stochastic_counts(np.full(20000, 1.3), np.random.default_rng(0))
    assert set(np.unique(counts)) == {1, 2}
    assert counts.mean() == pytest.approx(1.3, abs=0.01)
    assert (stochastic_counts(np.array([1.0, 2.0, 3.0]), np.random.default_rng(5)) == [1, 2, 3]).all()
    # the toy set at t = 0.45: r(kite) = 1.5, so images 9 and 10 appear 1.5 times on average over seeds
    cats = [set(c) for c in IMAGE_CATEGORIES.values()]
    assert repeat_factors(cats, 0.45)[-2:] == pytest.approx([1.5, 1.5])
    coco = json.loads(_toy_json())
    sizes = [len(repeat_factor_sample(coco, 0.45, seed)[0]["images"]) for seed in range(400)]
    assert np.mean(sizes) == pytest.approx(10 + 2 * 0.5, abs=0.08)


def _toy_json() -> str:
    images = [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 30} for i in IMAGE_CATEGORIES]
    anns = [
        {"id": 10 * i + c, "image_id": i, "category_id": c, "bbox": [0, 0, 5, 5], "iscrowd": 0}
        for i, cats in IMAGE_CATEGORIES.items()
        for c in cats
    ]
    return json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": k, "name": v} for k, v in CATEGORIES.items()]}
    )


def test_repeats_are_deterministic_by_seed(tmp_path):
    ann = _toy_export(tmp_path / "src")
    outs = {}
    for name, seed in (("a", 3), ("b", 3)):
        import_dataset(
            [ann], [], str(tmp_path / f"{name}.json"), agnostic=True, repeat_factor_threshold=0.45, seed=seed
        )
        outs[name] = (tmp_path / f"{name}.json").read_bytes()
    assert outs["a"] == outs["b"]
    coco = json.loads(_toy_json())
    layouts = {tuple(im["repeat_of"] for im in repeat_factor_sample(coco, 0.45, s)[0]["images"][10:]) for s in range(8)}
    assert len(layouts) > 1  # the seed does choose which fractional repeats happen


def test_threshold_zero_or_no_repeat_leaves_the_import_byte_identical(tmp_path):
    ann = _toy_export(tmp_path / "src")
    plain, zero, tiny = (tmp_path / f"{n}.json" for n in ("plain", "zero", "tiny"))
    import_dataset([ann, ann], [], str(plain), agnostic=True)
    import_dataset([ann, ann], [], str(zero), agnostic=True, repeat_factor_threshold=0.0, seed=4)
    # a threshold below every f(c) takes the repeat path (named merge, then the collapse) and repeats nothing
    res = import_dataset([ann, ann], [], str(tiny), agnostic=True, repeat_factor_threshold=1e-3, seed=4)
    assert res.repeats is not None and res.repeats.images_after == res.repeats.images_before == 20
    assert plain.read_bytes() == zero.read_bytes() == tiny.read_bytes()
    named, named_tiny = tmp_path / "named.json", tmp_path / "named_tiny.json"
    import_dataset([ann], [], str(named))
    import_dataset([ann], [], str(named_tiny), repeat_factor_threshold=1e-3)
    assert named.read_bytes() == named_tiny.read_bytes()


def test_cli_refuses_to_repeat_before_a_holdout_split(tmp_path):
    ann = _toy_export(tmp_path / "src")
    p = argparse.ArgumentParser()
    importers.add_args(p)
    args = p.parse_args(
        [
            "--coco",
            ann,
            "--out",
            str(tmp_path / "o.json"),
            "--holdout",
            "0.2",
            "--holdout-out",
            str(tmp_path / "h.json"),
        ]
        + ["--repeat-factor-threshold", "0.5"]
    )
    with pytest.raises(SystemExit, match="split in one import"):
        importers.run(args)
