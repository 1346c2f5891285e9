"""Back-projection of depth pixels to 3D points in the depth camera's optical frame.

Optical frame (REP 103): x right, y down, z forward.

Pixel (row v, column u) is the integer index; K's principal point is in the same index coordinates, so
    X = x_n(u, v) * z,  Y = y_n(u, v) * z,  Z = z
with (x_n, y_n) = ((u - cx) / fx, (v - cy) / fy) for an undistorted camera, or the cv2.undistortPoints
result for plumb_bob / rational_polynomial / equidistant (see depth.CameraIntrinsics.normalized_rays).
Depth is z-depth (REP 118), not distance along the ray.
"""

from __future__ import annotations

import numpy as np

from shapemask_ros.geometry.depth import CameraIntrinsics, GeometryError


def _as_intrinsics(k: CameraIntrinsics | np.ndarray, shape: tuple[int, int]) -> CameraIntrinsics:
    if isinstance(k, CameraIntrinsics):
        return k
    return CameraIntrinsics.from_matrix(np.asarray(k, np.float64), width=shape[1], height=shape[0])


def backproject_pixels(
    rows: np.ndarray, cols: np.ndarray, z: np.ndarray, intrinsics: CameraIntrinsics | np.ndarray
) -> np.ndarray:
    """Points [N, 3] float64 for pixel indices (rows, cols) with depths z in metres (NaN stays NaN)."""
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    z = np.asarray(z, np.float64)
    if not (rows.shape == cols.shape == z.shape):
        raise ValueError(f"rows, cols and z must have one shape, got {rows.shape}, {cols.shape}, {z.shape}")
    intr = _as_intrinsics(intrinsics, (1, 1) if not rows.size else (int(rows.max()) + 1, int(cols.max()) + 1))
    xn, yn = intr.normalized_rays(rows, cols)
    return np.stack([xn * z, yn * z, z], axis=-1).reshape(-1, 3)


def backproject(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics | np.ndarray,
    pixels: np.ndarray | tuple[np.ndarray, np.ndarray] | None = None,
    *,
    drop_invalid: bool = True,
) -> np.ndarray:
    """Back-project depth pixels (metres, NaN = invalid) to points [N, 3] float64.

    pixels: a boolean mask [H, W], a tuple (rows, cols) of index arrays, or None for every pixel (row-major).
    intrinsics: CameraIntrinsics (distortion honoured) or a 3x3 K (pinhole). With drop_invalid the points of
    NaN / non-positive depths are left out; otherwise they come back as NaN rows, one per selected pixel.
    """
    depth = np.asarray(depth_m)
    if depth.ndim != 2:
        raise GeometryError("bad_depth", f"depth must be [H, W], got shape {depth.shape}")
    intr = _as_intrinsics(intrinsics, depth.shape)
    if isinstance(intrinsics, CameraIntrinsics) and intr.shape != depth.shape:
        raise GeometryError("size_mismatch", f"intrinsics are for {intr.shape}, depth is {depth.shape}")
    if pixels is None:
        rows, cols = np.indices(depth.shape).reshape(2, -1)
    elif isinstance(pixels, tuple):
        rows, cols = (np.asarray(p, np.int64).reshape(-1) for p in pixels)
        if rows.size and (
            rows.min() < 0 or cols.min() < 0 or rows.max() >= depth.shape[0] or cols.max() >= depth.shape[1]
        ):
            raise ValueError(f"pixel indices outside the {depth.shape} depth image")
    else:
        mask = np.asarray(pixels)
        if mask.shape != depth.shape:
            raise GeometryError("size_mismatch", f"mask {mask.shape} does not match depth {depth.shape}")
        rows, cols = np.nonzero(mask)
    z = depth[rows, cols].astype(np.float64)
    if drop_invalid:
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(z) & (z > 0)
        rows, cols, z = rows[ok], cols[ok], z[ok]
    return backproject_pixels(rows, cols, z, intr)
