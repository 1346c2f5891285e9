"""Cached preparation of the synthetic data, TFRecords and k-means shape priors under a work directory."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapemask_ros.utils.io import atomic_write_text, exists, read_text
from shapemask_training.experiments.budgets import Budget
from shapemask_training.experiments.hashing import digest, file_digest

# Synthetic data seeds (train / validation).
TRAIN_DATA_SEED = 11
VAL_DATA_SEED = 12


@dataclass(frozen=True)
class SyntheticData:
    """Paths of one prepared synthetic benchmark (train + validation COCO sets, train TFRecords)."""

    root: str
    train_json: str
    train_image_dir: str
    val_json: str
    val_image_dir: str
    train_pattern: str
    category_ids: tuple[int, ...]


def prepare_data(work_dir: str, budget: Budget, progress: bool = False) -> SyntheticData:
    """Generate (or reuse) the budget's synthetic train / val sets and train TFRecords under `work_dir`.

    The directory name hashes the generation parameters and the generator's source, so a changed
    generator or budget never reuses stale data. Each artefact's completion marker is written last
    (annotations.json by `generate_dataset`, the -meta.json by `write_tfrecords`).
    """
    from shapemask_ros.datasets import synthetic
    from shapemask_training.data.tfrecords import write_tfrecords

    key = digest(
        {
            "size": budget.image_size,
            "train": budget.train_images,
            "val": budget.val_images,
            "objects": budget.objects_per_image,
            "seeds": [TRAIN_DATA_SEED, VAL_DATA_SEED],
            "generator": file_digest(Path(synthetic.__file__)),
        },
        8,
    )
    root = os.path.join(work_dir, "data", f"{budget.image_size}px-{budget.train_images}-{key}")
    sets = {"train": (budget.train_images, TRAIN_DATA_SEED), "val": (budget.val_images, VAL_DATA_SEED)}
    for split, (count, seed) in sets.items():
        if not exists(os.path.join(root, split, "annotations.json")):
            synthetic.generate_dataset(
                os.path.join(root, split),
                count,
                budget.image_size,
                budget.image_size,
                seed,
                max_instances=budget.objects_per_image,
                progress=progress,
            )
    prefix = os.path.join(root, "tfrecords", "train")
    shards = max(1, min(8, budget.train_images // 100))
    if not exists(f"{prefix}-meta.json"):
        write_tfrecords(
            os.path.join(root, "train", "annotations.json"),
            os.path.join(root, "train", "images"),
            prefix,
            num_shards=shards,
            progress=progress,
        )
    meta = json.loads(read_text(f"{prefix}-meta.json"))
    return SyntheticData(
        root=root,
        train_json=os.path.join(root, "train", "annotations.json"),
        train_image_dir=os.path.join(root, "train", "images"),
        val_json=os.path.join(root, "val", "annotations.json"),
        val_image_dir=os.path.join(root, "val", "images"),
        train_pattern=f"{prefix}-*.tfrecord",
        category_ids=tuple(int(c) for c in meta["category_ids"]),
    )


def subsample_image_ids(image_ids: Sequence[int], fraction: float) -> list[int]:
    """The image ids the training pipeline keeps at `subsample_fraction` (same id-hash rule as the parser)."""
    from shapemask_training.data.parser import subsample_keep

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    ids = [int(i) for i in image_ids]
    if fraction == 1.0 or not ids:
        return ids
    keep = subsample_keep(np.asarray(ids, np.int64), fraction).numpy()
    return [i for i, k in zip(ids, keep, strict=True) if k]


def priors_path(
    work_dir: str, data: SyntheticData, budget: Budget, category_ids: Sequence[int] | None, fraction: float
) -> str:
    """Where `prepare_priors` keeps the priors for these parameters (a hash of them)."""
    cats = sorted(int(c) for c in (category_ids if category_ids is not None else data.category_ids))
    key = digest(
        {"data": data.root, "cats": cats, "fraction": fraction, "k": budget.num_priors, "seed": budget.model_seed}
    )
    return os.path.join(work_dir, "priors", f"priors-{key}.npy")


def prepare_priors(
    work_dir: str,
    data: SyntheticData,
    budget: Budget,
    category_ids: Sequence[int] | None = None,
    fraction: float = 1.0,
    progress: bool = False,
) -> str:
    """k-means class-agnostic priors from the training masks of `category_ids` (None = all) on the images a
    `fraction` run trains on; cached by parameters. Returns the .npy path."""
    from shapemask_ros.datasets.coco import load_coco_json
    from shapemask_training.priors import compute_priors, save_priors

    cats = sorted(int(c) for c in (category_ids if category_ids is not None else data.category_ids))
    path = priors_path(work_dir, data, budget, cats, fraction)
    if exists(path) and exists(f"{path}.json"):
        return path
    key = Path(path).stem
    annotations = data.train_json
    kept = None
    if fraction < 1.0:
        coco = load_coco_json(data.train_json)
        kept = set(subsample_image_ids([im["id"] for im in coco["images"]], fraction))
        if not kept:
            raise ValueError(f"subsample fraction {fraction} keeps no training image of {data.train_json}")
        coco["images"] = [im for im in coco["images"] if im["id"] in kept]
        coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
        annotations = os.path.join(work_dir, "priors", f"{key}-train-subset.json")
        atomic_write_text(annotations, json.dumps(coco))
    priors, info = compute_priors(
        annotations, k=budget.num_priors, seed=budget.model_seed, category_ids=cats, progress=progress
    )
    info.update(annotations=annotations, fraction=fraction, images=None if kept is None else len(kept))
    save_priors(path, priors, info)
    return path
