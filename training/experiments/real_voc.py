"""The paper's main claim in its own split, on real COCO images: masks learnt only on the 20 PASCAL VOC
categories, scored on the other 60 (issue 23, item 3; paper Table 2, "VOC -> non-VOC").

Training images: the real COCO training images of the round-2 default (coco_mini + coco_tiny, 20 % of each
held out; `models/real_round2.sh data`). Every variant sees only the masks and boxes of VOC-category instances
(images with none are left out); the oracle sees the same images with every category's instances. Scored
class-agnostic with ground-truth boxes (pycocotools, each mask scored 1.0) on `coco128_seg`, never trained on:
its non-VOC instances (novel) and, for reference, its VOC instances (seen). Variants, all on the shipped real
config (`training/configs/real_lite0.yaml`) with the same steps and seeds:

    full            shape priors + instance embedding (ShapeMask)
    prior_only      shape priors, no instance embedding
    embedding_only  instance embedding, no shape priors
    neither         the class-agnostic baseline: no priors, no embedding
    oracle          ShapeMask trained on every category (what the split can support)

Shape priors come from each variant's own training masks (k-means, K = 32). Results accumulate in one JSON (one
entry per variant and seed; models are cached by config hash, so a study runs in parts and resumes).

    python -m shapemask_training.experiments.real_voc --steps 300 --seed 0      # then --seed 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from shapemask_ros.utils.formatting import fmt
from shapemask_ros.utils.io import atomic_write_text, exists, read_text
from shapemask_training.experiments import real_novel
from shapemask_training.experiments.variants import repo_relative, train_variant

log = logging.getLogger(__name__)

REPORT_STEM = "real_voc_to_nonvoc"
# COCO names of the 20 PASCAL VOC categories (the paper's split; COCO ids in
# shapemask_ros.datasets.category_splits.VOC_CATEGORY_IDS)
VOC_NAMES = frozenset(
    {
        "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat",
        "dog", "horse", "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table", "tv",
    }
)  # fmt: skip
# name -> (label, mask switches, training instances: "voc" or "all")
VARIANTS: dict[str, tuple[str, dict[str, bool], str]] = {
    "neither": (
        "baseline (no prior, no embedding)",
        {"use_shape_prior": False, "use_instance_embedding": False},
        "voc",
    ),
    "embedding_only": ("instance embedding only", {"use_shape_prior": False}, "voc"),
    "prior_only": ("shape priors only", {"use_instance_embedding": False}, "voc"),
    "full": ("ShapeMask (priors + embedding)", {}, "voc"),
    "oracle": ("oracle: ShapeMask, all categories in training", {}, "all"),
}


def _agnostic(coco: dict[str, Any], keep) -> dict[str, Any]:
    """Class-agnostic copy keeping the annotations `keep(category name)` accepts, and only images with one."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = [dict(a, category_id=1) for a in coco["annotations"] if keep(names[a["category_id"]])]
    ids = {a["image_id"] for a in anns}
    return {
        "images": [im for im in coco["images"] if im["id"] in ids],
        "annotations": anns,
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
    }


def prepare_sets(real_dir: str, data_dir: str) -> dict[str, str]:
    """Named imports split by VOC category (cached in real_dir, so relative image paths resolve as the other
    imports'): {"train_voc", "train_all", "novel", "seen"} -> class-agnostic COCO JSON paths."""
    from shapemask_training.data.importers import import_dataset

    out = {k: os.path.join(real_dir, f"voc_study_{k}.json") for k in ("train_voc", "train_all", "novel", "seen")}
    if all(exists(p) for p in out.values()):
        return out
    train_ref = os.path.join(real_dir, "coco_train.json")
    if not exists(train_ref):
        raise FileNotFoundError(f"missing {train_ref}: run `models/real_round2.sh data` first")
    mini = os.path.join(data_dir, "coco_mini", "annotations", "instances_train2017.json")
    tiny = os.path.join(data_dir, "coco_tiny")
    # COCO's 80 names in id order = the YOLO class indices of coco128_seg
    names = [c["name"] for c in sorted(json.loads(read_text(mini))["categories"], key=lambda c: c["id"])]
    names_path = os.path.join(real_dir, "voc_study_coco80_names.txt")
    atomic_write_text(names_path, "\n".join(names) + "\n")
    named = os.path.join(real_dir, "voc_study_coco_named.json")
    import_dataset(
        [
            f"{mini}={os.path.join(data_dir, 'coco_mini', 'train2017')}",
            f"{os.path.join(tiny, 'annotations', 'instances_train2017.json')}={os.path.join(tiny, 'train2017')}",
            f"{os.path.join(tiny, 'annotations', 'instances_val2017.json')}={os.path.join(tiny, 'val2017')}",
        ],
        [],
        named,
        class_names=None,
    )
    coco = json.loads(read_text(named))
    # the round-2 training images only (the held-out selection images stay out), matched by file
    train_files = {im["file_name"] for im in json.loads(read_text(train_ref))["images"]}
    coco["images"] = [im for im in coco["images"] if im["file_name"] in train_files]
    kept = {im["id"] for im in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    if len(coco["images"]) != len(train_files):
        raise RuntimeError(f"{len(coco['images'])} of {len(train_files)} training images found by file name")
    atomic_write_text(out["train_voc"], json.dumps(_agnostic(coco, lambda n: n in VOC_NAMES)))
    atomic_write_text(out["train_all"], json.dumps(_agnostic(coco, lambda n: True)))
    c128 = os.path.join(real_dir, "voc_study_coco128_named.json")
    import_dataset([], [os.path.join(data_dir, "coco128_seg", "images", "train2017")], c128, class_names=names)
    c128d = json.loads(read_text(c128))
    unknown = {c["name"] for c in c128d["categories"]} - set(names)
    if unknown:
        raise RuntimeError(f"coco128_seg classes without a COCO name: {sorted(unknown)}")
    atomic_write_text(out["novel"], json.dumps(_agnostic(c128d, lambda n: n not in VOC_NAMES)))
    atomic_write_text(out["seen"], json.dumps(_agnostic(c128d, lambda n: n in VOC_NAMES)))
    return out


def prepare_data(source: str, sets: dict[str, str], real_dir: str, work_dir: str) -> tuple[str, str]:
    """TFRecords and k-means priors of one training source (cached): (train_pattern, priors_path)."""
    from shapemask_training.data.tfrecords import write_tfrecords
    from shapemask_training.priors import compute_priors, save_priors

    ann = sets[f"train_{source}"]
    out = os.path.join(work_dir, "data", source)
    if not exists(os.path.join(out, "train-meta.json")):
        write_tfrecords(ann, real_dir, os.path.join(out, "train"), num_shards=4)
    priors = os.path.join(out, f"priors_k{real_novel.NUM_PRIORS}.npy")
    if not exists(priors):
        p, info = compute_priors(ann, k=real_novel.NUM_PRIORS, seed=0)
        save_priors(priors, p, info)
    return os.path.join(out, "train-*.tfrecord"), priors


def run_variant(name: str, steps: int, seed: int, real_dir: str, data_dir: str, work_dir: str) -> dict[str, Any]:
    import keras

    from shapemask_training.run import load_trained_model

    sets = prepare_sets(real_dir, data_dir)
    label, mask, source = VARIANTS[name]
    pattern, priors = prepare_data(source, sets, real_dir, work_dir)
    cfg = real_novel.variant_config(name, steps, seed, pattern, priors, work_dir, mask=mask, study="real_voc")
    log.info("real_voc / %s seed %d: model_dir %s", name, seed, cfg.model_dir)
    train = train_variant(cfg)
    model = load_trained_model(cfg)
    t0 = time.perf_counter()
    row = {
        "variant": name,
        "label": label,
        "seed": seed,
        "steps": steps,
        "train_source": source,
        "priors_path": repo_relative(priors),
        "train": train,
        "novel": real_novel.score(model, sets["novel"], real_dir),
        "seen": real_novel.score(model, sets["seen"], real_dir),
        "eval_wall_s": 0.0,
    }
    row["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    del model
    keras.backend.clear_session()
    return row


def render(results: dict[str, Any]) -> str:
    """Markdown of the results JSON: novel (non-VOC) and seen (VOC) mask AP per variant, seeds side by side."""
    runs = results.get("runs", [])
    seeds = sorted({r["seed"] for r in runs})
    by = {(r["variant"], r["seed"]): r for r in runs}
    floors = results.get("floors", {})

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    base = mean([by[("neither", s)]["novel"]["AP"] for s in seeds if ("neither", s) in by])
    floor = floors.get("novel", {}).get("AP")
    head = ["variant", *[f"non-VOC AP seed {s}" for s in seeds], "non-VOC AP mean", "− baseline", "× box-filled"]
    head += ["AP50", "AP75", *[f"VOC AP seed {s}" for s in seeds]]
    sets = results.get("sets", {})
    lines = [
        "### VOC → non-VOC on real images: masks learnt on the 20 VOC categories, scored on the other 60",
        "",
        "Class-agnostic mask AP (pycocotools) with ground-truth boxes on coco128_seg (never trained on):",
        f"non-VOC instances ({sets.get('novel', '?')}) and VOC instances ({sets.get('seen', '?')}). Training: the",
        "VOC-category instances of the round-2 COCO training images (coco_mini + coco_tiny, selection images held",
        f"out; {sets.get('train_voc', '?')}); the oracle: every instance of the same images",
        f"({sets.get('train_all', '?')}).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, (label, _, _) in VARIANTS.items():
        rows = [by[(name, s)] for s in seeds if (name, s) in by]
        if not rows:
            continue
        m = mean([r["novel"]["AP"] for r in rows])
        cells = [label, *[fmt(by[(name, s)]["novel"]["AP"]) if (name, s) in by else "–" for s in seeds], fmt(m)]
        cells.append(f"{m - base:+.1f}" if m is not None and base is not None else "–")
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
            f"- {r['variant']} seed {r['seed']}: {r['steps']} steps on {r['train_source']} instances, "
            f"train {fmt(t.get('train_wall_s'))} s{' (reused)' if t.get('reused') else ''}, "
            f"model_dir `{os.path.basename(t['model_dir'])}`"
        )
    for c in results.get("commands", []):
        lines.append(f"- command: `{c}`")
    return "\n".join(lines) + "\n"


def _counts(path: str) -> str:
    d = json.loads(read_text(path))
    return f"{len(d['images'])} images, {len(d['annotations'])} instances"


def run_study(args: argparse.Namespace) -> int:
    out_json = os.path.join(args.out, f"{REPORT_STEM}.json")
    results = json.loads(read_text(out_json)) if exists(out_json) else {"runs": [], "floors": {}}
    if args.render_only:
        atomic_write_text(os.path.join(args.out, f"{REPORT_STEM}.md"), render(results))
        return 0
    sets = prepare_sets(args.real_dir, args.data_dir)
    results["sets"] = {k: _counts(p) for k, p in sets.items()}
    if not results.get("floors"):
        results["floors"] = {
            "novel": real_novel.box_filled(sets["novel"], args.real_dir),
            "seen": real_novel.box_filled(sets["seen"], args.real_dir),
        }
    command = "python -m shapemask_training.experiments.real_voc " + " ".join(args.argv)
    for name in args.variants:
        row = run_variant(name, args.steps, args.seed, args.real_dir, args.data_dir, args.work_dir)
        results["runs"] = [
            r for r in results["runs"] if (r["variant"], r["seed"], r["steps"]) != (name, args.seed, args.steps)
        ] + [row]
        results["runs"].sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"]))
        results["commands"] = sorted(set(results.get("commands", [])) | {command})
        # written after every variant: a study stopped part-way keeps what it finished
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(out_json, json.dumps(results, indent=1))
        atomic_write_text(os.path.join(args.out, f"{REPORT_STEM}.md"), render(results))
        log.info("%s seed %d: non-VOC AP %s, VOC AP %s", name, args.seed, row["novel"]["AP"], row["seen"]["AP"])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    p = argparse.ArgumentParser(prog="real_voc", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="training steps of every variant (same budget)")
    p.add_argument("--seed", type=int, default=0, help="model seed (initialisation, data order, augmentation)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    p.add_argument("--real-dir", default="out/real2", help="folder of models/real_round2.sh's imports")
    p.add_argument("--data-dir", default=os.environ.get("SHAPEMASK_DATA", "../shared/data"), help="shared data")
    p.add_argument("--work-dir", default="out/real_voc", help="cached data, priors and models")
    p.add_argument("--out", default="docs/results/real_data", help="report folder")
    p.add_argument("--render-only", action="store_true", help="re-render the markdown from the JSON; train nothing")
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
