"""Issue 24: the compiled 3D kernel (geometry/objects3d_numba.py) against the frozen pre-issue-24 reference
(objects3d_reference.py), on the scenes test_objects3d_equivalence.py runs the NumPy path on.

Equal bit for bit: statuses, counts, valid fractions, median depths, every point and the PointCloud2 bytes
(element by element the kernel does the reference's arithmetic, comparisons included). Equal to rounding:
centroids, box axes, quaternions, box centres and sizes, because their sums run in another order (the
reference: NumPy pairwise sums and BLAS dot products, E[pp^T] - cc^T; the kernel: sequential sums of the
points minus the object's first point). The tolerances and why they hold:
- centroids, box centres and sizes: 1e-9 m. A sequential float64 sum of M terms errs by at most about
  M * 2^-53 of their size: for M <= 640 * 480 points within 10 m that is 3.4e-10 m. Measured: <= 3e-14 m.
- box axes (rotation matrices) and quaternions: 1e-9. An eigenvector moves by about |dCov| / gap; the two
  covariances differ by ~1e-16 m^2 (float64 rounding of second moments of points ~1 m from the camera), and
  `eigen_gap` asserts every compared object's eigenvalues are >= 1e-6 m^2 apart (1e-16 / 1e-6 = 1e-10).
  Measured: <= 1.3e-12. (For a nearly round object the axes are ill-defined in any implementation.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from geometry import objects3d_reference as reference
from geometry.test_objects3d_equivalence import CAMERAS, CONFIGS, FACTORY, edge_scenes, synthetic
from geometry.tote_frames import tote_pan_frames
from geometry.undistort_count import count_undistorted_pixels
from hypothesis import given, settings
from hypothesis import strategies as st

from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry import objects3d
from shapemask_ros.geometry import rays as rays_mod
from shapemask_ros.geometry.objects3d import Objects3D, compute_objects3d, rotation_to_quaternion
from shapemask_ros.ros_bridge.pointcloud import make_pointcloud, objects_pointcloud
from support import REPO

numba = pytest.importorskip("numba", reason="the compiled kernel needs numba (requirements.txt installs it)")
from shapemask_ros.geometry import objects3d_numba  # noqa: E402  # after the numba check

EXACT = ("instance_index", "median_depth", "num_mask_pixels", "num_valid_points", "num_inliers", "valid_fraction")
CLOSE = ("centroids", "box_centers", "box_rotations", "box_quaternions", "box_sizes")
TOL = 1e-9


def eigen_gap(want: Objects3D) -> float:
    """Smallest distance between two eigenvalues of an object's point covariance (m^2), over the objects
    with at least 3 points: what bounds how far rounding can turn its box axes."""
    gaps = []
    for p in want.points or []:
        if len(p) >= 3:
            w = np.linalg.eigvalsh(np.cov(np.asarray(p, np.float64).T, bias=True))
            gaps.append(min(w[1] - w[0], w[2] - w[1]))
    return min(gaps, default=np.inf)


def assert_same(got: Objects3D, want: Objects3D) -> None:
    """`got` (compiled) equals the reference: exactly where the arithmetic is the same, to TOL elsewhere."""
    assert got.status == want.status and got.counts == want.counts
    for name in EXACT:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name, strict=True)
    for name in CLOSE:
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=name)
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL, err_msg=name)
    np.testing.assert_allclose(np.linalg.det(got.box_rotations), 1.0, atol=1e-12)
    if want.points is None:
        assert got.points is None
        return
    assert eigen_gap(want) >= 1e-6  # the rotation tolerance holds (module docstring)
    assert got.points is not None and len(got.points) == len(want.points)
    for p, q in zip(got.points, want.points, strict=True):
        np.testing.assert_array_equal(p, q, strict=True)
    # the PointCloud2 made from the kernel's records, byte for byte the reference's
    assert got.cloud_records is not None
    new = objects_pointcloud(FACTORY, None, got)
    ids = np.concatenate([np.full(len(p), i, np.uint32) for i, p in enumerate(want.points)])
    old = make_pointcloud(FACTORY, None, np.concatenate(want.points).astype(np.float64), ids)
    assert new.width == old.width and new.fields == old.fields and new.row_step == old.row_step
    np.testing.assert_array_equal(np.asarray(new.data), np.asarray(old.data), strict=True)


def both(*args, **kw) -> tuple[Objects3D, Objects3D]:
    rays_mod.clear_ray_caches()  # a cold cache: every ray computed for this call
    return compute_objects3d(*args, kernel="numba", **kw), reference.compute_objects3d(*args, **kw)


@pytest.mark.parametrize("camera", sorted(CAMERAS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_synthetic_scene(camera, config):
    depth, inst = synthetic()
    got, want = both(
        depth, CAMERAS[camera], inst.masks, inst.regions, image_shape=(480, 640), config=CONFIGS[config],
        return_points=True,
    )  # fmt: skip
    assert want.counts.get("ok", 0) >= 10
    assert_same(got, want)


def test_demo_tote_scene():
    """Real depth, distortion and a panning window: rays are filled by the kernel's missing-ray list."""
    for intr, depth, masks, regions in tote_pan_frames(6, margin=6):
        got, want = both(depth, intr, masks, regions, return_points=True)
        assert want.counts.get("ok", 0) >= 5
        assert_same(got, want)


def test_overlapping_masks_undistort_each_pixel_once(monkeypatch):
    """Masks that share pixels (the demo's detector boxes overlap): the kernel's missing-ray list names each
    pixel once, so OpenCV undistorts only the pixels of their union, and every output still equals the
    reference's; the flags that deduplicate are left clear for the next frame."""
    count = count_undistorted_pixels(monkeypatch)
    intr, depth, masks, regions = next(tote_pan_frames(1, margin=6))
    # each object twice, and a copy of the first one's mask 5 pixels lower and to the right (a partial overlap)
    x, y, w, h = regions[0]
    twice = [*masks, *masks, masks[0][: h - 5, : w - 5]]
    twice_regions = np.concatenate([regions, regions, [[x + 5, y + 5, w - 5, h - 5]]])
    union = np.zeros(depth.shape, bool)
    for m, (x, y, w, h) in zip(twice, twice_regions, strict=True):
        union[y : y + h, x : x + w] |= m != 0
    rays_mod.clear_ray_caches()
    got = compute_objects3d(depth, intr, twice, twice_regions, return_points=True, kernel="numba")
    assert count[0] == np.count_nonzero(union & np.isfinite(depth) & (depth > 0))
    assert_same(got, reference.compute_objects3d(depth, intr, twice, twice_regions, return_points=True))
    assert not objects3d_numba._WORK.flags("listed", (1, 1)).any()


def test_warm_lens_table_across_frames():
    cam = CAMERAS["plumb_bob"]
    rays_mod.clear_ray_caches()
    for seed in (0, 1, 2):
        depth, inst = synthetic(seed=seed)
        got = compute_objects3d(depth, cam, inst.masks, inst.regions, return_points=True, kernel="numba")
        assert_same(got, reference.compute_objects3d(depth, cam, inst.masks, inst.regions, return_points=True))


def test_edge_cases_empty_mask_no_depth_too_few_points_bad_mask():
    depth, inst = synthetic(12, seed=4)
    for camera, frame, masks, regions, index, status in edge_scenes(depth, inst):
        for points in (False, True):
            got, want = both(frame, CAMERAS[camera], masks, regions, return_points=points)
            assert want.status[index] == status
            assert_same(got, want)
    cfg = GeometryConfig(min_points=5000)
    got, want = both(depth, CAMERAS["pinhole"], inst.masks, inst.regions, config=cfg, return_points=True)
    assert "too_few_points" in want.status and "ok" in want.status
    assert_same(got, want)
    nothing = both(depth, CAMERAS["pinhole"], [], np.zeros((0, 4)), return_points=True)[0]
    assert len(nothing) == 0 and nothing.cloud is not None and nothing.cloud.shape == (0, 3)
    # a region partly outside the image (clipped) and one entirely outside (empty on the depth grid)
    masks = [np.ones((40, 50), np.uint8), np.ones((10, 10), np.uint8)]
    regions = np.array([[620, 460, 50, 40], [700, 10, 10, 10]])
    got, want = both(depth, CAMERAS["pinhole"], masks, regions, return_points=True)
    assert want.status[1] == "empty_mask" and want.num_mask_pixels[0] == 20 * 20
    assert_same(got, want)


def test_scale_registration():
    depth, inst = synthetic(12, seed=4)
    small = depth[::2, ::2].copy()  # depth at half the colour resolution
    cfg = GeometryConfig(registration="scale")
    for cam in (CAMERAS["pinhole"], CAMERAS["plumb_bob"]):
        got, want = both(small, cam, inst.masks, inst.regions, image_shape=(480, 640), config=cfg, return_points=True)
        assert_same(got, want)


def test_other_depth_and_mask_types():
    """float64 and strided depth, bool and float masks: other compiled specialisations, same results."""
    depth, inst = synthetic(8, seed=5)
    cam = CAMERAS["pinhole"]
    wide = np.zeros((480, 1280), np.float32)
    wide[:, ::2] = depth
    for d in (depth.astype(np.float64), wide[:, ::2]):
        got, want = both(d, cam, inst.masks, inst.regions, return_points=True)
        assert_same(got, want)
    for masks in ([m.astype(bool) for m in inst.masks], [m.astype(np.float32) * 0.7 for m in inst.masks]):
        got, want = both(depth, cam, masks, inst.regions, return_points=True)
        assert_same(got, want)
    # float16 depth is not compiled: the NumPy path runs it
    half = compute_objects3d(depth.astype(np.float16), cam, inst.masks, inst.regions, kernel="numba")
    assert (
        half.status == compute_objects3d(depth.astype(np.float16), cam, inst.masks, inst.regions, kernel="numpy").status
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 12), min_size=1, max_size=300),  # few distinct values: many ties, as in mm depths
    st.sampled_from([np.float32, np.float64]),
)
def test_median_equals_numpy(values, dtype):
    a = np.asarray(values, dtype) * dtype(0.001)
    work = a.copy()
    assert objects3d_numba._median(work, a.size) == objects3d._median(a)
    assert sorted(work.tolist()) == sorted(a.tolist())  # reordered, nothing lost


def test_quaternion_formula_equals_rotation_to_quaternion():
    rng = np.random.default_rng(7)
    q = rng.normal(size=(500, 4))
    q[:5] = [[0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0.5, 0.5, 0.5, 0.5]]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    rot = np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )
    want = rotation_to_quaternion(rot)
    got = np.empty_like(want)
    for i in range(len(rot)):
        objects3d_numba._quaternion(rot[i], got[i])
    np.testing.assert_array_equal(got, want)


def test_process_default_kernel_and_override(monkeypatch):
    depth, inst = synthetic(4, seed=2)
    cam = CAMERAS["pinhole"]
    monkeypatch.setattr(objects3d, "_kernel_choice", None)
    monkeypatch.setenv(objects3d.KERNEL_ENV, "numpy")
    assert objects3d.geometry_kernel()[0] == "numpy"
    assert compute_objects3d(depth, cam, inst.masks, inst.regions, return_points=True).cloud_records is None
    assert objects3d.set_geometry_kernel("auto")[0] == "numba"
    assert compute_objects3d(depth, cam, inst.masks, inst.regions, return_points=True).cloud_records is not None
    assert "compiled kernel" in objects3d.prepare_objects3d()
    with pytest.raises(ValueError, match="geometry kernel"):
        objects3d.set_geometry_kernel("fast")
    with pytest.raises(ValueError, match="kernel"):
        compute_objects3d(depth, cam, inst.masks, inst.regions, kernel="auto")


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "test")]), **env}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600
    )


def test_without_numba_the_numpy_path_runs():
    code = (
        "import sys; sys.modules['numba'] = None\n"  # import numba -> ImportError
        "from shapemask_ros.geometry import objects3d as o\n"
        "print(o.prepare_objects3d())\n"
        "try:\n    o.set_geometry_kernel('numba')\nexcept ImportError as e:\n    print('refused:', e)\n"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "3D stage: NumPy (numba not available" in r.stdout
    assert "refused: geometry kernel 'numba' asked for" in r.stdout


@pytest.mark.slow  # compiles the kernels from scratch in a new process (~10 s on 2 cores)
def test_no_writable_cache_compiles_quietly():
    """A read-only install with an unwritable home: numba finds no place for its cache and refuses cache=True
    (simulated by giving it no cache locator: as root, file modes do not stop writes). The kernel compiles in
    the process instead, without a warning, and gives the same results."""
    code = (
        "from numba.core import caching\n"
        "caching.CacheImpl._locator_classes = []\n"
        "from shapemask_ros.geometry import objects3d_numba as k, objects3d as o\n"
        "assert not k.CACHED\n"
        "print(o.prepare_objects3d())\n"
        "from geometry.test_objects3d_equivalence import synthetic, CAMERAS\n"
        "from geometry import objects3d_reference as ref\n"
        "from geometry.test_objects3d_compiled import assert_same\n"
        "d, inst = synthetic(6, seed=3)\n"
        "got = o.compute_objects3d(d, CAMERAS['pinhole'], inst.masks, inst.regions, return_points=True)\n"
        "assert_same(got, ref.compute_objects3d(d, CAMERAS['pinhole'], inst.masks, inst.regions, return_points=True))\n"
    )
    r = _run(code, NUMBA_CACHE_DIR="")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no writable numba cache" in r.stdout
    assert "Warning" not in r.stderr, r.stderr[-2000:]


def test_warm_up_compiles_what_the_3d_stage_runs():
    """After prepare_objects3d (the node's configure, bag-eval's warm-up), frames as the processor gives them
    (16UC1 as uint16 millimetres from depth_pixels, 32FC1 as float32 metres, uint8 masks; pinhole, lens-table
    and skewed cameras; with and without points; an object without depth) compile nothing more: the first
    frame carries no JIT time. In a new process: this one has compiled whatever the other tests asked for."""
    code = (
        "import numba\n"
        "from shapemask_ros.geometry import objects3d as o\n"
        "print(o.prepare_objects3d())\n"
        "from shapemask_ros.geometry import objects3d_numba as k\n"
        "kernels = {n: getattr(k, n) for n in dir(k) if isinstance(getattr(k, n), numba.core.registry.CPUDispatcher)}\n"
        "before = {n: len(d.signatures) for n, d in kernels.items()}\n"
        "from shapemask_ros.bench.frame3d_bench import StandinPredictor, messages, scene\n"
        "from shapemask_ros.geometry.depth import CameraIntrinsics\n"
        "from shapemask_ros.ros_bridge.image_codec import depth_pixels, depth_to_array\n"
        "from geometry.test_objects3d_equivalence import CAMERAS, FACTORY\n"
        "rgb, depth_mm, boxes = scene(6, seed=1)\n"
        "depth_mm[: 240, :] = 0\n"  # objects in the top half have no depth
        "inst = StandinPredictor().predict(rgb, boxes, None)\n"
        "msg = messages(FACTORY, rgb, depth_mm, boxes)[2]\n"
        "skew = CameraIntrinsics.from_matrix([[610.0, 0.5, 319.5], [0, 610.0, 239.5], [0, 0, 1]], 640, 480)\n"
        "for intr in (CAMERAS['pinhole'], CAMERAS['plumb_bob'], skew):\n"
        "    for points in (True, False):\n"
        "        for depth in (depth_pixels(msg), depth_to_array(msg)):\n"  # 16UC1 as the stage reads it; 32FC1's
        "            o.objects3d_from_instances(depth, intr, inst, return_points=points)\n"
        "new = {n: len(d.signatures) - before[n] for n, d in kernels.items() if len(d.signatures) > before[n]}\n"
        "print('compiled after the warm-up:', new)\n"
    )
    r = _run(code, SHAPEMASK_GEOMETRY_KERNEL="numba")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "compiled kernel" in r.stdout
    assert "compiled after the warm-up: {}" in r.stdout, r.stdout


@pytest.mark.parametrize(
    "config",
    [
        # NumPy compares float32 depths with a Python float in float32: the threshold is rounded first. Each
        # threshold sits 1e-12 m beside 1.0625 (a float32), on the side where a float64 comparison would
        # drop or keep the 1.0625 m pixels the other way round
        GeometryConfig(mad_k=1e-6, min_band_m=0.0625 - 1e-12),  # |z - median| <= band keeps them
        GeometryConfig(min_depth_m=1.0625 + 1e-12),  # z >= min keeps them (and drops the rest)
        GeometryConfig(max_depth_m=1.0625 - 1e-12, mad_k=0.0),  # z <= max keeps them (no band to drop them)
    ],
    ids=["band", "min_depth", "max_depth"],
)
def test_thresholds_are_compared_in_the_depths_dtype(config):
    depth = np.full((480, 640), 1.0, np.float32)
    depth[::3, ::2] = np.float32(1.0625)
    mask = np.ones((40, 40), np.uint8)
    got, want = both(depth, CAMERAS["pinhole"], [mask], np.array([[10, 10, 40, 40]]), config=config, return_points=True)
    kept = (np.asarray(want.points[0])[:, 2] == np.float32(1.0625)).sum()
    assert kept == (depth[10:50, 10:50] == np.float32(1.0625)).sum() > 0  # the reference keeps them all
    assert_same(got, want)


def test_constants_repeated_from_objects3d():
    assert objects3d_numba.BAND_SAMPLE_POINTS == objects3d.BAND_SAMPLE_POINTS
    assert objects3d_numba.MAD_TO_SIGMA == objects3d.MAD_TO_SIGMA


def test_objects3d_ab_bench_runs_both_kernels(capsys):
    from shapemask_ros.bench import objects3d_ab

    objects3d_ab.main(["--repeats", "1", "--objects", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all("compiled / NumPy" in line for line in lines)
    assert objects3d.geometry_kernel()[0] == "numba"  # the process default is restored ("auto")
