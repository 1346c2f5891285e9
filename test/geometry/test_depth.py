"""Depth conversion, CameraInfo parsing and colour/depth alignment (shapemask_ros.geometry.depth)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from shapemask_ros.geometry.depth import (
    CameraIntrinsics,
    GeometryError,
    check_alignment,
    depth_to_metres,
    intrinsics_for_depth,
    millimetres_to_metres,
)
from shapemask_ros.geometry.undistort import opencv_version
from support.geometry import camera_info

K = [[50.0, 0, 31.5], [0, 40.0, 23.5], [0, 0, 1]]


# ------------------------------------------------------------------------------------- depth_to_metres


def test_16uc1_is_millimetres_and_zero_is_invalid():
    raw = np.array([[0, 1000], [1234, 65535]], np.uint16)
    m = depth_to_metres(raw, "16UC1")
    assert m.dtype == np.float32
    assert np.isnan(m[0, 0])
    np.testing.assert_allclose(m[[0, 1, 1], [1, 0, 1]], [1.0, 1.234, 65.535], rtol=1e-6)
    np.testing.assert_array_equal(depth_to_metres(raw, "mono16"), m, strict=False)
    # the 3D stage's formula (millimetres_to_metres), not one of its own: 1234 mm * 0.001 is 1 ulp off
    np.testing.assert_array_equal(m, millimetres_to_metres(raw))


def test_32fc1_marks_zero_nan_inf_and_negative_invalid():
    raw = np.array([[0.0, np.nan, np.inf, -np.inf, -1.0, 0.75]], np.float32)
    m = depth_to_metres(raw, "32FC1")
    assert np.isnan(m[0, :5]).all()
    assert m[0, 5] == pytest.approx(0.75)
    assert raw[0, 0] == 0.0  # input untouched


@pytest.mark.parametrize(
    ("arr", "enc", "reason"),
    [
        (np.zeros((2, 2), np.float32), "16UC1", "bad_encoding"),
        (np.zeros((2, 2), np.uint16), "32FC1", "bad_encoding"),
        (np.zeros((2, 2), np.uint8), "mono8", "bad_encoding"),
        (np.zeros((2, 2, 3), np.uint16), "16UC1", "bad_depth"),
    ],
)
def test_depth_to_metres_rejects_bad_input(arr, enc, reason):
    with pytest.raises(GeometryError) as e:
        depth_to_metres(arr, enc)
    assert e.value.reason == reason


def test_require_valid_rejects_all_invalid_frame():
    zeros = np.zeros((4, 4), np.uint16)
    assert np.isnan(depth_to_metres(zeros, "16UC1")).all()
    with pytest.raises(GeometryError) as e:
        depth_to_metres(zeros, "16UC1", require_valid=True)
    assert e.value.reason == "all_invalid_depth"


# ------------------------------------------------------------------------------------------ intrinsics


def test_from_camera_info_reads_ros2_message():
    intr = CameraIntrinsics.from_camera_info(camera_info(K, d=(0.1, 0, 0, 0, 0)))
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (50.0, 40.0, 31.5, 23.5)
    assert intr.shape == (48, 64) and intr.has_distortion and intr.d[0] == 0.1


def test_from_camera_info_reads_ros1_style_mapping():
    msg = {"K": np.ravel(K), "D": [], "distortion_model": "", "width": 64, "height": 48}
    intr = CameraIntrinsics.from_camera_info(msg)
    assert intr.cx == 31.5 and not intr.has_distortion


def test_rectified_uses_projection_matrix_without_distortion():
    p = [[60.0, 0, 30.0, 0], [0, 45.0, 20.0, 0], [0, 0, 1, 0]]
    intr = CameraIntrinsics.from_camera_info(camera_info(K, d=(0.2, 0.1, 0, 0, 0), p=np.ravel(p)), rectified=True)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (60.0, 45.0, 30.0, 20.0)
    assert not intr.has_distortion


@pytest.mark.parametrize(
    ("msg_kwargs", "reason"),
    [
        ({"k": [[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]}, "bad_intrinsics"),
        ({"k": [[np.inf, 0, 1], [0, 1, 1], [0, 0, 1]]}, "bad_intrinsics"),
        ({"k": [[0.0, 0, 1], [0, 1, 1], [0, 0, 1]]}, "bad_intrinsics"),
        ({"k": [[10.0, 0, 1], [0, -1, 1], [0, 0, 1]]}, "bad_intrinsics"),
        ({"k": np.zeros(9)}, "bad_intrinsics"),  # uncalibrated driver
        ({"k": K, "width": 0}, "bad_intrinsics"),
        ({"k": K, "d": (0.1, np.nan, 0, 0, 0)}, "bad_intrinsics"),
        ({"k": K, "d": (0.1, 0, 0, 0, 0), "model": "weird"}, "unsupported_distortion"),
    ],
)
def test_from_camera_info_rejects_bad_intrinsics(msg_kwargs, reason):
    with pytest.raises(GeometryError) as e:
        CameraIntrinsics.from_camera_info(camera_info(**msg_kwargs))
    assert e.value.reason == reason


def test_missing_camera_info():
    with pytest.raises(GeometryError) as e:
        CameraIntrinsics.from_camera_info(None)
    assert e.value.reason == "missing_camera_info"


def test_unknown_model_with_zero_distortion_is_pinhole():
    intr = CameraIntrinsics.from_camera_info(camera_info(K, d=(0.0,) * 5, model="weird"))
    assert not intr.has_distortion


def test_binning_and_roi_describe_the_published_pixels():
    # Binned pixel u' covers full-res pixels [ox + 2u', ox + 2u' + 2): its ray is that of centre 2u' + 0.5.
    full = CameraIntrinsics.from_matrix(K, 64, 48)
    binned = CameraIntrinsics.from_camera_info(camera_info(K, binning=(2, 2), roi=(8, 4, 32, 24)))
    assert binned.shape == (12, 16)
    v, u = np.meshgrid(np.arange(12), np.arange(16), indexing="ij")
    xb, yb = binned.normalized_rays(v, u)
    xf, yf = full.normalized_rays(4 + 2 * v + 0.5, 8 + 2 * u + 0.5)
    np.testing.assert_allclose(xb, xf, atol=1e-12)
    np.testing.assert_allclose(yb, yf, atol=1e-12)


def test_scaled_intrinsics_keep_pixel_rays():
    # A depth pixel at half resolution covers colour pixels 2j and 2j+1; its ray passes between their centres.
    colour = CameraIntrinsics.from_matrix(K, 64, 48)
    depth = colour.scaled_to(32, 24)
    j = np.arange(32, dtype=np.float64)
    xd, _ = depth.normalized_rays(np.zeros_like(j), j)
    xc, _ = colour.normalized_rays(np.zeros_like(j), 2 * j + 0.5)
    np.testing.assert_allclose(xd, xc, atol=1e-12)


# ------------------------------------------------------------------------------------------- alignment


def test_equal_sizes_align_without_registration():
    assert check_alignment((48, 64), (48, 64)).identity


def test_mismatched_sizes_rejected_without_registration():
    with pytest.raises(GeometryError) as e:
        check_alignment((240, 320), (480, 640))
    assert e.value.reason == "size_mismatch"


def test_scale_registration_rejects_different_aspect_ratio():
    with pytest.raises(GeometryError) as e:
        check_alignment((480, 640), (720, 1280), "scale")
    assert e.value.reason == "size_mismatch"


def test_unknown_registration_rejected():
    with pytest.raises(GeometryError) as e:
        check_alignment((240, 320), (480, 640), "magic")
    assert e.value.reason == "bad_registration"


@pytest.mark.parametrize(("depth_shape", "image_shape"), [((24, 32), (48, 64)), ((96, 128), (48, 64))])
def test_scale_mapping_samples_the_nearest_centre(depth_shape, image_shape):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, image_shape, dtype=np.uint8)
    align = check_alignment(depth_shape, image_shape, "scale")
    rows, src_r = align.depth_indices(0, image_shape[0], axis=0)
    cols, src_c = align.depth_indices(0, image_shape[1], axis=1)
    assert len(rows) == depth_shape[0] and len(cols) == depth_shape[1]
    # the rule in exact integers: floor((j + 0.5) * n_image / n_depth) = (2j + 1) * n_image // (2 n_depth)
    exact_r = (2 * rows + 1) * image_shape[0] // (2 * depth_shape[0])
    exact_c = (2 * cols + 1) * image_shape[1] // (2 * depth_shape[1])
    np.testing.assert_array_equal(src_r, exact_r)
    np.testing.assert_array_equal(src_c, exact_c)
    if opencv_version(cv2) >= (5, 0):
        # OpenCV 5's INTER_NEAREST_EXACT follows the same rule (Pillow's); 4.x (Humble 4.5.4, Jazzy 4.6.0)
        # rounds exact ties down (a 2x shrink takes pixels 0, 2, 4 where this takes 1, 3, 5)
        ref = cv2.resize(img, depth_shape[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
        np.testing.assert_array_equal(img[np.ix_(src_r, src_c)], ref)


def test_intrinsics_for_depth_scales_only_with_registration():
    colour = CameraIntrinsics.from_matrix(K, 64, 48)
    assert intrinsics_for_depth(colour, (48, 64)) is colour
    assert intrinsics_for_depth(colour, (24, 32), "scale").shape == (24, 32)
    with pytest.raises(GeometryError) as e:
        intrinsics_for_depth(colour, (24, 32))
    assert e.value.reason == "size_mismatch"
