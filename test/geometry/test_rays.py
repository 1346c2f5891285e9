"""geometry.rays: one ray table per lens, shared by intrinsics that differ by a whole-pixel principal point
shift (a moving ROI or a panning crop), and rays equal to undistorting each pixel anew."""

from __future__ import annotations

import numpy as np
import pytest
from geometry import objects3d_reference as reference
from geometry.tote_frames import tote_pan_frames
from geometry.undistort_count import count_undistorted_pixels

from shapemask_ros.geometry import rays
from shapemask_ros.geometry.depth import CameraIntrinsics
from shapemask_ros.geometry.objects3d import compute_objects3d

TOTE_D = (-2.68880495e-03, -4.64680157e-02, 1.05911011e-03, 3.12392686e-05, 0.0)


def camera(cx: float, cy: float, d=TOTE_D, w: int = 512, h: int = 384) -> CameraIntrinsics:
    return CameraIntrinsics.from_matrix([[570.3, 0, cx], [0, 570.9, cy], [0, 0, 1]], w, h, d)


def test_lens_key_is_shared_by_whole_pixel_shifts_only():
    key, whole = rays.lens_key(camera(318.7432, 242.25))
    for dx, dy in ((0, 0), (-37, 5), (64, -96)):
        k2, w2 = rays.lens_key(camera(318.7432 + dx, 242.25 + dy))
        assert k2 == key and w2 == (whole[0] + dy, whole[1] + dx)
    assert rays.lens_key(camera(318.7432 + 0.5, 242.25))[0] != key  # a sub-pixel shift is another lens
    assert rays.lens_key(camera(318.7432, 242.25, d=(0.1, 0, 0, 0, 0)))[0] != key
    # a fraction a hair below 1 is the next whole pixel, fraction 0 (float noise of a shift)
    k3, w3 = rays.lens_key(camera(300.0 - 1e-12, 200.0))
    assert w3 == (200, 300) and k3 == rays.lens_key(camera(300.0, 200.0))[0]


def test_a_panning_window_reuses_the_lens_rays_and_they_equal_a_fresh_undistortion(monkeypatch):
    """A 512x384 window panning over a 640x480 lens: rays read through later windows equal undistorting
    those pixels with the later intrinsics (to the last bit or two), and pixels seen before are not
    undistorted again."""
    rays.clear_ray_caches()
    real = CameraIntrinsics.undistort_pixels  # the unpatched undistortion, for the expected rays
    count = count_undistorted_pixels(monkeypatch)
    cx, cy = 319.37, 241.81  # of the full 640x480 lens
    rows_full, cols_full = np.mgrid[100:220, 150:330]  # a patch of the scene, in full-image pixels
    first = None
    for ox, oy in ((0, 0), (17, 9), (64, 50), (128, 96), (3, 90)):
        cam = camera(cx - ox, cy - oy)
        index = (slice(100 - oy, 220 - oy), slice(150 - ox, 330 - ox))  # the same scene patch in the window
        pick = np.ones((120, 180), bool)
        before = count[0]
        xs, ys = rays.ray_cache(cam).take(index, pick)
        new = count[0] - before
        if first is None:
            first = new
            assert new == pick.size
        else:
            assert new == 0  # every ray of the patch came from the lens table
        want_x, want_y = real(cam, rows_full.ravel() - oy, cols_full.ravel() - ox)
        np.testing.assert_allclose(xs, want_x, rtol=0, atol=1e-14)
        np.testing.assert_allclose(ys, want_y, rtol=0, atol=1e-14)
    # pixels of a later window outside the first one are computed once, for that window
    cam = camera(cx - 128, cy - 96)
    x2, _ = rays.ray_cache(cam).at(np.array([383]), np.array([511]))
    np.testing.assert_allclose(x2, real(cam, np.array([383]), np.array([511]))[0], atol=1e-14)


def test_objects3d_on_a_panning_camera_with_a_warm_cache_match_the_reference():
    """The demo's case end to end: the ARC tote scene through a panning 512x384 crop, the ray cache warm
    from earlier frames (never cleared): every output equals the frozen full-frame implementation to
    float rounding, and the cloud to float32 rounding."""
    rays.clear_ray_caches()
    for intr, depth, masks, regions in tote_pan_frames(5, margin=0):
        got = compute_objects3d(depth, intr, masks, regions, return_points=True)
        want = reference.compute_objects3d(depth, intr, masks, regions, return_points=True)
        assert got.status == want.status and want.counts.get("ok", 0) >= 5
        np.testing.assert_array_equal(got.num_inliers, want.num_inliers)
        for name in ("centroids", "box_centers", "box_sizes", "median_depth"):
            np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.abs(got.box_rotations), np.abs(want.box_rotations), atol=1e-9)
        np.testing.assert_allclose(got.cloud, np.concatenate(want.points), rtol=2e-7, atol=0)


@pytest.mark.parametrize("grow", [(-40, 0), (0, 170), (-300, -300), (500, 700)])
def test_lens_table_grows_and_keeps_what_it_knew(grow):
    lens = rays.LensRays()
    a = lens.covering((0, 40), (0, 80))
    first = (slice(-a.row0, -a.row0 + 40), slice(-a.col0, -a.col0 + 80))
    a.x[first] = np.arange(3200).reshape(40, 80)
    a.known[first] = True
    dr, dc = grow
    b = lens.covering((min(0, dr), max(40, dr + 1)), (min(0, dc), max(80, dc + 1)))
    assert b is not a and b.row0 <= min(0, dr) and b.col0 <= min(0, dc)
    sub = (slice(-b.row0, -b.row0 + 40), slice(-b.col0, -b.col0 + 80))
    np.testing.assert_array_equal(b.x[sub], np.arange(3200).reshape(40, 80))
    assert b.known[sub].all() and b.known.sum() == 3200
    assert lens.covering((0, 40), (0, 80)) is b  # inside: no new arrays


def test_a_new_lens_table_has_room_for_a_moving_window():
    """The first window gets a margin of MARGIN of its size on every side: a window that then moves by less
    than that (a pan, a ROI) reads the same arrays, never copied; a larger move grows them."""
    lens = rays.LensRays()
    a = lens.covering((0, 384), (0, 512))
    dr, dc = int(384 * rays.MARGIN), int(512 * rays.MARGIN)
    assert (a.row0, a.col0, a.known.shape) == (-dr, -dc, (384 + 2 * dr, 512 + 2 * dc))
    for r, c in ((-dr, -dc), (dr, dc), (-dr, dc), (30, -70)):
        assert lens.covering((r, r + 384), (c, c + 512)) is a
    assert lens.covering((dr + 1, dr + 385), (0, 512)) is not a


@pytest.mark.parametrize("skew", [0.0, 0.7])
def test_pinhole_rays_equal_the_formula_bit_for_bit(skew):
    """Pinhole cameras: 1-D row/column tables without skew, a full table with it; both give exactly the
    formula's values (CameraIntrinsics.undistort_pixels), through slices, np.ix_ crops and `at`."""
    intr = CameraIntrinsics.from_matrix([[150.0, skew, 79.3], [0, 152.0, 59.6], [0, 0, 1]], 160, 120)
    v, u = np.indices((120, 160))
    xr, yr = (a.reshape(120, 160) for a in intr.undistort_pixels(v.ravel(), u.ravel()))
    rays.clear_ray_caches()
    cache = rays.ray_cache(intr)
    assert cache.complete
    pick = np.random.default_rng(0).random((30, 40)) < 0.4
    for index in ((slice(10, 40), slice(50, 90)), np.ix_(np.arange(60, 90), np.arange(100, 140))):
        xs, ys = cache.take(index, pick)
        np.testing.assert_array_equal(xs, xr[index][pick], strict=True)
        np.testing.assert_array_equal(ys, yr[index][pick], strict=True)
    xs, ys = cache.at(v, u)
    np.testing.assert_array_equal(xs, xr, strict=True)
    np.testing.assert_array_equal(ys, yr, strict=True)


def test_prime_undistorts_every_pixel_once_with_the_values_frames_would_compute(monkeypatch):
    """RayCache.prime (bag-eval's warm-up): the whole window, bit for bit the rays of a fresh undistortion;
    later reads and a second prime undistort nothing; a window panned by whole pixels primes only its new
    pixels; a pinhole camera has nothing to prime."""
    rays.clear_ray_caches()
    real = CameraIntrinsics.undistort_pixels
    count = count_undistorted_pixels(monkeypatch)
    cam = camera(301.2, 233.7, w=160, h=120)
    cache = rays.ray_cache(cam)
    assert cache.prime() == 160 * 120 and count[0] == 160 * 120
    assert cache.known.all()
    v, u = np.indices((120, 160))
    want_x, want_y = real(cam, v.ravel(), u.ravel())
    xs, ys = cache.at(v.ravel(), u.ravel())
    np.testing.assert_array_equal(xs, want_x, strict=True)
    np.testing.assert_array_equal(ys, want_y, strict=True)
    assert cache.prime() == 0 and count[0] == 160 * 120
    panned = rays.ray_cache(camera(301.2 - 10, 233.7 - 4, w=160, h=120))  # the same lens, moved 10 px and 4 px
    assert panned.prime() == 160 * 120 - 150 * 116 and count[0] == 2 * 160 * 120 - 150 * 116
    assert rays.ray_cache(camera(301.2, 233.7, d=(0.0,) * 5, w=160, h=120)).prime() == 0
