"""Half-size ONNX files: float32 weights stored as float16 initializers, cast back to float32 in the graph.

Only the storage changes: every converted initializer is followed by a `Cast(to=FLOAT)` whose output has
the initializer's old name, so every consumer still computes in float32. ONNX Runtime folds these casts
into float32 constants when it creates a session and TensorRT folds them at engine build, so inference
speed is unchanged; the weights carry float16's 11-bit mantissa (relative rounding <= 2^-11).
A tensor whose values float16 cannot hold (overflow, or small values lost to underflow beyond
`max_error` of its largest magnitude) keeps float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FP16_SUFFIX = "__fp16"


@dataclass
class Fp16Report:
    converted: int = 0
    kept: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    max_relative_error: float = 0.0


def _fits_fp16(w: np.ndarray, max_error: float, max_subnormal: float) -> tuple[bool, float]:
    """(convert?, largest rounding error relative to the tensor's peak magnitude)."""
    a = np.abs(w)
    peak = float(np.max(a)) if w.size else 0.0
    if not np.all(np.isfinite(w)) or peak > float(np.finfo(np.float16).max):
        return False, float("inf")
    if peak == 0.0:
        return True, 0.0
    # below float16's smallest normal the precision degrades (and values flush to zero): a tensor with many
    # such values (e.g. one scaled-down channel) would lose that part although its peak-relative error is small
    nonzero = a > 0
    if np.count_nonzero(nonzero & (a < float(np.finfo(np.float16).tiny))) > max_subnormal * np.count_nonzero(nonzero):
        return False, float("inf")
    err = float(np.max(np.abs(w.astype(np.float16).astype(np.float32) - w))) / peak
    return err <= max_error, err


def store_weights_fp16(
    model, min_elements: int = 256, max_error: float = 1e-3, max_subnormal: float = 0.01
) -> Fp16Report:
    """Convert `model`'s (an onnx.ModelProto) large float32 initializers in place; returns what it did.

    Only initializers of the main graph with >= `min_elements` values are touched (biases and small
    constants such as shapes stay as they are: nothing to gain). Subgraph-only initializers stay float32.
    A tensor stays float32 when float16 overflows, when more than `max_subnormal` of its non-zero values
    are below float16's normal range, or when its rounding error exceeds `max_error` of its peak magnitude.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    report = Fp16Report()
    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(init)
        report.bytes_before += w.nbytes
        if w.size < min_elements:
            report.bytes_after += w.nbytes
            continue
        ok, err = _fits_fp16(w, max_error, max_subnormal)
        if not ok:
            report.kept += 1
            report.bytes_after += w.nbytes
            continue
        name = init.name
        half = numpy_helper.from_array(w.astype(np.float16), name + FP16_SUFFIX)
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + FP16_SUFFIX], [name], to=TensorProto.FLOAT, name=name + "_cast"))
        report.converted += 1
        report.bytes_after += w.size * 2
        report.max_relative_error = max(report.max_relative_error, err)
    if casts:
        # the casts read only initializers, so putting them first keeps the node list topologically sorted
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
        onnx.checker.check_model(model)
    return report
