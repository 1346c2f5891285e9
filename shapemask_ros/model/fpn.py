"""Feature pyramid P3..P7 (RetinaNet style): 1x1 laterals, nearest top-down, 3x3 outputs, BN per level."""

from __future__ import annotations

import keras
from keras import layers

from shapemask_ros.model.roi_sampling import strided_conv_centre


def pyramid_centres(c_centres: dict[int, float], image_size: int, max_level: int) -> dict[int, float]:
    """Cell-0 centres {level: c} of P3..P_max from the backbone's C3..C5 centres.

    P3..P5 keep C3..C5's (1x1 laterals and 3x3 stride-1 "same" convs do not move cells; the added upsampled
    coarser level is the FPN's own blur). P6, P7: 3x3 stride-2 "same" convs on P5, P6.
    """
    out = {l: float(c_centres[l]) for l in (3, 4, 5)}
    size = image_size
    for _ in range(5):
        size = -(-size // 2)
    for level in range(6, max_level + 1):
        out[level], size = strided_conv_centre(out[level - 1], 2.0 ** (level - 1), size, 3, "same")
    return out


def upsample2x(x):
    """Nearest-neighbour 2x upsampling of [B, H, W, C] (UpSampling2D(2, "nearest")'s values) as one broadcast:
    [B, H, 1, W, 1, C] -> [B, H, 2, W, 2, C] -> [B, 2H, 2W, C]. Exported as a single Expand instead of
    UpSampling2D's Tiles (one ONNX Runtime profile of the 384² graph: the Tiles 0.85 ms, the Expand 0.38)."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3]
    x = keras.ops.reshape(x, (-1, h, 1, w, 1, c))
    x = keras.ops.broadcast_to(x, (keras.ops.shape(x)[0], h, 2, w, 2, c))
    return keras.ops.reshape(x, (-1, 2 * h, 2 * w, c))


class FPN(layers.Layer):
    """[C3, C4, C5] -> {level: P_level} for levels min_level..max_level (3..7)."""

    def __init__(self, channels: int = 256, min_level: int = 3, max_level: int = 7, **kwargs):
        super().__init__(**kwargs)
        if min_level != 3 or max_level < 5:
            raise ValueError("FPN supports min_level=3 and max_level>=5")
        self.min_level, self.max_level = min_level, max_level
        self.lateral = [layers.Conv2D(channels, 1, name=f"lateral_p{l}") for l in (3, 4, 5)]
        self.output_convs = [layers.Conv2D(channels, 3, padding="same", name=f"post_p{l}") for l in (3, 4, 5)]
        self.extra = [
            layers.Conv2D(channels, 3, strides=2, padding="same", name=f"p{l}") for l in range(6, max_level + 1)
        ]
        self.norms = [layers.BatchNormalization(name=f"bn_p{l}") for l in range(min_level, max_level + 1)]

    def call(self, feats, training=None):
        c3, c4, c5 = feats
        l3, l4, l5 = (conv(c) for conv, c in zip(self.lateral, (c3, c4, c5), strict=True))
        l4 = l4 + upsample2x(l5)
        l3 = l3 + upsample2x(l4)
        p = [conv(x) for conv, x in zip(self.output_convs, (l3, l4, l5), strict=True)]
        x = p[-1]
        for i, conv in enumerate(self.extra):
            x = conv(x if i == 0 else keras.ops.relu(x))
            p.append(x)
        return {
            lvl: norm(t, training=training)
            for lvl, norm, t in zip(range(self.min_level, self.max_level + 1), self.norms, p, strict=True)
        }
