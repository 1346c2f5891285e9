"""Per-object 3D geometry from instance masks and an aligned depth image (for grasp planners).

For each mask: valid depth pixels under the mask -> robust depth band around the median (drops background
and flying pixels at mask borders) -> back-projected inliers -> centroid (mean), oriented box by PCA,
counts and a status. Objects are never dropped, so `instance_index` always points into the mask array.

Outlier band: keep |z - median| <= max(mad_k * 1.4826 * MAD, min_band_m), where 1.4826 * MAD estimates
the standard deviation of a normal distribution; optionally intersected with a percentile band
[percentile_low, percentile_high] of the valid depths. The median is a 50 % breakdown estimator, so
background pixels at the border are rejected as long as they are fewer than the object's own pixels.

Oriented box: axes are the eigenvectors of the inlier covariance in descending variance order
(columns of R: major, middle, minor). Signs are fixed so results are repeatable: the minor axis (the
surface normal of a flat object) points towards the camera, the major axis's largest component is
positive, and the middle axis completes a right-handed frame (det R = +1). Extents are max - min of the
inliers along each axis; the box centre is the midpoint of those ranges (not the centroid).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry.depth import (
    Alignment,
    CameraIntrinsics,
    GeometryError,
    check_alignment,
    intrinsics_for_depth,
    millimetres_to_metres,
)
from shapemask_ros.geometry.rays import RayCache, ray_cache

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_TOO_FEW_POINTS = "too_few_points"  # fewer than min_points inliers: numbers are unreliable
STATUS_NO_DEPTH = "no_depth"  # the mask has pixels but none has a valid depth
STATUS_EMPTY_MASK = "empty_mask"  # the mask has no pixel inside the depth image
STATUS_BAD_MASK = "bad_mask"  # mask and region disagree (logged); nothing computed
MAD_TO_SIGMA = 1.4826


@dataclass
class Objects3D:
    """3D geometry of N objects, in the depth camera's optical frame (metres). Row i = input mask i.

    centroids / box_centers / box_sizes are NaN and the rotation the identity when nothing was computed
    (status no_depth, empty_mask, bad_mask). box_quaternions are (x, y, z, w) like geometry_msgs.
    points: per-object inlier points [M_i, 3] float32 when requested, else None; `cloud` is their
    concatenation (computed anyway, so the PointCloud2 needs no copy).
    """

    instance_index: np.ndarray  # [N] int32
    centroids: np.ndarray  # [N, 3] float64
    box_centers: np.ndarray  # [N, 3] float64
    box_rotations: np.ndarray  # [N, 3, 3] float64, columns = box axes
    box_quaternions: np.ndarray  # [N, 4] float64 (x, y, z, w)
    box_sizes: np.ndarray  # [N, 3] float64 extents along the box axes
    median_depth: np.ndarray  # [N] float64
    num_mask_pixels: np.ndarray  # [N] int64, mask pixels on the depth grid
    num_valid_points: np.ndarray  # [N] int64, of those with a valid depth
    num_inliers: np.ndarray  # [N] int64, valid points inside the depth band
    valid_fraction: np.ndarray  # [N] float32 = num_valid_points / num_mask_pixels (0 for empty masks)
    status: list[str]
    points: list[np.ndarray] | None = None
    counts: dict[str, int] = field(default_factory=dict)  # status -> number of objects
    cloud: np.ndarray | None = None  # [sum M_i, 3] float32 (a view of rows x, y, z): all points in object order
    # the same points as PointCloud2 records (x, y, z float32 + the object's row as uint32 in the last column's
    # bits, 16 bytes a point; `cloud` is a view of it), when the compiled kernel made them and all are finite
    cloud_records: np.ndarray | None = None  # [sum M_i, 4] float32

    def __len__(self) -> int:
        return len(self.status)


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] (det +1) -> unit quaternions [..., 4] (x, y, z, w) with w >= 0.

    Shepperd's method: build from the largest of (w, x, y, z) for numerical stability.
    """
    r = np.asarray(r, np.float64)
    m = r.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    diag = np.diagonal(m, axis1=1, axis2=2)
    cand = np.stack([1 + tr, 1 + 2 * diag[:, 0] - tr, 1 + 2 * diag[:, 1] - tr, 1 + 2 * diag[:, 2] - tr], -1)
    best = np.argmax(cand, axis=1)
    q = np.empty((m.shape[0], 4))  # (w, x, y, z) while building
    s = np.sqrt(np.maximum(cand[np.arange(m.shape[0]), best], 1e-300)) * 2  # = 4 * |largest component|
    a, b, c, d = best == 0, best == 1, best == 2, best == 3
    q[a] = np.stack(
        [
            s[a] / 4,
            (m[a, 2, 1] - m[a, 1, 2]) / s[a],
            (m[a, 0, 2] - m[a, 2, 0]) / s[a],
            (m[a, 1, 0] - m[a, 0, 1]) / s[a],
        ],
        -1,
    )
    q[b] = np.stack(
        [
            (m[b, 2, 1] - m[b, 1, 2]) / s[b],
            s[b] / 4,
            (m[b, 0, 1] + m[b, 1, 0]) / s[b],
            (m[b, 0, 2] + m[b, 2, 0]) / s[b],
        ],
        -1,
    )
    q[c] = np.stack(
        [
            (m[c, 0, 2] - m[c, 2, 0]) / s[c],
            (m[c, 0, 1] + m[c, 1, 0]) / s[c],
            s[c] / 4,
            (m[c, 1, 2] + m[c, 2, 1]) / s[c],
        ],
        -1,
    )
    q[d] = np.stack(
        [
            (m[d, 1, 0] - m[d, 0, 1]) / s[d],
            (m[d, 0, 2] + m[d, 2, 0]) / s[d],
            (m[d, 1, 2] + m[d, 2, 1]) / s[d],
            s[d] / 4,
        ],
        -1,
    )
    q[q[:, 0] < 0] *= -1
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q[:, [1, 2, 3, 0]].reshape(r.shape[:-2] + (4,))


def pca_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centroid, box centre, rotation [3, 3] (columns = axes, det +1) and extents of points [M, 3].

    Axis order and signs follow the module docstring.
    """
    p = np.ascontiguousarray(np.asarray(points, np.float64).T)
    c, cov = _moments(p)
    rot = _box_axes(cov[None], c[None])[0]
    centre, size = _extents(p, rot)
    return c, centre, rot, size


def _moments(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [3] and covariance [3, 3] of points stored as rows x, y, z ([3, M], float64).

    E[p p^T] - c c^T from six dot products (4x faster than p @ p.T on a 3 x M array); the cancellation is
    harmless here (metres, float64). np.vdot, not np.dot: OpenBLAS threads dot for a few thousand points
    and doubles the CPU time for no gain in wall time (measured)."""
    m = max(p.shape[1], 1)
    c = p.sum(axis=1) / m
    x, y, z = p
    xy, xz, yz = np.vdot(x, y), np.vdot(x, z), np.vdot(y, z)
    second = np.array([[np.vdot(x, x), xy, xz], [xy, np.vdot(y, y), yz], [xz, yz, np.vdot(z, z)]])
    return c, second / m - c[:, None] * c[None, :]


def _box_axes(cov: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Rotations [N, 3, 3] (columns major, middle, minor; det +1) from covariances [N, 3, 3], in one batch."""
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues, batched
    e0, e2 = vecs[:, :, 2], vecs[:, :, 0]
    n = np.arange(len(cov))
    e0 = np.where((e0[n, np.argmax(np.abs(e0), axis=1)] < 0)[:, None], -e0, e0)
    e2 = np.where((np.einsum("ij,ij->i", e2, centroids) > 0)[:, None], -e2, e2)  # minor axis faces the camera
    e1 = np.cross(e2, e0)
    return np.stack([e0, e1, e2], axis=2)


def _extents(p: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Box centre and extents of points [3, M] along the columns of rot.

    A BLAS product: the node and bag-eval limit NumPy's BLAS to one thread (utils/threads.py), without
    which OpenBLAS's idle workers spin and double this stage's CPU time."""
    local = rot.T @ p
    lo, hi = local.min(axis=1), local.max(axis=1)
    return rot @ ((lo + hi) / 2), hi - lo


def _median(a: np.ndarray) -> float:
    """np.median of a non-empty 1-D array (a partition without np.median's per-call overhead)."""
    k = a.size // 2
    if a.size % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, (k - 1, k))
    return 0.5 * (float(part[k - 1]) + float(part[k]))


# Median, MAD and percentiles of an object's depths are estimated from at most this many valid pixels
# (an even stride over the mask). The median's standard error is then ~0.04 robust sigmas, far below the
# band's width, and the cost stops growing with the object's size.
BAND_SAMPLE_POINTS = 1024


def _depth_band(z: np.ndarray, cfg: GeometryConfig) -> tuple[np.ndarray | None, float]:
    """Inliers among the valid depths z (bool [len(z)], None = all) and the median of z.

    Statistics come from an even stride of at most BAND_SAMPLE_POINTS of z. The band is tested on z (1-D,
    the valid pixels only) rather than on the ROI crop: fewer elements, and the caller filters z and the
    rays with it instead of indexing the crop a second time (same pixels, same order)."""
    sample = z if z.size <= BAND_SAMPLE_POINTS else z[:: -(-z.size // BAND_SAMPLE_POINTS)]
    med = _median(sample)
    keep = None
    if cfg.mad_k > 0:
        band = max(cfg.mad_k * MAD_TO_SIGMA * _median(np.abs(sample - med)), cfg.min_band_m)
        dev = z - med
        keep = np.abs(dev, out=dev) <= band
    if cfg.percentile_low > 0 or cfg.percentile_high < 100:
        lo, hi = np.percentile(sample, [cfg.percentile_low, cfg.percentile_high])
        inside = (z >= lo) & (z <= hi)
        keep = inside if keep is None else keep & inside
    return keep, med


def _valid_depth(crop: np.ndarray, cfg: GeometryConfig) -> np.ndarray:
    """Pixels of a depth crop inside the configured range (NaN = invalid compares False; NumPy >= 2 raises
    no floating-point warning for comparisons, so no errstate is needed)."""
    valid = (crop >= cfg.min_depth_m) if cfg.min_depth_m > 0 else (crop > 0)
    valid &= (crop <= cfg.max_depth_m) if cfg.max_depth_m > 0 else (crop < np.inf)
    return valid


def _crop_on_depth(mask: np.ndarray, region: Sequence[int], align: Alignment) -> tuple[tuple[Any, ...], np.ndarray]:
    """Where a mask's region lies on the depth image: an index for depth-sized arrays (slices, or np.ix_
    arrays under registration) and the mask on that crop (bool).

    Working on crops with boolean masks avoids fancy indexing of the whole depth image per object.
    """
    x, y, w, h = region  # Python ints (the caller converts once per frame)
    if mask.shape != (h, w):
        raise GeometryError("bad_mask", f"mask shape {mask.shape} does not match region {w}x{h}")
    if align.identity:
        # Clip the region to the image (regions are normally inside already).
        y0, y1 = max(y, 0), min(y + h, align.depth_shape[0])
        x0, x1 = max(x, 0), min(x + w, align.depth_shape[1])
        y1, x1 = max(y1, y0), max(x1, x0)
        m = mask[y0 - y : y1 - y, x0 - x : x1 - x] != 0
        return (slice(y0, y1), slice(x0, x1)), m
    rows_d, rows_src = align.depth_indices(y, h, axis=0)
    cols_d, cols_src = align.depth_indices(x, w, axis=1)
    m = mask[np.ix_(rows_src, cols_src)] != 0
    return np.ix_(rows_d, cols_d), m


# Which implementation compute_objects3d runs by default: "auto" = the compiled kernel when numba imports,
# else NumPy; "numba" = the compiled kernel or an error; "numpy". SHAPEMASK_GEOMETRY_KERNEL overrides "auto".
GEOMETRY_KERNELS: tuple[str, ...] = ("auto", "numba", "numpy")
KERNEL_ENV = "SHAPEMASK_GEOMETRY_KERNEL"
_kernel_lock = threading.Lock()
_kernel_choice: tuple[str, str] | None = None  # (kernel, why), decided once per process


def geometry_kernel() -> tuple[str, str]:
    """(the process's default kernel, "numba" or "numpy"; a sentence saying which and why), decided and
    logged on first use from SHAPEMASK_GEOMETRY_KERNEL (default "auto"); see set_geometry_kernel."""
    choice = _kernel_choice
    if choice is None:
        return set_geometry_kernel(os.environ.get(KERNEL_ENV, "").strip().lower() or "auto", only_if_unset=True)
    return choice


def set_geometry_kernel(kernel: str, *, only_if_unset: bool = False, quiet: bool = False) -> tuple[str, str]:
    """Set the process's default kernel: "auto" (numba when it imports, else NumPy), "numba" (ImportError
    when numba does not import) or "numpy". Returns (kernel, why) and logs it unless `quiet`."""
    global _kernel_choice
    if kernel not in GEOMETRY_KERNELS:
        raise ValueError(f"geometry kernel must be one of {GEOMETRY_KERNELS} ({KERNEL_ENV}), got {kernel!r}")
    with _kernel_lock:
        if only_if_unset and _kernel_choice is not None:
            return _kernel_choice
        if kernel == "numpy":
            choice = ("numpy", "3D stage: NumPy (geometry kernel 'numpy')")
        else:
            try:
                import numba

                from shapemask_ros.geometry import objects3d_numba  # noqa: F401  # compiles lazily
            except (ImportError, OSError) as e:  # OSError: llvmlite's shared library
                if kernel == "numba":
                    raise ImportError(f"geometry kernel 'numba' asked for, but numba does not import: {e}") from e
                choice = ("numpy", f"3D stage: NumPy (numba not available: {e})")
            else:
                choice = ("numba", f"3D stage: compiled kernel (numba {numba.__version__})")
        _kernel_choice = choice
    if not quiet:
        log.info("%s", choice[1])
    return choice


def prepare_objects3d() -> str:
    """Make the first frame's 3D stage as fast as the next ones: decide the kernel and, for numba, compile
    it (or load numba's on-disk cache). For the node's configure and bag-eval's warm-up. Returns what to log
    (the choice and, for numba, how long it took)."""
    env = os.environ.get(KERNEL_ENV, "").strip().lower() or "auto"
    kernel, why = set_geometry_kernel(env, only_if_unset=True, quiet=True)
    if kernel != "numba":
        return why
    from shapemask_ros.geometry import objects3d_numba

    t0 = time.perf_counter()
    # the 3D stage's inputs: uint16 millimetres (16UC1) or float32 metres (32FC1; image_codec.depth_pixels), uint8
    # masks. Every camera passes arrays of the same types (rays.KernelTables), so one small frame per depth type
    # compiles every specialisation the stage runs
    intr = CameraIntrinsics.from_matrix(np.array([[10.0, 0, 4], [0, 10.0, 4], [0, 0, 1]]), 8, 8)
    for depth in (np.full((8, 8), 1000, np.uint16), np.full((8, 8), 1.0, np.float32)):
        for points in (True, False):
            compute_objects3d(
                depth, intr, [np.ones((4, 4), np.uint8)], np.array([[2, 2, 4, 4]]), return_points=points, kernel="numba"
            )
    cache = "" if objects3d_numba.CACHED else "; no writable numba cache, compiled in this process"
    return f"{why}, ready in {time.perf_counter() - t0:.2f} s{cache}"


def _use_numba(kernel: str | None, depth: np.ndarray) -> bool:
    """Whether this call runs the compiled kernel (it takes float32 and float64 metres and uint16 millimetres)."""
    choice = kernel or geometry_kernel()[0]
    if choice not in ("numba", "numpy"):
        raise ValueError(f"kernel must be 'numba' or 'numpy', got {kernel!r}")
    return choice == "numba" and depth.dtype in (np.float32, np.float64, np.uint16)


def compute_objects3d(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    masks: Sequence[np.ndarray] | np.ndarray,
    regions: np.ndarray | None = None,
    *,
    image_shape: tuple[int, int] | None = None,
    config: GeometryConfig | None = None,
    return_points: bool = False,
    kernel: str | None = None,
) -> Objects3D:
    """3D geometry of every mask (one row per mask, none dropped).

    depth_m: [H, W] float metres, NaN = invalid (see depth.depth_to_metres), or uint16 millimetres (16UC1, 0 =
      invalid), read as depth.millimetres_to_metres' float32 metres, pixel by pixel under the masks only.
    intrinsics: of the depth image, or of the colour image when config.registration == "scale".
    masks: N cropped {0,1} masks with regions [N, 4] (x, y, w, h) like Instances, or [N, H', W'] full-size
      masks with regions None. Masks live on the colour image of `image_shape` (H', W'; default: the
      depth size or, for full masks, their own size).
    kernel: "numba" (compiled; float32 / float64 depth, else NumPy) or "numpy"; None = the process default
      (`geometry_kernel()`). Both give the same masks, counts, statuses, medians and points; the sums behind
      centroids and boxes differ in order (objects3d_numba's docstring).
    Raises GeometryError for frame-level problems (size_mismatch, bad_registration, bad_depth); per-object
    problems become a status.
    """
    cfg = config or GeometryConfig()
    depth = np.asarray(depth_m)
    if depth.ndim != 2 or not (np.issubdtype(depth.dtype, np.floating) or depth.dtype == np.uint16):
        raise GeometryError(
            "bad_depth",
            f"depth must be a float [H, W] array in metres or uint16 millimetres, got {depth.dtype} {depth.shape}",
        )
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
        out.cloud = np.zeros((0, 3), np.float32) if return_points else None
        return out
    rays = ray_cache(intr)
    region_list = region_arr.tolist()
    if _use_numba(kernel, depth):
        from shapemask_ros.geometry import objects3d_numba

        def bad_mask(i: int, why: str) -> None:
            log.warning("object %d: %s", i, GeometryError("bad_mask", why))
            out.status[i] = STATUS_BAD_MASK

        frame = objects3d_numba.fill_objects(
            out, depth, mask_list, region_list, align, rays, cfg, return_points, bad_mask
        )
        objects3d_numba.finish_boxes(out, frame)
        names = {objects3d_numba.OK: STATUS_OK, objects3d_numba.TOO_FEW_POINTS: STATUS_TOO_FEW_POINTS}
        names[objects3d_numba.NO_DEPTH] = STATUS_NO_DEPTH
        for i in np.flatnonzero(frame.status).tolist():
            out.status[i] = names[int(frame.status[i])]
    else:
        _numpy_pass(out, depth, mask_list, region_list, align, rays, cfg, return_points)
        out.box_quaternions = rotation_to_quaternion(out.box_rotations)
    for s in out.status:
        out.counts[s] = out.counts.get(s, 0) + 1
    return out


def _numpy_pass(
    out: Objects3D,
    depth: np.ndarray,
    mask_list: Sequence[np.ndarray] | np.ndarray,
    region_list: list[list[int]],
    align: Alignment,
    rays: RayCache,
    cfg: GeometryConfig,
    return_points: bool,
) -> None:
    """compute_objects3d without numba: everything but the quaternions and counts."""
    # Pass 1, per object and only on its ROI (no full-frame array is built or copied per frame or per
    # object): valid pixels under the mask, depth band, back-projection with rays undistorted only where
    # needed (RayCache), first two moments. Pass 2, batched: the box axes of all objects in one eigh.
    # Pass 3, per object: extents.
    n = len(region_list)
    pts_all: list[np.ndarray | None] = [None] * n
    cov = np.zeros((n, 3, 3))
    for i in range(n):
        try:
            index, m = _crop_on_depth(np.asarray(mask_list[i]), region_list[i], align)
        except GeometryError as e:
            log.warning("object %d: %s", i, e)
            out.status[i] = STATUS_BAD_MASK
            continue
        n_mask = int(np.count_nonzero(m))
        out.num_mask_pixels[i] = n_mask
        crop = depth[index]
        if crop.dtype == np.uint16:
            crop = millimetres_to_metres(crop)
        ok = m & _valid_depth(crop, cfg)
        z = crop[ok]  # boolean indexing of crops: far cheaper than nonzero + fancy indexing
        nv = z.size
        out.num_valid_points[i] = nv
        out.valid_fraction[i] = nv / n_mask if n_mask else 0.0
        if n_mask == 0 or nv == 0:
            out.status[i] = STATUS_EMPTY_MASK if n_mask == 0 else STATUS_NO_DEPTH
            continue
        keep, out.median_depth[i] = _depth_band(z, cfg)
        rx, ry = rays.take(index, ok)
        if keep is not None and not keep.all():
            z, rx, ry = z[keep], rx[keep], ry[keep]
        pts = np.empty((3, z.size))
        pts[2] = z
        np.multiply(rx, pts[2], out=pts[0])
        np.multiply(ry, pts[2], out=pts[1])
        out.num_inliers[i] = z.size
        out.centroids[i], cov[i] = _moments(pts)
        out.status[i] = STATUS_OK if z.size >= cfg.min_points else STATUS_TOO_FEW_POINTS
        pts_all[i] = pts
    done = np.array([p is not None for p in pts_all])
    if done.any():
        out.box_rotations[done] = _box_axes(cov[done], out.centroids[done])
    for i, obj_pts in enumerate(pts_all):
        if obj_pts is not None:
            out.box_centers[i], out.box_sizes[i] = _extents(obj_pts, out.box_rotations[i])
    if return_points:
        # one float32 cloud of all objects, stored as rows x, y, z (what the PointCloud2 reads; row copies
        # are 10x faster than writing transposed), points[i] are [M_i, 3] views of it
        bounds = np.cumsum([0] + [0 if p is None else p.shape[1] for p in pts_all]).tolist()
        rows = np.empty((3, bounds[-1]), np.float32)
        for obj_pts, a, b in zip(pts_all, bounds[:-1], bounds[1:], strict=True):
            if obj_pts is not None:
                rows[:, a:b] = obj_pts  # float64 -> float32 on assignment, as astype(np.float32)
        out.cloud = rows.T
        out.points = [out.cloud[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def objects3d_from_instances(
    depth_m: np.ndarray,
    intrinsics: CameraIntrinsics,
    instances: Any,
    *,
    config: GeometryConfig | None = None,
    return_points: bool = False,
) -> Objects3D:
    """compute_objects3d on runtime.Instances (cropped masks + regions on the colour image)."""
    return compute_objects3d(
        depth_m,
        intrinsics,
        instances.masks,
        instances.regions,
        image_shape=tuple(instances.image_size),
        config=config,
        return_points=return_points,
    )


def _empty(n: int) -> Objects3D:
    nan3 = np.full((n, 3), np.nan)
    return Objects3D(
        instance_index=np.arange(n, dtype=np.int32),
        centroids=nan3.copy(),
        box_centers=nan3.copy(),
        box_rotations=np.tile(np.eye(3), (n, 1, 1)),
        box_quaternions=np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (n, 1)),
        box_sizes=nan3.copy(),
        median_depth=np.full(n, np.nan),
        num_mask_pixels=np.zeros(n, np.int64),
        num_valid_points=np.zeros(n, np.int64),
        num_inliers=np.zeros(n, np.int64),
        valid_fraction=np.zeros(n, np.float32),
        status=[STATUS_EMPTY_MASK] * n,
    )
