"""The 3D stage's per-object work as compiled loops (numba). The NumPy path in objects3d.py makes about 15
NumPy passes over each object's ROI pixels; this scans them once and then passes once over each object's valid
depths, for all objects of a frame in four calls:

1. `_scan`: every object's ROI pixels: mask pixels, valid depths (kept in ROI order with their pixel), pixels
   whose ray the lens table does not know yet, each listed once although overlapping objects share pixels (the
   caller then undistorts them with OpenCV, all at once).
2. `_stats`: the median and MAD of an even stride of at most BAND_SAMPLE_POINTS valid depths (quickselect).
3. `_points`: the depth band, back-projection, centroid and covariance (one pass, of the points minus the
   object's first point), the PointCloud2 records (x, y, z float32 + object row; no later copy).
4. `_finish`, after one batched eigh of all covariances (NumPy, as the NumPy path): box axes with the NumPy
   path's signs, extents along them, quaternions.

Element by element it does the NumPy path's arithmetic, so statuses, counts, medians, points and the cloud
are identical: depths stay in the depth image's dtype where NumPy computes in it (z - median), and each
comparison is made in float64 against a threshold rounded first to the dtype NumPy compares in (float32 for a
Python float against float32 depths; float32 -> float64 is exact, so the outcome is NumPy's). Sums run in
another order (NumPy: pairwise sums and BLAS dot products), so centroids, covariances and what follows from
them (axes, quaternions, box centres and sizes) agree to rounding; test/geometry/test_objects3d_compiled.py
says how closely and why.

Import this module only through objects3d.py's kernel selection: it needs numba. It does not import objects3d
(objects3d imports it): it fills any object with Objects3D's arrays (`ObjectArrays`) and returns status codes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numba
import numpy as np

if TYPE_CHECKING:
    from shapemask_ros.config.node_config import GeometryConfig
    from shapemask_ros.geometry.depth import Alignment
    from shapemask_ros.geometry.rays import RayCache

log = logging.getLogger(__name__)

# objects3d.py's constants, repeated: objects3d imports this module (test_objects3d_compiled keeps them equal)
BAND_SAMPLE_POINTS = 1024
MAD_TO_SIGMA = 1.4826

CACHED = True  # False when numba found no writable place for its on-disk cache (then every process compiles)


def _jit(fn: Callable[..., Any]) -> Any:
    """numba.njit with the on-disk cache when numba can write one (next to this file, else the user's cache
    directory). A read-only install with an unwritable home has neither: numba then refuses cache=True
    outright (RuntimeError "no locator available"), so compile without the cache instead of failing."""
    global CACHED
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as e:
        CACHED = False
        log.debug("numba cannot cache %s (%s): compiling in each process", fn.__name__, e)
        return numba.njit(nogil=True)(fn)


@_jit
def _kth_smallest(a: np.ndarray, n: int, k: int) -> Any:
    """The k-th smallest of a[:n] (0-based), reordering a[:n] in place so that a[:k] holds the k smallest.

    Quickselect (median-of-three pivot) with branch-free partitions: one moves the values below the pivot to
    the front, a second the values equal to it, so repeated values (depths in millimetres) cannot make it
    quadratic. Data-dependent branches cost 3x the time on real frames (measured: 0.34 vs 0.12 ms for 20
    objects' median and MAD)."""
    lo, hi = 0, n - 1
    while lo < hi:
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi]
        pivot = max(min(x, y), min(max(x, y), z))
        lt = lo
        for j in range(lo, hi + 1):
            v = a[j]
            a[j] = a[lt]
            a[lt] = v
            lt += v < pivot
        if k < lt:
            hi = lt - 1
            continue
        eq = lt
        for j in range(lt, hi + 1):
            v = a[j]
            a[j] = a[eq]
            a[eq] = v
            eq += v == pivot
        if k < eq:
            return pivot
        lo = eq
    return a[k]


@_jit
def _median(a: np.ndarray, n: int) -> float:
    """objects3d._median of a[:n] (reorders a[:n]): the middle element, or the mean of the two middle ones
    computed as 0.5 * (a + b) in float64."""
    k = n // 2
    hi = _kth_smallest(a, n, k)
    if n % 2:
        return np.float64(hi)
    lo = a[0]
    for j in range(1, k):  # the largest of the k smallest
        if a[j] > lo:
            lo = a[j]
    return 0.5 * (np.float64(lo) + np.float64(hi))


@_jit
def _band_stats(zbuf: np.ndarray, start: int, stop: int, scratch: np.ndarray, mad: bool) -> tuple[float, float]:
    """(median, MAD) of an even stride of at most BAND_SAMPLE_POINTS of zbuf[start:stop] (objects3d._depth_band;
    MAD 0 when not asked), using scratch [2, BAND_SAMPLE_POINTS]. The deviations are taken from the median
    rounded to zbuf's dtype, as NumPy's `sample - median` with a Python float. The strided sample is read
    from zbuf once (cache misses: the object's depths have left L1 by then) and kept in scratch[0]."""
    nv = stop - start
    step = 1 if nv <= BAND_SAMPLE_POINTS else -(-nv // BAND_SAMPLE_POINTS)
    sample, work = scratch[0], scratch[1]
    ns = 0
    for j in range(start, stop, step):
        sample[ns] = zbuf[j]
        ns += 1
    work[:ns] = sample[:ns]
    med = _median(work, ns)
    if not mad:
        return med, 0.0
    work[0] = med  # rounds to the dtype
    c = work[0]
    for q in range(ns):
        work[q] = abs(sample[q] - c)
    return med, _median(work, ns)


@_jit
def _stats(zbuf: np.ndarray, vstart: np.ndarray, mad: bool, med: np.ndarray, mad_m: np.ndarray) -> None:
    """The band statistics (median, MAD) of every object with valid depths."""
    scratch = np.empty((2, BAND_SAMPLE_POINTS), zbuf.dtype)
    for i in range(vstart.size - 1):
        if vstart[i + 1] > vstart[i]:
            med[i], mad_m[i] = _band_stats(zbuf, vstart[i], vstart[i + 1], scratch, mad)


@_jit
def _scan(
    depth: np.ndarray,
    mbuf: np.ndarray,
    mstart: np.ndarray,
    mwidth: np.ndarray,
    rows_d: np.ndarray,
    rows_m: np.ndarray,
    rstart: np.ndarray,
    cols_d: np.ndarray,
    cols_m: np.ndarray,
    cstart: np.ndarray,
    contiguous: bool,
    todo: np.ndarray,
    mm: bool,
    vmin: float,
    vmin_inclusive: bool,
    vmax: float,
    vmax_inclusive: bool,
    known: np.ndarray,
    known_row0: int,
    known_col0: int,
    check_known: bool,
    listed: np.ndarray,
    zbuf: np.ndarray,
    pix_r: np.ndarray,
    pix_c: np.ndarray,
    vstart: np.ndarray,
    n_mask: np.ndarray,
    n_valid: np.ndarray,
    miss_r: np.ndarray,
    miss_c: np.ndarray,
) -> int:
    """Pass 1 over objects i with todo[i]: mask pixels (n_mask), valid depths in ROI order (zbuf, pix_r,
    pix_c from vstart[i], n_valid[i] of them), in metres: with `mm`, depth is uint16 millimetres, read as
    depth.millimetres_to_metres' float32(mm) / float32(1000), 0 = invalid. Rays missing from `known` go to
    miss_r / miss_c, once each: `listed` (at least known's shape, all False on entry) flags the pixels listed
    so far; the caller clears it (`_unlist`). Returns how many.

    `contiguous` (identity alignment): each object's depth and mask columns are one run each, read as row
    slices (a third less time on the demo than loading every pixel's column from cols_d / cols_m); otherwise
    ("scale" registration) each row's pixels are gathered into a scratch row first."""
    k = 0
    n_miss = 0
    width = 0
    for i in range(todo.size):
        width = max(width, cstart[i + 1] - cstart[i])
    mask_gathered = np.empty(0 if contiguous else width, mbuf.dtype)
    depth_gathered = np.empty(0 if contiguous else width, depth.dtype)
    for i in range(todo.size):
        vstart[i] = k
        if not todo[i]:
            continue
        m0, mw = mstart[i], mwidth[i]
        c_lo, nc = cstart[i], cstart[i + 1] - cstart[i]
        dc0, mc0 = (cols_d[c_lo], cols_m[c_lo]) if nc else (0, 0)
        nm = 0
        for a in range(rstart[i], rstart[i + 1]):
            dr = rows_d[a]
            mrow = m0 + rows_m[a] * mw
            if contiguous:
                mask_row = mbuf[mrow + mc0 : mrow + mc0 + nc]
                depth_row = depth[dr, dc0 : dc0 + nc]
            else:
                for j in range(nc):
                    mask_gathered[j] = mbuf[mrow + cols_m[c_lo + j]]
                    depth_gathered[j] = depth[dr, cols_d[c_lo + j]]
                mask_row, depth_row = mask_gathered[:nc], depth_gathered[:nc]
            for j in range(nc):
                if mask_row[j] == 0:
                    continue
                nm += 1
                dc = dc0 + j if contiguous else cols_d[c_lo + j]
                raw = depth_row[j]
                if mm:
                    if raw == 0:
                        continue
                    v = np.float32(raw) / np.float32(1000.0)  # IEEE float32 division, as NumPy's
                else:
                    v = raw
                w = np.float64(v)  # comparisons in float64 against thresholds rounded as NumPy compares
                if not ((w >= vmin) if vmin_inclusive else (w > vmin)):
                    continue
                if not ((w <= vmax) if vmax_inclusive else (w < vmax)):
                    continue
                zbuf[k] = v
                pix_r[k] = dr
                pix_c[k] = dc
                k += 1
                if check_known and not known[dr - known_row0, dc - known_col0]:
                    # masks overlap (a third of the demo's first-frame pixels): undistort a pixel once
                    if not listed[dr - known_row0, dc - known_col0]:
                        listed[dr - known_row0, dc - known_col0] = True
                        miss_r[n_miss] = dr
                        miss_c[n_miss] = dc
                        n_miss += 1
        n_mask[i] = nm
        n_valid[i] = k - vstart[i]
    vstart[todo.size] = k
    return n_miss


@_jit
def _unlist(listed: np.ndarray, miss_r: np.ndarray, miss_c: np.ndarray, n_miss: int, row0: int, col0: int) -> None:
    """Clear the flags `_scan` set in `listed` (only those: the map is as large as a lens table)."""
    for j in range(n_miss):
        listed[miss_r[j] - row0, miss_c[j] - col0] = False


@_jit
def _points(
    zbuf: np.ndarray,
    pix_r: np.ndarray,
    pix_c: np.ndarray,
    vstart: np.ndarray,
    todo: np.ndarray,
    n_mask: np.ndarray,
    med: np.ndarray,
    mad_m: np.ndarray,
    use_band: bool,
    mad_k: float,
    min_band: float,
    lo: np.ndarray,
    hi: np.ndarray,
    use_percentile: bool,
    min_points: int,
    separable: bool,
    cols_x: np.ndarray,
    rows_y: np.ndarray,
    table_x: np.ndarray,
    table_y: np.ndarray,
    table_row0: int,
    table_col0: int,
    want_cloud: bool,
    pts: np.ndarray,
    cloud: np.ndarray,
    cloud_bits: np.ndarray,
    pstart: np.ndarray,
    centroids: np.ndarray,
    cov: np.ndarray,
    n_inliers: np.ndarray,
    valid_fraction: np.ndarray,
    status: np.ndarray,
) -> int:
    """Pass 2: inliers of the depth band (objects3d._depth_band: |z - median| <= max(mad_k * 1.4826 * MAD,
    min_band), in the depth's dtype; lo <= z <= hi in float64 with pre-rounded bounds), back-projected into
    pts [3, M] float64 (x = ray_x * z, y = ray_y * z, as the NumPy path) from pstart[i]; their mean and
    covariance (in one pass, of the points minus the object's first point); the cloud rows (cloud_bits: the
    same buffer as uint32, whose column 3 takes the object's row);
    valid_fraction, n_inliers and the status codes (1 ok, 2 too few points, 3 no depth; 0 = leave: empty or
    bad mask). Returns how many cloud points have a non-finite coordinate."""
    p = 0
    bad = 0
    small = np.empty(2, zbuf.dtype)  # rounds float64 values to the depth's dtype
    for i in range(todo.size):
        pstart[i] = p
        nv = vstart[i + 1] - vstart[i]
        if not todo[i] or n_mask[i] == 0:
            continue
        valid_fraction[i] = nv / n_mask[i]
        if nv == 0:
            status[i] = 3
            continue
        small[0] = med[i]  # NumPy's `z - median` with a Python float: in z's dtype
        small[1] = max(mad_k * MAD_TO_SIGMA * mad_m[i], min_band)  # and so is `|z - median| <= band`
        c, bd = small[0], small[1]
        # moments of the points minus the first one (one pass; no E[pp^T] - cc^T cancellation)
        ox, oy, oz = 0.0, 0.0, 0.0
        sx = sy = sz = 0.0
        xx = xy = xz = yy = yz = zz = 0.0
        for k in range(vstart[i], vstart[i + 1]):
            v = zbuf[k]
            if use_band and not (abs(v - c) <= bd):
                continue
            z = np.float64(v)
            if use_percentile and not (lo[i] <= z and z <= hi[i]):
                continue
            r, q = pix_r[k], pix_c[k]
            if separable:
                x = cols_x[q] * z
                y = rows_y[r] * z
            else:
                x = table_x[r - table_row0, q - table_col0] * z
                y = table_y[r - table_row0, q - table_col0] * z
            pts[0, p] = x
            pts[1, p] = y
            pts[2, p] = z
            if p == pstart[i]:
                ox, oy, oz = x, y, z
            dx, dy, dz = x - ox, y - oy, z - oz
            sx += dx
            sy += dy
            sz += dz
            xx += dx * dx
            xy += dx * dy
            xz += dx * dz
            yy += dy * dy
            yz += dy * dz
            zz += dz * dz
            if want_cloud:
                fx, fy = np.float32(x), np.float32(y)
                cloud[p, 0] = fx
                cloud[p, 1] = fy
                cloud[p, 2] = v  # z is the depth itself
                cloud_bits[p, 3] = i
                if not np.isfinite(fx + fy):  # z is finite (a valid depth); a sum flags inf or NaN in either
                    bad += 1
            p += 1
        n = p - pstart[i]
        n_inliers[i] = n
        status[i] = 1 if n >= min_points else 2
        m = max(n, 1)
        dx, dy, dz = sx / m, sy / m, sz / m  # centroid minus the first point
        centroids[i, 0] = ox + dx
        centroids[i, 1] = oy + dy
        centroids[i, 2] = oz + dz
        cov[i, 0, 0] = xx / m - dx * dx
        cov[i, 0, 1] = cov[i, 1, 0] = xy / m - dx * dy
        cov[i, 0, 2] = cov[i, 2, 0] = xz / m - dx * dz
        cov[i, 1, 1] = yy / m - dy * dy
        cov[i, 1, 2] = cov[i, 2, 1] = yz / m - dy * dz
        cov[i, 2, 2] = zz / m - dz * dz
    pstart[todo.size] = p
    return bad


@_jit
def _finish(
    vecs: np.ndarray,
    rows: np.ndarray,
    centroids: np.ndarray,
    pts: np.ndarray,
    pstart: np.ndarray,
    rot: np.ndarray,
    quat: np.ndarray,
    centres: np.ndarray,
    sizes: np.ndarray,
) -> None:
    """Pass 3, after one batched eigh (NumPy, as the NumPy path; vecs[j] = the eigenvectors of object rows[j]
    in ascending order): the box axes with objects3d._box_axes' signs, the extents and box centre along them
    (objects3d._extents) and the quaternion (objects3d.rotation_to_quaternion's formulas)."""
    for j in range(rows.size):
        i = rows[j]
        v = vecs[j]
        e0 = v[:, 2].copy()  # major axis: its largest component positive
        big = 0
        for a in range(1, 3):
            if abs(e0[a]) > abs(e0[big]):
                big = a
        if e0[big] < 0:
            e0 = -e0
        e2 = v[:, 0].copy()  # minor axis (a flat object's normal) faces the camera
        if e2[0] * centroids[i, 0] + e2[1] * centroids[i, 1] + e2[2] * centroids[i, 2] > 0:
            e2 = -e2
        e1 = np.empty(3)  # e2 x e0: a right-handed frame
        e1[0] = e2[1] * e0[2] - e2[2] * e0[1]
        e1[1] = e2[2] * e0[0] - e2[0] * e0[2]
        e1[2] = e2[0] * e0[1] - e2[1] * e0[0]
        r = rot[i]
        for a in range(3):
            r[a, 0], r[a, 1], r[a, 2] = e0[a], e1[a], e2[a]
        if pstart[i + 1] > pstart[i]:
            lo0 = lo1 = lo2 = np.inf
            hi0 = hi1 = hi2 = -np.inf
            for k in range(pstart[i], pstart[i + 1]):
                x, y, z = pts[0, k], pts[1, k], pts[2, k]
                a0 = r[0, 0] * x + r[1, 0] * y + r[2, 0] * z
                a1 = r[0, 1] * x + r[1, 1] * y + r[2, 1] * z
                a2 = r[0, 2] * x + r[1, 2] * y + r[2, 2] * z
                lo0, hi0 = min(lo0, a0), max(hi0, a0)
                lo1, hi1 = min(lo1, a1), max(hi1, a1)
                lo2, hi2 = min(lo2, a2), max(hi2, a2)
            m0, m1, m2 = (lo0 + hi0) / 2, (lo1 + hi1) / 2, (lo2 + hi2) / 2
            for a in range(3):
                centres[i, a] = r[a, 0] * m0 + r[a, 1] * m1 + r[a, 2] * m2
            sizes[i, 0] = hi0 - lo0
            sizes[i, 1] = hi1 - lo1
            sizes[i, 2] = hi2 - lo2
        _quaternion(r, quat[i])


@_jit
def _quaternion(m: np.ndarray, out: np.ndarray) -> None:
    """objects3d.rotation_to_quaternion of one rotation (Shepperd's method), written to out (x, y, z, w)."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    cand = np.empty(4)
    cand[0] = 1 + tr
    for a in range(3):
        cand[a + 1] = 1 + 2 * m[a, a] - tr
    best = 0
    for a in range(1, 4):
        if cand[a] > cand[best]:
            best = a
    s = np.sqrt(max(cand[best], 1e-300)) * 2
    if best == 0:
        w, x, y, z = s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif best == 1:
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif best == 2:
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s
    else:
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4
    if w < 0:
        w, x, y, z = -w, -x, -y, -z
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    out[0], out[1], out[2], out[3] = x / norm, y / norm, z / norm, w / norm


@_jit
def _index_ranges(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Identity alignment: from bounds [N, 6] (first depth row, row count, first depth col, col count, and
    the mask row / col they start at) the concatenated rows_d, rows_m, cols_d, cols_m and their starts."""
    n = bounds.shape[0]
    rstart = np.zeros(n + 1, np.int64)
    cstart = np.zeros(n + 1, np.int64)
    for i in range(n):
        rstart[i + 1] = rstart[i] + bounds[i, 1]
        cstart[i + 1] = cstart[i] + bounds[i, 3]
    rows_d = np.empty(rstart[n], np.int64)
    rows_m = np.empty(rstart[n], np.int64)
    cols_d = np.empty(cstart[n], np.int64)
    cols_m = np.empty(cstart[n], np.int64)
    for i in range(n):
        for j in range(bounds[i, 1]):
            rows_d[rstart[i] + j] = bounds[i, 0] + j
            rows_m[rstart[i] + j] = bounds[i, 4] + j
        for j in range(bounds[i, 3]):
            cols_d[cstart[i] + j] = bounds[i, 2] + j
            cols_m[cstart[i] + j] = bounds[i, 5] + j
    return rows_d, rows_m, rstart, cols_d, cols_m, cstart


def _as_u8(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels as uint8, nonzero where `mask != 0` (no copy for uint8 and bool masks)."""
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    return (mask != 0).view(np.uint8)


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of `a`: depth arrays reach the kernel read-only whether the caller's is writable or a
    view of a message's buffer (read-only), so one compiled specialisation per dtype serves both."""
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


def _in_dtype_of_comparison(values: Any, z: np.ndarray) -> float:
    """A threshold as the float64 value NumPy compares z (a depth array) with: rounded to float32 when NumPy
    compares in float32 (a Python float against float32 depths), unchanged when in float64."""
    dt = np.result_type(z, values)
    return float(np.asarray(values).astype(dt))


class _Workspace(threading.local):
    """Scratch arrays kept between frames, one set per thread (grown, never shrunk)."""

    def __init__(self) -> None:
        self.arrays: dict[tuple[str, Any], np.ndarray] = {}

    def get(self, name: str, size: int, dtype: Any) -> np.ndarray:
        key = (name, np.dtype(dtype))
        a = self.arrays.get(key)
        if a is None or a.size < size:
            a = self.arrays[key] = np.empty(max(size + size // 4, 1024), dtype)
        return a[:size]

    def flags(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """A C-contiguous bool array of at least `shape`, all False as long as every user clears what it set
        (the whole array is returned, not a view of `shape`: one compiled specialisation for every size)."""
        key = (name, np.dtype(np.bool_))
        a = self.arrays.get(key)
        if a is None or a.shape[0] < shape[0] or a.shape[1] < shape[1]:
            old = (0, 0) if a is None else a.shape
            a = self.arrays[key] = np.zeros((max(shape[0], old[0]), max(shape[1], old[1])), np.bool_)
        return a


_WORK = _Workspace()
_NO_LIST = np.zeros((1, 1), np.bool_)  # `listed` of tables without `known` flags (never read)


# fill_objects' status codes (objects3d maps them to its status names; 0 = leave the row's status as it is)
OK, TOO_FEW_POINTS, NO_DEPTH = 1, 2, 3


class ObjectArrays(Protocol):
    """The arrays of objects3d.Objects3D that the kernels fill, row i = object i."""

    centroids: np.ndarray
    box_centers: np.ndarray
    box_rotations: np.ndarray
    box_quaternions: np.ndarray
    box_sizes: np.ndarray
    median_depth: np.ndarray
    num_mask_pixels: np.ndarray
    num_valid_points: np.ndarray
    num_inliers: np.ndarray
    valid_fraction: np.ndarray
    points: list[np.ndarray] | None
    cloud: np.ndarray | None
    cloud_records: np.ndarray | None


class CompiledFrame(NamedTuple):
    """What `fill_objects` leaves for the caller: status codes, which objects have points, their covariances,
    and the points `finish_boxes` reads once the box axes are known."""

    status: np.ndarray  # [N] int8: OK, TOO_FEW_POINTS, NO_DEPTH or 0 (empty or bad mask: unchanged)
    done: np.ndarray  # [N] bool: objects with valid depth (their box axes are computed)
    cov: np.ndarray  # [N, 3, 3]
    pts: np.ndarray  # [3, M] float64, object i's points in columns pstart[i]:pstart[i + 1]
    pstart: np.ndarray  # [N + 1] int64


def fill_objects(
    out: ObjectArrays,
    depth: np.ndarray,
    mask_list: Sequence[np.ndarray] | np.ndarray,
    region_list: list[list[int]],
    align: Alignment,
    rays: RayCache,
    cfg: GeometryConfig,
    return_points: bool,
    bad_mask: Callable[[int, str], None],
) -> CompiledFrame:
    """Fill `out` (objects3d._empty(N)) except the box axes, centres and sizes: counts, medians, centroids,
    and with return_points the cloud, its PointCloud2 records and the per-object views; the statuses are
    returned as codes. `bad_mask(i, why)` reports a mask that disagrees with its region (nothing computed)."""
    n = len(region_list)
    todo = np.zeros(n, np.bool_)
    mstart, mwidth = [0] * n, [0] * n
    flat: list[np.ndarray] = []
    pos = 0
    bounds: list[tuple[int, ...]] = []  # identity: per object (y0, rows, x0, cols, mask row, mask col)
    idx_rows: list[tuple[np.ndarray, np.ndarray]] = []  # "scale": depth and mask indices per object
    idx_cols: list[tuple[np.ndarray, np.ndarray]] = []
    H, W = align.depth_shape
    for i in range(n):
        mask = np.asarray(mask_list[i])
        x, y, w, h = region_list[i]
        if mask.shape != (h, w):
            bad_mask(i, f"mask shape {mask.shape} does not match region {w}x{h}")
            bounds.append((0, 0, 0, 0, 0, 0))
            continue
        todo[i] = True
        m8 = _as_u8(mask)
        mstart[i], mwidth[i] = pos, w
        flat.append(m8.reshape(-1))
        pos += m8.size
        if align.identity:  # clipped to the image, as objects3d._crop_on_depth
            y0, y1 = max(y, 0), min(y + h, H)
            x0, x1 = max(x, 0), min(x + w, W)
            bounds.append((y0, max(y1 - y0, 0), x0, max(x1 - x0, 0), y0 - y, x0 - x))
        else:
            idx_rows.append(align.depth_indices(y, h, axis=0))
            idx_cols.append(align.depth_indices(x, w, axis=1))
    mbuf = np.concatenate(flat) if flat else np.zeros(1, np.uint8)
    if align.identity:
        rows_d, rows_m, rstart, cols_d, cols_m, cstart = _index_ranges(np.array(bounds, np.int64).reshape(-1, 6))
    else:
        rl, cl = iter(idx_rows), iter(idx_cols)
        rows = [next(rl) if t else (np.zeros(0, np.int64),) * 2 for t in todo]
        cols = [next(cl) if t else (np.zeros(0, np.int64),) * 2 for t in todo]
        rows_d, rows_m = (np.concatenate([r[j] for r in rows]).astype(np.int64) for j in (0, 1))
        cols_d, cols_m = (np.concatenate([c[j] for c in cols]).astype(np.int64) for j in (0, 1))
        rstart = np.concatenate([[0], np.cumsum([len(r[0]) for r in rows])]).astype(np.int64)
        cstart = np.concatenate([[0], np.cumsum([len(c[0]) for c in cols])]).astype(np.int64)
    roi_pixels = int(np.dot(np.diff(rstart), np.diff(cstart)))

    # validity: `depth >= min` (min > 0) else `depth > 0`; `depth <= max` (max > 0) else `depth < inf`, on metres
    # (uint16 millimetres are float32 metres once converted)
    mm = depth.dtype == np.uint16
    metres = np.empty(0, np.float32 if mm else depth.dtype)
    vmin = _in_dtype_of_comparison(cfg.min_depth_m, metres) if cfg.min_depth_m > 0 else 0.0
    vmax = _in_dtype_of_comparison(cfg.max_depth_m, metres) if cfg.max_depth_m > 0 else np.inf
    tables = rays.kernel_tables()
    zbuf = _WORK.get("z", roi_pixels, metres.dtype)
    pix_r = _WORK.get("row", roi_pixels, np.int32)
    pix_c = _WORK.get("col", roi_pixels, np.int32)
    miss_r = _WORK.get("miss_row", roi_pixels if tables.check_known else 1, np.int64)
    miss_c = _WORK.get("miss_col", miss_r.size, np.int64)
    listed = _WORK.flags("listed", tables.known.shape) if tables.check_known else _NO_LIST
    vstart = np.zeros(n + 1, np.int64)
    mad_m = np.zeros(n)
    use_band = cfg.mad_k > 0
    n_miss = _scan(
        _readonly(depth), mbuf, np.array(mstart, np.int64), np.array(mwidth, np.int64), rows_d, rows_m, rstart, cols_d,
        cols_m, cstart, align.identity, todo, mm, vmin, cfg.min_depth_m > 0, vmax, cfg.max_depth_m > 0,
        tables.known, tables.row0, tables.col0, tables.check_known, listed, zbuf, pix_r, pix_c, vstart,
        out.num_mask_pixels, out.num_valid_points, miss_r, miss_c,
    )  # fmt: skip
    _unlist(listed, miss_r, miss_c, n_miss, tables.row0, tables.col0)  # also without misses: the warm-up compiles it
    _stats(zbuf, vstart, use_band, out.median_depth, mad_m)
    if n_miss:
        rays.fill_missing(tables, miss_r[:n_miss], miss_c[:n_miss])

    use_percentile = cfg.percentile_low > 0 or cfg.percentile_high < 100
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    if use_percentile:  # NumPy's percentile on the same sample (an opt-in band: not worth a copy of it here)
        for i in np.flatnonzero(out.num_valid_points).tolist():
            a, nv = int(vstart[i]), int(vstart[i + 1] - vstart[i])
            z = zbuf[a : a + nv]
            sample = z if nv <= BAND_SAMPLE_POINTS else z[:: -(-nv // BAND_SAMPLE_POINTS)]
            p_lo, p_hi = np.percentile(sample, [cfg.percentile_low, cfg.percentile_high])
            lo[i], hi[i] = _in_dtype_of_comparison(p_lo, z), _in_dtype_of_comparison(p_hi, z)

    total = int(vstart[n])
    pts = _WORK.get("points", 3 * total, np.float64).reshape(3, total)
    cloud = np.empty((total if return_points else 0, 4), np.float32)
    pstart = np.zeros(n + 1, np.int64)
    cov = np.zeros((n, 3, 3))
    status = np.zeros(n, np.int8)
    bad = _points(
        zbuf, pix_r, pix_c, vstart, todo, out.num_mask_pixels, out.median_depth, mad_m, use_band, cfg.mad_k,
        cfg.min_band_m, lo, hi, use_percentile, cfg.min_points, tables.separable, tables.cols_x, tables.rows_y,
        tables.x, tables.y, tables.row0, tables.col0, return_points, pts, cloud, cloud.view(np.uint32),
        pstart, out.centroids, cov, out.num_inliers, out.valid_fraction, status,
    )  # fmt: skip
    if return_points:
        records = cloud[: int(pstart[n])]
        out.cloud = records[:, :3]
        bounds_p = pstart.tolist()
        out.points = [out.cloud[a:b] for a, b in zip(bounds_p[:-1], bounds_p[1:], strict=True)]
        out.cloud_records = records if bad == 0 else None
    return CompiledFrame(status, out.num_valid_points > 0, cov, pts, pstart)


def finish_boxes(out: ObjectArrays, frame: CompiledFrame) -> None:
    """Box axes (one batched eigh of the covariances, as the NumPy path), centres, sizes and quaternions."""
    rows = np.flatnonzero(frame.done)
    if rows.size:
        _, vecs = np.linalg.eigh(frame.cov[rows])
        _finish(vecs, rows, out.centroids, frame.pts, frame.pstart, out.box_rotations, out.box_quaternions,
                out.box_centers, out.box_sizes)  # fmt: skip
