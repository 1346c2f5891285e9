"""Time the 3D outputs on a synthetic 640x480 frame with 20 objects (budget: <= 10 % of a ~300 ms frame).

    python -m shapemask_ros.bench.geometry_bench [--objects 20] [--repeats 50] [--distortion]

Prints the median and 90th percentile wall time and the median process CPU time (all threads) in ms of:
depth conversion (16UC1 -> metres), compute_objects3d (centroids + PCA boxes), the same with inlier points
kept, and the PointCloud2 bytes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from shapemask_ros.geometry.depth import CameraIntrinsics, depth_to_metres
from shapemask_ros.geometry.objects3d import compute_objects3d
from shapemask_ros.ros_bridge.pointcloud import objects_pointcloud
from shapemask_ros.utils.threads import add_blas_threads_argument, apply_blas_threads


class _DictFactory:
    """Message factory making plain dicts (no ROS needed for timing)."""

    def make(self, type_name: str, **fields: Any) -> dict[str, Any]:
        return {"_type": type_name, **fields}

    def u8(self, data: np.ndarray) -> bytes:
        return data.tobytes()


def synthetic_frame(
    n_objects: int, width: int = 640, height: int = 480, seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """16UC1 depth of a table with boxes on it, and cropped masks + regions (x, y, w, h) that bleed 3 px."""
    rng = np.random.default_rng(seed)
    v, u = np.indices((height, width))
    depth = (1200 + 0.4 * (v - height / 2)).astype(np.float64)  # tilted table, ~1.1-1.3 m
    masks, regions = [], []
    for _ in range(n_objects):
        w, h = (int(s) for s in rng.integers(30, 130, 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        depth[y : y + h, x : x + w] = rng.uniform(500, 1000) + rng.normal(0, 2, (h, w))
        x0, y0 = max(x - 3, 0), max(y - 3, 0)
        x1, y1 = min(x + w + 3, width), min(y + h + 3, height)
        masks.append(np.ones((y1 - y0, x1 - x0), np.uint8))
        regions.append((x0, y0, x1 - x0, y1 - y0))
    depth[rng.random(depth.shape) < 0.02] = 0  # sensor holes
    return np.round(depth).astype(np.uint16), masks, np.array(regions, np.int32)


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float, float]:
    """Median and p90 wall time and median process CPU time (all threads), in ms (CPU time is what a busy,
    shared machine distorts least)."""
    fn()  # warm-up (ray table, allocations)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return float(np.median(wall)), float(np.percentile(wall, 90)), float(np.median(cpu))


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per stage."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--distortion", action="store_true", help="plumb_bob camera (cached cv2 ray table)")
    add_blas_threads_argument(p)
    args = p.parse_args(argv)
    apply_blas_threads(args)
    d = (0.1, -0.2, 0.001, 0.001, 0.05) if args.distortion else ()
    intr = CameraIntrinsics.from_matrix([[610.0, 0.0, 319.5], [0.0, 610.0, 239.5], [0.0, 0.0, 1.0]], 640, 480, d)
    raw, masks, regions = synthetic_frame(args.objects)
    depth = depth_to_metres(raw, "16UC1")
    factory = _DictFactory()
    with_points = compute_objects3d(depth, intr, masks, regions, return_points=True)
    n_pts = sum(len(q) for q in with_points.points or [])
    print(f"640x480, {args.objects} objects, {n_pts} inlier points, distortion={bool(d)}, repeats={args.repeats}")
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("depth_to_metres", lambda: depth_to_metres(raw, "16UC1")),
        ("compute_objects3d", lambda: compute_objects3d(depth, intr, masks, regions)),
        (
            "compute_objects3d+points",
            lambda: compute_objects3d(depth, intr, masks, regions, return_points=True),
        ),
        ("objects_pointcloud", lambda: objects_pointcloud(factory, {}, with_points)),
    ]
    for name, fn in stages:
        med, p90, cpu = _time(fn, args.repeats)
        print(f"{name:26s} median {med:7.2f} ms   p90 {p90:7.2f} ms   process CPU median {cpu:7.2f} ms")


if __name__ == "__main__":
    main()
