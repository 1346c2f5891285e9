"""ShapeMask mask branch: shape-prior head, coarse head, fine head (instance-embedding refinement).

All per-instance tensors are [M = B*N, n, n, C] so every conv is a plain 2-D conv on 4-D tensors
(TF-TRT failed on Dense over 5-D tensors: tensorflow/tpu#815).
"""

from __future__ import annotations

import math

from keras import initializers, layers, name_scope, ops

from shapemask_ros.model.roi_sampling import box_prior, resample_box_frame

# Initialisers of the reference heads (tensorflow/tpu heads.py): N(0, 0.01) kernels, and a logits bias that
# makes the initial foreground probability 0.01 (as for focal-loss heads).
FOREGROUND_PRIOR = 0.01


def _small_normal():
    return initializers.RandomNormal(stddev=0.01)


def _logits_bias():
    return initializers.Constant(-math.log((1.0 - FOREGROUND_PRIOR) / FOREGROUND_PRIOR))


def _mask_logits_conv(num_classes, name):
    return layers.Conv2D(num_classes, 1, kernel_initializer=_small_normal(), bias_initializer=_logits_bias(), name=name)


def _select_class(x, onehot):
    """x [M, ..., C] and onehot [M, C] -> [M, ...]: the instance's class channel (row 0 when C = 1)."""
    if x.shape[-1] == 1 and None not in x.shape[1:-1]:
        # class-agnostic masks: onehot is all ones (ShapeMask.mask_branch), so the product and sum are a
        # copy of channel 0 -- a [M, 128, 128] Mul + ReduceSum in the exported graph for nothing. A Reshape
        # (no copy in ONNX Runtime), not a Squeeze: TensorFlow's Conv2D on zero instances can return the
        # input's channel count, which Squeeze rejects and Reshape of zero elements does not.
        return ops.reshape(x, (-1, *x.shape[1:-1]))
    shape = [ops.shape(onehot)[0]] + [1] * (len(x.shape) - 2) + [ops.shape(onehot)[1]]
    return ops.sum(x * ops.reshape(ops.cast(onehot, x.dtype), shape), axis=-1)


def masked_sum(x, m):
    """sum over pixels of x [M, n, n, C] weighted by m [M, n, n] -> [M, C].

    One batched [M, 1, n*n] @ [M, n*n, C] MatMul: in the exported graph a broadcast Mul by an
    [M, n, n, 1] tensor and a ReduceSum cost 6x more on ONNX Runtime's CPU kernels (0.21 vs 0.035 ms at
    20 boxes)."""
    hw = x.shape[1] * x.shape[2]
    w = ops.reshape(ops.cast(m, x.dtype), (-1, 1, hw))
    return ops.matmul(w, ops.reshape(x, (-1, hw, x.shape[3])))[:, 0]


def depth_to_space(x, r: int):
    """[M, H, W, r*r*C] -> [M, H*r, W*r, C], channels ordered (dy, dx, c). Reshape/Transpose only."""
    h, w, c = x.shape[1], x.shape[2], x.shape[3] // (r * r)
    x = ops.reshape(x, (-1, h, w, r, r, c))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, h * r, w * r, c))


class _ConvStack(layers.Layer):
    def __init__(self, num_convs, channels, prefix, **kwargs):
        super().__init__(**kwargs)
        self.convs = [
            layers.Conv2D(
                channels,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer=_small_normal(),
                name=f"{prefix}_conv{i}",
            )
            for i in range(num_convs)
        ]
        self.norms = [layers.BatchNormalization(name=f"{prefix}_bn{i}") for i in range(num_convs)]

    def call(self, x, training=None, slot_mask=None):
        """slot_mask: [M] bool, the instance slots whose pixels make the batch-norm statistics in training
        (padded slots are excluded so the statistics do not depend on how many objects an image has);
        None = all slots."""
        mask = None
        if slot_mask is not None and training:
            slot_mask = ops.cast(slot_mask, "bool")
            # a batch without any valid slot falls back to all slots (the moments need some pixels)
            slot_mask = ops.logical_or(slot_mask, ops.logical_not(ops.any(slot_mask)))
            mask = slot_mask[:, None, None]  # broadcast by BatchNormalization over [M, n, n]
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = ops.relu(norm(conv(x), training=training, mask=mask))
        return x


class ShapePriorHead(layers.Layer):
    """Box-conditioned embedding -> softmax weights over K fixed priors -> S in the outer-box frame."""

    def __init__(self, num_classes, num_priors, crop_size, use_shape_prior=True, **kwargs):
        super().__init__(**kwargs)
        self.c, self.k, self.n = num_classes, num_priors, crop_size
        self.use_shape_prior = use_shape_prior
        self.classifier = layers.Dense(
            num_classes * num_priors, kernel_initializer=_small_normal(), name="prior_logits"
        )

    def build(self, input_shape):
        # Fixed priors, stored as a non-trainable weight so they are saved with checkpoints and
        # exported as initializers (a plain attribute would become a required ONNX input).
        self.priors = self.add_weight(
            name="priors", shape=(self.c, self.k, self.n, self.n), initializer="ones", trainable=False
        )

    def call(self, x, boxes, outer, onehot):
        """x [M,n,n,Cm] instance features; boxes/outer [M,4]; onehot [M,C] -> (S [M,n,n], U [M,n,n])."""
        u = box_prior(boxes, outer, self.n)
        if not self.use_shape_prior:
            return u, u
        emb = masked_sum(x, u) / float(self.n * self.n)  # [M, Cm]: mean of x * u over the pixels
        logits = ops.reshape(ops.cast(self.classifier(emb), "float32"), (-1, self.c, self.k))
        logits = _select_class(ops.transpose(logits, (0, 2, 1)), onehot)  # [M, K]
        w = ops.softmax(logits, axis=-1)
        if self.c == 1:
            # one prior set: the weighted sum is one [M, K] @ [K, n*n] MatMul, without the [M, K, n*n] tensor
            s_box = ops.matmul(w, ops.reshape(self.priors, (self.k, self.n * self.n)))
        else:
            priors = ops.reshape(self.priors, (self.c, self.k * self.n * self.n))
            class_priors = ops.matmul(ops.cast(onehot, "float32"), priors)  # [M, K*n*n]
            class_priors = ops.reshape(class_priors, (-1, self.k, self.n * self.n))
            s_box = ops.sum(class_priors * w[:, :, None], axis=1)
        s_box = ops.reshape(s_box, (-1, self.n, self.n))
        return resample_box_frame(s_box, boxes, outer, self.n), u


class CoarseMaskHead(layers.Layer):
    """X + g(S) -> conv stack -> coarse logits [M, n, n]."""

    def __init__(self, num_classes, channels, num_convs, **kwargs):
        super().__init__(**kwargs)
        self.embed_prior = layers.Conv2D(channels, 1, name="prior_embed")
        self.stack = _ConvStack(num_convs, channels, "coarse", name="coarse_stack")
        self.predict = _mask_logits_conv(num_classes, "coarse_logits")

    def call(self, x, s, onehot, training=None, slot_mask=None):
        x = x + self.embed_prior(ops.cast(s, x.dtype)[..., None])
        x = self.stack(x, training=training, slot_mask=slot_mask)
        return _select_class(ops.cast(self.predict(x), "float32"), onehot)


class FineMaskHead(layers.Layer):
    """Instance-embedding centring + conv stack + x`upsample` transposed conv -> fine logits."""

    def __init__(self, num_classes, channels, num_convs, upsample, use_instance_embedding=True, **kwargs):
        super().__init__(**kwargs)
        self.use_instance_embedding = use_instance_embedding
        self.embed_coarse = layers.Conv2D(channels, 1, name="coarse_embed")
        self.stack = _ConvStack(num_convs, channels, "fine", name="fine_stack")
        # x`upsample` transposed conv with kernel == stride, computed as a 1x1 conv to upsample^2 * channels +
        # depth-to-space: the same linear map (every output pixel sees one input pixel), but a plain matmul,
        # several times faster than Conv2DTranspose on CPU. As in the paper and the reference, no
        # normalisation or activation follows it: the logits are a linear function of the upsampled
        # features. Its initial scale is Glorot's for the transposed conv's fans (upsample^2 * (in + out)).
        # No bias: a per-channel constant before the linear 1x1 logits conv is absorbed by that conv's bias.
        self.upsample = upsample
        r2 = upsample * upsample
        self.up = layers.Conv2D(
            channels * r2,
            1,
            use_bias=False,
            kernel_initializer=initializers.VarianceScaling((1.0 + r2) / (2.0 * r2), "fan_avg", "uniform"),
            name="upsample",
        )
        self.predict = _mask_logits_conv(num_classes, "fine_logits")

    def build(self, x_shape, coarse_logits_shape=None, onehot_shape=None):
        channels = int(x_shape[-1])
        # `up` and `predict` are never called (see `_upsampled_logits`), so Keras would not build them
        self.up.build((None, None, None, channels))
        self.predict.build((None, None, None, channels))

    def _upsampled_logits(self, x):
        """`predict(depth_to_space(up(x)))` as one 1x1 map from C to r*r*K channels, then depth-to-space.

        Both are linear with nothing in between, so their product is the same function (same weights, same
        gradients), but the wide r*r*C-channel tensor at the fine resolution is never made: at 20 boxes that
        tensor (20 x 128 x 128 x C floats, plus its layout conversions) was the largest cost of the exported
        graph. The kernel product is over constants, so exporters fold it into one initializer."""
        r2 = self.upsample * self.upsample
        c_in, c = int(self.up.kernel.shape[-2]), int(self.predict.kernel.shape[-2])
        k = int(self.predict.kernel.shape[-1])
        up = ops.reshape(self.up.kernel, (c_in * r2, c))  # rows (i, dy, dx): depth-to-space order (dy, dx, c)
        w = ops.reshape(ops.matmul(up, ops.reshape(self.predict.kernel, (c, k))), (c_in, r2 * k))
        b = ops.tile(self.predict.bias, (r2,))
        h, wd = x.shape[1], x.shape[2]
        # as a 2-D product plus bias (one Gemm in the exported graph, bias fused) rather than a 4-D Tensordot;
        # the scope names it for FLOP counts (training/experiments/mask_width.py)
        with name_scope("upsampled_logits"):
            y = ops.matmul(ops.reshape(x, (-1, c_in)), ops.cast(w, x.dtype)) + ops.cast(b, x.dtype)
        return depth_to_space(ops.reshape(y, (-1, h, wd, r2 * k)), self.upsample)

    def call(self, x, coarse_logits, onehot, training=None, slot_mask=None):
        p = ops.sigmoid(coarse_logits)  # [M, n, n]
        if self.use_instance_embedding:
            # hard 0.5 threshold, no gradient through the mask (as in the reference implementation)
            m = ops.stop_gradient(ops.cast(p > 0.5, x.dtype))
            emb = masked_sum(x, m) / (ops.sum(m, axis=(1, 2))[:, None] + 1e-6)
            x = x - emb[:, None, None, :]
        x = x + self.embed_coarse(ops.cast(p, x.dtype)[..., None])
        x = self.stack(x, training=training, slot_mask=slot_mask)
        return _select_class(ops.cast(self._upsampled_logits(x), "float32"), onehot)
