"""The paper's main claim on real images: do shape priors and the instance embedding carry masks to object
categories never seen in training? (issue 13, item 7)

Masks are learnt on IoTKITs `train/` only (electronics boards on desks) and scored, class-agnostic with
ground-truth boxes, on `coco128_seg` (80 COCO categories, none of them boards). Variants, all on the shipped
real-model config (`training/configs/real_lite0.yaml`: frozen ImageNet EfficientNet-Lite0, 32-channel mask
branch) with the same steps and seeds:

    full            shape priors + instance embedding (ShapeMask)
    prior_only      shape priors, no instance embedding
    embedding_only  instance embedding, no shape priors
    neither         the class-agnostic baseline: no priors, no embedding
    oracle          ShapeMask trained on IoTKITs + COCO-mini (COCO shapes seen; the reference ceiling)

Shape priors come from each variant's own training masks (k-means, K = 32). The box-filled floor and the
in-domain score (IoTKITs `valid/`) are reported beside. Results accumulate in one JSON (one entry per
variant and seed; trained models are cached by config hash under the work dir, so a study can be run in
parts and resumed) and the markdown is rendered from it.

    python -m shapemask_training.experiments.real_novel --steps 600 --seed 0          # then --seed 1

Needs the imported sets of `models/make_real_model.sh` (steps 1-2: `--real-dir out/real`) and the converted
backbone (`out/backbones/efficientnet_lite0_imagenet.npz`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
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
REPORT_STEM = "real_novel_categories"

# name -> (label, mask overrides, training data: "boards" = IoTKITs train only, "boards+coco" = oracle)
VARIANTS: dict[str, tuple[str, dict[str, bool], str]] = {
    "neither": (
        "baseline (no prior, no embedding)",
        {"use_shape_prior": False, "use_instance_embedding": False},
        "boards",
    ),
    "embedding_only": ("instance embedding only", {"use_shape_prior": False}, "boards"),
    "prior_only": ("shape priors only", {"use_instance_embedding": False}, "boards"),
    "full": ("ShapeMask (priors + embedding)", {}, "boards"),
    "oracle": ("oracle: ShapeMask, COCO-mini in training", {}, "boards+coco"),
}
# the oracle's COCO-mini images are repeated so the 64 images are not drowned by 2,488 board photos
# (as in the shipped model's mix)
COCO_REPEATS = 6
NUM_PRIORS = 32


def _real_files(real_dir: str) -> dict[str, str]:
    files = {
        "boards": os.path.join(real_dir, "iotkits_train.json"),
        "coco_mini": os.path.join(real_dir, "coco_mini_train.json"),
        "novel": os.path.join(real_dir, "coco128_seg.json"),
        "seen": os.path.join(real_dir, "iotkits_valid.json"),
    }
    missing = [p for p in files.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"missing {missing}: run steps 1-2 of models/make_real_model.sh (import-dataset) first")
    return files


def prepare_data(source: str, real_dir: str, work_dir: str, progress: bool = False) -> tuple[str, str]:
    """TFRecords and k-means priors for one training source (cached): (train_pattern, priors_path)."""
    from shapemask_training.data.importers import import_dataset
    from shapemask_training.data.tfrecords import write_tfrecords
    from shapemask_training.priors import compute_priors, save_priors

    files = _real_files(real_dir)
    ann = files["boards"]
    if source == "boards+coco":
        # the merged JSON lives in real_dir so its relative image paths resolve like the imported sets'
        ann = os.path.join(real_dir, "real_novel_boards_coco.json")
        if not exists(ann):
            specs = [f"{files['coco_mini']}={real_dir}"] * COCO_REPEATS + [f"{files['boards']}={real_dir}"]
            import_dataset(specs, [], ann, agnostic=True)
    elif source != "boards":
        raise ValueError(f"unknown training source {source!r}")
    key = source.replace("+", "_")
    out = os.path.join(work_dir, "data", key)
    pattern = os.path.join(out, "train-*.tfrecord")
    if not exists(os.path.join(out, "train-meta.json")):
        write_tfrecords(ann, real_dir, os.path.join(out, "train"), num_shards=8, progress=progress)
    priors = os.path.join(out, f"priors_k{NUM_PRIORS}.npy")
    if not exists(priors):
        p, info = compute_priors(ann, k=NUM_PRIORS, seed=0, progress=progress)
        save_priors(priors, p, info)
    return pattern, priors


def variant_config(
    name: str,
    steps: int,
    seed: int,
    pattern: str,
    priors: str,
    work_dir: str,
    mask: dict[str, bool] | None = None,
    study: str = "real_novel",
) -> ExperimentConfig:
    """real_lite0.yaml with the variant's mask switches (default: this study's VARIANTS[name]), data, priors,
    steps (schedule scaled) and seed; `study` names the run (another study reusing the recipe)."""
    if mask is None:
        _, mask, _ = VARIANTS[name]
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
    from shapemask_training.evaluation import box_fill_predict, evaluate_predictor

    metrics, _ = evaluate_predictor(box_fill_predict, ann, image_dir, "gt", None, progress=False)
    return _segm(metrics)


def run_variant(name: str, steps: int, seed: int, real_dir: str, work_dir: str, progress: bool) -> dict[str, Any]:
    import keras

    from shapemask_training.run import load_trained_model

    files = _real_files(real_dir)
    pattern, priors = prepare_data(VARIANTS[name][2], real_dir, work_dir, progress)
    cfg = variant_config(name, steps, seed, pattern, priors, work_dir)
    log.info("real_novel / %s seed %d: model_dir %s", name, seed, cfg.model_dir)
    train = train_variant(cfg, progress=progress)
    model = load_trained_model(cfg)
    t0 = time.perf_counter()
    row = {
        "variant": name,
        "label": VARIANTS[name][0],
        "seed": seed,
        "steps": steps,
        "train_source": VARIANTS[name][2],
        "priors_path": repo_relative(priors),
        "train": train,
        "novel": score(model, files["novel"], real_dir, progress),
        "seen": score(model, files["seen"], real_dir, progress),
    }
    row["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    del model
    keras.backend.clear_session()
    return row


def load_results(path: str) -> dict[str, Any]:
    return json.loads(read_text(path)) if exists(path) else {"runs": [], "floors": {}}


def render(results: dict[str, Any]) -> str:
    """Markdown of the results JSON: novel (coco128_seg) and seen (IoTKITs valid) mask AP per variant, seeds
    side by side, mean, and the ratio to the baseline's mean."""
    runs = results.get("runs", [])
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["variant"], r["seed"]): r for r in runs}
    floors = results.get("floors", {})

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    base = mean([by[("neither", s)]["novel"]["AP"] for s in seeds if ("neither", s) in by])
    floor = floors.get("novel", {}).get("AP")
    head = ["variant", *[f"novel AP seed {s}" for s in seeds], "novel AP mean", "× baseline", "× box-filled"]
    head += ["AP50", "AP75"]
    head += [f"seen AP seed {s}" for s in seeds]
    lines = [
        "### Novel categories on real images: masks learnt on boards (IoTKITs train), scored on COCO (coco128_seg)",
        "",
        "Class-agnostic mask AP (pycocotools) with ground-truth boxes. Novel: coco128_seg (128 images, 80 COCO",
        "categories, none in training). Seen: IoTKITs valid (620 board images, never trained on).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, (label, _, _) in VARIANTS.items():
        rows = [by[(name, s)] for s in seeds if (name, s) in by]
        if not rows:
            continue
        novel = [r["novel"]["AP"] for r in rows]
        m = mean(novel)
        ratio = f"{m / base:.2f}×" if m is not None and base else "–"
        over_floor = f"{m / floor:.2f}×" if m is not None and floor else "–"
        cells = [label, *[fmt(by[(name, s)]["novel"]["AP"]) if (name, s) in by else "–" for s in seeds]]
        cells += [
            fmt(m),
            ratio,
            over_floor,
            fmt(mean([r["novel"]["AP50"] for r in rows])),
            fmt(mean([r["novel"]["AP75"] for r in rows])),
        ]
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
            f"- {r['variant']} seed {r['seed']}: {r['steps']} steps on {r['train_source']}, "
            f"train {fmt(t.get('train_wall_s'))} s{' (reused)' if t.get('reused') else ''}, "
            f"model_dir `{os.path.basename(t['model_dir'])}`"
        )
    for c in results.get("commands", []):
        lines.append(f"- command: `{c}`")
    return "\n".join(lines) + "\n"


def run_study(args: argparse.Namespace) -> int:
    out_json = os.path.join(args.out, f"{REPORT_STEM}.json")
    results = load_results(out_json)
    if args.render_only:
        atomic_write_text(os.path.join(args.out, f"{REPORT_STEM}.md"), render(results))
        return 0
    files = _real_files(args.real_dir)
    if not results.get("floors"):
        results["floors"] = {
            "novel": box_filled(files["novel"], args.real_dir),
            "seen": box_filled(files["seen"], args.real_dir),
        }
    command = "python -m shapemask_training.experiments.real_novel " + " ".join(args.argv)
    for name in args.variants:
        row = run_variant(name, args.steps, args.seed, args.real_dir, args.work_dir, args.progress)
        results["runs"] = [
            r for r in results["runs"] if (r["variant"], r["seed"], r["steps"]) != (name, args.seed, args.steps)
        ] + [row]
        results["runs"].sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
        results["commands"] = sorted(set(results.get("commands", [])) | {command})
        # written after every variant: a study stopped part-way keeps what it finished
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(out_json, json.dumps(results, indent=1))
        atomic_write_text(os.path.join(args.out, f"{REPORT_STEM}.md"), render(results))
        log.info("%s seed %d: novel AP %s, seen AP %s", name, args.seed, row["novel"]["AP"], row["seen"]["AP"])
    return 0


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=600, help="training steps of every variant (same budget)")
    p.add_argument("--seed", type=int, default=0, help="model seed (initialisation, data order, augmentation)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    p.add_argument("--real-dir", default="out/real", help="folder of the imported COCO JSONs and their images")
    p.add_argument("--work-dir", default="out/real_novel", help="cached data, priors and models")
    p.add_argument("--out", default="docs/results/real_data", help="report folder")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--render-only", action="store_true", help="re-render the markdown from the JSON; train nothing")


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    p = argparse.ArgumentParser(prog="real_novel", description=__doc__.split("\n\n")[0])
    add_args(p)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run_study(args)


if __name__ == "__main__":
    raise SystemExit(main())
