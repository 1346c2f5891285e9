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

import json
import os
from collections.abc import Sequence
from typing import Any

from shapemask_ros.utils.io import atomic_write_text, exists, read_text
from shapemask_training.experiments import real_study

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
VARIANTS = real_study.study_variants("voc", "oracle: ShapeMask, all categories in training", "all")


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
    # progress bars on, as write_tfrecords and compute_priors default to (this study has no --progress)
    out = os.path.join(work_dir, "data", source)
    return real_study.cached_training_data(sets[f"train_{source}"], real_dir, out, num_shards=4, progress=True)


def _intro(results: dict[str, Any]) -> list[str]:
    sets = results.get("sets", {})
    return [
        "### VOC → non-VOC on real images: masks learnt on the 20 VOC categories, scored on the other 60",
        "",
        "Class-agnostic mask AP (pycocotools) with ground-truth boxes on coco128_seg (never trained on):",
        f"non-VOC instances ({sets.get('novel', '?')}) and VOC instances ({sets.get('seen', '?')}). Training: the",
        "VOC-category instances of the round-2 COCO training images (coco_mini + coco_tiny, selection images held",
        f"out; {sets.get('train_voc', '?')}); the oracle: every instance of the same images",
        f"({sets.get('train_all', '?')}).",
        "",
    ]


STUDY = real_study.RealStudy(
    name="real_voc",
    description=(__doc__ or "").split("\n\n")[0],
    report_stem=REPORT_STEM,
    variants=VARIANTS,
    steps=300,
    real_dir="out/real2",
    real_dir_help="folder of models/real_round2.sh's imports",
    work_dir="out/real_voc",
    scored_sets=lambda args: prepare_sets(args.real_dir, args.data_dir),
    train_data=lambda source, sets, args: prepare_data(source, sets, args.real_dir, args.work_dir),
    intro=_intro,
    novel="non-VOC",
    seen="VOC",
    baseline_header="− baseline",
    versus_baseline=real_study.difference_to_baseline,
    source_suffix=" instances",
    record_set_sizes=True,
    data_dir_option=True,
)


def render(results: dict[str, Any]) -> str:
    """Markdown of the results JSON: novel (non-VOC) and seen (VOC) mask AP per variant, seeds side by side."""
    return real_study.render(STUDY, results)


def main(argv: Sequence[str] | None = None) -> int:
    return real_study.main(STUDY, argv)


if __name__ == "__main__":
    raise SystemExit(main())
