"""ShapeMask training-target ops in TensorFlow (input pipeline and evaluation only; never exported).

Box format: float (x1, y1, x2, y2) in pixels. Sampling follows the project convention of
`shapemask_ros.ops.sampling`: an n x n grid over a box samples bin centres
`x_j = x1 + (j + 0.5) * (x2 - x1) / n`, pixel (r, c) has its centre at (c + 0.5, r + 0.5), values are
bilinear and indices outside the map are clamped to the border.
"""

from __future__ import annotations

import tensorflow as tf


def clip_boxes_tf(boxes: tf.Tensor, height: tf.Tensor | float, width: tf.Tensor | float) -> tf.Tensor:
    """Clip boxes [..., 4] to [0, width] x [0, height]."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    return tf.stack(
        [
            tf.clip_by_value(x1, 0.0, width),
            tf.clip_by_value(y1, 0.0, height),
            tf.clip_by_value(x2, 0.0, width),
            tf.clip_by_value(y2, 0.0, height),
        ],
        axis=-1,
    )


def _grid_coords(lo: tf.Tensor, hi: tf.Tensor, size: int) -> tf.Tensor:
    """Bin-centre coordinates [N, size] of `size` samples over intervals [lo, hi] ([N] each)."""
    t = (tf.range(size, dtype=tf.float32) + 0.5) / float(size)
    return lo[:, None] + t[None, :] * (hi - lo)[:, None]


def crop_masks_to_boxes(masks: tf.Tensor, boxes: tf.Tensor, size: int, zero_outside: bool = False) -> tf.Tensor:
    """Bilinear `size` x `size` crops of masks [N, H, W] over pixel boxes [N, 4] -> [N, size, size] float32.

    Matches `shapemask_ros.ops.sampling.crop_and_sample` (bin centres, clamped borders) for every sample
    whose coordinates lie within half a pixel past the mask's edges, i.e. in [-0.5, W + 0.5] x
    [-0.5, H + 0.5]; samples farther out read 0. With `zero_outside=True` every sample outside the mask's
    extent [0, W] x [0, H] reads 0 (the parser uses this: there the input image is zero padding).

    Uses `tf.image.crop_and_resize` on the mask edge-padded by one pixel (so its zero extrapolation starts
    only beyond the clamped half-pixel border), with normalised box coordinates chosen so that its first and
    last samples are the first and last bin centres.
    """
    if size < 1:
        raise ValueError(f"crop size must be >= 1, got {size}")
    masks = tf.convert_to_tensor(masks)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    masks = tf.cast(masks, tf.float32)
    # One replicated border pixel on each side: exact clamping for samples within half a pixel outside.
    padded = tf.pad(masks, [[0, 0], [1, 1], [1, 1]], mode="SYMMETRIC")[..., None]
    hp = tf.cast(tf.shape(padded)[1], tf.float32)
    wp = tf.cast(tf.shape(padded)[2], tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    n = float(size)
    # Pixel-space coordinate c lies at padded-array index c - 0.5 + 1.
    first_y = y1 + 0.5 * (y2 - y1) / n + 0.5
    last_y = y1 + (n - 0.5) * (y2 - y1) / n + 0.5
    first_x = x1 + 0.5 * (x2 - x1) / n + 0.5
    last_x = x1 + (n - 0.5) * (x2 - x1) / n + 0.5
    # The padded map is at least 3 x 3, so (dim - 1) >= 2: no division by zero even for H == 1.
    norm = tf.stack([first_y / (hp - 1.0), first_x / (wp - 1.0), last_y / (hp - 1.0), last_x / (wp - 1.0)], -1)
    num = tf.shape(boxes)[0]
    crops = tf.image.crop_and_resize(
        padded, norm, tf.range(num), [size, size], method="bilinear", extrapolation_value=0.0
    )[..., 0]
    if zero_outside:
        h = tf.cast(tf.shape(masks)[1], tf.float32)
        w = tf.cast(tf.shape(masks)[2], tf.float32)
        ys = _grid_coords(y1, y2, size)
        xs = _grid_coords(x1, x2, size)
        in_y = tf.cast((ys >= 0.0) & (ys <= h), tf.float32)
        in_x = tf.cast((xs >= 0.0) & (xs <= w), tf.float32)
        crops = crops * in_y[:, :, None] * in_x[:, None, :]
    return crops


def mask_targets(masks: tf.Tensor, boxes: tf.Tensor, size: int, zero_outside: bool = True) -> tf.Tensor:
    """Binary {0, 1} float32 mask targets [N, size, size]: bilinear crop over `boxes`, thresholded >= 0.5."""
    crops = crop_masks_to_boxes(masks, boxes, size, zero_outside=zero_outside)
    return tf.cast(crops >= 0.5, tf.float32)


def jitter_boxes_tf(
    boxes: tf.Tensor,
    sigma: float,
    seed: tf.Tensor,
    height: tf.Tensor | float,
    width: tf.Tensor | float,
) -> tf.Tensor:
    """Paper's box jitter on boxes [N, 4]: centre += N(0, sigma) * (w, h); (w, h) *= exp(N(0, sigma)).

    `seed` is a stateless seed (shape [2] int32/int64), so a fixed seed gives the same jitter. The result
    is clipped to [0, width] x [0, height] and kept at least 1 px wide and high (inside the image).
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if sigma <= 0.0:
        return keep_min_size(clip_boxes_tf(boxes, height, width), height, width)
    noise = tf.random.stateless_normal(tf.stack([tf.shape(boxes)[0], 4]), seed=seed, stddev=sigma)
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0 + noise[:, :2] * wh
    wh = wh * tf.exp(noise[:, 2:])
    out = tf.concat([centre - wh / 2.0, centre + wh / 2.0], axis=-1)
    return keep_min_size(clip_boxes_tf(out, height, width), height, width)


def cut_boxes_tf(boxes: tf.Tensor, prob: float, max_cut: float, seed: tf.Tensor) -> tf.Tensor:
    """Boxes [N, 4] too small, as a detector that cuts objects gives: with probability `prob` per box, each
    edge moves inward by U(0, max_cut) x the box's side along it (so a box keeps >= 1 - 2 max_cut of a side).

    `seed` is a stateless seed; callers clip and keep a minimum size afterwards (jitter_boxes_tf does)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    if prob <= 0.0 or max_cut <= 0.0:
        return boxes
    if max_cut >= 0.5:
        raise ValueError(f"box_cut_max must be < 0.5 (an edge cannot cross the box's centre), got {max_cut}")
    s_pick, s_cut = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    n = tf.shape(boxes)[0]
    pick = tf.cast(tf.random.stateless_uniform([n, 1], s_pick) < prob, tf.float32)
    cut = tf.random.stateless_uniform([n, 4], s_cut, 0.0, max_cut) * pick
    wh = boxes[:, 2:] - boxes[:, :2]
    inward = tf.concat([cut[:, :2] * wh, -cut[:, 2:] * wh], axis=-1)
    return boxes + inward


def keep_min_size(boxes: tf.Tensor, height: tf.Tensor | float, width: tf.Tensor | float) -> tf.Tensor:
    """Grow boxes [N, 4] (already clipped) to at least 1 px per side while staying inside the image."""
    height = tf.cast(height, tf.float32)
    width = tf.cast(width, tf.float32)
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    x1 = tf.minimum(x1, width - 1.0)
    y1 = tf.minimum(y1, height - 1.0)
    x2 = tf.minimum(tf.maximum(x2, x1 + 1.0), width)
    y2 = tf.minimum(tf.maximum(y2, y1 + 1.0), height)
    return tf.stack([x1, y1, x2, y2], axis=-1)
