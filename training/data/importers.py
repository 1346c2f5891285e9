"""`shapemask import-dataset`: the formats robot teams label in -> one COCO instances JSON.

Sources (any number, mixed):
- `--coco ANN.json[=IMAGE_DIR]`: COCO JSON as COCO, Roboflow or CVAT export it. Image dir defaults to the
  JSON's folder (Roboflow) or `../<folder named like the JSON's split>` is not guessed: pass it explicitly.
  Export quirks handled: Roboflow's placeholder category (the project name, used by no annotation, id 0),
  annotation ids starting at 0 (pycocotools' COCOeval treats id 0 as "no match"), annotations without a
  polygon (skipped and counted), crowd regions (kept as crowd, never as instances).
- `--yolo-seg IMAGE_DIR[=LABEL_DIR]`: Ultralytics YOLO-seg text labels, one line per instance
  `class x1 y1 x2 y2 ...` normalised to [0, 1]; the label dir defaults to IMAGE_DIR with its last
  `images` component replaced by `labels`.

The output has fresh image and annotation ids starting at 1, `file_name` relative to the output JSON's
folder (so `--images` of later commands is that folder), and per image the `source` it came from.
`--agnostic` maps every category to one class "object" (class-agnostic masks and detector).
`--repeat-factor-threshold T` repeats images with rare categories (LVIS repeat-factor sampling,
`repeat_factor.py`), counted on the named categories before `--agnostic` collapses them.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from shapemask_ros.datasets.coco import SkipCounter, load_coco_json
from shapemask_ros.utils.io import atomic_write_text
from shapemask_training.data.repeat_factor import RepeatSummary, repeat_factor_sample

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
AGNOSTIC_NAME = "object"
AGNOSTIC_CATEGORY = {"id": 1, "name": AGNOSTIC_NAME, "supercategory": "object"}


@dataclass
class ImportResult:
    """One merged COCO dict plus what was skipped, by reason."""

    coco: dict
    skipped: SkipCounter = field(default_factory=SkipCounter)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    repeats: RepeatSummary | None = None  # what repeat-factor sampling did, when it ran


def _valid_polygons(segm) -> list[list[float]]:
    if not isinstance(segm, list):
        return []
    out = []
    for p in segm:
        if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0:
            arr = np.asarray(p, dtype=np.float64)
            if np.all(np.isfinite(arr)):
                out.append([float(v) for v in arr])
    return out


def read_coco_source(ann_path: str, image_dir: str, counter: SkipCounter) -> tuple[list[dict], list[dict]]:
    """A COCO/Roboflow/CVAT export -> (images with absolute `path`, annotations with category *names*).

    Categories used by no annotation (Roboflow's project-name placeholder) disappear with no effect; an
    annotation with an empty or broken polygon and no RLE is skipped and counted.
    """
    data = load_coco_json(ann_path)
    names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    images = {}
    for im in data["images"]:
        try:
            images[im["id"]] = {
                "path": os.path.abspath(os.path.join(image_dir, im["file_name"])),
                "height": int(im["height"]),
                "width": int(im["width"]),
                "old_id": im["id"],
            }
        except (KeyError, TypeError, ValueError):
            counter.skip("bad_image_entry", str(im)[:80])
    anns = []
    for a in data["annotations"]:
        aid = a.get("id")
        if a.get("image_id") not in images:
            counter.skip("unknown_image_id", str(aid))
            continue
        if a.get("category_id") not in names:
            counter.skip("unknown_category", str(aid))
            continue
        segm = a.get("segmentation")
        crowd = int(a.get("iscrowd", 0) or 0)
        if isinstance(segm, dict) and "counts" in segm:
            pass  # RLE (COCO crowd regions, CVAT masks): kept as is
        else:
            polys = _valid_polygons(segm)
            if not polys:
                counter.skip("empty_polygon", str(aid))
                continue
            segm = polys
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(np.isfinite(bbox)) and bbox[2] > 0 and bbox[3] > 0):
            counter.skip("bad_bbox", str(aid))
            continue
        anns.append(
            {
                "image_old_id": a["image_id"],
                "category": names[a["category_id"]],
                "segmentation": segm,
                "bbox": [float(v) for v in bbox],
                "iscrowd": crowd,
                "area": float(a.get("area", 0.0)),
            }
        )
    return list(images.values()), anns


def _image_size(path: str) -> tuple[int, int] | None:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    return int(img.shape[0]), int(img.shape[1])


def default_label_dir(image_dir: str) -> str:
    """Ultralytics convention: .../images/<split> -> .../labels/<split>."""
    parts = os.path.normpath(os.path.abspath(image_dir)).split(os.sep)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return os.sep.join(parts)
    return image_dir


def read_yolo_seg_source(
    image_dir: str, label_dir: str, counter: SkipCounter, class_names: list[str] | None = None
) -> tuple[list[dict], list[dict]]:
    """YOLO-seg polygons (normalised) -> (images, annotations) in pixels. Images without a label file are
    kept with no instances (background); malformed lines are skipped and counted."""
    images, anns = [], []
    files = sorted(f for f in glob.glob(os.path.join(image_dir, "*")) if f.lower().endswith(IMAGE_EXTENSIONS))
    for k, path in enumerate(files):
        size = _image_size(path)
        if size is None:
            counter.skip("unreadable_image", path)
            continue
        h, w = size
        images.append({"path": os.path.abspath(path), "height": h, "width": w, "old_id": k})
        label = os.path.join(label_dir, os.path.splitext(os.path.basename(path))[0] + ".txt")
        if not os.path.exists(label):
            counter["image_without_labels"] += 1
            continue
        with open(label, encoding="utf-8") as f:
            lines = f.read().splitlines()
        for ln, line in enumerate(lines):
            tok = line.split()
            if not tok:
                continue
            try:
                cls = int(float(tok[0]))
                xy = np.asarray([float(t) for t in tok[1:]], np.float64)
            except ValueError:
                counter.skip("malformed_line", f"{label}:{ln + 1}")
                continue
            if xy.size < 6 or xy.size % 2 or not np.all(np.isfinite(xy)) or cls < 0:
                counter.skip("malformed_line", f"{label}:{ln + 1}")
                continue
            pts = np.clip(xy.reshape(-1, 2), 0.0, 1.0) * np.array([w, h], np.float64)
            x1, y1 = pts.min(0)
            x2, y2 = pts.max(0)
            if x2 - x1 < 1 or y2 - y1 < 1:
                counter.skip("degenerate_polygon", f"{label}:{ln + 1}")
                continue
            name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
            anns.append(
                {
                    "image_old_id": k,
                    "category": name,
                    "segmentation": [pts.reshape(-1).tolist()],
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "iscrowd": 0,
                    "area": 0.0,
                }
            )
    return images, anns


def merge_sources(
    sources: list[tuple[str, list[dict], list[dict]]], out_dir: str, agnostic: bool, counter: SkipCounter
) -> ImportResult:
    """Renumber images/annotations from 1, unify categories by name (or to one 'object'), relative paths."""
    from pycocotools import mask as mask_utils

    categories: dict[str, int] = {}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    per_source: dict[str, dict[str, int]] = {}
    for source, imgs, anns in sources:
        id_map = {}
        for im in imgs:
            new_id = len(images) + 1
            id_map[im["old_id"]] = new_id
            images.append(
                {
                    "id": new_id,
                    "file_name": os.path.relpath(im["path"], out_dir),
                    "height": im["height"],
                    "width": im["width"],
                    "source": source,
                }
            )
        n = 0
        for a in anns:
            name = AGNOSTIC_NAME if agnostic else a["category"]
            cid = categories.setdefault(name, len(categories) + 1)
            im = images[id_map[a["image_old_id"]] - 1]
            area = a["area"]
            if area <= 0:
                segm = a["segmentation"]
                rle = (
                    mask_utils.merge(mask_utils.frPyObjects(segm, im["height"], im["width"]))
                    if isinstance(segm, list)
                    else segm
                )
                area = float(mask_utils.area(rle)) if isinstance(segm, list) else float(a["bbox"][2] * a["bbox"][3])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": im["id"],
                    "category_id": cid,
                    "segmentation": a["segmentation"],
                    "bbox": a["bbox"],
                    "area": area,
                    "iscrowd": a["iscrowd"],
                }
            )
            n += 1
        per_source[source] = {"images": len(imgs), "annotations": n}
    cats = [{"id": i, "name": n, "supercategory": "object" if agnostic else n} for n, i in categories.items()]
    if agnostic and not cats:
        cats = [dict(AGNOSTIC_CATEGORY)]
    coco = {
        "info": {"description": "shapemask import-dataset"},
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }
    return ImportResult(coco, counter, per_source)


def to_agnostic(coco: dict) -> dict:
    """Every annotation in the one category "object" (what `merge_sources(..., agnostic=True)` writes)."""
    return {
        **coco,
        "annotations": [{**a, "category_id": AGNOSTIC_CATEGORY["id"]} for a in coco["annotations"]],
        "categories": [dict(AGNOSTIC_CATEGORY)],
    }


def import_dataset(
    coco_sources: list[str],
    yolo_sources: list[str],
    out_path: str,
    agnostic: bool = False,
    class_names: list[str] | None = None,
    repeat_factor_threshold: float = 0.0,
    seed: int = 0,
) -> ImportResult:
    """Read every source, merge, and write the COCO JSON atomically. Sources are `A` or `A=B` strings.

    repeat_factor_threshold > 0: repeat-factor sampling (seeded) on the merged named categories, then the
    class-agnostic collapse if `agnostic`; 0 leaves the import as it was.
    """
    if repeat_factor_threshold < 0:
        raise ValueError(f"repeat_factor_threshold must be >= 0, got {repeat_factor_threshold}")
    counter = SkipCounter()
    out_dir = os.path.dirname(os.path.abspath(out_path))
    sources = []
    for spec in coco_sources:
        ann, _, img_dir = spec.partition("=")
        img_dir = img_dir or os.path.dirname(os.path.abspath(ann))
        imgs, anns = read_coco_source(ann, img_dir, counter)
        sources.append((spec, imgs, anns))
    for spec in yolo_sources:
        img_dir, _, lab_dir = spec.partition("=")
        imgs, anns = read_yolo_seg_source(img_dir, lab_dir or default_label_dir(img_dir), counter, class_names)
        sources.append((spec, imgs, anns))
    if not sources:
        raise ValueError("give at least one --coco or --yolo-seg source")
    rfs = repeat_factor_threshold > 0
    result = merge_sources(sources, out_dir, agnostic and not rfs, counter)
    if rfs:
        result.coco, result.repeats = repeat_factor_sample(result.coco, repeat_factor_threshold, seed)
        if agnostic:
            result.coco = to_agnostic(result.coco)
    atomic_write_text(out_path, json.dumps(result.coco))
    return result


def split_holdout(coco: dict, fraction: float, seed: int) -> tuple[dict, dict]:
    """Split by image (seeded): (kept, held out) COCO dicts with `round(fraction * images)` held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    ids = sorted(im["id"] for im in coco["images"])
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(ids)[: round(fraction * len(ids))].tolist())

    def part(keep: bool) -> dict:
        return {
            **coco,
            "images": [im for im in coco["images"] if (im["id"] in held) != keep],
            "annotations": [a for a in coco["annotations"] if (a["image_id"] in held) != keep],
        }

    return part(True), part(False)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coco",
        action="append",
        default=[],
        metavar="ANN.json[=IMAGE_DIR]",
        help="a COCO / Roboflow / CVAT COCO export (image dir defaults to the JSON's folder)",
    )
    p.add_argument(
        "--yolo-seg",
        action="append",
        default=[],
        metavar="IMAGE_DIR[=LABEL_DIR]",
        help="YOLO-seg polygon labels (label dir defaults to images/ -> labels/)",
    )
    p.add_argument("--names", default="", help="YOLO class names file (one per line), for named categories")
    p.add_argument("--agnostic", action="store_true", help="one category 'object' for everything")
    p.add_argument("--out", required=True, help="output COCO JSON")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="fraction of images (seeded) written to --holdout-out instead of --out",
    )
    p.add_argument("--holdout-out", default="", help="COCO JSON of the held-out images")
    p.add_argument(
        "--repeat-factor-threshold",
        type=float,
        default=0.0,
        metavar="T",
        help="repeat-factor sampling (LVIS): an image is repeated max over its categories of "
        "max(1, sqrt(T / fraction of images with the category)) times (stochastic rounding, --seed), "
        "counted before --agnostic; 0 = off. Not with --holdout (split first, then repeat the kept part)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of the repeats' rounding")


def run(args: argparse.Namespace) -> int:
    names = None
    if args.names:
        with open(args.names, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
    if args.repeat_factor_threshold > 0 and args.holdout > 0:
        # repeating first would put copies of one image on both sides of the split
        raise SystemExit("--repeat-factor-threshold with --holdout: split in one import, repeat in the next")
    res = import_dataset(
        args.coco,
        args.yolo_seg,
        args.out,
        agnostic=args.agnostic,
        class_names=names,
        repeat_factor_threshold=args.repeat_factor_threshold,
        seed=args.seed,
    )
    if res.repeats is not None:
        print("\n".join(res.repeats.lines()))
    if args.holdout > 0:
        if not args.holdout_out:
            raise SystemExit("--holdout needs --holdout-out")
        kept, held = split_holdout(res.coco, args.holdout, args.seed)
        atomic_write_text(args.out, json.dumps(kept))
        atomic_write_text(args.holdout_out, json.dumps(held))
        print(f"held out {len(held['images'])} images ({len(held['annotations'])} annotations) -> {args.holdout_out}")
        res.coco = kept
    for src, n in res.per_source.items():
        print(f"{src}: {n['images']} images, {n['annotations']} annotations")
    skipped = collections.Counter(res.skipped)
    print(
        f"wrote {args.out}: {len(res.coco['images'])} images, {len(res.coco['annotations'])} annotations, "
        f"{len(res.coco['categories'])} categories; skipped: {dict(skipped) or 'none'}"
    )
    return 0
