"""`shapemask quantize` on the hand-made ONNX bundle with a small convolution stack (test/support)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from shapemask_ros.export import quantize
from shapemask_ros.runtime.bundle import Bundle
from shapemask_ros.runtime.predictor import Predictor
from support.onnx_bundle import write_onnx_bundle

BOXES = np.array([[5, 5, 40, 30], [20, 10, 70, 50], [0, 30, 30, 59]], np.float32)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantize")
    fp32 = write_onnx_bundle(str(root / "fp32"), conv=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    os.makedirs(root / "img")
    for i in range(6):  # the "training images": random colour fields, 80 x 60
        cv2.imwrite(str(root / "img" / f"{i}.png"), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 80, "height": 60})
        for j, (x1, y1, x2, y2) in enumerate(BOXES):
            box = [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
            annotations.append({"id": 10 * i + j + 1, "image_id": i + 1, "category_id": 1, "bbox": box, "iscrowd": 0})
    ann = root / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "o"}]}))
    out = str(root / "int8")
    record = quantize.quantize_bundle(fp32, out, [f"{ann}={root / 'img'}"], n_images=4)
    return fp32, out, record


def test_quantized_bundle_is_int8_loadable_and_close_to_fp32(bundles):
    fp32, int8, record = bundles
    meta = json.loads(open(os.path.join(int8, "model.json")).read())
    assert meta["onnx_weights"] == "int8" and Bundle.read(int8).onnx_weights == "int8"
    assert meta["quantization"]["calibration"]["feeds"] == {"segment_boxes": 4, "detect_and_segment": 4}
    seg = record["graphs"]["segment_boxes"]
    assert seg["quantized_nodes"] == 5  # conv1, relu1, conv2, relu2, residual; not the box MatMul
    assert seg["ops"]["QuantizeLinear"] > 0 and seg["ops"]["DequantizeLinear"] > 0
    assert record["graphs"]["detect_and_segment"]["quantized_nodes"] == 0  # no convolution: stays float
    rgb = np.random.default_rng(5).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    a = Predictor.load(fp32, backend="onnxruntime")
    b = Predictor.load(int8, backend="onnxruntime")
    out_a = a.runtime_backend.segment_boxes(*_feeds(a, rgb))
    out_b = b.runtime_backend.segment_boxes(*_feeds(b, rgb))
    np.testing.assert_array_equal(out_b["outer_boxes"], out_a["outer_boxes"])  # box arithmetic stays float
    diff = np.abs(out_b["masks"] - out_a["masks"])
    assert 0 < diff.max() < 0.01  # quantized (not bit-equal), and close
    ia, ib = a.predict(rgb, BOXES), b.predict(rgb, BOXES)
    assert len(ib) == len(ia) == 3
    for ma, mb in zip(ia.masks, ib.masks, strict=True):
        assert np.mean(ma != mb) < 0.02


def _feeds(p: Predictor, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from shapemask_ros.runtime.preprocess import letterbox

    img, scale = letterbox(rgb, p.image_size)
    return img[None], (BOXES * scale)[None], np.zeros((1, len(BOXES)), np.int32)


def test_tensorrt_check_flags_uint8_and_accepts_symmetric_int8(bundles, tmp_path):
    fp32, int8, record = bundles
    assert any("not int8" in p for p in record["graphs"]["segment_boxes"]["tensorrt_int8_problems"])
    feeds = [
        {"image": np.random.default_rng(i).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32),
         "boxes": BOXES[None], "classes": np.zeros((1, 3), np.int32)}
        for i in range(3)
    ]  # fmt: skip
    info = quantize.quantize_graph(
        os.path.join(fp32, "segment_boxes.onnx"), str(tmp_path / "s.onnx"), feeds, activations="int8"
    )
    assert info["quantized_nodes"] == 5 and info["tensorrt_int8_problems"] == []


def test_fp32_weights_undoes_fp16_storage():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from shapemask_ros.export.onnx_weights import store_weights_fp16

    w = np.random.default_rng(0).normal(size=(8, 4, 3, 3)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    store_weights_fp16(model)
    assert [n.op_type for n in model.graph.node] == ["Cast", "Conv"]
    assert quantize.fp32_weights(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    (init,) = model.graph.initializer
    assert init.name == "w" and init.data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(init), w.astype(np.float16).astype(np.float32))
    onnx.checker.check_model(model)
