"""`Variant`s of a study: config resolution on top of the base config, training (cached by a hash of the
resolved config, so studies that need the same model share it) and `run_variant` (train + score)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapemask_ros.config.loading import to_dict
from shapemask_ros.utils.io import atomic_write_text, exists, read_text
from shapemask_training.config import ExperimentConfig, load_config
from shapemask_training.experiments.budgets import Budget
from shapemask_training.experiments.data_cache import SyntheticData, prepare_priors
from shapemask_training.experiments.hashing import digest
from shapemask_training.experiments.scoring import evaluate_model

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_relative(path: str) -> str:
    """`path` as recorded in results JSON: relative to the repository root, never this machine's absolute
    path (remote URLs and "" unchanged)."""
    if not path or "://" in path:
        return path
    return os.path.relpath(os.path.abspath(path), REPO_ROOT)


BASE_CONFIG = REPO_ROOT / "training" / "configs" / "synthetic_tiny.yaml"


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
    key = digest(d, 16)
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
    from shapemask_training.run import train_experiment

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
        "model_dir": repo_relative(cfg.model_dir),
        "steps": cfg.train.steps,
        "seed": cfg.train.seed,
        "batch_size": cfg.train.batch_size,
        "train_wall_s": round(time.perf_counter() - t0, 1),
        "final_losses": {k: float(v) for k, v in last.items()},
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(done, json.dumps(rec, indent=1))
    return {**rec, "reused": False}


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

    from shapemask_training.run import load_trained_model

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
        "priors_path": repo_relative(priors),
        "train": train,
        "eval": evaluate_model(model, data, box_sources, splits, progress=progress),
    }
    if extra is not None:
        row.update(extra(model, cfg))
    del model
    keras.backend.clear_session()  # free the graph and weights before the next variant
    return row


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
