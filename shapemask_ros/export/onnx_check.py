"""Checks of exported ONNX graphs: TensorRT operator support, no control flow in the mask branch, and
numerical agreement of ONNX Runtime with TensorFlow."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np

CONTROL_FLOW = {"Loop", "If", "Scan"}


def tensorrt_supported_ops() -> set[str]:
    """Operator names in tensorrt_onnx_ops.txt (kept in the repo, see its header for the source)."""
    path = os.path.join(os.path.dirname(__file__), "tensorrt_onnx_ops.txt")
    with open(path) as f:
        return {ln.strip() for ln in f if ln.strip() and not ln.startswith("#")}


def op_counts(onnx_path: str) -> Counter:
    """Operator histogram of a graph, including nodes inside subgraphs."""
    import onnx

    model = onnx.load(onnx_path)
    counts: Counter = Counter()

    def walk(graph):
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    return counts


def check_tensorrt_compatible(onnx_path: str, forbid_control_flow: bool = True) -> list[str]:
    """Problems that would stop or slow a TensorRT build of the graph (empty list = fine)."""
    ops = op_counts(onnx_path)
    supported = tensorrt_supported_ops()
    problems = [f"op {op} is not on TensorRT's ONNX operator list" for op in sorted(ops) if op not in supported]
    if forbid_control_flow:
        problems += [f"control flow op {op} x{ops[op]}" for op in sorted(CONTROL_FLOW & set(ops))]
    return problems


def compare_with_tensorflow(fn, onnx_path: str, feeds: dict[str, np.ndarray]) -> dict[str, float]:
    """Max |ONNX Runtime - TensorFlow| per output for the same feeds."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds), strict=True))
    ref = {k: v.numpy() for k, v in fn(**feeds).items()}
    out = {}
    for k, v in ref.items():
        if got[k].shape != v.shape:
            raise AssertionError(f"{k}: ONNX shape {got[k].shape} != TensorFlow shape {v.shape}")
        out[k] = float(np.max(np.abs(got[k].astype(np.float64) - v.astype(np.float64)))) if v.size else 0.0
    return out
