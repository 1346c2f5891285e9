"""The ray solver on every OpenCV API the ROS distros have, whichever OpenCV is installed (issue 27).

Humble's apt OpenCV 4.5.4 has no wheel for this Python, so its API is covered by a stand-in module with
4.5.4's Python signatures (from its generated docstrings): it refuses the keywords 4.5.4 refuses, the way
OpenCV's binding does, and computes with the installed OpenCV. The 4.6 and 5.x spellings get the same
treatment, so all three code paths run under `make test` (OpenCV 5) and `make test-distro` (OpenCV 4.6).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from shapemask_ros.geometry.depth import CameraIntrinsics
from shapemask_ros.geometry.undistort import CRITERIA, opencv_version, undistort_points

KK = np.array([[120.0, 0.0, 39.5], [0.0, 118.0, 29.5], [0.0, 0.0, 1.0]])
W, H = 80, 60
CAMERAS = [  # the distortions of test_backproject.py's reprojection test
    ("plumb_bob", (-0.28, 0.09, 0.001, -0.0005, -0.01)),
    ("rational_polynomial", (0.3, -0.1, 0.0005, 0.001, 0.01, 0.6, -0.05, 0.02)),
    ("equidistant", (-0.01, 0.02, -0.005, 0.001)),
]


def _reject(name: str, kwargs: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in kwargs:
        if key not in allowed:  # the error OpenCV's Python binding raises for an unknown keyword
            raise cv2.error(f"'{key}' is an invalid keyword argument for {name}()")


def _installed_iter(src: np.ndarray, k: np.ndarray, d: np.ndarray, criteria: Any) -> np.ndarray:
    """The installed OpenCV's pinhole solver with criteria (4.x: undistortPointsIter, 5.x: the keyword)."""
    if hasattr(cv2, "undistortPointsIter"):
        return cv2.undistortPointsIter(src, k, d, None, None, criteria)
    return cv2.undistortPoints(src, k, d, criteria=criteria)


def standin(api: str, calls: list[str]) -> SimpleNamespace:
    """A cv2 with the Python API of OpenCV `api` ("4.5", "4.6" or "5") that logs which solver ran."""

    def undistort_points(src: np.ndarray, k: np.ndarray, d: np.ndarray, **kw: Any) -> np.ndarray:
        _reject("undistortPoints", kw, ("dst", "R", "P", "criteria") if api == "5" else ("dst", "R", "P"))
        calls.append("undistortPoints" + ("+criteria" if "criteria" in kw else ""))
        return _installed_iter(src, k, d, kw["criteria"]) if "criteria" in kw else cv2.undistortPoints(src, k, d)

    def undistort_points_iter(src: np.ndarray, k: np.ndarray, d: np.ndarray, r: Any, p: Any, criteria: Any) -> Any:
        assert r is None and p is None
        calls.append("undistortPointsIter")
        return _installed_iter(src, k, d, criteria)

    def fisheye_undistort_points(src: np.ndarray, k: np.ndarray, d: np.ndarray, **kw: Any) -> np.ndarray:
        fisheye_kw = ("undistorted", "R", "P") + (() if api == "4.5" else ("criteria",))
        _reject("undistortPoints", kw, fisheye_kw)
        calls.append("fisheye.undistortPoints" + ("+criteria" if "criteria" in kw else ""))
        # without criteria, OpenCV >= 4.6 runs 4.5's fixed solver (10 Newton steps to 1e-8)
        return cv2.fisheye.undistortPoints(src, k, d, **kw)

    mod = SimpleNamespace(
        __version__={"4.5": "4.5.4", "4.6": "4.6.0", "5": "5.0.0"}[api],
        undistortPoints=undistort_points,
        fisheye=SimpleNamespace(undistortPoints=fisheye_undistort_points),
        error=cv2.error,
    )
    if api != "5":  # removed in OpenCV 5, where undistortPoints takes the criteria
        mod.undistortPointsIter = undistort_points_iter
    return mod


EXPECTED_CALL = {
    ("4.5", False): "undistortPointsIter",
    ("4.6", False): "undistortPointsIter",
    ("5", False): "undistortPoints+criteria",
    ("4.5", True): "fisheye.undistortPoints",
    ("4.6", True): "fisheye.undistortPoints+criteria",
    ("5", True): "fisheye.undistortPoints+criteria",
}


def _pixels() -> np.ndarray:
    vv, uu = np.indices((H, W)).reshape(2, -1)
    return np.stack([uu, vv], -1).astype(np.float64).reshape(-1, 1, 2)


@pytest.mark.parametrize("api", ["4.5", "4.6", "5"])
@pytest.mark.parametrize(("model", "d"), CAMERAS)
def test_every_opencv_api_gives_the_installed_opencvs_rays(api, model, d):
    fisheye = model == "equidistant"
    pts, dd = _pixels(), np.array(d)
    calls: list[str] = []
    got = undistort_points(pts, KK, dd, fisheye=fisheye, cv=standin(api, calls))
    assert calls == [EXPECTED_CALL[(api, fisheye)]]
    ref = undistort_points(pts, KK, dd, fisheye=fisheye)  # the installed OpenCV, its own spelling
    assert got.shape == ref.shape == (W * H, 1, 2)
    np.testing.assert_allclose(got, ref, atol=1e-8)
    # and they are the rays: projected with OpenCV's forward model they land on their pixels (1e-3 px, as
    # test_backproject's reprojection test)
    xyz = np.concatenate([got.reshape(-1, 2), np.ones((W * H, 1))], axis=1)
    if fisheye:
        uv, _ = cv2.fisheye.projectPoints(xyz.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), KK, dd)
    else:
        uv, _ = cv2.projectPoints(xyz, np.zeros(3), np.zeros(3), KK, dd)
    np.testing.assert_allclose(uv.reshape(-1, 2), pts.reshape(-1, 2), atol=1e-3)


@pytest.mark.parametrize(("model", "d"), CAMERAS)
def test_camera_intrinsics_use_the_cv2_they_find(monkeypatch, model, d):
    # CameraIntrinsics end to end on the OpenCV 4.5 API: rays are undistorted with the cv2 imported at call
    # time, so a node on Humble gets 3D output for a distorted camera.
    intr = CameraIntrinsics.from_matrix(KK, W, H, d, model)
    rows, cols = (a.ravel() for a in np.mgrid[0:H, 0:W])
    ref_x, ref_y = intr.undistort_pixels(rows, cols)  # computed every call, never from the ray cache
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "cv2", standin("4.5", calls))
    x, y = intr.undistort_pixels(rows, cols)
    assert calls == [EXPECTED_CALL[("4.5", model == "equidistant")]]
    np.testing.assert_allclose(x, ref_x, atol=1e-8)
    np.testing.assert_allclose(y, ref_y, atol=1e-8)


def test_the_standin_refuses_what_opencv_4_5_refuses():
    # The stand-in is only worth something if it fails the calls that fail on Humble (issue 27's report).
    cv45, pts, k = standin("4.5", []), _pixels()[:4], KK
    with pytest.raises(cv2.error, match="'criteria' is an invalid keyword"):
        cv45.undistortPoints(pts, k, np.array(CAMERAS[0][1]), criteria=CRITERIA)
    with pytest.raises(cv2.error, match="'criteria' is an invalid keyword"):
        cv45.fisheye.undistortPoints(pts, k, np.array(CAMERAS[2][1]), criteria=CRITERIA)
    assert not hasattr(standin("5", []), "undistortPointsIter")


@pytest.mark.parametrize(
    ("version", "expected"),
    [("4.5.4", (4, 5)), ("4.6.0", (4, 6)), ("4.10.0-dev", (4, 10)), ("5.0.0", (5, 0)), ("", (99, 0))],
)
def test_opencv_version_compares_as_numbers(version, expected):
    # "4.10" > "4.6" as numbers, not as strings: a string compare would send 4.10 to the 4.5 path
    assert opencv_version(SimpleNamespace(__version__=version)) == expected
