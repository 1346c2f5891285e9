"""Backbones returning (C3, C4, C5): Keras ResNet-50/101 (the paper's) and a tiny ResNet for CPU tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import keras
from keras import layers

from shapemask_ros.config import BackboneConfig
from shapemask_ros.model.roi_sampling import same_padding_centres

log = logging.getLogger(__name__)

_RESNET_OUTPUTS = {
    "resnet50": ("conv3_block4_out", "conv4_block6_out", "conv5_block3_out"),
    "resnet101": ("conv3_block4_out", "conv4_block23_out", "conv5_block3_out"),
}


def _tiny_backbone(image_size: int, filters: tuple[int, ...]) -> keras.Model:
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
    return keras.Model(inp, outs[1:], name="tiny_backbone")


# Layers frozen by `freeze_stem_and_stage1`, per backbone (name prefixes). A backbone listed here must start
# from pretrained weights when they are frozen (`check_backbone_init`).
_FROZEN_PREFIXES = {
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
    frozen = cfg.freeze_stem_and_stage1 and cfg.name in _FROZEN_PREFIXES
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
    return {3: 0.5, 4: 0.5, 5: 0.5}


def _tiny_centres(image_size: int) -> dict[int, float]:
    # five 3x3 stride-2 "same" convs (stem, stage0..3); C3..C5 come after the 3rd..5th
    c = same_padding_centres(image_size, (3, 3, 3, 3, 3))
    return {3: c[3], 4: c[4], 5: c[5]}


# Where each backbone's C3..C5 cells sit in the input: FEATURE_CENTRES[name](image_size) = {level: c}, cell i
# of C_level centred at input coordinate 2**level * i + c (pixel k covers [k, k + 1)). The ROI crop reads
# features at these positions, so every backbone that `build_backbone` accepts needs an entry here;
# test/test_feature_alignment.py measures the centres of every entry with impulse images.
FEATURE_CENTRES: dict[str, Callable[[int], dict[int, float]]] = {
    "resnet50": _resnet_centres,
    "resnet101": _resnet_centres,
    "tiny": _tiny_centres,
}


def backbone_feature_centres(name: str, image_size: int) -> dict[int, float]:
    """{3: c3, 4: c4, 5: c5}: input coordinate of the centre of cell 0 of C3..C5 (see FEATURE_CENTRES)."""
    if name not in FEATURE_CENTRES:
        raise ValueError(
            f"backbone {name!r} has no entry in model/backbone.py FEATURE_CENTRES (where its feature cells "
            "are centred in the input); add one, test/test_feature_alignment.py checks it"
        )
    return FEATURE_CENTRES[name](image_size)


def build_backbone(cfg: BackboneConfig, image_size: int, pretrained: bool = False) -> keras.Model:
    """Functional model image (preprocessed) -> [C3, C4, C5].

    pretrained: load `cfg.weights` / `cfg.weights_path` (training); otherwise the weights stay random
    until a checkpoint is restored, so evaluation and export never need the file or the internet.
    """
    backbone_feature_centres(cfg.name, image_size)  # every buildable backbone says where its cells are
    if cfg.name == "tiny":
        if len(cfg.tiny_filters) != 4:
            raise ValueError("backbone.tiny_filters must have 4 entries")
        return _tiny_backbone(image_size, tuple(cfg.tiny_filters))
    if cfg.name not in _RESNET_OUTPUTS:
        raise ValueError(f"unknown backbone {cfg.name!r}; choose resnet50, resnet101 or tiny")
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
    if cfg.freeze_stem_and_stage1:
        for layer in base.layers:
            if layer.name.startswith(_FROZEN_PREFIXES[cfg.name]):
                layer.trainable = False
    outs = [base.get_layer(n).output for n in _RESNET_OUTPUTS[cfg.name]]
    return keras.Model(base.input, outs, name=cfg.name)
