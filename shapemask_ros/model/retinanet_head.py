"""RetinaNet class and box heads: convs shared across levels, batch norm per level."""

from __future__ import annotations

import math

import keras
from keras import layers, ops


class _Tower(layers.Layer):
    def __init__(self, num_convs, channels, levels, out_channels, bias_init, name_prefix, **kwargs):
        super().__init__(**kwargs)
        self.levels = list(levels)
        self.convs = [
            layers.Conv2D(
                channels,
                3,
                padding="same",
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                name=f"{name_prefix}_conv{i}",
            )
            for i in range(num_convs)
        ]
        # One BN per (conv, level): levels have different statistics.
        self.norms = [
            [layers.BatchNormalization(name=f"{name_prefix}_bn{i}_p{l}") for l in self.levels] for i in range(num_convs)
        ]
        self.out = layers.Conv2D(
            out_channels,
            3,
            padding="same",
            kernel_initializer=keras.initializers.RandomNormal(stddev=1e-5),
            bias_initializer=bias_init,
            name=f"{name_prefix}_predict",
        )

    def call(self, feats, training=None):
        outs = {}
        for j, level in enumerate(self.levels):
            x = feats[level]
            for conv, norms in zip(self.convs, self.norms, strict=True):
                x = ops.relu(norms[j](conv(x), training=training))
            outs[level] = self.out(x)
        return outs


class RetinaNetHead(layers.Layer):
    """{level: P} -> (class logits [B, A, C], box deltas [B, A, 4]) with A ordered like generate_anchors."""

    def __init__(self, num_classes, anchors_per_loc, levels, num_convs=4, channels=256, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.a = num_classes, anchors_per_loc
        prior = -math.log((1 - 0.01) / 0.01)  # class bias so every anchor starts at p = 0.01
        self.cls = _Tower(
            num_convs,
            channels,
            levels,
            anchors_per_loc * num_classes,
            name="class_tower",
            bias_init=keras.initializers.Constant(prior),
            name_prefix="class",
        )
        self.box = _Tower(num_convs, channels, levels, anchors_per_loc * 4, "zeros", "box", name="box_tower")

    def call(self, feats, training=None):
        c = self.cls(feats, training=training)
        b = self.box(feats, training=training)
        cls = [ops.reshape(c[l], (ops.shape(c[l])[0], -1, self.num_classes)) for l in sorted(c)]
        box = [ops.reshape(b[l], (ops.shape(b[l])[0], -1, 4)) for l in sorted(b)]
        return ops.concatenate(cls, axis=1), ops.concatenate(box, axis=1)
