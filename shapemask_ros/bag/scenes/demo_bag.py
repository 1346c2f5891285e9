"""`shapemask make-demo-bag`: a synthetic RGB-D camera rosbag with a simulated detector and ground truth.

What a user would record from a RealSense-style camera plus a 2D detector, made from the synthetic shape
families (shapemask_ros/datasets/synthetic.py) so every pixel's truth is known:

- /camera/color/image_raw                   sensor_msgs/Image rgb8: moving, rotating shapes on a static
                                            cluttered background (same background seed every frame);
- /camera/aligned_depth_to_color/image_raw  sensor_msgs/Image 16UC1 (mm), aligned with colour: each object
                                            a fronto-parallel plane at its own (slowly changing) depth,
                                            background plane behind; depth noise grows with z^2, plus a few
                                            invalid (0) pixels;
- /camera/color/camera_info                 sensor_msgs/CameraInfo (plumb_bob, zero distortion, a K like a
                                            D435 colour stream at 640x480, scaled with the image size);
- /detections                               vision_msgs/Detection2DArray from the ground-truth boxes with
                                            box jitter, missed objects and spurious boxes; class_id = family
                                            name, id = the object's track id ("obj3") or "fp<frame>_<j>";
                                            header = the image header, recorded `latency` later.

Ground truth goes next to the bag as `<bag>.gt.json`: COCO instances (visible masks as RLE) whose images
carry `stamp_ns` (the image header stamp in ns: what bag-eval matches on) and whose annotations carry
`object_id` (track id) and `centroid_m`: the true 3D centroid of the object's visible pixels, i.e. each
visible pixel (u, v) back-projected with K onto the object's plane z = depth_m (pixel-index convention:
integer (u, v) is a pixel centre, as in ROS CameraInfo), then averaged.

Everything is deterministic given --seed (separate generators per frame for depth noise and detector).
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from shapemask_ros.bag.evaluation.report import STAMP_KEY
from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.bag.recording.writer import STORAGES, AtomicOutputDir, BagWriter
from shapemask_ros.bag.scenes.scene_helpers import FRAME_ID, Messages, simulate_detector
from shapemask_ros.datasets import synthetic
from shapemask_ros.ros_bridge.image_codec import rgb_to_image_msg
from shapemask_ros.ros_bridge.msg_types import CAMERA_INFO_TYPE, DETECTION_ARRAY_TYPE, IMAGE_TYPE
from shapemask_ros.utils.io import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/aligned_depth_to_color/image_raw"
CAMERA_INFO_TOPIC = "/camera/color/camera_info"
DETECTIONS_TOPIC = "/detections"
TOPIC_TYPES = {
    IMAGE_TOPIC: IMAGE_TYPE,
    DEPTH_TOPIC: IMAGE_TYPE,
    CAMERA_INFO_TOPIC: CAMERA_INFO_TYPE,
    DETECTIONS_TOPIC: DETECTION_ARRAY_TYPE,
}
# bag-eval's topic options for the demo bags (`BagEvalOptions(bag=..., out=..., **EVAL_TOPICS)`)
EVAL_TOPICS: dict[str, Any] = {
    "image_topic": IMAGE_TOPIC,
    "detections_topic": DETECTIONS_TOPIC,
    "depth_topic": DEPTH_TOPIC,
    "camera_info_topic": CAMERA_INFO_TOPIC,
}
GT_SUFFIX = ".gt.json"
GT_FORMAT = "shapemask_ros.bag_gt/1"


@dataclass
class DemoBagConfig:
    """Everything that shapes the demo bag (defaults: `make demo`)."""

    frames: int = 60
    width: int = 640
    height: int = 480
    fps: float = 15.0
    seed: int = 0
    storage: str = "mcap"  # mcap | sqlite3
    compress: bool = False  # zstd (MCAP chunks / sqlite3 messages); off like `ros2 bag record`
    num_objects: int = 5
    background_depth_m: float = 2.0
    object_depth_m: tuple[float, float] = (0.6, 1.5)
    miss_prob: float = 0.1  # each visible object is missed by the detector with this probability
    spurious_per_frame: float = 0.3  # Poisson mean of false boxes per frame
    box_jitter: float = 0.04  # sigma of the box centre/size noise, as a fraction of the box size
    latency_s: tuple[float, float] = (0.04, 0.09)  # detector latency range (receive time - stamp)
    depth_noise_mm: float = 1.5  # sigma at 1 m; grows with z^2 like stereo depth
    depth_hole_fraction: float = 0.01  # pixels with no depth (0)
    start_time_s: int = 1_700_000_000  # first stamp (seconds since the epoch, like a real recording)
    families: tuple[str, ...] = field(default=())  # () = a seeded choice of the synthetic families

    def validate(self) -> None:
        """ValueError naming the bad field."""
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image must be at least 32x32, got {self.width}x{self.height}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {self.storage!r}")
        if not 1 <= self.num_objects <= 20:
            raise ValueError(f"num_objects must be in [1, 20], got {self.num_objects}")
        if not 0 <= self.miss_prob <= 1 or self.spurious_per_frame < 0 or self.box_jitter < 0:
            raise ValueError("miss_prob must be in [0, 1]; spurious_per_frame and box_jitter >= 0")
        lo, hi = self.object_depth_m
        if not 0 < lo <= hi < self.background_depth_m:
            raise ValueError("need 0 < object depths < background_depth_m")


@dataclass
class DemoBag:
    """What make_demo_bag wrote."""

    bag: Path
    gt: Path
    frames: int
    counts: dict[str, int]  # messages per topic
    detector: dict[str, int]  # true / missed / spurious detections


def camera_matrix(width: int, height: int) -> np.ndarray:
    """A plausible 3x3 K: a D435 colour stream at 640x480 (fx = fy = 615, principal point a little off
    centre), scaled to the requested size."""
    s = width / 640.0
    return np.array(
        [
            [615.0 * s, 0.0, (321.3 + 0.5) * s - 0.5],
            [0.0, 615.0 * s, (238.1 + 0.5) * (height / 480.0) - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )


def gt_path_for(bag: str | Path) -> Path:
    """Where the ground truth of `bag` lives: `<bag>.gt.json` next to it."""
    p = Path(bag)
    return p.with_name(p.name + GT_SUFFIX)


@dataclass
class _Track:
    family: str
    size: float
    aspect: float
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    texture: str
    texture_seed: int
    p0: np.ndarray  # centre at frame 0 (pixels)
    v: np.ndarray  # pixels per frame
    rot0: float
    rot_v: float  # degrees per frame
    z0: float
    z_amp: float
    z_period: float  # frames


def _tracks(cfg: DemoBagConfig) -> list[_Track]:
    syn = synthetic
    rng = np.random.default_rng([cfg.seed, 0])
    names = list(cfg.families) or [f.name for f in syn.SHAPE_FAMILIES]
    chosen = rng.choice(len(names), size=cfg.num_objects, replace=cfg.num_objects > len(names))
    side = min(cfg.width, cfg.height)
    speed = 0.006 * cfg.width * 15.0 / cfg.fps  # ~4 px per frame at 640 px and 15 fps
    tracks = []
    for k, idx in enumerate(chosen):
        hue = (k / cfg.num_objects + rng.uniform(0, 0.1)) % 1.0
        color = tuple(int(255 * c) for c in _hsv_to_rgb(hue, 0.8, 0.95))
        ang = rng.uniform(0, 2 * math.pi)
        tracks.append(
            _Track(
                family=names[int(idx)],
                size=float(side * rng.uniform(0.16, 0.3)),
                aspect=float(math.exp(rng.uniform(-0.3, 0.3))),
                color=color,  # type: ignore[arg-type]
                color2=tuple(int(v) for v in rng.integers(0, 256, 3)),  # type: ignore[arg-type]
                texture=str(syn.TEXTURES[int(rng.integers(0, len(syn.TEXTURES)))]),
                texture_seed=int(rng.integers(0, 2**31 - 1)),
                p0=np.array([rng.uniform(0.2, 0.8) * cfg.width, rng.uniform(0.2, 0.8) * cfg.height]),
                v=speed * rng.uniform(0.5, 1.0) * np.array([math.cos(ang), math.sin(ang)]),
                rot0=float(rng.uniform(0, 360)),
                rot_v=float(rng.uniform(-3, 3)),
                z0=float(rng.uniform(*cfg.object_depth_m)),
                z_amp=float(rng.uniform(0.0, 0.08)),
                z_period=float(rng.uniform(30, 90)),
            )
        )
    return tracks


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def _bounce(p0: float, v: float, t: int, lo: float, hi: float) -> float:
    """Position at frame t of a point moving at v that reflects off lo and hi (a triangle wave)."""
    span = hi - lo
    x = (p0 - lo + v * t) % (2 * span)
    return lo + (x if x <= span else 2 * span - x)


def _specs(cfg: DemoBagConfig, tracks: list[_Track], t: int) -> tuple[list[Any], list[int]]:
    """ObjectSpecs of frame t in drawing order (far first, so nearer objects occlude) + their track ids."""
    items = []
    for k, tr in enumerate(tracks):
        margin = tr.size * 0.3
        cx = _bounce(tr.p0[0], tr.v[0], t, margin, cfg.width - margin)
        cy = _bounce(tr.p0[1], tr.v[1], t, margin, cfg.height - margin)
        z = tr.z0 + tr.z_amp * math.sin(2 * math.pi * t / tr.z_period)
        spec = synthetic.ObjectSpec(
            family=tr.family,
            center=(float(cx), float(cy)),
            size=tr.size,
            rotation_deg=(tr.rot0 + tr.rot_v * t) % 360.0,
            aspect=tr.aspect,
            color=tr.color,
            texture=tr.texture,
            color2=tr.color2,
            texture_seed=tr.texture_seed,
            depth_m=float(z),
        )
        items.append((z, k, spec))
    items.sort(key=lambda it: (-it[0], it[1]))
    return [s for _z, _k, s in items], [k for _z, k, _s in items]


def _depth_mm(depth_m: np.ndarray, cfg: DemoBagConfig, rng: np.random.Generator) -> np.ndarray:
    """Metres -> noisy 16UC1 millimetres with a few holes (0 = invalid, REP 118)."""
    sigma = cfg.depth_noise_mm / 1000.0 * depth_m.astype(np.float64) ** 2
    noisy = depth_m + rng.standard_normal(depth_m.shape) * sigma
    mm = np.clip(np.round(noisy * 1000.0), 1, 65535).astype(np.uint16)
    if cfg.depth_hole_fraction > 0:
        mm[rng.random(depth_m.shape) < cfg.depth_hole_fraction] = 0
    return mm


def _centroid(mask: np.ndarray, z: float, k: np.ndarray) -> list[float]:
    """True centroid of a fronto-parallel plane patch: visible pixels back-projected at depth z."""
    ys, xs = np.nonzero(mask)
    x = (xs.astype(np.float64) - k[0, 2]) / k[0, 0] * z
    y = (ys.astype(np.float64) - k[1, 2]) / k[1, 1] * z
    return [float(x.mean()), float(y.mean()), float(z)]


def _tight_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _annotation(inst: Any, spec: Any, track: str, image_id: int, ann_id: int, k: np.ndarray) -> dict[str, Any]:
    """COCO annotation of one visible object, with its track id, plane depth and true 3D centroid."""
    rle = mask_utils.encode(np.asfortranarray(inst.mask.astype(np.uint8)))
    x1, y1, x2, y2 = _tight_box(inst.mask)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": int(inst.category_id),
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "area": float(mask_utils.area(rle)),
        "iscrowd": 0,
        "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "object_id": track,
        "depth_m": float(spec.depth_m),
        "centroid_m": _centroid(inst.mask, float(spec.depth_m), k),
        "visible_fraction": float(inst.visible_fraction),
    }


class _Recorder:
    """Renders frames and writes their messages in receive order; collects the ground truth."""

    def __init__(self, cfg: DemoBagConfig, writer: BagWriter, msgs: Messages) -> None:
        self.cfg, self.writer, self.msgs = cfg, writer, msgs
        self.syn = synthetic
        self.k = camera_matrix(cfg.width, cfg.height)
        self.tracks = _tracks(cfg)
        self.family_names = sorted({t.family for t in self.tracks})
        self.period_ns = int(round(1e9 / cfg.fps))
        self.conns = {topic: writer.add_output(topic, typ) for topic, typ in TOPIC_TYPES.items()}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.detector = {"true": 0, "missed": 0, "spurious": 0}
        self._pending: list[tuple[int, int, str, Any]] = []  # heap of (receive time, seq, topic, message)
        self._seq = itertools.count()  # ties in receive time keep the order of recording

    def frame(self, t: int) -> None:
        cfg, msgs = self.cfg, self.msgs
        stamp = cfg.start_time_s * 1_000_000_000 + t * self.period_ns
        specs, track_ids = _specs(cfg, self.tracks, t)
        scene = self.syn.build_scene(
            cfg.seed, cfg.height, cfg.width, objects=specs, return_depth=True,
            background_depth_m=cfg.background_depth_m,
        )  # fmt: skip
        image_id = t + 1
        self.images.append(
            {"id": image_id, "width": cfg.width, "height": cfg.height, "file_name": f"frame_{t:06d}",
             STAMP_KEY: stamp}
        )  # fmt: skip
        gt_boxes = []
        for inst in scene.instances:
            track = f"obj{track_ids[inst.object_index]}"
            ann = _annotation(
                inst, scene.objects[inst.object_index], track, image_id, len(self.annotations) + 1, self.k
            )
            self.annotations.append(ann)
            x, y, w, h = ann["bbox"]
            gt_boxes.append((self.syn.resolve_family(inst.category_id).name, track, (x, y, x + w, y + h)))
        rng_det = np.random.default_rng([cfg.seed, 2, t])
        dets, stats = simulate_detector(gt_boxes, cfg, rng_det, t, self.family_names)
        for key, v in stats.items():
            self.detector[key] += v
        latency_ns = int(rng_det.uniform(*cfg.latency_s) * 1e9)
        if scene.depth is None:  # cannot happen with return_depth=True; says so instead of a TypeError later
            raise BagError("the synthetic renderer returned no depth image")
        depth_mm = _depth_mm(scene.depth, cfg, np.random.default_rng([cfg.seed, 1, t]))
        header = msgs.header(stamp)
        self._record(stamp + 3_000_000, IMAGE_TOPIC, rgb_to_image_msg(msgs.f, scene.image, header))
        self._record(stamp + 3_000_000, CAMERA_INFO_TOPIC, msgs.camera_info(header, self.k, cfg.width, cfg.height))
        self._record(stamp + 6_000_000, DEPTH_TOPIC, msgs.depth(header, depth_mm))
        self._record(stamp + latency_ns, DETECTIONS_TOPIC, msgs.detections(header, dets))
        # Everything of later frames is received after the next stamp: write what came before it.
        self.flush(stamp + self.period_ns)

    def _record(self, receive_ns: int, topic: str, msg: Any) -> None:
        heapq.heappush(self._pending, (receive_ns, next(self._seq), topic, msg))

    def flush(self, before_ns: int | None = None) -> None:
        while self._pending and (before_ns is None or self._pending[0][0] < before_ns):
            receive_ns, _seq, topic, msg = heapq.heappop(self._pending)
            self.writer.write(self.conns[topic], receive_ns, msg)

    def ground_truth(self) -> dict[str, Any]:
        cfg = self.cfg
        config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
        topics = {"image": IMAGE_TOPIC, "depth": DEPTH_TOPIC, "camera_info": CAMERA_INFO_TOPIC,
                  "detections": DETECTIONS_TOPIC}  # fmt: skip
        return {
            "info": {
                "format": GT_FORMAT,
                "description": "shapemask_ros synthetic demo bag ground truth",
                "stamp_key": STAMP_KEY,
                "seed": cfg.seed,
                "fps": cfg.fps,
                "config": config,
                "topics": topics,
                "detector": dict(self.detector),
            },
            "camera": {
                "frame_id": FRAME_ID,
                "width": cfg.width,
                "height": cfg.height,
                "k": [float(v) for v in self.k.reshape(-1)],
                "depth_encoding": "16UC1",
                "depth_unit": "mm",
            },
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.syn.coco_categories(),
        }


def make_demo_bag(out: str | Path, cfg: DemoBagConfig | None = None, overwrite: bool = False) -> DemoBag:
    """Write the demo bag to directory `out` (atomically) and its ground truth to `<out>.gt.json`."""
    cfg = cfg or DemoBagConfig()
    cfg.validate()
    out = Path(out)
    gt_file = gt_path_for(out)
    msgs = Messages()
    with AtomicOutputDir(out, overwrite=overwrite, create=False) as tmp:
        with BagWriter(tmp.path, msgs.store, storage=cfg.storage, compress=cfg.compress) as bw:
            rec = _Recorder(cfg, bw, msgs)
            for t in tqdm(range(cfg.frames), desc="demo bag", unit="frame", disable=None):
                rec.frame(t)
            rec.flush()
            counts = dict(bw.counts)
        atomic_write_text(str(gt_file), json.dumps(rec.ground_truth()))  # first: a bag always has its truth
        tmp.commit()
    log.info("demo bag: %s (%d frames), ground truth %s", out, cfg.frames, gt_file)
    return DemoBag(out, gt_file, cfg.frames, counts, dict(rec.detector))


# ------------------------------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask make-demo-bag`."""
    d = DemoBagConfig()
    parser.add_argument("--out", required=True, help="bag directory to create (ground truth: <out>.gt.json)")
    parser.add_argument("--frames", type=int, default=d.frames)
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--height", type=int, default=d.height)
    parser.add_argument("--fps", type=float, default=d.fps)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--objects", type=int, default=d.num_objects, help="number of moving objects")
    parser.add_argument("--storage", choices=sorted(STORAGES), default=d.storage)
    parser.add_argument("--compress", action="store_true", help="zstd-compress (MCAP chunks / sqlite3 messages)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bag")


def config_from_args(args: argparse.Namespace) -> DemoBagConfig:
    return DemoBagConfig(
        frames=args.frames,
        width=args.width,
        height=args.height,
        fps=args.fps,
        seed=args.seed,
        storage=args.storage,
        compress=args.compress,
        num_objects=args.objects,
    )


def run(args: argparse.Namespace) -> int:
    """`shapemask make-demo-bag`; user errors -> message on stderr and exit code 2."""
    import sys

    try:
        cfg = config_from_args(args)
        result = make_demo_bag(args.out, cfg, overwrite=args.overwrite)
    except (ValueError, FileExistsError, BagError) as e:
        print(f"shapemask make-demo-bag: error: {e}", file=sys.stderr)
        return 2
    print(f"bag: {result.bag}\nground truth: {result.gt}\nmessages: {result.counts}\ndetector: {result.detector}")
    return 0
