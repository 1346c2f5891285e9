"""TensorRT backend against a *simulated* `tensorrt` + CUDA runtime (no GPU/TensorRT on CI).

The fakes implement only the TensorRT 10 / cuda-python calls the backend makes, as documented, with
"device memory" that is real host memory addressed by pointer, so data really flows through
cudaMemcpy -> set_tensor_address -> execute_async_v3 -> cudaMemcpy. This checks the backend's own logic
(profiles, cache use, buffers, shapes); it cannot prove the real TensorRT accepts these calls.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import types

import numpy as np
import pytest

from shapemask_ros.runtime import engine_cache
from shapemask_ros.runtime.backends import BackendOptions
from shapemask_ros.runtime.backends import tensorrt_backend as trt_backend
from shapemask_ros.runtime.bundle import BUNDLE_FORMAT, Bundle
from shapemask_ros.runtime.predictor import Predictor

S, M, MAX_BOXES = 32, 8, 10


class FakeCudart(types.SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(
            cudaError_t=types.SimpleNamespace(cudaSuccess=0),
            cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2),
        )
        self.memory: dict[int, np.ndarray] = {}

    def cudaMalloc(self, n):
        buf = np.zeros(n, np.uint8)
        self.memory[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cudaFree(self, ptr):
        self.memory.pop(ptr)
        return (0,)

    def cudaMemcpy(self, dst, src, n, kind):
        ctypes.memmove(dst, src, n)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def cudaGetDeviceCount(self):
        return 0, 1

    def cudaGetDeviceProperties(self, device):
        return 0, types.SimpleNamespace(name=b"Fake Orin\0\0\0", major=8, minor=7)


def make_fake_trt(version: str = "10.3.0") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = []
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity=None: None})
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = types.SimpleNamespace(FP16="fp16")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: dt  # the fake uses numpy dtypes as TensorRT dtypes

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self):
            self.inputs = []

        @property
        def num_inputs(self):
            return len(self.inputs)

        def get_input(self, i):
            return self.inputs[i]

    class Parser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data):
            kind = data.decode()
            self.network.kind = kind
            self.network.inputs = [Tensor("image", (1, S, S, 3))]
            if kind == "segment_boxes":
                self.network.inputs += [Tensor("boxes", (1, -1, 4)), Tensor("classes", (1, -1))]
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Config:
        def __init__(self):
            self.flags, self.profiles = set(), []

        def set_memory_pool_limit(self, pool, size):
            self.workspace = size

        def set_flag(self, flag):
            self.flags.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            assert flags == 0
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            shapes = {k: v for p in config.profiles for k, v in p.shapes.items()}
            trt.builds.append({"kind": network.kind, "flags": sorted(config.flags), "shapes": shapes})
            max_n = shapes["boxes"][-1][1] if "boxes" in shapes else 0
            return ("FAKEENGINE:" + json.dumps({"kind": network.kind, "max_n": max_n})).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addr = engine, {}, {}

        def set_input_shape(self, name, shape):
            if name == "boxes" or name == "classes":
                if not 1 <= shape[1] <= self.engine.max_n:
                    return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n = self.shapes["boxes"][1] if "boxes" in self.shapes else 2
            return {"masks": (1, n, M, M), "outer_boxes": (1, n, 4), "boxes": (1, n, 4), "scores": (1, n),
                    "classes": (1, n), "num_detections": (1,)}[name]  # fmt: skip

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def _view(self, name, shape, dtype):
            count = int(np.prod(shape))
            buf = (ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(self.addr[name])
            return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)

        def execute_async_v3(self, stream_handle):
            assert isinstance(stream_handle, int)
            if self.engine.kind == "segment_boxes":
                n = self.shapes["boxes"][1]
                boxes = self._view("boxes", (1, n, 4), np.float32)
                c = (boxes[..., :2] + boxes[..., 2:]) / 2
                half = (boxes[..., 2:] - boxes[..., :2]) / 2 * 1.25
                self._view("outer_boxes", (1, n, 4), np.float32)[:] = np.concatenate([c - half, c + half], -1)
                self._view("masks", (1, n, M, M), np.float32)[:] = 1.0
            else:
                self._view("boxes", (1, 2, 4), np.float32)[:] = [[[2, 2, 10, 10], [4, 4, 8, 8]]]
                self._view("outer_boxes", (1, 2, 4), np.float32)[:] = [[[2, 2, 10, 10], [4, 4, 8, 8]]]
                self._view("scores", (1, 2), np.float32)[:] = [[0.8, 0.1]]
                self._view("classes", (1, 2), np.int32)[:] = [[1, 0]]
                self._view("num_detections", (1,), np.int32)[:] = [2]
                self._view("masks", (1, 2, M, M), np.float32)[:] = 1.0
            return True

    class Engine:
        def __init__(self, meta):
            self.kind, self.max_n = meta["kind"], meta["max_n"]
            ins = ["image", "boxes", "classes"] if self.kind == "segment_boxes" else ["image"]
            outs = ["masks", "outer_boxes"] if self.kind == "segment_boxes" else [
                "boxes", "scores", "classes", "num_detections", "masks", "outer_boxes"]  # fmt: skip
            self.names = ins + outs
            self.modes = {n: ("in" if n in ins else "out") for n in self.names}

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return self.modes[name]

        def get_tensor_dtype(self, name):
            return np.int32 if name in ("classes", "num_detections") else np.float32

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            if not data.startswith(b"FAKEENGINE:"):
                return None  # what TensorRT does for a foreign or truncated engine
            return Engine(json.loads(data[len(b"FAKEENGINE:") :]))

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


@pytest.fixture()
def fake_gpu(monkeypatch):
    trt = make_fake_trt()
    cudart = FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "_import_cudart", lambda: cudart)
    return trt, cudart


@pytest.fixture()
def bundle_dir(tmp_path):
    root = tmp_path / "bundle"
    root.mkdir()
    for sig in ("segment_boxes", "detect_and_segment"):
        (root / f"{sig}.onnx").write_bytes(sig.encode())  # the fake parser reads the graph kind from this
    meta = {
        "format": BUNDLE_FORMAT,
        "image_size": S,
        "class_names": ["a", "b"],
        "num_classes": 2,
        "mask_class_agnostic": True,
        "max_boxes": MAX_BOXES,
        "mask_size": M,
        "onnx": {"segment_boxes": "segment_boxes.onnx", "detect_and_segment": "detect_and_segment.onnx"},
    }
    (root / "model.json").write_text(json.dumps(meta))
    return str(root)


def test_builds_with_profile_and_precision_then_runs_through_device_buffers(fake_gpu, bundle_dir, tmp_path):
    trt, cudart = fake_gpu
    cache = str(tmp_path / "engines")
    pred = Predictor.load(bundle_dir, backend="tensorrt", options=BackendOptions(engine_cache_dir=cache))
    assert pred.backend == "tensorrt:fp16"
    seg = next(b for b in trt.builds if b["kind"] == "segment_boxes")
    assert seg["flags"] == ["fp16"]
    assert seg["shapes"]["boxes"] == ((1, 1, 4), (1, MAX_BOXES, 4), (1, MAX_BOXES, 4))  # opt = min(20, max)
    assert seg["shapes"]["classes"] == ((1, 1), (1, MAX_BOXES), (1, MAX_BOXES))
    assert "image" not in seg["shapes"]  # static inputs need no profile entry
    assert len(trt.builds) == 2 and len([f for f in os.listdir(cache) if f.endswith(".engine")]) == 2

    image = np.zeros((16, 32, 3), np.uint8)  # scale 1
    boxes = np.array([[2.0 * i, 2.0, 2.0 * i + 8.0, 10.0] for i in range(13)])  # 13 > max_boxes: 2 chunks
    inst = pred.predict(image, boxes)
    assert len(inst) == 13 and inst.source_index.tolist() == list(range(13))
    # the fake engine's outer box is 1.25 x the box: the all-ones mask covers exactly that region
    assert inst.regions[0].tolist() == [0, 1, 9, 10] and inst.regions[3].tolist() == [5, 1, 10, 10]
    assert inst.masks[0].all()

    det = pred.predict(image, score_threshold=0.5)
    assert det.source_index.tolist() == [0] and det.class_ids.tolist() == [1]
    np.testing.assert_allclose(det.boxes, [[2, 2, 10, 10]])

    pred.runtime_backend.close()
    assert cudart.memory == {}  # every device buffer freed


def test_second_start_reuses_engines_and_an_upgrade_rebuilds(fake_gpu, bundle_dir, tmp_path, monkeypatch):
    trt, _ = fake_gpu
    cache = str(tmp_path / "engines")
    trt_backend.TensorRTBackend(Bundle.read(bundle_dir), cache, signatures=["segment_boxes"])
    trt_backend.TensorRTBackend(Bundle.read(bundle_dir), cache, signatures=["segment_boxes"])
    assert len(trt.builds) == 1
    upgraded = make_fake_trt(version="10.4.0")
    monkeypatch.setitem(sys.modules, "tensorrt", upgraded)
    trt_backend.TensorRTBackend(Bundle.read(bundle_dir), cache, signatures=["segment_boxes"])
    assert len(upgraded.builds) == 1  # new TensorRT version -> new key -> rebuilt


def test_foreign_engine_under_the_right_key_is_rebuilt(fake_gpu, bundle_dir, tmp_path):
    trt, _ = fake_gpu
    cache = engine_cache.EngineCache(str(tmp_path / "engines"))
    backend = trt_backend.TensorRTBackend(Bundle.read(bundle_dir), cache.cache_dir, signatures=["segment_boxes"])
    key = engine_cache.EngineCache.key(**backend._key_fields("segment_boxes"))
    with open(cache.engine_path(key), "wb") as f:
        f.write(b"engine from another TensorRT")
    trt_backend.TensorRTBackend(Bundle.read(bundle_dir), cache.cache_dir, signatures=["segment_boxes"])
    assert len(trt.builds) == 2


def test_build_only_and_profile_limits(fake_gpu, bundle_dir, tmp_path):
    trt, _ = fake_gpu
    paths = trt_backend.build_engines(bundle_dir, str(tmp_path / "engines"), precision="fp32")
    assert len(paths) == 2 and all(os.path.exists(p) for p in paths)
    assert all(b["flags"] == [] for b in trt.builds)  # fp32: no FP16 flag
    backend = trt_backend.TensorRTBackend(Bundle.read(bundle_dir), str(tmp_path / "engines"), precision="fp32")
    assert len(trt.builds) == 2  # reused what build_engines made
    too_many = np.zeros((1, MAX_BOXES + 1, 4), np.float32)
    with pytest.raises(RuntimeError, match="outside the engine's optimisation profile"):
        backend.segment_boxes(np.zeros((1, S, S, 3), np.float32), too_many, np.zeros((1, MAX_BOXES + 1), np.int32))
    with pytest.raises(ValueError, match="precision"):
        trt_backend.TensorRTBackend(Bundle.read(bundle_dir), str(tmp_path / "engines"), precision="int8")
