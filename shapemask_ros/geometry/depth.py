"""Depth images and camera intrinsics: conversion to metres, CameraInfo parsing, colour/depth alignment.

Pixel convention (differs from shapemask_ros.ops.sampling on purpose): ROS CameraInfo K and OpenCV put the
principal point in *pixel-index* coordinates, i.e. the centre of pixel (row v, column u) is at (u, v).
The mask/box code in this project puts that centre at (u + 0.5, v + 0.5). Everything in this package works on
integer pixel indices and uses K directly, so x = (u - cx) * z / fx; continuous project coordinates must
subtract 0.5 before they meet K. Depth values are REP 118 z-depth (along the optical axis, not ray length).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import DEPTH_REGISTRATIONS
from shapemask_ros.geometry.rays import ray_cache
from shapemask_ros.geometry.undistort import undistort_points

log = logging.getLogger(__name__)

# Models handled by cv2.undistortPoints (k1 k2 p1 p2 [k3 [k4 k5 k6 ...]]) and by cv2.fisheye (k1..k4).
_PINHOLE_MODELS = ("plumb_bob", "rational_polynomial")
_FISHEYE_MODELS = ("equidistant",)


class GeometryError(ValueError):
    """Input that 3D geometry cannot be computed from; `reason` is a short machine-readable code.

    Reason codes: missing_camera_info, bad_intrinsics, unsupported_distortion, size_mismatch,
    bad_registration, bad_encoding, bad_depth, all_invalid_depth.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------------------------------------- depth


def millimetres_to_metres(mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres (16UC1) -> float32 metres, NaN where 0 (no reading): float32(mm) / float32(1000), the
    one conversion of 16UC1 depth (depth_to_metres, ros_bridge.image_codec.depth_to_array; the compiled 3D
    kernel repeats the formula per pixel)."""
    metres = np.divide(mm, np.float32(1000.0), dtype=np.float32)  # one pass, no float64 intermediate
    np.copyto(metres, np.float32(np.nan), where=mm == 0)
    return metres


def depth_to_metres(array: np.ndarray, encoding: str, *, require_valid: bool = False) -> np.ndarray:
    """Convert a decoded depth image [H, W] to float32 metres with NaN where the sensor had no reading.

    16UC1 / mono16: millimetres, 0 = invalid. 32FC1: metres; 0, NaN, +-inf and negative values = invalid.
    With `require_valid`, a frame without a single valid pixel raises GeometryError("all_invalid_depth").
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2:
        raise GeometryError("bad_depth", f"depth image must be [H, W], got shape {a.shape}")
    enc = encoding.strip().upper()
    if enc in ("16UC1", "MONO16"):
        if a.dtype != np.uint16:
            raise GeometryError("bad_encoding", f"{encoding} needs uint16 data, got {a.dtype}")
        out = millimetres_to_metres(a)
    elif enc == "32FC1":
        if a.dtype != np.float32:
            raise GeometryError("bad_encoding", f"{encoding} needs float32 data, got {a.dtype}")
        out = a.astype(np.float32, copy=True)
        with np.errstate(invalid="ignore"):
            out[~(np.isfinite(out) & (out > 0))] = np.nan
    else:
        raise GeometryError("bad_encoding", f"unsupported depth encoding {encoding!r} (use 16UC1 or 32FC1)")
    if require_valid and not np.isfinite(out).any():
        raise GeometryError("all_invalid_depth", "no pixel of the depth image has a valid reading")
    return out


# ----------------------------------------------------------------------------------------- intrinsics


def _field(msg: Any, *names: str) -> Any:
    for n in names:
        if isinstance(msg, dict) and n in msg:
            return msg[n]
        if hasattr(msg, n):
            return getattr(msg, n)
    raise GeometryError("missing_camera_info", f"CameraInfo has no field {names[0]!r}")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Intrinsics of the camera that produced the depth image (pixel-index convention, see module doc).

    k: 3x3 camera matrix as a row-major 9-tuple; d: distortion coefficients; width/height: image size the
    intrinsics describe (after binning and ROI).
    """

    k: tuple[float, ...]
    d: tuple[float, ...]
    distortion_model: str
    width: int
    height: int

    def __post_init__(self) -> None:
        k = np.asarray(self.k, np.float64)
        if k.shape != (9,) or not np.isfinite(k).all():
            raise GeometryError("bad_intrinsics", f"K must be 9 finite numbers, got {self.k!r}")
        if not (k[0] > 0 and k[4] > 0):
            raise GeometryError("bad_intrinsics", f"fx and fy must be > 0, got fx={k[0]} fy={k[4]}")
        if not np.isfinite(np.asarray(self.d, np.float64)).all():
            raise GeometryError("bad_intrinsics", f"distortion coefficients must be finite, got {self.d!r}")
        if self.width <= 0 or self.height <= 0:
            raise GeometryError("bad_intrinsics", f"image size must be > 0, got {self.width}x{self.height}")
        if self.has_distortion and self.distortion_model not in _PINHOLE_MODELS + _FISHEYE_MODELS:
            raise GeometryError(
                "unsupported_distortion",
                f"distortion model {self.distortion_model!r} with non-zero D "
                f"(supported: {', '.join(_PINHOLE_MODELS + _FISHEYE_MODELS)})",
            )
        if self.distortion_model in _FISHEYE_MODELS and self.has_distortion and len(self.d) != 4:
            raise GeometryError("bad_intrinsics", f"equidistant model needs 4 coefficients, got {len(self.d)}")

    # -- construction

    @staticmethod
    def from_matrix(
        k: np.ndarray | Sequence[float] | Sequence[Sequence[float]],
        width: int,
        height: int,
        d: Sequence[float] = (),
        distortion_model: str = "plumb_bob",
    ) -> CameraIntrinsics:
        """From a 3x3 (or 9-element) camera matrix."""
        return CameraIntrinsics(
            k=tuple(float(v) for v in np.asarray(k, np.float64).reshape(-1)),
            d=tuple(float(v) for v in d),
            distortion_model=str(distortion_model),
            width=int(width),
            height=int(height),
        )

    @staticmethod
    def from_camera_info(msg: Any, *, rectified: bool = False) -> CameraIntrinsics:
        """Parse sensor_msgs/CameraInfo (ROS 2 `k`/`d`/`p` or ROS 1 `K`/`D`/`P` fields, or a dict).

        rectified=True: the depth image is already rectified (…/image_rect topics), so the projection
        matrix P's left 3x3 block is used with zero distortion, as image_geometry and depth_image_proc do.
        Binning and ROI are folded into the intrinsics so they describe the image as published.
        Raises GeometryError (missing_camera_info, bad_intrinsics, unsupported_distortion).
        """
        if msg is None:
            raise GeometryError("missing_camera_info", "no CameraInfo received for the depth image")
        width, height = int(_field(msg, "width")), int(_field(msg, "height"))
        model = str(_field(msg, "distortion_model") or "")
        if rectified:
            p = np.asarray(_field(msg, "p", "P"), np.float64).reshape(-1)
            if p.size != 12:
                raise GeometryError("bad_intrinsics", f"P must have 12 elements, got {p.size}")
            k = p.reshape(3, 4)[:, :3].reshape(-1)
            d: tuple[float, ...] = ()
        else:
            k = np.asarray(_field(msg, "k", "K"), np.float64).reshape(-1)
            d = tuple(float(v) for v in np.asarray(_field(msg, "d", "D"), np.float64).reshape(-1))
        if k.size != 9:
            raise GeometryError("bad_intrinsics", f"K must have 9 elements, got {k.size}")
        if not np.any(k):
            # Drivers publish an all-zero CameraInfo when uncalibrated.
            raise GeometryError("bad_intrinsics", "K is all zeros (camera not calibrated)")
        bx = _optional_int(msg, "binning_x") or 1
        by = _optional_int(msg, "binning_y") or 1
        roi = _optional(msg, "roi")
        ox = oy = 0
        if roi is not None:
            ox, oy = int(_field(roi, "x_offset")), int(_field(roi, "y_offset"))
            rw, rh = int(_field(roi, "width")), int(_field(roi, "height"))
            if rw > 0 and rh > 0:
                width, height = rw, rh
            else:
                ox = oy = 0  # ROI of all zeros = full resolution (REP 104)
        if bx > 1 or by > 1 or ox or oy:
            km = k.reshape(3, 3).copy()
            # Binned pixel u' covers full-res pixels [ox + u'b, ox + (u'+1)b): centre ox + u'b + (b-1)/2.
            km[0, 0] /= bx
            km[0, 2] = (km[0, 2] - ox - (bx - 1) / 2.0) / bx
            km[1, 1] /= by
            km[1, 2] = (km[1, 2] - oy - (by - 1) / 2.0) / by
            k = km.reshape(-1)
            width, height = width // bx, height // by
        return CameraIntrinsics.from_matrix(k, width, height, d, model)

    # -- properties

    @property
    def matrix(self) -> np.ndarray:
        """3x3 float64 camera matrix."""
        return np.asarray(self.k, np.float64).reshape(3, 3)

    @property
    def fx(self) -> float:
        return self.k[0]

    @property
    def fy(self) -> float:
        return self.k[4]

    @property
    def cx(self) -> float:
        return self.k[2]

    @property
    def cy(self) -> float:
        return self.k[5]

    @property
    def has_distortion(self) -> bool:
        return any(v != 0.0 for v in self.d)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) the intrinsics describe."""
        return (self.height, self.width)

    def scaled_to(self, width: int, height: int) -> CameraIntrinsics:
        """Intrinsics of the same optical frame sampled at another resolution (distortion is unchanged).

        Uses the pixel-index convention: a pixel centre u maps to (u + 0.5) * s - 0.5.
        """
        sx, sy = width / self.width, height / self.height
        k = self.matrix.copy()
        k[0, 0] *= sx
        k[0, 1] *= sx
        k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
        k[1, 1] *= sy
        k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
        return CameraIntrinsics.from_matrix(k, width, height, self.d, self.distortion_model)

    def normalized_rays(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Undistorted normalised coordinates (x/z, y/z) of pixel indices (rows, cols), float64.

        Zero distortion: the pinhole formula, computed directly. Otherwise OpenCV's iterative
        undistortion (geometry.undistort, cv2.fisheye for `equidistant`) of the pixels not asked for
        before, kept in the RayCache of its lens (geometry.rays).
        """
        if not self.has_distortion:
            k = self.k
            y = (np.asarray(rows, np.float64) - k[5]) / k[4]
            x = (np.asarray(cols, np.float64) - k[2] - k[1] * y) / k[0]  # k[1] = skew, 0 for ROS cameras
            return x, y
        return ray_cache(self).at(np.asarray(rows), np.asarray(cols))

    def undistort_pixels(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """normalized_rays of 1-D pixel index arrays, always computed (no cache): the pinhole formula or
        cv2.undistortPoints. Each pixel's result depends on that pixel alone (cv2 iterates per point), so
        computing a subset gives bit-identical values to computing the whole image."""
        if not self.has_distortion:
            return self.normalized_rays(rows, cols)
        pts = np.stack([cols, rows], axis=-1).astype(np.float64).reshape(-1, 1, 2)
        d = np.asarray(self.d, np.float64)
        # whichever form the installed OpenCV has (4.5 / 4.6 / 5.x; geometry.undistort)
        und = undistort_points(pts, self.matrix, d, fisheye=self.distortion_model in _FISHEYE_MODELS)
        und = und.reshape(-1, 2)
        return und[:, 0].copy(), und[:, 1].copy()


def _optional(msg: Any, name: str) -> Any:
    if isinstance(msg, dict):
        return msg.get(name)
    return getattr(msg, name, None)


def _optional_int(msg: Any, name: str) -> int:
    v = _optional(msg, name)
    return int(v) if v is not None else 0


# ------------------------------------------------------------------------------------------ alignment


@dataclass(frozen=True)
class Alignment:
    """How colour-image pixels (where masks live) map onto depth pixels.

    Identity when both have the same size. With registration "scale" (same optical frame, different
    resolution) depth pixel j samples colour pixel floor((j + 0.5) * image_w / depth_w): nearest neighbour
    with centres aligned, as Pillow and OpenCV 5's INTER_NEAREST_EXACT (OpenCV 4.x's rounds exact ties down:
    for 1280x720 -> 640x360 it takes the even pixels, this the odd ones). Computed here, not by OpenCV.
    """

    depth_shape: tuple[int, int]
    image_shape: tuple[int, int]

    @property
    def identity(self) -> bool:
        return self.depth_shape == self.image_shape

    def depth_indices(self, start: int, length: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Depth indices along `axis` (0 rows, 1 cols) that sample colour indices in [start, start+length).

        Returns (depth indices, the colour indices they sample minus `start`).
        """
        n_depth, n_image = self.depth_shape[axis], self.image_shape[axis]
        if self.identity or n_depth == n_image:
            lo, hi = max(start, 0), min(start + length, n_depth)
            j = np.arange(lo, hi)
            return j, j - start
        r = n_image / n_depth
        lo = max(int(np.floor(start / r)) - 1, 0)
        hi = min(int(np.ceil((start + length) / r)) + 1, n_depth)
        j = np.arange(lo, hi)
        src = np.floor((j + 0.5) * r).astype(np.int64)
        keep = (src >= start) & (src < start + length)
        return j[keep], src[keep] - start


def check_alignment(
    depth_shape: Sequence[int], image_shape: Sequence[int], registration: str | None = None
) -> Alignment:
    """Check that masks on a colour image of `image_shape` (H, W) can be used on a `depth_shape` depth image.

    registration None / "none": sizes must be equal (a registered, aligned depth image, e.g.
    aligned_depth_to_color). "scale": depth and colour share one optical frame and differ only in
    resolution; the aspect ratios must agree within 1 %. Anything else raises GeometryError.
    """
    dh, dw = int(depth_shape[0]), int(depth_shape[1])
    ih, iw = int(image_shape[0]), int(image_shape[1])
    reg = (registration or "none").strip().lower()
    if reg not in DEPTH_REGISTRATIONS:
        raise GeometryError(
            "bad_registration", f"registration must be one of {DEPTH_REGISTRATIONS}, got {registration!r}"
        )
    if min(dh, dw, ih, iw) <= 0:
        raise GeometryError("size_mismatch", f"empty image: depth {dw}x{dh}, colour {iw}x{ih}")
    if (dh, dw) == (ih, iw):
        return Alignment((dh, dw), (ih, iw))
    if reg == "none":
        raise GeometryError(
            "size_mismatch",
            f"depth is {dw}x{dh} but the colour image is {iw}x{ih}; publish registered depth or set "
            "registration='scale' if both share one optical frame",
        )
    if abs((iw / dw) / (ih / dh) - 1.0) > 0.01:
        raise GeometryError(
            "size_mismatch",
            f"registration 'scale' needs equal aspect ratios: depth {dw}x{dh}, colour {iw}x{ih} "
            "(a crop is not a scale)",
        )
    return Alignment((dh, dw), (ih, iw))


def intrinsics_for_depth(
    intr: CameraIntrinsics, depth_shape: Sequence[int], registration: str | None = None
) -> CameraIntrinsics:
    """Intrinsics matching the depth image: as given when sizes agree, rescaled with registration "scale"."""
    dh, dw = int(depth_shape[0]), int(depth_shape[1])
    if intr.shape == (dh, dw):
        return intr
    check_alignment((dh, dw), intr.shape, registration)  # raises size_mismatch unless "scale" fits
    return intr.scaled_to(dw, dh)
