"""`shapemask build-engine` and `shapemask predict`: the runtime from the command line.

- `build-engine`: build (or validate) a bundle's TensorRT engines into the engine cache ahead of time, so
  a robot's first start does not spend minutes building. Needs TensorRT and an NVIDIA GPU; elsewhere it
  says why it cannot run and exits with 1.
- `predict`: one image file (+ optional boxes JSON) -> one PNG mask per object, an instance-label PNG,
  an overlay PNG and `instances.json`, through the same `Predictor` the ROS node uses.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import time
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "tensorflow")
SIGNATURE_CHOICES = ("segment_boxes", "detect_and_segment")
MASK_FILE = "mask_{:03d}.png"
_MASK_FILE_RE = re.compile(r"mask_\d{3,}\.png$")
BOXES_FORMATS = (
    'boxes JSON: [[x1, y1, x2, y2], ...], or {"boxes": [[x1, y1, x2, y2], ...], "classes": [c, ...]}, '
    'or [{"box": [x1, y1, x2, y2], "class": c}, ...]; pixels of the input image; a class is a '
    "contiguous class index or a class name of the model (optional, -1 = unknown)"
)


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default="", help="model bundle directory (model.json + ONNX/SavedModel); '' = the shipped demo model"
    )


def _resolve_model(path: str) -> str:
    from shapemask_ros.runtime.bundle import resolve_model_path

    return resolve_model_path(path)


# ------------------------------------------------------------------------------------------ build-engine
def add_build_engine_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask build-engine`."""
    _model_arg(p)
    p.add_argument(
        "--engine-cache-dir", default="", help="engine cache directory ('' = $XDG_CACHE_HOME/shapemask_ros/engines)"
    )
    p.add_argument("--precision", default="fp16", choices=["fp16", "fp32", "both"], help="engine precision(s) to build")
    p.add_argument(
        "--signatures",
        default=",".join(SIGNATURE_CHOICES),
        help="comma-separated graphs to build: segment_boxes, detect_and_segment",
    )


def _signatures(text: str) -> list[str]:
    sigs = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in sigs if s not in SIGNATURE_CHOICES]
    if not sigs or bad:
        raise ValueError(f"--signatures must name some of {SIGNATURE_CHOICES}, got {text!r}")
    return sigs


def run_build_engine(args: argparse.Namespace) -> int:
    """Build the engines; 0 = built/valid, 1 = TensorRT cannot run here or the build failed, 2 = bad input."""
    from shapemask_ros.runtime.backends.base import BackendUnavailable
    from shapemask_ros.runtime.backends.tensorrt_backend import build_engines

    try:
        sigs = _signatures(args.signatures)
    except ValueError as e:
        log.error("%s", e)
        return 2
    model = _resolve_model(args.model)
    precisions = ["fp16", "fp32"] if args.precision == "both" else [args.precision]
    for precision in precisions:
        t0 = time.perf_counter()
        try:
            paths = build_engines(model, args.engine_cache_dir or None, precision=precision, signatures=sigs)
        except (FileNotFoundError, ValueError) as e:
            log.error("bad model bundle %s: %s", model, e)
            return 2
        except BackendUnavailable as e:
            log.error("cannot build TensorRT engines on this machine: %s", e)
            return 1
        except RuntimeError as e:
            log.error("TensorRT engine build failed (%s): %s", precision, e)
            return 1
        for path in paths:
            print(path)
        log.info("%s engines ready in %.1f s", precision, time.perf_counter() - t0)
    return 0


# ------------------------------------------------------------------------------------------------ predict
def add_predict_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask predict`."""
    p.add_argument("image", help="image file (anything OpenCV reads: PNG, JPEG, ...)")
    _model_arg(p)
    p.add_argument("--boxes", default=None, help=f"{BOXES_FORMATS}. Without it the model's own detections are used")
    p.add_argument("--out", default="out/predict", help="output directory")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES)
    p.add_argument("--engine-cache-dir", default="", help="TensorRT engine cache ('' = default)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    p.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="minimum detection score without --boxes (default: the model's)",
    )
    p.add_argument("--mask-threshold", type=float, default=0.5, help="mask foreground probability")
    p.add_argument(
        "--flip-average",
        action="store_true",
        help="also segment the mirrored image and average the masks: better masks, 1.6-2x the model time",
    )


def read_image(path: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] from an image file; ValueError when it is missing or not an image."""
    import cv2

    if not os.path.isfile(path):
        raise ValueError(f"image file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"{path}: not an image OpenCV can decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _class_index(value: Any, class_names: tuple[str, ...], where: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool):
        raise ValueError(f"{where}: class must be an integer index or a class name, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        if value in class_names:
            return class_names.index(value)
        log.warning("%s: class %r is not one of the model's classes; treated as unknown", where, value)
        return -1
    raise ValueError(f"{where}: class must be an integer index or a class name, got {value!r}")


def parse_boxes(data: Any, class_names: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """Boxes [N, 4] float64 and classes [N] int (or None) from parsed boxes JSON (see BOXES_FORMATS).

    Shape and type errors raise ValueError; invalid coordinates (NaN, empty, outside) are left for the
    Predictor, which drops and counts them.
    """
    from shapemask_ros.runtime.preprocess import box_array

    classes: list[int] | None = None
    if isinstance(data, dict):
        if "boxes" not in data:
            raise ValueError(f"boxes JSON object needs a 'boxes' list; {BOXES_FORMATS}")
        raw = data["boxes"]
        if data.get("classes") is not None:
            if not isinstance(data["classes"], list):
                raise ValueError("'classes' must be a list with one class per box")
            classes = [_class_index(c, class_names, f"classes[{i}]") for i, c in enumerate(data["classes"])]
    elif isinstance(data, list) and data and all(isinstance(d, dict) for d in data):
        raw, cls = [], []
        for i, d in enumerate(data):
            if "box" not in d:
                raise ValueError(f"boxes[{i}] has no 'box' field; {BOXES_FORMATS}")
            raw.append(d["box"])
            cls.append(_class_index(d.get("class"), class_names, f"boxes[{i}].class"))
        classes = cls if any(c != -1 for c in cls) else None
    elif isinstance(data, list):
        raw = data
    else:
        raise ValueError(f"unexpected boxes JSON ({type(data).__name__}); {BOXES_FORMATS}")
    try:
        boxes = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"boxes must be numbers [[x1, y1, x2, y2], ...]: {e}") from e
    boxes = box_array(boxes)
    if classes is not None and len(classes) != len(boxes):
        raise ValueError(f"{len(classes)} classes for {len(boxes)} boxes")
    return boxes, None if classes is None else np.asarray(classes, np.int64)


def read_boxes(path: str, class_names: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray | None]:
    """`parse_boxes` of a JSON file; ValueError when missing or not JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read boxes file {path}: {e}") from e
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    return parse_boxes(data, class_names)


def _write_png(path: str, image: np.ndarray) -> None:
    import cv2

    from shapemask_ros.utils.io import atomic_write_bytes

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def write_outputs(
    out_dir: str, rgb: np.ndarray, instances: Any, class_names: tuple[str, ...], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write mask_NNN.png (0/255, full image size), labels.png (uint16), overlay.png and instances.json.

    Mask files left in `out_dir` by an earlier run are removed first so the folder matches the JSON.
    Returns the JSON document.
    """
    import cv2

    from shapemask_ros.runtime.overlay import overlay_image
    from shapemask_ros.utils.io import atomic_write_text

    os.makedirs(out_dir, exist_ok=True)
    stale = [p for p in glob.glob(os.path.join(out_dir, "mask_*.png")) if _MASK_FILE_RE.search(p)]
    for p in stale:
        os.remove(p)
    if stale:
        log.info("removed %d mask files of an earlier run from %s", len(stale), out_dir)
    full = instances.full_masks()
    objects = []
    for i in range(len(instances)):
        name = MASK_FILE.format(i)
        _write_png(os.path.join(out_dir, name), full[i] * np.uint8(255))
        cid = int(instances.class_ids[i])
        objects.append(
            {
                "mask_file": name,
                "source_index": int(instances.source_index[i]),
                "box": [float(v) for v in instances.boxes[i]],
                "score": float(instances.scores[i]),
                "class_id": cid,
                "class_name": class_names[cid] if 0 <= cid < len(class_names) else None,
                "region": [int(v) for v in instances.regions[i]],  # x, y, width, height of the mask crop
                "mask_score": float(instances.mask_scores[i]),
                "mask_area": int(full[i].sum()),
            }
        )
    _write_png(os.path.join(out_dir, "labels.png"), instances.label_image())
    _write_png(os.path.join(out_dir, "overlay.png"), cv2.cvtColor(overlay_image(rgb, instances), cv2.COLOR_RGB2BGR))
    doc = {
        "image_size": list(instances.image_size),
        "backend": instances.backend,
        "num_objects": len(instances),
        "dropped_boxes": dict(instances.dropped),
        "objects": objects,
        **(extra or {}),
    }
    atomic_write_text(os.path.join(out_dir, "instances.json"), json.dumps(doc, indent=1))
    return doc


def run_predict(args: argparse.Namespace) -> int:
    """Segment one image; 0 = written, 2 = bad input (image, boxes, model bundle), 1 = no backend."""
    from shapemask_ros.runtime.backends import BackendOptions
    from shapemask_ros.runtime.predictor import Predictor

    if not 0.0 <= args.mask_threshold <= 1.0:
        log.error("--mask-threshold must be a probability in [0, 1], got %s", args.mask_threshold)
        return 2
    model = _resolve_model(args.model)
    try:
        rgb = read_image(args.image)
        predictor = Predictor.load(
            model,
            backend=args.backend,
            options=BackendOptions(engine_cache_dir=args.engine_cache_dir or None, intra_op_num_threads=args.threads),
            mask_threshold=args.mask_threshold,
            flip_average=args.flip_average,
        )
        boxes, classes = (None, None) if args.boxes is None else read_boxes(args.boxes, predictor.class_names)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    except RuntimeError as e:  # the requested backend cannot run here
        log.error("%s", e)
        return 1
    t0 = time.perf_counter()
    try:
        instances = predictor.predict(rgb, boxes, classes, score_threshold=args.score_threshold)
    except ValueError as e:
        log.error("%s", e)
        return 2
    seconds = time.perf_counter() - t0
    doc = write_outputs(
        args.out,
        rgb,
        instances,
        predictor.class_names,
        extra={"image": args.image, "model": model, "predict_s": seconds},
    )
    if instances.dropped:
        log.warning("input boxes dropped or clipped: %s", instances.dropped)
    print(f"{doc['num_objects']} objects ({predictor.backend}, {seconds * 1000:.0f} ms) -> {args.out}")
    return 0
