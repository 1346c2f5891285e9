"""Diagnostic for the mask-width study: is the 16-channel loss a matter of the branch's depth?

The full-budget mask_width study trains the base config's mask branch (2 convolutions per head) and loses
7.2 AP at 16 channels, against 1.2 in the paper, whose heads have 4 convolutions. This trains the 16-channel
branch with 4 convolutions per head on the same data, steps and seeds (cached like every study model) and
writes `<out>/mask_width[_<budget>]_depth_check.json` and prints its row. Run after the study:

    python -m shapemask_training.experiments.width_depth_check --budget full
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Any

from shapemask_training.experiments import mask_width
from shapemask_training.experiments.budgets import BUDGETS, get_budget
from shapemask_training.experiments.data_cache import prepare_data
from shapemask_training.experiments.provenance import provenance
from shapemask_training.experiments.reports import output_stem, split_ap, write_json
from shapemask_training.experiments.variants import Variant, run_variant


def depth_variants(channels: Sequence[int] = (16,), num_convs: int = 4) -> list[Variant]:
    """The study's variants at other widths with `num_convs` convolutions per mask head."""
    return [
        Variant(
            f"width_{w}_convs{num_convs}",
            f"{w} channels, {num_convs} convs",
            {"model": {"mask": {"channels": w, "num_convs": num_convs}}},
        )
        for w in channels
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    p = argparse.ArgumentParser(prog="python -m shapemask_training.experiments.width_depth_check")
    p.add_argument("--budget", default="full", choices=list(BUDGETS))
    p.add_argument("--channels", default="16", help="comma-separated widths")
    p.add_argument("--num-convs", type=int, default=4)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--work-dir", default="out/experiments")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    budget = get_budget(args.budget)
    plan = mask_width.PLAN
    data = prepare_data(args.work_dir, budget)
    extra = plan.extra(budget) if plan.extra else None
    rows = [
        run_variant(plan.study, budget, data, v, args.work_dir, plan.box_sources, plan.splits, extra=extra)
        for v in depth_variants([int(w) for w in args.channels.split(",")], args.num_convs)
    ]
    payload: dict[str, Any] = {
        "study": plan.study,
        "budget": budget.name,
        "provenance": provenance(budget, argv, args.work_dir),
    }
    payload["variants"] = rows
    path = os.path.join(args.out, f"{output_stem(plan.study, budget)}_depth_check.json")
    write_json(path, payload)
    for r in rows:
        print(
            f"{r['label']}: AP GT {split_ap(r, 'gt', 'all'):.1f}, detections {split_ap(r, 'model', 'all'):.1f}, "
            f"params {r['params']['trainable']:,}, {r['timing']['median_ms']:.1f} ms; wrote {path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
