"""COCO-format loading with validation: bad annotations are skipped and counted, never crash a run.

Masks are decoded with pycocotools (polygons, uncompressed and compressed RLE).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from shapemask_ros.utils.io import read_text

log = logging.getLogger(__name__)


@dataclass
class Instance:
    category_id: int
    bbox_xyxy: np.ndarray  # float64 [4], pixels, clipped to the image
    mask: np.ndarray  # uint8 [H, W] {0, 1}
    annotation_id: int = -1


@dataclass
class ImageRecord:
    image_id: int
    file_name: str  # path relative to the image directory
    height: int
    width: int
    instances: list[Instance] = field(default_factory=list)


class SkipCounter(collections.Counter):
    """Counts skipped items by reason and logs the first few of each."""

    def skip(self, reason: str, detail: str = "") -> None:
        self[reason] += 1
        if self[reason] <= 3:
            log.warning("skipping %s: %s", reason, detail)


def load_coco_json(path: str) -> dict:
    data = json.loads(read_text(path))
    for key in ("images", "annotations", "categories"):
        if key not in data or not isinstance(data[key], list):
            raise ValueError(f"{path}: not a COCO instances file (missing list '{key}')")
    return data


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """Polygon list / RLE (compressed or not) -> uint8 [H, W] {0, 1} mask. Raises ValueError if broken."""
    if isinstance(segm, list):
        polys = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            raise ValueError("polygon with fewer than 3 points")
        if not all(np.all(np.isfinite(np.asarray(p, dtype=np.float64))) for p in polys):
            raise ValueError("polygon with non-finite coordinates")
        rles = mask_utils.frPyObjects(polys, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segm, dict) and "counts" in segm:
        if list(segm.get("size", [])) != [height, width]:
            raise ValueError(f"RLE size {segm.get('size')} != image size {[height, width]}")
        rle = mask_utils.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
    else:
        raise ValueError("unknown segmentation format")
    return mask_utils.decode(rle).astype(np.uint8)


def iter_coco(
    annotations_path: str,
    counter: SkipCounter | None = None,
    include_crowd: bool = False,
    with_masks: bool = True,
    min_area: float = 1.0,
) -> Iterator[ImageRecord]:
    """Yield one ImageRecord per image with its valid, non-crowd instances.

    Skipped and counted (in `counter`): crowd annotations, zero/negative-area boxes, boxes entirely outside
    the image, broken polygons/RLE, empty masks, unknown category or image ids.
    """
    counter = counter if counter is not None else SkipCounter()
    data = load_coco_json(annotations_path)
    cat_ids = {c["id"] for c in data["categories"]}
    images = {im["id"]: im for im in data["images"]}
    by_image: dict[int, list[dict]] = collections.defaultdict(list)
    for ann in data["annotations"]:
        if ann.get("image_id") not in images:
            counter.skip("unknown_image_id", str(ann.get("id")))
            continue
        by_image[ann["image_id"]].append(ann)
    for image_id in sorted(images):
        im = images[image_id]
        h, w = int(im["height"]), int(im["width"])
        rec = ImageRecord(image_id=image_id, file_name=im["file_name"], height=h, width=w)
        for ann in by_image.get(image_id, []):
            aid = ann.get("id", -1)
            if ann.get("iscrowd", 0) and not include_crowd:
                counter.skip("crowd", str(aid))
                continue
            if ann.get("category_id") not in cat_ids:
                counter.skip("unknown_category", str(aid))
                continue
            bbox = np.asarray(ann.get("bbox", [0, 0, 0, 0]), dtype=np.float64)
            if bbox.shape != (4,) or not np.all(np.isfinite(bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
                counter.skip("zero_area_box", str(aid))
                continue
            x1, y1 = max(bbox[0], 0.0), max(bbox[1], 0.0)
            x2, y2 = min(bbox[0] + bbox[2], w), min(bbox[1] + bbox[3], h)
            if x2 - x1 < min_area**0.5 or y2 - y1 < min_area**0.5:
                counter.skip("box_outside_image", str(aid))
                continue
            mask = np.zeros((0, 0), np.uint8)
            if with_masks:
                try:
                    with contextlib.redirect_stderr(io.StringIO()):
                        mask = decode_segmentation(ann.get("segmentation"), h, w)
                except (ValueError, TypeError, KeyError) as e:
                    counter.skip("broken_segmentation", f"{aid}: {e}")
                    continue
                if mask.sum() < min_area:
                    counter.skip("empty_mask", str(aid))
                    continue
            rec.instances.append(Instance(int(ann["category_id"]), np.array([x1, y1, x2, y2]), mask, int(aid)))
        yield rec


def category_ids(annotations_path: str) -> tuple[int, ...]:
    return tuple(sorted(c["id"] for c in load_coco_json(annotations_path)["categories"]))


def image_path(image_dir: str, rec: ImageRecord) -> str:
    return os.path.join(image_dir, rec.file_name)
