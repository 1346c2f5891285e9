"""Bundle.read validates model.json and resolves its files; BundleMeta is model.json's one type."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from shapemask_ros.config.model_config import PostprocessConfig
from shapemask_ros.runtime.bundle import BUNDLE_FORMAT, Bundle, BundleMeta
from support import REPO


def write_bundle(root, **over) -> str:
    meta = {
        "format": BUNDLE_FORMAT,
        "image_size": 64,
        "class_names": ["a", "b", "c"],
        "num_classes": 3,
        "mask_class_agnostic": True,
        "max_boxes": 100,
        "mask_size": 128,
        "score_threshold": 0.05,
        "onnx": {"segment_boxes": "segment_boxes.onnx", "detect_and_segment": "detect_and_segment.onnx"},
        "saved_model": "saved_model",
        "priors": "priors.npy",
        "preprocessing": "RGB uint8 -> float32",
        "created_by": {"tool": "test"},
    }
    meta.update(over)
    meta = {k: v for k, v in meta.items() if v is not ...}
    os.makedirs(root, exist_ok=True)
    for name in ("segment_boxes.onnx", "detect_and_segment.onnx"):
        open(os.path.join(root, name), "wb").close()
    np.save(os.path.join(root, "priors.npy"), np.full((1, 4, 8, 8), 0.5, np.float32))
    os.makedirs(os.path.join(root, "saved_model"), exist_ok=True)
    with open(os.path.join(root, "model.json"), "w") as f:
        json.dump(meta, f)
    return str(root)


def test_reads_and_resolves_paths(tmp_path):
    b = Bundle.read(write_bundle(tmp_path / "m"))
    assert b.image_size == 64 and b.class_names == ("a", "b", "c") and b.mask_class_agnostic
    assert b.onnx_path("segment_boxes") == os.path.join(str(tmp_path / "m"), "segment_boxes.onnx")
    assert b.saved_model == os.path.join(str(tmp_path / "m"), "saved_model")
    assert b.has_onnx and b.has_saved_model and b.created_by == {"tool": "test"}
    # pointing at model.json itself works too
    assert Bundle.read(os.path.join(str(tmp_path / "m"), "model.json")).image_size == 64


def test_onnx_only_bundle_is_fine_but_asking_for_missing_parts_is_clear(tmp_path):
    b = Bundle.read(write_bundle(tmp_path / "m", saved_model=None))
    assert not b.has_saved_model and b.has_onnx
    b = Bundle.read(write_bundle(tmp_path / "n", onnx=None))
    with pytest.raises(FileNotFoundError, match="no ONNX graph"):
        b.onnx_path("segment_boxes")


@pytest.mark.parametrize(
    ("over", "error", "message"),
    [
        ({"format": "shapemask_ros.bundle/0"}, ValueError, "unsupported bundle format"),
        ({"format": ...}, ValueError, "unsupported bundle format"),
        ({"image_size": ...}, ValueError, "missing required field 'image_size'"),
        ({"image_size": "640"}, ValueError, "'image_size' has the wrong type"),
        ({"image_size": True}, ValueError, "'image_size' has the wrong type"),
        ({"max_boxes": 0}, ValueError, "'max_boxes' must be positive"),
        ({"class_names": ["a", "b"]}, ValueError, "2 class_names but num_classes = 3"),
        ({"class_names": ["a", 1, "c"]}, ValueError, "list of strings"),
        ({"mask_class_agnostic": 1}, ValueError, "'mask_class_agnostic' has the wrong type"),
        ({"onnx": {"segment_boxes": "segment_boxes.onnx"}}, ValueError, "must name both"),
        ({"onnx": {"other": "x.onnx"}}, ValueError, "unknown ONNX signature"),
        ({"onnx": {"segment_boxes": "gone.onnx", "detect_and_segment": "detect_and_segment.onnx"}},
         FileNotFoundError, "gone.onnx"),
        ({"saved_model": "nowhere"}, FileNotFoundError, "nowhere"),
        ({"onnx": None, "saved_model": None}, ValueError, "neither ONNX graphs nor a SavedModel"),
    ],
)  # fmt: skip
def test_bad_model_json_gives_clear_errors(tmp_path, over, error, message):
    with pytest.raises(error, match=message):
        Bundle.read(write_bundle(tmp_path / "m", **over))


def test_missing_directory_or_model_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Bundle.read(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.json"):
        Bundle.read(str(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Bundle.read(str(tmp_path / "bad"))
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "model.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        Bundle.read(str(tmp_path / "list"))


def test_missing_priors_only_warns(tmp_path, caplog):
    root = write_bundle(tmp_path / "m")
    os.remove(os.path.join(root, "priors.npy"))
    assert Bundle.read(root).priors.endswith("priors.npy")
    assert any("priors" in r.getMessage() for r in caplog.records)


COMMITTED = sorted(p.parent.name for p in (REPO / "models").glob("*/model.json"))


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_bundles_load_and_round_trip_unchanged(name):
    """The shipped bundles' model.json reads into BundleMeta and writes back the same keys, values and order."""
    root = REPO / "models" / name
    raw = json.loads((root / "model.json").read_text())
    assert list(BundleMeta.from_json(raw).to_json().items()) == list(raw.items())
    bundle = Bundle.read(str(root))
    assert bundle.class_names == tuple(raw["class_names"]) and bundle.has_onnx


def test_committed_bundles_found():
    assert {"demo", "real_lite0", "real_lite0_int8"} <= set(COMMITTED)


def test_meta_defaults_and_unknown_keys(tmp_path):
    """Optional fields get the defaults (the score threshold is the model config's); unknown keys survive."""
    raw = json.loads(open(os.path.join(write_bundle(tmp_path / "m"), "model.json")).read())
    del raw["score_threshold"], raw["max_boxes"]
    raw["category_ids"] = [1, 2, 3]
    meta = BundleMeta.from_json(raw)
    assert meta.score_threshold == PostprocessConfig().score_threshold and meta.max_boxes == 100
    assert meta.extra == {"category_ids": [1, 2, 3]} and meta.to_json()["category_ids"] == [1, 2, 3]
    assert BundleMeta.from_json(meta.to_json()) == meta
