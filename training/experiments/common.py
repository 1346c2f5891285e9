"""Shared machinery of the paper-reproduction studies.

- `Budget`: how big a study run is (tiny = CI miniature, short = quick evidence, full = the real run).
- The seen / novel split of the synthetic shape families, fixed once here (`SEEN_FAMILY_IDS`).
- Cached preparation of the synthetic data, TFRecords and k-means shape priors under a work directory.
- `run_variant`: build a variant's config, train it (cached by a hash of the resolved config, so studies
  that need the same model share it), evaluate it with pycocotools over the chosen box sources.
- Report helpers: provenance (command, commit, versions, machine), markdown tables, and `write_report`,
  which writes `<stem>.md`, `.json` and `.png` atomically.

Everything on disk goes through `shapemask_ros.utils.io` (atomic writes; gs:// works for the data side).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shapemask_ros.config import ExperimentConfig, load_config, to_dict
from shapemask_ros.utils.io import atomic_write_bytes, atomic_write_text, exists, read_text
from training.evaluation import box_fill_predict  # noqa: F401  (the floor row; tests reach it here)

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO_ROOT / "training" / "configs" / "synthetic_tiny.yaml"

# ------------------------------------------------------------------------------------ seen / novel split
# Fixed once, before any result, by category-id parity: odd ids are "seen" (mask supervision), even ids
# are "novel" (boxes only). Rationale: each half must contain a convex shape, a shape with a hole and
# concave shapes, with both curved and straight outlines, so the novel half asks for nothing the seen half
# never showed in kind (the paper's VOC / non-VOC split likewise mixes shape types on both sides):
#   seen : ellipse (convex, curved), ring (hole, curved), star, cross, heart (concave)
#   novel: triangle (convex, straight), frame (hole, straight), crescent, l_shape, arrow (concave)
# `check_split` asserts these properties; never change the split to make a result come out.
SEEN_FAMILY_IDS: tuple[int, ...] = (1, 3, 5, 7, 9)
NOVEL_FAMILY_IDS: tuple[int, ...] = (2, 4, 6, 8, 10)
SPLIT_RATIONALE = (
    "seen = odd category ids (ellipse, ring, star, cross, heart), novel = even ids (triangle, frame, "
    "crescent, l_shape, arrow): fixed by id parity before any run; each half has a convex shape, a shape "
    "with a hole and three concave shapes."
)

# Synthetic data seeds (train / validation) and the model / shrink-box seed.
TRAIN_DATA_SEED = 11
VAL_DATA_SEED = 12
MODEL_SEED = 0
SHRINK_SEED = 0


def check_split(seen: Sequence[int] = SEEN_FAMILY_IDS, novel: Sequence[int] = NOVEL_FAMILY_IDS) -> None:
    """Raise ValueError unless seen/novel partition all families and each half has a hole and a concave
    family (the split's stated rationale)."""
    from shapemask_ros.datasets.synthetic import SHAPE_FAMILIES, resolve_family

    s, n = set(seen), set(novel)
    if s & n:
        raise ValueError(f"seen and novel families overlap: {sorted(s & n)}")
    if s | n != {f.id for f in SHAPE_FAMILIES}:
        raise ValueError("seen + novel must cover every shape family exactly once")
    for name, ids in (("seen", s), ("novel", n)):
        fams = [resolve_family(i) for i in ids]
        if not any(f.has_hole for f in fams) or not any(f.concave for f in fams):
            raise ValueError(f"the {name} half needs a family with a hole and a concave family")


# ------------------------------------------------------------------------------------------------ budgets
@dataclass(frozen=True)
class Budget:
    """Size of a study run. `model` overrides the base config's architecture (tiny uses a smaller net)."""

    name: str
    image_size: int
    train_images: int
    val_images: int
    objects_per_image: int  # most objects per synthetic scene
    steps: int  # training steps, the same for every variant of a study
    batch_size: int
    learning_rate: float
    warmup_steps: int
    num_priors: int  # K class-agnostic shape priors
    timing_repeats: int  # mask-branch timing runs (width study)
    model: dict[str, Any] = field(default_factory=dict)
    study_steps: dict[str, int] = field(default_factory=dict)  # per-study exceptions to `steps`
    note: str = ""
    # initialisation, data order, augmentation and k-means seed; another value repeats a study with new
    # models (own cache keys, results `<stem>_seed<N>`) to measure seed noise, on the same data and split
    model_seed: int = MODEL_SEED

    def steps_for(self, study: str) -> int:
        """Training steps of every variant of `study`."""
        return int(self.study_steps.get(study, self.steps))

    @staticmethod
    def lr_decay_steps(steps: int) -> tuple[int, ...]:
        """x0.1 at ~73% and ~93% of training (the base config's 1100 / 1400 of 1500)."""
        return (max(1, round(steps * 0.73)), max(1, round(steps * 0.93)))


_TINY_MODEL = {
    "anchors": {"max_level": 5, "num_scales": 1},  # fewer pyramid levels and anchors: less to trace
    "backbone": {"tiny_filters": [8, 8, 16, 16]},
    "detector": {"fpn_channels": 16, "head_convs": 1, "head_channels": 16},
    "postprocess": {"max_detections": 10, "pre_nms_top_k": 100},
    "mask": {"num_convs": 1},  # width 32 as the base config, so the width study reuses the oracle model
}

BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        "tiny",
        image_size=64,
        train_images=600,
        val_images=4,
        objects_per_image=3,
        steps=2,
        batch_size=2,
        learning_rate=0.01,
        warmup_steps=0,
        num_priors=4,
        timing_repeats=2,
        model=_TINY_MODEL,
        note="CI miniature: checks the tooling end to end; its numbers mean nothing.",
    ),
    "short": Budget(
        "short",
        image_size=128,
        train_images=1000,
        val_images=100,
        objects_per_image=4,
        steps=600,
        batch_size=8,
        learning_rate=0.02,
        warmup_steps=60,
        num_priors=16,
        timing_repeats=20,
        note="quick evidence: ~20-35 min per study on 2 idle cores (about twice that on the shared machine).",
    ),
    "full": Budget(
        "full",
        image_size=256,
        train_images=3000,
        val_images=200,
        objects_per_image=4,
        steps=1500,
        batch_size=8,
        learning_rate=0.02,
        warmup_steps=100,
        num_priors=16,
        timing_repeats=50,
        note=(
            "the real run: the schedule of the shipped demo model (synthetic_tiny.yaml: 256 px, 1500 steps, "
            "42.7 mask AP with GT boxes), ~1.5-2 h per study on 2 idle cores."
        ),
    ),
}


def get_budget(name: str, model_seed: int = MODEL_SEED) -> Budget:
    """Budget by name, with its model seed set; unknown names raise ValueError listing the choices."""
    try:
        budget = BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
    if model_seed < 0:
        raise ValueError(f"model seed must be >= 0, got {model_seed}")
    return dataclasses.replace(budget, model_seed=int(model_seed))


# --------------------------------------------------------------------------------------------- hashing
def _digest(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ data
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
    from training.data.tfrecords import write_tfrecords

    key = _digest(
        {
            "size": budget.image_size,
            "train": budget.train_images,
            "val": budget.val_images,
            "objects": budget.objects_per_image,
            "seeds": [TRAIN_DATA_SEED, VAL_DATA_SEED],
            "generator": _file_digest(Path(synthetic.__file__)),
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
    from training.data.parser import subsample_keep

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
    key = _digest(
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
    from training.priors import compute_priors, save_priors

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


# -------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One trained model of a study.

    overrides: nested ExperimentConfig overrides on top of the budget's base config.
    prior_ids: families whose training masks make the shape priors (None = all families).
    fraction: share of the training images (by id hash) for both training and priors.
    """

    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    prior_ids: tuple[int, ...] | None = None
    fraction: float = 1.0


def deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Nested copy of `a` with `b` applied on top (mappings merged key by key, other values replaced)."""
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def base_overrides(budget: Budget, data: SyntheticData, priors_path: str, steps: int) -> dict[str, Any]:
    """Config overrides every variant of a budget shares (on top of training/configs/synthetic_tiny.yaml).

    data.max_instances = the most objects a scene has: sampling more slots would only add padding, which the
    mask branch computes all the same (static shapes) and which dominates a CPU step."""
    train = {
        "steps": steps,
        "batch_size": budget.batch_size,
        "learning_rate": budget.learning_rate,
        "warmup_steps": budget.warmup_steps,
        "lr_decay_steps": list(budget.lr_decay_steps(steps)),
        "checkpoint_every": steps,
        "log_every": max(1, min(50, steps)),
        "seed": budget.model_seed,
        "mixed_precision": "float32",
    }
    model = deep_merge(
        {
            "image_size": budget.image_size,
            "detector": {"num_classes": len(data.category_ids)},
            "mask": {"num_priors": budget.num_priors, "priors_path": priors_path},
        },
        budget.model,
    )
    return {
        "model": model,
        "train": train,
        "data": {
            "train_pattern": data.train_pattern,
            "category_ids": list(data.category_ids),
            "max_instances": budget.objects_per_image,
        },
    }


def variant_config(
    study: str, budget: Budget, data: SyntheticData, work_dir: str, variant: Variant, priors_path: str
) -> ExperimentConfig:
    """Resolved config of a variant. model_dir = work_dir/models/<hash of everything that affects training>,
    so two studies asking for the same model share one training run."""
    over = deep_merge(base_overrides(budget, data, priors_path, budget.steps_for(study)), variant.overrides)
    over = deep_merge(over, {"data": {"subsample_fraction": variant.fraction}})
    cfg = load_config(str(BASE_CONFIG), over)
    d = to_dict(cfg)
    d.pop("name"), d.pop("model_dir")
    key = _digest(d, 16)
    return dataclasses.replace(cfg, name=f"{study}/{variant.name}", model_dir=os.path.join(work_dir, "models", key))


def prepared_variant(
    study: str, budget: Budget, data: SyntheticData, work_dir: str, variant: Variant, progress: bool = False
) -> tuple[str, ExperimentConfig]:
    """The variant's shape priors (made now unless cached) and its resolved config: (priors path, config)."""
    priors = prepare_priors(work_dir, data, budget, variant.prior_ids, variant.fraction, progress)
    return priors, variant_config(study, budget, data, work_dir, variant, priors)


def train_variant(cfg: ExperimentConfig, progress: bool = False, reuse: bool = True) -> dict[str, Any]:
    """Train `cfg` unless a finished run with the same config exists (reuse). Returns the training record:
    model_dir, steps, seed, train_wall_s, final_losses, reused (True when nothing was trained now)."""
    from training.run import train_experiment

    done = os.path.join(cfg.model_dir, "done.json")
    if reuse and exists(done):
        rec = json.loads(read_text(done))
        rec["reused"] = True
        return rec
    if os.path.isdir(cfg.model_dir) and not reuse:
        shutil.rmtree(cfg.model_dir)  # a fresh run: drop checkpoints the trainer would resume from
    t0 = time.perf_counter()
    last = train_experiment(cfg, progress=progress)
    rec = {
        "model_dir": cfg.model_dir,
        "steps": cfg.train.steps,
        "seed": cfg.train.seed,
        "batch_size": cfg.train.batch_size,
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "final_losses": {k: float(v) for k, v in last.items()},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(done, json.dumps(rec, indent=1))
    return {**rec, "reused": False}


def _summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in ("segm", "bbox"):
        if t in metrics:
            m = metrics[t]
            out[t] = {k: m.get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
            out[t]["splits"] = dict(m.get("splits", {}))
            out[t]["per_category"] = {str(k): v for k, v in m.get("per_category", {}).items()}
    for k in ("num_images", "num_results", "dropped_results", "skipped_images", "predict_seconds_mean"):
        out[k] = metrics.get(k)
    return out


def evaluate_model(
    model: Any,
    data: SyntheticData,
    box_sources: Sequence[str],
    splits: Mapping[str, Sequence[int]] | None = None,
    max_images: int | None = None,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """COCO bbox + segm evaluation on the validation set, once per box source ("model", "gt", "gt_shrunk").
    One predictor (traced once) serves every source. Returns {source: summary}."""
    from shapemask_ros.runtime.backends.keras_backend import predictor_for_model
    from training.evaluation import evaluate_predictor
    from training.run import class_names_for

    cats = list(data.category_ids)
    predictor = predictor_for_model(model, class_names_for(data.val_json, tuple(cats)))
    out = {}
    for source in box_sources:
        t0 = time.perf_counter()
        metrics, _ = evaluate_predictor(
            predictor.predict,
            data.val_json,
            data.val_image_dir,
            source,
            cats,
            max_images=max_images,
            seed=SHRINK_SEED,
            progress=progress,
            splits=splits,
        )
        out[source] = {**_summary(metrics), "eval_wall_s": round(time.perf_counter() - t0, 1)}
    return out


def box_fill_reference(
    data: SyntheticData,
    box_sources: Sequence[str],
    splits: Mapping[str, Sequence[int]] | None = None,
    label: str = "box-filled masks (reference: no mask learning)",
) -> dict[str, Any]:
    """A variant-like row scoring `box_fill_predict` on the validation set for the given-box sources: the
    floor a mask branch must beat to have learned any shape."""
    from training.evaluation import evaluate_predictor

    out = {}
    for source in (s for s in box_sources if s != "model"):
        t0 = time.perf_counter()
        metrics, _ = evaluate_predictor(
            box_fill_predict,
            data.val_json,
            data.val_image_dir,
            source,
            list(data.category_ids),
            seed=SHRINK_SEED,
            progress=False,
            splits=splits,
        )
        out[source] = {**_summary(metrics), "eval_wall_s": round(time.perf_counter() - t0, 1)}
    return {"name": "box_fill", "label": label, "eval": out, "train": {"train_wall_s": float("nan")}}


def run_variant(
    study: str,
    budget: Budget,
    data: SyntheticData,
    variant: Variant,
    work_dir: str,
    box_sources: Sequence[str],
    splits: Mapping[str, Sequence[int]] | None = None,
    progress: bool = False,
    reuse: bool = True,
    extra: Callable[[Any, ExperimentConfig], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Priors -> config -> train (or reuse) -> evaluate; `extra(model, cfg)` adds study-specific numbers."""
    import keras

    from training.run import load_trained_model

    priors, cfg = prepared_variant(study, budget, data, work_dir, variant, progress)
    log.info("%s / %s: model_dir %s", study, variant.name, cfg.model_dir)
    train = train_variant(cfg, progress=progress, reuse=reuse)
    model = load_trained_model(cfg)
    row: dict[str, Any] = {
        "name": variant.name,
        "label": variant.label,
        "overrides": variant.overrides,
        "prior_ids": list(variant.prior_ids) if variant.prior_ids is not None else "all",
        "fraction": variant.fraction,
        "priors_path": priors,
        "train": train,
        "eval": evaluate_model(model, data, box_sources, splits, progress=progress),
    }
    if extra is not None:
        row.update(extra(model, cfg))
    del model
    keras.backend.clear_session()  # free the graph and weights before the next variant
    return row


def evaluate_cached(
    plan: StudyPlan,
    budget: Budget,
    work_dir: str,
    box_sources: Sequence[str],
    only: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a study's already-trained models (all, or `only`) with other box sources, e.g. "gt_shrunk"
    for the novel-category models: a diagnostic that never trains. A variant without a finished model
    raises FileNotFoundError naming the command that trains it. Returns {"study", "budget", "box_sources",
    "variants": {name: {source: summary}}}, with the box-filled reference as variant "box_fill" for given-box
    sources."""
    import keras

    from training.run import load_trained_model

    data = prepare_data(work_dir, budget, progress)
    rows: dict[str, Any] = {}
    for v in select_variants(plan_variants(plan, only), only):
        _, cfg = prepared_variant(plan.study, budget, data, work_dir, v, progress)
        if not exists(os.path.join(cfg.model_dir, "done.json")):
            raise FileNotFoundError(
                f"{plan.study}/{v.name} is not trained at the {budget.name} budget (no {cfg.model_dir}/done.json); "
                f"train it with: python -m training.experiments {plan.study} --budget {budget.name} "
                f"--variants {v.name}"
            )
        model = load_trained_model(cfg)
        rows[v.name] = evaluate_model(model, data, box_sources, plan.splits, progress=progress)
        del model
        keras.backend.clear_session()
    given = tuple(s for s in box_sources if s != "model")
    if given:
        rows["box_fill"] = box_fill_reference(data, given, plan.splits)["eval"]
    return {"study": plan.study, "budget": budget.name, "box_sources": list(box_sources), "variants": rows}


# ------------------------------------------------------------------------------------------ provenance
@dataclass(frozen=True)
class StudyPlan:
    """What differs between the studies' drivers (the rest is `run_study`)."""

    study: str
    variants: Callable[[], list[Variant]]
    claims: Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]]
    markdown: Callable[[dict[str, Any]], str]
    figure: Callable[[dict[str, Any]], Any]
    box_sources: tuple[str, ...] = ("gt", "model")
    splits: Mapping[str, Sequence[int]] | None = None
    # given-box sources scored with box-filled masks as a floor row; () = no reference row
    reference_sources: tuple[str, ...] = ("gt",)
    # (variant, data, budget) -> fields added to the variant's row, called before it trains (raise to refuse)
    before_variant: Callable[[Variant, SyntheticData, Budget], dict[str, Any]] | None = None
    # (budget) -> run_variant's `extra(model, cfg)` hook
    extra: Callable[[Budget], Callable[[Any, ExperimentConfig], dict[str, Any]]] | None = None
    allow_partial: bool = True  # False: a study whose table needs every variant refuses --variants
    check_split: bool = True
    # further variants trained only when named in --variants (ablations of single fixes, say)
    optional_variants: Callable[[], list[Variant]] | None = None


def run_study(
    plan: StudyPlan,
    budget: Budget,
    out_dir: str,
    work_dir: str,
    argv: Sequence[str] | None = None,
    progress: bool = False,
    reuse: bool = True,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train + evaluate the plan's variants (all, or `only`), write `<out_dir>/<stem>.{md,json,png}`, and
    return the payload. Trained models are cached in `work_dir` and reused unless reuse is False."""
    if only and not plan.allow_partial:
        raise ValueError(f"{plan.study} compares all its variants in one table; run it without --variants")
    t0 = time.perf_counter()
    if plan.check_split:
        check_split()
    prov = provenance(budget, argv, work_dir)
    data = prepare_data(work_dir, budget, progress)
    extra = plan.extra(budget) if plan.extra else None
    rows = []
    for v in select_variants(plan_variants(plan, only), only):
        fields = plan.before_variant(v, data, budget) if plan.before_variant else {}
        row = run_variant(plan.study, budget, data, v, work_dir, plan.box_sources, plan.splits, progress, reuse, extra)
        rows.append({**row, **fields})
    more: dict[str, Any] = {"variants_selected": list(only or [])}
    if plan.reference_sources:
        more["reference"] = box_fill_reference(data, plan.reference_sources, plan.splits)
    payload = finish_payload(plan.study, budget, prov, rows, plan.claims(rows), t0, **more)
    payload["outputs"] = write_report(
        out_dir, output_stem(plan.study, budget), payload, plan.markdown(payload), plan.figure(payload)
    )
    return payload


def provenance(budget: Budget, argv: Sequence[str] | None, work_dir: str) -> dict[str, Any]:
    """What reproduces a run: the exact command, commit, versions, machine, budget, seeds."""
    import keras
    import tensorflow as tf

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cmd = None if argv is None else shlex.join([".venv/bin/python", "-m", "training.experiments", *argv])
    return {
        "command": cmd,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_files": len([ln for ln in git("status", "--porcelain").splitlines() if ln.strip()]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "budget": dataclasses.asdict(budget),
        "base_config": str(BASE_CONFIG.relative_to(REPO_ROOT)),
        "seeds": {
            "train_data": TRAIN_DATA_SEED,
            "val_data": VAL_DATA_SEED,
            "model": budget.model_seed,
            "shrink": SHRINK_SEED,
            "priors_kmeans": budget.model_seed,
        },
        "work_dir": work_dir,
        "argv0": sys.argv[0] if sys.argv else "",
    }


# --------------------------------------------------------------------------------------------- reports
def fmt(v: Any, digits: int = 1) -> str:
    """Number for a markdown cell; None / NaN -> 'n/a'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.{digits}f}"
    return str(v)


def train_minutes(row: Mapping[str, Any]) -> float | None:
    """A row's training wall time in minutes; None for rows that trained nothing (JSON keeps no NaN)."""
    s = row["train"].get("train_wall_s")
    return None if s is None or math.isnan(s) else s / 60.0


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (cells through `fmt` unless already strings)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(lines) + "\n"


def plan_variants(plan: StudyPlan, only: Sequence[str] | None) -> list[Variant]:
    """The plan's variants, plus its optional ones when a selection is given (they run only when named)."""
    return plan.variants() + (plan.optional_variants() if only and plan.optional_variants else [])


def select_variants(variants: Sequence[Variant], only: Sequence[str] | None) -> list[Variant]:
    """The variants named in `only` (all when None), in the study's order; unknown names raise ValueError.

    Lets a long study be run in parts (each trained model is cached in the work dir and reused later)."""
    if not only:
        return list(variants)
    names = [v.name for v in variants]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; this study has {names}")
    return [v for v in variants if v.name in set(only)]


def rows_by_name(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows keyed by variant name; a variant that was not run reads as a row without results, so the
    claims that need it come out as 'n/a' instead of failing."""
    out: dict[str, Any] = {}
    out.update((r["name"], r) for r in rows)
    return _MissingRows(out)


class _MissingRows(dict):
    def __missing__(self, key: str) -> dict[str, Any]:
        return {"name": key, "eval": {}}


def claim(text: str, measured: str, holds: bool | None) -> dict[str, Any]:
    """One paper claim checked on this run (holds None = not measurable, e.g. a NaN)."""
    return {"claim": text, "measured": measured, "holds": holds}


def claims_table(claims: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [c["claim"], c["measured"], {True: "reproduced", False: "NOT reproduced", None: "n/a"}[c["holds"]]]
        for c in claims
    ]
    return md_table(["claim (issue 5 target)", "measured", "verdict"], rows)


def split_ap(row: Mapping[str, Any], source: str, split: str, iou: str = "segm") -> float:
    """AP of a variant row for a box source and split ('all' = overall AP); NaN when missing."""
    m = row["eval"].get(source, {}).get(iou, {})
    v = m.get("AP") if split == "all" else m.get("splits", {}).get(split)
    return float("nan") if v is None else float(v)


def settings_section(payload: Mapping[str, Any]) -> str:
    """Markdown: how the run was made (command, budget, seeds, machine, wall times)."""
    p = payload["provenance"]
    b = p["budget"]
    lines = [
        "## How this was run",
        "",
        f"- command: `{p['command']}`" if p.get("command") else "- command: (called from Python)",
        f"- commit: `{p['git_commit'] or 'unknown'}`"
        + (f" (+{p['git_dirty_files']} uncommitted files in the tree)" if p.get("git_dirty_files") else ""),
        f"- budget `{b['name']}`: {b['image_size']} px images, {b['train_images']} train / "
        f"{b['val_images']} val "
        f"images (<= {b['objects_per_image']} objects each), {payload['steps']} steps at batch "
        f"{b['batch_size']} (lr {b['learning_rate']}, warm-up {b['warmup_steps']}, x0.1 at "
        f"{list(Budget.lr_decay_steps(payload['steps']))}), "
        f"K = {b['num_priors']} priors. {b['note']}",
        f"- seeds: {p['seeds']}",
        f"- base config `{p['base_config']}` (architecture overrides: {b['model'] or 'none'})",
        f"- machine: {p['cpu_count']} CPUs, load average at start {p['load_average_at_start']}; "
        f"TF {p['tensorflow']}, Keras {p['keras']}, Python {p['python']}",
        *(
            [f"- **partial run**: only the variants {payload['variants_selected']} (the others: not run yet)"]
            if payload.get("variants_selected")
            else []
        ),
        f"- wall time: {fmt(payload['wall_s'] / 60.0)} min in total "
        f"({payload.get('trained_now', 0)} models trained now, "
        f"{payload.get('reused', 0)} reused from the cache)",
        "",
    ]
    return "\n".join(lines)


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None and numpy scalars -> Python, so the file is strict JSON."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def output_stem(study: str, budget: Budget) -> str:
    """`<study>` for the full budget, `<study>_<budget>` otherwise (so a CI run never overwrites results),
    `_seed<N>` added for a model seed other than the default."""
    stem = study if budget.name == "full" else f"{study}_{budget.name}"
    return stem if budget.model_seed == MODEL_SEED else f"{stem}_seed{budget.model_seed}"


def report_rows(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rows of a study's results table: its variants, then the box-filled reference when present."""
    return [*payload["variants"], *([payload["reference"]] if payload.get("reference") else [])]


def report_markdown(payload: Mapping[str, Any], title: str, intro: str, table: str, extra: str | None = None) -> str:
    """The markdown report every study writes: title, intro, results table (+ `extra`), claims, settings."""
    return "\n".join(
        [
            f"# {title}",
            "",
            intro,
            "",
            "## Results",
            "",
            table,
            *([] if extra is None else [extra]),
            "## Claims",
            "",
            claims_table(payload["claims"]),
            settings_section(payload),
        ]
    )


def grouped_bars(ax: Any, rows: Sequence[Mapping[str, Any]], series: Sequence[tuple[str, str]], split: str) -> None:
    """Bar groups of mask AP on `split`, one group a row and one bar a (box source, legend label) pair."""
    x = np.arange(len(rows))
    width = 0.76 / len(series)
    for i, (source, label) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, [split_ap(r, source, split) for r in rows], width, label=label)
    ax.set_xticks(x, [r["name"].replace("_", "\n") for r in rows])
    ax.legend()


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write `payload` as strict JSON (NaN -> null, NumPy scalars -> Python) atomically."""
    atomic_write_text(path, json.dumps(_json_safe(payload), indent=1, allow_nan=False) + "\n")


def write_report(out_dir: str, stem: str, payload: Mapping[str, Any], markdown: str, figure: Any) -> dict:
    """Write `<stem>.json` (strict JSON), `<stem>.md` and `<stem>.png` (a matplotlib Figure) atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ("json", "md", "png")}
    write_json(paths["json"], payload)
    atomic_write_text(paths["md"], markdown)
    FigureCanvasAgg(figure)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(paths["png"], buf.getvalue())
    return paths


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 3.6):
    """A matplotlib Figure (no pyplot state) with `ncols` axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=110)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def finish_payload(
    study: str, budget: Budget, prov: dict, rows: list, claims: list, t0: float, **extra: Any
) -> dict[str, Any]:
    """The JSON payload every study writes."""
    return {
        "study": study,
        "budget": budget.name,
        "steps": budget.steps_for(study),
        "provenance": prov,
        "split": {
            "seen": list(SEEN_FAMILY_IDS),
            "novel": list(NOVEL_FAMILY_IDS),
            "rationale": SPLIT_RATIONALE,
        },
        "variants": rows,
        "claims": claims,
        "wall_s": round(time.perf_counter() - t0, 1),
        "trained_now": sum(not r["train"]["reused"] for r in rows),
        "reused": sum(bool(r["train"]["reused"]) for r in rows),
        **extra,
    }
