"""`shapemask predict` and `shapemask build-engine` from the command line.

Mask geometry is checked on the hand-made ONNX bundle of test_runtime_onnxruntime (its mask is exactly
the given box), the real export path on a tiny exported model (ONNX only, random weights).
"""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest

from shapemask_ros import cli
from shapemask_ros.runtime.commands import parse_boxes, read_image
from support.configs import tiny_model_config
from support.onnx_bundle import write_onnx_bundle

H, W = 90, 120  # letterboxed into the 64 px model input (scale 64 / 120)


def _image(path, shape=(H, W)) -> str:
    img = np.full((*shape, 3), 40, np.uint8)
    img[20:60, 30:90] = (10, 200, 250)
    assert cv2.imwrite(str(path), img)
    return str(path)


def _png(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


@pytest.fixture(scope="module")
def handmade(tmp_path_factory) -> str:
    return write_onnx_bundle(str(tmp_path_factory.mktemp("handmade") / "bundle"), max_boxes=4)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    import keras

    from shapemask_ros.export.bundle import export_bundle
    from shapemask_ros.model.shapemask import build_model

    keras.utils.set_random_seed(0)
    cfg = tiny_model_config(64)
    cfg.postprocess.score_threshold = 0.0  # random weights: always max_detections objects
    model = build_model(cfg)
    return export_bundle(
        model, str(tmp_path_factory.mktemp("exported") / "bundle"), ["cup", "box", "can"], saved_model=False
    )


def test_predict_with_boxes_writes_one_mask_per_kept_box(handmade, tmp_path):
    boxes = [
        [30, 20, 90, 60],
        [5, 5, 25, 40],
        [float("nan"), 0, 10, 10],
        [100, 50, 140, 80],
        [0, 70, 50, 90],
        [60, 0, 100, 15],
    ]  # 6 boxes > max_boxes 4: two model calls; one NaN, one clipped
    (tmp_path / "boxes.json").write_text(json.dumps({"boxes": boxes, "classes": ["can", 0, 1, 2, -1, 7]}))
    out = tmp_path / "out"
    rc = cli.main(
        [
            "predict",
            _image(tmp_path / "in.png"),
            "--model",
            handmade,
            "--boxes",
            str(tmp_path / "boxes.json"),
            "--out",
            str(out),
            "--backend",
            "onnxruntime",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "instances.json").read_text())
    assert doc["num_objects"] == 5 and doc["dropped_boxes"] == {"non_finite": 1, "clipped": 1}
    assert [o["source_index"] for o in doc["objects"]] == [0, 1, 3, 4, 5]
    assert [o["class_name"] for o in doc["objects"]] == ["can", "cup", "can", None, None]  # 7: unknown
    assert doc["backend"].startswith("onnxruntime:")
    labels = _png(out / "labels.png")
    assert labels.dtype == np.uint16 and labels.shape == (H, W)
    assert sorted(p.name for p in out.glob("mask_*.png")) == [f"mask_{i:03d}.png" for i in range(5)]
    tol = 1.0 + 0.5 * (60 * 1.25 / 32) / (64 / 120)  # 1 px + half a mask bin of the largest box
    for obj in doc["objects"]:
        mask = _png(out / obj["mask_file"])
        assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}
        ys, xs = np.nonzero(mask)
        box = np.clip(np.array(boxes[obj["source_index"]], float), 0, [W, H, W, H])
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=tol)
        assert obj["mask_area"] == len(xs)
        assert np.all(labels[mask > 0] >= 1)
    assert np.count_nonzero(labels == 5) == doc["objects"][4]["mask_area"]  # the last object is on top
    overlay = cv2.cvtColor(_png(out / "overlay.png"), cv2.COLOR_BGR2RGB)
    original = cv2.cvtColor(_png(tmp_path / "in.png"), cv2.COLOR_BGR2RGB)
    changed = np.any(overlay != original, axis=2)
    assert changed[labels > 0].mean() > 0.9 and not changed[:3, -3:].any()  # masks tinted, background kept


def test_predict_removes_stale_mask_files(handmade, tmp_path):
    out = tmp_path / "out"
    image = _image(tmp_path / "in.png")
    for n in (3, 1):
        (tmp_path / "b.json").write_text(json.dumps([[10 * i, 10, 10 * i + 30, 50] for i in range(n)]))
        assert (
            cli.main(["predict", image, "--model", handmade, "--boxes", str(tmp_path / "b.json"), "--out", str(out)])
            == 0
        )
    assert [p.name for p in out.glob("mask_*.png")] == ["mask_000.png"]
    assert json.loads((out / "instances.json").read_text())["num_objects"] == 1


@pytest.mark.tf
def test_predict_on_an_exported_model(exported, tmp_path):
    image = _image(tmp_path / "in.jpg")
    (tmp_path / "b.json").write_text(json.dumps([{"box": [30, 20, 90, 60], "class": "box"}, {"box": [5, 5, 40, 40]}]))
    out = tmp_path / "given"
    assert (
        cli.main(
            [
                "predict",
                image,
                "--model",
                exported,
                "--boxes",
                str(tmp_path / "b.json"),
                "--out",
                str(out),
                "--mask-threshold",
                "0.0",
            ]
        )
        == 0
    )
    doc = json.loads((out / "instances.json").read_text())
    assert [o["class_name"] for o in doc["objects"]] == ["box", None]
    for obj in doc["objects"]:
        x, y, w, h = obj["region"]
        mask = _png(out / obj["mask_file"])
        # threshold 0: the whole outer box (1.25 x the given box, clipped) is foreground, nothing outside
        assert obj["mask_area"] == w * h == np.count_nonzero(mask) and mask[y : y + h, x : x + w].all()
        bx1, by1, bx2, by2 = obj["box"]
        assert x <= bx1 and y <= by1 and x + w >= bx2 and y + h >= by2
    out = tmp_path / "self"
    assert cli.main(["predict", image, "--model", exported, "--out", str(out)]) == 0
    doc = json.loads((out / "instances.json").read_text())
    assert doc["num_objects"] == tiny_model_config(64).postprocess.max_detections
    assert len(list(out.glob("mask_*.png"))) == doc["num_objects"]


def test_predict_bad_inputs_exit_2_with_a_reason(handmade, tmp_path, caplog):
    image = _image(tmp_path / "in.png")
    (tmp_path / "not_image.png").write_bytes(b"definitely not a png")
    (tmp_path / "bad.json").write_text("[[1, 2, 3]]")
    (tmp_path / "broken.json").write_text("[[1, 2,")
    cases = [
        ([str(tmp_path / "missing.png")], "image file not found"),
        ([str(tmp_path / "not_image.png")], "not an image"),
        ([image, "--boxes", str(tmp_path / "bad.json")], "shape [N, 4]"),
        ([image, "--boxes", str(tmp_path / "broken.json")], "not valid JSON"),
        ([image, "--boxes", str(tmp_path / "absent.json")], "cannot read boxes file"),
        ([image, "--mask-threshold", "1.5"], "mask-threshold"),
    ]
    for args, message in cases:
        caplog.clear()
        out = tmp_path / "out"
        assert cli.main(["predict", *args, "--model", handmade, "--out", str(out)]) == 2, message
        assert message in caplog.text
        assert not out.exists()
    caplog.clear()
    assert cli.main(["predict", image, "--model", str(tmp_path / "nowhere")]) == 2
    assert "not found" in caplog.text


def test_parse_boxes_formats():
    names = ("cup", "box")
    b, c = parse_boxes([[0, 0, 1, 1], [2, 2, 3, 3]], names)
    assert b.shape == (2, 4) and c is None
    b, c = parse_boxes({"boxes": [[0, 0, 1, 1]], "classes": ["box"]}, names)
    assert c.tolist() == [1]
    b, c = parse_boxes([{"box": [0, 0, 1, 1], "class": 0}, {"box": [1, 1, 2, 2], "class": "lamp"}], names)
    assert c.tolist() == [0, -1]  # unknown name: unknown class, box kept
    assert parse_boxes([], names)[0].shape == (0, 4)
    for bad, message in [
        ({"classes": [1]}, "'boxes'"),
        ({"boxes": [[0, 0, 1, 1]], "classes": [1, 2]}, "2 classes"),
        ([{"class": 1}], "no 'box'"),
        ([[0, 0, "a", 1]], "numbers"),
        ("boxes", "unexpected"),
        ([{"box": [0, 0, 1, 1], "class": True}], "class must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_boxes(bad, names)


def test_read_image_converts_to_rgb(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    rgb = read_image(str(tmp_path / "b.png"))
    assert rgb.shape == (4, 5, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    grey = np.full((4, 5), 7, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    assert read_image(str(tmp_path / "g.png")).shape == (4, 5, 3)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_says_why(handmade, caplog):
    assert cli.main(["build-engine", "--model", handmade, "--engine-cache-dir", "/nonexistent/cache"]) == 1
    assert "cannot build TensorRT engines on this machine" in caplog.text and "tensorrt" in caplog.text
    caplog.clear()
    assert cli.main(["build-engine", "--model", handmade, "--signatures", "segment_boxes,oops"]) == 2
    assert "--signatures" in caplog.text


def test_predict_flip_average_flag_runs_the_mirrored_pass(handmade, tmp_path, monkeypatch):
    from shapemask_ros.runtime.predictor import Predictor

    calls = []
    real = Predictor._unmirror  # every mirrored pass's maps go through it

    def spy(maps, width):
        calls.append(len(maps[0]))
        return real(maps, width)

    monkeypatch.setattr(Predictor, "_unmirror", staticmethod(spy))
    (tmp_path / "b.json").write_text(json.dumps({"boxes": [[30, 20, 90, 60], [5, 5, 25, 40]]}))
    image = _image(tmp_path / "in.png")
    args = ["predict", image, "--model", handmade, "--boxes", str(tmp_path / "b.json"), "--backend", "onnxruntime"]
    assert cli.main([*args, "--out", str(tmp_path / "plain")]) == 0 and calls == []
    assert cli.main([*args, "--out", str(tmp_path / "flip"), "--flip-average"]) == 0 and calls == [2]
    plain = json.loads((tmp_path / "plain" / "instances.json").read_text())
    flip = json.loads((tmp_path / "flip" / "instances.json").read_text())
    # the handmade model's mask is the box, mirror-symmetric: the averaged masks are the same
    assert [o["mask_area"] for o in flip["objects"]] == [o["mask_area"] for o in plain["objects"]]
