"""Bag-evaluation accuracy and report: ground truth by stamp, mask AP, 3D centroid error, markdown + JSON.

Ground truth comes in two forms, both keyed by the image header stamp:
- a COCO instances JSON whose every image carries `stamp_ns` (integer nanoseconds of the image message's
  header stamp; `make-demo-bag` writes one), annotations optionally with `centroid_m` [x, y, z] (metres,
  camera optical frame) for the 3D check;
- a topic of shapemask_ros/InstanceMaskArray (one message per annotated image, header = image header;
  hypotheses[0].class_id names the category).

Predictions are matched to ground truth by that stamp. Mask and box AP come from pycocotools through
`evaluation.coco_metrics.evaluate` (class-aware, plus class-agnostic: every category collapsed into one, the
measure of mask quality alone). Centroid error: per annotated image, predicted and true masks are paired
greedily by mask IoU (>= 0.5, pycocotools `mask.iou`), and the 3D distance between the predicted centroid
and `centroid_m` is reported for pairs whose geometry status is ok / too_few_points.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.evaluation.coco_metrics import evaluate
from shapemask_ros.utils.formatting import fmt, json_safe
from shapemask_ros.utils.io import atomic_write_text, read_text

REPORT_FORMAT = "shapemask_ros.bag_eval_report/1"
STAMP_KEY = "stamp_ns"  # ground truth images[i][STAMP_KEY]: header stamp of the image message, integer ns
MATCH_IOU = 0.5
_GEOMETRY_USABLE = ("ok", "too_few_points")


# ------------------------------------------------------------------------------------------ statistics


def latency_stats(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """{n, mean_ms, p50_ms, p90_ms, p99_ms, max_ms} of per-frame times (None values when empty)."""
    v = np.asarray(list(seconds), np.float64) * 1e3
    if v.size == 0:
        return {"n": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    p50, p90, p99 = np.percentile(v, [50, 90, 99])
    return {
        "n": int(v.size),
        "mean_ms": float(v.mean()),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(v.max()),
    }


# ---------------------------------------------------------------------------------------- predictions


def encode_mask(mask: np.ndarray, region: Sequence[int], image_size: tuple[int, int]) -> dict[str, Any]:
    """COCO RLE (counts as str) of a mask cropped to region (x, y, w, h) inside an image (h, w)."""
    h, w = int(image_size[0]), int(image_size[1])
    x, y, rw, rh = (int(v) for v in region)
    canvas = np.zeros((h, w), np.uint8, order="F")
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + rw, w), min(y + rh, h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = np.asarray(mask)[y0 - y : y1 - y, x0 - x : x1 - x] != 0
    rle = mask_utils.encode(canvas)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


@dataclass
class FramePrediction:
    """What accuracy evaluation keeps of one processed frame (compact: RLE masks, no pixels)."""

    stamp_ns: int
    image_size: tuple[int, int]
    num_objects: int
    rles: list[dict[str, Any]]  # empty unless masks were encoded (only ground truth needs them)
    boxes_xywh: np.ndarray  # [N, 4]
    scores: np.ndarray  # [N]
    class_names: list[str]
    centroids: np.ndarray | None = None  # [N, 3] metres, NaN where not computed
    status: list[str] = field(default_factory=list)


def frame_prediction(
    stamp_ns: int,
    instances: Any,
    labels: Sequence[tuple[str, float]],
    objects: Any = None,
    encode_masks: bool = True,
) -> FramePrediction:
    """FramePrediction from runtime Instances, per-object (class string, score) and geometry Objects3D.

    encode_masks=False skips the RLE encoding (~0.2 ms per object at 640x480) when there is no truth."""
    n = len(instances)
    size = (int(instances.image_size[0]), int(instances.image_size[1]))
    boxes = np.asarray(instances.boxes, np.float64).reshape(n, 4)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1) if n else np.zeros((0, 4))
    rles = [encode_mask(instances.masks[i], instances.regions[i], size) for i in range(n)] if encode_masks else []
    centroids = None if objects is None else np.asarray(objects.centroids, np.float64).reshape(n, 3)
    status = list(objects.status) if objects is not None else []
    return FramePrediction(
        stamp_ns=int(stamp_ns),
        image_size=size,
        num_objects=n,
        rles=rles,
        boxes_xywh=xywh,
        scores=np.asarray([s for _c, s in labels], np.float64).reshape(n),
        class_names=[c for c, _s in labels],
        centroids=centroids,
        status=status,
    )


# --------------------------------------------------------------------------------------- ground truth


@dataclass
class GroundTruth:
    """A COCO ground-truth dataset whose images are identified by header stamp (see module docstring)."""

    coco: dict[str, Any]
    source: str
    image_by_stamp: dict[int, int]

    @property
    def has_centroids(self) -> bool:
        return any("centroid_m" in a for a in self.coco["annotations"])

    def category_id(self, name: str) -> int | None:
        """Category id of a detector/model class string: by category name, else a numeric id string."""
        by_name = {str(c["name"]): int(c["id"]) for c in self.coco["categories"]}
        if name in by_name:
            return by_name[name]
        try:
            cid = int(name)
        except (TypeError, ValueError):
            return None
        return cid if cid in set(by_name.values()) else None

    @staticmethod
    def from_json(path: str) -> GroundTruth:
        """Load and validate a COCO JSON keyed by `stamp_ns`; BagError describing the first problem."""
        try:
            data = json.loads(read_text(path))
        except FileNotFoundError:
            raise BagError(f"ground truth file not found: {path}") from None
        except (OSError, ValueError) as e:
            raise BagError(f"ground truth {path} is not readable JSON: {e}") from None
        if not isinstance(data, dict):
            raise BagError(f"ground truth {path}: top level must be a COCO object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise BagError(f"ground truth {path}: not COCO instances (missing list '{key}')")
        by_stamp: dict[int, int] = {}
        for im in data["images"]:
            stamp = im.get(STAMP_KEY) if isinstance(im, dict) else None
            if isinstance(stamp, bool) or not isinstance(stamp, int):
                raise BagError(
                    f"ground truth {path}: image {im.get('id') if isinstance(im, dict) else im!r} has no "
                    "integer "
                    f"'{STAMP_KEY}' (the image header stamp in nanoseconds; see docs/bag_eval.md)"
                )
            if stamp in by_stamp:
                raise BagError(f"ground truth {path}: two images have {STAMP_KEY} = {stamp}")
            by_stamp[stamp] = int(im["id"])
        for ann in data["annotations"]:
            c = ann.get("centroid_m") if isinstance(ann, dict) else None
            if c is not None and (
                not isinstance(c, list) or len(c) != 3 or not all(isinstance(v, (int, float)) for v in c)
            ):
                raise BagError(f"ground truth {path}: annotation {ann.get('id')}: centroid_m must be [x, y, z]")
        return GroundTruth(data, str(path), by_stamp)

    @staticmethod
    def from_messages(messages: Iterable[Any], source: str) -> GroundTruth:
        """COCO ground truth from InstanceMaskArray messages (one per annotated image)."""
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        names: dict[str, int] = {}
        by_stamp: dict[int, int] = {}
        for msg in messages:
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            if stamp in by_stamp:
                continue  # a repeated stamp: the first message wins
            h, w = int(msg.image_height), int(msg.image_width)
            image_id = len(images) + 1
            by_stamp[stamp] = image_id
            images.append({"id": image_id, "width": w, "height": h, STAMP_KEY: stamp})
            for inst in msg.instances:
                cls = str(inst.hypotheses[0].class_id) if len(inst.hypotheses) else "object"
                cid = names.setdefault(cls, len(names) + 1)
                roi = inst.roi
                rh, rw = int(roi.height), int(roi.width)
                data = np.asarray(inst.mask.data, np.uint8)
                step = int(inst.mask.step)
                if rh == 0 or rw == 0 or data.size < rh * step or step < rw:
                    continue  # an empty or malformed mask cannot be ground truth
                crop = data[: rh * step].reshape(rh, step)[:, :rw]
                rle = encode_mask(crop, (int(roi.x_offset), int(roi.y_offset), rw, rh), (h, w))
                area = float(mask_utils.area(rle))
                if area == 0:
                    continue
                bbox = [float(v) for v in mask_utils.toBbox(rle)]
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image_id,
                        "category_id": cid,
                        "segmentation": rle,
                        "area": area,
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        cats = [{"id": i, "name": n} for n, i in names.items()] or [{"id": 1, "name": "object"}]
        return GroundTruth({"images": images, "annotations": anns, "categories": cats}, source, by_stamp)


def _results(preds: Iterable[FramePrediction], gt: GroundTruth, agnostic: bool) -> tuple[list[dict], int]:
    """COCO results for the annotated frames; (results, objects whose class is not a GT category)."""
    out, unknown = [], 0
    for p in preds:
        image_id = gt.image_by_stamp.get(p.stamp_ns)
        if image_id is None:
            continue
        for i, rle in enumerate(p.rles):
            cid = 1 if agnostic else gt.category_id(p.class_names[i])
            if cid is None:
                unknown += 1
                continue
            out.append(
                {
                    "image_id": image_id,
                    "category_id": cid,
                    "segmentation": rle,
                    "bbox": [float(v) for v in p.boxes_xywh[i]],
                    "score": float(p.scores[i]),
                }
            )
    return out, unknown


def _agnostic(coco: dict[str, Any]) -> dict[str, Any]:
    anns = [{**a, "category_id": 1} for a in coco["annotations"]]
    return {"images": coco["images"], "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


def evaluate_accuracy(gt: GroundTruth, preds: Sequence[FramePrediction], stamps_read: Iterable[int]) -> dict[str, Any]:
    """Mask/box AP over the annotated images whose stamp was read from the bag (processed or not: a frame
    that was dropped counts as one with no detections)."""
    seen = set(int(s) for s in stamps_read)
    image_ids = sorted(i for s, i in gt.image_by_stamp.items() if s in seen)
    out: dict[str, Any] = {
        "source": gt.source,
        "images_evaluated": len(image_ids),
        "iou_threshold_match": MATCH_IOU,
    }
    if not image_ids:
        out["error"] = f"no image stamp of the bag is in the ground truth ({len(gt.image_by_stamp)} GT images)"
        return out
    results, unknown = _results(preds, gt, agnostic=False)
    m = evaluate(gt.coco, results, iou_types=("segm", "bbox"), image_ids=image_ids)
    out["mask_ap"] = {k: v for k, v in m["segm"].items() if k != "splits"}
    out["box_ap"] = {k: v for k, v in m["bbox"].items() if k not in ("splits", "per_category")}
    out["unknown_class_predictions"] = unknown
    out["dropped_results"] = m["dropped_results"]
    results_a, _ = _results(preds, gt, agnostic=True)
    ma = evaluate(_agnostic(gt.coco), results_a, iou_types=("segm",), image_ids=image_ids)
    out["mask_ap_agnostic"] = {k: v for k, v in ma["segm"].items() if k not in ("splits", "per_category")}
    names = {int(c["id"]): str(c["name"]) for c in gt.coco["categories"]}
    out["mask_ap"]["per_category"] = {names.get(int(k), str(k)): v for k, v in out["mask_ap"]["per_category"].items()}
    return out


# ------------------------------------------------------------------------------------------------ 3D


def match_masks(dt: Sequence[dict], gt: Sequence[dict], threshold: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """Greedy one-to-one pairs (dt index, gt index, IoU) with mask IoU >= threshold, best first."""
    if not dt or not gt:
        return []
    iou = np.asarray(mask_utils.iou(list(dt), list(gt), [0] * len(gt)), np.float64).reshape(len(dt), len(gt))
    pairs = []
    used_d, used_g = set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        d, g = divmod(int(flat), len(gt))
        if iou[d, g] < threshold:
            break
        if d in used_d or g in used_g:
            continue
        used_d.add(d)
        used_g.add(g)
        pairs.append((d, g, float(iou[d, g])))
    return pairs


def geometry_summary(preds: Sequence[FramePrediction], gt: GroundTruth | None = None) -> dict[str, Any]:
    """Per-object 3D statistics of the frames that had geometry, and centroid error vs ground truth."""
    frames = [p for p in preds if p.centroids is not None]
    status: dict[str, int] = {}
    depths: list[float] = []
    for p in frames:
        for s in p.status:
            status[s] = status.get(s, 0) + 1
        z = p.centroids[:, 2] if p.centroids is not None else np.zeros(0)
        depths.extend(float(v) for v in z if math.isfinite(float(v)))
    out: dict[str, Any] = {
        "frames_with_geometry": len(frames),
        "objects": int(sum(status.values())),
        "status": status,
        "centroid_depth_m": _describe(depths),
    }
    if gt is None or not gt.has_centroids:
        return out
    anns_by_image: dict[int, list[dict]] = {}
    for a in gt.coco["annotations"]:
        anns_by_image.setdefault(int(a["image_id"]), []).append(a)
    errors, dz, matched, gt_objects, no_geometry = [], [], 0, 0, 0
    for p in frames:
        image_id = gt.image_by_stamp.get(p.stamp_ns)
        if image_id is None:
            continue
        anns = [
            a for a in anns_by_image.get(image_id, []) if "centroid_m" in a and isinstance(a.get("segmentation"), dict)
        ]
        gt_objects += len(anns)
        for d, g, _iou in match_masks(p.rles, [a["segmentation"] for a in anns]):
            matched += 1
            c = p.centroids[d] if p.centroids is not None else np.full(3, np.nan)
            if p.status[d] not in _GEOMETRY_USABLE or not np.all(np.isfinite(c)):
                no_geometry += 1
                continue
            truth = np.asarray(anns[g]["centroid_m"], np.float64)
            errors.append(float(np.linalg.norm(c - truth)))
            dz.append(float(c[2] - truth[2]))
    err = _describe([e * 1e3 for e in errors])
    out["centroid_error"] = {
        "gt_objects": gt_objects,
        "matched": matched,
        "matched_without_geometry": no_geometry,
        "evaluated": len(errors),
        "error_mm": err,
        "z_bias_mm": float(np.mean(dz) * 1e3) if dz else None,
        "match": f"mask IoU >= {MATCH_IOU}, greedy",
    }
    return out


def _describe(values: Sequence[float]) -> dict[str, float | int | None]:
    v = np.asarray(list(values), np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "p90": None, "max": None}
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p90": float(np.percentile(v, 90)),
        "max": float(v.max()),
    }


# -------------------------------------------------------------------------------------------- report


def _fmt(v: Any, digits: int = 1) -> str:
    return fmt(v, digits, missing="–")


def _pct(v: Any) -> float | None:
    return None if v is None else float(v) * 100


def _lat_row(name: str, s: Mapping[str, Any]) -> str:
    return (
        f"| {name} | " + " | ".join(_fmt(s.get(k)) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")) + " |"
    )


def _damage_line(d: Mapping[str, Any]) -> str:
    """The report's one line on a damaged input bag (see bag/recording/recover.py)."""
    lost = d.get("messages_lost")
    parts = [
        f"{d.get('messages_read')} messages read",
        f"{lost} lost" if lost is not None else "messages lost after the damage: unknown (no summary)",
    ]
    if d.get("unreadable_bytes") is not None:
        parts.append(f"{d['unreadable_bytes']} bytes unreadable")
    if d.get("corrupt_chunks"):
        parts.append(f"{d['corrupt_chunks']} corrupt chunks skipped")
    if d.get("unreadable_rows"):
        parts.append(f"{d['unreadable_rows']} unreadable rows skipped")
    if d.get("tail_lost") and d.get("last_good_ns") is not None:
        parts.append(f"nothing after t = {d['last_good_ns'] / 1e9:.3f} s")
    return f"{d.get('reason')}: " + ", ".join(parts)


def render_markdown(r: Mapping[str, Any]) -> str:
    """Human-readable report (the JSON holds the same numbers and more)."""
    inp, frames, timing = r["input"], r["frames"], r["timing"]
    lines = [
        "# shapemask bag-eval report",
        "",
        f"- input bag: `{inp['bag']}` ({inp.get('storage', '?')}, compression {inp.get('compression', '?')})",
        f"- image topic: `{inp['image_topic']}`; detections: "
        + (f"`{inp['detections_topic']}`" if inp.get("detections_topic") else "self-detection (model's own boxes)"),
        f"- depth: `{inp.get('depth_topic') or '–'}`, camera info: `{inp.get('camera_info_topic') or '–'}`",
        f"- model: `{r['model']['path']}`, backend **{r['model']['backend']}**",
        *([f"- **damaged input, read up to the damage**: {_damage_line(inp['damage'])}"] if inp.get("damage") else []),
        f"- output bag: `{r['output']['bag']}`",
        "",
        "## Frames",
        "",
        f"images read {frames['images_read']}, processed {frames['processed']}, not processed "
        f"{frames['images_read'] - frames['processed']}, objects {frames['objects']}, "
        f"with 3D {frames.get('with_geometry', 0)}",
        "",
        "## Timing (per processed frame)",
        "",
        "| stage | p50 ms | p90 ms | p99 ms | mean ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, key in (
        ("total", "total"),
        ("predictor (model)", "model"),
        ("  network only", "network"),
        ("3D stage", "geometry"),
        ("overhead around the model", "overhead"),
        ("  read + deserialise", "io"),
        ("  processor minus model", "process_other"),
        ("  serialise + write outputs", "encode"),
    ):
        if key in timing["per_frame"] and not (key == "geometry" and not inp.get("depth_topic")):
            lines.append(_lat_row(name, timing["per_frame"][key]))
    cpu = timing.get("per_frame_cpu") or {}
    if cpu:
        lines += [
            "",
            "CPU time per frame (not inflated by other processes on a shared machine): model = CPU of the "
            "whole process during predict (runtime threads included); 3D stage = the whole process's CPU in "
            "it; overhead = the whole process's CPU outside both while a frame is processed and written, plus "
            "reading its messages (split as the wall time above).",
            "",
            "| CPU | p50 ms | p90 ms | p99 ms | mean ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        for name, key in (
            ("model", "model"),
            ("3D stage", "geometry"),
            ("overhead", "overhead"),
            ("  read + deserialise", "io"),
            ("  processor minus model", "process"),
            ("  serialise + write", "encode"),
        ):
            if key in cpu and not (key == "geometry" and not inp.get("depth_topic")):
                lines.append(_lat_row(name, cpu[key]))
    ratio = timing.get("overhead_fraction")
    with_3d = timing.get("overhead_fraction_cpu_with_3d")
    lines += [
        "",
        f"Overhead / model time: **{_fmt(None if ratio is None else ratio * 100)} %** (sum over frames; "
        f"whole loop incl. copying the inputs: {_fmt(_pct(timing.get('overhead_fraction_run')))} %; "
        f"CPU time: {_fmt(_pct(timing.get('overhead_fraction_cpu')))} %"
        + ("" if with_3d is None else f", with the 3D stage: {_fmt(_pct(with_3d))} %")
        + "). "
        f"Throughput {_fmt(timing.get('throughput_fps'), 2)} frames/s "
        f"over {_fmt(timing.get('wall_s'), 1)} s wall "
        f"(includes copying {timing.get('copied_messages', 0)} input messages and the first-call warm-up). "
        f"Start-up before the timed loop (deserialisers, the 3D kernel, a distorted camera's rays): "
        f"{_fmt(timing.get('warm_up_s'), 2)} s.",
        "",
        "## Drops and skips",
        "",
    ]
    drops = r.get("drops", {})
    rows = [(f"{group}.{k}", v) for group, d in drops.items() for k, v in sorted(d.items()) if v]
    lines += ["| reason | count |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] if rows else ["none"]
    acc = r.get("accuracy")
    if acc:
        lines += ["", "## Accuracy", ""]
        if acc.get("error"):
            lines.append(f"not computed: {acc['error']}")
        else:
            m, b, a = acc["mask_ap"], acc["box_ap"], acc["mask_ap_agnostic"]
            lines += [
                f"ground truth `{acc['source']}`, {acc['images_evaluated']} images",
                "",
                "| metric | AP | AP50 | AP75 | APs | APm | APl |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, d in (("mask", m), ("mask, class-agnostic", a), ("box", b)):
                lines.append(
                    f"| {name} | "
                    + " | ".join(_fmt(d.get(k)) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
                    + " |"
                )
            if acc.get("unknown_class_predictions"):
                lines.append(f"\n{acc['unknown_class_predictions']} predictions had a class that is not a GT category.")
    geo = r.get("geometry")
    if geo:
        lines += [
            "",
            "## 3D",
            "",
            f"objects {geo['objects']} in {geo['frames_with_geometry']} frames; status {geo['status']}",
        ]
        ce = geo.get("centroid_error")
        if ce:
            e = ce["error_mm"]
            lines.append(
                f"\ncentroid error vs ground truth ({ce['evaluated']} of {ce['gt_objects']} GT objects, "
                f"{ce['match']}): "
                f"mean {_fmt(e['mean'])} mm, median {_fmt(e['median'])} mm, p90 {_fmt(e['p90'])} mm, "
                f"max {_fmt(e['max'])} mm; z bias {_fmt(ce['z_bias_mm'])} mm"
            )
    out = r.get("output", {})
    if out.get("overlays"):
        lines += ["", "## Overlays", ""] + [f"- `{p}`" for p in out["overlays"]]
    if out.get("video"):
        lines += ["", f"Video: `{out['video']}`"]
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """report.json (strict JSON) and report.md in `out_dir`, each written atomically."""
    out_dir = Path(out_dir)
    safe = json_safe(dict(report))
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write_text(str(json_path), json.dumps(safe, indent=2, allow_nan=False) + "\n")
    atomic_write_text(str(md_path), render_markdown(safe))
    return json_path, md_path


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
