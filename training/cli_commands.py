"""The training subcommands of `shapemask`, registered through the `shapemask_ros.commands` entry point.

The runtime CLI (`shapemask_ros.cli`) never imports the training package: it finds these commands through
the entry point that setup.py declares, so a runtime-only install (colcon) simply lacks them. Each value is
(module, add-args function, run function, one-line help); modules are imported only when their command runs.
"""

from __future__ import annotations

# fmt: off
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "make-synthetic": ("shapemask_training.commands", "add_synthetic_args", "run_synthetic",
                       "generate a COCO-format synthetic instance dataset (shapes with holes, concave, occluded)"),
    "priors": ("shapemask_training.priors", "add_priors_args", "run_priors",
               "k-means shape priors [C, K, 32, 32] from COCO masks, plus a PNG grid"),
    "make-tfrecords": ("shapemask_training.data.tfrecords", "add_tfrecords_args", "run_make_tfrecords",
                       "COCO JSON + images -> sharded TFRecords (bad annotations skipped and counted)"),
    "convert-backbone": ("shapemask_training.convert_backbone", "add_args", "run",
                         "ImageNet EfficientNet-Lite0/1/2 weights: PyTorch package -> Keras .npz (needs torch once)"),
    "import-dataset": ("shapemask_training.data.importers", "add_args", "run",
                       "COCO JSON (Roboflow/CVAT exports) and YOLO-seg polygon labels -> one COCO JSON"),
    "copy-paste": ("shapemask_training.data.copy_paste", "add_args", "run",
                   "copy-paste augmentation: paste real instance cut-outs onto real backgrounds -> COCO JSON"),
    "train": ("shapemask_training.commands", "add_train_args", "run_train",
              "train a ShapeMask model from a YAML config (CPU, GPUs, TPU via tf.distribute; resumes)"),
    "eval": ("shapemask_training.commands", "add_eval_args", "run_eval",
             "COCO evaluation (bbox + segm) with model / ground-truth / shrunk ground-truth boxes"),
    "evaluate-bundle": ("shapemask_training.evaluate_bundle", "add_args", "run",
                        "class-agnostic mask AP of bundles on any COCO set: GT / shrunk / own boxes vs box-filled"),
    "export": ("shapemask_training.commands", "add_export_args", "run_export",
               "export a trained model to a bundle: SavedModel + ONNX + priors + model.json"),
}
# fmt: on
