"""TensorRT backend: engines built from the bundle's ONNX graphs, cached by `EngineCache`, run with the
TensorRT 10 name-based tensor API (`set_input_shape`, `set_tensor_address`, `execute_async_v3`).

NOT RUN IN CI: the calls into `tensorrt` and CUDA below cannot run on the CI machines (no GPU, and
TensorRT cannot be installed there). They were written against the TensorRT 10 Python API
documentation and NVIDIA's TensorRT 10 Python samples (samples/python/common_runtime.py), not tested
on hardware in this repository; the engine cache they rely on is fully tested. See docs/tensorrt.md.

Requirements on the target: TensorRT 10.x Python bindings (JetPack 6 ships them; x86: `pip install
tensorrt`) and NVIDIA's `cuda-python` (module `cuda.bindings.runtime`, or the older `cuda.cudart`) for
device memory and streams -- no PyTorch or PyCUDA. `tensorrt` is imported only inside functions here,
and nowhere else in the project.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from shapemask_ros.runtime.backends.base import (
    DETECT_OUTPUTS,
    SEGMENT_BOXES_OUTPUTS,
    BackendUnavailable,
    check_outputs,
)
from shapemask_ros.runtime.bundle import SIGNATURES, Bundle
from shapemask_ros.runtime.engine_cache import EngineCache
from shapemask_ros.utils import io

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32")
OPT_BOXES = 20  # optimisation-profile "opt" number of boxes: a typical detector frame
DEFAULT_WORKSPACE_BYTES = 1 << 30


def _import_trt() -> Any:
    import tensorrt as trt

    return trt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python layout
    return cudart


def _cuda_check(cudart: Any, result: Any) -> Any:
    """cuda-python returns (error, *values): raise on error, return the value(s)."""
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA runtime error: {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_info(device: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device `device`."""
    cudart = _import_cudart()
    props = _cuda_check(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(name).strip(), f"{props.major}.{props.minor}"


def unavailable_reason(bundle: Bundle | None = None) -> str | None:
    """Why this backend cannot run here (None when it can): library, GPU or model file missing."""
    try:
        _import_trt()
    except ImportError as e:
        return f"tensorrt is not importable ({e})"
    try:
        cudart = _import_cudart()
    except ImportError as e:
        return f"cuda-python is not installed ({e}); install the cuda-python matching your CUDA"
    try:
        count = _cuda_check(cudart, cudart.cudaGetDeviceCount())
    except Exception as e:  # the driver is missing or broken
        return f"no usable CUDA driver ({e})"
    if not count:
        return "no CUDA GPU is visible"
    if bundle is not None and not bundle.has_onnx:
        return f"model bundle {bundle.path} has no ONNX graphs to build engines from"
    return None


def engine_profile(bundle: Bundle, signature: str) -> dict[str, list[list[int]]]:
    """min/opt/max input shapes per input: fixed image, 1 / 20 / max_boxes boxes for segment_boxes."""
    s = bundle.image_size
    image = [1, s, s, 3]
    profile = {"image": [image, image, image]}
    if signature == "segment_boxes":
        n_max = bundle.max_boxes
        n_opt = min(OPT_BOXES, n_max)
        profile["boxes"] = [[1, 1, 4], [1, n_opt, 4], [1, n_max, 4]]
        profile["classes"] = [[1, 1], [1, n_opt], [1, n_max]]
    return profile


def build_serialized_engine(
    onnx_bytes: bytes,
    profile: dict[str, list[list[int]]],
    precision: str = "fp16",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> bytes:
    """Parse an ONNX graph and build a serialized TensorRT engine (TensorRT 10 builder API)."""
    trt = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16; building FP16 anyway (consider precision='fp32')")
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    dynamic = 0
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        if any(d < 0 for d in tuple(tensor.shape)):
            if tensor.name not in profile:
                raise RuntimeError(
                    f"ONNX input '{tensor.name}' has dynamic shape {tuple(tensor.shape)} "
                    f"but the bundle contract gives no range for it"
                )
            lo, opt, hi = profile[tensor.name]
            opt_profile.set_shape(tensor.name, lo, opt, hi)
            dynamic += 1
    if dynamic:
        config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log above)")
    return bytes(serialized)


class _EngineRunner:
    """One deserialized engine + execution context + reusable device buffers."""

    def __init__(self, runtime: Any, engine: Any) -> None:
        trt = _import_trt()
        self._cudart = _import_cudart()
        self._runtime = runtime  # the engine must not outlive its runtime
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity bytes)
        self._stream = _cuda_check(self._cudart, self._cudart.cudaStreamCreate())

    def _device_buffer(self, name: str, nbytes: int) -> int:
        cudart = self._cudart
        ptr, cap = self._buffers.get(name, (0, 0))
        if nbytes > cap:
            if ptr:
                _cuda_check(cudart, cudart.cudaFree(ptr))
            ptr = int(_cuda_check(cudart, cudart.cudaMalloc(max(nbytes, 256))))
            self._buffers[name] = (ptr, max(nbytes, 256))
        return ptr

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self._cudart
        ctx = self.context
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.inputs:
            if name not in feeds:
                raise RuntimeError(f"TensorRT engine input '{name}' was not fed (have {sorted(feeds)})")
            arr = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            if not ctx.set_input_shape(name, arr.shape):
                raise RuntimeError(f"input '{name}' shape {arr.shape} is outside the engine's optimisation profile")
            ptr = self._device_buffer(name, arr.nbytes)
            _cuda_check(cudart, cudart.cudaMemcpy(ptr, arr.ctypes.data, arr.nbytes, h2d))
            ctx.set_tensor_address(name, ptr)
        hosts: dict[str, np.ndarray] = {}
        for name in self.outputs:
            shape = tuple(ctx.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"output '{name}' has unresolved shape {shape}")
            hosts[name] = np.empty(shape, dtype=self.dtypes[name])
            ctx.set_tensor_address(name, self._device_buffer(name, hosts[name].nbytes))
        if not ctx.execute_async_v3(_native_handle(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        _cuda_check(cudart, cudart.cudaStreamSynchronize(self._stream))
        for name, host in hosts.items():
            ptr, _ = self._buffers[name]
            _cuda_check(cudart, cudart.cudaMemcpy(host.ctypes.data, ptr, host.nbytes, d2h))
        return hosts

    def close(self) -> None:
        cudart = self._cudart
        for ptr, _ in self._buffers.values():
            cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None


def _native_handle(obj: Any) -> int:
    try:
        from cuda.bindings.utils import get_cuda_native_handle  # int(obj) is deprecated in cuda-python 12.9+

        return int(get_cuda_native_handle(obj))
    except ImportError:
        return int(obj)


class TensorRTBackend:
    """TensorRT engines for the bundle's signatures, loaded from (or built into) the engine cache.

    Engines for `signatures` (default: both) are loaded or built now; others on first use. With
    `build_only=True` engines are built/validated into the cache and nothing can be run.
    """

    def __init__(
        self,
        bundle: Bundle,
        engine_cache_dir: str | None = None,
        precision: str = "fp16",
        signatures: Sequence[str] | None = None,
        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
        build_only: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        reason = unavailable_reason(bundle)
        if reason:
            raise BackendUnavailable(reason)
        self.bundle = bundle
        self.precision = precision
        self.workspace_bytes = int(workspace_bytes)
        self.build_only = build_only
        self.cache = EngineCache(engine_cache_dir)
        self.name = f"tensorrt:{precision}"
        self._runners: dict[str, _EngineRunner] = {}
        self._lock = threading.Lock()  # an execution context must not run two frames at once
        for sig in signatures if signatures is not None else SIGNATURES:
            self._runner(sig)

    def _key_fields(self, signature: str) -> dict[str, Any]:
        trt = _import_trt()
        gpu_name, capability = gpu_info()
        return {
            "onnx_path": self.bundle.onnx_path(signature),
            "trt_version": trt.__version__,
            "gpu_name": gpu_name,
            "compute_capability": capability,
            "precision": self.precision,
            "profile": engine_profile(self.bundle, signature),
        }

    def _runner(self, signature: str) -> _EngineRunner | None:
        if signature in self._runners:
            return self._runners[signature]
        trt = _import_trt()
        onnx_path = self.bundle.onnx_path(signature)
        profile = engine_profile(self.bundle, signature)

        def build() -> bytes:
            return build_serialized_engine(io.read_bytes(onnx_path), profile, self.precision, self.workspace_bytes)

        def deserialize(data: bytes) -> tuple[Any, Any]:
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(data)
            if engine is None:  # e.g. "version tag does not match" after a TensorRT upgrade
                raise RuntimeError(
                    "TensorRT could not deserialize the engine (other TensorRT version/GPU, or truncated)"
                )
            return runtime, engine

        loaded = self.cache.get_or_build(self._key_fields(signature), build, deserialize, build_only=self.build_only)
        if loaded is None:  # build_only
            return None
        runner = _EngineRunner(*loaded)
        self._runners[signature] = runner
        return runner

    def _run(self, signature: str, feeds: dict[str, np.ndarray], required: tuple[str, ...]) -> dict[str, np.ndarray]:
        if self.build_only:
            raise RuntimeError("this TensorRT backend was created with build_only=True and cannot run")
        with self._lock:
            runner = self._runner(signature)
            assert runner is not None
            outputs = runner.run(feeds)
        return check_outputs(outputs, required, signature, self.name)

    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        """Run the segment_boxes engine on model-input tensors."""
        return self._run("segment_boxes", {"image": image, "boxes": boxes, "classes": classes}, SEGMENT_BOXES_OUTPUTS)

    def detect_and_segment(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Run the detect_and_segment engine on a model-input image."""
        return self._run("detect_and_segment", {"image": image}, DETECT_OUTPUTS)

    def close(self) -> None:
        """Free device memory and streams."""
        for runner in self._runners.values():
            runner.close()
        self._runners.clear()


def build_engines(
    bundle_path: str,
    engine_cache_dir: str | None = None,
    precision: str = "fp16",
    signatures: Sequence[str] | None = None,
) -> list[str]:
    """Ahead-of-time build (or validate) the engines of a bundle into the cache; returns the engine paths.

    For `shapemask build-engine` and device images: run once after installing/upgrading TensorRT, so
    the first start of the node does not spend 10-20 minutes building.
    """
    bundle = Bundle.read(bundle_path)
    sigs = list(signatures) if signatures is not None else list(SIGNATURES)
    backend = TensorRTBackend(bundle, engine_cache_dir, precision, signatures=sigs, build_only=True)
    return [backend.cache.engine_path(EngineCache.key(**backend._key_fields(s))) for s in sigs]
