"""Inference backends and the choice between them.

`auto` tries TensorRT (tensorrt + cuda-python importable, a CUDA GPU visible, engines built or loaded
from the cache), then ONNX Runtime (CUDA provider first when this build has it), then the TensorFlow
SavedModel, and records why each preferred backend was skipped. Naming a backend explicitly never
falls back: if it cannot run, the error says why. Heavy libraries are imported only when a backend
is created.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shapemask_ros.runtime.backends.base import Backend, BackendUnavailable
from shapemask_ros.runtime.bundle import Bundle

log = logging.getLogger(__name__)

BACKEND_NAMES: tuple[str, ...] = ("tensorrt", "onnxruntime", "tensorflow")
AUTO_ORDER: tuple[str, ...] = BACKEND_NAMES


@dataclass(frozen=True)
class BackendOptions:
    """How to create a backend, beyond which one (the parameters `create_backend` and `Predictor.load` share).

    engine_cache_dir: TensorRT engine cache (None = $XDG_CACHE_HOME/shapemask_ros/engines).
    providers: ONNX Runtime providers (None = CUDA when available, then CPU).
    precision: TensorRT "fp16" | "fp32". intra_op_num_threads: ONNX Runtime threads (0 = default).
    spin: ONNX Runtime's worker threads busy-wait for work (ONNX Runtime's own default). False (this package's
    default, the one source of it: `load_predictor`, `Predictor.load` and `bench bundles` read it here) lets
    them sleep between runs: spinning costs CPU outside every run (the node at 10 Hz: 73-74 % of two cores
    instead of 45-49 %, same latency, docs/ros.md), slows the INT8 graph by a third on 2 cores, and on a busy
    host inflates the model's own CPU (the demo bag: docs/benchmarks.md).
    signatures: which of ("segment_boxes", "detect_and_segment") to prepare now (None = both); others are
    prepared on first use (a TensorRT engine build can then take minutes).
    """

    engine_cache_dir: str | None = None
    providers: Sequence[Any] | None = None
    precision: str = "fp16"
    intra_op_num_threads: int = 0
    spin: bool = False
    signatures: Sequence[str] | None = None


def _create_one(name: str, bundle: Bundle, options: BackendOptions) -> Backend:
    if name == "tensorrt":
        from shapemask_ros.runtime.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(
            bundle,
            engine_cache_dir=options.engine_cache_dir or None,
            precision=options.precision,
            signatures=options.signatures,
        )
    if name == "onnxruntime":
        from shapemask_ros.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            bundle,
            providers=options.providers,
            intra_op_num_threads=options.intra_op_num_threads,
            spin=options.spin,
            signatures=options.signatures,
        )
    if name == "tensorflow":
        from shapemask_ros.runtime.backends.tensorflow_backend import TensorFlowBackend

        return TensorFlowBackend(bundle)
    raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {BACKEND_NAMES}")


def create_backend(
    bundle: Bundle, backend: str = "auto", options: BackendOptions | None = None
) -> tuple[Backend, dict[str, str]]:
    """Create the requested backend; returns (backend, {skipped backend name: reason}).

    `auto` moves on when a backend is unavailable *or* fails to load (a failed TensorRT build, an
    ONNX graph that ONNX Runtime rejects), logging a warning with the reason each time.
    """
    options = options or BackendOptions()
    name = backend.strip().lower()
    if name != "auto":
        if name not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKEND_NAMES}")
        try:
            chosen = _create_one(name, bundle, options)
        except BackendUnavailable as e:
            raise RuntimeError(f"backend {name!r} was requested but cannot run here: {e}") from e
        log.info("inference backend: %s (requested)", chosen.name)
        return chosen, {}

    skipped: dict[str, str] = {}
    for candidate in AUTO_ORDER:
        try:
            chosen = _create_one(candidate, bundle, options)
        except BackendUnavailable as e:
            skipped[candidate] = str(e)
        except Exception as e:  # a real failure of a present backend: still try the next, but say so loudly
            skipped[candidate] = f"failed to load: {type(e).__name__}: {e}"
            log.warning("backend %s failed to load, trying the next one: %s", candidate, e)
        else:
            why = "; ".join(f"{k} skipped: {v}" for k, v in skipped.items())
            if skipped:
                log.warning("inference backend: %s (%s)", chosen.name, why)
            else:
                log.info("inference backend: %s", chosen.name)
            return chosen, skipped
    raise RuntimeError("no inference backend can run this model: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))


__all__ = ["BACKEND_NAMES", "Backend", "BackendOptions", "BackendUnavailable", "create_backend"]
