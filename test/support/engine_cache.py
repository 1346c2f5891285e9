"""Engine-cache fixtures: cache key fields, a fake engine loader and the worker of the two-process race
(a module of its own so that spawned processes can import it)."""

from __future__ import annotations

from shapemask_ros.runtime.engine_cache import EngineCache

PROFILE = {"boxes": [[1, 1, 4], [1, 20, 4], [1, 100, 4]], "image": [[1, 64, 64, 3]] * 3}


def fields(onnx_path: str, **over) -> dict:
    base = {
        "onnx_path": onnx_path,
        "trt_version": "10.3.0",
        "gpu_name": "Orin",
        "compute_capability": "8.7",
        "precision": "fp16",
        "profile": PROFILE,
    }
    base.update(over)
    return base


def load(data: bytes) -> str:
    if not data.startswith(b"ENGINE:"):
        raise RuntimeError("version tag does not match")
    return data.decode()


def race_worker(cache_dir: str, onnx_path: str, counter: str, barrier, results) -> None:
    import time

    def build() -> bytes:
        with open(counter, "a") as f:
            f.write("build\n")
        time.sleep(1.0)  # long enough that the other process is certainly waiting on the lock
        return b"ENGINE:raced"

    barrier.wait()
    results.put(EngineCache(cache_dir).get_or_build(fields(onnx_path), build, load))
