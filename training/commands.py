"""Argument parsing for the training-side subcommands of `shapemask` (make-synthetic, train, eval, export)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import yaml

from shapemask_training.config import ExperimentConfig, load_config


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """`a.b.c=value` pairs (value parsed as YAML) -> nested dict."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="experiment YAML (training/configs/*.yaml); defaults otherwise")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override config fields, e.g. --set train.steps=100 model.image_size=256",
    )
    p.add_argument("--model-dir", default=None, help="override model_dir (checkpoints, TensorBoard, config)")


def _load(args: argparse.Namespace) -> ExperimentConfig:
    overrides = parse_overrides(args.set)
    if args.model_dir:
        overrides["model_dir"] = args.model_dir
    return load_config(args.config, overrides)


# -- make-synthetic ------------------------------------------------------------------------------------
def add_synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (images/ + annotations.json)")
    p.add_argument("--images", type=int, default=200, help="number of images")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="same seed -> identical dataset")
    p.add_argument("--max-instances", type=int, default=6, help="objects per image at most")
    p.add_argument("--families", default="", help="comma-separated shape families (names or ids); '' = all")
    p.add_argument("--no-clutter", action="store_true", help="plain backgrounds")


def run_synthetic(args: argparse.Namespace) -> int:
    from shapemask_ros.datasets.synthetic import generate_dataset

    fams = [f.strip() for f in args.families.split(",") if f.strip()] or None
    path = generate_dataset(
        args.out,
        args.images,
        args.height,
        args.width,
        args.seed,
        max_instances=args.max_instances,
        families=fams,
        clutter=not args.no_clutter,
        progress=True,
    )
    print(path)
    return 0


# -- train -------------------------------------------------------------------------------------------------
def add_train_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--steps", type=int, default=None, help="train until this step (default: train.steps)")
    p.add_argument("--no-progress", action="store_true")


def run_train(args: argparse.Namespace) -> int:
    from shapemask_training.run import train_experiment

    last = train_experiment(_load(args), steps=args.steps, progress=not args.no_progress)
    print(json.dumps(last, indent=1))
    return 0


# -- eval --------------------------------------------------------------------------------------------------
def add_eval_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--annotations", required=True, help="COCO JSON of the evaluation images")
    p.add_argument("--images", required=True, help="image directory")
    p.add_argument(
        "--box-source",
        default="model",
        choices=["model", "gt", "gt_shrunk", "gt_noisy"],
        help="model detections, ground-truth boxes, GT boxes shrunk by U(0.75, 1) (paper Table 3), or GT boxes "
        "with each edge moved by N(0, 0.1 x side) (a detector's errors)",
    )
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--splits", default="", help="comma list of named splits for per-split AP, e.g. voc,nonvoc")
    p.add_argument("--results", default=None, help="write COCO results JSON here")
    p.add_argument("--metrics", default=None, help="write metrics JSON here")
    p.add_argument("--seed", type=int, default=0, help="seed of the shrunk-box perturbation")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint path (default: latest in model_dir); e.g. to select one on held-out data",
    )


def run_eval(args: argparse.Namespace) -> int:
    from shapemask_ros.evaluation.coco_metrics import named_splits
    from shapemask_ros.utils.io import atomic_write_text
    from shapemask_training.evaluation import format_metrics_table
    from shapemask_training.run import dataset_category_ids, evaluate_experiment

    cfg = _load(args)
    splits = None
    if args.splits:
        from dataclasses import replace

        cats = dataset_category_ids(replace(cfg, data=replace(cfg.data, eval_annotations=args.annotations)))
        splits = named_splits([s for s in args.splits.split(",") if s], cats)
    model = None
    if args.checkpoint:
        from shapemask_training.run import load_trained_model

        model = load_trained_model(cfg, args.checkpoint)
    metrics = evaluate_experiment(
        cfg,
        args.annotations,
        args.images,
        args.box_source,
        args.max_images,
        model=model,
        splits=splits,
        results_path=args.results,
        seed=args.seed,
    )
    print(format_metrics_table(metrics))
    if args.metrics:
        atomic_write_text(args.metrics, json.dumps(metrics, indent=1, default=str))
    return 0


# -- export ------------------------------------------------------------------------------------------------
def add_export_args(p: argparse.ArgumentParser) -> None:
    _config_args(p)
    p.add_argument("--out", required=True, help="bundle directory (replaced atomically)")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default: latest in model_dir)")
    p.add_argument("--annotations", default=None, help="COCO JSON to take class names from (default: ids)")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-saved-model", action="store_true")
    p.add_argument("--verify", action="store_true", help="compare ONNX Runtime with TensorFlow after export")
    p.add_argument(
        "--onnx-weights",
        choices=("fp32", "fp16"),
        default="fp32",
        help="fp16: store the ONNX weights as float16 (half the files; inference still computes in float32)",
    )


def run_export(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from shapemask_ros.export.bundle import export_bundle, random_inputs, serving_functions
    from shapemask_ros.export.onnx_check import check_tensorrt_compatible, compare_with_tensorflow
    from shapemask_training.run import class_names_for, dataset_category_ids, load_trained_model

    cfg = _load(args)
    if args.annotations:
        cfg = replace(cfg, data=replace(cfg.data, eval_annotations=args.annotations))
    cats = dataset_category_ids(cfg)
    names = class_names_for(args.annotations, cats) if args.annotations else [str(c) for c in cats]
    model = load_trained_model(cfg, args.checkpoint)
    out = export_bundle(
        model,
        args.out,
        names,
        onnx=not args.no_onnx,
        saved_model=not args.no_saved_model,
        onnx_weights=args.onnx_weights,
        extra={"category_ids": list(cats)},
    )
    print(out)
    if args.verify and not args.no_onnx:
        fns = serving_functions(model)
        image, boxes, classes = random_inputs(cfg.model.image_size, 20)
        err = compare_with_tensorflow(
            fns["segment_boxes"], f"{out}/segment_boxes.onnx", {"image": image, "boxes": boxes, "classes": classes}
        )
        print("segment_boxes max |ORT - TF|:", err)
        for name in ("segment_boxes", "detect_and_segment"):
            problems = check_tensorrt_compatible(f"{out}/{name}.onnx")
            print(f"{name}: TensorRT operator check:", problems or "ok")
    return 0
