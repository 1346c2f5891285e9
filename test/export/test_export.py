"""Export tests: ONNX (both modes, dynamic boxes) vs TensorFlow, TensorRT operator list, priors as weights,
atomic bundle replacement, and the ONNX Runtime and TensorFlow predictor backends agreeing."""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import onnx
import pytest

from shapemask_ros.config.model_config import BackboneConfig, ModelConfig
from shapemask_ros.export.bundle import export_bundle, random_inputs, serving_functions
from shapemask_ros.export.onnx_check import check_tensorrt_compatible, compare_with_tensorflow, op_counts
from shapemask_ros.model.shapemask import build_model
from shapemask_ros.runtime.bundle import BundleMeta
from shapemask_ros.runtime.predictor import Predictor
from support.configs import tiny_model_config

pytestmark = pytest.mark.tf  # imports TensorFlow/Keras or the training package (see conftest.py)


def _perturbed_model(cfg, seed=1, scale=0.01):
    """Random weights with distinct detection scores (init weights give ties that NMS may break either way)."""
    keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + rng.normal(0, scale, v.shape).astype(np.float32))
    model.set_priors(rng.uniform(size=tuple(model.prior_head.priors.shape)).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = tiny_model_config(image_size=128)
    cfg.postprocess.score_threshold = 0.0  # always max_detections, with distinct scores
    model = _perturbed_model(cfg)
    out = export_bundle(model, str(tmp_path_factory.mktemp("b") / "bundle"), ["a", "b", "c"])
    return model, out


# what export has always written (models/*/model.json add category_ids from `shapemask export`)
EXPORTED_KEYS = [
    "format", "image_size", "class_names", "num_classes", "mask_class_agnostic", "max_boxes", "mask_size",
    "score_threshold", "opset", "preprocessing", "model_config", "created_by", "priors", "saved_model", "onnx",
    "onnx_weights",
]  # fmt: skip


def test_written_model_json_round_trips_through_bundle_meta(exported):
    _, out = exported
    with open(os.path.join(out, "model.json")) as f:
        raw = json.load(f)
    assert list(raw) == EXPORTED_KEYS
    assert list(BundleMeta.from_json(raw).to_json().items()) == list(raw.items())
    assert raw["score_threshold"] == 0.0 and raw["class_names"] == ["a", "b", "c"]


@pytest.mark.parametrize("num_boxes", [1, 17, 100])
def test_segment_boxes_onnx_matches_tensorflow(exported, num_boxes):
    model, out = exported
    image, boxes, classes = random_inputs(128, num_boxes, seed=num_boxes)
    err = compare_with_tensorflow(
        serving_functions(model)["segment_boxes"],
        f"{out}/segment_boxes.onnx",
        {"image": image, "boxes": boxes, "classes": classes},
    )
    assert err["masks"] < 1e-4 and err["outer_boxes"] < 1e-3


def test_detect_and_segment_onnx_matches_tensorflow(exported):
    model, out = exported
    image, _, _ = random_inputs(128, 1, seed=5)
    fn = serving_functions(model)["detect_and_segment"]
    ref = fn(image=image)
    scores = ref["scores"].numpy()[0]
    assert len(scores) > 0  # the check must cover real detections
    assert len(np.unique(scores)) == len(scores)  # no ties that NMS could break either way
    err = compare_with_tensorflow(fn, f"{out}/detect_and_segment.onnx", {"image": image})
    assert err["masks"] < 1e-4 and err["boxes"] < 1e-3 and err["scores"] < 1e-5 and err["classes"] == 0


def test_graphs_use_only_tensorrt_ops_and_no_control_flow(exported):
    _, out = exported
    for name in ("segment_boxes", "detect_and_segment"):
        path = f"{out}/{name}.onnx"
        assert check_tensorrt_compatible(path) == [], name
        ops = op_counts(path)
        assert "Gather" in ops and "Floor" in ops  # the gather-based crop, not crop_and_resize
        assert not {"Loop", "If", "Scan"} & set(ops)
    assert "NonMaxSuppression" in op_counts(f"{out}/detect_and_segment.onnx")


def test_priors_are_initializers_not_inputs(exported):
    model, out = exported
    graph = onnx.load(f"{out}/segment_boxes.onnx").graph
    assert [i.name for i in graph.input] == ["image", "boxes", "classes"]
    priors = model.prior_head.priors.numpy()
    # tf2onnx may fold the reshape of the priors into the initializer: compare flattened values
    found = [onnx.numpy_helper.to_array(t).ravel() for t in graph.initializer if np.prod(t.dims) == priors.size]
    assert any(np.array_equal(a, priors.ravel()) for a in found)
    np.testing.assert_array_equal(np.load(f"{out}/priors.npy", allow_pickle=False), priors)


def test_tensorrt_checker_flags_unsupported_ops(tmp_path):
    node = onnx.helper.make_node("Unique", ["x"], ["y"])
    loop_free = onnx.helper.make_graph(
        [node],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None])],
    )
    path = str(tmp_path / "u.onnx")
    onnx.save(onnx.helper.make_model(loop_free), path)
    assert check_tensorrt_compatible(path) == ["op Unique is not on TensorRT's ONNX operator list"]


def test_onnxruntime_and_tensorflow_predictors_agree(exported):
    _, out = exported
    rng = np.random.default_rng(9)
    image = rng.integers(0, 255, (90, 150, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 70], [80, 5, 149, 89], [30, 30, 40, 45]], np.float32)
    a = Predictor.load(out, backend="onnxruntime").predict(image, boxes)
    b = Predictor.load(out, backend="tensorflow").predict(image, boxes)
    assert a.backend.startswith("onnxruntime") and b.backend.startswith("tensorflow")
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_array_equal(a.regions, b.regions)
    np.testing.assert_allclose(a.mask_scores, b.mask_scores, atol=1e-4)
    diff = sum(int((ma != mb).sum()) for ma, mb in zip(a.masks, b.masks, strict=True))
    assert diff <= 2  # pixels exactly at the 0.5 threshold may flip
    da = Predictor.load(out, backend="onnxruntime").predict(image)
    db = Predictor.load(out, backend="tensorflow").predict(image)
    assert len(da) == len(db) > 0
    np.testing.assert_allclose(da.boxes, db.boxes, atol=1e-3)


def _snapshot(root):
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(root)
        for f in files
    }


def test_export_replaces_a_bundle_atomically(tmp_path, exported, monkeypatch):
    from shapemask_ros.export import bundle as bundle_mod

    model, _ = exported
    target = tmp_path / "bundle"
    export_bundle(model, str(target), ["a", "b", "c"], saved_model=False)
    before = _snapshot(target)
    with pytest.raises(ValueError, match="class names"):  # refused before anything is written
        export_bundle(model, str(target), ["only-one"], saved_model=False)
    assert _snapshot(target) == before

    # killed half-way: the priors are written and an ONNX file is half done when the export dies
    def dies_half_way(fn, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"half an onnx file")
        raise RuntimeError("killed half-way through the export")

    monkeypatch.setattr(bundle_mod, "export_onnx", dies_half_way)
    with pytest.raises(RuntimeError, match="half-way"):
        export_bundle(model, str(target), ["x", "y", "z"], saved_model=False)
    assert _snapshot(target) == before  # the old bundle, byte for byte
    assert sorted(os.listdir(tmp_path)) == ["bundle"]  # and nothing beside it


@pytest.mark.slow
def test_resnet50_640_segment_boxes_onnx_matches_tensorflow(tmp_path):
    """The real-sized check: ResNet-50 FPN, 640 x 640, 20 boxes."""
    cfg = ModelConfig(image_size=640, backbone=BackboneConfig(name="resnet50"))
    cfg.detector.num_classes = 1
    model = build_model(cfg)
    model.set_priors(np.random.default_rng(0).uniform(size=(1, 100, 32, 32)).astype(np.float32))
    out = export_bundle(model, str(tmp_path / "r50"), ["object"], saved_model=False)
    image, boxes, classes = random_inputs(640, 20, seed=3)
    err = compare_with_tensorflow(
        serving_functions(model)["segment_boxes"],
        f"{out}/segment_boxes.onnx",
        {"image": image, "boxes": boxes, "classes": classes},
    )
    assert err["masks"] < 1e-4 and err["outer_boxes"] < 1e-3
    assert check_tensorrt_compatible(f"{out}/segment_boxes.onnx") == []


@pytest.mark.slow
def test_detail_features_export_to_tensorrt_ops_and_match_tensorflow(tmp_path):
    """The fine head's C2 detail crop (`mask.detail_features`) is one more gather crop: TensorRT-clean ONNX
    equal to TensorFlow, with the projection trained (non-zero) so the check covers it."""
    cfg = tiny_model_config(image_size=128, detail_features=True)
    model = _perturbed_model(cfg, seed=3, scale=0.05)
    assert np.abs(model.detail_projection.kernel.numpy()).max() > 0
    out = export_bundle(model, str(tmp_path / "bundle"), ["a", "b", "c"], saved_model=False)
    image, boxes, classes = random_inputs(128, 9, seed=9)
    err = compare_with_tensorflow(
        serving_functions(model)["segment_boxes"],
        f"{out}/segment_boxes.onnx",
        {"image": image, "boxes": boxes, "classes": classes},
    )
    assert err["masks"] < 1e-4
    assert check_tensorrt_compatible(f"{out}/segment_boxes.onnx") == []
    assert not {"Loop", "If", "Scan"} & set(op_counts(f"{out}/segment_boxes.onnx"))
