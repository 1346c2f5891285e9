"""COCO scoring of trained models and of the box-filled floor on a study's validation set."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from shapemask_training.evaluation import box_fill_predict
from shapemask_training.experiments.data_cache import SyntheticData

# Seed of the "gt_shrunk" box source's random shrinking.
SHRINK_SEED = 0


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
    from shapemask_training.evaluation import evaluate_predictor
    from shapemask_training.run import class_names_for

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
    from shapemask_training.evaluation import evaluate_predictor

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
