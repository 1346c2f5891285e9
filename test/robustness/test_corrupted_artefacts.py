"""Corrupted artefacts (issue 15): each gives one line naming the file and the fix, never a backend traceback.

A copy of the shipped demo bundle is damaged one way at a time: a truncated ONNX graph, a model.json that
does not match the graphs (edited fields; graphs of another model), priors of the wrong shape / with NaN /
not a .npy, and a TensorRT engine cache entry from another TensorRT version or truncated.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shapemask_ros.runtime.engine_cache import EngineCache, EngineCacheError
from shapemask_ros.runtime.predictor import Predictor
from support import REPO as REPO_ROOT

REPO = REPO_ROOT
DEMO = REPO / "models" / "demo"


def _bundle(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    shutil.copytree(DEMO, d)
    return d


def _edit(d: Path, drop_config: bool = False, **fields) -> None:
    meta = json.loads((d / "model.json").read_text())
    meta.update(fields)
    if drop_config:
        meta.pop("model_config", None)
    (d / "model.json").write_text(json.dumps(meta))


def _error(d: Path) -> str:
    """The message of the error Predictor.load raises (ONNX Runtime backend, no fallback)."""
    with pytest.raises((ValueError, RuntimeError, FileNotFoundError)) as e:
        Predictor.load(str(d), backend="onnxruntime")
    text = str(e.value)
    assert "\n" not in text, text  # one line
    return text


def test_truncated_onnx_graph(tmp_path):
    d = _bundle(tmp_path)
    f = d / "segment_boxes.onnx"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    text = _error(d)
    assert str(f) in text and "truncated" in text and "re-export" in text


@pytest.mark.parametrize(
    "fields,word",
    [({"image_size": 320}, "image_size"), ({"mask_size": 64}, "mask_size"),
     ({"num_classes": 3, "class_names": ["a", "b", "c"]}, "num_classes"),
     ({"mask_class_agnostic": False}, "mask_class_agnostic")],
    ids=["image_size", "mask_size", "num_classes", "agnostic"],
)  # fmt: skip
def test_model_json_that_does_not_match_the_graphs(tmp_path, fields, word):
    d = _bundle(tmp_path)
    _edit(d, **fields)
    text = _error(d)
    assert str(d / "model.json") in text and word in text and "re-export" in text


@pytest.mark.parametrize("fields", [{"image_size": 320}, {"mask_size": 64}], ids=["image", "masks"])
def test_model_json_without_its_config_is_checked_against_the_graphs(tmp_path, fields):
    """Without `model_config` to compare with, the graphs' own input/output shapes catch the mismatch."""
    d = _bundle(tmp_path)
    _edit(d, drop_config=True, **fields)
    text = _error(d)
    assert ".onnx" in text and "model.json" in text and "re-export" in text


def test_graphs_swapped(tmp_path):
    d = _bundle(tmp_path)
    a, b = d / "segment_boxes.onnx", d / "detect_and_segment.onnx"
    a.rename(d / "x")
    b.rename(a)
    (d / "x").rename(b)
    text = _error(d)
    assert str(a) in text and "not the 'segment_boxes' graph" in text


@pytest.mark.parametrize(
    "priors,word",
    [(np.zeros((3, 5), np.float32), "shape"), (np.zeros((2, 16, 32, 32), np.float32), "shape"),
     (np.full((1, 16, 32, 32), np.nan, np.float32), "NaN"), (np.full((1, 4, 8, 8), 3.0, np.float32), "outside"),
     (np.ones((1, 4, 8, 8), np.int64), "dtype"), (b"\x93NUMPY garbage", "not a readable"),
     (np.array([{"a": 1}], dtype=object), "not a readable")],
    ids=["2d", "rows", "nan", "range", "int", "garbage", "pickle"],
)  # fmt: skip
def test_bad_priors(tmp_path, priors, word):
    d = _bundle(tmp_path)
    if isinstance(priors, bytes):
        (d / "priors.npy").write_bytes(priors)
    else:
        np.save(d / "priors.npy", priors, allow_pickle=True)
    text = _error(d)
    assert str(d / "priors.npy") in text and word in text and "re-export" in text


def test_cli_reports_a_corrupt_bundle_in_one_line_without_traceback(tmp_path):
    d = _bundle(tmp_path)
    f = d / "detect_and_segment.onnx"
    f.write_bytes(f.read_bytes()[:1000])
    import cv2

    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((32, 32, 3), np.uint8))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from shapemask_ros.cli import main; sys.exit(main())",
         "predict", str(tmp_path / "img.png"), "--model", str(d), "--backend", "onnxruntime",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode in (1, 2)  # 1: the requested backend cannot run this bundle (predict's convention)
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and str(f) in errors[0] and "re-export" in errors[0]


# ----------------------------------------------------------------------------------------- engine cache

FIELDS = {
    "trt_version": "10.3.0",
    "gpu_name": "Orin",
    "compute_capability": "8.7",
    "precision": "fp16",
    "profile": {"boxes": [1, 8, 100]},
}


def _load(data: bytes) -> str:
    if not data.startswith(b"ENGINE:10.3"):
        raise AssertionError("TensorRT must never see a foreign or damaged engine")  # it may abort the process
    return data.decode()


def _foreign_entry(tmp_path: Path) -> tuple[EngineCache, dict, str]:
    """A cache entry under this machine's key whose record says TensorRT 8.6 built it (a copied cache)."""
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")
    fields = {"onnx_path": str(onnx), **FIELDS}
    cache = EngineCache(str(tmp_path / "cache"))
    key = EngineCache.key(**fields)
    engine = b"ENGINE:8.6 plan"
    Path(cache.engine_path(key)).write_bytes(engine)
    meta = {"trt_version": "8.6.1", "engine_sha256": __import__("hashlib").sha256(engine).hexdigest()}
    Path(cache.meta_path(key)).write_text(json.dumps(meta))
    return cache, fields, cache.engine_path(key)


def test_engine_from_another_tensorrt_version_is_rebuilt_not_deserialised(tmp_path, caplog):
    cache, fields, path = _foreign_entry(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_build(fields, lambda: b"ENGINE:10.3 plan", _load) == "ENGINE:10.3 plan"
    line = next(r.getMessage() for r in caplog.records if "TensorRT 8.6.1" in r.getMessage())
    assert path in line and "this is TensorRT 10.3.0" in line and "\n" not in line
    assert json.loads(Path(cache.meta_path(Path(path).stem)).read_text())["trt_version"] == "10.3.0"


def test_engine_from_another_version_without_a_builder_is_one_line_with_the_fix(tmp_path):
    cache, fields, path = _foreign_entry(tmp_path)

    def no_builder() -> bytes:
        raise RuntimeError("[TRT] [E] 1: [builder.cpp::build::123] Error Code 1: Internal Error\n  more\n  lines")

    with pytest.raises(EngineCacheError) as e:
        cache.get_or_build(fields, no_builder, _load)
    text = str(e.value)
    assert "\n" not in text and path in text and "build-engine" in text and "TensorRT 10.3.0" in text


def test_truncated_engine_is_caught_before_tensorrt_sees_it(tmp_path, caplog):
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"graph")
    fields = {"onnx_path": str(onnx), **FIELDS}
    cache = EngineCache(str(tmp_path / "cache"))
    assert cache.get_or_build(fields, lambda: b"ENGINE:10.3 full plan", _load) == "ENGINE:10.3 full plan"
    path = cache.engine_path(EngineCache.key(**fields))
    Path(path).write_bytes(b"ENGINE:10.3 fu")  # a copy cut short
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_build(fields, lambda: b"ENGINE:10.3 full plan", _load) == "ENGINE:10.3 full plan"
    assert any("truncated or modified" in r.getMessage() and path in r.getMessage() for r in caplog.records)
