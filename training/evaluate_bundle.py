"""`shapemask evaluate-bundle`: score exported bundles on any COCO-format set, class-agnostic, side by side.

For each bundle (through the same `Predictor` the node uses, ONNX Runtime by default) and each box source —
ground-truth boxes, ground-truth boxes shrunk by U(0.75, 1) per side (paper Table 3), ground-truth boxes
with each edge moved by N(0, 0.1 x side) (a detector's errors), the bundle's own detections — COCO mask AP
(and box AP for detections) with pycocotools, next to the floor every mask branch must beat: box-filled
masks on the same given boxes. Every category of the set is mapped to one ("object"), so class-agnostic
models are scored on what they are for: the shape of each object. With given boxes every mask scores 1.0
(the box is given, only the mask is judged). Writes `<out>.md` and `<out>.json`.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import tempfile
import time
from typing import Any

from shapemask_ros.runtime.predictor import Predictor, flip_label
from shapemask_ros.utils.formatting import fmt
from shapemask_ros.utils.io import atomic_write_text, read_text
from shapemask_training.evaluation import box_fill_predict, evaluate_predictor

log = logging.getLogger(__name__)

SOURCES = ("gt", "gt_shrunk", "gt_noisy", "model")
SHRINK_SEED = 0


def agnostic_coco(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a COCO dict with one category (id 1, "object") and annotation ids renumbered from 1
    (pycocotools' COCOeval treats a match to annotation id 0 as no match; Roboflow exports start at 0)."""
    out = copy.deepcopy(data)
    out["categories"] = [{"id": 1, "name": "object", "supercategory": "object"}]
    for i, ann in enumerate(out["annotations"], start=1):
        ann["category_id"] = 1
        ann["id"] = i
    return out


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    row = {f"mask_{k}": metrics["segm"].get(k) for k in keep}
    row["box_AP"] = metrics["bbox"].get("AP")
    row["predict_ms"] = round(1000 * metrics.get("predict_seconds_mean", math.nan), 1)
    return row


def evaluate_bundles(
    annotations: str,
    image_dir: str,
    bundles: list[tuple[str, str]],
    sources: tuple[str, ...] = SOURCES,
    backend: str = "onnxruntime",
    max_images: int | None = None,
    box_fill: bool = True,
    progress: bool = True,
    flip_average: bool = False,
) -> dict[str, Any]:
    """{"rows": {label: {source: summary}}, "set": ..., "images": n}. bundles: (label, bundle path).

    flip_average: each bundle is scored a second time with `Predictor.flip_average` (rows "<label> +flip").
    """
    data = agnostic_coco(json.loads(read_text(annotations)))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
        tmp_json = f.name
    try:
        rows: dict[str, dict[str, Any]] = {}
        runs = [(label, path, False) for label, path in bundles]
        if flip_average:
            runs += [(flip_label(label), path, True) for label, path in bundles]
        for label, path, flip in runs:
            predictor = Predictor.load(path, backend=backend, mask_threshold=0.5, flip_average=flip)
            rows[label] = {}
            for source in sources:
                t0 = time.perf_counter()
                m, _ = evaluate_predictor(
                    predictor.predict,
                    tmp_json,
                    image_dir,
                    source,
                    [1],
                    max_images=max_images,
                    seed=SHRINK_SEED,
                    progress=progress,
                )
                rows[label][source] = {**_summary(m), "eval_s": round(time.perf_counter() - t0, 1)}
                log.info("%s %s: mask AP %.1f", label, source, m["segm"]["AP"])
        if box_fill:
            rows["box-filled masks"] = {}
            for source in (s for s in sources if s != "model"):
                m, _ = evaluate_predictor(
                    box_fill_predict,
                    tmp_json,
                    image_dir,
                    source,
                    [1],
                    max_images=max_images,
                    seed=SHRINK_SEED,
                    progress=progress,
                )
                rows["box-filled masks"][source] = _summary(m)
    finally:
        os.unlink(tmp_json)
    n_img = len(data["images"]) if max_images is None else min(max_images, len(data["images"]))
    return {
        "set": annotations,
        "images": n_img,
        "instances": sum(1 for a in data["annotations"] if not a.get("iscrowd", 0)),
        "rows": rows,
    }


def _fmt(v: Any) -> str:
    return fmt(v, missing="–")


def format_report(result: dict[str, Any], title: str = "") -> str:
    """Markdown: one row per (model, box source) with mask AP / AP50 / AP75 / APs / APm / APl, box AP and
    the ratio of mask AP to box-filled masks on the same boxes."""
    rows = result["rows"]
    floor = rows.get("box-filled masks", {})
    lines = [
        f"### {title or result['set']}",
        "",
        f"{result['images']} images, {result['instances']} instances, class-agnostic (one category).",
        "",
        "| model | boxes | mask AP | AP50 | AP75 | APs | APm | APl | × box-filled | box AP | ms/img |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, by_source in rows.items():
        for source, r in by_source.items():
            ref = floor.get(source, {}).get("mask_AP")
            ratio = "–" if not ref or label == "box-filled masks" else f"{r['mask_AP'] / ref:.2f}"
            box_ap = _fmt(r["box_AP"]) if source == "model" else "–"
            lines.append(
                f"| {label} | {source} | "
                + " | ".join(_fmt(r[f"mask_{k}"]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
                + f" | {ratio} | {box_ap} | {_fmt(r.get('predict_ms'))} |"
            )
    return "\n".join(lines) + "\n"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[LABEL=]BUNDLE",
        help="bundle directory (repeatable: several models in one table)",
    )
    p.add_argument("--annotations", required=True, help="COCO instances JSON (any categories)")
    p.add_argument("--images", required=True, help="directory the JSON's file_names are relative to")
    p.add_argument("--sources", default=",".join(SOURCES), help="box sources: gt, gt_shrunk, gt_noisy, model")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime | tensorflow | tensorrt | auto")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--no-box-fill", action="store_true", help="leave out the box-filled reference rows")
    p.add_argument(
        "--flip-average",
        action="store_true",
        help=f"also score each bundle with mirrored-image averaging (rows '{flip_label('<label>')}', ~2x the time)",
    )
    p.add_argument("--title", default="", help="table heading (default: the annotation path)")
    p.add_argument("--out", required=True, help="output prefix: writes OUT.md and OUT.json")


def run(args: argparse.Namespace) -> int:
    from shapemask_ros.utils.cli_args import labelled_paths as labelled

    bundles = labelled(args.model)
    sources = tuple(s.strip() for s in args.sources.split(",") if s.strip())
    bad = set(sources) - set(SOURCES)
    if bad:
        raise SystemExit(f"unknown box sources {sorted(bad)}; choose from {SOURCES}")
    result = evaluate_bundles(
        args.annotations,
        args.images,
        bundles,
        sources,
        backend=args.backend,
        max_images=args.max_images,
        box_fill=not args.no_box_fill,
        flip_average=args.flip_average,
    )
    result["command"] = "shapemask evaluate-bundle " + " ".join(
        [
            *(f"--model {m}" for m in args.model),
            f"--annotations {args.annotations}",
            f"--images {args.images}",
            f"--sources {','.join(sources)}",
            *(["--flip-average"] if args.flip_average else []),
            f"--out {args.out}",
        ]
    )
    md = format_report(result, args.title)
    atomic_write_text(f"{args.out}.json", json.dumps(result, indent=2))
    atomic_write_text(f"{args.out}.md", md)
    print(md)
    return 0
