"""Backbones returning (C3, C4, C5): EfficientNet-Lite0 (ImageNet, the shipped model's), Keras ResNet-50/101
(the paper's) and a tiny ResNet for CPU tests."""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
from keras import layers, ops

from shapemask_ros.config import BackboneConfig
from shapemask_ros.model.efficientnet_lite import INPUT_MEAN, INPUT_STD, efficientnet_lite0

log = logging.getLogger(__name__)

_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)

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


def load_npz_weights(model: keras.Model, path: str) -> int:
    """Assign `layer/weight`-keyed arrays of an `.npz` (from `shapemask convert-backbone`) to `model`.

    Every weight of `model` must be in the file with the same shape: a partial load would leave layers at
    their random initialisation without anyone noticing. Returns the number of arrays loaded.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"backbone.weights_path {path!r} does not exist (make it with `shapemask "
                                "convert-backbone --out {path}`)")
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


def _efficientnet_backbone(cfg: BackboneConfig, image_size: int) -> keras.Model:
    base = efficientnet_lite0((image_size, image_size, 3), include_top=False, name=cfg.name)
    if cfg.weights_path:
        n = load_npz_weights(base, cfg.weights_path)
        log.info("loaded %d backbone arrays from %s", n, cfg.weights_path)
    if cfg.freeze_all:
        base.trainable = False
    elif cfg.freeze_stem_and_stage1:
        for layer in base.layers:
            if layer.name in ("conv_stem", "bn0") or layer.name.startswith("blocks.0."):
                layer.trainable = False
    return base


def build_backbone(cfg: BackboneConfig, image_size: int) -> keras.Model:
    """Functional model image (preprocessed, see `preprocess_images`) -> [C3, C4, C5]."""
    if cfg.name == "efficientnet_lite0":
        return _efficientnet_backbone(cfg, image_size)
    if cfg.name == "tiny":
        if len(cfg.tiny_filters) != 4:
            raise ValueError("backbone.tiny_filters must have 4 entries")
        return _tiny_backbone(image_size, tuple(cfg.tiny_filters))
    if cfg.name not in _RESNET_OUTPUTS:
        raise ValueError(f"unknown backbone {cfg.name!r}; choose efficientnet_lite0, resnet50, resnet101 or tiny")
    ctor = keras.applications.ResNet50 if cfg.name == "resnet50" else keras.applications.ResNet101
    # weights=None: nothing is ever downloaded. ImageNet weights come from a local file when given.
    base = ctor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if cfg.weights_path:
        if not os.path.exists(cfg.weights_path):
            raise FileNotFoundError(f"backbone.weights_path {cfg.weights_path!r} does not exist")
        base.load_weights(cfg.weights_path, skip_mismatch=False)
        log.info("loaded backbone weights from %s", cfg.weights_path)
    if cfg.freeze_all:
        base.trainable = False
    elif cfg.freeze_stem_and_stage1:
        for layer in base.layers:
            if layer.name.startswith(("conv1_", "conv2_")):
                layer.trainable = False
    outs = [base.get_layer(n).output for n in _RESNET_OUTPUTS[cfg.name]]
    return keras.Model(base.input, outs, name=cfg.name)
