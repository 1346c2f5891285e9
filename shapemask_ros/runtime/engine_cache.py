"""On-disk cache of built TensorRT engines, safe across processes and TensorRT upgrades.

TensorRT engines take 10-20 minutes to build on Jetson-class devices and only load on the exact
TensorRT version and GPU they were built for. The cache therefore:

* keys each engine by sha256(ONNX content) + TensorRT version + GPU name + compute capability +
  precision + optimisation profile (canonical JSON, hashed again with sha256), so any change rebuilds
  and nothing stale is ever loaded by mistake;
* stores `<cache_dir>/<key>.engine` plus `<key>.json` (what was built, when, how long it took);
* holds a file lock (`<key>.lock`) while checking/building, so two processes never build the same
  engine at once, and the one that waited reuses the other's result;
* writes atomically (temp file in the same directory, fsync, os.replace): a crash never leaves a
  truncated engine behind under the final name;
* treats a failed load (TensorRT "version tag does not match" after an upgrade, a truncated file) as
  a stale entry: logs it, deletes it and rebuilds once;
* refuses an unwritable cache directory with an error naming the directory and the parameter to change,
  rather than silently building into a temp dir and paying the build again on every start.

This module imports nothing from TensorRT; the build and load functions are injected.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import filelock

from shapemask_ros.utils import io

log = logging.getLogger(__name__)

T = TypeVar("T")

KEY_FIELDS: tuple[str, ...] = (
    "onnx_path",
    "trt_version",
    "gpu_name",
    "compute_capability",
    "precision",
    "profile",
)
DEFAULT_LOCK_TIMEOUT_S = 3600.0  # a waiter must outlast a slow first build on a Jetson


class EngineCacheError(RuntimeError):
    """The cache directory cannot be used, or an engine could not be built/loaded."""


def default_cache_dir() -> str:
    """`$XDG_CACHE_HOME/shapemask_ros/engines`, falling back to `~/.cache/shapemask_ros/engines`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shapemask_ros", "engines")


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's content (local paths streamed; remote via tf.io.gfile)."""
    h = hashlib.sha256()
    if io.is_remote(path):
        h.update(io.read_bytes(path))
        return h.hexdigest()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=list)


class EngineCache:
    """Directory of built engines keyed by everything that makes an engine (in)compatible."""

    def __init__(self, cache_dir: str | None = None, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
        self.cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
        self.lock_timeout_s = float(lock_timeout_s)
        self._check_writable()

    def _check_writable(self) -> None:
        # A real write probe: os.access() says yes to root and to read-only mounts alike.
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.cache_dir)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise EngineCacheError(
                f"TensorRT engine cache directory {self.cache_dir!r} is not writable ({e.strerror or e}). "
                "Point the 'engine_cache_dir' parameter (ROS parameter engine_cache_dir, "
                "BackendOptions(engine_cache_dir=...), or $XDG_CACHE_HOME) at a writable, persistent "
                "directory."
            ) from e

    # -- keys and paths ------------------------------------------------------------------------------------
    @staticmethod
    def key_payload(
        onnx_path: str,
        trt_version: str,
        gpu_name: str,
        compute_capability: str,
        precision: str,
        profile: Any,
    ) -> dict[str, Any]:
        """The JSON object that is hashed into a key (the ONNX file enters by its content hash)."""
        return {
            "onnx_sha256": file_sha256(onnx_path),
            "trt_version": str(trt_version),
            "gpu_name": str(gpu_name),
            "compute_capability": str(compute_capability),
            "precision": str(precision),
            "profile": json.loads(_canonical(profile)),  # tuples -> lists, so equal profiles hash equal
        }

    @staticmethod
    def key(
        onnx_path: str,
        trt_version: str,
        gpu_name: str,
        compute_capability: str,
        precision: str,
        profile: Any,
    ) -> str:
        """sha256 hex key over the ONNX file's sha256 and all other fields (canonical JSON)."""
        payload = EngineCache.key_payload(onnx_path, trt_version, gpu_name, compute_capability, precision, profile)
        return hashlib.sha256(_canonical(payload).encode("ascii")).hexdigest()

    def engine_path(self, key: str) -> str:
        return os.path.join(self.cache_dir, f"{key}.engine")

    def meta_path(self, key: str) -> str:
        return os.path.join(self.cache_dir, f"{key}.json")

    def lock_path(self, key: str) -> str:
        return os.path.join(self.cache_dir, f"{key}.lock")

    # -- main entry ----------------------------------------------------------------------------------------
    def get_or_build(
        self,
        key_fields: Mapping[str, Any],
        build_fn: Callable[[], bytes],
        deserialize_fn: Callable[[bytes], T],
        build_only: bool = False,
    ) -> T | None:
        """Load the cached engine for `key_fields` (the arguments of `key`), building it when missing.

        `build_fn()` returns serialized engine bytes; `deserialize_fn(bytes)` turns them into the runtime
        object and must raise if they do not load. A cached entry that fails to load is deleted and built
        again once; a freshly built engine that fails to load raises EngineCacheError. With
        `build_only=True` the engine is built (or the cached one validated by loading it) and None is
        returned -- for ahead-of-time builds (`shapemask build-engine`, CI images).
        """
        missing = [f for f in KEY_FIELDS if f not in key_fields]
        unknown = [f for f in key_fields if f not in KEY_FIELDS]
        if missing or unknown:
            raise ValueError(f"key_fields must have exactly {KEY_FIELDS}; missing {missing}, unknown {unknown}")
        payload = self.key_payload(**key_fields)
        key = hashlib.sha256(_canonical(payload).encode("ascii")).hexdigest()
        path = self.engine_path(key)

        # Fast path without the lock: engines are replaced atomically, so a visible file is complete.
        if os.path.exists(path):
            try:
                return self._load(path, deserialize_fn, build_only, payload)
            except Exception as e:  # any load failure means: rebuild under the lock
                log.warning("cached TensorRT engine failed to load, rebuilding it: %s", _one_line(e))

        lock = filelock.FileLock(self.lock_path(key), timeout=self.lock_timeout_s)
        try:
            with lock:
                return self._locked_get_or_build(key, payload, build_fn, deserialize_fn, build_only)
        except filelock.Timeout as e:
            raise EngineCacheError(
                f"waited {self.lock_timeout_s:.0f} s for another process building {path} "
                f"(lock {self.lock_path(key)}); if no such process runs, delete the lock file"
            ) from e

    def _verify(self, path: str, payload: Mapping[str, Any], data: bytes) -> None:
        """EngineCacheError (one line) when the cached entry is not what its key promises: built by another
        TensorRT version (a copied or shared cache), truncated or modified. Checked *before* TensorRT sees
        the bytes: deserialising a foreign engine can abort the process instead of raising."""
        meta_path = path[: -len(".engine")] + ".json"
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            raise EngineCacheError(f"{path}: its record {meta_path} is missing or unreadable ({e})") from None
        built_by, here = str(meta.get("trt_version")), str(payload.get("trt_version"))
        if built_by != here:
            raise EngineCacheError(f"{path} was built by TensorRT {built_by}, this is TensorRT {here}")
        if meta.get("engine_sha256") != hashlib.sha256(data).hexdigest():
            raise EngineCacheError(f"{path} is truncated or modified (sha256 differs from {meta_path})")

    def _load(
        self,
        path: str,
        deserialize_fn: Callable[[bytes], T],
        build_only: bool,
        payload: Mapping[str, Any] | None = None,
    ) -> T | None:
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise EngineCacheError(f"{path} is empty")
        if payload is not None:
            self._verify(path, payload, data)
        obj = deserialize_fn(data)
        log.info("loaded cached TensorRT engine %s", path)
        return None if build_only else obj

    def _locked_get_or_build(
        self,
        key: str,
        payload: dict[str, Any],
        build_fn: Callable[[], bytes],
        deserialize_fn: Callable[[bytes], T],
        build_only: bool,
    ) -> T | None:
        path = self.engine_path(key)
        if os.path.exists(path):  # another process may have built it while we waited for the lock
            try:
                return self._load(path, deserialize_fn, build_only, payload)
            except Exception as e:  # stale (TensorRT upgrade) or truncated
                log.warning("deleting unloadable cached TensorRT engine: %s", _one_line(e))
                self._remove(key)

        log.warning(
            "building TensorRT engine (%s, %s); first builds take 10-20 minutes on Jetson-class devices; cached at %s",
            payload.get("precision"),
            payload.get("gpu_name"),
            path,
        )
        start = time.monotonic()
        try:
            data = build_fn()
        except EngineCacheError:
            raise
        except Exception as e:  # the builder's own exception, possibly many lines: one line + the fix
            raise EngineCacheError(
                f"building the TensorRT engine {path} failed ({_one_line(e)}); on a machine without a working "
                f"TensorRT builder copy a cache built by `shapemask build-engine` with TensorRT "
                f"{payload.get('trt_version')} on the same GPU model, or use backend onnxruntime"
            ) from e
        seconds = time.monotonic() - start
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
            raise EngineCacheError(f"TensorRT engine build for {path} returned no engine data")
        data = bytes(data)
        io.atomic_write_bytes(path, data)
        meta = {
            "key": key,
            **payload,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(seconds, 3),
            "engine_bytes": len(data),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
        }
        io.atomic_write_text(self.meta_path(key), json.dumps(meta, indent=2, sort_keys=True))
        log.warning("built TensorRT engine in %.1f s: %s", seconds, path)
        try:
            obj = deserialize_fn(data)
        except Exception as e:
            self._remove(key)
            raise EngineCacheError(f"freshly built TensorRT engine {path} does not load: {e}") from e
        return None if build_only else obj

    def _remove(self, key: str) -> None:
        for p in (self.engine_path(key), self.meta_path(key)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
