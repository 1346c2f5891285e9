"""ONNX Runtime backend end to end on a tiny hand-made bundle that honours the export contract.

The graphs are stand-ins for the real export (which the integrator tests separately): segment_boxes
returns outer = 1.25 x box and a fixed "central 1/1.25" mask, so a correct pipeline pastes each mask
onto its input box; detect_and_segment returns fixed, padded detections.
"""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.runtime.backends import BackendOptions
from shapemask_ros.runtime.predictor import Predictor
from support.onnx_bundle import M, S, write_onnx_bundle


def foreground_box(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([region[0] + xs.min(), region[1] + ys.min(), region[0] + xs.max() + 1, region[1] + ys.max() + 1])


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    root = write_onnx_bundle(str(tmp_path_factory.mktemp("bundle")), max_boxes=40)
    return Predictor.load(root, backend="auto", options=BackendOptions(intra_op_num_threads=1))


def test_auto_picks_onnxruntime_here_and_says_why_not_tensorrt(predictor):
    assert predictor.backend.startswith("onnxruntime:")
    assert "tensorrt" in predictor.skipped_backends  # no TensorRT on this machine
    assert "tensorflow" not in predictor.skipped_backends  # never tried: ONNX Runtime worked


def test_given_boxes_are_chunked_through_a_dynamic_graph_and_pasted_in_place(predictor):
    rng = np.random.default_rng(3)
    height, width = 90, 120  # scale 64 / 120
    wh = rng.uniform(20, 40, (95, 2))
    xy = rng.uniform(0, 1, (95, 2)) * (np.array([width, height]) - wh)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    inst = predictor.predict(np.zeros((height, width, 3), np.uint8), boxes)  # 95 boxes, max_boxes 40: 3 calls
    assert len(inst) == 95 and inst.source_index.tolist() == list(range(95))
    assert inst.backend == predictor.backend
    tol = 1.0 + 0.5 * (40 * 1.25 / M)  # 1 px + half a (coarse, 32-bin) mask bin
    for i in range(0, 95, 7):
        np.testing.assert_allclose(foreground_box(inst.masks[i], inst.regions[i]), boxes[i], atol=tol)


def test_self_detection_through_onnxruntime(predictor):
    image = np.zeros((32, 128, 3), np.uint8)  # scale 0.5; detection 1 sits in rows < 16: kept
    inst = predictor.predict(image, score_threshold=0.5)
    assert inst.source_index.tolist() == [0]
    np.testing.assert_allclose(inst.boxes, [[8, 8, 40, 32]])  # clipped to the 32-row image
    assert inst.class_ids.tolist() == [2]
    assert predictor.predict(image).source_index.tolist() == [0, 1]


def test_explicit_providers_and_image_size_mismatch(tmp_path):
    root = write_onnx_bundle(str(tmp_path / "b"))
    pred = Predictor.load(root, backend="onnxruntime", options=BackendOptions(providers=["CPUExecutionProvider"]))
    assert pred.backend == "onnxruntime:CPUExecutionProvider" and pred.skipped_backends == {}
    bad = write_onnx_bundle(str(tmp_path / "c"), image_size=S + 8)  # graph says 72, model.json says 64
    with pytest.raises(RuntimeError, match="input 'image' has shape"):
        Predictor.load(bad, backend="onnxruntime")
