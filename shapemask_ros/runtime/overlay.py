"""The debug view of a segmentation: masks blended over the image in stable per-instance colours.

Used by `shapemask predict`, the node's debug image and bag-evaluation overlays (one drawing for all three).
"""

from __future__ import annotations

import cv2
import numpy as np

from shapemask_ros.runtime.instances import Instances


def instance_color(i: int) -> tuple[int, int, int]:
    """Distinct, stable RGB colour of instance i (golden-ratio hue steps, full saturation)."""
    hue = int((i * 0.618033988749895 % 1.0) * 180)  # OpenCV hue range is [0, 180)
    hsv = np.array([[[hue, 220, 255]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def overlay_image(rgb: np.ndarray, instances: Instances, alpha: float = 0.5) -> np.ndarray:
    """Debug view: each mask alpha-blended in its own colour, its tight box outlined (uint8 RGB copy)."""
    out = np.array(rgb, dtype=np.uint8, copy=True)
    for i in range(len(instances)):
        color = np.array(instance_color(i), np.float32)
        x, y, rw, rh = (int(v) for v in instances.regions[i])
        view = out[y : y + rh, x : x + rw]
        m = np.asarray(instances.masks[i]).astype(bool)[: view.shape[0], : view.shape[1]]
        view[m] = (view[m].astype(np.float32) * (1 - alpha) + color * alpha).round().astype(np.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in instances.boxes[i])
        cv2.rectangle(out, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), instance_color(i), 1)
    return out
