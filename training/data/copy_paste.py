"""Copy-paste augmentation (Ghiasi et al., CVPR 2021), offline: real instances pasted onto real backgrounds.

Each output image is a real background image (with its own annotated instances) onto which 1..k real
instance cut-outs from other images are pasted, each with a random scale, horizontal flip and position.
Pasted objects may overlap each other and the background's objects: every mask below a pasted object loses
the pixels that got covered, and an instance that keeps too little of itself (`min_visible`) is dropped, so
the labels stay exactly what is visible. Alpha edges are feathered by one pixel to avoid the sharp seams a
model could learn to look for.

Options for more variety, all off by default (the defaults reproduce the composites made before they
existed, byte for byte): a wider, log-uniform scale range with objects allowed to run past the image border
(cropped by it, as real photos cut objects), small rotations, per-cut-out photometric jitter (brightness,
contrast, saturation, hue: a pasted object no longer carries its source photo's colour statistics), a
Gaussian-blurred paste edge of random width (the paper's blending; the label stays the hard mask), and a
class-balanced choice of cut-outs (repeat factors over the categories of a named cut-out source).

Done offline (NumPy/OpenCV, deterministic by seed) so the TFRecord pipeline and its TPU-friendly static
shapes stay unchanged, and the same composites can be inspected and reused.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import os
from dataclasses import dataclass, fields
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from shapemask_ros.datasets.coco import SkipCounter, image_path, iter_coco
from shapemask_ros.utils.io import atomic_write_text
from shapemask_training.data.repeat_factor import repeat_factors

log = logging.getLogger(__name__)


@dataclass
class CopyPasteConfig:
    """How composites are made (defaults from the copy-paste paper's large-scale jitter, milder).

    The variety options after `seed` are off by default; off, the composites are those made before they
    existed (same random draws, same pixels).
    """

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
    # scale drawn log-uniformly in [scale_min, scale_max] (as many small as large objects per octave),
    # instead of uniformly
    scale_log: bool = False
    # > 0: a pasted object keeps its aspect and may be moved past the image border (which crops it) by up to
    # this fraction of its height/width, beyond what an object larger than the image loses anyway; 0: objects
    # stay inside, squashed to fit if larger than the image
    max_outside: float = 0.0
    rotate_max: float = 0.0  # degrees; each cut-out is rotated by U(-rotate_max, rotate_max)
    # photometric jitter of each cut-out (its pixels only): brightness and contrast factors U(1 - x, 1 + x),
    # saturation factor U(1 - x, 1 + x), hue shift U(-x, x) of a full turn
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    # 0: the paste's alpha is the hard mask feathered by a 3x3 Gaussian; > 0: blurred with sigma
    # U(0, edge_blur_max) px (the paper's blending), the object's colours carried into the blurred rim (not
    # its source photo's background); the annotation stays the hard mask
    edge_blur_max: float = 0.0
    # > 0: cut-outs are chosen within each source with repeat factors max(1, sqrt(t / f(c))), f(c) the
    # fraction of that source's cut-outs in category c (a class-agnostic source is unaffected); 0: uniformly
    cutout_repeat_threshold: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not 0 <= self.max_outside < 1:
            raise ValueError(f"max_outside must be in [0, 1), got {self.max_outside}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
        for name in ("rotate_max", "edge_blur_max", "cutout_repeat_threshold"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def photometric(self) -> bool:
        return bool(self.brightness or self.contrast or self.saturation or self.hue)


@dataclass
class Cutout:
    rgb: np.ndarray  # [h, w, 3] uint8, the instance's box
    alpha: np.ndarray  # [h, w] uint8 {0, 1}
    category_id: int = 0  # the source annotation's category


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
            out.append(Cutout(rgb[y1:y2, x1:x2].copy(), m[y1:y2, x1:x2].copy(), inst.category_id))
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


def _rotate(rgb: np.ndarray, alpha: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate a cut-out about its centre on a canvas that holds all of it, cropped to the rotated object.
    Colour and alpha go through the same warp, so the mask stays on the pixels it labels."""
    h, w = alpha.shape
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    ow, oh = math.ceil(w * cos + h * sin), math.ceil(w * sin + h * cos)
    m[0, 2] += (ow - w) / 2
    m[1, 2] += (oh - h) / 2
    # colour replicated past the box (no black rim blended in); alpha is 0 there
    rgb = cv2.warpAffine(
        np.ascontiguousarray(rgb), m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(
        np.ascontiguousarray(alpha), m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    ys, xs = np.nonzero(alpha >= 0.5)
    if ys.size == 0:
        return rgb, alpha
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return rgb[y1:y2, x1:x2], alpha[y1:y2, x1:x2]


_LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 grey level of RGB


def _photometric(rgb: np.ndarray, hard: np.ndarray, rng: np.random.Generator, cfg: CopyPasteConfig) -> np.ndarray:
    """Brightness, contrast, saturation and hue of one cut-out, each factor drawn when its option is on;
    contrast pivots on the object's own mean grey level (`hard` marks the object's pixels)."""
    x = rgb.astype(np.float32)
    if cfg.brightness:
        x *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        grey = x @ _LUMA
        mean = float(grey[hard].mean()) if hard.any() else float(grey.mean())
        x = (x - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.saturation:
        grey = (x @ _LUMA)[..., None]
        x = (x - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
    if cfg.hue:
        hsv = cv2.cvtColor(np.clip(x, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)  # float: hue in degrees [0, 360)
        hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-cfg.hue, cfg.hue)) % 360.0
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _soft_alpha(hard: np.ndarray, sigma: float | None) -> tuple[np.ndarray, int]:
    """The blending alpha [h + 2 pad, w + 2 pad, 1] of a hard mask, and the pad around it (the blur's reach).
    sigma None: the fixed 3x3 feather, within the mask's box (as composites were always made)."""
    if sigma is None:
        return cv2.GaussianBlur(hard.astype(np.float32), (3, 3), 0)[..., None], 0
    pad = math.ceil(3 * sigma)
    padded = np.pad(hard, pad).astype(np.float32)
    if pad == 0:
        return padded[..., None], 0
    return cv2.GaussianBlur(padded, (2 * pad + 1, 2 * pad + 1), sigma)[..., None], pad


def _colours_outward(rgb: np.ndarray, hard: np.ndarray, sigma: float) -> np.ndarray:
    """The object's own colours carried past its outline (normalised convolution), so a blurred edge fades
    the object into the new background instead of showing a rim of its source photo's background."""
    if sigma <= 0:
        return rgb
    w = hard.astype(np.float32)
    reach = max(1.0, 2.0 * sigma)
    num = cv2.GaussianBlur(rgb.astype(np.float32) * w[..., None], (0, 0), reach)
    den = cv2.GaussianBlur(w, (0, 0), reach)[..., None]
    out = np.where(hard[..., None], rgb.astype(np.float32), num / np.maximum(den, 1e-6))
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _window(h: int, w: int, y0: int, x0: int, ph: int, pw: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(image slices, patch slices) of a [ph, pw] patch whose top-left is (y0, x0), clipped to [h, w]."""
    ya, xa, yb, xb = max(0, y0), max(0, x0), min(h, y0 + ph), min(w, x0 + pw)
    yb, xb = max(ya, yb), max(xa, xb)
    return (slice(ya, yb), slice(xa, xb)), (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))


def paste(
    background: np.ndarray,
    masks: list[np.ndarray],
    cutouts: list[Cutout],
    rng: np.random.Generator,
    cfg: CopyPasteConfig,
) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Paste cut-outs onto `background`. Returns (image, visible masks, original areas) for every instance
    (background instances first); masks are updated for occlusion, fully occluded ones are still returned
    (the caller filters with the original areas). A pasted object's original area is what of it lies inside
    the image (being cut by the border is not occlusion)."""
    img = background.astype(np.float32)
    h, w = img.shape[:2]
    masks = [m.astype(bool) for m in masks]
    areas = [int(m.sum()) for m in masks]
    for cut in cutouts:
        ch, cw = cut.alpha.shape
        if cfg.scale_log:
            frac = math.exp(rng.uniform(math.log(cfg.scale_min), math.log(cfg.scale_max)))
        else:
            frac = rng.uniform(cfg.scale_min, cfg.scale_max)
        side = frac * max(h, w)
        s = side / max(ch, cw)
        if cfg.max_outside > 0:  # aspect kept; the border crops what does not fit
            nh, nw = max(2, round(ch * s)), max(2, round(cw * s))
        else:
            nh, nw = max(2, min(h, round(ch * s))), max(2, min(w, round(cw * s)))
        rgb = cv2.resize(cut.rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(cut.alpha.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
        if rng.uniform() < 0.5:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        if cfg.rotate_max > 0:
            rgb, alpha = _rotate(rgb, alpha, rng.uniform(-cfg.rotate_max, cfg.rotate_max))
            nh, nw = alpha.shape
        hard = alpha >= 0.5
        if hard.sum() < cfg.min_area:
            continue
        if cfg.photometric:
            rgb = _photometric(rgb, hard, rng, cfg)
        sigma = rng.uniform(0, cfg.edge_blur_max) if cfg.edge_blur_max > 0 else None
        soft, pad = _soft_alpha(hard, sigma)
        if sigma is not None:
            rgb = _colours_outward(np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="edge"), np.pad(hard, pad), sigma)
        my, mx = int(cfg.max_outside * nh), int(cfg.max_outside * nw)
        y0 = int(rng.integers(min(0, h - nh) - my, max(0, h - nh) + my + 1))
        x0 = int(rng.integers(min(0, w - nw) - mx, max(0, w - nw) + mx + 1))
        dst, src = _window(h, w, y0, x0, nh, nw)
        full = np.zeros((h, w), bool)
        full[dst] = hard[src]
        if full.sum() < cfg.min_area:  # mostly past the border
            continue
        dst, src = _window(h, w, y0 - pad, x0 - pad, nh + 2 * pad, nw + 2 * pad)
        region = img[dst]
        img[dst] = region * (1 - soft[src]) + rgb[src].astype(np.float32) * soft[src]
        for m in masks:
            m &= ~full
        masks.append(full)
        areas.append(int(full.sum()))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), masks, areas


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _cutout_choice(pool: list[Cutout], threshold: float, name: str) -> np.ndarray | None:
    """Probabilities of choosing each cut-out of one source, proportional to its category's repeat factor
    (each cut-out is one instance of one category, so the LVIS formula applies to it as to an image);
    None (uniform, drawn as before) when the threshold is 0 or the source has one category (class-agnostic)."""
    if threshold <= 0 or len({c.category_id for c in pool}) < 2:
        return None
    r = repeat_factors([{c.category_id} for c in pool], threshold)
    p = r / r.sum()
    cats = np.asarray([c.category_id for c in pool])
    share = {int(c): float(p[cats == c].sum()) for c in np.unique(cats)}
    top = max(share, key=lambda c: share[c])
    log.info(
        "class-balanced cut-outs of %s (t=%g): %d categories; largest, id %d: %.1f %% of the cut-outs, chosen %.1f %%",
        name,
        threshold,
        len(share),
        top,
        100 * float(np.mean(cats == top)),
        100 * share[top],
    )
    return p


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
    pools, weights, names = [], [], []
    for ann, img_dir, weight in cutout_sources:
        pool = load_cutouts(ann, img_dir, cfg.min_source_area, counter)
        if pool:
            pools.append(pool)
            weights.append(float(weight))
            names.append(ann)
        log.info("%d cut-outs from %s", len(pool), ann)
    if not pools:
        raise ValueError("no usable cut-outs in the given sources")
    p = np.asarray(weights) / np.sum(weights)
    # class-balanced choice within each source: the chance of a cut-out is proportional to its repeat factor
    within = [_cutout_choice(pool, cfg.cutout_repeat_threshold, ann) for pool, ann in zip(pools, names, strict=True)]
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
            j = int(rng.choice(len(pools), p=p))
            pool, pw = pools[j], within[j]
            cuts.append(pool[int(rng.integers(len(pool))) if pw is None else int(rng.choice(len(pool), p=pw))])
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


# the variety options' flags: field -> help (defaults and types come from CopyPasteConfig)
_VARIETY_FLAGS = {
    "scale_min": "pasted object's longer side: smallest fraction of the background's longer side",
    "scale_max": "... largest fraction (> 1 needs --max-outside to keep the object's aspect)",
    "scale_log": "draw the scale log-uniformly instead of uniformly",
    "max_outside": "a pasted object may be moved past the image border (cropped by it) by up to this fraction "
    "of its height/width, aspect kept; 0 keeps objects inside (squashed if larger than the image)",
    "rotate_max": "rotate each cut-out by U(-R, R) degrees",
    "brightness": "cut-out brightness factor U(1 - B, 1 + B)",
    "contrast": "cut-out contrast factor U(1 - C, 1 + C) about its mean grey level",
    "saturation": "cut-out saturation factor U(1 - S, 1 + S)",
    "hue": "cut-out hue shift U(-H, H) of a full turn",
    "edge_blur_max": "blur each paste's alpha edge with sigma U(0, E) px (0: the fixed 3x3 feather)",
    "cutout_repeat_threshold": "class-balanced cut-outs: repeat factor max(1, sqrt(T / f(c))) per category "
    "within each source (needs a source with named categories); 0 = uniform",
}


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
    types = {f.name: f.type for f in fields(CopyPasteConfig)}
    for name, help_text in _VARIETY_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if types[name] in (bool, "bool"):
            p.add_argument(flag, action="store_true", help=help_text)
        else:
            p.add_argument(flag, type=float, default=getattr(d, name), help=help_text)


def _split_source(spec: str) -> tuple[str, str, float]:
    ann, _, rest = spec.partition("=")
    if not rest:
        raise SystemExit(f"expected ANN.json=IMAGE_DIR[:WEIGHT], got {spec!r}")
    img_dir, sep, weight = rest.rpartition(":")
    if sep and weight.replace(".", "", 1).isdigit():  # a plain non-negative number after the last ':'
        return ann, img_dir, float(weight)
    return ann, rest, 1.0


def run(args: argparse.Namespace) -> int:
    variety = {name: getattr(args, name) for name in _VARIETY_FLAGS}
    cfg = CopyPasteConfig(images=args.images, max_pastes=args.max_pastes, seed=args.seed, **variety)
    changed = {k: v for k, v in variety.items() if v != getattr(CopyPasteConfig(), k)}
    log.info("copy-paste options changed from the defaults: %s", changed or "none")
    cuts = [_split_source(s) for s in args.cutouts]
    bgs = [_split_source(s)[:2] for s in args.backgrounds]
    coco = make_composites(cuts, bgs, args.out, cfg)
    print(f"wrote {args.out}/annotations.json: {len(coco['images'])} images, {len(coco['annotations'])} instances")
    return 0
