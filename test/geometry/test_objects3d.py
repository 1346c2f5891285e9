"""Per-object 3D geometry (shapemask_ros.geometry.objects3d) on synthetic depth images, with each of its two
implementations as the process default: NumPy and the compiled kernel (objects3d_numba.py)."""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry import objects3d
from shapemask_ros.geometry.depth import CameraIntrinsics, GeometryError, depth_to_metres
from shapemask_ros.geometry.objects3d import (
    compute_objects3d,
    objects3d_from_instances,
    pca_box,
    rotation_to_quaternion,
)
from shapemask_ros.runtime.instances import Instances

W, H = 160, 120
INTR = CameraIntrinsics.from_matrix([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]], W, H)


@pytest.fixture(autouse=True, params=["numpy", "numba"])
def kernel(request, monkeypatch) -> str:
    """Every behaviour below holds for both implementations."""
    if request.param == "numba":
        pytest.importorskip("numba", reason="the compiled kernel needs numba (requirements.txt installs it)")
    monkeypatch.setattr(objects3d, "_kernel_choice", None)
    objects3d.set_geometry_kernel(request.param, quiet=True)
    return request.param


def plane_depth_mm(normal: np.ndarray, dist: float, intr: CameraIntrinsics = INTR) -> np.ndarray:
    """16UC1 depth of the plane {p : n . p = dist} seen by `intr` (rounded to millimetres like a sensor)."""
    v, u = np.indices(intr.shape)
    xn, yn = intr.normalized_rays(v, u)
    z = dist / (normal[0] * xn + normal[1] * yn + normal[2])
    return np.round(z * 1000).astype(np.uint16)


def rect_mask(x0: int, y0: int, x1: int, y1: int, shape=(H, W)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(abs(np.dot(a, b)) / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def test_fronto_parallel_plane_distance_normal_and_extent():
    depth = depth_to_metres(plane_depth_mm(np.array([0.0, 0, 1]), 0.8), "16UC1")
    obj = compute_objects3d(depth, INTR, rect_mask(40, 30, 100, 70)[None])
    assert obj.status == ["ok"]
    assert abs(obj.centroids[0, 2] - 0.8) < 1e-3
    rot = obj.box_rotations[0]
    np.testing.assert_allclose(rot[:, 2], [0, 0, -1], atol=1e-6)  # minor axis = normal, towards the camera
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # 60 x 40 pixel centres span 59 and 39 pixels: at 0.8 m and f = 150 that is 0.3147 x 0.2080 m
    np.testing.assert_allclose(obj.box_sizes[0], [59 * 0.8 / 150, 39 * 0.8 / 150, 0.0], atol=1e-3)
    np.testing.assert_allclose(rot[:, 0], [1, 0, 0], atol=1e-6)  # major axis along the long side
    assert obj.num_valid_points[0] == obj.num_inliers[0] == 60 * 40
    assert obj.valid_fraction[0] == pytest.approx(1.0)


@pytest.mark.parametrize("tilt_deg", [25.0, 50.0])
def test_tilted_plane_recovers_normal_and_distance(tilt_deg):
    t = np.radians(tilt_deg)
    normal = np.array([np.sin(t), 0.3 * np.sin(t), -np.cos(t)])
    normal /= np.linalg.norm(normal)
    dist = -0.7  # plane n . p = -0.7 with n towards the camera: 0.7 m from the optical centre
    depth = depth_to_metres(plane_depth_mm(-normal, -dist), "16UC1")
    obj = compute_objects3d(depth, INTR, rect_mask(50, 35, 110, 85)[None])
    assert obj.status == ["ok"]
    assert angle_deg(obj.box_rotations[0][:, 2], normal) < 1.0
    assert np.dot(obj.box_rotations[0][:, 2], normal) > 0  # both look at the camera
    assert abs(np.dot(normal, obj.centroids[0]) - dist) < 1e-3  # the centroid lies on the plane
    assert obj.num_inliers[0] == 60 * 50  # a slanted surface is not mistaken for outliers


def test_border_background_rejected():
    # Object at 0.6 m; the mask bleeds 3 pixels onto a wall at 1.5 m on two sides (typical mask error).
    depth_mm = np.full((H, W), 1500, np.uint16)
    depth_mm[40:80, 60:100] = 600
    depth = depth_to_metres(depth_mm, "16UC1")
    mask = rect_mask(57, 37, 100, 80)
    truth = compute_objects3d(depth, INTR, rect_mask(60, 40, 100, 80)[None]).centroids[0]
    robust = compute_objects3d(depth, INTR, mask[None])
    naive = compute_objects3d(depth, INTR, mask[None], config=GeometryConfig(mad_k=0.0, min_band_m=0.0))
    assert np.linalg.norm(robust.centroids[0] - truth) < 1e-3
    assert np.linalg.norm(naive.centroids[0] - truth) > 0.1
    assert robust.num_inliers[0] == 40 * 40
    assert robust.num_valid_points[0] == mask.sum()
    # not stretched to the wall (that box would be 0.9 m deep). A square has no preferred in-plane axes: rounding
    # decides whether its box is 0.16 m wide along its sides or 0.21 m along its diagonals
    assert robust.box_sizes[0].max() < 0.25 and robust.box_sizes[0].min() < 0.01


def test_percentile_band_also_rejects():
    depth_mm = np.full((H, W), 1500, np.uint16)
    depth_mm[40:80, 60:100] = 600
    depth = depth_to_metres(depth_mm, "16UC1")
    mask = rect_mask(59, 40, 100, 80)  # 40 background pixels of 1640 (2.4 %)
    cfg = GeometryConfig(mad_k=0.0, min_band_m=0.0, percentile_high=95.0)
    obj = compute_objects3d(depth, INTR, mask[None], config=cfg)
    assert obj.median_depth[0] == pytest.approx(0.6)
    assert obj.centroids[0, 2] == pytest.approx(0.6, abs=1e-6)


def test_too_few_points_flagged_and_kept():
    depth = depth_to_metres(np.full((H, W), 900, np.uint16), "16UC1")
    masks = np.stack([rect_mask(10, 10, 15, 12), rect_mask(40, 40, 80, 80)])  # 10 pixels, 1600 pixels
    obj = compute_objects3d(depth, INTR, masks, config=GeometryConfig(min_points=30))
    assert obj.status == ["too_few_points", "ok"]
    assert obj.num_inliers[0] == 10
    assert np.isfinite(obj.centroids[0]).all()  # still computed: the status says how far to trust it
    assert obj.counts == {"too_few_points": 1, "ok": 1}


def test_all_invalid_depth_gives_no_depth_per_object():
    depth = depth_to_metres(np.zeros((H, W), np.uint16), "16UC1")
    obj = compute_objects3d(depth, INTR, rect_mask(10, 10, 50, 50)[None])
    assert obj.status == ["no_depth"]
    assert obj.num_valid_points[0] == 0 and obj.valid_fraction[0] == 0.0
    assert np.isnan(obj.centroids[0]).all() and np.isnan(obj.box_sizes[0]).all()
    np.testing.assert_array_equal(obj.box_quaternions[0], [0, 0, 0, 1])


def test_valid_fraction_counts_holes():
    depth_mm = np.full((H, W), 700, np.uint16)
    depth_mm[20:30, 20:60] = 0  # a quarter of the object has no reading (glare)
    obj = compute_objects3d(depth_to_metres(depth_mm, "16UC1"), INTR, rect_mask(20, 20, 60, 60)[None])
    assert obj.valid_fraction[0] == pytest.approx(0.75)
    assert obj.num_valid_points[0] == 1200


def test_depth_range_limits():
    depth_mm = np.full((H, W), 700, np.uint16)
    depth_mm[20:40, 20:60] = 5000
    depth = depth_to_metres(depth_mm, "16UC1")
    obj = compute_objects3d(depth, INTR, rect_mask(20, 20, 60, 60)[None], config=GeometryConfig(max_depth_m=4.0))
    assert obj.num_valid_points[0] == 800


def test_cropped_masks_match_full_masks_and_bad_masks_are_flagged():
    depth = depth_to_metres(plane_depth_mm(np.array([0.1, 0.2, 1.0]), 0.9), "16UC1")
    full = np.stack([rect_mask(10, 10, 40, 30), rect_mask(100, 60, 150, 110)])
    full[1, 80:90, 100:110] = 0
    regions = np.array([[5, 8, 40, 30], [100, 60, 70, 70]])  # second region runs past the image (clipped)
    crops = [full[0, 8:38, 5:45], np.pad(full[1, 60:120, 100:160], ((0, 10), (0, 10)), constant_values=1)]
    a = compute_objects3d(depth, INTR, full)
    b = compute_objects3d(depth, INTR, crops, regions)
    np.testing.assert_allclose(a.centroids, b.centroids)
    np.testing.assert_allclose(a.box_sizes, b.box_sizes)
    assert a.status == b.status == ["ok", "ok"]
    bad = compute_objects3d(depth, INTR, [crops[0], np.ones((3, 3), np.uint8)], regions)
    assert bad.status == ["ok", "bad_mask"]
    np.testing.assert_allclose(bad.centroids[0], a.centroids[0])
    empty = compute_objects3d(depth, INTR, [np.zeros((4, 4), np.uint8)], np.array([[0, 0, 4, 4]]))
    assert empty.status == ["empty_mask"]


def test_scale_registration_and_size_mismatch():
    # Colour 160x120 masks on a 80x60 depth image of the same optical frame.
    depth_full = depth_to_metres(plane_depth_mm(np.array([0.0, 0.0, 1.0]), 1.1), "16UC1")
    depth_half = depth_full[::2, ::2]
    mask = rect_mask(40, 30, 120, 90)
    with pytest.raises(GeometryError) as e:
        compute_objects3d(depth_half, INTR, mask[None])
    assert e.value.reason == "size_mismatch"
    ref = compute_objects3d(depth_full, INTR, mask[None])
    obj = compute_objects3d(depth_half, INTR, mask[None], config=GeometryConfig(registration="scale"))
    assert obj.status == ["ok"]
    assert obj.num_mask_pixels[0] == mask.sum() // 4
    np.testing.assert_allclose(obj.centroids[0], ref.centroids[0], atol=1e-3)
    # the half-resolution pixel centres sit half a colour pixel inside: extent shrinks by one colour pixel
    np.testing.assert_allclose(obj.box_sizes[0][:2], ref.box_sizes[0][:2] - 1.1 / 150, atol=1e-3)


def test_from_instances_and_points():
    depth = depth_to_metres(np.full((H, W), 1000, np.uint16), "16UC1")
    inst = Instances(
        boxes=np.array([[10, 10, 30, 30], [60, 60, 70, 80]], np.float32),
        scores=np.ones(2, np.float32),
        class_ids=np.zeros(2, np.int32),
        masks=[np.ones((20, 20), np.uint8), np.ones((20, 10), np.uint8)],
        regions=np.array([[10, 10, 20, 20], [60, 60, 10, 20]], np.int32),
        mask_scores=np.ones(2, np.float32),
        source_index=np.arange(2, dtype=np.int32),
        image_size=(H, W),
    )
    obj = objects3d_from_instances(depth, INTR, inst, return_points=True)
    assert [len(p) for p in obj.points] == [400, 200]
    np.testing.assert_allclose(obj.points[1].mean(axis=0), obj.centroids[1], atol=1e-6)
    assert obj.points[0].dtype == np.float32


def test_pca_box_is_right_handed_and_contains_points():
    rng = np.random.default_rng(3)
    for _ in range(20):
        pts = rng.normal(size=(200, 3)) * rng.uniform(0.01, 0.3, 3) + rng.uniform([-1, -1, 0.5], [1, 1, 2])
        c, centre, rot, size = pca_box(pts)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        local = (pts - centre) @ rot
        assert np.all(np.abs(local) <= size / 2 + 1e-9)
        assert np.dot(rot[:, 2], c) < 0


def test_quaternion_matches_rotation():
    rng = np.random.default_rng(4)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    r = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )
    r = np.concatenate([r, np.eye(3)[None], np.diag([1.0, -1, -1])[None], np.diag([-1.0, -1, 1])[None]])
    out = rotation_to_quaternion(r)
    expected = np.concatenate([q * np.sign(q[:, 3:4]), [[0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]])
    np.testing.assert_allclose(out, expected, atol=1e-9)
    scipy_rot = pytest.importorskip("scipy.spatial.transform").Rotation
    ref = scipy_rot.from_matrix(r).as_quat()
    np.testing.assert_allclose(np.abs(np.sum(out * ref, axis=1)), 1.0, atol=1e-9)  # same rotation, up to sign


def test_bad_frame_inputs_raise():
    with pytest.raises(GeometryError) as e:
        compute_objects3d(np.zeros((H, W), np.int32), INTR, rect_mask(0, 0, 4, 4)[None])  # neither metres nor mm
    assert e.value.reason == "bad_depth"
    with pytest.raises(GeometryError) as e:
        compute_objects3d(np.zeros((H, W), np.float32), INTR, [np.ones((2, 2))], np.zeros((2, 4)))
    assert e.value.reason == "bad_mask"
    with pytest.raises(ValueError, match="registration"):
        GeometryConfig(registration="warp")


def _reference_objects(depth: np.ndarray, intr: CameraIntrinsics, masks: np.ndarray, mad_k: float, min_band: float):
    """Straightforward per-object reference: exact medians over every valid pixel, nonzero + fancy indexing,
    normalized_rays, one eigh per object. Returns inlier counts, centroids, box sizes and rotations."""
    out = []
    for m in masks:
        v, u = np.nonzero((m != 0) & np.isfinite(depth) & (depth > 0))
        z = depth[v, u].astype(np.float64)
        med = np.median(z)
        keep = np.abs(z - med) <= max(mad_k * 1.4826 * np.median(np.abs(z - med)), min_band)
        v, u, z = v[keep], u[keep], z[keep]
        xn, yn = intr.normalized_rays(v, u)
        out.append((z.size, pca_box(np.stack([xn * z, yn * z, z], 1))))
    return out


@pytest.mark.parametrize("distortion", [(), (0.08, -0.15, 0.001, -0.002, 0.03)])
def test_large_objects_match_an_exact_reference(distortion):
    """Objects far above BAND_SAMPLE_POINTS (median and MAD from a strided sample) give the same inliers,
    centroids and boxes as exact statistics when the background is well outside the band."""
    w, h = 320, 240
    intr = CameraIntrinsics.from_matrix([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]], w, h, distortion)
    rng = np.random.default_rng(3)
    depth = np.full((h, w), 2.0, np.float32)  # background plane 2 m
    masks = []
    for x0, y0, x1, y1, d in ((10, 10, 150, 110, 0.7), (160, 20, 310, 200, 1.1), (30, 130, 140, 230, 0.9)):
        depth[y0:y1, x0:x1] = d + rng.normal(0, 0.003, (y1 - y0, x1 - x0)) + 0.0005 * np.arange(x1 - x0)
        m = np.zeros((h, w), np.uint8)
        m[max(y0 - 4, 0) : y1 + 4, max(x0 - 4, 0) : x1 + 4] = 1  # bleeds onto the background
        masks.append(m)
    depth[rng.random((h, w)) < 0.05] = np.nan
    masks = np.stack(masks)
    assert min(int(m.sum()) for m in masks) > 4 * objects3d.BAND_SAMPLE_POINTS
    got = compute_objects3d(depth, intr, masks)
    for i, (n_in, (c, centre, rot, size)) in enumerate(_reference_objects(depth, intr, masks, 3.0, 0.02)):
        assert got.num_inliers[i] == n_in
        np.testing.assert_allclose(got.centroids[i], c, atol=1e-9)
        np.testing.assert_allclose(got.box_centers[i], centre, atol=1e-9)
        np.testing.assert_allclose(got.box_sizes[i], size, atol=1e-9)
        np.testing.assert_allclose(np.abs(got.box_rotations[i]), np.abs(rot), atol=1e-6)
        assert np.linalg.det(got.box_rotations[i]) == pytest.approx(1.0)
        assert abs(got.median_depth[i] - np.nanmedian(depth[(masks[i] != 0)])) < 0.01  # sampled median


def test_ray_cache_computes_only_asked_pixels_and_equals_whole_image_rays():
    from shapemask_ros.geometry.rays import ray_cache

    for d in ((), (0.1, -0.2, 0.001, 0.001, 0.05)):
        intr = CameraIntrinsics.from_matrix([[150.0, 0, 79.5], [0, 152.0, 59.5], [0, 0, 1]], W, H, d)
        v, u = np.indices((H, W))
        xr, yr = intr.undistort_pixels(v.ravel(), u.ravel())  # the whole image in one call
        cache = ray_cache(intr)
        assert ray_cache(intr) is cache  # one per intrinsics
        pick = np.zeros((30, 40), bool)
        pick[5:20:3, 7:33:2] = True
        index = (slice(10, 40), slice(50, 90))
        before = int(cache.known.sum())
        xs, ys = cache.take(index, pick)
        np.testing.assert_array_equal(xs, xr.reshape(H, W)[index][pick])
        np.testing.assert_array_equal(ys, yr.reshape(H, W)[index][pick])
        assert int(cache.known.sum()) - before <= int(pick.sum())  # nothing outside the picked pixels
        ix = np.ix_(np.array([3, 4, 40, 41]), np.array([0, 9, 150]))
        xs, ys = cache.take(ix, np.ones((4, 3), bool))
        np.testing.assert_array_equal(xs, xr.reshape(H, W)[ix].ravel())
        np.testing.assert_array_equal(ys, yr.reshape(H, W)[ix].ravel())
        xs, ys = intr.normalized_rays(v, u)
        np.testing.assert_array_equal(xs, xr.reshape(H, W))
        np.testing.assert_array_equal(ys, yr.reshape(H, W))


def test_limit_blas_threads_sets_one_thread_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "from threadpoolctl import threadpool_info\n"
        "from shapemask_ros.utils.threads import limit_blas_threads\n"
        "assert limit_blas_threads()\n"  # before anything imported NumPy: it must still limit NumPy's BLAS
        "import numpy\n"
        "blas = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "assert blas and set(blas) == {1}, blas\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_blas_threads_flag_defaults_to_one_and_zero_leaves_blas_alone(monkeypatch):
    import argparse

    from shapemask_ros.utils import threads

    calls: list[int] = []
    monkeypatch.setattr(threads, "limit_blas_threads", lambda n=1: calls.append(n) or True)
    p = argparse.ArgumentParser()
    threads.add_blas_threads_argument(p)
    threads.apply_blas_threads(p.parse_args([]))
    threads.apply_blas_threads(p.parse_args(["--blas-threads", "0"]))
    threads.apply_blas_threads(p.parse_args(["--blas-threads", "3"]))
    assert calls == [1, 3]
