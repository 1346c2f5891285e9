"""EfficientNet-Lite0 (Tan & Le 2019, "Lite" variant for mobile/edge accelerators) as a Keras 3 model.

Lite differs from EfficientNet-B0 in exactly the ways that matter for deployment: no squeeze-and-excitation,
ReLU6 instead of swish, and a fixed stem/head. Every op is a plain Conv/DepthwiseConv/BN/ReLU6/Add, so the
graph exports to ONNX and TensorRT without plugins. Padding is TensorFlow "same" (as in the original TF
implementation and in the PyTorch port whose ImageNet weights we convert, see
`shapemask_ros.model.efficientnet_weights`), BN epsilon 1e-3, inputs (x - 127) / 128.

Layer names follow the PyTorch state dict (`blocks.{i}.…`), so the weight conversion is a name lookup.
"""

from __future__ import annotations

import keras
from keras import layers

# Per stage: (repeats, kernel, first stride, expand ratio, output channels). Lite0 = width 1.0, depth 1.0.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
# Keras' BN momentum is the running-average decay; the PyTorch port used 0.01 "momentum" = 0.99 decay.
BN_MOMENTUM = 0.99
# Index of the last block of the stages whose outputs are C3 (stride 8), C4 (stride 16), C5 (stride 32).
LITE0_FEATURE_BLOCKS = (4, 10, 15)
LITE0_C2_BLOCK = 2  # last block of the stride-4 stage (24 channels): the mask branch's optional detail map
INPUT_MEAN = 127.0
INPUT_STD = 128.0


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


def efficientnet_lite0(
    input_shape=(224, 224, 3), include_top: bool = True, name: str = "efficientnet_lite0", with_c2: bool = False
):
    """Functional EfficientNet-Lite0 on *preprocessed* inputs ((x - 127) / 128, RGB).

    include_top=True: 1000 ImageNet logits (used to check a weight conversion).
    include_top=False: outputs [C3, C4, C5] (strides 8, 16, 32; 40, 112, 320 channels), with `with_c2`
    [C2, C3, C4, C5] (C2: stride 4, 24 channels). The layers (and so the weights) are the same either way.
    """
    feature_blocks = ((LITE0_C2_BLOCK,) if with_c2 else ()) + LITE0_FEATURE_BLOCKS
    inp = keras.Input(input_shape)
    x = layers.Conv2D(STEM_CHANNELS, 3, 2, padding="same", use_bias=False, name="conv_stem")(inp)
    x = _relu6("stem_relu")(_bn("bn0")(x))
    feats = []
    cin, i = STEM_CHANNELS, 0
    for repeats, kernel, stride, expand, cout in LITE0_STAGES:
        for r in range(repeats):
            x = _block(x, i, cin, cout, kernel, stride if r == 0 else 1, expand)
            cin = cout
            if i in feature_blocks:
                feats.append(x)
            i += 1
    if not include_top:
        return keras.Model(inp, feats, name=name)
    x = layers.Conv2D(HEAD_CHANNELS, 1, use_bias=False, name="conv_head")(x)
    x = _relu6("head_relu")(_bn("bn1")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(1000, name="fc")(x)
    return keras.Model(inp, x, name=name)
