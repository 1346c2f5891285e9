"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" variants for mobile/edge accelerators) as Keras 3 models.

Lite differs from EfficientNet-B0..B2 in exactly the ways that matter for deployment: no squeeze-and-excitation,
ReLU6 instead of swish, and a fixed stem/head. Every op is a plain Conv/DepthwiseConv/BN/ReLU6/Add, so the
graph exports to ONNX and TensorRT without plugins. Padding is TensorFlow "same" (as in the original TF
implementation and in the PyTorch port whose ImageNet weights we convert, see
`shapemask_training.convert_backbone`), BN epsilon 1e-3, inputs (x - 127) / 128.

Lite1 and Lite2 scale Lite0's stages by a width (channels) and a depth (blocks per stage) multiplier, with
the Lite rules: stem (32) and head (1280) channels fixed, and the first and last stages keep one block.

Layer names follow the PyTorch state dict (`blocks.{i}.…`), so the weight conversion is a name lookup.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
from keras import layers


class Stage(NamedTuple):
    """One stage of MBConv blocks: the first has `stride`, the rest stride 1."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    channels: int


# Lite0 = width 1.0, depth 1.0: the base network the others scale.
LITE0_STAGES: tuple[Stage, ...] = (
    Stage(1, 3, 1, 1, 16),
    Stage(2, 3, 2, 6, 24),
    Stage(2, 5, 2, 6, 40),
    Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112),
    Stage(4, 5, 2, 6, 192),
    Stage(1, 3, 1, 6, 320),
)
# name -> (width multiplier, depth multiplier, ImageNet resolution) of the reference implementation
LITE_VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
CHANNEL_DIVISOR = 8
BN_EPSILON = 1e-3
# Keras' BN momentum is the running-average decay; the PyTorch port used 0.01 "momentum" = 0.99 decay.
BN_MOMENTUM = 0.99
# Stages (0-based) whose last block gives C2 (stride 4), C3 (stride 8), C4 (stride 16), C5 (stride 32).
_FEATURE_STAGES = (1, 2, 4, 6)
INPUT_MEAN = 127.0
INPUT_STD = 128.0


def _round_channels(channels: int, width: float) -> int:
    """The reference's channel rounding: nearest multiple of 8, never more than 10 % below the scaled count."""
    scaled = channels * width
    rounded = max(CHANNEL_DIVISOR, int(scaled + CHANNEL_DIVISOR / 2) // CHANNEL_DIVISOR * CHANNEL_DIVISOR)
    return rounded + CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def lite_stages(name: str) -> tuple[Stage, ...]:
    """The stages of EfficientNet-Lite `name` ("efficientnet_lite0" | "_lite1" | "_lite2")."""
    if name not in LITE_VARIANTS:
        raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose {', '.join(LITE_VARIANTS)}")
    width, depth, _ = LITE_VARIANTS[name]
    last = len(LITE0_STAGES) - 1
    return tuple(
        s._replace(
            # Lite keeps the first and last stages at one block (the repeats of B0..B7 scale every stage)
            repeats=s.repeats if i in (0, last) else math.ceil(depth * s.repeats),
            channels=_round_channels(s.channels, width),
        )
        for i, s in enumerate(LITE0_STAGES)
    )


def feature_blocks(stages: tuple[Stage, ...]) -> tuple[int, int, int, int]:
    """Index of the last block of the stages giving C2, C3, C4, C5 (what `efficientnet_lite` outputs)."""
    ends = [sum(s.repeats for s in stages[: i + 1]) - 1 for i in range(len(stages))]
    c2, c3, c4, c5 = (ends[i] for i in _FEATURE_STAGES)
    return c2, c3, c4, c5


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def _relu6(name: str) -> layers.ReLU:
    return layers.ReLU(max_value=6.0, name=name)


def _block(x, i: int, cin: int, cout: int, kernel: int, stride: int, expand: int):
    """Inverted residual (MBConv without SE): 1x1 expand -> kxk depthwise -> 1x1 project (+ identity)."""
    inp = x
    if expand != 1:
        x = layers.Conv2D(cin * expand, 1, use_bias=False, name=f"blocks.{i}.expand_conv")(x)
        x = _relu6(f"blocks.{i}.expand_relu")(_bn(f"blocks.{i}.bn0")(x))
    x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"blocks.{i}.depthwise_conv")(x)
    x = _relu6(f"blocks.{i}.depthwise_relu")(_bn(f"blocks.{i}.bn1")(x))
    x = layers.Conv2D(cout, 1, use_bias=False, name=f"blocks.{i}.project_conv")(x)
    x = _bn(f"blocks.{i}.bn2")(x)
    if stride == 1 and cin == cout:
        # The reference applies drop-connect here in training; we fine-tune with it off (rate 0) so
        # the block is a plain Add in every exported graph.
        x = layers.Add(name=f"blocks.{i}.add")([x, inp])
    return x


def efficientnet_lite(
    name: str = "efficientnet_lite0",
    input_shape=(224, 224, 3),
    include_top: bool = True,
    with_c2: bool = False,
    model_name: str | None = None,
):
    """Functional EfficientNet-Lite `name` (lite0/1/2) on *preprocessed* inputs ((x - 127) / 128, RGB).

    include_top=True: 1000 ImageNet logits (used to check a weight conversion).
    include_top=False: outputs [C3, C4, C5] (strides 8, 16, 32; Lite0/1: 40, 112, 320 channels, Lite2: 48,
    120, 352), with `with_c2` [C2, C3, C4, C5] (C2: stride 4, 24 channels). The layers (and so the weights)
    are the same either way. `model_name`: the Keras model's name (default `name`).
    """
    stages = lite_stages(name)
    c2, *c345 = feature_blocks(stages)
    outputs = ((c2,) if with_c2 else ()) + tuple(c345)
    inp = keras.Input(input_shape)
    x = layers.Conv2D(STEM_CHANNELS, 3, 2, padding="same", use_bias=False, name="conv_stem")(inp)
    x = _relu6("stem_relu")(_bn("bn0")(x))
    feats = []
    cin, i = STEM_CHANNELS, 0
    for repeats, kernel, stride, expand, cout in stages:
        for r in range(repeats):
            x = _block(x, i, cin, cout, kernel, stride if r == 0 else 1, expand)
            cin = cout
            if i in outputs:
                feats.append(x)
            i += 1
    model_name = model_name or name
    if not include_top:
        return keras.Model(inp, feats, name=model_name)
    x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="conv_head")(x)
    x = _relu6("head_relu")(_bn("bn1")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(1000, name="fc")(x)
    return keras.Model(inp, x, name=model_name)
