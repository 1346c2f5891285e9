"""A tiny hand-made ONNX bundle that honours the export contract (ONNX Runtime backend tests)."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shapemask_ros.ops.sampling import box_prior_in_outer
from shapemask_ros.runtime.bundle import BUNDLE_FORMAT

S, M = 64, 32


DET_BOXES = np.array([[4, 4, 20, 20], [30, 2, 60, 30], [0, 0, 0, 0]], np.float32)  # model-input px, 1 pad


def _save(graph: onnx.GraphProto, path: str) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _image_zero() -> list[onnx.NodeProto]:
    # 0 * mean(image): keeps the image input live without changing any output
    return [
        helper.make_node("ReduceMean", ["image"], ["img_mean"], keepdims=0),
        helper.make_node("Mul", ["img_mean", "zero"], ["img_zero"]),
    ]


def _conv_term(seed: int = 0) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A small convolution stack on the image, reduced to a scalar `conv_term` (~0.05) added to the masks:
    something for `shapemask quantize` to quantize (Conv -> Relu -> Conv -> Relu, a residual Add)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(0, 2e-3, (4, 3, 3, 3)).astype(np.float32), "cw1"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "cb1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32), "cw2"),
        numpy_helper.from_array(np.zeros(4, np.float32), "cb2"),
        numpy_helper.from_array(np.array(0.05, np.float32), "c_scale"),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["img_nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["img_nchw", "cw1", "cb1"], ["f1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["f1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "cw2", "cb2"], ["f2"], name="conv2"),
        helper.make_node("Relu", ["f2"], ["r2"], name="relu2"),
        helper.make_node("Add", ["r1", "r2"], ["res"], name="residual"),
        helper.make_node("ReduceMean", ["res"], ["f_mean"], keepdims=0),
        helper.make_node("Mul", ["f_mean", "c_scale"], ["conv_term"]),
    ]
    return nodes, inits


def write_onnx_bundle(root: str, image_size: int = S, max_boxes: int = 100, conv: bool = False) -> str:
    """The bundle at `root`. conv: segment_boxes' masks also depend on the image through a small
    convolution stack (_conv_term), so quantization has float work to replace."""
    os.makedirs(root, exist_ok=True)
    prior = box_prior_in_outer(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0.0, 0.0, 1.0, 1.0]), M)
    a = np.array(
        [[1.125, 0, -0.125, 0], [0, 1.125, 0, -0.125], [-0.125, 0, 1.125, 0], [0, -0.125, 0, 1.125]],
        np.float32,
    )  # [x1 y1 x2 y2] @ a = the box scaled 1.25x about its centre
    consts = [
        numpy_helper.from_array(a, "scale_125"),
        numpy_helper.from_array(prior[None, None].astype(np.float32), "prior"),
        numpy_helper.from_array(np.array([M, M], np.int64), "mm"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, S, S, 3])
    conv_nodes, conv_inits = _conv_term() if conv else ([], [])
    consts += conv_inits
    seg = helper.make_graph(
        [
            *_image_zero(),
            helper.make_node("MatMul", ["boxes", "scale_125"], ["outer_boxes"], name="box_matmul"),
            helper.make_node("Shape", ["classes"], ["n_shape"]),
            helper.make_node("Concat", ["n_shape", "mm"], ["mask_shape"], axis=0),
            helper.make_node("Expand", ["prior", "mask_shape"], ["masks_raw"]),
            helper.make_node("Add", ["masks_raw", "img_zero"], ["masks_pre" if conv else "masks"]),
            *conv_nodes,
            *([helper.make_node("Add", ["masks_pre", "conv_term"], ["masks"])] if conv else []),
        ],
        "segment_boxes",
        [
            image,
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, "N", 4]),
            helper.make_tensor_value_info("classes", TensorProto.INT32, [1, "N"]),
        ],
        [
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, "N", M, M]),
            helper.make_tensor_value_info("outer_boxes", TensorProto.FLOAT, [1, "N", 4]),
        ],
        initializer=consts,
    )
    seg.input[0].type.tensor_type.shape.dim[1].dim_value = image_size
    seg.input[0].type.tensor_type.shape.dim[2].dim_value = image_size
    _save(seg, os.path.join(root, "segment_boxes.onnx"))

    outer = (DET_BOXES @ a).astype(np.float32)
    det_consts = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(DET_BOXES[None], "c_boxes"),
        numpy_helper.from_array(np.array([[0.9, 0.3, 0.0]], np.float32), "c_scores"),
        numpy_helper.from_array(np.array([[2, 0, 0]], np.int32), "c_classes"),
        numpy_helper.from_array(np.array([2], np.int32), "c_num"),
        numpy_helper.from_array(np.broadcast_to(prior, (1, 3, M, M)).astype(np.float32), "c_masks"),
        numpy_helper.from_array(outer[None], "c_outer"),
    ]
    det = helper.make_graph(
        [
            *_image_zero(),
            helper.make_node("Add", ["c_scores", "img_zero"], ["scores"]),
            *[helper.make_node("Identity", [f"c_{n}"], [n]) for n in ("boxes", "classes", "masks")],
            helper.make_node("Identity", ["c_num"], ["num_detections"]),
            helper.make_node("Identity", ["c_outer"], ["outer_boxes"]),
        ],
        "detect_and_segment",
        [image],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 3, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3]),
            helper.make_tensor_value_info("classes", TensorProto.INT32, [1, 3]),
            helper.make_tensor_value_info("num_detections", TensorProto.INT32, [1]),
            helper.make_tensor_value_info("masks", TensorProto.FLOAT, [1, 3, M, M]),
            helper.make_tensor_value_info("outer_boxes", TensorProto.FLOAT, [1, 3, 4]),
        ],
        initializer=det_consts,
    )
    _save(det, os.path.join(root, "detect_and_segment.onnx"))

    meta = {
        "format": BUNDLE_FORMAT,
        "image_size": S,
        "class_names": ["cup", "box", "can"],
        "num_classes": 3,
        "mask_class_agnostic": True,
        "max_boxes": max_boxes,
        "mask_size": M,
        "score_threshold": 0.05,
        "onnx": {"segment_boxes": "segment_boxes.onnx", "detect_and_segment": "detect_and_segment.onnx"},
        "saved_model": None,
        "preprocessing": "test",
        "created_by": "test_runtime_onnxruntime",
    }
    with open(os.path.join(root, "model.json"), "w") as f:
        json.dump(meta, f)
    return root
