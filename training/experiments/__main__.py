"""`python -m shapemask_training.experiments STUDY [--budget tiny|short|full] --out docs/results`.

Runs one study (or `all`, one after the other), writing `<out>/<study>[_<budget>].{md,json,png}`. Trained
models, data and priors are cached under --work-dir, keyed by their full configuration, so a study that needs
a model another study already trained reuses it, and an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from shapemask_training.experiments import STUDIES


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the experiments command."""
    from shapemask_training.experiments.budgets import BUDGETS

    p = argparse.ArgumentParser(prog="python -m shapemask_training.experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("study", choices=[*STUDIES, "all"], help="which study to run")
    p.add_argument(
        "--budget",
        default="short",
        choices=list(BUDGETS),
        help="tiny = CI miniature (<1 min), short = quick evidence (~20-30 min), full = real run (<=~2 h)",
    )
    p.add_argument("--out", default="docs/results", help="directory for the .md / .json / .png results")
    p.add_argument("--work-dir", default="out/experiments", help="cache of data, priors and trained models")
    p.add_argument("--no-reuse", action="store_true", help="retrain every model even when a finished one exists")
    p.add_argument(
        "--variants",
        default="",
        help="comma-separated variant names to run now (default: all); the rest stay 'not run' in the report "
        "and a later run reuses the cached models",
    )
    p.add_argument(
        "--evaluate-only",
        default="",
        metavar="SOURCES",
        help="diagnostic: evaluate the already-trained models with these comma-separated box sources "
        "(gt, gt_shrunk, model) on the study's splits, print the table and write <out>/<study>_<budget>_"
        "eval_<sources>.json; trains nothing",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="model seed (initialisation, data order, augmentation, k-means priors); another value trains new "
        "models on the same data and split and writes <study>[_<budget>]_seed<N>.*, to measure seed noise",
    )
    p.add_argument("--progress", action="store_true", help="show progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from shapemask_training.experiments.budgets import get_budget

    budget = get_budget(args.budget, args.seed)
    only = [v for v in args.variants.split(",") if v] or None
    for study in STUDIES if args.study == "all" else (args.study,):
        module = importlib.import_module(f"shapemask_training.experiments.{study}")
        if args.evaluate_only:
            _evaluate_only(module, budget, args, only)
            continue
        payload = module.run(
            budget,
            args.out,
            args.work_dir,
            argv=argv,
            progress=args.progress,
            reuse=not args.no_reuse,
            only=only,
        )
        verdicts = ", ".join(
            f"{'ok' if c['holds'] else 'NO' if c['holds'] is False else 'n/a'}" for c in payload["claims"]
        )
        print(
            f"{study}: {payload['wall_s'] / 60:.1f} min; claims [{verdicts}]; "
            f"wrote {', '.join(payload['outputs'].values())}"
        )
    return 0


def _evaluate_only(module, budget, args: argparse.Namespace, only: list[str] | None) -> None:
    """--evaluate-only: score cached models with other box sources; print a table, write JSON."""
    from shapemask_ros.utils.formatting import json_safe
    from shapemask_ros.utils.io import atomic_write_text
    from shapemask_training.experiments.reports import md_table, output_stem
    from shapemask_training.experiments.study import evaluate_cached

    sources = [s for s in args.evaluate_only.split(",") if s]
    res = evaluate_cached(module.PLAN, budget, args.work_dir, sources, only, progress=args.progress)
    splits = list(module.PLAN.splits or {})
    rows = []
    for name, ev in res["variants"].items():
        for source, summary in ev.items():
            segm = summary.get("segm", {})
            rows.append([name, source, segm.get("AP"), *((segm.get("splits") or {}).get(k) for k in splits)])
    print(md_table(["variant", "box source", "mask AP", *splits], rows))
    path = os.path.join(args.out, f"{output_stem(module.STUDY, budget)}_eval_{'_'.join(sources)}.json")
    atomic_write_text(path, json.dumps(json_safe(res), indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
