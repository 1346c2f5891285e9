"""Write a model bundle: SavedModel (two signatures) + ONNX (opset 17, both modes) + priors + model.json.

The bundle is assembled in a temporary sibling directory and moved into place at the end, so a reader
never sees a half-written bundle. Format: `BundleMeta` in shapemask_ros/runtime/bundle.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from shapemask_ros.config.loading import to_dict
from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.export.onnx_weights import store_weights_fp16
from shapemask_ros.model.shapemask import ShapeMask
from shapemask_ros.runtime.bundle import MODEL_JSON, BundleMeta
from shapemask_ros.utils.io import AtomicDir, save_npy

log = logging.getLogger(__name__)

ONNX_WEIGHTS = ("fp32", "fp16")
PREPROCESSING = (
    "RGB uint8 -> float32 0..255, resize keeping aspect so the longer side = S (bilinear), pad bottom/right "
    "with 0 to S x S; boxes in input pixels = original pixels * scale; normalisation is inside the model"
)


def serving_functions(model: ShapeMask) -> dict[str, tf.types.experimental.GenericFunction]:
    """The two serving tf.functions with fixed image size and a dynamic number of boxes."""
    s = model.cfg.image_size
    image = tf.TensorSpec((1, s, s, 3), tf.float32, name="image")
    boxes = tf.TensorSpec((1, None, 4), tf.float32, name="boxes")
    classes = tf.TensorSpec((1, None), tf.int32, name="classes")

    @tf.function(input_signature=[image, boxes, classes])
    def segment_boxes(image, boxes, classes):
        out = model.segment_boxes(image, boxes, classes)
        return {"masks": out["masks"], "outer_boxes": out["outer_boxes"]}

    @tf.function(input_signature=[image])
    def detect_and_segment(image):
        out = model.detect_and_segment(image)
        return {
            "boxes": out["boxes"],
            "scores": out["scores"],
            "classes": tf.cast(out["classes"], tf.int32),
            "num_detections": tf.cast(out["num_detections"], tf.int32),
            "masks": out["masks"],
            "outer_boxes": out["outer_boxes"],
        }

    return {"segment_boxes": segment_boxes, "detect_and_segment": detect_and_segment}


def export_onnx(fn, path: str, opset: int = 17, weights: str = "fp32") -> None:
    """Convert one serving function to ONNX with tf2onnx (written atomically).

    weights: "fp32", or "fp16" to store the large weights as float16 (half the file; the graph still
    computes in float32, see `onnx_weights`)."""
    import tf2onnx

    from shapemask_ros.utils.io import atomic_write_bytes

    if weights not in ONNX_WEIGHTS:
        raise ValueError(f"onnx weights must be one of {ONNX_WEIGHTS}, got {weights!r}")
    model_proto, _ = tf2onnx.convert.from_function(fn, input_signature=fn.input_signature, opset=opset)
    if weights == "fp16":
        report = store_weights_fp16(model_proto)
        log.info(
            "%s: %d weight tensors stored as float16 (%d kept float32), %.1f -> %.1f MB, max relative error %.1e",
            os.path.basename(path),
            report.converted,
            report.kept,
            report.bytes_before / 1e6,
            report.bytes_after / 1e6,
            report.max_relative_error,
        )
    atomic_write_bytes(path, model_proto.SerializeToString())


def export_bundle(
    model: ShapeMask,
    out_dir: str,
    class_names: list[str],
    *,
    onnx: bool = True,
    saved_model: bool = True,
    opset: int = 17,
    max_boxes: int = 100,
    onnx_weights: str = "fp32",
    extra: dict | None = None,
) -> str:
    """Export `model` to the bundle directory `out_dir` (replaced atomically). Returns out_dir.

    onnx_weights: "fp32" or "fp16" (weights stored at half size, computed in float32; see `export_onnx`)."""
    cfg: ModelConfig = model.cfg
    if len(class_names) != cfg.detector.num_classes:
        raise ValueError(f"{len(class_names)} class names for {cfg.detector.num_classes} detector classes")
    out_dir = os.path.abspath(out_dir)
    # assembled in a hidden sibling, renamed into place; a killed export's leftovers go on the next run
    atomic = AtomicDir(out_dir, overwrite=True)
    tmp = str(atomic.path)
    t0 = time.time()
    with atomic:
        fns = serving_functions(model)
        files: dict[str, Any] = {"priors": "priors.npy"}
        save_npy(os.path.join(tmp, "priors.npy"), model.prior_head.priors.numpy())
        if saved_model:
            module = tf.Module()
            # Keras 3 variables wrap tf.Variables; track those so the SavedModel captures them.
            module.model_variables = [v.value for v in model.variables]
            module.segment_boxes = fns["segment_boxes"]
            module.detect_and_segment = fns["detect_and_segment"]
            tf.saved_model.save(module, os.path.join(tmp, "saved_model"), signatures=dict(fns))
            files["saved_model"] = "saved_model"
        if onnx:
            files["onnx"] = {}
            for name, fn in fns.items():
                export_onnx(fn, os.path.join(tmp, f"{name}.onnx"), opset, onnx_weights)
                files["onnx"][name] = f"{name}.onnx"
            files["onnx_weights"] = onnx_weights
        base = BundleMeta.from_model_config(
            cfg,
            class_names,
            max_boxes=max_boxes,
            opset=opset,
            preprocessing=PREPROCESSING,
            model_config=to_dict(cfg),
            created_by="shapemask export",
            **files,
        )
        # the caller's extra keys (category_ids, a created_by of its own), checked by the reader's own rules
        meta = BundleMeta.from_json({**base.to_json(), **(extra or {})}, MODEL_JSON)
        with open(os.path.join(tmp, MODEL_JSON), "w") as f:
            json.dump(meta.to_json(), f, indent=2)
        atomic.commit()
    log.info("exported bundle to %s in %.1f s", out_dir, time.time() - t0)
    return out_dir


def random_inputs(image_size: int, num_boxes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real-sized random inputs for checks: an image and `num_boxes` boxes of varied size and place."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 255, (1, image_size, image_size, 3)).astype(np.float32)
    wh = rng.uniform(0.05, 0.6, (1, num_boxes, 2)) * image_size
    xy = rng.uniform(0, 1, (1, num_boxes, 2)) * (image_size - wh)
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    return image, boxes, np.zeros((1, num_boxes), np.int32)
