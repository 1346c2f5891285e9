"""Input checks and the model's preprocessing (letterbox), shared by every backend.

Images are RGB uint8 H x W x 3. The runtime cannot tell RGB from BGR: convert `bgr8` frames (OpenCV,
most ROS cameras) with `cv2.cvtColor(img, cv2.COLOR_BGR2RGB)` before calling. Boxes are float
(x1, y1, x2, y2) in pixels of the image passed in.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

# Drop reasons reported in `Instances.dropped` ("clipped" boxes are kept, only counted).
NON_FINITE = "non_finite"
EMPTY_BOX = "empty_box"
OUTSIDE_IMAGE = "outside_image"
CLIPPED = "clipped"

_drop_totals: collections.Counter[str] = collections.Counter()


def validate_image(image: np.ndarray) -> np.ndarray:
    """Check an image and return it as a contiguous uint8 RGB array [H, W, 3].

    Accepts uint8 [H, W] or [H, W, 1] (grey, replicated to 3 channels), [H, W, 3] (RGB) and
    [H, W, 4] (RGBA, alpha dropped). Everything else raises ValueError saying what to pass instead.
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array (H x W x 3 uint8 RGB), got {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have 2 (grey) or 3 (H x W x C) dimensions, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    if image.dtype != np.uint8:
        raise ValueError(_dtype_message(image))
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 4:
        image = image[:, :, :3]
    elif channels != 3:
        raise ValueError(f"image must have 1, 3 or 4 channels (grey, RGB, RGBA), got {channels}")
    return np.ascontiguousarray(image)


def _dtype_message(image: np.ndarray) -> str:
    if np.issubdtype(image.dtype, np.floating):
        finite = image[np.isfinite(image)]
        hi = float(finite.max()) if finite.size else float("nan")
        hint = (
            "values look like 0..1: pass (np.clip(image, 0, 1) * 255).round().astype(np.uint8)"
            if hi <= 1.0
            else "pass np.clip(image, 0, 255).round().astype(np.uint8)"
        )
        return f"image must be uint8 RGB (0..255), got {image.dtype} (max {hi:g}); {hint}"
    if image.dtype in (np.uint16, np.int16):
        return (
            f"image must be uint8 RGB, got {image.dtype} (16-bit, e.g. mono16); scale it to 8 bits first "
            "(the right scaling depends on the sensor, e.g. cv2.convertScaleAbs(image, alpha=255/max))"
        )
    return f"image must be uint8 RGB (0..255), got dtype {image.dtype}"


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize keeping aspect so the longer side is `size` (bilinear), pad bottom/right with 0.

    Returns (float32 [size, size, 3] with values 0..255, scale) where model-input pixel = scale * image
    pixel. Normalisation happens inside the model.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w = min(size, max(1, round(w * scale)))
    new_h = min(size, max(1, round(h * scale)))
    src: np.ndarray = image.astype(np.float32)  # resize in float so no uint8 rounding happens before the model
    if (new_h, new_w) != (h, w):
        src = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if src.ndim == 2:
        src = src[:, :, None]
    out = np.zeros((size, size, src.shape[2]), dtype=np.float32)
    out[:new_h, :new_w] = src
    return out, float(scale)


def box_array(boxes: Any) -> np.ndarray:
    """`boxes` as float64 [N, 4] (x1, y1, x2, y2); an empty input is [0, 4]. ValueError for any other shape or
    non-numbers (a caller bug or a bad file, never data to drop). The values are not checked here."""
    try:
        b = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"boxes must be numeric [N, 4] (x1, y1, x2, y2), got {boxes!r:.80}") from e
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] (x1, y1, x2, y2), got {b.shape}")
    return b


def validate_boxes(
    boxes: np.ndarray | list,
    classes: np.ndarray | list | None,
    image_size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, collections.Counter[str]]:
    """Check caller boxes against an image of `image_size` = (height, width).

    Returns (boxes float32 [K, 4] clipped to the image, classes int32 [K] (-1 when none given),
    source_index int32 [K] = index of each kept box in the caller's array, dropped Counter by reason).
    Boxes with NaN/inf ("non_finite"), x2 <= x1 or y2 <= y1 ("empty_box") or no overlap with the image
    ("outside_image") are dropped; boxes partly outside are clipped, kept and counted ("clipped").
    A wrongly shaped array is a caller bug and raises ValueError.
    """
    height, width = int(image_size[0]), int(image_size[1])
    b = box_array(boxes)
    n = b.shape[0]
    if classes is None:
        c = np.full((n,), -1, dtype=np.int64)
    else:
        c = np.asarray(classes)
        if c.size == 0:
            c = c.reshape(0)
        if c.shape != (n,):
            raise ValueError(f"classes must have shape [{n}] (one per box), got {c.shape}")
        integral_float = (
            np.issubdtype(c.dtype, np.floating) and bool(np.all(np.isfinite(c))) and bool(np.all(c == np.round(c)))
        )
        if not (np.issubdtype(c.dtype, np.integer) or integral_float):
            raise ValueError(
                f"classes must be integers (contiguous class index, -1 = unknown), got {c.dtype} {c!r:.80}"
            )
        c = c.astype(np.int64)

    dropped: collections.Counter[str] = collections.Counter()
    finite = np.all(np.isfinite(b), axis=1)
    with np.errstate(invalid="ignore"):
        empty = finite & ((b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]))
        ok = finite & ~empty
        outside = ok & ((b[:, 2] <= 0) | (b[:, 0] >= width) | (b[:, 3] <= 0) | (b[:, 1] >= height))
    keep = ok & ~outside
    clipped = keep & ((b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > width) | (b[:, 3] > height))
    for reason, mask in (
        (NON_FINITE, ~finite),
        (EMPTY_BOX, empty),
        (OUTSIDE_IMAGE, outside),
        (CLIPPED, clipped),
    ):
        count = int(mask.sum())
        if count:
            dropped[reason] = count
    _log_drops(dropped, n)

    idx = np.nonzero(keep)[0]
    kept = b[idx].copy()
    kept[:, 0::2] = np.clip(kept[:, 0::2], 0.0, width)
    kept[:, 1::2] = np.clip(kept[:, 1::2], 0.0, height)
    return kept.astype(np.float32), c[idx].astype(np.int32), idx.astype(np.int32), dropped


def _log_drops(dropped: collections.Counter[str], total: int) -> None:
    """Warn the first few times per reason, then every 1000th, so a 30 Hz stream does not flood the log."""
    for reason, count in dropped.items():
        _drop_totals[reason] += 1
        seen = _drop_totals[reason]
        if seen <= 3 or seen % 1000 == 0:
            verb = "clipped to the image" if reason == CLIPPED else "dropped"
            log.warning("%d of %d input boxes %s (%s; occurrence %d)", count, total, verb, reason, seen)
