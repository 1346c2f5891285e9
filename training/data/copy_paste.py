"""Copy-paste augmentation (Ghiasi et al., CVPR 2021), offline: real instances pasted onto real backgrounds.

Each output image is a real background image (with its own annotated instances) onto which 1..k real
instance cut-outs from other images are pasted, each with a random scale, horizontal flip and position.
Pasted objects may overlap each other and the background's objects: every mask below a pasted object loses
the pixels that got covered, and an instance that keeps too little of itself (`min_visible`) is dropped, so
the labels stay exactly what is visible. Alpha edges are feathered by one pixel to avoid the sharp seams a
model could learn to look for.

Done offline (NumPy/OpenCV, deterministic by seed) so the TFRecord pipeline and its TPU-friendly static
shapes stay unchanged, and the same composites can be inspected and reused.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from shapemask_ros.datasets.coco import SkipCounter, image_path, iter_coco
from shapemask_ros.utils.io import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class CopyPasteConfig:
    """How composites are made (defaults from the copy-paste paper's large-scale jitter, milder)."""

    images: int = 1000  # composites to write
    min_pastes: int = 1
    max_pastes: int = 6
    scale_min: float = 0.15  # pasted object's longer side, as a fraction of the background's longer side
    scale_max: float = 0.6
    min_visible: float = 0.3  # drop an instance left with less than this fraction of its area
    min_area: int = 64  # px; smaller remains are dropped
    max_side: int = 640  # backgrounds are resized so their longer side is at most this
    min_source_area: int = 400  # px; smaller source instances are not used as cut-outs
    seed: int = 0


@dataclass
class Cutout:
    rgb: np.ndarray  # [h, w, 3] uint8, the instance's box
    alpha: np.ndarray  # [h, w] uint8 {0, 1}


def load_cutouts(annotations: str, image_dir: str, min_area: int, counter: SkipCounter) -> list[Cutout]:
    """Every non-crowd instance with at least `min_area` mask pixels, cropped to its mask's box."""
    out = []
    for rec in iter_coco(annotations, counter):
        if not rec.instances:
            continue
        img = cv2.imread(image_path(image_dir, rec), cv2.IMREAD_COLOR)
        if img is None:
            counter.skip("unreadable_image", rec.file_name)
            continue
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        for inst in rec.instances:
            m = inst.mask
            if m.shape != rgb.shape[:2] or int(m.sum()) < min_area:
                counter["small_or_mismatched_cutout"] += 1
                continue
            ys, xs = np.nonzero(m)
            y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            out.append(Cutout(rgb[y1:y2, x1:x2].copy(), m[y1:y2, x1:x2].copy()))
    return out


def load_backgrounds(annotations: str, image_dir: str, counter: SkipCounter) -> list[tuple[str, list[np.ndarray]]]:
    """(image path, list of the image's instance masks) for every readable image."""
    out = []
    for rec in iter_coco(annotations, counter):
        out.append((image_path(image_dir, rec), [inst.mask for inst in rec.instances]))
    return out


def _resize_to(img: np.ndarray, masks: list[np.ndarray], max_side: int):
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s >= 1.0:
        return img, masks
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    masks = [cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) for m in masks]
    return img, masks


def paste(
    background: np.ndarray,
    masks: list[np.ndarray],
    cutouts: list[Cutout],
    rng: np.random.Generator,
    cfg: CopyPasteConfig,
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Paste cut-outs onto `background`. Returns (image, visible masks, original areas) for every instance
    (background instances first); masks are updated for occlusion, fully occluded ones are still returned
    (the caller filters with the original areas)."""
    img = background.astype(np.float32)
    h, w = img.shape[:2]
    masks = [m.astype(bool) for m in masks]
    areas = [int(m.sum()) for m in masks]
    for cut in cutouts:
        ch, cw = cut.alpha.shape
        side = rng.uniform(cfg.scale_min, cfg.scale_max) * max(h, w)
        s = side / max(ch, cw)
        nh, nw = max(2, min(h, round(ch * s))), max(2, min(w, round(cw * s)))
        rgb = cv2.resize(cut.rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(cut.alpha.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
        if rng.uniform() < 0.5:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        hard = alpha >= 0.5
        if hard.sum() < cfg.min_area:
            continue
        soft = cv2.GaussianBlur(hard.astype(np.float32), (3, 3), 0)[..., None]
        y0 = int(rng.integers(0, h - nh + 1))
        x0 = int(rng.integers(0, w - nw + 1))
        region = img[y0 : y0 + nh, x0 : x0 + nw]
        img[y0 : y0 + nh, x0 : x0 + nw] = region * (1 - soft) + rgb.astype(np.float32) * soft
        full = np.zeros((h, w), bool)
        full[y0 : y0 + nh, x0 : x0 + nw] = hard
        for m in masks:
            m &= ~full
        masks.append(full)
        areas.append(int(full.sum()))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), masks, areas


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def make_composites(
    cutout_sources: list[tuple[str, str, float]],
    background_sources: list[tuple[str, str]],
    out_dir: str,
    cfg: CopyPasteConfig,
    progress: bool = True,
) -> dict:
    """Write `cfg.images` composites (JPEG) + `annotations.json` (one category 'object', RLE masks).

    cutout_sources: (annotations, image dir, sampling weight) — weights balance the sources so a large
    in-domain set does not crowd out the diverse one. background_sources: (annotations, image dir).
    """
    counter = SkipCounter()
    pools, weights = [], []
    for ann, img_dir, weight in cutout_sources:
        pool = load_cutouts(ann, img_dir, cfg.min_source_area, counter)
        if pool:
            pools.append(pool)
            weights.append(float(weight))
        log.info("%d cut-outs from %s", len(pool), ann)
    if not pools:
        raise ValueError("no usable cut-outs in the given sources")
    p = np.asarray(weights) / np.sum(weights)
    backgrounds = [bg for ann, img_dir in background_sources for bg in load_backgrounds(ann, img_dir, counter)]
    if not backgrounds:
        raise ValueError("no background images")
    rng = np.random.default_rng(cfg.seed)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    stats: collections.Counter[str] = collections.Counter()
    for i in tqdm(range(cfg.images), disable=not progress, desc="copy-paste", unit="img"):
        path, masks = backgrounds[int(rng.integers(len(backgrounds)))]
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            counter.skip("unreadable_background", path)
            continue
        bg, masks = _resize_to(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), masks, cfg.max_side)
        k = int(rng.integers(cfg.min_pastes, cfg.max_pastes + 1))
        cuts = []
        for _ in range(k):
            pool = pools[int(rng.choice(len(pools), p=p))]
            cuts.append(pool[int(rng.integers(len(pool)))])
        img, vis, areas = paste(bg, masks, cuts, rng, cfg)
        name = f"images/cp_{cfg.seed}_{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise OSError(f"could not encode {name}")
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(buf.tobytes())
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": name, "height": img.shape[0], "width": img.shape[1]})
        for m, a in zip(vis, areas, strict=True):
            area = int(m.sum())
            if area < cfg.min_area or area < cfg.min_visible * max(a, 1):
                stats["dropped_occluded"] += 1
                continue
            ys, xs = np.nonzero(m)
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": _rle(m),
                    "bbox": box,
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
        stats["pasted"] += len(cuts)
    coco = {
        "info": {"description": f"shapemask copy-paste seed {cfg.seed}"},
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }
    atomic_write_text(os.path.join(out_dir, "annotations.json"), json.dumps(coco))
    log.info("copy-paste: %d images, %d instances, %s; skipped %s", len(images), len(anns), dict(stats), dict(counter))
    return coco


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cutouts",
        action="append",
        required=True,
        metavar="ANN.json=IMAGE_DIR[:WEIGHT]",
        help="instances to cut out (repeatable); WEIGHT balances sources (default 1)",
    )
    p.add_argument(
        "--backgrounds",
        action="append",
        required=True,
        metavar="ANN.json=IMAGE_DIR",
        help="background images with their own annotations (repeatable)",
    )
    p.add_argument("--out", required=True, help="output directory (images/ + annotations.json)")
    d = CopyPasteConfig()
    p.add_argument("--images", type=int, default=d.images)
    p.add_argument("--max-pastes", type=int, default=d.max_pastes)
    p.add_argument("--seed", type=int, default=d.seed)


def _split_source(spec: str) -> tuple[str, str, float]:
    ann, _, rest = spec.partition("=")
    if not rest:
        raise SystemExit(f"expected ANN.json=IMAGE_DIR[:WEIGHT], got {spec!r}")
    img_dir, sep, weight = rest.rpartition(":")
    if sep and weight.replace(".", "", 1).isdigit():  # a plain non-negative number after the last ':'
        return ann, img_dir, float(weight)
    return ann, rest, 1.0


def run(args: argparse.Namespace) -> int:
    cfg = CopyPasteConfig(images=args.images, max_pastes=args.max_pastes, seed=args.seed)
    cuts = [_split_source(s) for s in args.cutouts]
    bgs = [_split_source(s)[:2] for s in args.backgrounds]
    coco = make_composites(cuts, bgs, args.out, cfg)
    print(f"wrote {args.out}/annotations.json: {len(coco['images'])} images, {len(coco['annotations'])} instances")
    return 0
