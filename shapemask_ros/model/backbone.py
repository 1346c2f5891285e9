"""Backbones returning (C3, C4, C5): Keras ResNet-50/101 (the paper's) and a tiny ResNet for CPU tests."""

from __future__ import annotations

import logging
import os

import keras
from keras import layers

from shapemask_ros.config import BackboneConfig

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


def build_backbone(cfg: BackboneConfig, image_size: int, pretrained: bool = False) -> keras.Model:
    """Functional model image (preprocessed) -> [C3, C4, C5].

    pretrained: load `cfg.weights` / `cfg.weights_path` (training); otherwise the weights stay random
    until a checkpoint is restored, so evaluation and export never need the file or the internet.
    """
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
