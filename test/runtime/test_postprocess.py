"""Mask pasting follows the sampling convention and lands masks on the right pixels."""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.ops.box_ops import scale_boxes
from shapemask_ros.ops.sampling import bilinear_sample, box_prior_in_outer
from shapemask_ros.runtime.postprocess import mask_scores, paste_masks, paste_probabilities, paste_regions


def _foreground_box(crop: np.ndarray, region: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(crop)
    x, y = int(region[0]), int(region[1])
    return x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1


@pytest.mark.parametrize("m", [32, 128])
@pytest.mark.parametrize(
    "tight",
    [
        [40, 30, 50, 45],
        [20.3, 35.7, 61.2, 52.9],
        [100, 100, 300, 250],
        [60, 40, 61.5, 44],
        [150, 60, 450, 360],
    ],
)
def test_box_shaped_probability_pastes_to_the_tight_box(tight, m):
    """A map that is 1 on the central 1/1.25 of the outer box must paste to exactly the tight box (+-1 px)."""
    tight = np.array(tight, np.float64)
    outer = scale_boxes(tight, 1.25)
    prob = box_prior_in_outer(tight, outer, m)[None]
    crops, regions = paste_masks(prob, outer[None], (400, 500))
    x, y, w, h = regions[0]
    assert (x, y) == (np.floor(outer[0]), np.floor(outer[1]))
    assert (x + w, y + h) == (np.ceil(outer[2]), np.ceil(outer[3]))
    assert crops[0].shape == (h, w) and crops[0].dtype == np.uint8
    got = np.array(_foreground_box(crops[0], regions[0]), np.float64)
    # 128 x 128 (the model's fine mask): +-1 px. A coarse 32 x 32 map can only place an edge to within
    # half a bin, so it gets that much more.
    bin_px = max(outer[2] - outer[0], outer[3] - outer[1]) / m
    np.testing.assert_allclose(got, tight, atol=1.0 if m == 128 else 1.0 + 0.5 * bin_px)


def test_paste_matches_the_reference_sampler():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 16, 16)).astype(np.float32)
    outer = np.array([[3.2, 4.9, 40.7, 30.1], [-10.5, 5.0, 20.0, 17.5], [50.0, 2.0, 70.0, 80.0]])
    probs, regions = paste_probabilities(masks, outer, (60, 64))
    for prob, mask, box, (x, y, w, h) in zip(probs, masks, outer, regions, strict=True):
        # pixel centres of the region, expressed in the map's bin units (stride 1 after this rescale)
        xs = (x + np.arange(w) + 0.5 - box[0]) * 16 / (box[2] - box[0])
        ys = (y + np.arange(h) + 0.5 - box[1]) * 16 / (box[3] - box[1])
        # measured 1e-6; OpenCV builds placing samples to 1/32 bin stay < 0.035; a half-pixel slip: 0.37
        np.testing.assert_allclose(prob, bilinear_sample(mask, xs, ys), atol=0.035)


def test_regions_are_clipped_at_the_image_border():
    outer = np.array([[-12.4, -3.0, 20.2, 10.5], [90.5, 40.2, 130.0, 75.0], [200, 200, 220, 220]])
    masks = np.ones((3, 8, 8), np.float32)
    crops, regions = paste_masks(masks, outer, (60, 100))
    assert regions.tolist() == [[0, 0, 21, 11], [90, 40, 10, 20], [100, 60, 0, 0]]
    assert [c.shape for c in crops] == [(11, 21), (20, 10), (0, 0)]
    assert crops[0].all() and crops[1].all()


def test_clipped_mask_keeps_its_position():
    """The part of a mask left after clipping must be the same pixels as without clipping."""
    tight = np.array([-20.0, 10.0, 30.0, 50.0])
    outer = scale_boxes(tight, 1.25)
    prob = box_prior_in_outer(tight, outer, 64)[None]
    crops, regions = paste_masks(prob, outer[None], (100, 100))
    assert regions[0][0] == 0
    x1, y1, x2, y2 = _foreground_box(crops[0], regions[0])
    assert x1 == 0 and abs(x2 - 30) <= 1 and abs(y1 - 10) <= 1 and abs(y2 - 50) <= 1


def test_degenerate_outer_boxes_give_empty_masks():
    outer = np.array([[5, 5, 5, 9], [np.nan, 0, 4, 4], [7, 8, 3, 9]], np.float64)
    crops, regions = paste_masks(np.ones((3, 4, 4), np.float32), outer, (20, 20))
    assert all(c.size == 0 for c in crops)
    assert (regions[:, 2:] == 0).all()


def test_threshold_is_applied():
    masks = np.full((1, 4, 4), 0.6, np.float32)
    box = np.array([[0, 0, 8, 8]], np.float64)
    assert paste_masks(masks, box, (8, 8), threshold=0.5)[0][0].all()
    assert not paste_masks(masks, box, (8, 8), threshold=0.7)[0][0].any()


def test_paste_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="outer boxes"):
        paste_masks(np.zeros((2, 4, 4)), np.zeros((3, 4)), (8, 8))
    with pytest.raises(ValueError, match=r"\[N, M, M\]"):
        paste_masks(np.zeros((2, 4, 5)), np.zeros((2, 4)), (8, 8))


def test_mask_scores():
    masks = np.zeros((3, 2, 2), np.float32)
    masks[0] = [[0.9, 0.7], [0.1, 0.2]]  # foreground 0.9, 0.7 -> 0.8
    masks[1] = [[0.4, 0.3], [0.1, 0.2]]  # no foreground -> 0
    masks[2] = 1.0
    np.testing.assert_allclose(mask_scores(masks, 0.5), [0.8, 0.0, 1.0], atol=1e-6)
    assert mask_scores(np.zeros((0, 4, 4)), 0.5).shape == (0,)
    assert paste_regions(np.zeros((0, 4)), (5, 5)).shape == (0, 4)
