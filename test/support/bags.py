"""Helpers for the bag tests (no tests here): tiny scenes, bag writing, perfect / oracle fake predictors."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
import zstandard
from pycocotools import mask as mask_utils
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

from shapemask_ros.ros_bridge.detections import bounding_box_2d, identity_pose_with_covariance
from shapemask_ros.ros_bridge.factory import RosbagsFactory
from shapemask_ros.ros_bridge.image_codec import rgb_to_image_msg
from shapemask_ros.ros_bridge.typestore import get_typestore, message_definition
from shapemask_ros.runtime.instances import Instances

TS = get_typestore()
F = RosbagsFactory(TS)
H, W = 48, 64
T0 = 1_700_000_000 * 1_000_000_000
PERIOD = 100_000_000  # 10 Hz
CLASSES = ("red", "green", "blue")
COLORS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
IMAGE = "/cam/image_raw"
DETS = "/dets"
GT_TOPIC = "/gt_masks"


def header(stamp_ns: int, frame_id: str = "cam") -> Any:
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    return F.make(
        "std_msgs/msg/Header",
        stamp=F.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec),
        frame_id=frame_id,
    )


def scene(i: int) -> tuple[np.ndarray, list[tuple[str, np.ndarray, tuple[float, float, float, float]]]]:
    """Black image with 2 non-touching solid objects (a rectangle, an ellipse) that move with i.

    Returns (rgb, [(class, full mask, tight box x1 y1 x2 y2)]).
    """
    rgb = np.zeros((H, W, 3), np.uint8)
    objs = []
    m1 = np.zeros((H, W), np.uint8)
    x = 4 + i % 5
    m1[6:20, x : x + 16] = 1
    m2 = np.zeros((H, W), np.uint8)
    cv2.ellipse(m2, (44, 30 + i % 3), (10, 7), 0, 0, 360, 1, -1)
    for cls, m in ((CLASSES[i % 3], m1), (CLASSES[(i + 1) % 3], m2)):
        rgb[m.astype(bool)] = COLORS[cls]
        ys, xs = np.nonzero(m)
        objs.append((cls, m, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))))
    return rgb, objs


def image_msg(rgb: np.ndarray, stamp_ns: int) -> Any:
    return rgb_to_image_msg(F, rgb, header(stamp_ns))


def dets_msg(stamp_ns: int, dets: Sequence[tuple[tuple[float, ...], str, float, str]]) -> Any:
    items = []
    h = header(stamp_ns)
    for box, cls, score, det_id in dets:
        hyp = F.make(
            "vision_msgs/msg/ObjectHypothesisWithPose",
            hypothesis=F.make("vision_msgs/msg/ObjectHypothesis", class_id=cls, score=score),
            pose=identity_pose_with_covariance(F),
        )
        items.append(
            F.make(
                "vision_msgs/msg/Detection2D",
                header=h,
                results=[hyp],
                bbox=bounding_box_2d(F, np.asarray(box, np.float64)),
                id=det_id,
            )
        )
    return F.make("vision_msgs/msg/Detection2DArray", header=h, detections=items)


def gt_mask_array(stamp_ns: int, objs: list[tuple[str, np.ndarray, tuple[float, ...]]]) -> Any:
    """InstanceMaskArray ground truth of a scene (full-image ROIs)."""
    from shapemask_ros.ros_bridge.messages import instances_to_mask_array

    inst = instances_from_masks([m for _c, m, _b in objs], [b for _c, _m, b in objs], (H, W))
    names = [c for c, _m, _b in objs]
    inst.class_ids = np.arange(len(objs), dtype=np.int32)
    return instances_to_mask_array(F, inst, header(stamp_ns), names)


def instances_from_masks(
    masks: Sequence[np.ndarray],
    boxes: Sequence[Sequence[float]],
    image_size: tuple[int, int],
    class_ids: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
) -> Instances:
    """Instances whose masks are the given full masks cropped to their tight (integer) box."""
    regions, crops = [], []
    for m in masks:
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            regions.append((0, 0, 1, 1))
            crops.append(np.zeros((1, 1), np.uint8))
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        regions.append((x0, y0, x1 - x0, y1 - y0))
        crops.append(np.ascontiguousarray(m[y0:y1, x0:x1]).astype(np.uint8))
    n = len(crops)
    return Instances(
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores if scores is not None else [1.0] * n, np.float32),
        class_ids=np.asarray(class_ids if class_ids is not None else [-1] * n, np.int32),
        masks=crops,
        regions=np.asarray(regions, np.int32).reshape(n, 4),
        mask_scores=np.ones(n, np.float32),
        source_index=np.arange(n, dtype=np.int32),
        image_size=(int(image_size[0]), int(image_size[1])),
        backend="fake",
    )


class PerfectPredictor:
    """Exact masks for `scene` images: the non-black pixels inside each box (or each connected component
    in self-detection, classed by colour). `fail_on_call` raises KeyboardInterrupt on that call (1-based)."""

    backend = "fake"
    class_names = CLASSES

    def __init__(self, fail_on_call: int = 0) -> None:
        self.mask_threshold = 0.5
        self.calls = 0
        self.fail_on_call = fail_on_call

    def predict(self, image, boxes=None, classes=None, score_threshold=None, **_: Any) -> Instances:
        self.calls += 1
        if self.fail_on_call and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated crash")
        img = np.asarray(image)
        fg = img.any(axis=2).astype(np.uint8)
        h, w = fg.shape
        if boxes is None:
            n, labels = cv2.connectedComponents(fg, connectivity=8)
            masks, bxs, cls = [], [], []
            for k in range(1, n):
                m = (labels == k).astype(np.uint8)
                ys, xs = np.nonzero(m)
                masks.append(m)
                bxs.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
                color = tuple(int(v) for v in img[ys[0], xs[0]])
                cls.append(next(i for i, c in enumerate(CLASSES) if COLORS[c] == color))
            return instances_from_masks(masks, bxs, (h, w), cls, [0.9] * len(masks))
        masks = []
        for x1, y1, x2, y2 in np.asarray(boxes, np.float64).reshape(-1, 4):
            m = np.zeros_like(fg)
            r0, r1 = int(np.floor(y1)), int(np.ceil(y2))
            c0, c1 = int(np.floor(x1)), int(np.ceil(x2))
            m[r0:r1, c0:c1] = fg[r0:r1, c0:c1]
            masks.append(m)
        cls = np.asarray(classes if classes is not None else [-1] * len(masks), np.int32)
        return instances_from_masks(masks, np.asarray(boxes).reshape(-1, 4), (h, w), cls)


class OraclePredictor:
    """Returns, for each given box, the ground-truth mask (from a COCO dict keyed by image content) whose
    box overlaps it most: perfect masks on any bag whose truth is known (the demo bag)."""

    backend = "oracle"
    class_names = ()

    def __init__(self, gt: dict, images: dict[str, int]) -> None:
        self.mask_threshold = 0.5
        self.images = images  # sha1 of the RGB bytes -> image id
        self.anns: dict[int, list[dict]] = {}
        for a in gt["annotations"]:
            self.anns.setdefault(int(a["image_id"]), []).append(a)

    @staticmethod
    def key(rgb: np.ndarray) -> str:
        return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()

    def predict(self, image, boxes=None, classes=None, score_threshold=None, **_: Any) -> Instances:
        img = np.asarray(image)
        h, w = img.shape[:2]
        anns = self.anns.get(self.images.get(self.key(img), -1), [])
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        masks = []
        for b in boxes:
            best, best_iou = None, 0.0
            for a in anns:
                x, y, bw, bh = a["bbox"]
                ix = max(0.0, min(b[2], x + bw) - max(b[0], x))
                iy = max(0.0, min(b[3], y + bh) - max(b[1], y))
                inter = ix * iy
                iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + bw * bh - inter)
                if iou > best_iou:
                    best, best_iou = a, iou
            masks.append(
                mask_utils.decode(best["segmentation"])
                if best is not None and best_iou > 0.3
                else np.zeros((h, w), np.uint8)
            )
        cls = np.asarray(classes if classes is not None else [-1] * len(masks), np.int32)
        return instances_from_masks(masks, boxes, (h, w), cls)


def write_bag(
    path: Path,
    messages: Sequence[tuple[str, str, int, Any]],
    storage: str = "mcap",
    compression: CompressionMode = CompressionMode.NONE,
    declared: dict[str, str] | None = None,
) -> Path:
    """Write (topic, type, log time ns, message or raw bytes) to a rosbag2; `declared` overrides the type
    name written into the bag for some topics (e.g. 'sensor_msgs/Image' without /msg/)."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    declared = declared or {}
    w = Writer(path, version=9, storage_plugin=plugin)
    if compression != CompressionMode.NONE:
        w.set_compression(compression, CompressionFormat.ZSTD)
    with w:
        conns = {}
        for topic, typ, _t, _m in messages:
            if topic not in conns:
                msgdef, digest = message_definition(TS, typ)
                conns[topic] = w.add_connection(topic, declared.get(topic, typ), msgdef=msgdef, rihs01=digest)
        for topic, typ, t, m in messages:
            raw = m if isinstance(m, (bytes, bytearray, memoryview)) else TS.serialize_cdr(m, typ)
            w.write(conns[topic], t, raw)
    return path


def write_split_bag(
    path: Path,
    messages: Sequence[tuple[str, str, int, Any]],
    storage: str = "mcap",
    pieces: int = 3,
    compression: CompressionMode = CompressionMode.NONE,
) -> Path:
    """A bag split as `ros2 bag record --max-bag-size` splits it: `<name>_<i>.<ext>` pieces in recording
    order with one metadata.yaml listing them; FILE compression zstd-compresses each finished piece to
    `<name>_<i>.<ext>.zstd` (rosbag2's `--compression-mode file`), MESSAGE compresses each message."""
    path.mkdir(parents=True)
    ext = "mcap" if storage == "mcap" else "db3"
    size = -(-len(messages) // pieces)
    chunks = [messages[i * size : (i + 1) * size] for i in range(pieces)]
    meta: dict[str, Any] = {}
    names, files = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, chunk in enumerate(chunks):
            piece = write_bag(
                Path(tmp) / f"p{i}",
                chunk,
                storage,
                CompressionMode.MESSAGE if compression == CompressionMode.MESSAGE else CompressionMode.NONE,
            )
            info = yaml.safe_load((piece / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            name = f"{path.name}_{i}.{ext}"
            if compression == CompressionMode.FILE:
                name += ".zstd"
                with open(piece / f"p{i}.{ext}", "rb") as fin, open(path / name, "wb") as fout:
                    zstandard.ZstdCompressor().copy_stream(fin, fout)
            else:
                shutil.move(piece / f"p{i}.{ext}", path / name)
            names.append(name)
            files.append({**info["files"][0], "path": name})
            if not meta:
                meta = info
            else:
                for mine, theirs in zip(
                    meta["topics_with_message_count"], info["topics_with_message_count"], strict=True
                ):
                    mine["message_count"] += theirs["message_count"]
    meta["relative_file_paths"] = names
    meta["files"] = files
    meta["message_count"] = len(messages)
    meta["duration"] = {"nanoseconds": messages[-1][2] - messages[0][2]}
    if compression != CompressionMode.NONE:
        meta["compression_mode"] = compression.name.lower()
        meta["compression_format"] = "zstd"
    (path / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": meta}))
    return path


def scene_bag_messages(
    frames: int = 4, latency_ns: int = 30_000_000, with_dets: bool = True, gt_topic: bool = False
) -> list[tuple[str, str, int, Any]]:
    """Messages of a small camera + detector bag over `scene(i)`, in receive order."""
    msgs = []
    for i in range(frames):
        stamp = T0 + i * PERIOD
        rgb, objs = scene(i)
        msgs.append((IMAGE, "sensor_msgs/msg/Image", stamp + 1_000_000, image_msg(rgb, stamp)))
        if with_dets:
            dets = [(b, c, 0.9 - 0.1 * k, f"o{k}") for k, (c, _m, b) in enumerate(objs)]
            msgs.append((DETS, "vision_msgs/msg/Detection2DArray", stamp + latency_ns, dets_msg(stamp, dets)))
        if gt_topic:
            msgs.append(
                (
                    GT_TOPIC,
                    "shapemask_ros/msg/InstanceMaskArray",
                    stamp + 2_000_000,
                    gt_mask_array(stamp, objs),
                )
            )
    msgs.sort(key=lambda m: m[2])
    return msgs


def scene_gt(frames: int = 4) -> dict:
    """COCO ground truth of the scene bag, images keyed by stamp_ns."""
    images, anns = [], []
    for i in range(frames):
        _rgb, objs = scene(i)
        images.append({"id": i + 1, "width": W, "height": H, "stamp_ns": T0 + i * PERIOD})
        for cls, m, (x1, y1, x2, y2) in objs:
            rle = mask_utils.encode(np.asfortranarray(m))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": CLASSES.index(cls) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float(m.sum()),
                    "iscrowd": 0,
                    "segmentation": {"size": [H, W], "counts": rle["counts"].decode("ascii")},
                }
            )
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
    return {"images": images, "annotations": anns, "categories": cats}
