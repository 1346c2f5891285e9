"""Mask AP pooled over several bags: what one bag contributes (`accuracy_pool`), and the AP of all of them
together (`pooled_accuracy`).

Averaging per-bag APs weights a 10-frame bag like a 10,000-frame one and is not the AP of the fleet.
Pooling evaluates every annotated image of every bag in one COCO evaluation: each bag's ground truth
(the images whose stamp was read) and its predictions, with image and annotation ids renumbered per bag
and categories matched by name. A pool is plain JSON (it is stored with a finished bag so a resumed run
pools without re-running it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from shapemask_ros.bag.evaluation.report import FramePrediction, GroundTruth, _agnostic, _results
from shapemask_ros.evaluation.coco_metrics import evaluate


def accuracy_pool(gt: GroundTruth, preds: Sequence[FramePrediction], stamps_read: Iterable[int]) -> dict[str, Any]:
    """One bag's share of a pooled AP: its annotated images that were read, their annotations, and the
    predictions on them (category by name)."""
    seen = set(int(s) for s in stamps_read)
    keep = {i for s, i in gt.image_by_stamp.items() if s in seen}
    names = {int(c["id"]): str(c["name"]) for c in gt.coco["categories"]}
    images = [im for im in gt.coco["images"] if int(im["id"]) in keep]
    anns = [
        {**a, "category": names.get(int(a["category_id"]), str(a["category_id"]))}
        for a in gt.coco["annotations"]
        if int(a["image_id"]) in keep
    ]
    results, _unknown = _results(preds, gt, agnostic=False)
    for r in results:
        r["category"] = names[int(r.pop("category_id"))]
    return {"images": images, "annotations": anns, "categories": sorted(set(names.values())), "results": results}


def pooled_accuracy(pools: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Mask/box AP (class-aware) and class-agnostic mask AP over every pool; None when no bag has ground truth."""
    pools = [p for p in pools if p]
    if not pools:
        return None
    cats: dict[str, int] = {}
    for p in pools:
        for name in p["categories"]:
            cats.setdefault(name, len(cats) + 1)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for p in pools:
        base = len(images)
        local = {int(im["id"]): base + k + 1 for k, im in enumerate(p["images"])}
        images += [{**im, "id": local[int(im["id"])]} for im in p["images"]]
        for a in p["annotations"]:
            fields = {k: v for k, v in a.items() if k != "category"}
            anns.append(
                {
                    **fields,
                    "id": len(anns) + 1,
                    "image_id": local[int(a["image_id"])],
                    "category_id": cats[a["category"]],
                }
            )
        for r in p["results"]:
            if int(r["image_id"]) in local:
                fields = {k: v for k, v in r.items() if k != "category"}
                results.append({**fields, "image_id": local[int(r["image_id"])], "category_id": cats[r["category"]]})
    out: dict[str, Any] = {"bags": len(pools), "images_evaluated": len(images), "annotations": len(anns)}
    if not images:
        out["error"] = "no annotated image was read from any bag"
        return out
    coco = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for n, i in cats.items()]}
    ids = [im["id"] for im in images]
    m = evaluate(coco, results, iou_types=("segm", "bbox"), image_ids=ids)
    out["mask_ap"] = {k: v for k, v in m["segm"].items() if k not in ("splits", "per_category")}
    out["box_ap"] = {k: v for k, v in m["bbox"].items() if k not in ("splits", "per_category")}
    agn = [{**r, "category_id": 1} for r in results]
    ma = evaluate(_agnostic(coco), agn, iou_types=("segm",), image_ids=ids)
    out["mask_ap_agnostic"] = {k: v for k, v in ma["segm"].items() if k not in ("splits", "per_category")}
    return out
