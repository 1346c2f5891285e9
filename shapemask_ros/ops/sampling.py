"""The project's one sampling convention, as a NumPy reference (tests compare every implementation to it).

Pixel (row r, col c) covers [c, c+1) x [r, r+1); its centre is (c + 0.5, r + 0.5). On a feature map of stride
s whose cell i is centred at pixel-space coordinate s * i + c0, point (x, y) lies at continuous feature index
((x - c0) / s, (y - c0) / s). c0 defaults to s / 2 (images: c0 = 0.5); backbone feature maps have their own
(shapemask_ros/model/backbone.py FEATURE_CENTRES, measured in test/model/test_feature_alignment.py).

An n x n grid over box (x1, y1, x2, y2) samples bin centres:
    x_j = x1 + (j + 0.5) * (x2 - x1) / n,   y_i = y1 + (i + 0.5) * (y2 - y1) / n.
Values between samples are bilinear; indices outside the map are clamped to the border.
"""

from __future__ import annotations

import numpy as np


def grid_points(box: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Bin-centre sample coordinates (xs [n], ys [n]) of an n x n grid over box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    t = (np.arange(n) + 0.5) / n
    return x1 + t * (x2 - x1), y1 + t * (y2 - y1)


def bilinear_sample(
    image: np.ndarray, xs: np.ndarray, ys: np.ndarray, stride: float = 1.0, centre: float | None = None
) -> np.ndarray:
    """Sample image [H, W, ...] at all pixel-space points (ys x xs) -> [len(ys), len(xs), ...].

    centre: pixel-space coordinate of the centre of cell 0 (default stride / 2).
    """
    h, w = image.shape[:2]
    c0 = stride / 2.0 if centre is None else float(centre)
    fx = np.clip((np.asarray(xs, np.float64) - c0) / stride, 0.0, w - 1.0)
    fy = np.clip((np.asarray(ys, np.float64) - c0) / stride, 0.0, h - 1.0)
    x0 = np.floor(fx).astype(int)
    y0 = np.floor(fy).astype(int)
    x1 = np.minimum(x0 + 1, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    wx = (fx - x0).reshape((1, -1) + (1,) * (image.ndim - 2))
    wy = (fy - y0).reshape((-1, 1) + (1,) * (image.ndim - 2))
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bot = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return top * (1 - wy) + bot * wy


def crop_and_sample(
    image: np.ndarray, box: np.ndarray, n: int, stride: float = 1.0, centre: float | None = None
) -> np.ndarray:
    """n x n bilinear crop of `image` over pixel-space `box` (bin centres, clamped borders)."""
    xs, ys = grid_points(box, n)
    return bilinear_sample(image, xs, ys, stride, centre)


def box_prior_in_outer(box: np.ndarray, outer: np.ndarray, n: int) -> np.ndarray:
    """Uniform box prior U: 1 where an n x n bin centre of `outer` lies inside `box`, else 0."""
    xs, ys = grid_points(outer, n)
    inx = (xs >= box[0]) & (xs < box[2])
    iny = (ys >= box[1]) & (ys < box[3])
    return (iny[:, None] & inx[None, :]).astype(np.float32)
