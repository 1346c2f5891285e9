"""Mask losses use the reference normalisation (tensorflow/tpu ShapemaskLoss / ShapemaskMseLoss)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from shapemask_training.losses import mask_losses
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _sigmoid_ce(logits, labels):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def _hand_batch():
    """Two images x three slots: a disc, a square, and one padded / unsupervised slot per image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    disc = (((yy - 15.5) / 10.0) ** 2 + ((xx - 15.5) / 10.0) ** 2 <= 1).astype(np.float32)
    square = ((np.abs(yy - 15.5) < 12) & (np.abs(xx - 15.5) < 12)).astype(np.float32)
    other = np.ones((32, 32), np.float32)  # a real but unsupervised instance: must not count anywhere
    t32 = np.stack([np.stack([disc, square, np.zeros_like(disc)]), np.stack([square, disc, other])])
    t128 = np.repeat(np.repeat(t32, 4, axis=2), 4, axis=3)
    valid = np.array([[1, 1, 0], [1, 1, 0]], np.float32)
    outputs = {
        "prior": rng.uniform(0, 1, (2, 3, 32, 32)).astype(np.float32),
        "coarse_logits": rng.normal(0, 2, (2, 3, 32, 32)).astype(np.float32),
        "fine_logits": rng.normal(0, 2, (2, 3, 128, 128)).astype(np.float32),
    }
    batch = {"mask_targets": t32, "fine_mask_targets": t128, "mask_valid": valid}
    return outputs, batch


def test_mask_losses_equal_the_reference_formula_on_a_hand_made_target():
    outputs, batch = _hand_batch()
    cfg = tiny_model_config()
    prior, coarse, fine = (float(x) for x in mask_losses(outputs, batch, cfg))
    v = batch["mask_valid"][:, :, None, None].astype(np.float64)
    t32, t128 = batch["mask_targets"] * v, batch["fine_mask_targets"] * v
    # official: sum over valid pixels / number of foreground target pixels; MSE with a factor 1/2
    want_prior = 0.5 * np.sum(((outputs["prior"] - t32) * v) ** 2) / t32.sum()
    want_coarse = np.sum(_sigmoid_ce(outputs["coarse_logits"].astype(np.float64), t32) * v) / t32.sum()
    want_fine = np.sum(_sigmoid_ce(outputs["fine_logits"].astype(np.float64), t128) * v) / t128.sum()
    m = cfg.mask
    assert prior == pytest.approx(m.prior_loss_weight * want_prior, rel=1e-5)
    assert coarse == pytest.approx(m.coarse_loss_weight * want_coarse, rel=1e-5)
    assert fine == pytest.approx(m.fine_loss_weight * want_fine, rel=1e-5)
    # the old per-pixel, per-instance mean is a different (smaller) number: 1/foreground fraction apart
    old_coarse = np.sum(_sigmoid_ce(outputs["coarse_logits"], t32).mean(axis=(2, 3)) * v[..., 0, 0]) / 4
    assert coarse > 1.3 * old_coarse


def test_mean_normalisation_ablation_is_the_per_instance_pixel_mean():
    """The 'mean' switch (only for measuring what the fix moved) reproduces the pre-fix formula."""
    import dataclasses

    outputs, batch = _hand_batch()
    cfg = tiny_model_config()
    cfg = dataclasses.replace(cfg, mask=dataclasses.replace(cfg.mask, loss_normalisation="mean"))
    prior, coarse, fine = (float(x) for x in mask_losses(outputs, batch, cfg))
    v = batch["mask_valid"].astype(np.float64)
    t32, t128 = batch["mask_targets"], batch["fine_mask_targets"]

    def per_instance(x):
        return np.sum(x.mean(axis=(2, 3)) * v) / v.sum()

    m = cfg.mask
    assert prior == pytest.approx(m.prior_loss_weight * per_instance((outputs["prior"] - t32) ** 2), rel=1e-5)
    want_coarse = per_instance(_sigmoid_ce(outputs["coarse_logits"].astype(np.float64), t32))
    assert coarse == pytest.approx(m.coarse_loss_weight * want_coarse, rel=1e-5)
    want_fine = per_instance(_sigmoid_ce(outputs["fine_logits"].astype(np.float64), t128))
    assert fine == pytest.approx(m.fine_loss_weight * want_fine, rel=1e-5)
    bad = dataclasses.replace(cfg, mask=dataclasses.replace(cfg.mask, loss_normalisation="median"))
    with pytest.raises(ValueError, match="loss_normalisation"):
        mask_losses(outputs, batch, bad)


def test_mask_losses_ignore_invalid_slots_and_survive_an_empty_batch():
    outputs, batch = _hand_batch()
    cfg = tiny_model_config()
    base = [float(x) for x in mask_losses(outputs, batch, cfg)]
    changed = {k: v.copy() for k, v in outputs.items()}
    for k in changed:
        changed[k][:, 2] = 123.0  # whatever the heads say for the invalid slots
    assert [float(x) for x in mask_losses(changed, batch, cfg)] == pytest.approx(base, rel=1e-6)
    empty = dict(batch, mask_valid=np.zeros((2, 3), np.float32))
    assert all(float(x) == 0.0 for x in mask_losses(outputs, empty, cfg))
    assert all(np.isfinite(float(x)) for x in mask_losses(outputs, empty, cfg))


def test_mask_loss_gradient_flows_only_through_valid_slots():
    outputs, batch = _hand_batch()
    logits = tf.Variable(outputs["coarse_logits"])
    with tf.GradientTape() as tape:
        _, coarse, _ = mask_losses(dict(outputs, coarse_logits=logits), batch, tiny_model_config())
    g = tape.gradient(coarse, logits).numpy()
    assert np.all(g[:, 2] == 0) and np.abs(g[:, :2]).sum() > 0
