"""Study 2: robustness to inaccurate boxes (paper Table 3) on the synthetic shapes.

At test time the ground-truth boxes are shrunk independently in width and height by U(0.75, 1.0)
(`box_source="gt_shrunk"`, seeded per image) and mask AP is compared with the exact boxes. Models (masks
of all families supervised):
- ShapeMask trained with box jitter (sigma from the base config, 0.1 as in the paper);
- ShapeMask trained without jitter (sigma 0);
- a crop-inside-box baseline: the same heads, but `outer_box_scale = 1.0`, so features, targets and predicted
  masks live in the tight box and a mask can never leave it (the Mask R-CNN property under test). It trains
  with the same jitter as ShapeMask, so the only difference is the frame.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from shapemask_ros.utils.formatting import fmt
from shapemask_training.experiments.plots import grouped_bars, new_figure
from shapemask_training.experiments.reports import (
    claim,
    md_table,
    report_markdown,
    report_rows,
    rows_by_name,
    split_ap,
    train_minutes,
)
from shapemask_training.experiments.study import StudyPlan, run_study
from shapemask_training.experiments.variants import Variant

STUDY = "perturbed_boxes"


def variants() -> list[Variant]:
    """ShapeMask with / without jitter and the crop-inside-box baseline."""
    return [
        Variant(
            "shapemask",
            "ShapeMask (jitter-trained)",
            {"model": {"mask": {"use_shape_prior": True, "use_instance_embedding": True}}},
        ),
        Variant("shapemask_no_jitter", "ShapeMask trained without jitter", {"data": {"box_jitter_sigma": 0.0}}),
        Variant(
            "crop_in_box",
            "crop-inside-box baseline (outer box = tight box)",
            {"model": {"mask": {"outer_box_scale": 1.0}}},
        ),
    ]


def drop(row: Mapping[str, Any]) -> float:
    """AP(shrunk GT boxes) - AP(GT boxes): negative = lost AP."""
    return split_ap(row, "gt_shrunk", "all") - split_ap(row, "gt", "all")


def claims(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 5 targets: ShapeMask loses <= 3 AP, the crop-inside-box baseline at least twice as much; and
    (paper: -2.9 without / -1.5 with jitter) jitter training reduces the loss."""
    by = rows_by_name(rows)
    sm, base, nojit = drop(by["shapemask"]), drop(by["crop_in_box"]), drop(by["shapemask_no_jitter"])
    # no verdict when a drop is undefined or the model never reached AP > 0 with exact boxes
    bad = (
        any(math.isnan(v) for v in (sm, base, nojit))
        or min(split_ap(by[n], "gt", "all") for n in ("shapemask", "crop_in_box", "shapemask_no_jitter")) <= 0
    )
    return [
        claim("ShapeMask loses <= 3 AP with shrunk boxes", f"{fmt(sm)} AP", None if bad else sm >= -3.0),
        claim(
            "crop-inside-box baseline loses >= 2x as much as ShapeMask",
            f"{fmt(base)} vs {fmt(sm)} AP",
            None if bad else bool(base < 0 and base <= 2.0 * min(sm, 0.0)),
        ),
        claim(
            "jitter training reduces ShapeMask's loss",
            f"{fmt(sm)} (jitter) vs {fmt(nojit)} (no jitter)",
            None if bad else sm > nojit,
        ),
    ]


def markdown(payload: dict[str, Any]) -> str:
    rows = report_rows(payload)
    table = md_table(
        [
            "model",
            "AP (GT boxes)",
            "AP (shrunk GT boxes)",
            "change",
            "AP50 (GT)",
            "AP50 (shrunk)",
            "train min",
        ],
        [
            [
                r["label"],
                split_ap(r, "gt", "all"),
                split_ap(r, "gt_shrunk", "all"),
                f"{drop(r):+.1f}",
                r["eval"]["gt"]["segm"]["AP50"],
                r["eval"]["gt_shrunk"]["segm"]["AP50"],
                train_minutes(r),
            ]
            for r in rows
        ],
    )
    return report_markdown(
        payload,
        "Perturbed boxes (paper Table 3) on synthetic shapes",
        (
            "Mask AP (COCO segm, %, all families) with exact ground-truth boxes and with the same boxes "
            "shrunk per side by U(0.75, 1.0) about their centres (seeded per image). Paper (COCO): "
            "ShapeMask -2.9 AP (-1.5 when trained with jitter), Mask R-CNN -7.4."
        ),
        table,
    )


def figure(payload: dict[str, Any]):
    fig, (ax,) = new_figure(width=7.0)
    grouped_bars(ax, payload["variants"], (("gt", "GT boxes"), ("gt_shrunk", "shrunk GT boxes")), "all")
    ax.set_ylabel("mask AP (%)")
    ax.set_title(f"Perturbed boxes ({payload['budget']} budget)")
    fig.tight_layout()
    return fig


PLAN = StudyPlan(
    STUDY,
    variants,
    claims,
    markdown,
    figure,
    box_sources=("gt", "gt_shrunk"),
    reference_sources=("gt", "gt_shrunk"),
    check_split=False,
)


# run(budget, out_dir, work_dir, argv=None, progress=False, reuse=True, only=None) -> payload
run = functools.partial(run_study, PLAN)
