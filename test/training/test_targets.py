"""Target ops of the input pipeline against the NumPy reference convention (shapemask_ros.ops)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from shapemask_ros.model.roi_sampling import outer_boxes
from shapemask_ros.ops.sampling import crop_and_sample, grid_points
from shapemask_training.data.targets import crop_masks_to_boxes, cut_boxes_tf, jitter_boxes_tf, mask_targets

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _random_boxes(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    # Anywhere from half a pixel outside the image to half a pixel past it (the clamped range).
    x1 = rng.uniform(-0.5, w, n)
    y1 = rng.uniform(-0.5, h, n)
    x2 = np.minimum(x1 + rng.uniform(0.0, w, n), w + 0.5)
    y2 = np.minimum(y1 + rng.uniform(0.0, h, n), h + 0.5)
    return np.stack([x1, y1, x2, y2], 1).astype(np.float32)


@pytest.mark.parametrize("h,w", [(1, 1), (1, 9), (17, 5), (37, 53)])
@pytest.mark.parametrize("size", [1, 7, 32])
def test_crop_matches_numpy_reference(h: int, w: int, size: int) -> None:
    rng = np.random.default_rng(h * 1000 + w + size)
    masks = rng.random((6, h, w)).astype(np.float32)
    boxes = _random_boxes(rng, 6, h, w)
    got = crop_masks_to_boxes(masks, boxes, size).numpy()
    ref = np.stack([crop_and_sample(masks[i], boxes[i], size) for i in range(6)])
    assert got.shape == (6, size, size) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_crop_accepts_uint8_masks() -> None:
    rng = np.random.default_rng(1)
    masks = (rng.random((3, 20, 24)) > 0.5).astype(np.uint8)
    boxes = _random_boxes(rng, 3, 20, 24)
    got = crop_masks_to_boxes(masks, boxes, 8).numpy()
    ref = np.stack([crop_and_sample(masks[i], boxes[i], 8) for i in range(3)])
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_zero_outside_reads_zero_past_the_mask() -> None:
    h, w, n = 10, 16, 16
    masks = np.ones((1, h, w), np.float32)
    box = np.array([[0.0, 0.0, 2.0 * w, h]], np.float32)  # right half of the grid lies past the mask
    xs, _ = grid_points(box[0], n)
    got = crop_masks_to_boxes(masks, box, n, zero_outside=True).numpy()[0]
    expected_cols = (xs <= w).astype(np.float32)
    np.testing.assert_array_equal(got, np.tile(expected_cols, (n, 1)))
    # Without zero_outside the border is clamped for half a pixel, then crop_and_resize extrapolates 0.
    clamped = crop_masks_to_boxes(masks, box, n).numpy()[0]
    assert clamped[:, xs <= w + 0.5].min() == 1.0
    assert clamped[:, xs > w + 1.5].max() == 0.0


def test_rectangle_target_is_central_region_of_outer_box() -> None:
    h, w = 160, 200
    x1, y1, x2, y2 = 60, 40, 140, 100  # mask covers pixels [x1, x2) x [y1, y2)
    mask = np.zeros((1, h, w), np.uint8)
    mask[0, y1:y2, x1:x2] = 1
    tight = np.array([[x1, y1, x2, y2]], np.float32)
    outer = np.asarray(outer_boxes(tight, h, w, 1.25))
    np.testing.assert_allclose(outer, _outer_formula(tight, h, w, 1.25), atol=1e-5)
    assert np.all(outer[0, :2] > 0) and outer[0, 2] < w and outer[0, 3] < h  # not clipped
    target = mask_targets(mask, outer, 32).numpy()[0]
    # Bilinear value crosses 0.5 exactly on the tight edges, so a bin is 1 iff its centre lies in the tight
    # box, i.e. its relative position t = (j + 0.5) / 32 is within the central 1/1.25 of the outer box.
    margin = (1.0 - 1.0 / 1.25) / 2.0
    t = (np.arange(32) + 0.5) / 32.0
    inside = (t >= margin) & (t <= 1.0 - margin)
    expected = (inside[:, None] & inside[None, :]).astype(np.float32)
    np.testing.assert_array_equal(target, expected)
    assert set(np.unique(target)) == {0.0, 1.0}


def _outer_formula(b: np.ndarray, h: float, w: float, scale: float = 1.25) -> np.ndarray:
    """The paper's outer box written out: centre c, half size s*(x2-x1)/2, clipped per axis."""
    b = np.asarray(b, np.float64)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) * scale / 2, (b[:, 3] - b[:, 1]) * scale / 2
    return np.stack(
        [np.clip(cx - hw, 0, w), np.clip(cy - hh, 0, h), np.clip(cx + hw, 0, w), np.clip(cy + hh, 0, h)], axis=1
    )


def test_one_outer_box_definition_serves_numpy_and_tf_data_graphs() -> None:
    """The model's keras.ops outer_boxes is also the input pipeline's: same numbers eagerly on NumPy and
    traced in a tf.data map with tensor height/width (non-square, so x and y clip differently)."""
    rng = np.random.default_rng(3)
    boxes = (_random_boxes(rng, 50, 40, 60) * 1.3 - 5.0).astype(np.float32)
    want = _outer_formula(boxes, 40, 60)
    np.testing.assert_allclose(np.asarray(outer_boxes(boxes, 40, 60)), want, atol=1e-4)
    ds = tf.data.Dataset.from_tensors((boxes, tf.constant(40), tf.constant(60)))
    got = next(iter(ds.map(lambda b, h, w: outer_boxes(b, h, w)))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.any(want[:, 2] == 60) and np.any(want[:, 3] == 40)  # both clips are exercised


def test_jitter_statistics_match_sigma() -> None:
    sigma, n = 0.1, 20000
    box = np.array([900.0, 800.0, 1000.0, 1000.0], np.float32)  # w 100, h 200, far from the image edges
    boxes = np.tile(box, (n, 1))
    out = jitter_boxes_tf(boxes, sigma, tf.constant([7, 11], tf.int64), 2000.0, 2000.0).numpy()
    wh = box[2:] - box[:2]
    shift = (out[:, :2] + out[:, 2:]) / 2.0 - (box[:2] + box[2:]) / 2.0
    log_scale = np.log((out[:, 2:] - out[:, :2]) / wh)
    tol_mean = 4.0 * sigma * wh / np.sqrt(n)
    assert np.all(np.abs(shift.mean(0)) < tol_mean)
    np.testing.assert_allclose(shift.std(0), sigma * wh, rtol=0.05)
    assert np.all(np.abs(log_scale.mean(0)) < 4.0 * sigma / np.sqrt(n))
    np.testing.assert_allclose(log_scale.std(0), sigma, rtol=0.05)


def test_jitter_is_seeded_and_clipped() -> None:
    boxes = np.array([[0.0, 0.0, 3.0, 2.0], [60.0, 30.0, 64.0, 32.0], [10.0, 10.0, 30.0, 20.0]], np.float32)
    a = jitter_boxes_tf(boxes, 0.5, tf.constant([1, 2]), 32.0, 64.0).numpy()
    b = jitter_boxes_tf(boxes, 0.5, tf.constant([1, 2]), 32.0, 64.0).numpy()
    c = jitter_boxes_tf(boxes, 0.5, tf.constant([3, 4]), 32.0, 64.0).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for out in (a, c):
        assert np.all(out[:, [0, 2]] >= 0) and np.all(out[:, [0, 2]] <= 64.0)
        assert np.all(out[:, [1, 3]] >= 0) and np.all(out[:, [1, 3]] <= 32.0)
        assert np.all(out[:, 2:] - out[:, :2] >= 1.0 - 1e-5)
    # sigma 0 leaves in-image boxes unchanged.
    np.testing.assert_array_equal(jitter_boxes_tf(boxes, 0.0, tf.constant([1, 2]), 32.0, 64.0).numpy(), boxes)


def test_cut_boxes_only_shrink_a_fraction_of_boxes_by_at_most_the_cut() -> None:
    n, prob, cut = 20000, 0.5, 0.15
    box = np.array([100.0, 200.0, 300.0, 600.0], np.float32)  # w 200, h 400
    out = cut_boxes_tf(np.tile(box, (n, 1)), prob, cut, tf.constant([5, 9], tf.int64)).numpy()
    wh = np.tile(box[2:] - box[:2], 2)
    inward = np.concatenate([out[:, :2] - box[:2], box[2:] - out[:, 2:]], axis=1) / wh  # per edge, >= 0
    assert inward.min() >= -1e-6 and inward.max() <= cut + 1e-6  # never grows, never more than the cut
    changed = np.any(inward > 1e-6, axis=1)
    assert abs(changed.mean() - prob) < 0.02  # about `prob` of the boxes are cut ...
    assert np.mean(inward[changed] > 0) > 0.99  # ... on every edge
    np.testing.assert_allclose(inward[changed].mean(0), cut / 2, rtol=0.05)  # U(0, cut) per edge
    # edges move independently: the cut box is not centred on the original
    centre_shift = (out[changed, :2] + out[changed, 2:]) / 2 - (box[:2] + box[2:]) / 2
    assert centre_shift.std(0).min() > 1.0
    seeded = [cut_boxes_tf(np.tile(box, (50, 1)), prob, cut, tf.constant(s)).numpy() for s in ([5, 9], [5, 9], [6, 9])]
    np.testing.assert_array_equal(seeded[0], seeded[1])
    assert not np.array_equal(seeded[0], seeded[2])
    np.testing.assert_array_equal(cut_boxes_tf(box[None], 0.0, cut, tf.constant([1, 2])).numpy(), box[None])
    with pytest.raises(ValueError, match="box_cut_max"):
        cut_boxes_tf(box[None], 0.5, 0.5, tf.constant([1, 2]))


def test_bad_crop_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="crop size"):
        crop_masks_to_boxes(np.zeros((1, 4, 4)), np.zeros((1, 4)), 0)
