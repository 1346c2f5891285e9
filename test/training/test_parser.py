"""tf.data parser: static shapes, augmentation consistency, partial supervision, padding, subsampling."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses

import cv2
import numpy as np
import pytest
import tensorflow as tf

from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.model.roi_sampling import outer_boxes
from shapemask_ros.ops.sampling import crop_and_sample
from shapemask_training.config import DataConfig
from shapemask_training.data.parser import build_dataset, subsample_keep
from shapemask_training.data.tfrecords import encode_mask_png, make_example

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)

S = 128


def _example(image: np.ndarray, objects: list[tuple[int, np.ndarray]], image_id: int = 1) -> bytes:
    """Serialized example: image uint8 [H, W, 3]; objects (category id, mask [H, W]) with tight boxes."""
    h, w = image.shape[:2]
    boxes = []
    for _, m in objects:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    ok, png = cv2.imencode(".png", image[..., ::-1])
    assert ok
    ex = make_example(
        png.tobytes(),
        "png",
        h,
        w,
        image_id,
        f"{image_id}.png",
        [c for c, _ in objects],
        np.asarray(boxes, np.float32).reshape(-1, 4),
        [encode_mask_png(m) for _, m in objects],
    )
    return ex.SerializeToString()


def _write(path, serialized: list[bytes]) -> str:
    with tf.io.TFRecordWriter(str(path)) as w:
        for s in serialized:
            w.write(s)
    return str(path)


def _cfgs(**data_overrides) -> tuple[DataConfig, ModelConfig]:
    return dataclasses.replace(DataConfig(), **data_overrides), ModelConfig(image_size=S)


def _rect(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def _l_shape(h: int, w: int) -> np.ndarray:
    m = _rect(h, w, 10, 20, 40, 50)
    m[20:40, 25:40] = 0  # asymmetric, so a mirrored target differs from the original
    return m


def _first(ds: tf.data.Dataset) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in next(iter(ds)).items()}


def test_static_shapes_and_dtypes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    path = _write(tmp_path / "a.tfrecord", [_example(img, [(1, _l_shape(64, 96)), (2, _rect(64, 96, 50, 5, 90, 30))])])
    data_cfg, model_cfg = _cfgs()
    ds = build_dataset(path, data_cfg, model_cfg, True, 2, (1, 2), seed=1)
    expected = {
        "image": ([2, S, S, 3], tf.float32),
        "image_info": ([2, 4], tf.float32),
        "gt_boxes": ([2, 100, 4], tf.float32),
        "gt_classes": ([2, 100], tf.int32),
        "mask_boxes": ([2, 8, 4], tf.float32),
        "mask_outer_boxes": ([2, 8, 4], tf.float32),
        "mask_classes": ([2, 8], tf.int32),
        "mask_targets": ([2, 8, 32, 32], tf.float32),
        "fine_mask_targets": ([2, 8, 128, 128], tf.float32),
        "mask_valid": ([2, 8], tf.float32),
    }
    spec = ds.element_spec
    assert set(spec) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert spec[key].shape.as_list() == shape, key
        assert spec[key].dtype == dtype, key
    batch = _first(ds)
    for key in ("mask_targets", "fine_mask_targets"):
        assert set(np.unique(batch[key])) <= {0.0, 1.0}
        assert batch[key].sum() > 0
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 255.0
    np.testing.assert_array_equal(batch["mask_valid"], np.tile([1.0, 1.0] + [0.0] * 6, (2, 1)))
    # Outer boxes: outer box of the jittered box, clipped to the input.
    np.testing.assert_allclose(
        batch["mask_outer_boxes"][:, :2], np.asarray(outer_boxes(batch["mask_boxes"][:, :2], S, S)), atol=1e-3
    )


def test_flip_mirrors_boxes_and_targets(tmp_path) -> None:
    h, w = 64, S  # scale 1: input pixels = original pixels
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = _l_shape(h, w)
    path = _write(tmp_path / "a.tfrecord", [_example(img, [(1, mask)])])
    data_cfg, model_cfg = _cfgs(scale_min=1.0, scale_max=1.0, box_jitter_sigma=0.0, hflip=True, shuffle_buffer=1)
    ds = build_dataset(path, data_cfg, model_cfg, True, 1, (1,), seed=3)
    tight = np.array([10.0, 20.0, 40.0, 50.0])
    outer = np.asarray(outer_boxes(tight[None], h, w))[0].astype(np.float64)
    expected = (crop_and_sample(mask, outer, 32) >= 0.5).astype(np.float32)
    expected_fine = (crop_and_sample(mask, outer, 128) >= 0.5).astype(np.float32)
    seen = set()
    for batch in ds.take(12):
        b = {k: v.numpy()[0] for k, v in batch.items()}
        flipped = b["gt_boxes"][0, 0] > w / 2
        seen.add(bool(flipped))
        box = np.array([w - tight[2], tight[1], w - tight[0], tight[3]]) if flipped else tight
        np.testing.assert_allclose(b["gt_boxes"][0], box, atol=1e-4)
        np.testing.assert_allclose(b["mask_boxes"][0], box, atol=1e-4)
        np.testing.assert_allclose(b["image"][:h], (img[:, ::-1] if flipped else img).astype(np.float32), atol=1e-3)
        mirror = (lambda a: a[:, ::-1]) if flipped else (lambda a: a)
        np.testing.assert_array_equal(b["mask_targets"][0], mirror(expected))
        np.testing.assert_array_equal(b["fine_mask_targets"][0], mirror(expected_fine))
    assert seen == {True, False}


def test_cut_boxes_are_too_small_but_targets_still_cover_the_whole_object(tmp_path) -> None:
    """data.box_cut_prob: the mask branch's box is cut inside the object, its target is not (so the model
    learns masks that reach past a box that is too small); the detector's boxes stay exact."""
    h, w = 64, S
    mask = _rect(h, w, 30, 10, 90, 50)
    path = _write(tmp_path / "a.tfrecord", [_example(np.full((h, w, 3), 90, np.uint8), [(1, mask)])])
    cfg = dict(scale_min=1.0, scale_max=1.0, box_jitter_sigma=0.0, hflip=False, shuffle_buffer=1)
    tight = np.array([30.0, 10.0, 90.0, 50.0])
    data_cfg, model_cfg = _cfgs(**cfg, box_cut_prob=1.0, box_cut_max=0.15)
    cut_seen = 0
    for batch in build_dataset(path, data_cfg, model_cfg, True, 1, (1,), seed=4).take(6):
        b = {k: v.numpy()[0] for k, v in batch.items()}
        np.testing.assert_allclose(b["gt_boxes"][0], tight, atol=1e-4)
        mb = b["mask_boxes"][0]
        assert np.all(mb[:2] >= tight[:2] - 1e-4) and np.all(mb[2:] <= tight[2:] + 1e-4)
        inward = np.concatenate([mb[:2] - tight[:2], tight[2:] - mb[2:]]) / np.tile(tight[2:] - tight[:2], 2)
        assert inward.max() <= 0.15 + 1e-4
        cut_seen += bool(inward.min() > 0)
        ref = crop_and_sample(mask, b["mask_outer_boxes"][0].astype(np.float64), 128)
        clear = np.abs(ref - 0.5) > 1e-3
        np.testing.assert_array_equal(b["fine_mask_targets"][0][clear], (ref[clear] >= 0.5).astype(np.float32))
        # the target reaches past the cut box: foreground outside the given box exists
        o = b["mask_outer_boxes"][0]
        xs = o[0] + (np.arange(128) + 0.5) * (o[2] - o[0]) / 128
        outside = (xs < mb[0] - 1) | (xs > mb[2] + 1)
        assert b["fine_mask_targets"][0][:, outside].sum() > 0
    assert cut_seen == 6
    # box_cut_prob 0 (the default) leaves the mask boxes tight
    data_cfg, model_cfg = _cfgs(**cfg)
    b = _first(build_dataset(path, data_cfg, model_cfg, True, 1, (1,), seed=4))
    np.testing.assert_allclose(b["mask_boxes"][0, 0], tight, atol=1e-4)


@pytest.mark.parametrize("is_training", [False, True])
def test_gt_boxes_map_back_with_image_info(tmp_path, is_training: bool) -> None:
    h, w = 100, 60
    objs = [(1, _rect(h, w, 5, 10, 30, 60)), (2, _rect(h, w, 20, 50, 58, 97))]
    path = _write(tmp_path / "a.tfrecord", [_example(np.full((h, w, 3), 200, np.uint8), objs, image_id=42)])
    # scale_max 1: the image always fits, so there is no random crop offset.
    data_cfg, model_cfg = _cfgs(scale_min=0.6, scale_max=1.0, hflip=False)
    ds = build_dataset(path, data_cfg, model_cfg, is_training, 1, (1, 2), seed=0)
    orig = np.array([[5, 10, 30, 60], [20, 50, 58, 97]], np.float32)
    for batch in ds.take(3):
        b = {k: v.numpy()[0] for k, v in batch.items()}
        oh, ow, scale, zero = b["image_info"]
        assert (oh, ow, zero) == (h, w, 0.0)
        if is_training:
            assert 0.6 * S / h - 1e-5 <= scale <= S / h + 1e-5
        else:
            assert scale == pytest.approx(S / h)
            assert b["image_id"] == 42
        np.testing.assert_allclose(b["gt_boxes"][:2] / scale, orig, atol=1e-3)
        np.testing.assert_array_equal(b["gt_classes"][:3], [0, 1, -1])
        # Image content fills round(size * scale); the rest is zero padding.
        cw, ch = round(w * scale), round(h * scale)
        assert np.all(b["image"][:ch, :cw] > 150) and np.all(b["image"][:, cw + 1 :] == 0)
        assert np.all(b["image"][ch + 1 :] == 0)
        # Mask target of the first rectangle: the reference bilinear crop of the original mask over the
        # outer box mapped back to original pixels with image_info's scale, thresholded at 0.5.
        slot = int(np.nonzero(b["mask_classes"][:2] == 0)[0][0])
        ref = crop_and_sample(objs[0][1], b["mask_outer_boxes"][slot] / scale, 32)
        clear = np.abs(ref - 0.5) > 1e-3  # float32 ties at 0.5 may go either way
        assert clear.mean() > 0.95 and 0 < ref.mean() < 1
        np.testing.assert_array_equal(b["mask_targets"][slot][clear], (ref[clear] >= 0.5).astype(np.float32))


def test_random_crop_keeps_image_boxes_and_masks_aligned(tmp_path) -> None:
    h, w = 64, 64
    values = {1: 250, 2: 120}  # object brightness per category id
    masks = {1: _rect(h, w, 12, 12, 20, 20), 2: _rect(h, w, 44, 44, 52, 52)}
    img = np.zeros((h, w, 3), np.uint8)
    for c, m in masks.items():
        img[m.astype(bool)] = values[c]
    path = _write(tmp_path / "a.tfrecord", [_example(img, [(1, masks[1]), (2, masks[2])])])
    # Scale 3 x fit (192 px) into a 128 px input: random crop offsets in [0, 64] per axis.
    data_cfg, model_cfg = _cfgs(scale_min=1.5, scale_max=1.5, hflip=False, box_jitter_sigma=0.0)
    ds = build_dataset(path, data_cfg, model_cfg, True, 1, (1, 2), seed=4)
    full_seen = dropped_seen = 0
    for batch in ds.take(16):
        b = {k: v.numpy()[0] for k, v in batch.items()}
        scale = b["image_info"][2]
        assert scale == pytest.approx(3.0)
        gray = b["image"][..., 0]
        for idx, c in enumerate((1, 2)):
            interior = np.abs(gray - values[c]) < 0.5  # pixels whose bilinear neighbours are all object
            rows = np.nonzero(b["gt_classes"] == idx)[0]
            if len(rows) == 0:
                dropped_seen += 1
                assert not interior.any()
                continue
            x1, y1, x2, y2 = b["gt_boxes"][rows[0]]
            ys, xs = np.nonzero(interior)
            if len(ys):
                assert xs.min() >= x1 and xs.max() + 1 <= x2 and ys.min() >= y1 and ys.max() + 1 <= y2
            if x2 - x1 == pytest.approx(8 * scale) and y2 - y1 == pytest.approx(8 * scale):
                # Fully visible: the crop offset follows from the box; the mask target must agree.
                full_seen += 1
                offset = np.array([12.0, 12.0] if c == 1 else [44.0, 44.0]) * scale - np.array([x1, y1])
                slot = int(np.nonzero((b["mask_classes"] == idx) & (b["mask_valid"] == 1))[0][0])
                outer_orig = (b["mask_outer_boxes"][slot] + np.tile(offset, 2)) / scale
                ref = crop_and_sample(masks[c], outer_orig, 32)
                clear = np.abs(ref - 0.5) > 1e-3
                np.testing.assert_array_equal(b["mask_targets"][slot][clear], (ref[clear] >= 0.5).astype(np.float32))
    assert full_seen > 0 and dropped_seen > 0


def test_partial_supervision_and_padding(tmp_path) -> None:
    h, w = 64, 64
    objs = [
        (8, _rect(h, w, 2, 2, 20, 20)),  # non-VOC
        (1, _rect(h, w, 30, 30, 60, 60)),  # VOC
        (10, _rect(h, w, 5, 40, 25, 62)),  # non-VOC
        (99, _rect(h, w, 40, 2, 60, 20)),  # not in category_ids: background
    ]
    path = _write(tmp_path / "a.tfrecord", [_example(np.zeros((h, w, 3), np.uint8), objs)])
    cats = (1, 8, 10)
    for split, supervised in (("voc", {0}), ("nonvoc", {1, 2}), ("all", {0, 1, 2})):
        data_cfg, model_cfg = _cfgs(mask_split=split)
        b = _first(build_dataset(path, data_cfg, model_cfg, False, 1, cats))
        assert sorted(b["gt_classes"][0][:3]) == [0, 1, 2] and np.all(b["gt_classes"][0][3:] == -1)
        valid = b["mask_valid"][0]
        classes = b["mask_classes"][0]
        assert {int(c) for c, v in zip(classes[:3], valid[:3], strict=True) if v == 1} == supervised
        assert {int(c) for c in classes[:3]} == {0, 1, 2}  # excluded classes still fill slots, invalid
        assert list(valid[: len(supervised)]) == [1.0] * len(supervised)  # supervised instances come first
        # Padding slots: invalid, empty targets, zero boxes.
        assert np.all(valid[3:] == 0) and np.all(b["mask_targets"][0][3:] == 0)
        assert np.all(b["fine_mask_targets"][0][3:] == 0) and np.all(b["mask_boxes"][0][3:] == 0)
        assert np.all(b["mask_targets"][0][:3].sum(axis=(1, 2)) > 0)


def test_eval_pads_last_batch_and_keeps_empty_images(tmp_path) -> None:
    h, w = 40, 40
    recs = [
        _example(np.full((h, w, 3), 10, np.uint8), [(1, _rect(h, w, 5, 5, 20, 20))], image_id=7),
        _example(np.full((h, w, 3), 20, np.uint8), [], image_id=8),
        _example(np.full((h, w, 3), 30, np.uint8), [(1, _rect(h, w, 1, 1, 39, 39))], image_id=9),
    ]
    path = _write(tmp_path / "a.tfrecord", recs)
    data_cfg, model_cfg = _cfgs()
    batches = [{k: v.numpy() for k, v in b.items()} for b in build_dataset(path, data_cfg, model_cfg, False, 2, (1,))]
    assert len(batches) == 2
    assert list(batches[0]["image_id"]) == [7, 8] and list(batches[1]["image_id"]) == [9, -1]
    assert np.all(batches[0]["gt_classes"][1] == -1) and np.all(batches[0]["mask_valid"][1] == 0)
    assert np.all(batches[1]["gt_classes"][1] == -1) and np.all(batches[1]["image"][1] == 0)
    assert batches[1]["mask_valid"][0, 0] == 1.0


def test_seed_makes_training_deterministic(tmp_path) -> None:
    h, w = 64, 64
    rng = np.random.default_rng(2)
    objs = [(1, _rect(h, w, 5, 5, 30, 40)), (1, _rect(h, w, 35, 20, 60, 60))]
    path = _write(tmp_path / "a.tfrecord", [_example(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), objs)])
    data_cfg, model_cfg = _cfgs()

    def boxes(seed: int) -> np.ndarray:
        ds = build_dataset(path, data_cfg, model_cfg, True, 1, (1,), seed=seed)
        return np.concatenate([b["mask_boxes"].numpy() for b in ds.take(3)])

    a, b, c = boxes(5), boxes(5), boxes(6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_subsampling_is_deterministic_and_nested(tmp_path) -> None:
    ids = tf.range(1, 2001, dtype=tf.int64)
    half = subsample_keep(ids, 0.5).numpy()
    tenth = subsample_keep(ids, 0.1).numpy()
    np.testing.assert_array_equal(half, subsample_keep(ids, 0.5).numpy())
    assert np.all(half[tenth])  # the 1/10 subset is inside the 1/2 subset
    assert abs(half.mean() - 0.5) < 0.05 and abs(tenth.mean() - 0.1) < 0.03
    assert np.all(subsample_keep(ids, 1.0).numpy())
    with pytest.raises(ValueError, match="subsample_fraction"):
        subsample_keep(ids, 0.0)

    # The training pipeline keeps exactly those images: each image is a constant colour = its id.
    n = 24
    recs = [
        _example(np.full((8, 8, 3), i, np.uint8), [(1, _rect(8, 8, 1, 1, 6, 6))], image_id=i) for i in range(1, n + 1)
    ]
    path = _write(tmp_path / "a.tfrecord", recs)
    kept = {i for i, k in zip(range(1, n + 1), half[:n], strict=True) if k}
    assert 0 < len(kept) < n
    data_cfg, model_cfg = _cfgs(subsample_fraction=0.5, hflip=False)
    ds = build_dataset(path, data_cfg, model_cfg, True, 1, (1,), seed=0)
    seen = [int(round(float(b["image"][0, 0, 0, 0]))) for b in ds.take(len(kept))]
    assert sorted(seen) == sorted(kept)  # one epoch of the repeated stream = the kept subset


def test_bad_arguments_are_clear_errors(tmp_path) -> None:
    data_cfg, model_cfg = _cfgs()
    with pytest.raises(ValueError, match="no TFRecord files"):
        build_dataset(str(tmp_path / "none-*.tfrecord"), data_cfg, model_cfg, True, 1, (1,))
    path = _write(tmp_path / "a.tfrecord", [])
    with pytest.raises(ValueError, match="category_ids"):
        build_dataset(path, data_cfg, model_cfg, True, 1, ())
    with pytest.raises(ValueError, match="batch_size"):
        build_dataset(path, data_cfg, model_cfg, True, 0, (1,))
    with pytest.raises(ValueError, match="subsample_fraction"):
        build_dataset(path, dataclasses.replace(data_cfg, subsample_fraction=1.5), model_cfg, True, 1, (1,))
