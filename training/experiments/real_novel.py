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
import os
from collections.abc import Sequence
from typing import Any

from shapemask_ros.utils.io import exists
from shapemask_training.experiments import real_study

REPORT_STEM = "real_novel_categories"

# name -> (label, mask switches, training data: "boards" = IoTKITs train only, "boards+coco" = oracle)
VARIANTS = real_study.study_variants("boards", "oracle: ShapeMask, COCO-mini in training", "boards+coco")
# the oracle's COCO-mini images are repeated so the 64 images are not drowned by 2,488 board photos
# (as in the shipped model's mix)
COCO_REPEATS = 6


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
    out = os.path.join(work_dir, "data", source.replace("+", "_"))
    return real_study.cached_training_data(ann, real_dir, out, num_shards=8, progress=progress)


def _train_data(source: str, sets: dict[str, str], args: argparse.Namespace) -> tuple[str, str]:
    return prepare_data(source, args.real_dir, args.work_dir, args.progress)


def _intro(results: dict[str, Any]) -> list[str]:
    return [
        "### Novel categories on real images: masks learnt on boards (IoTKITs train), scored on COCO (coco128_seg)",
        "",
        "Class-agnostic mask AP (pycocotools) with ground-truth boxes. Novel: coco128_seg (128 images, 80 COCO",
        "categories, none in training). Seen: IoTKITs valid (620 board images, never trained on).",
        "",
    ]


STUDY = real_study.RealStudy(
    name="real_novel",
    description=(__doc__ or "").split("\n\n")[0],
    report_stem=REPORT_STEM,
    variants=VARIANTS,
    steps=600,
    real_dir="out/real",
    real_dir_help="folder of the imported COCO JSONs and their images",
    work_dir="out/real_novel",
    scored_sets=lambda args: _real_files(args.real_dir),
    train_data=_train_data,
    intro=_intro,
    progress_option=True,
)


def render(results: dict[str, Any]) -> str:
    """Markdown of the results JSON: novel (coco128_seg) and seen (IoTKITs valid) mask AP per variant, seeds
    side by side, mean, and the ratio to the baseline's mean."""
    return real_study.render(STUDY, results)


def main(argv: Sequence[str] | None = None) -> int:
    return real_study.main(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
