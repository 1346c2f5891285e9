"""Box ops in NumPy. Boxes are [..., 4] float arrays `(x1, y1, x2, y2)` in pixels, x2/y2 exclusive edges."""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:4] - b[..., :2]], axis=-1)


def clip_boxes(b: np.ndarray, height: float, width: float) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64).copy()
    b[..., 0::2] = np.clip(b[..., 0::2], 0.0, width)
    b[..., 1::2] = np.clip(b[..., 1::2], 0.0, height)
    return b


def scale_boxes(b: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """Scale boxes about their centres (factor may be per-box [..., 1] or [..., 2] for (w, h))."""
    b = np.asarray(b, dtype=np.float64)
    c = (b[..., :2] + b[..., 2:4]) / 2.0
    half = (b[..., 2:4] - b[..., :2]) / 2.0 * factor
    return np.concatenate([c - half, c + half], axis=-1)


def flip_boxes_lr(b: np.ndarray, width: float) -> np.ndarray:
    """Boxes in the left-right mirrored image of width `width` (x -> width - x); its own inverse."""
    b = np.asarray(b, dtype=np.float64)
    return np.stack([width - b[..., 2], b[..., 1], width - b[..., 0], b[..., 3]], axis=-1)


def box_area(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of [N,4] and [M,4] boxes -> [N, M]."""
    a = np.asarray(a, dtype=np.float64)[:, None, :]
    b = np.asarray(b, dtype=np.float64)[None, :, :]
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    union = box_area(a) + box_area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def shrink_boxes(b: np.ndarray, rng: np.random.Generator, low: float = 0.75, high: float = 1.0) -> np.ndarray:
    """Paper Table 3 perturbation: shrink width and height independently by U(low, high) about the centre."""
    b = np.asarray(b, dtype=np.float64)
    f = rng.uniform(low, high, size=b.shape[:-1] + (2,))
    return scale_boxes(b, f)


def perturb_edges(b: np.ndarray, rng: np.random.Generator, sigma: float = 0.1) -> np.ndarray:
    """Detector-like box noise: each edge moves independently by N(0, sigma x the box's side along it).

    Boxes [..., 4] xyxy; an edge pair that would cross is collapsed onto its midpoint (callers clip and
    drop empty boxes)."""
    b = np.asarray(b, dtype=np.float64)
    wh = np.concatenate([b[..., 2:] - b[..., :2]] * 2, axis=-1)
    out = b + rng.normal(0.0, sigma, size=b.shape) * wh
    mid = (out[..., :2] + out[..., 2:]) / 2
    lo = np.minimum(out[..., :2], mid)
    hi = np.maximum(out[..., 2:], mid)
    return np.concatenate([lo, hi], axis=-1)
