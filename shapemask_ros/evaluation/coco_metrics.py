"""COCO scoring with pycocotools: predictions -> COCO results, bbox/segm AP, per-category and split AP.

Shared by `shapemask eval` (training) and `bag-eval` (runtime), so it lives in the core and needs only
pycocotools and NumPy. Split AP (e.g. VOC / non-VOC, the paper's partial-supervision numbers) is the mean of
the per-category APs over the split's categories.

Conventions: metrics are percentages (0..100); NaN means "undefined" (no ground truth for that category /
area range), which `json.dumps` writes as `NaN`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from shapemask_ros.datasets.category_splits import mask_split_ids
from shapemask_ros.datasets.coco import SkipCounter, load_coco_json
from shapemask_ros.ops import box_ops
from shapemask_ros.runtime.instances import Instances
from shapemask_ros.utils.io import atomic_write_text, read_text

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm")
# Order of COCOeval.stats for detections; AR100 is stats[8].
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_STAT_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "APs": 3, "APm": 4, "APl": 5, "AR100": 8}


# ----------------------------------------------------------------------------------------------- results


def results_from_instances(
    image_id: int,
    instances: Instances,
    category_ids: Sequence[int],
    include_masks: bool = True,
    counter: SkipCounter | None = None,
) -> list[dict[str, Any]]:
    """COCO results (one dict per object, with `bbox` xywh, `score`, `category_id`, RLE `segmentation`).

    `instances.class_ids` are contiguous indices into `category_ids` (with class-agnostic masks they are
    the detection classes). Objects whose class is unknown (-1) or out of range are dropped and counted in
    `counter` under "unknown_class". Masks are pasted one at a time into a single reused Fortran-order
    buffer, so memory stays at one image whatever the number of objects.
    """
    counter = counter if counter is not None else SkipCounter()
    n = len(instances)
    if n == 0:
        return []
    h, w = (int(v) for v in instances.image_size)
    boxes = np.asarray(instances.boxes, dtype=np.float64).reshape(n, 4)
    scores = np.asarray(instances.scores, dtype=np.float64).reshape(n)
    classes = np.asarray(instances.class_ids).reshape(n)
    if include_masks and (len(instances.masks) != n or len(instances.regions) != n):
        raise ValueError(f"Instances has {n} boxes but {len(instances.masks)} masks / {len(instances.regions)} regions")
    xywh = box_ops.xyxy_to_xywh(boxes)
    canvas = np.zeros((h, w), dtype=np.uint8, order="F") if include_masks else None
    out: list[dict[str, Any]] = []
    for i in range(n):
        c = int(classes[i])
        if not 0 <= c < len(category_ids):
            counter.skip("unknown_class", f"image {image_id} object {i}: class index {c}")
            continue
        if not (np.all(np.isfinite(boxes[i])) and np.isfinite(scores[i])):
            counter.skip("non_finite", f"image {image_id} object {i}")
            continue
        res: dict[str, Any] = {
            "image_id": int(image_id),
            "category_id": int(category_ids[c]),
            "bbox": [float(v) for v in xywh[i]],
            "score": float(scores[i]),
        }
        if canvas is not None:
            res["segmentation"] = _encode_region(canvas, instances.masks[i], instances.regions[i])
        out.append(res)
    return out


def _encode_region(canvas: np.ndarray, mask: np.ndarray, region: Sequence[int]) -> dict[str, Any]:
    """RLE of `mask` placed at `region` (x, y, w, h) in the all-zero `canvas`; the canvas is left zero."""
    x, y, rw, rh = (int(v) for v in region)
    mask = np.asarray(mask)
    if mask.shape != (rh, rw):
        raise ValueError(f"mask shape {mask.shape} does not match its region (h={rh}, w={rw})")
    h, w = canvas.shape
    # Clip the region to the image (a region is normally already clipped; this keeps a stray one harmless).
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + rw, w), min(y + rh, h)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = mask[y0 - y : y1 - y, x0 - x : x1 - x] != 0
    rle = mask_utils.encode(canvas)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = 0
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_results_json(path: str, results: list[dict[str, Any]]) -> None:
    """Write COCO results atomically (local or gs://)."""
    atomic_write_text(path, json.dumps(results))


def load_results_json(path: str) -> list[dict[str, Any]]:
    """Read a COCO results file written by `write_results_json` (or any COCO results JSON)."""
    data = json.loads(read_text(path))
    if not isinstance(data, list):
        raise ValueError(f"{path}: COCO results must be a JSON list, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------------- evaluation


def _quiet(verbose: bool):
    """pycocotools prints progress on stdout; keep it only when asked."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def coco_from_dataset(dataset: dict[str, Any], verbose: bool = False) -> COCO:
    coco = COCO()
    coco.dataset = dataset
    with _quiet(verbose):
        coco.createIndex()
    return coco


def _prepare_gt(gt: str | dict[str, Any], iou_types: Sequence[str]) -> dict[str, Any]:
    """Validated copy of a COCO ground-truth dict, with `iscrowd` and `area` filled in when missing."""
    if isinstance(gt, str):
        data = load_coco_json(gt)
    elif isinstance(gt, dict):
        for key in ("images", "annotations", "categories"):
            if not isinstance(gt.get(key), list):
                raise ValueError(f"ground truth is not a COCO instances dict (missing list '{key}')")
        data = copy.deepcopy(gt)  # COCOeval rewrites segmentations in place; never touch the caller's
    else:
        raise TypeError(f"gt_annotations must be a path or a dict, got {type(gt).__name__}")
    images = {im["id"]: im for im in data["images"]}
    for k, ann in enumerate(data["annotations"]):
        aid = ann.get("id", f"#{k}")
        if ann.get("image_id") not in images:
            raise ValueError(f"ground-truth annotation {aid}: unknown image_id {ann.get('image_id')!r}")
        bbox = ann.get("bbox")
        if not _finite_box(bbox):
            raise ValueError(f"ground-truth annotation {aid}: bbox must be 4 finite numbers, got {bbox!r}")
        if "segm" in iou_types and "segmentation" not in ann:
            raise ValueError(f"ground-truth annotation {aid}: no 'segmentation' (needed for segm AP)")
        ann.setdefault("id", k + 1)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            # COCO's area is the mask area (it decides small / medium / large); fall back to the box.
            if "segmentation" in ann:
                im = images[ann["image_id"]]
                ann["area"] = float(_gt_area(ann["segmentation"], int(im["height"]), int(im["width"])))
            else:
                ann["area"] = float(bbox[2] * bbox[3])
    return data


def _gt_area(segm: Any, h: int, w: int) -> float:
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    elif isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, h, w)
    else:
        rle = segm
    return float(mask_utils.area(rle))


def _valid_results(
    results: Iterable[dict[str, Any]], images: Mapping[int, dict[str, Any]], counter: SkipCounter
) -> list[dict[str, Any]]:
    """Copies of the usable results; the rest are dropped and counted (loadRes would assert or crash)."""
    out = []
    for r in results:
        if not isinstance(r, dict) or not {"image_id", "category_id", "score"} <= r.keys():
            counter.skip("malformed_result", repr(r)[:120])
            continue
        try:
            im = images.get(r["image_id"])
        except TypeError:  # unhashable id
            im = None
        if im is None:
            counter.skip("unknown_image_id", str(r["image_id"]))
            continue
        try:
            score = float(r["score"])
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            counter.skip("non_finite", f"score {r['score']!r}")
            continue
        segm = r.get("segmentation")
        if segm is not None and (
            not isinstance(segm, dict) or list(segm.get("size", [])) != [im["height"], im["width"]]
        ):
            counter.skip("bad_segmentation", f"image {r['image_id']}: RLE size must equal the image size")
            continue
        out.append(dict(r))
    return out


def _load_detections(
    coco_gt: COCO, results: list[dict[str, Any]], iou_type: str, counter: SkipCounter, verbose: bool
) -> COCO:
    """`coco_gt.loadRes` for one IoU type; an empty result list gives an empty detection set."""
    if iou_type == "bbox":
        key = "bbox"
        dets = [dict(r) for r in results if _finite_box(r.get("bbox"))]  # loadRes writes into them
    else:
        key = "segmentation"
        # Without `bbox`, loadRes takes the detection area from the mask: small / medium / large then
        # mean the same thing for detections as for ground truth.
        dets = [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]
    if len(dets) < len(results):
        counter[f"no_{key}"] += len(results) - len(dets)
    if not dets:  # loadRes indexes anns[0] and fails on []
        return coco_from_dataset(
            {
                "images": list(coco_gt.dataset["images"]),
                "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                "annotations": [],
            }
        )
    with _quiet(verbose):
        return coco_gt.loadRes(dets)


def _finite_box(b: Any) -> bool:
    """True for a list/tuple of 4 finite numbers."""
    try:
        return isinstance(b, (list, tuple)) and len(b) == 4 and all(math.isfinite(float(v)) for v in b)
    except (TypeError, ValueError):
        return False


def per_category_ap(cocoeval: COCOeval) -> dict[int, float]:
    """AP (0..100) per category id from an accumulated COCOeval: precision[:, :, k, area=all, maxDet=100]
    averaged over the entries > -1; NaN for a category without ground truth."""
    precision = cocoeval.eval["precision"]  # [T, R, K, A, M]
    a = cocoeval.params.areaRngLbl.index("all")
    m = cocoeval.params.maxDets.index(100) if 100 in cocoeval.params.maxDets else -1
    out = {}
    for k, cat in enumerate(cocoeval.params.catIds):
        p = precision[:, :, k, a, m]
        p = p[p > -1]
        out[int(cat)] = float(np.mean(p) * 100.0) if p.size else math.nan
    return out


def split_ap(per_category: Mapping[int, float], split_ids: Iterable[int]) -> float:
    """Mean AP over the split's categories that have ground truth (NaN when none has)."""
    vals = [per_category[c] for c in split_ids if c in per_category and not math.isnan(per_category[c])]
    return float(np.mean(vals)) if vals else math.nan


def named_splits(names: Iterable[str], all_ids: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """{'voc': (...), 'nonvoc': (...)} from split names understood by `datasets.category_splits.mask_split_ids`."""
    return {name: mask_split_ids(name, tuple(all_ids)) for name in names}


def evaluate(
    gt_annotations: str | dict[str, Any],
    results: list[dict[str, Any]],
    iou_types: Sequence[str] = IOU_TYPES,
    category_ids: Sequence[int] | None = None,
    splits: Mapping[str, Sequence[int]] | None = None,
    image_ids: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Score COCO `results` against `gt_annotations` (path, local or gs://, or a COCO dict).

    category_ids: evaluate only these categories (default: all in the ground truth).
    splits: name -> category ids; each split's AP is the mean per-category AP over its categories.
    image_ids: evaluate only these images (default: all) -- e.g. the ones a capped run predicted on.

    Returns {iou_type: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100": float,
                        "per_category": {category_id: AP}, "splits": {name: AP}},
             "num_images": int, "num_results": int, "dropped_results": {reason: count}}.
    Values are percentages; NaN where undefined (no ground truth in that category / area range).
    Results naming unknown images, with non-finite scores or with a wrongly sized RLE are dropped and
    counted; an empty result list scores 0 wherever there is ground truth.
    """
    bad = [t for t in iou_types if t not in IOU_TYPES]
    if bad or not iou_types:
        raise ValueError(f"iou_types must be a non-empty subset of {IOU_TYPES}, got {tuple(iou_types)}")
    data = _prepare_gt(gt_annotations, iou_types)
    coco_gt = coco_from_dataset(data, verbose)
    gt_cat_ids = sorted(coco_gt.getCatIds())
    cat_ids = gt_cat_ids if category_ids is None else sorted({int(c) for c in category_ids})
    unknown = set(cat_ids) - set(gt_cat_ids)
    if unknown:
        raise ValueError(f"category_ids not in the ground truth: {sorted(unknown)}")
    img_ids = sorted(coco_gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    missing = set(img_ids) - set(coco_gt.getImgIds())
    if missing:
        raise ValueError(f"image_ids not in the ground truth: {sorted(missing)[:10]}")
    split_sets = _check_splits(splits, cat_ids)

    counter = SkipCounter()
    valid = _valid_results(results, coco_gt.imgs, counter)
    metrics: dict[str, Any] = {
        "num_images": len(img_ids),
        "num_results": len(valid),
    }
    for iou_type in iou_types:
        iou_counter = SkipCounter()
        coco_dt = _load_detections(coco_gt, valid, iou_type, iou_counter, verbose)
        for reason, count in iou_counter.items():
            counter[f"{iou_type}:{reason}"] += count
        ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
        ev.params.catIds = list(cat_ids)
        ev.params.imgIds = list(img_ids)
        with _quiet(verbose):
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        # + the two dicts below
        stats: dict[str, Any] = {k: _coco_stat_pct(ev.stats[i]) for k, i in _STAT_INDEX.items()}
        per_cat = per_category_ap(ev)
        stats["per_category"] = per_cat
        stats["splits"] = {name: split_ap(per_cat, ids) for name, ids in split_sets.items()}
        metrics[iou_type] = stats
    metrics["dropped_results"] = dict(counter)
    if counter:
        log.warning("evaluation dropped results: %s", dict(counter))
    return metrics


def _coco_stat_pct(v: float) -> float:
    return math.nan if v < 0 else float(v) * 100.0  # COCOeval reports -1 for "no ground truth"


def _check_splits(splits: Mapping[str, Sequence[int]] | None, cat_ids: Sequence[int]) -> dict[str, tuple]:
    """Keep each split's ids that are evaluated; a split with none of them is an error (a typo, surely)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, ids in (splits or {}).items():
        ids = tuple(int(i) for i in ids)
        kept = tuple(i for i in ids if i in set(cat_ids))
        if not kept:
            raise ValueError(f"split {name!r}: none of its category ids {ids[:10]} is evaluated")
        if len(kept) < len(ids):
            log.info("split %r: %d of its %d category ids are not evaluated", name, len(ids) - len(kept), len(ids))
        out[name] = kept
    return out
