"""The demo's real scene as the 3D tests read it: the ARC 2017 tote through a 512x384 crop panning over the
640x480 scene (K's principal point moves every frame, as in `make demo`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from shapemask_ros.geometry.depth import CameraIntrinsics


def tote_pan_frames(frames: int, margin: int) -> Iterator[tuple[CameraIntrinsics, np.ndarray, list, np.ndarray]]:
    """(intrinsics, depth, cropped masks, regions) per frame; each mask cropped to its box grown by `margin`
    pixels (clipped to the crop); objects with fewer than 100 visible pixels left out."""
    from shapemask_ros.bag.scenes.tote_bag import crop_offsets, load_tote_scene

    s = load_tote_scene()
    w, h = 512, 384
    for ox, oy in crop_offsets(frames, w, h, 640, 480):
        k = s.k.copy()
        k[0, 2] -= ox
        k[1, 2] -= oy
        intr = CameraIntrinsics.from_matrix(k, w, h, s.d)
        depth = np.ascontiguousarray(s.depth_m[oy : oy + h, ox : ox + w])
        masks, regions = [], []
        for full in s.masks[:, oy : oy + h, ox : ox + w]:
            ys, xs = np.nonzero(full)
            if len(xs) < 100:
                continue
            x0, y0 = max(int(xs.min()) - margin, 0), max(int(ys.min()) - margin, 0)
            x1, y1 = min(int(xs.max()) + 1 + margin, w), min(int(ys.max()) + 1 + margin, h)
            masks.append(full[y0:y1, x0:x1].astype(np.uint8))
            regions.append((x0, y0, x1 - x0, y1 - y0))
        yield intr, depth, masks, np.asarray(regions)
