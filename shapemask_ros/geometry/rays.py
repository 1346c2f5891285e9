"""Normalised camera rays (x/z, y/z) of depth pixels, computed only for the pixels the 3D stage asks for,
then kept for the next frames.

Pinhole cameras (zero distortion): one table per intrinsics, filled at once from the formula (about a
millisecond). Distorted cameras: rays come from OpenCV's iterative undistortion (~0.15 µs a pixel), so
they are computed lazily, object pixel by object pixel, and kept in a table shared by every intrinsics
of the same *lens*: the same fx, fy, skew, distortion and sub-pixel principal point. Intrinsics that
differ only by a whole-pixel shift of the principal point are one lens seen through a moving window: a
camera publishing a region of interest (REP 104's CameraInfo.roi, folded into K by
`CameraIntrinsics.from_camera_info`) or a crop panning over a larger image (the demo bag). Their pixel
(row, col) has the ray of lens pixel (row - floor(cy), col - floor(cx)), so a pan reuses the rays of
earlier frames instead of undistorting every object pixel anew (12 ms a frame on the demo).

Rays computed through one window equal those computed through another to ~1e-16 (the principal point's
shift by an integer rounds in the last bit); through a single window, values equal
`CameraIntrinsics.undistort_pixels` bit for bit.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Hashable
from typing import Any, NamedTuple, Protocol

import numpy as np

# Principal points whose fractional parts agree to this many decimals (1e-9 px) are one lens.
_FRACTION_DECIMALS = 9
# A lens table's margin around the window(s) asked for, as a fraction of their size. Only the pages of pixels
# whose rays are computed are ever touched (np.empty and np.zeros reserve the rest), so a margin costs a still
# camera nothing, while each growth copies the whole table (~1.7 ms at 512x384 on the demo's host).
MARGIN = 0.25


class Camera(Hashable, Protocol):
    """What the rays need of `geometry.depth.CameraIntrinsics` (not imported: depth uses this module)."""

    @property
    def k(self) -> tuple[float, ...]: ...

    @property
    def d(self) -> tuple[float, ...]: ...

    @property
    def distortion_model(self) -> str: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def has_distortion(self) -> bool: ...

    def undistort_pixels(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class _Arrays(NamedTuple):
    """One consistent state of a lens table: rays, known flags and the lens pixel of element [0, 0]."""

    x: np.ndarray
    y: np.ndarray
    known: np.ndarray
    row0: int
    col0: int


class KernelTables(NamedTuple):
    """The rays as the compiled 3D kernel reads them (objects3d_numba): two 1-D tables, or a 2-D table whose
    element [0, 0] is camera pixel (row0, col0), with `known` flags to check when check_known (lens tables).
    Unused arrays are 1-element placeholders, so one compiled specialisation serves every camera."""

    separable: bool
    cols_x: np.ndarray  # [W] x / z of each column (separable)
    rows_y: np.ndarray  # [H] y / z of each row (separable)
    x: np.ndarray  # [h, w] float64 (not separable)
    y: np.ndarray
    known: np.ndarray  # [h, w] bool
    row0: int
    col0: int
    check_known: bool
    arrays: _Arrays | None  # the lens arrays read (RayCache.fill_missing writes into the same ones)


_NO_TABLE = np.zeros((1, 1))
_NO_VECTOR = np.zeros(1)
_NO_FLAGS = np.ones((1, 1), bool)


class LensRays:
    """Rays of one lens on a grid of lens pixels (pixel minus the principal point's whole part), grown on
    demand to cover every window it is asked through.

    Several threads may share it: a pixel's rays are written before its `known` flag, so a reader that
    sees the flag reads finished values; growing replaces the arrays under a lock and copies what is
    known (a fill racing with it may be lost and is simply computed again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.arrays = _Arrays(np.empty((0, 0)), np.empty((0, 0)), np.zeros((0, 0), bool), 0, 0)

    def covering(self, rows: tuple[int, int], cols: tuple[int, int]) -> _Arrays:
        """The arrays, grown to hold lens rows [r0, r1) and columns [c0, c1), with a margin (MARGIN of the
        size) so that a moving window grows them rarely: on every side at first, then where it moved."""
        a = self.arrays
        h, w = a.known.shape
        if a.row0 <= rows[0] and rows[1] <= a.row0 + h and a.col0 <= cols[0] and cols[1] <= a.col0 + w:
            return a
        with self._lock:
            a = self.arrays
            h, w = a.known.shape
            lo_r, hi_r = min(rows[0], a.row0) if h else rows[0], max(rows[1], a.row0 + h) if h else rows[1]
            lo_c, hi_c = min(cols[0], a.col0) if w else cols[0], max(cols[1], a.col0 + w) if w else cols[1]
            pad_r, pad_c = int((hi_r - lo_r) * MARGIN), int((hi_c - lo_c) * MARGIN)
            if h:  # grown before: leave room for more of the same movement
                lo_r -= pad_r if lo_r < a.row0 else 0
                hi_r += pad_r if hi_r > a.row0 + h else 0
                lo_c -= pad_c if lo_c < a.col0 else 0
                hi_c += pad_c if hi_c > a.col0 + w else 0
            else:  # a window seen once may move (a ROI, a pan); growing later copies every array
                lo_r, hi_r, lo_c, hi_c = lo_r - pad_r, hi_r + pad_r, lo_c - pad_c, hi_c + pad_c
            shape = (hi_r - lo_r, hi_c - lo_c)
            new = _Arrays(np.empty(shape), np.empty(shape), np.zeros(shape, bool), lo_r, lo_c)
            if h and w:
                old = (slice(a.row0 - lo_r, a.row0 - lo_r + h), slice(a.col0 - lo_c, a.col0 - lo_c + w))
                new.x[old], new.y[old], new.known[old] = a.x, a.y, a.known
            self.arrays = new
            return new


class RayCache:
    """Rays of one camera's (intrinsics') pixels, read from its lens table; see the module docstring."""

    def __init__(self, intr: Camera) -> None:
        self.intr = intr
        self.complete = False  # every pixel known: take() skips the check (pinhole tables)
        self.origin = (0, 0)
        self._separable: tuple[np.ndarray, np.ndarray] | None = None
        self._lens = LensRays()
        if not intr.has_distortion:
            # the pinhole formula, per element the same operations as CameraIntrinsics.normalized_rays
            k = intr.k
            self.complete = True
            rows_y = (np.arange(intr.height, dtype=np.float64) - k[5]) / k[4]
            if k[1] == 0.0:
                # no skew (every ROS camera): x depends on the column alone, y on the row alone. Two 1-D
                # tables (8 KB, always in cache) instead of two [H, W] ones (5 MB at 640x480, read cold
                # after the network has run); x - (0 * y) is x, so the values are the same bits.
                self._separable = ((np.arange(intr.width, dtype=np.float64) - k[2]) / k[0], rows_y)
                return
            shape = intr.shape
            x = np.empty(shape)
            x[:] = (np.arange(intr.width, dtype=np.float64)[None, :] - k[2] - k[1] * rows_y[:, None]) / k[0]
            self._lens.arrays = _Arrays(x, np.broadcast_to(rows_y[:, None], shape).copy(), np.ones(shape, bool), 0, 0)
            return
        key, self.origin = lens_key(intr)
        self._lens = _lens_rays(key)
        self._window_arrays()  # room for the whole image now: growing ROI by ROI would copy the table each time

    @property
    def known(self) -> np.ndarray:
        """[H, W] bool: which of this camera's pixels have their rays computed."""
        if self.complete:
            return np.ones(self.intr.shape, bool)
        a = self._window_arrays()
        return a.known[self._window((0, self.intr.height), (0, self.intr.width), a)].copy()

    def _window_arrays(self) -> _Arrays:
        r, c = self.origin
        return self._lens.covering((-r, self.intr.height - r), (-c, self.intr.width - c))

    def _window(self, rows: tuple[int, int], cols: tuple[int, int], a: _Arrays) -> tuple[slice, slice]:
        """Slices of the lens arrays for this camera's pixel rows [r0, r1) and columns [c0, c1)."""
        r, c = self.origin[0] + a.row0, self.origin[1] + a.col0
        return slice(rows[0] - r, rows[1] - r), slice(cols[0] - c, cols[1] - c)

    def _fill(self, a: _Arrays, rows: np.ndarray, cols: np.ndarray) -> None:
        """Undistort pixels (rows, cols) of this camera into the lens arrays."""
        x, y = self.intr.undistort_pixels(rows, cols)
        lr, lc = rows - (self.origin[0] + a.row0), cols - (self.origin[1] + a.col0)
        a.x[lr, lc] = x
        a.y[lr, lc] = y
        a.known[lr, lc] = True

    def prime(self) -> int:
        """Undistort now every pixel of this camera's window whose ray is not known yet, so that frames read
        the table only: start-up work for a batch run (bag-eval's warm-up), which would otherwise land in the
        first frames' time (12 ms for the demo's first frame). Costs ~0.15 us a pixel (30 ms at 512x384) and
        17 bytes of table a pixel; a pinhole camera's table is complete already. Returns how many pixels
        were undistorted. The rays are the ones the frames would compute (same window, same values)."""
        if self.complete:
            return 0
        a = self._window_arrays()
        rows, cols = np.nonzero(~a.known[self._window((0, self.intr.height), (0, self.intr.width), a)])
        if rows.size:
            self._fill(a, rows, cols)  # window pixel (r, c) is camera pixel (r, c)
        return int(rows.size)

    def at(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays of pixel index arrays (any matching shape, inside the image)."""
        rows, cols = np.broadcast_arrays(rows, cols)
        if self._separable is not None:
            return self._separable[0][cols], self._separable[1][rows]
        a = self._window_arrays()
        lr, lc = rows - (self.origin[0] + a.row0), cols - (self.origin[1] + a.col0)
        if not self.complete:
            missing = ~a.known[lr, lc]
            if missing.any():
                self._fill(a, rows[missing], cols[missing])
        return a.x[lr, lc], a.y[lr, lc]

    def take(self, index: tuple[Any, ...], pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays of the pixels `pick` (bool, crop-shaped) of the crop `index` of a depth-sized array: two
        slices (identity alignment) or np.ix_ arrays (registration "scale"). Same values and order as
        table[index][pick] of full-frame tables; only the crop is touched."""
        if self._separable is not None:
            cols_x, rows_y = self._separable
            r, c = index
            xs, ys = (cols_x[c], rows_y[r]) if isinstance(r, slice) else (cols_x[c[0]], rows_y[r[:, 0]])
            return np.broadcast_to(xs, pick.shape)[pick], np.broadcast_to(ys[:, None], pick.shape)[pick]
        if isinstance(index[0], slice):
            rs, cs = index
            rows, cols = (rs.start, rs.stop), (cs.start, cs.stop)
            a = self._lens.arrays if self.complete else self._covering(rows, cols)
            sub: tuple[Any, ...] = self._window(rows, cols, a)
        else:
            ri, ci = index
            a = self._lens.arrays if self.complete else self._window_arrays()
            sub = (ri - (self.origin[0] + a.row0), ci - (self.origin[1] + a.col0))
        if not self.complete:
            missing = pick & ~a.known[sub]
            if missing.any():
                r, c = np.nonzero(missing)
                if isinstance(index[0], slice):
                    prow, pcol = r + index[0].start, c + index[1].start
                else:
                    prow, pcol = index[0][r, 0], index[1][0, c]
                self._fill(a, prow, pcol)
        return a.x[sub][pick], a.y[sub][pick]

    def kernel_tables(self) -> KernelTables:
        """The tables of this camera for the compiled kernel (covering the whole image)."""
        if self._separable is not None:
            cols_x, rows_y = self._separable
            return KernelTables(True, cols_x, rows_y, _NO_TABLE, _NO_TABLE, _NO_FLAGS, 0, 0, False, None)
        if self.complete:
            a = self._lens.arrays
            return KernelTables(False, _NO_VECTOR, _NO_VECTOR, a.x, a.y, _NO_FLAGS, 0, 0, False, a)
        a = self._window_arrays()
        r, c = self.origin[0] + a.row0, self.origin[1] + a.col0
        return KernelTables(False, _NO_VECTOR, _NO_VECTOR, a.x, a.y, a.known, r, c, True, a)

    def fill_missing(self, tables: KernelTables, rows: np.ndarray, cols: np.ndarray) -> None:
        """Undistort camera pixels (rows, cols) into the lens arrays of `tables` (a pixel listed twice is
        computed twice: same value)."""
        assert tables.arrays is not None and tables.check_known
        self._fill(tables.arrays, rows, cols)

    def _covering(self, rows: tuple[int, int], cols: tuple[int, int]) -> _Arrays:
        r, c = self.origin
        return self._lens.covering((rows[0] - r, rows[1] - r), (cols[0] - c, cols[1] - c))


def lens_key(intr: Camera) -> tuple[tuple[Any, ...], tuple[int, int]]:
    """(the lens of these intrinsics, the principal point's whole-pixel part (row, col)): intrinsics with
    equal keys differ only by a whole-pixel shift of the principal point."""
    k = intr.k
    whole, frac = [], []
    for p in (k[5], k[2]):
        f = round(p - math.floor(p), _FRACTION_DECIMALS)
        w = math.floor(p) + (1 if f >= 1.0 else 0)  # a fraction that rounds up to 1 is the next pixel
        whole.append(int(w))
        frac.append(f % 1.0)
    key = (k[0], k[1], k[4], k[3], k[6], k[7], k[8], frac[0], frac[1], intr.d, intr.distortion_model)
    return key, (whole[0], whole[1])


def ray_cache(intr: Camera) -> RayCache:
    """The RayCache of these intrinsics (the 8 most recent kept; distorted cameras share lens tables)."""
    return _ray_cache(intr)


@functools.lru_cache(maxsize=8)
def _ray_cache(intr: Camera) -> RayCache:
    return RayCache(intr)


@functools.lru_cache(maxsize=4)
def _lens_rays(key: tuple[Any, ...]) -> LensRays:
    return LensRays()


def clear_ray_caches() -> None:
    """Forget every computed ray (tests: a cold cache)."""
    _ray_cache.cache_clear()
    _lens_rays.cache_clear()
