"""Backbones returning (C3, C4, C5), or (C2, C3, C4, C5) for a mask branch that reads the stride-4 map too:
EfficientNet-Lite0 (ImageNet, the shipped model's) and Lite1/Lite2, Keras ResNet-50/101 (the paper's) and a tiny
ResNet for CPU tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import keras
import numpy as np
from keras import layers, ops

from shapemask_ros.config.model_config import BackboneConfig
from shapemask_ros.model.efficientnet_lite import INPUT_MEAN, INPUT_STD, LITE_VARIANTS, efficientnet_lite
from shapemask_ros.model.roi_sampling import same_padding_centres

log = logging.getLogger(__name__)

_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)

_RESNET_OUTPUTS = {
    "resnet50": ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}
_RESNET_C2 = "conv2_block3_out"


def _tiny_backbone(image_size: int, filters: tuple[int, ...], with_c2: bool = False) -> keras.Model:
    """Four strided residual stages (strides 4, 8, 16, 32); enough for synthetic shapes on a CPU."""
    inp = keras.Input((image_size, image_size, 3))
    x = layers.Conv2D(filters[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inp)
    x = layers.ReLU()(layers.BatchNormalization(name="stem_bn")(x))
    outs = []
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, strides=2, padding="same", use_bias=False, name=f"stage{i}_down")(x)
        x = layers.ReLU()(layers.BatchNormalization(name=f"stage{i}_down_bn")(x))
        y = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"stage{i}_conv")(x)
        y = layers.BatchNormalization(name=f"stage{i}_bn")(y)
        x = layers.ReLU()(layers.Add()([x, y]))
        outs.append(x)
    return keras.Model(inp, outs if with_c2 else outs[1:], name="tiny_backbone")


def load_npz_weights(model: keras.Model, path: str) -> int:
    """Assign `layer/weight`-keyed arrays of an `.npz` (from `shapemask convert-backbone`) to `model`.

    Every weight of `model` must be in the file with the same shape: a partial load would leave layers at
    their random initialisation without anyone noticing. Returns the number of arrays loaded.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"backbone.weights_path {path!r} does not exist (make it with `shapemask convert-backbone --out {{path}}`)"
        )
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"backbone.weights_path {path!r} is not a readable .npz: {e}") from e
    n = 0
    with arrays:
        for layer in model.layers:
            for w in layer.weights:
                key = f"{layer.name}/{w.name}"
                if key not in arrays.files:
                    raise ValueError(f"{path}: no array for backbone weight {key!r}")
                value = arrays[key]
                if tuple(value.shape) != tuple(w.shape):
                    raise ValueError(f"{path}: {key} has shape {value.shape}, the backbone expects {tuple(w.shape)}")
                w.assign(value.astype(np.float32))
                n += 1
    return n


def preprocess_images(name: str, images):
    """Float RGB 0..255 images -> the input normalisation the backbone's (ImageNet) weights expect."""
    x = ops.cast(images, "float32")
    if name.startswith("efficientnet_lite"):
        return (x - INPUT_MEAN) / INPUT_STD
    # keras.applications.ResNet "caffe" mode (BGR, mean subtracted) so a Keras ImageNet file loads as is;
    # the tiny backbone learns from scratch and uses the same.
    return x[..., ::-1] - ops.convert_to_tensor(_BGR_MEAN)


def _freeze(base: keras.Model, cfg: BackboneConfig) -> None:
    """`freeze_all`: the whole backbone (weights and BN statistics); else `freeze_stem_and_stage1`."""
    if cfg.freeze_all:
        base.trainable = False
    elif cfg.freeze_stem_and_stage1:
        for layer in base.layers:
            if layer.name.startswith(_FROZEN_PREFIXES[cfg.name]):
                layer.trainable = False


def _efficientnet_backbone(cfg: BackboneConfig, image_size: int, pretrained: bool, with_c2: bool) -> keras.Model:
    base = efficientnet_lite(cfg.name, (image_size, image_size, 3), include_top=False, with_c2=with_c2)
    if pretrained and cfg.weights_path:
        n = load_npz_weights(base, cfg.weights_path)
        log.info("loaded %d backbone arrays from %s", n, cfg.weights_path)
    _freeze(base, cfg)
    return base


# Layers frozen by `freeze_stem_and_stage1`, per backbone (name prefixes). A backbone listed here must start
# from pretrained weights when they are frozen (`check_backbone_init`).
_FROZEN_PREFIXES = {
    **{name: ("conv_stem", "bn0", "blocks.0.") for name in LITE_VARIANTS},  # stage 1 is block 0 in every Lite
    "resnet50": ("conv1_", "conv2_"),
    "resnet101": ("conv1_", "conv2_"),
}
_WEIGHT_CHOICES = (None, "imagenet")


def check_backbone_init(cfg: BackboneConfig) -> None:
    """Refuse configurations that would train with frozen, randomly initialised layers (or are ambiguous)."""
    if cfg.weights not in _WEIGHT_CHOICES:
        raise ValueError(f"backbone.weights must be null or 'imagenet', got {cfg.weights!r}")
    if cfg.weights and cfg.weights_path:
        raise ValueError("set only one of backbone.weights ('imagenet') and backbone.weights_path (local file)")
    if cfg.name == "tiny" and (cfg.weights or cfg.weights_path):
        raise ValueError("the tiny backbone has no pretrained weights: set backbone.weights and weights_path to null")
    if cfg.weights == "imagenet" and cfg.name.startswith("efficientnet_lite"):
        raise ValueError(
            "Keras has no EfficientNet-Lite weights to download: make the .npz with `shapemask "
            "convert-backbone` and set backbone.weights_path"
        )
    frozen = (cfg.freeze_stem_and_stage1 or cfg.freeze_all) and cfg.name in _FROZEN_PREFIXES
    if frozen and not (cfg.weights or cfg.weights_path):
        raise ValueError(
            f"backbone {cfg.name!r} has no pretrained weights but freeze_stem_and_stage1 is true: training "
            "would keep a random stem frozen. Set model.backbone.weights: imagenet (Keras downloads them; "
            "needs internet), or model.backbone.weights_path: a local ImageNet weights file, or "
            "model.backbone.freeze_stem_and_stage1: false to train from scratch."
        )


def _resnet_centres(image_size: int) -> dict[int, float]:
    # explicit symmetric ZeroPadding + "valid" convs/pools, 1x1 stride-2 convs: cell i of C_l is centred on
    # input pixel s * i, i.e. at coordinate s * i + 0.5, for any input size
    return {2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5}


def _tiny_centres(image_size: int) -> dict[int, float]:
    # five 3x3 stride-2 "same" convs (stem, stage0..3); C2..C5 come after the 2nd..5th
    c = same_padding_centres(image_size, (3, 3, 3, 3, 3))
    return {2: c[2], 3: c[3], 4: c[4], 5: c[5]}


def _efficientnet_lite_centres(image_size: int) -> dict[int, float]:
    # five stride-2 TF-"same" convs: stem 3x3, then the first depthwise conv of stages 2, 3, 4, 6 (3, 5, 3, 5);
    # Lite1/Lite2 add blocks and channels, never strides or kernels
    c = same_padding_centres(image_size, (3, 3, 5, 3, 5))
    return {2: c[2], 3: c[3], 4: c[4], 5: c[5]}


# Where each backbone's C2..C5 cells sit in the input: FEATURE_CENTRES[name](image_size) = {level: c}, cell i
# of C_level centred at input coordinate 2**level * i + c (pixel k covers [k, k + 1)). The ROI crop reads
# features at these positions, so every backbone that `build_backbone` accepts needs an entry here;
# test/model/test_feature_alignment.py measures the centres of every entry with impulse images.
FEATURE_CENTRES: dict[str, Callable[[int], dict[int, float]]] = {
    **{name: _efficientnet_lite_centres for name in LITE_VARIANTS},
    "resnet50": _resnet_centres,
    "resnet101": _resnet_centres,
    "tiny": _tiny_centres,
}


def backbone_feature_centres(name: str, image_size: int) -> dict[int, float]:
    """{2: c2, 3: c3, 4: c4, 5: c5}: input coordinate of the centre of cell 0 of C2..C5 (see FEATURE_CENTRES)."""
    if name not in FEATURE_CENTRES:
        raise ValueError(
            f"backbone {name!r} has no entry in model/backbone.py FEATURE_CENTRES (where its feature cells "
            "are centred in the input); add one, test/model/test_feature_alignment.py checks it"
        )
    return FEATURE_CENTRES[name](image_size)


def build_backbone(
    cfg: BackboneConfig, image_size: int, pretrained: bool = False, with_c2: bool = False
) -> keras.Model:
    """Functional model image (preprocessed) -> [C3, C4, C5] ([C2, C3, C4, C5] with `with_c2`).

    pretrained: load `cfg.weights` / `cfg.weights_path` (training); otherwise the weights stay random
    until a checkpoint is restored, so evaluation and export never need the file or the internet.
    """
    backbone_feature_centres(cfg.name, image_size)  # every buildable backbone says where its cells are
    if cfg.name in LITE_VARIANTS:
        return _efficientnet_backbone(cfg, image_size, pretrained, with_c2)
    if cfg.name == "tiny":
        if len(cfg.tiny_filters) != 4:
            raise ValueError("backbone.tiny_filters must have 4 entries")
        return _tiny_backbone(image_size, tuple(cfg.tiny_filters), with_c2)
    if cfg.name not in _RESNET_OUTPUTS:
        raise ValueError(f"unknown backbone {cfg.name!r}; choose {', '.join(FEATURE_CENTRES)}")
    ctor = keras.applications.ResNet50 if cfg.name == "resnet50" else keras.applications.ResNet101
    download = pretrained and cfg.weights == "imagenet"
    # weights="imagenet" makes Keras download its ImageNet weights (once, cached under ~/.keras).
    base = ctor(include_top=False, weights="imagenet" if download else None, input_shape=(image_size, image_size, 3))
    if download:
        log.info("loaded Keras ImageNet weights for %s", cfg.name)
    if pretrained and cfg.weights_path:
        if not os.path.exists(cfg.weights_path):
            raise FileNotFoundError(f"backbone.weights_path {cfg.weights_path!r} does not exist")
        base.load_weights(cfg.weights_path, skip_mismatch=False)
        log.info("loaded backbone weights from %s", cfg.weights_path)
    _freeze(base, cfg)
    names = ((_RESNET_C2,) if with_c2 else ()) + _RESNET_OUTPUTS[cfg.name]
    outs = [base.get_layer(n).output for n in names]
    return keras.Model(base.input, outs, name=cfg.name)
