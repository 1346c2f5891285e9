"""The 3D stage's two kernels side by side in one process (issue 24): `Objects3DStage.run` (depth decoding,
compute_objects3d, ObjectGeometryArray and PointCloud2) on frame3d_bench's 640x480 scene with 20 objects,
alternating the NumPy and the compiled (numba) kernel frame by frame, with the CPU caches evicted before
each frame as the network evicts them.

    python -m shapemask_ros.bench.objects3d_ab [--repeats 40] [--objects 20] [--no-points]

Prints, per camera (pinhole; plumb_bob with a principal point that moves every frame), the median wall and
thread CPU time of the stage with each kernel and their ratio (compiled / NumPy).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from shapemask_ros.bench.frame3d_bench import TOTE_D, StandinPredictor, camera_info, messages, scene
from shapemask_ros.config.node_config import GeometryConfig
from shapemask_ros.geometry.objects3d import prepare_objects3d, set_geometry_kernel
from shapemask_ros.ros_bridge.objects3d_stage import Objects3DStage
from shapemask_ros.utils.threads import limit_blas_threads

KERNELS = ("numpy", "numba")
EVICT_BYTES = 64 << 20  # written before each frame: more than the last-level cache


class _Masks:
    """What the stage reads of an InstanceMaskArray: the detection ids."""

    def __init__(self, n: int) -> None:
        self.instances = [type("Instance", (), {"detection_id": str(i)})() for i in range(n)]


def run(repeats: int = 40, objects: int = 20, points: bool = True) -> dict[str, dict[str, tuple[float, float]]]:
    """{camera: {kernel: (median wall ms, median thread CPU ms)}}."""
    from shapemask_ros.ros_bridge.factory import RosbagsFactory
    from shapemask_ros.ros_bridge.typestore import get_typestore

    set_geometry_kernel("numba", quiet=True)
    prepare_objects3d()  # compiled (or loaded) before the timed frames
    factory = RosbagsFactory(get_typestore("humble"))
    rgb, depth, boxes = scene(objects)
    inst = StandinPredictor().predict(rgb, boxes, None)
    masks = _Masks(len(boxes))
    evict = np.ones(EVICT_BYTES // 8)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for camera, d in (("pinhole", (0.0,) * 5), ("plumb_bob, panning", TOTE_D)):
        img, _, depth_msg, info = messages(factory, rgb, depth, boxes, d)
        stage = Objects3DStage(factory)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in KERNELS}
        frame = 0
        for r in range(repeats + 2):  # the first two rounds warm up
            for kernel in KERNELS:
                set_geometry_kernel(kernel, quiet=True)
                frame += 1
                cam: Any = info if camera == "pinhole" else camera_info(factory, info.header, d, frame % 20 - 10.0)
                evict += 1.0
                t0, c0 = time.perf_counter(), time.thread_time()
                res = stage.run(
                    inst, masks, img.header, depth_msg, cam, rectified=False, geometry=GeometryConfig(),
                    want_points=points, want_objects3d=True, missing_depth="",
                )  # fmt: skip
                wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
                if res.error:
                    raise RuntimeError(f"3D stage failed: {res.error}: {res.detail}")
                if r >= 2:
                    times[kernel].append((wall * 1e3, cpu * 1e3))
        out[camera] = {k: tuple(float(x) for x in np.median(np.asarray(v), axis=0)) for k, v in times.items()}  # type: ignore[misc]
    set_geometry_kernel("auto", quiet=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the A/B and print one line per camera."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--no-points", action="store_true", help="leave out the PointCloud2")
    args = p.parse_args(argv)
    limit_blas_threads()  # as the node and bag-eval
    for camera, t in run(args.repeats, args.objects, not args.no_points).items():
        (nw, nc), (cw, cc) = t["numpy"], t["numba"]
        print(
            f"{camera:19s} 3D stage wall / thread CPU: NumPy {nw:6.2f} / {nc:6.2f} ms, compiled {cw:6.2f} / "
            f"{cc:6.2f} ms; compiled / NumPy {cw / nw:.2f} (wall), {cc / nc:.2f} (CPU)"
        )


if __name__ == "__main__":
    main()
