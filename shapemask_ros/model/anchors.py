"""RetinaNet anchors and the box coder. Boxes are (x1, y1, x2, y2) in input pixels."""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from shapemask_ros.config.model_config import AnchorConfig

BBOX_XFORM_CLIP = math.log(1000.0 / 16.0)


def anchors_per_location(cfg: AnchorConfig) -> int:
    return cfg.num_scales * len(cfg.aspect_ratios)


def level_shapes(image_size: int, cfg: AnchorConfig) -> dict[int, tuple[int, int]]:
    """Feature-map size of each level for a square input (ceil division, as 'same' strided convs give)."""
    out = {}
    for level in range(cfg.min_level, cfg.max_level + 1):
        size = image_size
        for _ in range(level):
            size = -(-size // 2)
        out[level] = (size, size)
    return out


def generate_anchors(image_size: int, cfg: AnchorConfig) -> np.ndarray:
    """[A, 4] float32 anchors in head output order: level, row, column, (scale, aspect)."""
    all_levels = []
    for level, (h, w) in level_shapes(image_size, cfg).items():
        stride = 2.0**level
        wh = []
        for octave in range(cfg.num_scales):
            base = cfg.anchor_size * stride * 2.0 ** (octave / cfg.num_scales)
            for ar in cfg.aspect_ratios:
                wh.append((base * math.sqrt(ar), base / math.sqrt(ar)))
        sizes = np.asarray(wh)  # [a, 2] (w, h)
        cy, cx = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
        ctr = np.stack([cx, cy], -1).reshape(-1, 1, 2)
        half = sizes[None] / 2.0
        all_levels.append(np.concatenate([ctr - half, ctr + half], -1).reshape(-1, 4))
    return np.concatenate(all_levels, 0).astype(np.float32)


def encode_boxes(boxes, anchors):
    """Regression targets (dx, dy, dw, dh) of boxes w.r.t. anchors (broadcasting; keras.ops)."""
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    bw = ops.maximum(boxes[..., 2] - boxes[..., 0], 1e-3)
    bh = ops.maximum(boxes[..., 3] - boxes[..., 1], 1e-3)
    bx = boxes[..., 0] + 0.5 * bw
    by = boxes[..., 1] + 0.5 * bh
    return ops.stack([(bx - ax) / aw, (by - ay) / ah, ops.log(bw / aw), ops.log(bh / ah)], axis=-1)


def decode_boxes(deltas, anchors):
    """Inverse of encode_boxes; dw/dh clipped so exp() cannot overflow."""
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    cx = deltas[..., 0] * aw + ax
    cy = deltas[..., 1] * ah + ay
    w = ops.exp(ops.minimum(deltas[..., 2], BBOX_XFORM_CLIP)) * aw
    h = ops.exp(ops.minimum(deltas[..., 3], BBOX_XFORM_CLIP)) * ah
    return ops.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
