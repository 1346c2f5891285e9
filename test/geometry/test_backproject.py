"""Back-projection (shapemask_ros.geometry.backproject) against hand-computed points and OpenCV projection."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shapemask_ros.geometry.backproject import backproject, backproject_pixels
from shapemask_ros.geometry.depth import CameraIntrinsics, GeometryError

# fx = 500, fy = 400, principal point at pixel index (u=10, v=5).
K = np.array([[500.0, 0.0, 10.0], [0.0, 400.0, 5.0], [0.0, 0.0, 1.0]])


def test_hand_computed_points():
    depth = np.full((50, 70), np.nan, np.float32)
    depth[5, 10] = 2.0  # the principal point: straight ahead
    depth[45, 60] = 1.0  # ((60 - 10) / 500, (45 - 5) / 400) * 1 = (0.1, 0.1)
    depth[0, 0] = 4.0  # ((0 - 10) / 500 * 4, (0 - 5) / 400 * 4) = (-0.08, -0.05)
    pts = backproject(depth, K)  # every pixel, invalid dropped, row-major order
    np.testing.assert_allclose(pts, [[-0.08, -0.05, 4.0], [0.0, 0.0, 2.0], [0.1, 0.1, 1.0]], atol=1e-7)


def test_mask_and_indices_select_the_same_points():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 2.0, (20, 30)).astype(np.float32)
    mask = rng.random((20, 30)) > 0.7
    rows, cols = np.nonzero(mask)
    a = backproject(depth, K, mask)
    b = backproject(depth, K, (rows, cols))
    c = backproject_pixels(rows, cols, depth[rows, cols], K)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, c)
    assert len(a) == mask.sum()


def test_invalid_depth_dropped_or_kept_as_nan():
    depth = np.array([[1.0, np.nan], [0.0, 2.0]], np.float32)
    assert len(backproject(depth, K)) == 2
    kept = backproject(depth, K, drop_invalid=False)
    assert kept.shape == (4, 3)
    assert np.isnan(kept[1]).all() and kept[2, 2] == 0.0


def test_size_mismatch_between_intrinsics_and_depth():
    intr = CameraIntrinsics.from_matrix(K, 70, 50)
    with pytest.raises(GeometryError) as e:
        backproject(np.ones((25, 35), np.float32), intr)
    assert e.value.reason == "size_mismatch"


def test_indices_outside_image_rejected():
    with pytest.raises(ValueError, match="outside"):
        backproject(np.ones((4, 4), np.float32), K, (np.array([0, 4]), np.array([0, 1])))


@pytest.mark.parametrize(
    ("model", "d"),
    [
        ("plumb_bob", (-0.28, 0.09, 0.001, -0.0005, -0.01)),
        ("rational_polynomial", (0.3, -0.1, 0.0005, 0.001, 0.01, 0.6, -0.05, 0.02)),
        ("equidistant", (-0.01, 0.02, -0.005, 0.001)),
    ],
)
def test_distorted_rays_reproject_to_their_pixels(model, d):
    # Back-project every pixel, project the points with OpenCV's forward model: they must land on the pixel.
    kk = np.array([[120.0, 0.0, 39.5], [0.0, 118.0, 29.5], [0.0, 0.0, 1.0]])
    intr = CameraIntrinsics.from_matrix(kk, 80, 60, d, model)
    depth = np.random.default_rng(2).uniform(0.5, 3.0, (60, 80)).astype(np.float32)
    pts = backproject(depth, intr)
    if model == "equidistant":
        uv, _ = cv2.fisheye.projectPoints(pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), kk, np.array(d))
    else:
        uv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), kk, np.array(d))
    vv, uu = np.indices((60, 80)).reshape(2, -1)
    np.testing.assert_allclose(uv.reshape(-1, 2), np.stack([uu, vv], -1), atol=1e-3)
    np.testing.assert_allclose(pts[:, 2], depth.reshape(-1), rtol=1e-6)  # z-depth, not ray length
    # and the distortion matters: the pinhole formula is off by pixels at the corners
    pin = backproject(depth, CameraIntrinsics.from_matrix(kk, 80, 60))
    assert np.abs(pin - pts).max() > 0.01
