"""Iterative undistortion of pixel coordinates with whichever OpenCV the ROS distribution ships.

The ROS 2 distros install OpenCV from apt: Humble (Ubuntu 22.04) has 4.5.4, Jazzy (24.04) 4.6.0, and the
ROS-free CI uses opencv-python 5. The iterative solver with a caller's termination criteria is spelled
differently in each:

| OpenCV | pinhole (plumb_bob, rational_polynomial) | fisheye (equidistant) |
|---|---|---|
| 4.5.x | `undistortPointsIter(src, K, D, R, P, criteria)` | `fisheye.undistortPoints(src, K, D)`: no criteria |
| 4.6-4.x | `undistortPointsIter(...)` | `fisheye.undistortPoints(..., criteria=...)` |
| 5.x | `undistortPoints(..., criteria=...)` (`undistortPointsIter` is gone) | as 4.6 |

Without criteria, 4.5's fisheye solver runs 10 Newton steps on the ray angle to |step| < 1e-8 (the default
criteria of 4.6 and later): far below the 1e-3 pixel reprojection error the geometry tests allow.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

# cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30 iterations, 1e-9: sub-1e-6 ray error on real lenses.
CRITERIA = (3, 30, 1e-9)
# OpenCV 4.6.0 added the criteria argument to fisheye::undistortPoints.
_FISHEYE_CRITERIA_SINCE = (4, 6)


def opencv_version(cv: Any) -> tuple[int, int]:
    """(major, minor) of an imported cv2 module (or a stand-in); (99, 0), i.e. the newest API, when its
    `__version__` cannot be read."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(getattr(cv, "__version__", "")))
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)


def undistort_points(pts: np.ndarray, k: np.ndarray, d: np.ndarray, *, fisheye: bool, cv: Any = None) -> np.ndarray:
    """Normalised undistorted coordinates (x/z, y/z) of pixel coordinates `pts` [N, 1, 2] float64.

    k: 3x3 camera matrix; d: distortion coefficients (4 for fisheye, 4-14 for the pinhole models).
    `cv` is the cv2 module to call (tests pass stand-ins with an older API); default: the installed cv2,
    imported here because only distorted cameras need it. Returns [N, 1, 2] float64.
    """
    if cv is None:
        import cv2

        cv = cv2
    if fisheye:
        if opencv_version(cv) >= _FISHEYE_CRITERIA_SINCE:
            return np.asarray(cv.fisheye.undistortPoints(pts, k, d, criteria=CRITERIA))
        return np.asarray(cv.fisheye.undistortPoints(pts, k, d))
    undistort_iter = getattr(cv, "undistortPointsIter", None)
    if undistort_iter is not None:  # OpenCV 4.x: R and P are required (None = identity: normalised output)
        return np.asarray(undistort_iter(pts, k, d, None, None, CRITERIA))
    return np.asarray(cv.undistortPoints(pts, k, d, criteria=CRITERIA))
