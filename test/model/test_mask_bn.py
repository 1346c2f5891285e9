"""Padded instance slots stay out of the mask heads' batch-norm statistics (issue 12 item 5)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from shapemask_ros.model.shapemask import build_model
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _bn_layers(model):
    return model.coarse_head.stack.norms + model.fine_head.stack.norms


def _stats(model):
    return [np.concatenate([n.moving_mean.numpy(), n.moving_variance.numpy()]) for n in _bn_layers(model)]


def _reset(model, saved):
    for v, value in zip(model.variables, saved, strict=True):
        v.assign(value)


def _batch(num_pad: int):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    real = np.array([[[4, 6, 30, 40], [20, 18, 60, 50]], [[10, 10, 50, 30], [0, 30, 24, 62]]], np.float32)
    boxes = np.concatenate([real, np.zeros((2, num_pad, 4), np.float32)], 1)
    valid = np.concatenate([np.ones((2, 2), np.float32), np.zeros((2, num_pad), np.float32)], 1)
    classes = np.zeros((2, 2 + num_pad), np.int32)
    return {"image": img, "mask_boxes": boxes, "mask_classes": classes, "mask_valid": valid}


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(5)
    return build_model(tiny_model_config(num_convs=2))


def test_bn_statistics_and_real_slot_outputs_do_not_change_when_padded_slots_are_added(model):
    saved = [v.numpy() for v in model.variables]
    initial = _stats(model)
    results = []
    for num_pad in (0, 6):
        _reset(model, saved)
        out = model(_batch(num_pad), training=True)
        results.append((_stats(model), out["coarse_logits"].numpy()[:, :2], out["fine_logits"].numpy()[:, :2]))
    _reset(model, saved)
    (s0, c0, f0), (s6, c6, f6) = results
    # compare the updates of the moving statistics (small: momentum 0.99 and N(0, 0.01) conv kernels)
    d0 = [a - b for a, b in zip(s0, initial, strict=True)]
    d6 = [a - b for a, b in zip(s6, initial, strict=True)]
    scale = max(float(np.abs(d).max()) for d in d0)
    assert scale > 0  # the step moved them
    for a, b in zip(d0, d6, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(c0, c6, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(f0, f6, rtol=1e-4, atol=1e-4)
    # without the slot mask (the old behaviour) the six padded slots do shift the statistics
    batch = _batch(6)
    del batch["mask_valid"]
    model(batch, training=True)
    dn = [a - b for a, b in zip(_stats(model), initial, strict=True)]
    assert max(float(np.abs(a - b).max()) for a, b in zip(d0, dn, strict=True)) > 0.05 * scale
    _reset(model, saved)


def test_a_batch_without_valid_slots_uses_all_slots_and_inference_ignores_the_mask(model):
    saved = [v.numpy() for v in model.variables]
    batch = _batch(2)
    batch["mask_valid"] = np.zeros_like(batch["mask_valid"])
    model(batch, training=True)
    all_invalid = _stats(model)
    _reset(model, saved)
    del batch["mask_valid"]
    model(batch, training=True)
    for a, b in zip(all_invalid, _stats(model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert np.all(np.isfinite(a))
    _reset(model, saved)
    # inference: moving statistics, the mask changes nothing
    with_mask = model(_batch(3), training=False)
    b = _batch(3)
    del b["mask_valid"]
    without = model(b, training=False)
    np.testing.assert_array_equal(with_mask["fine_logits"].numpy(), without["fine_logits"].numpy())
