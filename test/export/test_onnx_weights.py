"""Float16 weight storage for ONNX files: half the bytes, the same float32 computation to fp16 rounding,
tensors fp16 cannot hold kept as float32, and a real exported bundle that still agrees with TensorFlow."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from shapemask_ros.export.bundle import export_bundle, random_inputs, serving_functions
from shapemask_ros.export.onnx_check import check_tensorrt_compatible, compare_with_tensorflow
from shapemask_ros.export.onnx_weights import FP16_SUFFIX, store_weights_fp16
from shapemask_ros.model.shapemask import build_model
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _graph(w: np.ndarray, big: np.ndarray, tiny: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """y = ((x @ w) + bias) @ big @ tiny: four float32 initializers of different kinds."""
    inits = [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (big, "big"), (tiny, "tiny"), (bias, "bias"))]
    g = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Add", ["h", "bias"], ["hb"]),
            helper.make_node("MatMul", ["hb", "big"], ["hbig"]),
            helper.make_node("MatMul", ["hbig", "tiny"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    return m


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fp16_storage_halves_large_weights_and_keeps_the_float32_computation():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (32, 64)).astype(np.float32)
    big = rng.normal(0, 1, (64, 16)).astype(np.float32)
    big[0, 0] = 1e6  # beyond float16's 65504: must stay float32
    tiny = (rng.normal(0, 1, (16, 16)) * np.logspace(-12, 0, 16)[:, None]).astype(np.float32)
    tiny[-1] = 1.0  # largest magnitude 1, most rows below float16's normal range: too lossy to convert
    bias = rng.normal(0, 1, (64,)).astype(np.float32)  # 64 values < min_elements: left alone
    ref_model = _graph(w, big, tiny, bias)
    model = _graph(w, big, tiny, bias)
    x = rng.normal(size=(5, 32)).astype(np.float32)

    report = store_weights_fp16(model, min_elements=256, max_error=1e-3)

    assert (report.converted, report.kept) == (1, 2)  # w converted; big (overflow) and tiny (underflow) kept
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types == {
        "w" + FP16_SUFFIX: TensorProto.FLOAT16,
        "big": TensorProto.FLOAT,
        "tiny": TensorProto.FLOAT,
        "bias": TensorProto.FLOAT,
    }
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert [(n.input[0], n.output[0]) for n in casts] == [("w" + FP16_SUFFIX, "w")]
    assert report.bytes_before - report.bytes_after == w.nbytes // 2
    assert 0 < report.max_relative_error <= 2.0**-11
    assert len(model.SerializeToString()) < len(ref_model.SerializeToString()) - w.nbytes // 2 + 200

    # float32 inputs and outputs; the result is the float32 graph's up to the weights' float16 rounding
    y_ref, y = _run(ref_model, x), _run(model, x)
    assert y.dtype == np.float32
    w16 = w.astype(np.float16).astype(np.float32)
    y_rounded = ((x @ w16 + bias) @ big) @ tiny
    np.testing.assert_allclose(y, y_rounded, rtol=1e-4, atol=1e-3 * np.abs(y_rounded).max())
    assert np.abs(y - y_ref).max() > 0  # the rounding is real (the test would see a no-op conversion)


@pytest.mark.slow
def test_fp16_bundle_agrees_with_tensorflow_and_is_smaller(tmp_path):
    model = build_model(tiny_model_config(image_size=128, channels=32))
    rng = np.random.default_rng(3)
    for v in model.trainable_variables:
        v.assign(v.numpy() + rng.normal(0, 0.01, v.shape).astype(np.float32))
    b32 = export_bundle(model, str(tmp_path / "b32"), ["a", "b", "c"], saved_model=False)
    b16 = export_bundle(model, str(tmp_path / "b16"), ["a", "b", "c"], saved_model=False, onnx_weights="fp16")
    with open(os.path.join(b16, "model.json")) as f:
        assert json.load(f)["onnx_weights"] == "fp16"
    image, boxes, classes = random_inputs(128, 12, seed=4)
    fn = serving_functions(model)["segment_boxes"]
    for name in ("segment_boxes", "detect_and_segment"):
        small, full = os.path.getsize(f"{b16}/{name}.onnx"), os.path.getsize(f"{b32}/{name}.onnx")
        assert small < 0.7 * full
        assert check_tensorrt_compatible(f"{b16}/{name}.onnx") == []
    err = compare_with_tensorflow(fn, f"{b16}/segment_boxes.onnx", {"image": image, "boxes": boxes, "classes": classes})
    assert err["masks"] < 5e-3 and err["outer_boxes"] < 1e-3
