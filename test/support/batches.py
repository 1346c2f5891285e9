"""A hand-made training batch with exact targets (training and loss tests)."""

from __future__ import annotations

import numpy as np


def hand_batch(batch: int = 2, size: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """Two rectangles per image with exact targets (a disc in the first, a square in the second)."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 40, (batch, size, size, 3)).astype(np.float32)
    boxes = np.array([[6, 8, 30, 36], [34, 30, 60, 58]], np.float32)
    img[:, 8:36, 6:30, 0] = 220
    img[:, 30:58, 34:60, 1] = 220
    yy, xx = np.mgrid[:32, :32]
    disc = (((yy - 15.5) / 12.8) ** 2 + ((xx - 15.5) / 12.8) ** 2 <= 1).astype(np.float32)
    square = ((np.abs(yy - 15.5) < 12.8) & (np.abs(xx - 15.5) < 12.8)).astype(np.float32)
    t32 = np.stack([disc, square])
    t128 = np.repeat(np.repeat(t32, 4, axis=1), 4, axis=2)
    return {
        "image": img,
        "gt_boxes": np.tile(np.concatenate([boxes, np.zeros((2, 4), np.float32)]), (batch, 1, 1)),
        "gt_classes": np.tile(np.array([0, 1, -1, -1], np.int32), (batch, 1)),
        "mask_boxes": np.tile(boxes, (batch, 1, 1)),
        "mask_classes": np.tile(np.array([0, 1], np.int32), (batch, 1)),
        "mask_valid": np.ones((batch, 2), np.float32),
        "mask_targets": np.tile(t32, (batch, 1, 1, 1)),
        "fine_mask_targets": np.tile(t128, (batch, 1, 1, 1)),
    }
