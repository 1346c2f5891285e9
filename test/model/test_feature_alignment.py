"""Feature sampling alignment (issue 12 item 3): where each backbone's feature cells really sit.

Measured, not assumed: the network is turned into a pure position sampler (every conv kernel reads only its
centre tap(s), batch norm is the identity, biases and dense layers are zero) so each output cell responds to
the input pixels at the centre of its receptive field and nowhere else. Impulse images (one lit pixel on
the diagonal per image) then show which pixels every cell reads; the midpoint of that set is the cell's
centre. Every registered backbone (FEATURE_CENTRES) is measured, and the ROI sampler is checked against the
measurement: sampling a feature map whose value is its cells' measured x-coordinate must return the sample
points' own coordinates.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from shapemask_ros.config.model_config import BackboneConfig
from shapemask_ros.model.backbone import FEATURE_CENTRES, backbone_feature_centres, build_backbone
from shapemask_ros.model.fpn import FPN, pyramid_centres
from shapemask_ros.model.roi_sampling import multilevel_crop
from shapemask_ros.ops.sampling import crop_and_sample

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)

SIZE = 64  # small: a ResNet-101 forward of 64 impulse images stays a few seconds


def _leaf_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not getattr(layer, "_layers", None) or not list(layer._flatten_layers(include_self=False)):
            yield layer


def _centre_taps(shape):
    """Boolean mask over a conv kernel's spatial dims: the centre tap (odd) or the central pair (even)."""
    mask = np.zeros(shape[:2], bool)
    mask[(shape[0] - 1) // 2 : shape[0] // 2 + 1, (shape[1] - 1) // 2 : shape[1] // 2 + 1] = True
    return mask


def make_position_sampler(model: keras.Model) -> None:
    """Overwrite weights so every layer passes positions through: centre taps, identity BN, zero biases."""
    for layer in _leaf_layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            k = np.zeros(layer.kernel.shape, np.float32)
            k[_centre_taps(k.shape)] = 1.0 / _centre_taps(k.shape).sum()
            layer.kernel.assign(k)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv1D, keras.layers.Conv3D)):
            k = np.zeros(layer.kernel.shape, np.float32)
            taps = _centre_taps(k.shape)
            k[taps] = 1.0 / (taps.sum() * k.shape[-2])
            layer.kernel.assign(k)
        elif isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
        elif isinstance(layer, keras.layers.BatchNormalization):
            for name, value in (("gamma", 1.0), ("beta", 0.0), ("moving_mean", 0.0)):
                if getattr(layer, name, None) is not None:
                    getattr(layer, name).assign(np.full(getattr(layer, name).shape, value, np.float32))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 1.0 - layer.epsilon, np.float32))
        bias = getattr(layer, "bias", None)
        if bias is not None:
            bias.assign(np.zeros(bias.shape, np.float32))


def measure_centres(outputs_of, size: int, levels) -> dict[int, float]:
    """Impulse on pixel (p, p) of image p; cell i's centre = midpoint of the pixels it responds to + 0.5.

    outputs_of: images [B, size, size, 3] -> list of [B, h, w, C] maps (one per level). Cells whose response
    set touches the image border (possibly cut off) are skipped; all interior cells must agree.
    """
    blank = np.zeros((1, size, size, 3), np.float32)
    imp = np.zeros((size, size, size, 3), np.float32)
    # large, so it survives an input normalisation ((x / 255 - mean) / std) and ReLU in front of the convs
    imp[np.arange(size), np.arange(size), np.arange(size), :] = 1000.0
    base = [np.asarray(x) for x in outputs_of(blank)]
    resp = [np.asarray(x) for x in outputs_of(imp)]
    out = {}
    for level, r, b in zip(levels, resp, base, strict=True):
        diff = np.abs(r - b).sum(-1)  # [p, h, w]
        h = diff.shape[1]
        diag = diff[:, np.arange(h), np.arange(h)]  # [p, i]
        lit = diag > 1e-6 * diag.max()
        stride = 2.0**level
        offsets = []
        for i in range(h):
            ps = np.flatnonzero(lit[:, i])
            if ps.size and ps.min() > 0 and ps.max() < size - 1:
                offsets.append((ps.min() + ps.max()) / 2.0 + 0.5 - stride * i)
        assert offsets, f"no interior cell on level {level}"
        assert max(offsets) - min(offsets) < 1e-9, (level, offsets)
        out[level] = offsets[0]
    return out


CASES = [(name, SIZE) for name in sorted(FEATURE_CENTRES)] + [("tiny", 80)]  # 80: an odd-sized C5 (5 -> 3)


@pytest.mark.parametrize(("name", "size"), CASES)
def test_registered_backbone_cell_centres_match_impulse_measurement(name, size):
    keras.utils.set_random_seed(0)
    cfg = BackboneConfig(name=name, tiny_filters=(8, 8, 8, 8), freeze_stem_and_stage1=False)
    net = build_backbone(cfg, size, with_c2=True)  # C2 too: the fine head's optional detail map
    make_position_sampler(net)
    measured = measure_centres(lambda x: net(x, training=False), size, (2, 3, 4, 5))
    table = backbone_feature_centres(name, size)
    assert measured == pytest.approx(table, abs=1e-6), (name, measured, table)
    # the old convention (cell i centred at s * (i + 0.5)) is wrong for every backbone registered so far
    assert any(abs(measured[l] - 2.0**l / 2) >= 3.5 for l in (3, 4, 5)), measured


@pytest.mark.parametrize("c5_size", [2, 3, 4, 5, 8])
def test_fpn_extra_level_centres_match_impulse_measurement(c5_size):
    """P6/P7 (3x3 stride-2 "same" convs) measured on C5 maps of even and odd sizes."""
    image_size = 32 * c5_size
    fpn = FPN(4, 3, 7)
    c3 = np.zeros((1, 4 * c5_size, 4 * c5_size, 2), np.float32)
    c4 = np.zeros((1, 2 * c5_size, 2 * c5_size, 2), np.float32)
    fpn([c3, c4, np.zeros((1, c5_size, c5_size, 2), np.float32)])
    make_position_sampler(fpn)
    for conv in fpn.lateral[:2]:  # P5..P7 only depend on C5
        conv.kernel.assign(np.zeros(conv.kernel.shape, np.float32))
    # impulses at every C5 cell; cell k of C5 is at 32 * k + c5 in the input (c5 = 0.5 here)
    n = c5_size
    imp = np.zeros((n, n, n, 2), np.float32)
    imp[np.arange(n), np.arange(n), np.arange(n)] = 1.0
    out = fpn([np.repeat(c3, n, 0), np.repeat(c4, n, 0), imp], training=False)
    want = pyramid_centres({3: 0.5, 4: 0.5, 5: 0.5}, image_size, 7)
    for level in (5, 6, 7):
        r = np.abs(np.asarray(out[level])).sum(-1)  # [k, h, w]
        for i in range(r.shape[1]):
            ks = np.flatnonzero(r[:, i, i] > 1e-6 * r.max())  # the C5 cells P_level cell (i, i) reads
            assert ks.size, (level, i)
            centre = 32.0 * (ks.min() + ks.max()) / 2.0 + 0.5
            assert centre == pytest.approx(2.0**level * i + want[level]), (level, i, ks)


@pytest.mark.parametrize("name", sorted(FEATURE_CENTRES))
def test_roi_sampler_reads_features_at_the_measured_centres(name):
    """A map whose value is its cells' x (y) coordinate, cropped by the model's sampler, returns the sample
    points' own x (y) coordinates: the crop reads exactly where it is asked to."""
    size = 256
    centres = pyramid_centres(backbone_feature_centres(name, size), size, 7)
    feats, cx, cy = {}, {}, {}
    for level in range(3, 8):
        s, h = 2.0**level, -(-size // 2**level)
        xs = s * np.arange(h) + centres[level]
        f = np.stack([np.broadcast_to(xs[None, :], (h, h)), np.broadcast_to(xs[:, None], (h, h))], -1)
        feats[level] = ops.convert_to_tensor(f[None].astype(np.float32))
        cx[level], cy[level] = xs, xs
    # boxes well inside the map on each level (no border clamping)
    boxes = np.array([[[40.0, 52.0, 104.0, 90.0], [70.0, 60.0, 180.0, 200.0], [100.0, 100.0, 140.0, 160.0]]])
    for level in (3, 4, 5):
        lv = np.full((1, 3), level, np.int32)
        got = multilevel_crop(feats, boxes.astype(np.float32), lv, 7, centres).numpy()[0]
        for i, box in enumerate(boxes[0]):
            t = (np.arange(7) + 0.5) / 7
            px, py = box[0] + t * (box[2] - box[0]), box[1] + t * (box[3] - box[1])
            inside = (px >= cx[level][0]) & (px <= cx[level][-1])
            insidey = (py >= cy[level][0]) & (py <= cy[level][-1])
            np.testing.assert_allclose(got[i][:, inside, 0], np.broadcast_to(px[inside], (7, inside.sum())), atol=1e-3)
            np.testing.assert_allclose(
                got[i][insidey, :, 1], np.broadcast_to(py[insidey, None], (insidey.sum(), 7)), atol=1e-3
            )
            # the NumPy reference agrees with the same centre
            ref = crop_and_sample(np.asarray(feats[level][0]), box, 7, 2.0**level, centres[level])
            np.testing.assert_allclose(got[i], ref, atol=1e-3)


def test_the_model_crops_with_its_backbones_centres():
    from shapemask_ros.model.shapemask import ShapeMask
    from support.configs import tiny_model_config

    cfg = tiny_model_config(image_size=64)
    model = ShapeMask(cfg)
    assert model.level_centres == pyramid_centres(backbone_feature_centres("tiny", 64), 64, 7)
    assert model.level_centres[3] == 7.5


def test_naive_alignment_ablation_crops_at_stride_halves():
    """mask.feature_alignment='naive' (the pre-fix sampling, kept to measure the fix) uses stride / 2."""
    import dataclasses

    from shapemask_ros.model.shapemask import ShapeMask
    from support.configs import tiny_model_config

    cfg = tiny_model_config(image_size=64)
    naive = ShapeMask(dataclasses.replace(cfg, mask=dataclasses.replace(cfg.mask, feature_alignment="naive")))
    assert naive.level_centres is None
    with pytest.raises(ValueError, match="feature_alignment"):
        ShapeMask(dataclasses.replace(cfg, mask=dataclasses.replace(cfg.mask, feature_alignment="centred")))


def test_unregistered_backbone_is_refused():
    with pytest.raises(ValueError, match="FEATURE_CENTRES"):
        backbone_feature_centres("no_such_net", 64)
