"""EngineCache with a real directory and injected build/load functions (no TensorRT needed)."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os

import pytest

from shapemask_ros.runtime.engine_cache import EngineCache, EngineCacheError, default_cache_dir
from support.engine_cache import PROFILE, fields, load, race_worker


@pytest.fixture()
def onnx_file(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"fake onnx graph v1")
    return str(p)


class Builder:
    """Counts builds; the engine is a recognisable byte string so 'deserialize' can check it."""

    def __init__(self, payload: bytes = b"ENGINE:ok") -> None:
        self.builds = 0
        self.payload = payload

    def build(self) -> bytes:
        self.builds += 1
        return self.payload


def test_key_changes_with_every_field_and_onnx_content(onnx_file, tmp_path):
    base = EngineCache.key(**fields(onnx_file))
    assert len(base) == 64 and base == EngineCache.key(**fields(onnx_file))
    variants = {
        "trt_version": "10.4.0",
        "gpu_name": "RTX 4090",
        "compute_capability": "8.9",
        "precision": "fp32",
        "profile": {**PROFILE, "boxes": [[1, 1, 4], [1, 20, 4], [1, 50, 4]]},
    }
    keys = {name: EngineCache.key(**fields(onnx_file, **{name: v})) for name, v in variants.items()}
    assert base not in keys.values()
    assert len(set(keys.values())) == len(variants)
    # the ONNX file enters by content, not by name: a copy keys the same, an edit keys differently
    copy = tmp_path / "elsewhere.onnx"
    copy.write_bytes(open(onnx_file, "rb").read())
    assert EngineCache.key(**fields(str(copy))) == base
    with open(onnx_file, "wb") as f:
        f.write(b"fake onnx graph v2")
    assert EngineCache.key(**fields(onnx_file)) != base
    # tuples and lists in the profile are the same profile
    as_tuples = {k: tuple(tuple(s) for s in v) for k, v in PROFILE.items()}
    assert EngineCache.key(**fields(str(copy), profile=as_tuples)) == base


def test_second_call_reuses_the_cached_engine(onnx_file, tmp_path):
    cache = EngineCache(str(tmp_path / "cache"))
    b = Builder()
    assert cache.get_or_build(fields(onnx_file), b.build, load) == "ENGINE:ok"
    assert cache.get_or_build(fields(onnx_file), b.build, load) == "ENGINE:ok"
    assert EngineCache(str(tmp_path / "cache")).get_or_build(fields(onnx_file), b.build, load) == "ENGINE:ok"
    assert b.builds == 1
    key = EngineCache.key(**fields(onnx_file))
    meta = json.loads(open(cache.meta_path(key)).read())
    assert meta["key"] == key and meta["precision"] == "fp16" and meta["engine_bytes"] == len(b"ENGINE:ok")
    # a different precision is a different engine
    cache.get_or_build(fields(onnx_file, precision="fp32"), b.build, load)
    assert b.builds == 2


def test_corrupt_engine_is_deleted_and_rebuilt_exactly_once(onnx_file, tmp_path, caplog):
    cache = EngineCache(str(tmp_path))
    key = EngineCache.key(**fields(onnx_file))
    with open(cache.engine_path(key), "wb") as f:
        f.write(b"TRUNCATED")  # e.g. an engine from an older TensorRT
    b = Builder()
    with caplog.at_level(logging.WARNING):
        assert cache.get_or_build(fields(onnx_file), b.build, load) == "ENGINE:ok"
    assert b.builds == 1
    assert open(cache.engine_path(key), "rb").read() == b"ENGINE:ok"
    assert any("failed to load" in r.getMessage() or "unloadable" in r.getMessage() for r in caplog.records)
    assert any("10-20 minutes" in r.getMessage() for r in caplog.records)  # warned before building


def test_fresh_build_that_does_not_load_raises_without_looping(onnx_file, tmp_path):
    cache = EngineCache(str(tmp_path))
    b = Builder(payload=b"GARBAGE")
    with pytest.raises(EngineCacheError, match="does not load"):
        cache.get_or_build(fields(onnx_file), b.build, load)
    assert b.builds == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith((".engine", ".json"))]


def test_failed_build_leaves_no_files(onnx_file, tmp_path):
    cache_dir = tmp_path / "cache"
    cache = EngineCache(str(cache_dir))

    def broken() -> bytes:
        raise RuntimeError("out of GPU memory")

    with pytest.raises(RuntimeError, match="out of GPU memory"):
        cache.get_or_build(fields(onnx_file), broken, load)
    leftovers = [p for p in os.listdir(cache_dir) if not p.endswith(".lock")]
    assert leftovers == []
    # empty engine data is refused too
    with pytest.raises(EngineCacheError, match="no engine data"):
        cache.get_or_build(fields(onnx_file), lambda: b"", load)
    assert [p for p in os.listdir(cache_dir) if not p.endswith(".lock")] == []


def test_failed_write_leaves_no_temp_file(onnx_file, tmp_path, monkeypatch):
    cache = EngineCache(str(tmp_path))

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        cache.get_or_build(fields(onnx_file), Builder().build, load)
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp") or p.endswith(".engine")] == []


def test_build_only_builds_and_validates_but_returns_nothing(onnx_file, tmp_path):
    cache = EngineCache(str(tmp_path))
    b = Builder()
    assert cache.get_or_build(fields(onnx_file), b.build, load, build_only=True) is None
    assert os.path.exists(cache.engine_path(EngineCache.key(**fields(onnx_file))))
    loads = []
    assert cache.get_or_build(fields(onnx_file), b.build, lambda d: loads.append(d), build_only=True) is None
    assert b.builds == 1 and loads == [b"ENGINE:ok"]  # the cached engine was validated by loading it


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")  # a file where the directory should be: unwritable even for root
    with pytest.raises(EngineCacheError) as e:
        EngineCache(str(blocker / "engines"))
    assert str(blocker / "engines") in str(e.value) and "engine_cache_dir" in str(e.value)


def test_bad_key_fields_are_rejected(onnx_file, tmp_path):
    cache = EngineCache(str(tmp_path))
    with pytest.raises(ValueError, match="missing"):
        cache.get_or_build({"onnx_path": onnx_file}, Builder().build, load)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == os.path.join(str(tmp_path), "shapemask_ros", "engines")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().endswith(os.path.join(".cache", "shapemask_ros", "engines"))


@pytest.mark.slow
def test_two_processes_build_exactly_once(onnx_file, tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    counter = str(tmp_path / "builds.txt")
    cache_dir = str(tmp_path / "cache")
    procs = [ctx.Process(target=race_worker, args=(cache_dir, onnx_file, counter, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got == ["ENGINE:raced", "ENGINE:raced"]
    assert open(counter).read().count("build") == 1
