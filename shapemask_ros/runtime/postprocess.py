"""Mask pasting: M x M probability maps in the outer-box frame -> binary crops in image pixels.

The map of object i covers its outer box O_i exactly with the project's bin-centre convention
(`shapemask_ros.ops.sampling`): sample (r, c) sits at O.x1 + (c + 0.5) * O.w / M, O.y1 + (r + 0.5) * O.h / M.
Each image pixel inside the region is sampled at its centre (x + 0.5, y + 0.5), bilinearly with clamped
borders -- `sampling.bilinear_sample`'s convention -- as one axis-aligned `cv2.warpAffine` per mask
(no per-pixel Python; small BLAS matmuls were 20x slower on a loaded 2-core machine).
"""

from __future__ import annotations

import cv2
import numpy as np


def paste_regions(outer_boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Regions [N, 4] int32 (x, y, w, h): outer boxes rounded outward and clipped to the image.

    Degenerate or non-finite boxes get an empty (w = h = 0) region.
    """
    height, width = int(image_size[0]), int(image_size[1])
    b = np.asarray(outer_boxes, dtype=np.float64).reshape(-1, 4)
    valid = np.all(np.isfinite(b), axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    safe = np.where(valid[:, None], b, 0.0)
    x0 = np.clip(np.floor(safe[:, 0]), 0, width)
    y0 = np.clip(np.floor(safe[:, 1]), 0, height)
    x1 = np.clip(np.ceil(safe[:, 2]), 0, width)
    y1 = np.clip(np.ceil(safe[:, 3]), 0, height)
    w = np.where(valid, x1 - x0, 0)
    h = np.where(valid, y1 - y0, 0)
    return np.stack([x0, y0, w, h], axis=1).astype(np.int32)


def _inverse_affine(x: int, y: int, box: np.ndarray, m: int) -> np.ndarray:
    """2 x 3 map from region pixel (j, i) to the map's continuous index (bin centres at integers).

    Pixel centre x + j + 0.5 lies at map index (x + j + 0.5 - box.x1) * m / box.w - 0.5: axis-aligned affine.
    """
    sx = m / (box[2] - box[0])
    sy = m / (box[3] - box[1])
    return np.array(
        [[sx, 0.0, (x + 0.5 - box[0]) * sx - 0.5], [0.0, sy, (y + 0.5 - box[1]) * sy - 0.5]], dtype=np.float64
    )


def paste_probabilities(
    masks: np.ndarray,
    outer_boxes: np.ndarray,
    image_size: tuple[int, int],
    regions: np.ndarray | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Resample each M x M map onto its region's pixel centres: (float32 crops [h, w], regions [N, 4]).

    regions: [N, 4] (x, y, w, h) to sample instead of `paste_regions(outer_boxes)` -- another pass's
    regions, so that maps of two passes over the same objects land on the same pixels (`paste_masks`).
    """
    masks = np.asarray(masks, dtype=np.float32)
    outer = np.asarray(outer_boxes, dtype=np.float64).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[1] != masks.shape[2]:
        raise ValueError(f"masks must be [N, M, M], got {masks.shape}")
    if masks.shape[0] != outer.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {outer.shape[0]} outer boxes")
    m = masks.shape[1]
    if regions is None:
        regions = paste_regions(outer, image_size)
    else:
        regions = np.asarray(regions, dtype=np.int32).reshape(-1, 4)
        if regions.shape[0] != outer.shape[0]:
            raise ValueError(f"{regions.shape[0]} regions but {outer.shape[0]} outer boxes")
    usable = np.all(np.isfinite(outer), axis=1) & (outer[:, 2] > outer[:, 0]) & (outer[:, 3] > outer[:, 1])
    crops: list[np.ndarray] = []
    for prob, box, ok, (x, y, w, h) in zip(masks, outer, usable, regions, strict=True):
        if w == 0 or h == 0 or not ok:
            crops.append(np.zeros((int(h), int(w)), dtype=np.float32))
            continue
        # bilinear with replicated borders == sampling.bilinear_sample's clamping. Some OpenCV builds
        # quantise sample positions to 1/32 of a map bin (far below a pixel); ~10x faster than NumPy here.
        crops.append(
            cv2.warpAffine(
                prob,
                _inverse_affine(int(x), int(y), box, m),
                (int(w), int(h)),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REPLICATE,
            )
        )
    return crops, regions


def paste_masks(
    masks: np.ndarray,
    outer_boxes: np.ndarray,
    image_size: tuple[int, int],
    threshold: float = 0.5,
    second: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Paste probability maps into image pixels and threshold them.

    masks:        [N, M, M] probabilities, each covering its outer box.
    outer_boxes:  [N, 4] outer boxes (x1, y1, x2, y2) in original-image pixels.
    image_size:   (height, width) of the original image.
    second:       optional (masks, outer_boxes) of a second pass over the same N objects (e.g. the mirrored
                  image's, already mapped back); each pixel then takes the mean of the two probabilities.
                  Its outer boxes may differ (they are clipped to another input), so it is resampled onto
                  the first pass's regions rather than averaged map by map.
    Returns (crops, regions): N uint8 {0, 1} arrays of shape (h, w) and regions [N, 4] int32 (x, y, w, h)
    as in `paste_regions`. A pixel is foreground when its probability is >= `threshold`.
    """
    probs, regions = paste_probabilities(masks, outer_boxes, image_size)
    if second is not None:
        other, _ = paste_probabilities(second[0], second[1], image_size, regions=regions)
        probs = [0.5 * (a + b) for a, b in zip(probs, other, strict=True)]
    return [(p >= threshold).astype(np.uint8) for p in probs], regions


def mask_scores(masks: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """[N] float32 mean probability over each map's foreground (p >= threshold); 0 when it has none."""
    p = np.asarray(masks, dtype=np.float32)
    if p.ndim < 2:
        raise ValueError(f"masks must be [N, M, M], got {p.shape}")
    p = p.reshape(p.shape[0], int(np.prod(p.shape[1:])))
    fg = p >= threshold
    count = np.count_nonzero(fg, axis=1)
    # a row-wise dot product: 5x faster than summing a masked copy (20 x 128² maps: ~1.7 vs ~9 ms here)
    total = np.einsum("ij,ij->i", p, fg.astype(np.float32))
    return np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
