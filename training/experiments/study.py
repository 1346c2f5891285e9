"""`StudyPlan` (what differs between the studies' drivers) and `run_study` / `evaluate_cached`, which run one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shapemask_ros.utils.io import exists
from shapemask_training.config import ExperimentConfig
from shapemask_training.experiments.budgets import Budget
from shapemask_training.experiments.data_cache import SyntheticData, prepare_data
from shapemask_training.experiments.provenance import provenance
from shapemask_training.experiments.reports import finish_payload, output_stem, write_report
from shapemask_training.experiments.scoring import box_fill_reference, evaluate_model
from shapemask_training.experiments.split import check_split
from shapemask_training.experiments.variants import Variant, prepared_variant, run_variant, select_variants


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


def plan_variants(plan: StudyPlan, only: Sequence[str] | None) -> list[Variant]:
    """The plan's variants, plus its optional ones when a selection is given (they run only when named)."""
    return plan.variants() + (plan.optional_variants() if only and plan.optional_variants else [])


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

    from shapemask_training.run import load_trained_model

    data = prepare_data(work_dir, budget, progress)
    rows: dict[str, Any] = {}
    for v in select_variants(plan_variants(plan, only), only):
        _, cfg = prepared_variant(plan.study, budget, data, work_dir, v, progress)
        if not exists(os.path.join(cfg.model_dir, "done.json")):
            raise FileNotFoundError(
                f"{plan.study}/{v.name} is not trained at the {budget.name} budget (no {cfg.model_dir}/done.json); "
                f"train it with: python -m shapemask_training.experiments {plan.study} --budget {budget.name} "
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
