"""Dataset import (Roboflow/CVAT COCO exports, YOLO-seg polygons) and copy-paste augmentation."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from shapemask_training.data.copy_paste import CopyPasteConfig, Cutout, make_composites, paste
from shapemask_training.data.importers import default_label_dir, import_dataset, split_holdout

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _write_image(path, h=40, w=60, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


def _roboflow_export(root) -> str:
    """A Roboflow-style export: placeholder category 0 (the project name), annotation ids from 0, one
    annotation without a polygon, one with a degenerate polygon."""
    _write_image(root / "a.jpg")
    _write_image(root / "b.jpg")
    data = {
        "images": [
            {"id": 0, "file_name": "a.jpg", "height": 40, "width": 60},
            {"id": 1, "file_name": "b.jpg", "height": 40, "width": 60},
        ],
        "categories": [
            {"id": 0, "name": "boards-xyz", "supercategory": "none"},
            {"id": 1, "name": "Arduino Uno", "supercategory": "boards-xyz"},
            {"id": 2, "name": "ESP32", "supercategory": "boards-xyz"},
        ],
        "annotations": [
            {
                "id": 0,
                "image_id": 0,
                "category_id": 1,
                "bbox": [10, 10, 20, 10],
                "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]],
                "area": 200,
                "iscrowd": 0,
            },
            {
                "id": 1,
                "image_id": 0,
                "category_id": 2,
                "bbox": [5, 5, 5, 5],
                "segmentation": [],
                "area": 25,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 2,
                "bbox": [1, 1, 4, 4],
                "segmentation": [[1, 1, 2, 2]],
                "area": 4,
                "iscrowd": 0,
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 2,
                "bbox": [0, 0, 10, 10],
                "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
                "area": 100,
                "iscrowd": 0,
            },
        ],
    }
    path = root / "_annotations.coco.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_roboflow_export_placeholder_category_empty_polygons_and_zero_ids(tmp_path):
    ann = _roboflow_export(tmp_path / "rf")
    out = tmp_path / "merged" / "all.json"
    res = import_dataset([ann], [], str(out))
    coco = json.loads(out.read_text())
    assert res.skipped["empty_polygon"] == 2  # no polygon, and a 2-point "polygon"
    assert [a["id"] for a in coco["annotations"]] == [1, 2]  # renumbered from 1 (COCOeval ignores id 0)
    assert {c["name"] for c in coco["categories"]} == {"Arduino Uno", "ESP32"}  # placeholder gone
    # paths are relative to the output JSON and resolve to the source images
    for im in coco["images"]:
        assert os.path.exists(os.path.join(out.parent, im["file_name"]))
    assert min(im["id"] for im in coco["images"]) == 1


def test_agnostic_import_merges_sources_into_one_object_category(tmp_path):
    ann = _roboflow_export(tmp_path / "rf")
    out = tmp_path / "all.json"
    import_dataset([ann, ann], [], str(out), agnostic=True)
    coco = json.loads(out.read_text())
    assert coco["categories"] == [{"id": 1, "name": "object", "supercategory": "object"}]
    assert len(coco["images"]) == 4 and len({im["id"] for im in coco["images"]}) == 4
    assert len(coco["annotations"]) == 4 and all(a["category_id"] == 1 for a in coco["annotations"])


def test_yolo_seg_polygons_become_pixel_polygons_with_boxes(tmp_path):
    img_dir = tmp_path / "ds" / "images" / "train"
    lab_dir = tmp_path / "ds" / "labels" / "train"
    _write_image(img_dir / "x.jpg", h=100, w=200)
    _write_image(img_dir / "no_labels.jpg")
    os.makedirs(lab_dir)
    (lab_dir / "x.txt").write_text(
        "3 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n"  # a rectangle 80 x 40 px
        "7 0.5 nan 0.7 0.1 0.6 0.3\n"  # NaN coordinate -> skipped
        "bad line\n"
        "2 0.1 0.1 0.2\n"  # odd number of coordinates -> skipped
    )
    assert default_label_dir(str(img_dir)) == str(lab_dir)
    out = tmp_path / "y.json"
    res = import_dataset([], [str(img_dir)], str(out))
    coco = json.loads(out.read_text())
    assert len(coco["images"]) == 2 and res.skipped["image_without_labels"] == 1
    assert res.skipped["malformed_line"] == 3
    (a,) = coco["annotations"]
    assert a["bbox"] == pytest.approx([20, 20, 80, 40])
    assert a["area"] == pytest.approx(80 * 40, rel=0.05)
    assert coco["categories"][0]["name"] == "3"


def test_holdout_split_is_disjoint_and_seeded(tmp_path):
    coco = {
        "images": [{"id": i} for i in range(1, 21)],
        "categories": [],
        "annotations": [{"id": i, "image_id": i} for i in range(1, 21)],
    }
    kept, held = split_holdout(coco, 0.25, seed=3)
    assert len(held["images"]) == 5 and len(kept["images"]) == 15
    assert not {im["id"] for im in kept["images"]} & {im["id"] for im in held["images"]}
    assert {a["image_id"] for a in held["annotations"]} == {im["id"] for im in held["images"]}
    assert split_holdout(coco, 0.25, seed=3)[1] == held


def test_paste_removes_covered_pixels_from_the_masks_below():
    rng = np.random.default_rng(0)
    bg = np.zeros((50, 50, 3), np.uint8)
    below = np.zeros((50, 50), np.uint8)
    below[10:40, 10:40] = 1
    cut = Cutout(np.full((20, 20, 3), 255, np.uint8), np.ones((20, 20), np.uint8))
    cfg = CopyPasteConfig(scale_min=0.4, scale_max=0.4, min_area=1)
    img, masks, areas = paste(bg, [below], [cut], rng, cfg)
    assert len(masks) == 2 and areas[0] == 900
    pasted = masks[1]
    assert pasted.sum() == 400
    assert not (masks[0] & pasted).any()  # covered pixels left the object below
    assert masks[0].sum() == 900 - (below.astype(bool) & pasted).sum()
    assert (img[pasted] > 200).all()  # the pasted pixels show the cut-out (feathered only at its edge)


def test_composites_are_deterministic_and_labels_match_visible_pixels(tmp_path):
    ann = _roboflow_export(tmp_path / "rf")
    src = tmp_path / "src.json"
    import_dataset([ann], [], str(src), agnostic=True)
    cfg = CopyPasteConfig(
        images=6, min_pastes=2, max_pastes=3, min_source_area=50, min_area=4, scale_min=0.3, scale_max=0.5, seed=5
    )
    a = make_composites(
        [(str(src), str(tmp_path), 1.0)], [(str(src), str(tmp_path))], str(tmp_path / "a"), cfg, progress=False
    )
    b = make_composites(
        [(str(src), str(tmp_path), 1.0)], [(str(src), str(tmp_path))], str(tmp_path / "b"), cfg, progress=False
    )
    assert a["annotations"] == b["annotations"] and len(a["images"]) == 6
    for ann in a["annotations"]:
        m = mask_utils.decode(ann["segmentation"])
        assert m.sum() == ann["area"] >= cfg.min_area
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
    # instances of one image never share a pixel (occlusion removed from the one below)
    for im in a["images"]:
        ms = [mask_utils.decode(x["segmentation"]) for x in a["annotations"] if x["image_id"] == im["id"]]
        if len(ms) > 1:
            assert np.max(np.sum(ms, axis=0)) == 1
