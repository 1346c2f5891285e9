"""The runner both real-image studies use (`real_novel`: boards -> COCO, issue 13; `real_voc`: VOC -> non-VOC on
COCO, issue 23): the recipe every variant trains, the scoring, the results JSON and its markdown.

Every variant trains the shipped real-model config (`training/configs/real_lite0.yaml`) with only its mask
switches, training data, shape priors (k-means, K = 32, from its own training masks), steps (schedule scaled)
and seed changed; models are cached by config hash, so a study runs in parts and resumes. Scoring is
class-agnostic mask AP with ground-truth boxes (pycocotools, each mask scored 1.0) on a study's two scored sets,
`novel` (categories never trained on) and `seen`, with box-filled masks as the floor. Results accumulate in one
JSON per study (one entry per variant and seed) and the markdown is rendered from it.

A study is a `RealStudy`: its variants, how it prepares its scored sets and each variant's training data, and
the words of its report. `main(study)` is its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapemask_ros.config.loading import to_dict
from shapemask_ros.utils.formatting import fmt
from shapemask_ros.utils.io import atomic_write_text, exists, read_text
from shapemask_training.config import ExperimentConfig, load_config
from shapemask_training.experiments.hashing import digest
from shapemask_training.experiments.variants import repo_relative, train_variant

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO_ROOT / "training" / "configs" / "real_lite0.yaml"
NUM_PRIORS = 32

# variant name -> (label, mask switches, training source)
Variants = Mapping[str, tuple[str, dict[str, bool], str]]

# The ablations every real study trains on its own training data: name -> (label, mask switches)
ABLATIONS: dict[str, tuple[str, dict[str, bool]]] = {
    "neither": ("baseline (no prior, no embedding)", {"use_shape_prior": False, "use_instance_embedding": False}),
    "embedding_only": ("instance embedding only", {"use_shape_prior": False}),
    "prior_only": ("shape priors only", {"use_instance_embedding": False}),
    "full": ("ShapeMask (priors + embedding)", {}),
}


def study_variants(source: str, oracle_label: str, oracle_source: str) -> dict[str, tuple[str, dict[str, bool], str]]:
    """The ablations trained on `source`, then the oracle: ShapeMask trained on `oracle_source` (what the
    novel categories' masks could reach with them in training)."""
    out = {name: (label, mask, source) for name, (label, mask) in ABLATIONS.items()}
    out["oracle"] = (oracle_label, {}, oracle_source)
    return out


def ratio_to_baseline(m: float | None, base: float | None) -> str:
    """A variant's mean novel AP as a multiple of the baseline's."""
    return f"{m / base:.2f}×" if m is not None and base else "–"


def difference_to_baseline(m: float | None, base: float | None) -> str:
    """A variant's mean novel AP minus the baseline's, in AP points."""
    return f"{m - base:+.1f}" if m is not None and base is not None else "–"


@dataclass(frozen=True)
class RealStudy:
    """What differs between the real-image studies (the rest is this module's)."""

    name: str  # the module under shapemask_training.experiments, and the prefix of its runs' names
    description: str  # the command line's
    report_stem: str  # <out>/<report_stem>.json and .md
    variants: Variants
    # defaults of its command line (`add_args`)
    steps: int  # training steps of every variant
    real_dir: str  # the folder of its imported sets
    real_dir_help: str
    work_dir: str  # cached data, priors and models
    # (args) -> the annotation JSONs it scores on: {"novel": ..., "seen": ...} (and any others it records)
    scored_sets: Callable[[argparse.Namespace], dict[str, str]]
    # (training source, scored sets, args) -> (train_pattern, priors_path) of a variant's training data
    train_data: Callable[[str, dict[str, str], argparse.Namespace], tuple[str, str]]
    # (results) -> the report's heading and the lines above its table
    intro: Callable[[dict[str, Any]], list[str]]
    novel: str = "novel"  # what the table and the log call the two scored sets
    seen: str = "seen"
    # the column comparing a variant's mean novel AP with the baseline's, and its cell (mean, baseline mean)
    baseline_header: str = "× baseline"
    versus_baseline: Callable[[float | None, float | None], str] = ratio_to_baseline
    source_suffix: str = ""  # after a run's training source in "How it was made"
    record_set_sizes: bool = False  # also record the scored and training sets' sizes (results["sets"])
    data_dir_option: bool = False  # --data-dir: it imports from the shared data itself
    progress_option: bool = False  # --progress: progress bars (without it: none)


def variant_config(
    name: str,
    steps: int,
    seed: int,
    pattern: str,
    priors: str,
    work_dir: str,
    mask: dict[str, bool],
    study: str,
) -> ExperimentConfig:
    """real_lite0.yaml with the variant's mask switches, data, priors, steps (schedule scaled) and seed; named
    `<study>/<name>`, its model_dir keyed by the config's content."""
    over = {
        "model": {"mask": {"priors_path": priors, **mask}},
        "data": {"train_pattern": pattern},
        "train": {
            "steps": steps,
            "seed": seed,
            "warmup_steps": max(1, steps // 5),
            # the shipped schedule (1,000 steps, decays at 750 and 920) scaled to `steps`
            "lr_decay_steps": [int(steps * 0.75), int(steps * 0.92)],
            "checkpoint_every": max(1, min(200, steps)),
            "log_every": max(1, min(50, steps)),
        },
    }
    cfg = load_config(str(BASE_CONFIG), over)
    d = to_dict(cfg)
    d.pop("name"), d.pop("model_dir")
    return dataclasses.replace(cfg, name=f"{study}/{name}", model_dir=os.path.join(work_dir, "models", digest(d, 16)))


def cached_training_data(ann: str, image_dir: str, out: str, num_shards: int, progress: bool) -> tuple[str, str]:
    """TFRecords (`num_shards` shards) and k-means shape priors (K = NUM_PRIORS) of a training annotation file,
    made once in `out`: (train_pattern, priors_path)."""
    from shapemask_training.data.tfrecords import write_tfrecords
    from shapemask_training.priors import compute_priors, save_priors

    if not exists(os.path.join(out, "train-meta.json")):
        write_tfrecords(ann, image_dir, os.path.join(out, "train"), num_shards=num_shards, progress=progress)
    priors = os.path.join(out, f"priors_k{NUM_PRIORS}.npy")
    if not exists(priors):
        p, info = compute_priors(ann, k=NUM_PRIORS, seed=0, progress=progress)
        save_priors(priors, p, info)
    return os.path.join(out, "train-*.tfrecord"), priors


def _segm(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics["segm"].get(k) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}


def score(model: Any, ann: str, image_dir: str, progress: bool = False) -> dict[str, Any]:
    """Class-agnostic mask AP with ground-truth boxes (pycocotools), each mask scored 1.0."""
    from shapemask_ros.runtime.backends.keras_backend import predictor_for_model
    from shapemask_training.evaluation import evaluate_predictor

    predictor = predictor_for_model(model, ["object"])
    metrics, _ = evaluate_predictor(predictor.predict, ann, image_dir, "gt", None, progress=progress)
    return _segm(metrics)


def box_filled(ann: str, image_dir: str) -> dict[str, Any]:
    """The floor: every ground-truth box filled as its mask, scored the same way."""
    from shapemask_training.evaluation import box_fill_predict, evaluate_predictor

    metrics, _ = evaluate_predictor(box_fill_predict, ann, image_dir, "gt", None, progress=False)
    return _segm(metrics)


def run_variant(study: RealStudy, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train variant `name` (or reuse its cached model) and score it on the study's novel and seen sets."""
    import keras

    from shapemask_training.run import load_trained_model

    sets = study.scored_sets(args)
    label, mask, source = study.variants[name]
    pattern, priors = study.train_data(source, sets, args)
    cfg = variant_config(name, args.steps, args.seed, pattern, priors, args.work_dir, mask=mask, study=study.name)
    log.info("%s / %s seed %d: model_dir %s", study.name, name, args.seed, cfg.model_dir)
    train = train_variant(cfg, progress=args.progress)
    model = load_trained_model(cfg)
    t0 = time.perf_counter()
    row = {
        "variant": name,
        "label": label,
        "seed": args.seed,
        "steps": args.steps,
        "train_source": source,
        "priors_path": repo_relative(priors),
        "train": train,
        "novel": score(model, sets["novel"], args.real_dir, args.progress),
        "seen": score(model, sets["seen"], args.real_dir, args.progress),
    }
    row["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    del model
    keras.backend.clear_session()
    return row


def _counts(path: str) -> str:
    d = json.loads(read_text(path))
    return f"{len(d['images'])} images, {len(d['annotations'])} instances"


def render(study: RealStudy, results: dict[str, Any]) -> str:
    """Markdown of a results JSON: novel and seen mask AP per variant, seeds side by side, the mean, how it
    compares with the baseline's mean and with the box-filled floor."""
    runs = results.get("runs", [])
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["variant"], r["seed"]): r for r in runs}
    floors = results.get("floors", {})

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    base = mean([by[("neither", s)]["novel"]["AP"] for s in seeds if ("neither", s) in by])
    floor = floors.get("novel", {}).get("AP")
    head = ["variant", *[f"{study.novel} AP seed {s}" for s in seeds], f"{study.novel} AP mean"]
    head += [study.baseline_header, "× box-filled", "AP50", "AP75", *[f"{study.seen} AP seed {s}" for s in seeds]]
    lines = [*study.intro(results), "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, (label, _, _) in study.variants.items():
        rows = [by[(name, s)] for s in seeds if (name, s) in by]
        if not rows:
            continue
        m = mean([r["novel"]["AP"] for r in rows])
        cells = [label, *[fmt(by[(name, s)]["novel"]["AP"]) if (name, s) in by else "–" for s in seeds], fmt(m)]
        cells.append(study.versus_baseline(m, base))
        cells.append(f"{m / floor:.2f}×" if m is not None and floor else "–")
        cells += [fmt(mean([r["novel"]["AP50"] for r in rows])), fmt(mean([r["novel"]["AP75"] for r in rows]))]
        cells += [fmt(by[(name, s)]["seen"]["AP"]) if (name, s) in by else "–" for s in seeds]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if floors:
        n, s_ = floors.get("novel", {}), floors.get("seen", {})
        lines.append(
            "| box-filled masks (floor) | "
            + " | ".join([fmt(n.get("AP"))] * len(seeds))
            + f" | {fmt(n.get('AP'))} | – | 1.00× | {fmt(n.get('AP50'))} | {fmt(n.get('AP75'))} | "
            + " | ".join([fmt(s_.get("AP"))] * len(seeds))
            + " |"
        )
    lines += ["", "How it was made:", ""]
    for r in runs:
        t = r["train"]
        lines.append(
            f"- {r['variant']} seed {r['seed']}: {r['steps']} steps on {r['train_source']}{study.source_suffix}, "
            f"train {fmt(t.get('train_wall_s'))} s{' (reused)' if t.get('reused') else ''}, "
            f"model_dir `{os.path.basename(t['model_dir'])}`"
        )
    for c in results.get("commands", []):
        lines.append(f"- command: `{c}`")
    return "\n".join(lines) + "\n"


def run_study(study: RealStudy, args: argparse.Namespace) -> int:
    """Train and score `args.variants` at one seed, rewriting the JSON and markdown after each (or, with
    --render-only, only re-render the markdown)."""
    out_json = os.path.join(args.out, f"{study.report_stem}.json")
    out_md = os.path.join(args.out, f"{study.report_stem}.md")
    results = json.loads(read_text(out_json)) if exists(out_json) else {"runs": [], "floors": {}}
    if args.render_only:
        atomic_write_text(out_md, render(study, results))
        return 0
    sets = study.scored_sets(args)
    if study.record_set_sizes:
        results["sets"] = {k: _counts(p) for k, p in sets.items()}
    if not results.get("floors"):
        results["floors"] = {
            "novel": box_filled(sets["novel"], args.real_dir),
            "seen": box_filled(sets["seen"], args.real_dir),
        }
    command = f"python -m shapemask_training.experiments.{study.name} " + " ".join(args.argv)
    for name in args.variants:
        row = run_variant(study, name, args)
        results["runs"] = [
            r for r in results["runs"] if (r["variant"], r["seed"], r["steps"]) != (name, args.seed, args.steps)
        ] + [row]
        results["runs"].sort(key=lambda r: (list(study.variants).index(r["variant"]), r["seed"]))
        results["commands"] = sorted(set(results.get("commands", [])) | {command})
        # written after every variant: a study stopped part-way keeps what it finished
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(out_json, json.dumps(results, indent=1))
        atomic_write_text(out_md, render(study, results))
        novel, seen = row["novel"]["AP"], row["seen"]["AP"]
        log.info("%s seed %d: %s AP %s, %s AP %s", name, args.seed, study.novel, novel, study.seen, seen)
    return 0


def add_args(p: argparse.ArgumentParser, study: RealStudy) -> None:
    """A study's command-line options, with its defaults."""
    variants = study.variants
    p.add_argument("--steps", type=int, default=study.steps, help="training steps of every variant (same budget)")
    p.add_argument("--seed", type=int, default=0, help="model seed (initialisation, data order, augmentation)")
    p.add_argument("--variants", default=",".join(variants), help=f"comma-separated subset of {list(variants)}")
    p.add_argument("--real-dir", default=study.real_dir, help=study.real_dir_help)
    if study.data_dir_option:
        p.add_argument("--data-dir", default=os.environ.get("SHAPEMASK_DATA", "../shared/data"), help="shared data")
    p.add_argument("--work-dir", default=study.work_dir, help="cached data, priors and models")
    p.add_argument("--out", default="docs/results/real_data", help="report folder")
    if study.progress_option:
        p.add_argument("--progress", action="store_true")
    p.add_argument("--render-only", action="store_true", help="re-render the markdown from the JSON; train nothing")


def main(study: RealStudy, argv: Sequence[str] | None = None) -> int:
    """The study's command line (`add_args`); --variants is a comma-separated subset of its variants."""
    import sys

    p = argparse.ArgumentParser(prog=study.name, description=study.description)
    p.set_defaults(progress=False)
    add_args(p, study)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(study.variants))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(study.variants)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_study(study, args)
