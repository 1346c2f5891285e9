"""Study 3: novel-category generalisation with less training data (paper Fig. 8) on the synthetic shapes.

The novel-category setting of study 1 (masks for the seen families only, AP on the novel ones), trained on
1, 1/2, 1/10 and 1/100 of the training images, subsampled by image id (`data.subsample_fraction`: a hash of
the id, so the smaller subsets are nested in the larger ones). Both the detector and the mask branch see only
the kept images, and the shape priors are clustered from the kept images' seen masks. Every run trains the
same number of steps (smaller sets are seen for more epochs). The full-data class-agnostic baseline
(study 1's "neither") is the reference line, as the paper compares 1/100 of the data with the previous
state of the art trained on all of it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

from shapemask_ros.utils.formatting import fmt
from shapemask_training.experiments.budgets import Budget
from shapemask_training.experiments.data_cache import SyntheticData, subsample_image_ids
from shapemask_training.experiments.novel_categories import SEEN_SPLIT, SPLITS
from shapemask_training.experiments.plots import new_figure
from shapemask_training.experiments.reports import (
    claim,
    md_table,
    report_markdown,
    report_rows,
    rows_by_name,
    split_ap,
    train_minutes,
)
from shapemask_training.experiments.split import SEEN_FAMILY_IDS
from shapemask_training.experiments.study import StudyPlan, run_study
from shapemask_training.experiments.variants import Variant

STUDY = "less_data"
FRACTIONS: tuple[float, ...] = (1.0, 0.5, 0.1, 0.01)


def variants() -> list[Variant]:
    """Full ShapeMask at each fraction, plus the full-data baseline without prior and embedding."""
    seen = {
        "data": {"mask_split": SEEN_SPLIT},
        "model": {"mask": {"use_shape_prior": True, "use_instance_embedding": True}},
    }
    out = [
        Variant(f"fraction_{f:g}", f"ShapeMask, {_frac_label(f)} of the data", seen, SEEN_FAMILY_IDS, f)
        for f in FRACTIONS
    ]
    base = {
        "data": {"mask_split": SEEN_SPLIT},
        "model": {"mask": {"use_shape_prior": False, "use_instance_embedding": False}},
    }
    out.append(Variant("baseline_full_data", "class-agnostic baseline, all data", base, SEEN_FAMILY_IDS))
    return out


def _frac_label(f: float) -> str:
    return "all" if f == 1.0 else f"1/{round(1 / f)}"


def claims(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5 target: 1/10 of the data keeps >= 80% of the novel AP; paper: 1/100 still beats the previous
    best trained on all data (here: the class-agnostic baseline)."""
    by = rows_by_name(rows)
    full, tenth = split_ap(by["fraction_1"], "gt", "novel"), split_ap(by["fraction_0.1"], "gt", "novel")
    hundredth, base = (
        split_ap(by["fraction_0.01"], "gt", "novel"),
        split_ap(by["baseline_full_data"], "gt", "novel"),
    )
    ratio = tenth / full if full > 0 else math.nan
    return [
        claim(
            "1/10 of the data keeps >= 80% of the novel AP (GT boxes)",
            f"{fmt(tenth)} / {fmt(full)} = {fmt(100 * ratio)}%",
            None if math.isnan(ratio) else ratio >= 0.8,
        ),
        claim(
            "1/100 of the data beats the full-data class-agnostic baseline (novel AP, GT boxes)",
            f"{fmt(hundredth)} vs {fmt(base)}",
            None if math.isnan(hundredth + base) or max(hundredth, base) <= 0 else hundredth > base,
        ),
    ]


def markdown(payload: dict[str, Any]) -> str:
    rows = report_rows(payload)
    table = md_table(
        [
            "model",
            "train images",
            "novel AP (GT boxes)",
            "novel AP (detections)",
            "seen AP (GT boxes)",
            "box AP (all)",
            "train min",
        ],
        [
            [
                r["label"],
                r.get("train_images", "n/a"),
                split_ap(r, "gt", "novel"),
                split_ap(r, "model", "novel"),
                split_ap(r, "gt", "seen"),
                split_ap(r, "model", "all", "bbox"),
                train_minutes(r),
            ]
            for r in rows
        ],
    )
    return report_markdown(
        payload,
        "Less data (paper Fig. 8) on synthetic shapes",
        (
            "Novel-category setting of the novel_categories study (masks for the seen families only), "
            "trained on a fraction of the training images (by image-id hash; priors from the kept images). "
            "Same number of steps for every fraction. Mask AP (COCO segm, %)."
        ),
        table,
    )


def figure(payload: dict[str, Any]):
    rows = [r for r in payload["variants"] if r["name"].startswith("fraction_")]
    base = [r for r in payload["variants"] if r["name"] == "baseline_full_data"]
    fig, (ax,) = new_figure(width=6.5)
    xs = [r["fraction"] for r in rows]
    for source, label, style in (("gt", "GT boxes", "o-"), ("model", "detections", "s-")):
        ax.plot(xs, [split_ap(r, source, "novel") for r in rows], style, label=f"ShapeMask, {label}")
        if base:
            ax.axhline(
                split_ap(base[0], source, "novel"),
                ls="--",
                lw=1,
                color=ax.lines[-1].get_color(),
                label=f"baseline (all data), {label}",
            )
    ax.set_xscale("log")
    ax.set_xticks(xs, [_frac_label(f) for f in xs])
    ax.set_xlabel("fraction of training images")
    ax.set_ylabel("novel-family mask AP (%)")
    ax.set_title(f"Less data ({payload['budget']} budget)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _train_images(v: Variant, data: SyntheticData, budget: Budget) -> dict[str, Any]:
    """Images kept for a fraction; fewer than one batch is no experiment (the pipeline would repeat them)."""
    from shapemask_ros.datasets.coco import load_coco_json

    all_ids = [im["id"] for im in load_coco_json(data.train_json)["images"]]
    n = len(subsample_image_ids(all_ids, v.fraction))
    if n < budget.batch_size:
        raise ValueError(f"{v.name}: only {n} training images kept; the budget needs >= {budget.batch_size}")
    return {"train_images": n}


PLAN = StudyPlan(STUDY, variants, claims, markdown, figure, splits=SPLITS, before_variant=_train_images)


# run(budget, out_dir, work_dir, argv=None, progress=False, reuse=True, only=None) -> payload
run = functools.partial(run_study, PLAN)
