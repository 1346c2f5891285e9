"""`Instances`: what the predictor returns for one image, in original-image pixel coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Instances:
    """Per-object results for one image (N objects).

    boxes:        [N, 4] float32 tight boxes (x1, y1, x2, y2), original image pixels.
    scores:       [N] float32 detection scores (1.0 for given boxes without scores).
    class_ids:    [N] int32 contiguous class indices (-1 = unknown / class-agnostic given box).
    masks:        list of N uint8 {0, 1} arrays, each cropped to its `regions[i]`.
    regions:      [N, 4] int32 (x_offset, y_offset, width, height) of each cropped mask (the outer box,
                  rounded out and clipped to the image) -- same meaning as sensor_msgs/RegionOfInterest.
    mask_scores:  [N] float32 mean mask probability over the predicted foreground (0 when empty).
    source_index: [N] int32 index of the input box (or detection) each object came from.
    image_size:   (height, width) of the original image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    masks: list[np.ndarray]
    regions: np.ndarray
    mask_scores: np.ndarray
    source_index: np.ndarray
    image_size: tuple[int, int]
    backend: str = ""
    dropped: dict[str, int] = field(default_factory=dict)  # input boxes removed by reason (counted)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def full_masks(self) -> np.ndarray:
        """[N, H, W] uint8 {0, 1} full-size masks."""
        h, w = self.image_size
        out = np.zeros((len(self), h, w), dtype=np.uint8)
        for i, (m, (x, y, rw, rh)) in enumerate(zip(self.masks, self.regions, strict=True)):
            out[i, y : y + rh, x : x + rw] = m
        return out

    def label_image(self) -> np.ndarray:
        """[H, W] uint16 instance-label image: 0 = background, i+1 = object i (later objects on top)."""
        h, w = self.image_size
        out = np.zeros((h, w), dtype=np.uint16)
        for i, (m, (x, y, rw, rh)) in enumerate(zip(self.masks, self.regions, strict=True)):
            view = out[y : y + rh, x : x + rw]
            view[m.astype(bool)] = i + 1
        return out

    @staticmethod
    def empty(image_size: tuple[int, int], backend: str = "") -> Instances:
        return Instances(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int32),
            masks=[],
            regions=np.zeros((0, 4), np.int32),
            mask_scores=np.zeros((0,), np.float32),
            source_index=np.zeros((0,), np.int32),
            image_size=image_size,
            backend=backend,
        )
