"""Issue 24: the ROI-only 3D stage's NumPy path gives bit-identical outputs to the implementation it replaced.

objects3d_reference.py is a frozen copy of compute_objects3d from before the change (full-frame validity
mask and ray tables). Every output is compared exactly: centroids, box centres, rotations, quaternions,
sizes, medians, counts, statuses and the point clouds, on the synthetic 20-object benchmark scene (pinhole,
distorted, fisheye, registration "scale", full-size masks, other depth bands) and on the demo's real ARC
tote scene (real depth, distortion, a panning crop that changes K every frame). The compiled kernel that
runs by default when numba is installed is held to the same reference in test_objects3d_compiled.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from geometry import objects3d_reference as reference
from geometry.tote_frames import tote_pan_frames

from shapemask_ros.bench.frame3d_bench import StandinPredictor, scene
from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry import rays as rays_mod
from shapemask_ros.geometry.depth import CameraIntrinsics, depth_to_metres, millimetres_to_metres
from shapemask_ros.geometry.objects3d import Objects3D, compute_objects3d
from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.pointcloud import make_pointcloud, objects_pointcloud
from shapemask_ros.ros_bridge.typestore import get_typestore

TOTE_D = (-2.68880495e-03, -4.64680157e-02, 1.05911011e-03, 3.12392686e-05, 0.0)
FIELDS = [f.name for f in dataclasses.fields(Objects3D) if f.name not in ("points", "cloud", "cloud_records")]
FACTORY = RosbagsFactory(get_typestore("humble"))


def assert_identical(got: Objects3D, want: Objects3D) -> None:
    """Every field equal bit for bit (NaN where NaN), points included."""
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name, strict=True)
        else:
            assert a == b, name
    assert (got.points is None) == (want.points is None)
    if want.points is not None:
        assert got.points is not None and len(got.points) == len(want.points)
        for p, q in zip(got.points, want.points, strict=True):
            np.testing.assert_array_equal(p, q, strict=True)
        # the PointCloud2 bytes: new fast path (got.cloud) vs the old concatenation of per-object arrays
        assert got.cloud is not None
        np.testing.assert_array_equal(got.cloud, np.concatenate(want.points), strict=True)
        new = objects_pointcloud(FACTORY, None, got)
        ids = np.concatenate([np.full(len(p), i, np.uint32) for i, p in enumerate(want.points)])
        old = make_pointcloud(FACTORY, None, np.concatenate(want.points).astype(np.float64), ids)
        assert new.width == old.width and new.fields == old.fields
        np.testing.assert_array_equal(np.asarray(new.data), np.asarray(old.data), strict=True)


def both(*args, **kw) -> tuple[Objects3D, Objects3D]:
    rays_mod.clear_ray_caches()  # a cold cache: every ray computed for this call
    return compute_objects3d(*args, kernel="numpy", **kw), reference.compute_objects3d(*args, **kw)


def synthetic(n: int = 20, seed: int = 0):
    """The frame3d benchmark's 640x480 scene: depth in metres, cropped ellipse masks and their regions."""
    rgb, depth_mm, boxes = scene(n, seed)
    inst = StandinPredictor().predict(rgb, boxes, None)
    depth = depth_to_metres(depth_mm, "16UC1")
    # what a caller's own float depth may hold besides NaN: zeros, negative values, infinities
    depth[::7, ::11], depth[3::13, 5::17], depth[5::19, 2::23] = 0.0, np.inf, -0.5
    return depth, inst


def edge_scenes(depth: np.ndarray, inst) -> list[tuple[str, np.ndarray, object, object, int, str]]:
    """Edge cases every kernel is held to the reference on, from a `synthetic` frame: (camera, depth, masks,
    regions, index, the status object `index` must get)."""
    full = np.zeros((4, 480, 640), np.uint8)  # full-size masks (no regions); the fourth is empty
    for j in range(3):
        x, y, w, h = (int(v) for v in inst.regions[j])
        full[j, y : y + h, x : x + w] = inst.masks[j]
    bad = list(inst.masks[:3]) + [np.ones((5, 5), np.uint8)]  # the last disagrees with its region
    bad_regions = np.concatenate([inst.regions[:3], [[600, 470, 60, 40]]])
    hole = depth.copy()
    x, y, w, h = (int(v) for v in inst.regions[0])
    hole[y : y + h, x : x + w] = np.nan  # no depth under object 0
    return [
        ("plumb_bob", depth, full, None, 3, "empty_mask"),
        ("pinhole", depth, bad, bad_regions, 3, "bad_mask"),
        ("plumb_bob", hole, inst.masks, inst.regions, 0, "no_depth"),
    ]


K640 = [[610.0, 0, 319.5], [0, 610.0, 239.5], [0, 0, 1]]
CAMERAS = {
    "pinhole": CameraIntrinsics.from_matrix(K640, 640, 480),
    "plumb_bob": CameraIntrinsics.from_matrix(K640, 640, 480, TOTE_D),
    "rational_polynomial": CameraIntrinsics.from_matrix(
        K640, 640, 480, (0.08, -0.15, 0.001, -0.002, 0.03, 0.01, -0.002, 0.001), "rational_polynomial"
    ),
    "equidistant": CameraIntrinsics.from_matrix(K640, 640, 480, (0.01, -0.02, 0.003, -0.001), "equidistant"),
}
CONFIGS = {
    "default": GeometryConfig(),
    "percentile": GeometryConfig(percentile_low=5.0, percentile_high=95.0),
    "percentile_only": GeometryConfig(mad_k=0.0, percentile_low=10.0, percentile_high=90.0),
    "range": GeometryConfig(min_depth_m=0.6, max_depth_m=0.9, min_points=500),
}


@pytest.mark.parametrize("camera", sorted(CAMERAS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_synthetic_scene_identical(camera, config):
    depth, inst = synthetic()
    got, want = both(
        depth, CAMERAS[camera], inst.masks, inst.regions, image_shape=(480, 640), config=CONFIGS[config],
        return_points=True,
    )  # fmt: skip
    assert want.counts.get("ok", 0) >= 10  # mostly usable objects (range: 6 outside, no_depth)
    assert_identical(got, want)


def test_warm_cache_and_second_frame_identical():
    """A second frame on the same camera reads rays computed for the first (and fills the rest)."""
    cam = CAMERAS["plumb_bob"]
    rays_mod.clear_ray_caches()
    for seed in (0, 1, 2):
        depth, inst = synthetic(seed=seed)
        got = compute_objects3d(depth, cam, inst.masks, inst.regions, return_points=True, kernel="numpy")
        assert_identical(got, reference.compute_objects3d(depth, cam, inst.masks, inst.regions, return_points=True))
    cache = rays_mod.ray_cache(cam)
    assert 0 < cache.known.sum() < cache.known.size  # only object pixels were undistorted


def test_scale_registration_full_masks_and_bad_masks_identical():
    depth, inst = synthetic(12, seed=4)
    small = depth[::2, ::2].copy()  # depth at half the colour resolution
    cfg = GeometryConfig(registration="scale")
    for cam in (CAMERAS["pinhole"], CAMERAS["plumb_bob"]):
        got, want = both(small, cam, inst.masks, inst.regions, image_shape=(480, 640), config=cfg, return_points=True)
        assert_identical(got, want)
    for camera, frame, masks, regions, index, status in edge_scenes(depth, inst):
        for points in (False, True):
            got, want = both(frame, CAMERAS[camera], masks, regions, return_points=points)
            assert want.status[index] == status
            assert_identical(got, want)


def test_demo_tote_scene_identical():
    """The demo's real scene: ARC 2017 tote depth and masks, real distortion, a 512x384 crop panning over
    the 640x480 scene (K's principal point moves every frame, as in `make demo`)."""
    for intr, depth, masks, regions in tote_pan_frames(6, margin=6):
        got, want = both(depth, intr, masks, regions, return_points=True)
        assert want.counts.get("ok", 0) >= 5
        assert_identical(got, want)


@pytest.mark.parametrize("kernel", ["numpy", "numba"])
@pytest.mark.parametrize("camera", ["pinhole", "plumb_bob"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_millimetre_depth_equals_its_metres(kernel, camera, config):
    """uint16 millimetres (a 16UC1 image as the 3D stage now passes it, unconverted) give every output bit for
    bit as their float32 metres (depth_to_array's, what the stage passed before), read-only or not."""
    if kernel == "numba":
        pytest.importorskip("numba")
    rgb, mm, boxes = scene(20, 0)
    inst = StandinPredictor().predict(rgb, boxes, None)
    mm = mm.copy()
    mm[::7, ::11] = 0  # no reading
    ro = mm.copy()
    ro.flags.writeable = False  # a message's buffer
    metres = millimetres_to_metres(mm)
    for depth in (mm, ro):
        for points in (False, True):
            rays_mod.clear_ray_caches()
            cfg = CONFIGS[config]
            kw = {"config": cfg, "return_points": points, "kernel": kernel}
            got = compute_objects3d(depth, CAMERAS[camera], inst.masks, inst.regions, **kw)
            want = compute_objects3d(metres, CAMERAS[camera], inst.masks, inst.regions, **kw)
            assert want.counts.get("ok", 0) >= 5
            assert_identical(got, want)
