"""Shape priors: k-means over training masks, each cropped to its tight box and resampled to 32 x 32.

The priors are an array [C, K, n, n] float32 of soft masks in [0, 1] in the TIGHT-box frame (the mask branch
warps them from the tight box B into the outer box O). C = 1 for class-agnostic priors; for class-specific
priors there is one row per dataset category in sorted category-id order, i.e. the contiguous class index.

Resampling: `shapemask_ros.ops.sampling.crop_and_sample` -- the project's one sampling convention (bin-centre
grid, bilinear, pixel centres at +0.5) that the model's ROI sampling and the mask targets also use, so a prior
and a target of the same mask line up exactly. Large masks are supersampled (s x s bilinear samples per bin,
averaged) so that the 32 x 32 value is the bin's mean coverage instead of an aliased point sample; the mean of
the sub-bin centres is the bin centre, so the frame is unchanged. (cv2.resize INTER_AREA would average too,
but only for integer boxes being shrunk; it switches to a different rule when a box is smaller than 32 px.)

The tight box is taken from the decoded mask itself (integer pixel edges), not from the annotation's bbox.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from tqdm import tqdm

from shapemask_ros.config.model_config import MaskConfig
from shapemask_ros.datasets.category_splits import mask_split_ids
from shapemask_ros.datasets.coco import SkipCounter, iter_coco
from shapemask_ros.datasets.coco import category_ids as dataset_category_ids
from shapemask_ros.ops.sampling import crop_and_sample
from shapemask_ros.utils.io import atomic_write_bytes, atomic_write_text, load_npy, save_npy

log = logging.getLogger(__name__)

_MAX_SUPERSAMPLE = 8


def mask_to_prior_frame(mask: np.ndarray, crop_size: int = 32) -> np.ndarray:
    """Full-image {0, 1} mask -> [crop_size, crop_size] float32 coverage in its tight box frame."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("empty mask has no tight box")
    x1, x2, y1, y2 = int(cols[0]), int(cols[-1]) + 1, int(rows[0]), int(rows[-1]) + 1
    s = int(np.clip(math.ceil(max(x2 - x1, y2 - y1) / crop_size), 1, _MAX_SUPERSAMPLE))
    # A 1-px margin keeps every bilinear neighbour, so sampling the crop equals sampling the full image
    # (border clamping included) while touching only the object's pixels.
    h, w = mask.shape
    cx1, cy1, cx2, cy2 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2 + 1, w), min(y2 + 1, h)
    sub = mask[cy1:cy2, cx1:cx2].astype(np.float32)
    box = np.array([x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1], np.float64)
    fine = crop_and_sample(sub, box, crop_size * s)
    return fine.reshape(crop_size, s, crop_size, s).mean(axis=(1, 3)).astype(np.float32)


class _Reservoir:
    """Keeps a uniform random sample of at most `cap` items (all of them when cap is None)."""

    def __init__(self, cap: int | None, rng: np.random.Generator) -> None:
        self.cap, self.rng, self.seen = cap, rng, 0
        self.items: list[np.ndarray] = []

    def add(self, item: np.ndarray) -> None:
        self.seen += 1
        if self.cap is None or len(self.items) < self.cap:
            self.items.append(item)
        else:
            j = int(self.rng.integers(0, self.seen))
            if j < self.cap:
                self.items[j] = item


def _kmeans(x: np.ndarray, k: int, seed: int, n_init: int) -> tuple[np.ndarray, int, float]:
    """k-means centres [k, D] sorted by cluster size (largest first); fewer distinct data -> fewer clusters,
    rows repeated to k. Returns (centres, distinct clusters, inertia)."""
    k_eff = min(k, len(x))
    if len(x) <= 4 * k:  # only then can duplicates leave fewer distinct points than clusters
        k_eff = min(k_eff, len(np.unique(x, axis=0)))
    km = KMeans(n_clusters=k_eff, n_init=n_init, random_state=seed).fit(x)
    sizes = np.bincount(km.labels_, minlength=k_eff)
    centres = km.cluster_centers_[np.argsort(-sizes, kind="stable")]
    return np.resize(centres, (k, x.shape[1])), k_eff, float(km.inertia_)


def compute_priors(
    annotations_path: str,
    k: int = 100,
    class_specific: bool = False,
    crop_size: int = 32,
    seed: int = 0,
    category_ids: Iterable[int] | None = None,
    progress: bool = True,
    n_init: int = 4,
    max_masks: int | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """k-means shape priors from a COCO instances file -> (priors [C, K, n, n] float32 in [0, 1], info).

    Instances come from `iter_coco` (non-crowd, validated; skips are counted in info["skipped"]).
    category_ids: only masks of these categories are clustered (e.g. the seen split of a partial-supervision
      study); None = all. Class-agnostic: C = 1. Class-specific: one row per dataset category (sorted ids, the
      contiguous class index); a category with fewer distinct masks than K gets that many distinct priors
      (rows repeated up to K); a category without masks (or outside category_ids) gets the uniform box prior
      (all ones) and is listed in info["empty_category_ids"].
    max_masks: keep a uniform random sample of at most this many masks per row (bounds memory on full COCO).
    Centres are ordered by cluster size, most common shape first.
    """
    if k < 1 or crop_size < 1:
        raise ValueError(f"k and crop_size must be >= 1, got k={k}, crop_size={crop_size}")
    all_ids = dataset_category_ids(annotations_path)
    used = set(all_ids) if category_ids is None else {int(c) for c in category_ids}
    unknown = used - set(all_ids)
    if unknown:
        raise ValueError(f"category ids not in {annotations_path}: {sorted(unknown)}")
    rows: list[int] = list(all_ids) if class_specific else [0]
    row_of = {c: (rows.index(c) if class_specific else 0) for c in used}
    rng = np.random.default_rng(seed)
    samples = [_Reservoir(max_masks, rng) for _ in rows]
    counter = SkipCounter()
    with tqdm(desc="priors: masks", unit="mask", disable=not progress) as bar:
        for rec in iter_coco(annotations_path, counter):
            for inst in rec.instances:
                if inst.category_id in row_of:
                    samples[row_of[inst.category_id]].add(mask_to_prior_frame(inst.mask, crop_size).ravel())
                    bar.update(1)

    priors = np.ones((len(rows), k, crop_size, crop_size), np.float32)
    k_eff, inertia, empty = [], [], []
    for r, res in enumerate(samples):
        if not res.items:
            k_eff.append(0)
            inertia.append(0.0)
            if class_specific:
                empty.append(rows[r])
            continue
        centres, n_clusters, err = _kmeans(np.stack(res.items), k, seed, n_init)
        priors[r] = np.clip(centres, 0.0, 1.0).reshape(k, crop_size, crop_size)
        k_eff.append(n_clusters)
        inertia.append(err)
    num_masks = sum(res.seen for res in samples)
    if num_masks == 0:
        raise ValueError(f"{annotations_path}: no valid masks for categories {sorted(used)}")
    if empty:
        log.warning("%d categories without masks get the uniform box prior: %s", len(empty), empty)
    info: dict[str, Any] = {
        "k": int(k),
        "class_specific": bool(class_specific),
        "crop_size": int(crop_size),
        "seed": int(seed),
        "n_init": int(n_init),
        "category_ids": [int(c) for c in rows] if class_specific else sorted(int(c) for c in used),
        "counts": [int(res.seen) for res in samples],
        "clustered": [len(res.items) for res in samples],
        "k_effective": k_eff,
        "inertia": inertia,
        "empty_category_ids": empty,
        "num_masks": int(num_masks),
        "skipped": dict(counter),
    }
    return priors, info


def _validate(priors: np.ndarray, expected_shape: Sequence[int | None] | None, where: str) -> np.ndarray:
    if not isinstance(priors, np.ndarray) or not np.issubdtype(priors.dtype, np.floating):
        raise ValueError(f"{where}: priors must be a float array, got dtype {getattr(priors, 'dtype', None)}")
    if priors.ndim != 4 or priors.shape[2] != priors.shape[3] or 0 in priors.shape:
        raise ValueError(f"{where}: priors must have shape [C, K, n, n], got {priors.shape}")
    if expected_shape is not None:
        exp = tuple(expected_shape)
        if len(exp) != 4 or any(e is not None and e != s for e, s in zip(exp, priors.shape, strict=True)):
            raise ValueError(f"{where}: priors shape {priors.shape} does not match expected {exp}")
    if not np.all(np.isfinite(priors)):
        raise ValueError(f"{where}: priors contain NaN or inf")
    lo, hi = float(priors.min()), float(priors.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{where}: priors must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return np.clip(priors, 0.0, 1.0).astype(np.float32)


def save_priors(path: str, priors: np.ndarray, info: dict[str, Any]) -> None:
    """Write priors (.npy, atomically) and a JSON sidecar `path + '.json'` describing how they were made."""
    priors = _validate(np.asarray(priors), None, str(path))
    save_npy(path, priors)
    side = {"shape": list(priors.shape), **{k: v for k, v in info.items()}}
    atomic_write_text(f"{path}.json", json.dumps(side, indent=1, sort_keys=True))


def load_priors(path: str, expected_shape: Sequence[int | None] | None = None) -> np.ndarray:
    """Load and validate priors -> float32 [C, K, n, n] in [0, 1].

    expected_shape may use None as a wildcard, e.g. (1, None, 32, 32). Pickled/object arrays, non-float
    dtypes, wrong shapes, NaN/inf and values outside [0, 1] raise ValueError naming the file.
    """
    try:
        arr = load_npy(path)
    except ValueError as e:  # numpy's message for object arrays mentions allow_pickle
        raise ValueError(f"{path}: not a plain numeric .npy (pickled/object arrays are refused): {e}") from e
    return _validate(arr, expected_shape, str(path))


def plot_priors(
    priors: np.ndarray,
    path: str,
    max_classes: int = 8,
    class_ids: Sequence[int] | None = None,
    max_per_class: int = 100,
) -> None:
    """PNG grid of the priors (as the paper's Figure 3), written atomically.

    Class-agnostic (C = 1): a near-square grid of the K priors. Class-specific: one row per class (the first
    `max_classes`), up to `max_per_class` priors per row, labelled with `class_ids` when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    priors = _validate(np.asarray(priors), None, str(path))
    c, k = priors.shape[:2]
    k = min(k, max_per_class)
    if c == 1:
        cols = math.ceil(math.sqrt(k))
        nrows = math.ceil(k / cols)
        cells = [(i // cols, i % cols, priors[0, i]) for i in range(k)]
        labels: list[str] = []
    else:
        cols, nrows = k, min(c, max_classes)
        cells = [(r, j, priors[r, j]) for r in range(nrows) for j in range(k)]
        ids = list(class_ids) if class_ids is not None else list(range(c))
        labels = [str(ids[r]) for r in range(nrows)]
    fig = Figure(figsize=(0.6 * cols + 0.4, 0.6 * nrows + 0.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, j, img in cells:
        axes[r, j].imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    for r, text in enumerate(labels):
        axes[r, 0].set_axis_on()
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(text, rotation=0, ha="right", va="center", fontsize=7)
    left = 0.06 if labels else 0.01
    fig.subplots_adjust(left=left, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def add_priors_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of `shapemask priors` (defaults from shapemask_ros.config.model_config.MaskConfig)."""
    mc = MaskConfig()
    parser.add_argument("--annotations", required=True, help="COCO instances JSON (local or gs://)")
    parser.add_argument("--class-specific", action="store_true", help="one row of K priors per category")
    parser.add_argument(
        "--k", type=int, default=mc.num_priors, help="priors per row (paper: ~100 class-agnostic, ~20 class-specific)"
    )
    parser.add_argument("--crop-size", type=int, default=mc.crop_size)
    parser.add_argument(
        "--split", default="all", help="categories whose masks are clustered: all | voc | nonvoc | comma-separated ids"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-init", type=int, default=4, help="k-means restarts")
    parser.add_argument("--max-masks", type=int, default=None, help="random sample of masks per row")
    parser.add_argument("--out", required=True, help="output .npy (a .json sidecar is written next to it)")
    parser.add_argument("--picture", default=None, help="optional PNG grid of the priors")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run_priors(args: argparse.Namespace) -> int:
    """Run `shapemask priors` from parsed arguments; returns the exit code."""
    ids = mask_split_ids(args.split, dataset_category_ids(args.annotations))
    priors, info = compute_priors(
        args.annotations,
        k=args.k,
        class_specific=args.class_specific,
        crop_size=args.crop_size,
        seed=args.seed,
        category_ids=ids,
        progress=not args.no_progress,
        n_init=args.n_init,
        max_masks=args.max_masks,
    )
    info["annotations"] = args.annotations
    info["split"] = args.split
    save_priors(args.out, priors, info)
    if args.picture:
        plot_priors(priors, args.picture, class_ids=info["category_ids"] if args.class_specific else None)
    empty = info["empty_category_ids"]
    print(
        f"priors {tuple(priors.shape)} from {info['num_masks']} masks -> {args.out}"
        + (f" (+ {args.picture})" if args.picture else "")
        + (f"; {len(empty)} categories without masks get box priors" if empty else "")
    )
    return 0


__all__ = [
    "add_priors_args",
    "compute_priors",
    "load_priors",
    "mask_to_prior_frame",
    "plot_priors",
    "run_priors",
    "save_priors",
]
