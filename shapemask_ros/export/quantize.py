"""`shapemask quantize`: an INT8 copy of an ONNX bundle (QDQ format, ONNX Runtime static quantization).

    shapemask quantize --model models/real_lite0 --out build/real_lite0_int8 \
        --calibration ANNOTATIONS.json=IMAGE_DIR [--calibration ...] [--images 64]

Steps, per graph (segment_boxes.onnx, detect_and_segment.onnx):
1. float32 weights: fp16-stored initializers (`onnx_weights`) are turned back into float32 so the quantizer
   sees the Conv weights as initializers;
2. `quant_pre_process`: shape inference and ONNX Runtime's basic graph optimisations (batch norms that the
   converter left beside depthwise convolutions fold into them);
3. calibration: the FP32 bundle's own Predictor runs on training images with their ground-truth boxes and
   without boxes (self-detection); the exact tensors it feeds each graph are recorded (same letterbox,
   same box scaling and chunking as at run time) and replayed to `quantize_static`;
4. `quantize_static`, QDQ format, int8 weights (symmetric, per output channel) on the convolution stack
   only: every Conv; a ReLU / ReLU6 (Clip), Add, MatMul or Reshape when all its non-constant inputs come
   out of quantized nodes (activations, residual sums, reshaped feature maps); and an Add when any input
   does -- the mask heads add a quantized 1x1 embedding of the prior / coarse mask to the float ROI
   features, and the FPN a quantized lateral to an upsampled level, and the sums feed quantized
   convolutions: quantizing the other input and adding in 8 bits replaces dequantizing the embedding, a
   float Add and quantizing the sum (the default model: 7 more nodes quantized, the 20-box graph
   23.8 -> 20.5 ms in one ORT profile, DequantizeLinear 0.64 -> 0.21 ms). A quantized MatMul's output
   stays float (ONNX Runtime runs DequantizeLinear -> MatMul as one integer product with a float result);
   in the default model no MatMul qualifies (the fine logits' product follows a layout Transpose).
   Box arithmetic, ROI sampling, NMS, priors and sigmoids stay float: they are coordinates and
   probabilities, not feature maps.
   Activations: `uint8` (asymmetric; the default: ONNX Runtime's CPU kernels fuse
   ReLU/ReLU6 into the quantized convolution, 2.4x faster than FP32 here) or `int8` (symmetric, zero
   point 0: what TensorRT's explicit-precision INT8 path requires; on ONNX Runtime CPU every ReLU6 then
   stays a float op between a dequantize and a quantize, and the graph is only ~1.3x faster).

The result is a normal bundle (model.json, priors, both graphs) whose model.json says
`"onnx_weights": "int8"` with a `quantization` record (calibration data, method, what stayed float); the
Predictor loads it like any bundle. Calibrate on training data only, never on the sets you report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from shapemask_ros.runtime.bundle import MODEL_JSON, SIGNATURES, Bundle, BundleMeta
from shapemask_ros.utils.io import AtomicDir

log = logging.getLogger(__name__)

# Convolutions are always quantized; the other ops only on feature maps, i.e. when every input that is not
# a constant comes out of a quantized node (so a MatMul or Add on box coordinates stays float) -- or, for
# ANY_INPUT_OPS, when one does (a quantized feature map plus a float one: the ROI features).
SEED_OPS = ("Conv",)
CHAIN_OPS = ("Clip", "Relu", "Add", "MatMul", "Reshape")
ANY_INPUT_OPS = ("Add",)
# ops whose output is left float: ONNX Runtime fuses DequantizeLinear -> MatMul into one integer product
# with a float result, where a quantized output would be dequantized again right after
FLOAT_OUTPUT_OPS = ("MatMul",)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
ACTIVATIONS = {
    "int8": "int8, symmetric (zero point 0: TensorRT's explicit INT8)",
    "uint8": "uint8, asymmetric (ONNX Runtime CPU)",
}


# ------------------------------------------------------------------------------------------ graph edits


def fp32_weights(model: Any) -> int:
    """Undo fp16 weight storage in place (see export.onnx_weights): each `Cast(to=FLOAT)` of a float16
    initializer becomes a float32 initializer with the cast's output name. Returns how many were folded."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    folded, keep = 0, []
    for node in graph.node:
        src = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if src is not None and src.data_type == TensorProto.FLOAT16 and to == TensorProto.FLOAT:
            w = numpy_helper.to_array(src).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(w, node.output[0]))
            folded += 1
            continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input}
        kept_inits = [t for t in graph.initializer if t.name in used or t.data_type != TensorProto.FLOAT16]
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
    return folded


def nodes_to_quantize(model: Any, keep_float: Sequence[str] = ()) -> list[str]:
    """Names of the nodes to quantize: every SEED_OPS node, each CHAIN_OPS node whose non-constant
    inputs are all outputs of nodes already chosen (in topological order) and each ANY_INPUT_OPS node
    with at least one such input, minus nodes whose name contains a `keep_float` substring."""
    constants = {t.name for t in model.graph.initializer}
    constants.update(o for n in model.graph.node if n.op_type == "Constant" for o in n.output)
    chosen: set[str] = set()
    quantized_outputs: set[str] = set()
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if any(s and s in node.name for s in keep_float):
            continue
        live = [i for i in node.input if i and i not in constants]
        from_quantized = [i in quantized_outputs for i in live]
        if (
            node.op_type in SEED_OPS
            or (node.op_type in CHAIN_OPS and live and all(from_quantized))
            or (node.op_type in ANY_INPUT_OPS and any(from_quantized))
        ):
            chosen.add(node.name)
            quantized_outputs.update(node.output)
    return [n.name for n in model.graph.node if n.name in chosen]


def graph_ops(path: str) -> dict[str, int]:
    """op type -> count of an ONNX file's main graph."""
    import onnx

    out: dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        out[node.op_type] = out.get(node.op_type, 0) + 1
    return dict(sorted(out.items()))


def tensorrt_int8_problems(path: str) -> list[str]:
    """Why TensorRT's explicit-precision INT8 path would reject the QDQ graph at `path` (empty = fine):
    operators missing from export/tensorrt_onnx_ops.txt, control flow, and Q/DQ pairs that are not
    int8 with zero point 0 (TensorRT supports only symmetric signed 8-bit quantization)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from shapemask_ros.export.onnx_check import check_tensorrt_compatible

    problems = check_tensorrt_compatible(path)
    model = onnx.load(path)
    inits = {t.name: t for t in model.graph.initializer}
    bad_type = nonzero = 0
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2] in inits:
            zp = inits[node.input[2]]
            if zp.data_type != TensorProto.INT8:
                bad_type += 1
            elif np.any(numpy_helper.to_array(zp) != 0):
                nonzero += 1
    if bad_type:
        problems.append(f"{bad_type} Q/DQ nodes are not int8 (TensorRT: int8 only; use --activations int8)")
    if nonzero:
        problems.append(f"{nonzero} Q/DQ nodes have a non-zero zero point (TensorRT: symmetric only)")
    return problems


# ------------------------------------------------------------------------------------------ calibration


class FeedRecorder:
    """Wraps a runtime backend and keeps a copy of every feed given to each graph (the calibration set)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in SIGNATURES}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        self.feeds["segment_boxes"].append(
            {
                "image": np.array(image, np.float32),
                "boxes": np.array(boxes, np.float32),
                "classes": np.array(classes, np.int32),
            }
        )
        return self.backend.segment_boxes(image, boxes, classes)

    def detect_and_segment(self, image: np.ndarray) -> dict[str, np.ndarray]:
        self.feeds["detect_and_segment"].append({"image": np.array(image, np.float32)})
        return self.backend.detect_and_segment(image)


def calibration_images(
    sources: Sequence[str], n_images: int, seed: int = 0, max_boxes: int = 100
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(RGB image, ground-truth boxes [N, 4] x1 y1 x2 y2) of `n_images` images drawn evenly from the
    `ANNOTATIONS.json=IMAGE_DIR` sources (seeded shuffle; crowd and empty boxes left out)."""
    import cv2

    per_source = [n_images // len(sources) + (i < n_images % len(sources)) for i in range(len(sources))]
    rng = np.random.default_rng(seed)
    for spec, count in zip(sources, per_source, strict=True):
        ann_path, _, image_dir = spec.partition("=")
        if not image_dir:
            image_dir = os.path.dirname(ann_path)
        with open(ann_path, encoding="utf-8") as f:
            coco = json.load(f)
        boxes: dict[Any, list[list[float]]] = {}
        for a in coco.get("annotations", []):
            x, y, w, h = a["bbox"]
            if not a.get("iscrowd", 0) and w >= 1 and h >= 1:
                boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
        images = sorted((im for im in coco["images"] if im["id"] in boxes), key=lambda im: str(im["id"]))
        order = rng.permutation(len(images))[:count]
        for j in order:
            im = images[int(j)]
            bgr = cv2.imread(os.path.join(image_dir, im["file_name"]), cv2.IMREAD_COLOR)
            if bgr is None:
                log.warning("calibration: cannot read %s", os.path.join(image_dir, im["file_name"]))
                continue
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.asarray(boxes[im["id"]][:max_boxes], np.float32)


def record_feeds(bundle_dir: str, images: Iterator[tuple[np.ndarray, np.ndarray]]) -> dict[str, list[dict]]:
    """Run the FP32 bundle on each image with its boxes and without (self-detection); the recorded feeds."""
    from shapemask_ros.runtime.predictor import Predictor

    predictor = Predictor.load(bundle_dir, backend="onnxruntime")
    recorder = FeedRecorder(predictor.runtime_backend)
    predictor.runtime_backend = recorder
    for rgb, boxes in images:
        predictor.predict(rgb, boxes)
        predictor.predict(rgb)
    return recorder.feeds


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


# ------------------------------------------------------------------------------------------ quantization


def quantize_graph(
    src: str,
    dst: str,
    feeds: list[dict[str, np.ndarray]],
    *,
    method: str = "minmax",
    keep_float: Sequence[str] = (),
    per_channel: bool = True,
    activations: str = "uint8",
) -> dict[str, Any]:
    """Quantize one ONNX graph (steps 1-4 of the module docstring); returns what was done."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        model = onnx.load(src)
        folded = fp32_weights(model)
        f32 = os.path.join(tmp, "fp32.onnx")
        onnx.save(model, f32)
        pre = os.path.join(tmp, "pre.onnx")
        cwd = os.getcwd()
        os.chdir(tmp)  # quant_pre_process leaves temporary files in the working directory
        try:
            try:
                quant_pre_process(f32, pre)
            except Exception as e:  # symbolic shape inference cannot follow every converted TF graph
                log.info("quant_pre_process with symbolic shapes failed (%s); retrying without", e)
                quant_pre_process(f32, pre, skip_symbolic_shape=True)
        finally:
            os.chdir(cwd)
        chosen = nodes_to_quantize(onnx.load(pre), keep_float)
        if not chosen:  # (an empty list would make quantize_static quantize every node)
            log.info("%s: no convolution to quantize; the graph stays float", src)
            shutil.copy(src, dst)
            return {
                "fp16_weights_folded": 0,
                "quantized_nodes": 0,
                "ops": graph_ops(dst),
                "tensorrt_int8_problems": tensorrt_int8_problems(dst),
            }
        calib = {
            "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy,
        }[method]
        quantize_static(
            pre,
            dst,
            _Reader(feeds),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8 if activations == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=chosen,
            calibrate_method=calib,
            extra_options={
                "ActivationSymmetric": activations == "int8",  # zero point 0 (TensorRT)
                "WeightSymmetric": True,
                # TensorRT takes int8 Q/DQ only and adds the bias in float; ONNX Runtime's QLinearConv
                # fusion on CPUs needs it as int32
                "QuantizeBias": activations != "int8",
                "OpTypesToExcludeOutputQuantization": list(FLOAT_OUTPUT_OPS),
                # no CalibMaxIntermediateOutputs: in onnxruntime 1.32 it discards every full chunk of data
            },
        )
    return {
        "fp16_weights_folded": folded,
        "quantized_nodes": len(chosen),
        "ops": graph_ops(dst),
        "tensorrt_int8_problems": tensorrt_int8_problems(dst),
    }


def quantize_bundle(
    src_dir: str,
    dst_dir: str,
    sources: Sequence[str],
    *,
    n_images: int = 64,
    seed: int = 0,
    method: str = "minmax",
    keep_float: Sequence[str] = (),
    activations: str = "uint8",
    log_fn: Callable[[str], object] = log.info,
) -> dict[str, Any]:
    """Write the INT8 bundle `dst_dir` from the ONNX bundle `src_dir`; returns the `quantization` record."""
    bundle = Bundle.read(src_dir)
    if not bundle.has_onnx:
        raise ValueError(f"{src_dir}: the bundle has no ONNX graphs to quantize")
    t0 = time.perf_counter()
    feeds = record_feeds(src_dir, calibration_images(sources, n_images, seed, bundle.max_boxes))
    counts = {s: len(v) for s, v in feeds.items()}
    if not all(counts.values()):
        raise ValueError(f"no calibration feeds recorded ({counts}): check --calibration")
    log_fn(f"calibration feeds recorded in {time.perf_counter() - t0:.0f} s: {counts}")
    with open(os.path.join(src_dir, MODEL_JSON), encoding="utf-8") as f:
        meta = BundleMeta.from_json(json.load(f), os.path.join(src_dir, MODEL_JSON))
    record: dict[str, Any] = {
        "format": "QDQ",
        "tool": _ort_version(),
        "weights": "int8, symmetric, per output channel",
        "activations": ACTIVATIONS[activations],
        "calibration": {
            "method": method,
            "sources": [str(s) for s in sources],
            "images": int(n_images),
            "seed": int(seed),
            "feeds": counts,
        },
        "quantized_ops": list(SEED_OPS)
        + [f"{op} of quantized inputs" for op in CHAIN_OPS]
        + [f"{op} of a quantized and a float feature map" for op in ANY_INPUT_OPS]
        + [f"{op} outputs left float" for op in FLOAT_OUTPUT_OPS],
        "kept_float": list(keep_float),
        "source_bundle": str(src_dir),
        "graphs": {},
    }
    with AtomicDir(dst_dir, overwrite=True) as out:
        tmp = str(out.path)
        for sig in SIGNATURES:
            t1 = time.perf_counter()
            name = os.path.basename(bundle.onnx_path(sig))
            info = quantize_graph(
                bundle.onnx_path(sig),
                os.path.join(tmp, name),
                feeds[sig],
                method=method,
                keep_float=keep_float,
                activations=activations,
            )
            record["graphs"][sig] = info
            log_fn(f"{sig}: {info['quantized_nodes']} nodes quantized in {time.perf_counter() - t1:.0f} s")
        if bundle.priors:
            shutil.copy(bundle.priors, os.path.join(tmp, os.path.basename(bundle.priors)))
        # the SavedModel (if any) is the float model: not part of this bundle
        meta = dataclasses.replace(meta, onnx_weights="int8", quantization=record, saved_model=None)
        with open(os.path.join(tmp, MODEL_JSON), "w", encoding="utf-8") as f:
            json.dump(meta.to_json(), f, indent=2)
            f.write("\n")
        card = os.path.join(src_dir, "MODEL_CARD.md")
        if os.path.exists(card):
            with open(card, encoding="utf-8") as f:
                text = f.read()
            with open(os.path.join(tmp, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
                f.write(int8_card_section(record) + "\n" + text)
        out.commit()
    return record


def int8_card_section(record: dict[str, Any]) -> str:
    """The model card's INT8 header: how this bundle was made from the FP32 one."""
    cal = record["calibration"]
    return (
        "# INT8 (QDQ) version of the bundle described below\n\n"
        f"Made by `shapemask quantize` ({record['tool']}): static quantization in QDQ format, weights "
        f"{record['weights']}, activations {record['activations']}, on {', '.join(record['quantized_ops'])}; "
        "box arithmetic, ROI sampling, NMS, priors and sigmoids stay float"
        + (f"; also kept float: {', '.join(record['kept_float'])}" if record["kept_float"] else "")
        + f". Calibration: {cal['method']} ranges over {cal['images']} training images (seed {cal['seed']}) "
        f"from {', '.join(cal['sources'])}, each run with its ground-truth boxes and without boxes "
        f'({cal["feeds"]} graph calls). model.json: `"onnx_weights": "int8"` and a `quantization` '
        "record. Accuracy and speed against the FP32 bundle: docs/benchmarks.md (issue 24).\n"
    )


def _ort_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


# ------------------------------------------------------------------------------------------ CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask quantize`."""
    parser.add_argument("--model", required=True, help="FP32 ONNX bundle directory")
    parser.add_argument("--out", required=True, help="output bundle directory (replaced atomically)")
    parser.add_argument(
        "--calibration",
        action="append",
        required=True,
        metavar="ANNOTATIONS.json=IMAGE_DIR",
        help="COCO JSON of TRAINING images and their directory (repeatable; images are drawn evenly)",
    )
    parser.add_argument("--images", type=int, default=64, help="calibration images in total")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=CALIBRATION_METHODS, default="minmax", help="activation ranges")
    parser.add_argument(
        "--activations",
        choices=sorted(ACTIVATIONS),
        default="uint8",
        help="int8: symmetric, TensorRT can build it; uint8: asymmetric, for ONNX Runtime on CPUs",
    )
    parser.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="leave nodes whose name contains SUBSTRING in float (repeatable), e.g. fine_ for the fine head",
    )


def run(args: argparse.Namespace) -> int:
    """`shapemask quantize`; returns the exit code."""
    try:
        record = quantize_bundle(
            args.model,
            args.out,
            args.calibration,
            n_images=args.images,
            seed=args.seed,
            method=args.method,
            keep_float=args.keep_float,
            activations=args.activations,
            log_fn=print,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"shapemask quantize: {e}", file=__import__("sys").stderr)
        return 2
    for sig, info in record["graphs"].items():
        print(f"{sig}: ops {info['ops']}")
        trt = info["tensorrt_int8_problems"]
        print(f"{sig}: TensorRT INT8 check: {'ok' if not trt else '; '.join(trt)}")
    print(f"INT8 bundle: {args.out}")
    return 0
