"""Repeat-factor sampling (LVIS, Gupta et al. 2019): images with rare categories are repeated.

For each category c, f(c) is the fraction of training images that contain c and r(c) = max(1, sqrt(t / f(c)))
for a threshold t; an image is repeated r(I) = max over its categories of r(c) times (1 if it has none).
Done offline on a COCO dict: each image appears floor(r(I)) times plus once more with probability
r(I) - floor(r(I)) (seeded), so its expected count is r(I). The copies are new image records (new ids, same
file) with their annotations copied, appended after the originals, so the training pipeline needs no
sampler of its own. It must run on the *named* categories, before a class-agnostic import collapses them.

The same formula balances single instances (copy-paste cut-outs): `repeat_factors` on one-category "images".
"""

from __future__ import annotations

import collections
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def category_fractions(image_categories: Sequence[set[Hashable]]) -> dict[Hashable, float]:
    """f(c): the fraction of the images (every entry, also those without categories) that contain c."""
    if not image_categories:
        return {}
    counts = collections.Counter(c for cats in image_categories for c in cats)
    return {c: n / len(image_categories) for c, n in counts.items()}


def category_repeat_factors(fractions: dict[Hashable, float], threshold: float) -> dict[Hashable, float]:
    """r(c) = max(1, sqrt(t / f(c)))."""
    if threshold < 0:
        raise ValueError(f"repeat-factor threshold must be >= 0, got {threshold}")
    return {c: max(1.0, math.sqrt(threshold / f)) for c, f in fractions.items()}


def repeat_factors(image_categories: Sequence[set[Hashable]], threshold: float) -> np.ndarray:
    """r(I) for every image: the largest r(c) of its categories, 1 for an image without any."""
    rc = category_repeat_factors(category_fractions(image_categories), threshold)
    return np.asarray([max((rc[c] for c in cats), default=1.0) for cats in image_categories], np.float64)


def stochastic_counts(factors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """floor(r) + Bernoulli(r - floor(r)) per entry: integer counts whose expectation is r (one draw each)."""
    base = np.floor(factors)
    return (base + (rng.uniform(size=len(factors)) < factors - base)).astype(np.int64)


@dataclass
class RepeatSummary:
    """What repeat-factor sampling did to one COCO dict."""

    threshold: float
    seed: int
    images_before: int
    images_after: int
    images_repeated: int  # images with at least one copy
    # category name -> {"fraction": f(c), "repeat": r(c), "images_before": n, "images_after": n'}
    categories: dict[str, dict[str, float]] = field(default_factory=dict)

    def lines(self, top: int = 5) -> list[str]:
        """A short human-readable account: totals, then the most and least repeated categories."""
        out = [
            f"repeat-factor sampling (t={self.threshold:g}, seed {self.seed}): {self.images_before} -> "
            f"{self.images_after} images, {self.images_repeated} images repeated at least once"
        ]
        rows = sorted(self.categories.items(), key=lambda kv: (-kv[1]["repeat"], kv[0]))
        shown = rows if len(rows) <= 2 * top else rows[:top] + rows[-top:]
        for name, s in shown:
            out.append(
                f"  {name}: f={s['fraction']:.3f} r={s['repeat']:.2f} images {int(s['images_before'])} -> "
                f"{int(s['images_after'])}"
            )
        if len(rows) > 2 * top:
            out.insert(1 + top, f"  ... ({len(rows) - 2 * top} more)")
        return out


def repeat_factor_sample(coco: dict, threshold: float, seed: int) -> tuple[dict, RepeatSummary]:
    """Repeat the images of a COCO dict by their repeat factors; returns (new dict, summary).

    Categories are those of the non-crowd annotations (the instances training sees). The originals keep
    their records and ids; copies get fresh ids after the largest (image and annotation), `repeat_of` the
    original's id, and copies of the original's annotations. Threshold 0 leaves the dict unchanged.
    """
    images = sorted(coco["images"], key=lambda im: im["id"])
    names = {c["id"]: str(c.get("name", c["id"])) for c in coco["categories"]}
    anns_by_image: dict[Any, list[dict]] = collections.defaultdict(list)
    for a in coco["annotations"]:
        anns_by_image[a["image_id"]].append(a)
    cats = [{a["category_id"] for a in anns_by_image[im["id"]] if not a.get("iscrowd", 0)} for im in images]
    fractions = category_fractions(cats)
    rc = category_repeat_factors(fractions, threshold)
    factors = np.asarray([max((rc[c] for c in cs), default=1.0) for cs in cats], np.float64)
    counts = stochastic_counts(factors, np.random.default_rng(seed))
    next_image = max((im["id"] for im in images), default=0) + 1
    next_ann = max((a["id"] for a in coco["annotations"]), default=0) + 1
    new_images, new_anns = list(coco["images"]), list(coco["annotations"])
    for im, n in zip(images, counts, strict=True):
        for _ in range(int(n) - 1):
            new_images.append({**im, "id": next_image, "repeat_of": im["id"]})
            for a in anns_by_image[im["id"]]:
                new_anns.append({**a, "id": next_ann, "image_id": next_image})
                next_ann += 1
            next_image += 1
    per_cat = {}
    for c in sorted(fractions, key=lambda c: names.get(c, str(c))):
        held = [n for cs, n in zip(cats, counts, strict=True) if c in cs]
        per_cat[names.get(c, str(c))] = {
            "fraction": fractions[c],
            "repeat": rc[c],
            "images_before": float(len(held)),
            "images_after": float(sum(held)),
        }
    summary = RepeatSummary(
        threshold=threshold,
        seed=seed,
        images_before=len(images),
        images_after=len(new_images),
        images_repeated=int(np.sum(counts > 1)),
        categories=per_cat,
    )
    return {**coco, "images": new_images, "annotations": new_anns}, summary
