"""Frozen copy of compute_objects3d as of commit 50d520b (before issue 24's ROI-only 3D stage).

The equivalence tests (test_objects3d_equivalence.py) run it beside the current implementation and
require identical outputs. Self-contained on purpose: its helpers and the full-frame ray tables are
copied here so that later changes to shapemask_ros.geometry cannot change the reference.
Only the output container (Objects3D, _empty), the quaternion conversion and the alignment helpers
are shared; issue 24 did not touch them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry.depth import (
    Alignment,
    CameraIntrinsics,
    GeometryError,
    check_alignment,
    intrinsics_for_depth,
)
from shapemask_ros.geometry.objects3d import (
    STATUS_BAD_MASK,
    STATUS_EMPTY_MASK,
    STATUS_NO_DEPTH,
    STATUS_OK,
    STATUS_TOO_FEW_POINTS,
    Objects3D,
    _empty,
    rotation_to_quaternion,
)
from shapemask_ros.geometry.undistort import undistort_points

MAD_TO_SIGMA = 1.4826
BAND_SAMPLE_POINTS = 1024


def ray_images(intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """[H, W] normalised x/z and y/z of every pixel (the old full-frame tables, not cached here)."""
    vv, uu = np.mgrid[0 : intr.height, 0 : intr.width]
    if not intr.has_distortion:
        k = intr.k
        y = (np.asarray(vv, np.float64) - k[5]) / k[4]
        x = (np.asarray(uu, np.float64) - k[2] - k[1] * y) / k[0]
        return x, y
    pts = np.stack([uu.ravel(), vv.ravel()], axis=-1).astype(np.float64).reshape(-1, 1, 2)
    d = np.asarray(intr.d, np.float64)
    # the old code's OpenCV call, in the form the installed OpenCV has (issue 27's geometry.undistort)
    und = undistort_points(pts, intr.matrix, d, fisheye=intr.distortion_model == "equidistant")
    und = und.reshape(intr.height, intr.width, 2)
    return np.ascontiguousarray(und[..., 0]), np.ascontiguousarray(und[..., 1])


def _moments(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = max(p.shape[1], 1)
    c = p.sum(axis=1) / m
    x, y, z = p
    xy, xz, yz = np.vdot(x, y), np.vdot(x, z), np.vdot(y, z)
    second = np.array([[np.vdot(x, x), xy, xz], [xy, np.vdot(y, y), yz], [xz, yz, np.vdot(z, z)]])
    return c, second / m - c[:, None] * c[None, :]


def _box_axes(cov: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    _, vecs = np.linalg.eigh(cov)
    e0, e2 = vecs[:, :, 2], vecs[:, :, 0]
    n = np.arange(len(cov))
    e0 = np.where((e0[n, np.argmax(np.abs(e0), axis=1)] < 0)[:, None], -e0, e0)
    e2 = np.where((np.einsum("ij,ij->i", e2, centroids) > 0)[:, None], -e2, e2)
    e1 = np.cross(e2, e0)
    return np.stack([e0, e1, e2], axis=2)


def _extents(p: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    local = rot.T @ p
    lo, hi = local.min(axis=1), local.max(axis=1)
    return rot @ ((lo + hi) / 2), hi - lo


def _median(a: np.ndarray) -> float:
    k = a.size // 2
    if a.size % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, (k - 1, k))
    return 0.5 * (float(part[k - 1]) + float(part[k]))


def _depth_band(z: np.ndarray, crop: np.ndarray, cfg: GeometryConfig) -> tuple[np.ndarray | None, float]:
    sample = z if z.size <= BAND_SAMPLE_POINTS else z[:: -(-z.size // BAND_SAMPLE_POINTS)]
    med = _median(sample)
    keep = None
    if cfg.mad_k > 0:
        band = max(cfg.mad_k * MAD_TO_SIGMA * _median(np.abs(sample - med)), cfg.min_band_m)
        keep = np.abs(crop - med) <= band
    if cfg.percentile_low > 0 or cfg.percentile_high < 100:
        lo, hi = np.percentile(sample, [cfg.percentile_low, cfg.percentile_high])
        inside = (crop >= lo) & (crop <= hi)
        keep = inside if keep is None else keep & inside
    return keep, med


def _crop_on_depth(mask: np.ndarray, region: Sequence[int], align: Alignment) -> tuple[tuple[Any, ...], np.ndarray]:
    x, y, w, h = region
    if mask.shape != (h, w):
        raise GeometryError("bad_mask", f"mask shape {mask.shape} does not match region {w}x{h}")
    if align.identity:
        y0, y1 = max(y, 0), min(y + h, align.depth_shape[0])
        x0, x1 = max(x, 0), min(x + w, align.depth_shape[1])
        y1, x1 = max(y1, y0), max(x1, x0)
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x] != 0
        return (slice(y0, y1), slice(x0, x1)), m
    rows_d, rows_src = align.depth_indices(y, h, axis=0)
    cols_d, cols_src = align.depth_indices(x, w, axis=1)
    m = mask[np.ix_(rows_src, cols_src)] != 0
    return np.ix_(rows_d, cols_d), m


def compute_objects3d(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    masks: Sequence[np.ndarray] | np.ndarray,
    regions: np.ndarray | None = None,
    *,
    image_shape: tuple[int, int] | None = None,
    config: GeometryConfig | None = None,
    return_points: bool = False,
) -> Objects3D:
    """The pre-issue-24 implementation, unchanged apart from the ray tables (computed, not cached)."""
    cfg = config or GeometryConfig()
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise GeometryError("bad_depth", "depth must be a float [H, W] array in metres")
    if regions is None:
        full = np.asarray(masks)
        if full.ndim != 3 and not (full.ndim == 1 and full.size == 0):
            raise GeometryError("bad_mask", f"full-size masks must be [N, H, W], got shape {full.shape}")
        n = full.shape[0] if full.ndim == 3 else 0
        fh, fw = (full.shape[1], full.shape[2]) if n else depth.shape
        image_shape = image_shape or (fh, fw)
        mask_list: Sequence[np.ndarray] | np.ndarray = list(full) if n else []
        region_arr = np.tile(np.array([[0, 0, fw, fh]], np.int64), (n, 1))
    else:
        mask_list = masks
        region_arr = np.asarray(regions, np.int64).reshape(-1, 4)
        n = len(mask_list)
        if region_arr.shape[0] != n:
            raise GeometryError("bad_mask", f"{n} masks but {region_arr.shape[0]} regions")
        image_shape = image_shape or depth.shape
    align = check_alignment(depth.shape, image_shape, cfg.registration)
    intr = intrinsics_for_depth(intrinsics, depth.shape, cfg.registration)

    out = _empty(n)
    if n == 0:
        out.box_quaternions = np.zeros((0, 4))
        out.points = [] if return_points else None
        return out
    with np.errstate(invalid="ignore"):
        valid = (depth >= cfg.min_depth_m) if cfg.min_depth_m > 0 else (depth > 0)
        valid &= (depth <= cfg.max_depth_m) if cfg.max_depth_m > 0 else (depth < np.inf)
    rays_x, rays_y = ray_images(intr)
    region_list = region_arr.tolist()
    pts_all: list[np.ndarray | None] = [None] * n
    cov = np.zeros((n, 3, 3))
    for i in range(n):
        try:
            index, m = _crop_on_depth(np.asarray(mask_list[i]), region_list[i], align)
        except GeometryError:
            out.status[i] = STATUS_BAD_MASK
            continue
        n_mask = int(np.count_nonzero(m))
        out.num_mask_pixels[i] = n_mask
        crop = depth[index]
        ok = m & valid[index]
        z = crop[ok]
        nv = z.size
        out.num_valid_points[i] = nv
        out.valid_fraction[i] = nv / n_mask if n_mask else 0.0
        if n_mask == 0 or nv == 0:
            out.status[i] = STATUS_EMPTY_MASK if n_mask == 0 else STATUS_NO_DEPTH
            continue
        keep, out.median_depth[i] = _depth_band(z, crop, cfg)
        if keep is not None:
            ok &= keep
            z = crop[ok]
        pts = np.empty((3, z.size))
        pts[2] = z
        np.multiply(rays_x[index][ok], pts[2], out=pts[0])
        np.multiply(rays_y[index][ok], pts[2], out=pts[1])
        out.num_inliers[i] = z.size
        out.centroids[i], cov[i] = _moments(pts)
        out.status[i] = STATUS_OK if z.size >= cfg.min_points else STATUS_TOO_FEW_POINTS
        pts_all[i] = pts
    done = np.array([p is not None for p in pts_all])
    if done.any():
        out.box_rotations[done] = _box_axes(cov[done], out.centroids[done])
    pts_out: list[np.ndarray] = []
    for i, obj_pts in enumerate(pts_all):
        if obj_pts is None:
            pts_out.append(np.zeros((0, 3), np.float32))
            continue
        out.box_centers[i], out.box_sizes[i] = _extents(obj_pts, out.box_rotations[i])
        if return_points:
            pts_out.append(obj_pts.T.astype(np.float32))
    out.box_quaternions = rotation_to_quaternion(out.box_rotations)
    out.points = pts_out if return_points else None
    for s in out.status:
        out.counts[s] = out.counts.get(s, 0) + 1
    return out
