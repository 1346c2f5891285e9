"""`mask.detail_features`: the fine head also reads the backbone's stride-4 map (C2).

Zero-initialised, the option starts as exactly the plain fine head (same weights, same outputs); its
projection receives gradients from the fine mask only; and the cropped detail is the C2 map sampled at the
outer box (checked against the NumPy reference crop at C2's measured cell centres)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from shapemask_ros.model.backbone import backbone_feature_centres
from shapemask_ros.model.roi_sampling import multilevel_crop, outer_boxes
from shapemask_ros.model.shapemask import DETAIL_LEVEL, build_model
from shapemask_ros.ops.sampling import crop_and_sample
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _inputs(seed=0, s=64):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (1, s, s, 3)).astype(np.float32)
    boxes = np.array([[[4, 6, 30, 40], [20, 18, 60, 50], [0, 0, 64, 64]]], np.float32)
    return img, boxes, np.zeros((1, 3), np.int32)


def _models():
    keras.utils.set_random_seed(0)
    plain = build_model(tiny_model_config(num_convs=2))
    detail = build_model(tiny_model_config(num_convs=2, detail_features=True))
    by_path = {v.path: v for v in detail.weights}
    for v in plain.weights:  # same weights everywhere both models have them
        by_path[v.path].assign(v.numpy())
    return plain, detail


def test_zero_initialised_detail_features_equal_the_plain_fine_head():
    plain, detail = _models()
    assert not np.any(detail.detail_projection.kernel.numpy())
    extra = {v.path for v in detail.weights} - {v.path for v in plain.weights}
    assert extra and all("detail_projection" in p for p in extra)
    img, boxes, cls = _inputs()
    a = plain.mask_branch(plain.features(img), boxes, cls)
    b = detail.mask_branch(detail.features(img), boxes, cls)
    for key in ("prior", "coarse_logits", "fine_logits"):
        np.testing.assert_allclose(np.asarray(a[key]), np.asarray(b[key]), atol=1e-5, err_msg=key)


def test_detail_projection_learns_from_the_fine_mask_only():
    _, model = _models()
    img, boxes, cls = _inputs(1)
    feats = model.features(img)
    kernel = model.detail_projection.kernel
    with tf.GradientTape(persistent=True) as tape:
        out = model.mask_branch(feats, boxes, cls, training=True)
        fine = tf.reduce_mean(out["fine_logits"] * tf.random.stateless_normal(out["fine_logits"].shape, (1, 2)))
        coarse = tf.reduce_mean(out["coarse_logits"])
    g_fine = tape.gradient(fine, kernel)
    assert g_fine is not None and float(tf.reduce_max(tf.abs(g_fine))) > 0
    assert tape.gradient(coarse, kernel) is None  # prior and coarse heads never see C2
    # once trained (non-zero), the detail map changes the fine logits
    before = np.asarray(model.mask_branch(feats, boxes, cls)["fine_logits"])
    kernel.assign(np.random.default_rng(0).normal(0, 0.5, kernel.shape).astype(np.float32))
    after = np.asarray(model.mask_branch(feats, boxes, cls)["fine_logits"])
    assert np.abs(after - before).max() > 1e-3


def test_detail_crop_samples_c2_at_its_measured_cell_centres():
    _, model = _models()
    img, boxes, cls = _inputs(2)
    c2 = np.asarray(model.features(img)[DETAIL_LEVEL])
    assert c2.shape[1] == 64 // 4
    # identity-like projection (first input channels -> output channels), so the crop is readable
    k = np.zeros(model.detail_projection.kernel.shape, np.float32)
    for i in range(min(k.shape[2], k.shape[3])):
        k[0, 0, i, i] = 1.0
    model.detail_projection.kernel.assign(k)
    outer = outer_boxes(boxes, 64, 64, model.cfg.mask.outer_box_scale)
    proj = {DETAIL_LEVEL: model.detail_projection(c2)}
    n = model.cfg.mask.crop_size
    got = np.asarray(multilevel_crop(proj, outer, np.full((1, 3), DETAIL_LEVEL, np.int32), n, model.detail_centres))
    centre = backbone_feature_centres("tiny", 64)[DETAIL_LEVEL]
    assert model.detail_centres == {DETAIL_LEVEL: centre}
    channels = min(k.shape[2], k.shape[3])
    for j in range(3):
        want = crop_and_sample(c2[0], np.asarray(outer)[0, j], n, 4.0, centre)
        np.testing.assert_allclose(got[0, j, ..., :channels], want[..., :channels], atol=1e-4)
