"""Model evaluation on a COCO set with the paper's box sources (`shapemask eval`).

Runs a predictor over a COCO image set with boxes from the model itself, from ground truth or from ground
truth shrunk by U(0.75, 1) per side (paper Table 3), turns its `Instances` into COCO results and scores them
with `shapemask_ros.evaluation.coco_metrics` (pycocotools; shared with bag evaluation). Also the box-filled
floor (`box_fill_predict`) and the metrics table.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import cv2
import numpy as np
from pycocotools.coco import COCO
from tqdm import tqdm

from shapemask_ros.datasets.coco import SkipCounter, load_coco_json
from shapemask_ros.evaluation.coco_metrics import (
    IOU_TYPES,
    SUMMARY_KEYS,
    coco_from_dataset,
    evaluate,
    results_from_instances,
)
from shapemask_ros.ops import box_ops
from shapemask_ros.runtime.instances import Instances
from shapemask_ros.utils.formatting import fmt
from shapemask_ros.utils.io import read_bytes

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray, "np.ndarray | None", "np.ndarray | None"], Instances]


class BoxSource(str, Enum):
    """Where the boxes given to the mask branch come from (paper Table 3)."""

    MODEL = "model"  # the model's own detections
    GT = "gt"  # ground-truth boxes (non-crowd)
    GT_SHRUNK = "gt_shrunk"  # ground-truth boxes, width and height each shrunk by U(0.75, 1.0)
    GT_NOISY = "gt_noisy"  # ground-truth boxes, each edge moved by N(0, 0.1 x side): a detector's errors

    @classmethod
    def parse(cls, value: str | BoxSource) -> BoxSource:
        """Accept a BoxSource or its string value; anything else is a ValueError naming the choices."""
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(s.value for s in cls)
            raise ValueError(f"box_source must be one of {choices}; got {value!r}") from None


# -------------------------------------------------------------------------------------------- box sources


def gt_boxes_for_image(coco: COCO, image_id: int, category_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Non-crowd ground-truth boxes of one image: ([N, 4] float32 xyxy clipped to the image, [N] int32
    contiguous class indices into `category_ids`), in annotation-id order. Annotations of categories not in
    `category_ids` and boxes with no area inside the image are left out."""
    im = coco.imgs[image_id]
    h, w = float(im["height"]), float(im["width"])
    index = {int(c): i for i, c in enumerate(category_ids)}
    anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False)), key=lambda a: a["id"])
    boxes, classes = [], []
    for ann in anns:
        c = index.get(int(ann["category_id"]))
        if c is None:
            continue
        b = box_ops.clip_boxes(box_ops.xywh_to_xyxy(np.asarray(ann["bbox"], np.float64)), h, w)
        if b[2] > b[0] and b[3] > b[1]:
            boxes.append(b)
            classes.append(c)
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.int32)
    return np.asarray(boxes, np.float32), np.asarray(classes, np.int32)


def shrink_boxes(boxes: np.ndarray, seed: int, image_id: int = 0, low: float = 0.75, high: float = 1.0) -> np.ndarray:
    """Paper Table 3: shrink each box's width and height independently by U(low, high) about its centre.

    The generator is seeded with (seed, image_id), so an image's boxes do not depend on which other images
    were evaluated or in what order.
    """
    rng = np.random.default_rng([int(seed), int(image_id)])
    return box_ops.shrink_boxes(np.asarray(boxes, np.float64), rng, low, high).astype(np.float32)


def noisy_boxes(
    boxes: np.ndarray, seed: int, image_id: int = 0, height: float = np.inf, width: float = np.inf, sigma: float = 0.1
) -> np.ndarray:
    """Detector-like noise: each edge moved by N(0, sigma x side), seeded by (seed, image_id) as
    `shrink_boxes`; clipped to the image, and a box left with no area keeps its true extent (every ground
    truth object keeps a box, so AP stays comparable with the other sources)."""
    rng = np.random.default_rng([int(seed), int(image_id), 1])
    b = np.asarray(boxes, np.float64)
    out = box_ops.clip_boxes(box_ops.perturb_edges(b, rng, sigma), height, width)
    empty = (out[:, 2] - out[:, 0] < 1.0) | (out[:, 3] - out[:, 1] < 1.0)
    return np.where(empty[:, None], b, out).astype(np.float32)


def _read_rgb(path: str) -> np.ndarray | None:
    """uint8 RGB image (local or gs://), or None when missing / undecodable."""
    try:
        buf = np.frombuffer(read_bytes(path), np.uint8)
    except (OSError, ValueError) as e:
        log.debug("cannot read %s: %s", path, e)
        return None
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def evaluate_predictor(
    predict_fn: PredictFn,
    gt_annotations_path: str,
    image_dir: str,
    box_source: str | BoxSource,
    category_ids: Sequence[int] | None,
    max_images: int | None = None,
    seed: int = 0,
    progress: bool = True,
    splits: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `predict_fn(image_rgb, boxes, classes) -> Instances` over a COCO set and evaluate it.

    box_source: "model" (boxes = classes = None: the model detects), "gt", "gt_shrunk" or "gt_noisy" (non-crowd
    ground-truth boxes and their contiguous classes; images without any are not predicted on).
    category_ids: contiguous class index -> COCO category id (None: all ground-truth ids, sorted);
    only these categories are evaluated. max_images: the first N images by id; only those are evaluated.
    Images that cannot be read or whose size differs from the annotation are counted, logged and scored as
    having no predictions (so a broken image directory cannot inflate AP); all of them failing is an error.

    Returns (metrics as from `evaluate` plus "box_source", "skipped_images" and "predict_seconds_mean",
    the COCO results list).
    """
    source = BoxSource.parse(box_source)
    data = load_coco_json(gt_annotations_path)
    coco = coco_from_dataset(copy.deepcopy(data))
    cat_ids = tuple(sorted(coco.getCatIds())) if category_ids is None else tuple(int(c) for c in category_ids)
    img_ids = sorted(coco.getImgIds())
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        img_ids = img_ids[:max_images]
    if not img_ids:
        raise ValueError(f"{gt_annotations_path}: no images to evaluate")

    results: list[dict[str, Any]] = []
    skipped = SkipCounter()
    dropped = SkipCounter()
    seconds: list[float] = []
    for image_id in tqdm(img_ids, desc=f"eval ({source.value} boxes)", disable=not progress, unit="img"):
        im = coco.imgs[image_id]
        path = os.path.join(image_dir, im["file_name"])
        image = _read_rgb(path)
        if image is None:
            skipped.skip("unreadable_image", path)
            continue
        if image.shape[:2] != (int(im["height"]), int(im["width"])):
            skipped.skip("image_size_mismatch", f"{path}: {image.shape[:2]} vs {(im['height'], im['width'])}")
            continue
        boxes = classes = None
        if source is not BoxSource.MODEL:
            boxes, classes = gt_boxes_for_image(coco, image_id, cat_ids)
            if len(boxes) == 0:
                continue
            if source is BoxSource.GT_SHRUNK:
                boxes = shrink_boxes(boxes, seed, image_id)
            elif source is BoxSource.GT_NOISY:
                boxes = noisy_boxes(boxes, seed, image_id, float(im["height"]), float(im["width"]))
        t0 = time.perf_counter()
        inst = predict_fn(image, boxes, classes)
        seconds.append(time.perf_counter() - t0)
        if tuple(inst.image_size) != image.shape[:2]:
            raise ValueError(f"predict_fn returned image_size {inst.image_size} for a {image.shape[:2]} image")
        if classes is not None and len(inst):
            inst = _classes_from_source(inst, classes)
        results.extend(results_from_instances(image_id, inst, cat_ids, counter=dropped))
    n_skipped = sum(skipped.values())
    if n_skipped == len(img_ids):
        raise RuntimeError(f"none of the {len(img_ids)} images could be used ({dict(skipped)}); check image_dir")
    if n_skipped:
        log.warning("%d of %d images scored without predictions: %s", n_skipped, len(img_ids), dict(skipped))

    metrics = evaluate(data, results, category_ids=cat_ids, splits=splits, image_ids=img_ids)
    for reason, count in dropped.items():
        metrics["dropped_results"][reason] = metrics["dropped_results"].get(reason, 0) + count
    metrics["box_source"] = source.value
    metrics["skipped_images"] = dict(skipped)
    metrics["predict_seconds_mean"] = float(np.mean(seconds)) if seconds else math.nan
    return metrics, results


def _classes_from_source(inst: Instances, classes: np.ndarray) -> Instances:
    """Given boxes keep their ground-truth class: fill class -1 (class-agnostic output) via source_index."""
    cls = np.asarray(inst.class_ids).copy()
    src = np.asarray(inst.source_index)
    fill = (cls < 0) & (src >= 0) & (src < len(classes))
    if fill.any():
        cls[fill] = classes[src[fill]]
        inst = copy.copy(inst)
        inst.class_ids = cls.astype(np.int32)
    return inst


def box_fill_predict(image: np.ndarray, boxes: np.ndarray | None, classes: np.ndarray | None) -> Any:
    """A 'mask branch' that learned nothing: every mask is its box (the pixels whose centre lies inside).
    Needs given boxes (GT, shrunk or noisy GT); returns `Instances` like the predictor."""
    if boxes is None:
        raise ValueError("box-filled masks need given boxes (box source gt, gt_shrunk or gt_noisy)")
    h, w = image.shape[:2]
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    # pixel c covers [c, c + 1): inside when its centre c + 0.5 lies in [x1, x2)
    x1 = np.clip(np.ceil(b[:, 0] - 0.5), 0, w - 1).astype(int)
    y1 = np.clip(np.ceil(b[:, 1] - 0.5), 0, h - 1).astype(int)
    x2 = np.clip(np.maximum(np.ceil(b[:, 2] - 0.5), x1 + 1), 1, w).astype(int)
    y2 = np.clip(np.maximum(np.ceil(b[:, 3] - 0.5), y1 + 1), 1, h).astype(int)
    regions = np.stack([x1, y1, x2 - x1, y2 - y1], 1).astype(np.int32)
    n = len(b)
    cls = np.full(n, -1, np.int32) if classes is None else np.asarray(classes, np.int32).reshape(n)
    return Instances(
        boxes=b.astype(np.float32),
        scores=np.ones(n, np.float32),
        class_ids=cls,
        masks=[np.ones((r[3], r[2]), np.uint8) for r in regions],
        regions=regions,
        mask_scores=np.ones(n, np.float32),
        source_index=np.arange(n, dtype=np.int32),
        image_size=(h, w),
    )


# ------------------------------------------------------------------------------------------------ report


def _fmt(v: Any) -> str:
    return fmt(v)


def format_metrics_table(
    metrics: Mapping[str, Any], per_category: bool = False, category_names: Mapping[int, str] | None = None
) -> str:
    """Markdown table: one row per IoU type with AP, AP50, AP75, APs, APm, APl and the split APs;
    with `per_category`, a second table of per-category AP (columns = IoU types)."""
    types = [t for t in IOU_TYPES if t in metrics]
    if not types:
        raise ValueError("metrics has no 'bbox' or 'segm' entry")
    split_names = sorted({s for t in types for s in metrics[t].get("splits", {})})
    head = ["IoU type", *SUMMARY_KEYS, *(f"AP[{s}]" for s in split_names)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in types:
        m = metrics[t]
        row = [
            t,
            *(_fmt(m.get(k)) for k in SUMMARY_KEYS),
            *(_fmt(m.get("splits", {}).get(s)) for s in split_names),
        ]
        lines.append("| " + " | ".join(row) + " |")
    if per_category:
        names = category_names or {}
        cats = sorted({int(c) for t in types for c in metrics[t].get("per_category", {})})
        lines += [
            "",
            "| category | " + " | ".join(f"AP {t}" for t in types) + " |",
            "|" + "---|" * (1 + len(types)),
        ]
        for c in cats:
            label = f"{c} {names[c]}" if c in names else str(c)
            lines.append(f"| {label} | " + " | ".join(_fmt(metrics[t]["per_category"].get(c)) for t in types) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "BoxSource",
    "box_fill_predict",
    "evaluate_predictor",
    "format_metrics_table",
    "gt_boxes_for_image",
    "noisy_boxes",
    "shrink_boxes",
]
