"""COCO -> TFRecords round trip on a small hand-made COCO file with every kind of bad annotation."""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2
import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils

from shapemask_training.data import tfrecords as rec
from shapemask_training.data.tfrecords import add_tfrecords_args, run_make_tfrecords, shard_path, write_tfrecords

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _rle_mask(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[5:20, 30:45] = 1
    m[8:12, 33:36] = 0  # a hole
    return m


def _make_dataset(root: str) -> dict:
    """Write images + COCO JSON under `root`; return what the test expects back."""
    img_dir = os.path.join(root, "images")
    os.makedirs(img_dir)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    cv2.imwrite(os.path.join(img_dir, "a.png"), rgb)
    gray = rng.integers(0, 255, (30, 40), dtype=np.uint8)
    cv2.imwrite(os.path.join(img_dir, "gray.jpg"), gray)
    cv2.imwrite(os.path.join(img_dir, "small.png"), np.zeros((20, 20, 3), np.uint8))
    cv2.imwrite(os.path.join(img_dir, "b.bmp"), rgb[:24, :32])
    with open(os.path.join(img_dir, "broken.jpg"), "wb") as f:
        f.write(b"not an image at all")

    rle_mask = _rle_mask(40, 50)
    rle = mask_utils.encode(np.asfortranarray(rle_mask))
    rle_json = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    poly = [10.0, 10.0, 25.0, 10.0, 25.0, 30.0, 10.0, 30.0]
    images = [
        {"id": 1, "file_name": "a.png", "height": 40, "width": 50},
        {"id": 2, "file_name": "gray.jpg", "height": 30, "width": 40},
        {"id": 3, "file_name": "missing.png", "height": 30, "width": 30},
        {"id": 4, "file_name": "broken.jpg", "height": 30, "width": 30},
        {"id": 5, "file_name": "small.png", "height": 30, "width": 30},  # size mismatch (file is 20x20)
        {"id": 6, "file_name": "b.bmp", "height": 24, "width": 32},
    ]
    anns = [
        {
            "id": 10,
            "image_id": 1,
            "category_id": 3,
            "bbox": [10, 10, 15, 20],
            "segmentation": [poly],
            "iscrowd": 0,
        },
        {
            "id": 11,
            "image_id": 1,
            "category_id": 7,
            "bbox": [30, 5, 15, 15],
            "segmentation": rle_json,
            "iscrowd": 0,
        },
        {
            "id": 12,
            "image_id": 1,
            "category_id": 3,
            "bbox": [0, 0, 50, 40],
            "segmentation": rle_json,
            "iscrowd": 1,
        },
        {
            "id": 13,
            "image_id": 1,
            "category_id": 3,
            "bbox": [5, 5, 0, 10],
            "segmentation": [poly],
            "iscrowd": 0,
        },
        {
            "id": 14,
            "image_id": 1,
            "category_id": 3,
            "bbox": [60, 50, 10, 10],
            "segmentation": [poly],
            "iscrowd": 0,
        },
        {
            "id": 15,
            "image_id": 1,
            "category_id": 7,
            "bbox": [1, 1, 5, 5],
            "segmentation": [[1.0, 2.0]],
            "iscrowd": 0,
        },
        # image 2 only has a crowd annotation: written with zero instances
        {
            "id": 20,
            "image_id": 2,
            "category_id": 3,
            "bbox": [0, 0, 10, 10],
            "segmentation": [poly],
            "iscrowd": 1,
        },
        {
            "id": 60,
            "image_id": 6,
            "category_id": 7,
            "bbox": [2, 2, 10, 10],
            "segmentation": [poly],
            "iscrowd": 0,
        },
    ]
    cats = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}]
    ann_path = os.path.join(root, "instances.json")
    with open(ann_path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    poly_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 40, 50)))
    poly_mask_small = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 24, 32)))
    return {
        "ann_path": ann_path,
        "img_dir": img_dir,
        "masks": {1: [poly_mask, rle_mask], 2: [], 6: [poly_mask_small]},
        "boxes": {1: [[10, 10, 25, 30], [30, 5, 45, 20]], 2: [], 6: [[2, 2, 12, 12]]},
        "classes": {1: [3, 7], 2: [], 6: [7]},
        "gray_bytes": open(os.path.join(img_dir, "gray.jpg"), "rb").read(),
        "bmp": cv2.imread(os.path.join(img_dir, "b.bmp"), cv2.IMREAD_COLOR)[..., ::-1],
    }


def _read_examples(paths: list[str]) -> dict[int, tf.train.Example]:
    out = {}
    for raw in tf.data.TFRecordDataset(paths):
        ex = tf.train.Example.FromString(raw.numpy())
        out[ex.features.feature[rec.KEY_SOURCE_ID].int64_list.value[0]] = ex
    return out


def test_round_trip(tmp_path) -> None:
    d = _make_dataset(str(tmp_path))
    out_prefix = str(tmp_path / "out" / "train")
    stats = write_tfrecords(d["ann_path"], d["img_dir"], out_prefix, num_shards=2, progress=False)

    assert stats["skipped"] == {
        "crowd": 2,
        "zero_area_box": 1,
        "box_outside_image": 1,
        "broken_segmentation": 1,
        "missing_image": 1,
        "unreadable_image": 1,
        "image_size_mismatch": 1,
    }
    assert stats["images_written"] == 3
    assert stats["instances_written"] == 3
    assert stats["images_without_instances"] == 1
    assert stats["reencoded_images"] == 1
    assert stats["category_ids"] == [3, 7]

    shards = [shard_path(out_prefix, i, 2) for i in range(2)]
    assert stats["shards"] == shards
    assert sorted(os.listdir(tmp_path / "out")) == sorted([os.path.basename(p) for p in shards] + ["train-meta.json"])
    meta = json.loads((tmp_path / "out" / "train-meta.json").read_text())
    assert meta["category_names"] == ["car", "train"]

    examples = _read_examples(shards)
    assert sorted(examples) == [1, 2, 6]
    for image_id, ex in examples.items():
        f = ex.features.feature
        assert f[rec.KEY_CLASS].int64_list.value == d["classes"][image_id]
        boxes = np.stack([f[k].float_list.value for k in (rec.KEY_X1, rec.KEY_Y1, rec.KEY_X2, rec.KEY_Y2)], 1)
        np.testing.assert_allclose(boxes.reshape(-1, 4), np.reshape(d["boxes"][image_id], (-1, 4)))
        pngs = f[rec.KEY_MASK].bytes_list.value
        assert len(pngs) == len(d["masks"][image_id])
        for png, expected in zip(pngs, d["masks"][image_id], strict=True):
            decoded = tf.io.decode_png(png, channels=1).numpy()[..., 0]
            np.testing.assert_array_equal(decoded, expected)

    # Grayscale JPEG: original bytes kept, decodes to 3 channels.
    gray = examples[2].features.feature
    assert gray[rec.KEY_IMAGE].bytes_list.value[0] == d["gray_bytes"]
    assert gray[rec.KEY_FORMAT].bytes_list.value[0] == b"jpeg"
    img = tf.io.decode_image(gray[rec.KEY_IMAGE].bytes_list.value[0], channels=3, expand_animations=False)
    assert img.shape == (30, 40, 3)
    np.testing.assert_array_equal(img[..., 0], img[..., 2])
    # BMP: re-encoded losslessly as PNG.
    bmp = examples[6].features.feature
    assert bmp[rec.KEY_FORMAT].bytes_list.value[0] == b"png"
    np.testing.assert_array_equal(tf.io.decode_png(bmp[rec.KEY_IMAGE].bytes_list.value[0]).numpy(), d["bmp"])


def test_failure_leaves_no_files(tmp_path, monkeypatch) -> None:
    d = _make_dataset(str(tmp_path))
    calls = {"n": 0}
    real = rec.make_example

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(rec, "make_example", flaky)
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        write_tfrecords(d["ann_path"], d["img_dir"], str(out_dir / "train"), num_shards=3, progress=False)
    assert os.listdir(out_dir) == []


def test_cli(tmp_path, capsys) -> None:
    d = _make_dataset(str(tmp_path))
    parser = argparse.ArgumentParser()
    add_tfrecords_args(parser)
    out = str(tmp_path / "cli" / "val")
    args = parser.parse_args(
        [
            "--annotations",
            d["ann_path"],
            "--images",
            d["img_dir"],
            "--out",
            out,
            "--shards",
            "1",
            "--no-progress",
        ]
    )
    assert run_make_tfrecords(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["shards"] == [shard_path(out, 0, 1)]
    assert sum(1 for _ in tf.data.TFRecordDataset(printed["shards"])) == printed["images_written"] == 3
    with pytest.raises(ValueError, match="num_shards"):
        write_tfrecords(d["ann_path"], d["img_dir"], out, num_shards=0)
