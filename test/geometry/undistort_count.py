"""Counting the pixels the geometry code sends through OpenCV's undistortion (ray-table reuse tests)."""

from __future__ import annotations

import numpy as np

from shapemask_ros.geometry.depth import CameraIntrinsics


def count_undistorted_pixels(monkeypatch) -> list[int]:
    """Patch CameraIntrinsics.undistort_pixels to count its pixels; returns the one-element counter."""
    count = [0]
    real = CameraIntrinsics.undistort_pixels

    def counting(self, rows, cols):
        count[0] += np.size(rows)
        return real(self, rows, cols)

    monkeypatch.setattr(CameraIntrinsics, "undistort_pixels", counting)
    return count
