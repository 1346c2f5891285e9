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


def _chain_graph(transpose: bool = False):
    """Conv -> Relu, added to a float feature map (the ROI features), [Transpose ->] Reshape -> MatMul
    logits; beside them box arithmetic (an Add and a MatMul of float inputs)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 2)).astype(np.float32), "w_logits"),
        numpy_helper.from_array(np.array([-1, 4], np.int64), "flat"),
        numpy_helper.from_array(np.eye(4, dtype=np.float32), "box_a"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["feat", "r"], ["s"], name="embed_add"),  # float + quantized
        helper.make_node("Conv", ["s", "w"], ["c2"], name="conv2"),
        *([helper.make_node("Transpose", ["c2"], ["t"], perm=[0, 2, 3, 1], name="nhwc")] if transpose else []),
        helper.make_node("Reshape", ["t" if transpose else "c2", "flat"], ["flat_t"], name="flatten"),
        helper.make_node("MatMul", ["flat_t", "w_logits"], ["logits"], name="logits"),
        helper.make_node("Add", ["boxes", "boxes"], ["b2"], name="box_add"),
        helper.make_node("MatMul", ["b2", "box_a"], ["b3"], name="box_matmul"),
    ]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info(n, f, s)
            for n, s in (("x", [1, 4, 6, 6]), ("feat", [1, 4, 6, 6]), ("boxes", [3, 4]))
        ],
        [helper.make_tensor_value_info("logits", f, [36, 2]), helper.make_tensor_value_info("b3", f, [3, 4])],
        initializer=inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what the oldest supported ONNX Runtime (Jazzy's pins, make test-distro) loads
    return model


def test_nodes_to_quantize_follows_feature_maps_not_boxes():
    chosen = quantize.nodes_to_quantize(_chain_graph())
    # the float ROI features plus a quantized embedding is quantized (ANY_INPUT_OPS); the logits MatMul is
    # reached through a Reshape; box arithmetic stays float
    assert chosen == ["conv", "relu", "embed_add", "conv2", "flatten", "logits"]
    # an op outside the chain (here a Transpose) ends it
    assert quantize.nodes_to_quantize(_chain_graph(transpose=True)) == ["conv", "relu", "embed_add", "conv2"]


def test_quantized_matmul_output_stays_float(tmp_path):
    import onnx

    src = str(tmp_path / "g.onnx")
    onnx.save(_chain_graph(), src)
    rng = np.random.default_rng(2)
    feeds = [
        {
            "x": rng.uniform(0, 1, (1, 4, 6, 6)).astype(np.float32),
            "feat": rng.normal(0, 1, (1, 4, 6, 6)).astype(np.float32),
            "boxes": rng.uniform(0, 50, (3, 4)).astype(np.float32),
        }
        for _ in range(3)
    ]
    info = quantize.quantize_graph(src, str(tmp_path / "q.onnx"), feeds)
    assert info["quantized_nodes"] == 6
    q = onnx.load(str(tmp_path / "q.onnx")).graph
    producers = {o: n.op_type for n in q.node for o in n.output}
    consumers = {i: n.op_type for n in q.node for i in n.input}
    (mm,) = [n for n in q.node if n.name == "logits"]
    assert [producers[i] for i in mm.input] == ["DequantizeLinear", "DequantizeLinear"]  # 8-bit product
    assert mm.output[0] not in consumers  # its float result is the graph's output: no Q -> DQ after it
    (add,) = [n for n in q.node if n.name == "embed_add"]
    assert [producers[i] for i in add.input] == ["DequantizeLinear", "DequantizeLinear"]  # both sides 8-bit
    (box_add,) = [n for n in q.node if n.name == "box_add"]
    assert box_add.input[0] == "boxes"  # coordinates untouched
