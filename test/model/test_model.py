"""Model tests: head shapes in both modes, gather crop vs references, priors, anchors, NMS."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from shapemask_ros.config.model_config import AnchorConfig, PostprocessConfig
from shapemask_ros.model.anchors import decode_boxes, encode_boxes, generate_anchors, level_shapes
from shapemask_ros.model.postprocess import detect_single
from shapemask_ros.model.roi_sampling import (
    assign_levels,
    box_prior,
    multilevel_crop,
    outer_boxes,
    resample_box_frame,
)
from shapemask_ros.model.shapemask import build_model
from shapemask_ros.ops.sampling import bilinear_sample, box_prior_in_outer, crop_and_sample, grid_points
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


@pytest.fixture(scope="module")
def agnostic_model():
    return build_model(tiny_model_config())


def _inputs(s, n, rng):
    img = rng.uniform(0, 255, (2, s, s, 3)).astype(np.float32)
    xy = rng.uniform(0, s * 0.6, (2, n, 2))
    wh = rng.uniform(4, s * 0.4, (2, n, 2))
    return img, np.concatenate([xy, xy + wh], -1).astype(np.float32)


@pytest.mark.parametrize("agnostic", [True, False])
def test_training_outputs_have_expected_shapes(agnostic):
    cfg = tiny_model_config(agnostic=agnostic)
    model = build_model(cfg)
    rng = np.random.default_rng(0)
    img, boxes = _inputs(64, 5, rng)
    out = model({"image": img, "mask_boxes": boxes, "mask_classes": np.ones((2, 5), np.int32)}, training=True)
    num_anchors = generate_anchors(64, cfg.anchors).shape[0]
    assert out["cls_outputs"].shape == (2, num_anchors, 3)
    assert out["box_outputs"].shape == (2, num_anchors, 4)
    assert out["prior"].shape == (2, 5, 32, 32)
    assert out["coarse_logits"].shape == (2, 5, 32, 32)
    assert out["fine_logits"].shape == (2, 5, 128, 128)
    assert out["outer_boxes"].shape == (2, 5, 4)
    assert model.prior_head.priors.shape == ((1 if agnostic else 3), 4, 32, 32)
    assert not model.prior_head.priors.trainable


def test_segment_boxes_mode_shapes_and_outer_boxes(agnostic_model):
    rng = np.random.default_rng(1)
    img, boxes = _inputs(64, 7, rng)
    fn = tf.function(agnostic_model.segment_boxes)
    out = fn(img[:1], boxes[:1], np.zeros((1, 7), np.int32))
    masks = out["masks"].numpy()
    assert masks.shape == (1, 7, 128, 128)
    assert masks.min() >= 0 and masks.max() <= 1
    np.testing.assert_allclose(out["outer_boxes"].numpy()[0], np.asarray(outer_boxes(boxes[0], 64, 64)), atol=1e-4)


def test_detect_and_segment_mode_shapes():
    # an untrained head scores every anchor ~0.01 (its prior-probability bias): threshold 0 keeps them, so
    # the outputs hold real detections (NMS leaves fewer than max_detections) and the batch-1 cut is tested
    cfg = tiny_model_config()
    cfg.postprocess.score_threshold, cfg.postprocess.max_detections = 0.0, 100
    model = build_model(cfg)
    img = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    out = tf.function(model.detect_and_segment)(img)
    n = int(out["num_detections"][0])
    assert 0 < n < 100
    assert out["boxes"].shape == (1, n, 4) and out["scores"].shape == (1, n)
    assert out["masks"].shape == (1, n, 128, 128) and out["classes"].dtype == tf.int32
    assert out["outer_boxes"].shape == (1, n, 4)
    masks, scores = out["masks"].numpy(), out["scores"].numpy()
    assert np.all((masks >= 0) & (masks <= 1)) and np.all(scores > 0)


def test_gather_crop_matches_numpy_reference_and_crop_and_resize():
    rng = np.random.default_rng(3)
    feats = {
        3: rng.normal(size=(2, 16, 16, 5)).astype(np.float32),
        4: rng.normal(size=(2, 8, 8, 5)).astype(np.float32),
    }
    boxes = np.array([[[3, 5, 60, 50], [10, 10, 30, 20]], [[0, 0, 128, 128], [64.3, 12.7, 100.1, 99.9]]], np.float32)
    levels = np.array([[3, 4], [4, 3]], np.int32)
    tensors = {k: ops.convert_to_tensor(v) for k, v in feats.items()}
    centres = {3: 0.5, 4: 15.5}  # cell 0 of each level (the backbone's; see test_feature_alignment.py)
    got = multilevel_crop(tensors, boxes, levels, 7, centres).numpy()
    default = multilevel_crop(tensors, boxes, levels, 7).numpy()  # default: cell i centred at s * (i + 0.5)
    for b in range(2):
        for i in range(2):
            lvl = levels[b, i]
            ref = crop_and_sample(feats[lvl][b], boxes[b, i], 7, stride=2.0**lvl, centre=centres[lvl])
            np.testing.assert_allclose(got[b, i], ref, atol=1e-5)
            ref = crop_and_sample(feats[lvl][b], boxes[b, i], 7, stride=2.0**lvl)
            np.testing.assert_allclose(default[b, i], ref, atol=1e-5)
    # tf.image.crop_and_resize samples endpoints of a normalised box: map the bin-centre grid onto it
    b, i, lvl = 0, 0, 3
    stride, n, h = 8.0, 7, 16
    x1, y1, x2, y2 = boxes[b, i]
    fy = [(y1 + (k + 0.5) * (y2 - y1) / n - centres[lvl]) / stride for k in (0, n - 1)]
    fx = [(x1 + (k + 0.5) * (x2 - x1) / n - centres[lvl]) / stride for k in (0, n - 1)]
    norm = np.array([[fy[0] / (h - 1), fx[0] / (h - 1), fy[1] / (h - 1), fx[1] / (h - 1)]], np.float32)
    ref = tf.image.crop_and_resize(feats[lvl][b : b + 1], norm, [0], (n, n)).numpy()[0]
    np.testing.assert_allclose(got[b, i], ref, atol=1e-5)


def test_outer_boxes_and_levels():
    boxes = np.array([[10, 10, 30, 50], [0, 0, 600, 600], [-5, 60, 20, 70]], np.float32)
    want = [[7.5, 5.0, 32.5, 55.0], [0, 0, 640, 640], [0, 58.75, 23.125, 71.25]]  # scaled 1.25 about the centre
    np.testing.assert_allclose(np.asarray(outer_boxes(boxes, 640.0, 640.0)), want, atol=1e-5)
    lv = assign_levels(
        np.array([[0, 0, 10, 10], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 5000, 5000]], np.float32), 3, 7
    ).numpy()
    assert lv.tolist() == [3, 4, 5, 7]


def test_box_prior_and_resampling_between_frames():
    rng = np.random.default_rng(4)
    box = np.array([[20.0, 30.0, 60.0, 50.0]], np.float32)
    outer = np.asarray(outer_boxes(box, 100, 100))
    u = box_prior(box, outer, 32).numpy()[0]
    np.testing.assert_array_equal(u, box_prior_in_outer(box[0], outer[0], 32))
    # an all-ones map on the tight box, warped to the outer frame, is the box prior (up to edge bins)
    ones = resample_box_frame(np.ones((1, 32, 32), np.float32), box, outer, 32).numpy()[0]
    assert np.abs(ones - u).sum() <= 4 * 32 * 0.5 + 1e-3  # only border bins are fractional
    assert ones[16, 16] == pytest.approx(1.0) and ones[0, 0] == pytest.approx(0.0)
    # a random map is reproduced at the box's own bin centres when inner == outer
    m = rng.uniform(size=(1, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(resample_box_frame(m, box, box, 32).numpy(), m, atol=1e-5)


def _resample_reference(maps, inner, outer, n):
    """resample_box_frame in NumPy: the zero-bordered inner map sampled at the outer grid's bin centres
    with ops.sampling's bilinear convention (continuous index, clamped borders)."""
    out = np.zeros((len(maps), n, n))
    for i, (mp, ib, ob) in enumerate(zip(maps, inner, outer, strict=True)):
        xs, ys = grid_points(ob, n)
        fx = (xs - ib[0]) / (ib[2] - ib[0]) * n - 0.5 + 1.0  # +1: the zero border
        fy = (ys - ib[1]) / (ib[3] - ib[1]) * n - 0.5 + 1.0
        out[i] = bilinear_sample(np.pad(mp, 1), fx, fy, stride=1.0, centre=0.0)
    return out


def test_resample_box_frame_matches_the_numpy_reference():
    rng = np.random.default_rng(11)
    n, m = 16, 6
    maps = rng.uniform(size=(m, n, n)).astype(np.float32)
    xy = rng.uniform(0, 80, (m, 2))
    inner = np.concatenate([xy, xy + rng.uniform(5, 60, (m, 2))], 1).astype(np.float32)  # not square
    outer = np.asarray(outer_boxes(inner, 120.0, 120.0)).copy()
    outer[0] = [inner[0, 0] - 30, inner[0, 1] + 2, inner[0, 2] + 5, inner[0, 3] + 40]  # reads the zero border
    outer[1] = inner[1] + [3, 1, -2, -4]  # inside the inner box
    got = resample_box_frame(maps, inner, outer, n).numpy()
    np.testing.assert_allclose(got, _resample_reference(maps, inner, outer, n), atol=1e-5)
    assert np.abs(got[0]).min() == 0.0 and got[0].max() > 0.5


def test_mask_head_reductions_match_numpy():
    """The prior head (one prior set: a [M, K] @ [K, n*n] MatMul; several: the one-hot selection) and the
    masked sums (batched MatMuls) compute what the paper's formulas say."""
    from shapemask_ros.model.mask_heads import ShapePriorHead, _select_class, masked_sum

    rng = np.random.default_rng(12)
    m, n, c, k = 5, 8, 3, 4
    x = rng.normal(size=(m, n, n, c)).astype(np.float32)
    w = (rng.uniform(size=(m, n, n)) > 0.5).astype(np.float32)
    np.testing.assert_allclose(masked_sum(x, w).numpy(), np.einsum("mhwc,mhw->mc", x, w), atol=1e-5)
    sel = rng.integers(0, 2, m)
    np.testing.assert_allclose(
        _select_class(x[..., :2], np.eye(2, dtype=np.float32)[sel]).numpy(), x[np.arange(m), ..., sel], atol=0
    )
    one = _select_class(ops.convert_to_tensor(x[..., :1]), np.ones((m, 1), np.float32))
    np.testing.assert_array_equal(ops.convert_to_numpy(one), x[..., 0])
    xy = rng.uniform(0, 40, (m, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 30, (m, 2))], 1).astype(np.float32)
    for classes in (1, 2):
        head = ShapePriorHead(classes, k, n)
        head.build(None)
        priors = rng.uniform(size=(classes, k, n, n)).astype(np.float32)
        head.priors.assign(priors)
        onehot = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, m)]
        s, u = head(x, boxes, boxes, onehot)  # outer == inner: S is the weighted prior at its own bins
        emb = np.einsum("mhwc,mhw->mc", x, u.numpy()) / (n * n)
        logits = (emb @ head.classifier.kernel.numpy() + head.classifier.bias.numpy()).reshape(m, classes, k)
        logits = logits[np.arange(m), onehot.argmax(1)]
        wts = np.exp(logits - logits.max(1, keepdims=True))
        wts /= wts.sum(1, keepdims=True)
        want = np.einsum("mk,mkhw->mhw", wts, priors[onehot.argmax(1)])
        np.testing.assert_allclose(s.numpy(), want, atol=1e-5)


def test_set_priors_validates_and_changes_the_prior_output():
    cfg = tiny_model_config()
    model = build_model(cfg)
    with pytest.raises(ValueError, match="shape"):
        model.set_priors(np.ones((2, 4, 32, 32)))
    with pytest.raises(ValueError, match="non-finite"):
        model.set_priors(np.full((1, 4, 32, 32), np.nan))
    rng = np.random.default_rng(5)
    img, boxes = _inputs(64, 3, rng)
    inp = {"image": img, "mask_boxes": boxes, "mask_classes": np.zeros((2, 3), np.int32)}
    before = model(inp)["prior"].numpy()
    model.set_priors(np.zeros((1, 4, 32, 32), np.float32))
    assert np.allclose(model(inp)["prior"].numpy(), 0.0) and before.max() > 0.5


def test_ablation_without_shape_prior_uses_the_box_prior():
    cfg = tiny_model_config(use_shape_prior=False, use_instance_embedding=False)
    model = build_model(cfg)
    rng = np.random.default_rng(6)
    img, boxes = _inputs(64, 2, rng)
    out = model({"image": img, "mask_boxes": boxes, "mask_classes": np.zeros((2, 2), np.int32)})
    expect = box_prior(boxes.reshape(-1, 4), out["outer_boxes"].numpy().reshape(-1, 4), 32).numpy()
    np.testing.assert_array_equal(out["prior"].numpy().reshape(-1, 32, 32), expect)


def test_anchor_layout_and_box_coder_round_trip():
    cfg = AnchorConfig()
    anchors = generate_anchors(640, cfg)
    shapes = level_shapes(640, cfg)
    assert anchors.shape[0] == 9 * sum(h * w for h, w in shapes.values())
    # first anchor: level 3, centre (4, 4), size 4*8 = 32
    np.testing.assert_allclose(anchors[0], [-12, -12, 20, 20], atol=1e-4)
    rng = np.random.default_rng(7)
    boxes = np.concatenate([rng.uniform(0, 300, (50, 2)), rng.uniform(310, 600, (50, 2))], -1).astype(np.float32)
    enc = encode_boxes(boxes, anchors[:50])
    np.testing.assert_allclose(decode_boxes(enc, anchors[:50]).numpy(), boxes, atol=1e-2)


def test_nms_is_per_class_and_respects_thresholds():
    anchors = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32)
    logits = np.full((4, 2), -10.0, np.float32)
    logits[0, 0], logits[1, 0] = 3.0, 2.0  # overlapping, same class -> one survives
    logits[3, 1] = 1.0  # same place, other class -> kept
    logits[2, 0] = -3.5  # score 0.029 < 0.05 -> dropped
    cfg = PostprocessConfig(pre_nms_top_k=4, nms_iou=0.5, score_threshold=0.05, max_detections=5)
    boxes, scores, classes, num = detect_single(logits, np.zeros((4, 4), np.float32), anchors, cfg, 64)
    assert int(num) == 2
    np.testing.assert_allclose(boxes.numpy()[:2], anchors[[0, 3]], atol=1e-4)
    assert classes.numpy()[:2].tolist() == [0, 1]
    assert scores.numpy()[0] == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)
    assert scores.shape == (5,)


def test_depth_to_space_upsampling_equals_a_transposed_conv_with_kernel_equal_stride():
    import keras

    from shapemask_ros.model.mask_heads import depth_to_space

    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 5, 6, 4)).astype(np.float32)
    deconv = keras.layers.Conv2DTranspose(7, 4, strides=4, use_bias=False)
    ref = deconv(x).numpy()
    k = deconv.kernel.numpy()  # [kh, kw, out, in]
    w = np.transpose(k, (3, 0, 1, 2)).reshape(4, 4 * 4 * 7)  # in -> (dy, dx, out)
    got = depth_to_space(ops.convert_to_tensor(np.einsum("mhwi,io->mhwo", x, w)), 4).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_fine_head_upsampling_is_linear_into_the_logits():
    """Reference/paper: transposed conv x4 then the 1x1 logits conv; no BN or ReLU in between."""
    from shapemask_ros.model.mask_heads import depth_to_space

    model = build_model(tiny_model_config())
    head = model.fine_head
    rng = np.random.default_rng(12)
    feats = ops.convert_to_tensor(rng.normal(size=(3, 32, 32, 8)).astype(np.float32))
    # make the upsampling weights large and asymmetric so a hidden ReLU or normalisation would show
    head.up.kernel.assign(rng.normal(0, 3, size=head.up.kernel.shape).astype(np.float32))
    head.predict.kernel.assign(rng.normal(0, 1, size=head.predict.kernel.shape).astype(np.float32))
    coarse = ops.convert_to_tensor(rng.normal(size=(3, 32, 32)).astype(np.float32))
    onehot = np.ones((3, 1), np.float32)
    for training in (False, True):
        got = head(feats, coarse, onehot, training=training).numpy()
        # the same computation by hand after the conv stack
        p = ops.sigmoid(coarse)
        m = ops.cast(p > 0.5, "float32")[..., None]
        emb = ops.sum(feats * m, axis=(1, 2)) / (ops.sum(m, axis=(1, 2)) + 1e-6)
        x = feats - emb[:, None, None, :] + head.embed_coarse(p[..., None])
        x = head.stack(x, training=training).numpy()
        up = depth_to_space(ops.convert_to_tensor(np.einsum("mhwi,io->mhwo", x, head.up.kernel.numpy()[0, 0])), 4)
        w, b = head.predict.kernel.numpy()[0, 0], head.predict.bias.numpy()
        want = np.einsum("mhwi,io->mhwo", up.numpy(), w)[..., 0] + b[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_mask_heads_use_the_reference_initialisers():
    import keras

    keras.utils.set_random_seed(14)
    model = build_model(tiny_model_config(channels=64, num_priors=16))  # enough values for a stable std
    p0 = 0.01
    for head in (model.coarse_head, model.fine_head):
        np.testing.assert_allclose(head.predict.bias.numpy(), -np.log((1 - p0) / p0), rtol=1e-6)
        assert abs(float(np.std(head.predict.kernel.numpy())) - 0.01) < 0.003
        for conv in head.stack.convs:
            assert abs(float(np.std(conv.kernel.numpy())) - 0.01) < 0.001
    assert abs(float(np.std(model.prior_head.classifier.kernel.numpy())) - 0.01) < 0.001
    # so an untrained model predicts foreground with probability ~0.01 everywhere
    rng = np.random.default_rng(13)
    img, boxes = _inputs(64, 3, rng)
    out = model({"image": img, "mask_boxes": boxes, "mask_classes": np.zeros((2, 3), np.int32)})
    for key in ("coarse_logits", "fine_logits"):
        prob = 1 / (1 + np.exp(-out[key].numpy()))
        assert abs(float(prob.mean()) - p0) < 0.003, key


def test_fpn_upsampling_is_nearest_neighbour_2x():
    import keras

    from shapemask_ros.model.fpn import upsample2x

    x = np.random.default_rng(13).normal(size=(2, 3, 5, 4)).astype(np.float32)
    want = keras.layers.UpSampling2D(2, interpolation="nearest")(x)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(upsample2x(ops.convert_to_tensor(x))), ops.convert_to_numpy(want)
    )


def test_serving_functions_take_zero_boxes(agnostic_model):
    """No instance at all (an image without detections): TensorFlow's Conv2D on an empty batch can report
    the input's channel count, which a Squeeze of the class channel rejected (the tiny studies' models)."""
    from shapemask_ros.export.bundle import serving_functions

    fns = serving_functions(agnostic_model)
    s = agnostic_model.cfg.image_size
    img = np.random.default_rng(14).uniform(0, 255, (1, s, s, 3)).astype(np.float32)
    out = fns["segment_boxes"](image=img, boxes=np.zeros((1, 0, 4), np.float32), classes=np.zeros((1, 0), np.int32))
    assert out["masks"].shape[:2] == (1, 0) and out["outer_boxes"].shape == (1, 0, 4)
