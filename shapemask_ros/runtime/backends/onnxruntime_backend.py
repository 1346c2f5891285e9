"""ONNX Runtime backend: one InferenceSession per ONNX graph of the bundle.

Providers default to CUDAExecutionProvider (when this onnxruntime build has it) then CPU. ONNX Runtime
falls back to CPU quietly when the CUDA libraries fail to load; we compare the providers the session
actually got with the ones asked for and warn, and `name` reports the provider really in use.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from shapemask_ros.runtime.backends.base import (
    DETECT_OUTPUTS,
    SEGMENT_BOXES_OUTPUTS,
    BackendUnavailable,
    SegmentFeeds,
    check_outputs,
)
from shapemask_ros.runtime.bundle import SIGNATURES, Bundle
from shapemask_ros.utils import io

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, then CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in PREFERRED_PROVIDERS if p in available] or list(available)


def _provider_name(p: str | tuple[str, dict[str, Any]]) -> str:
    return p[0] if isinstance(p, tuple) else p


class OnnxRuntimeBackend:
    """Runs `segment_boxes.onnx` / `detect_and_segment.onnx` with ONNX Runtime.

    Sessions for `signatures` (default: both) are created now, so a broken model fails at load time;
    any other signature is created on first use.
    """

    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        intra_op_num_threads: int = 0,
        signatures: Sequence[str] | None = None,
        *,
        spin: bool,  # BackendOptions.spin (create_backend passes it: one default, there)
    ) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed ({e})") from e
        if not bundle.has_onnx:
            raise BackendUnavailable(f"model bundle {bundle.path} has no ONNX graphs")
        self.bundle = bundle
        self.providers = list(providers) if providers else default_providers()
        self.intra_op_num_threads = int(intra_op_num_threads)
        self.spin = bool(spin)  # BackendOptions.spin
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pair: tuple[Any, ThreadPoolExecutor] | None = None  # segment_boxes_pair's session and worker
        for sig in signatures if signatures is not None else SIGNATURES:
            self._session(sig)
        active = next(iter(self._sessions.values())).get_providers()[0] if self._sessions else self.providers[0]
        self.name = f"onnxruntime:{_provider_name(active)}"

    def _session(self, signature: str) -> Any:
        with self._lock:
            if signature not in self._sessions:
                self._sessions[signature] = self._create(signature)
            return self._sessions[signature]

    def _create(self, signature: str, intra_op_num_threads: int | None = None) -> Any:
        import onnxruntime as ort

        path = self.bundle.onnx_path(signature)
        opts = ort.SessionOptions()
        threads = self.intra_op_num_threads if intra_op_num_threads is None else intra_op_num_threads
        opts.intra_op_num_threads = threads  # 0 = ONNX Runtime's default
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # A remote bundle (gs://) is read into memory; sessions accept the serialized graph as bytes.
        model: str | bytes = io.read_bytes(path) if io.is_remote(path) else path
        try:
            session = ort.InferenceSession(model, sess_options=opts, providers=self.providers)
        except Exception as e:  # ONNX Runtime raises its own exception types (Fail, InvalidGraph, ...)
            # one line: ONNX Runtime's first line without its "[ONNXRuntimeError] : 7 :" noise, and the fix
            first = (str(e).strip().splitlines() or [""])[0]
            first = first.split("] : ", 1)[-1][:200]
            raise RuntimeError(
                f"onnxruntime could not load {path} ({first}): the file is truncated, corrupt or not an ONNX "
                "graph; copy the bundle again or re-export it (`shapemask export`)"
            ) from None
        wanted = [_provider_name(p) for p in self.providers]
        got = session.get_providers()
        if wanted and wanted[0] not in got:
            log.warning(
                "onnxruntime: asked for %s but the session for %s runs on %s (missing CUDA/cuDNN libraries?)",
                wanted[0],
                signature,
                got,
            )
        self._check_inputs(session, signature, path)
        spinning = "" if self.spin else " (threads sleep between runs)"
        log.info("onnxruntime session for %s on %s%s", signature, got, spinning)
        return session

    def _check_inputs(self, session: Any, signature: str, path: str) -> None:
        names = {i.name: i for i in session.get_inputs()}
        expected = ("image", "boxes", "classes") if signature == "segment_boxes" else ("image",)
        missing = [n for n in expected if n not in names]
        if missing:
            raise RuntimeError(
                f"{path}: inputs {sorted(names)} lack {missing}: not the '{signature}' graph; copy the bundle "
                "again or re-export it (`shapemask export`)"
            )
        shape = names["image"].shape
        s = self.bundle.image_size
        fixed = [(d, want) for d, want in zip(shape[1:], (s, s, 3), strict=False) if isinstance(d, int)]
        if len(shape) != 4 or any(d != want for d, want in fixed):
            raise RuntimeError(
                f"{path}: input 'image' has shape {shape}, model.json says [1, {s}, {s}, 3]; model.json does "
                "not belong to these graphs: copy the bundle again or re-export it (`shapemask export`)"
            )
        outs = {o.name: o.shape for o in session.get_outputs()}
        m = self.bundle.mask_size
        mask_dims = [d for d in (outs.get("masks") or [])[-2:] if isinstance(d, int)]
        if any(d != m for d in mask_dims):
            raise RuntimeError(
                f"{path}: output 'masks' has shape {outs.get('masks')}, model.json says mask_size {m}; "
                "model.json does not belong to these graphs: copy the bundle again or re-export it"
            )

    def _run(
        self, signature: str, feeds: dict[str, np.ndarray], required: tuple[str, ...], session: Any = None
    ) -> dict[str, np.ndarray]:
        """Run `signature` on its session (or on `session`, another one of the same graph)."""
        session = session if session is not None else self._session(signature)
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, feeds)
        return check_outputs(dict(zip(names, values, strict=True)), required, signature, self.name)

    @staticmethod
    def _segment_feeds(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "image": np.ascontiguousarray(image, dtype=np.float32),
            "boxes": np.ascontiguousarray(boxes, dtype=np.float32),
            "classes": np.ascontiguousarray(classes, dtype=np.int32),
        }

    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        """Run `segment_boxes.onnx` on model-input tensors."""
        return self._run("segment_boxes", self._segment_feeds(image, boxes, classes), SEGMENT_BOXES_OUTPUTS)

    def segment_boxes_pair(
        self, first: SegmentFeeds, second: SegmentFeeds
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Two segment_boxes calls (mirrored-image averaging). On a CPU with default threading they run at
        once, each on one core of a one-thread session: a 384² Lite0 graph gains little from a second
        intra-op thread, so two single-thread runs side by side finish ~15 % sooner than two two-thread
        runs in a row (INT8, 2 cores: 37 vs 43 ms), and two concurrent runs on the shared-pool session
        are slower still. Otherwise (GPU provider, a thread count chosen, one core) they run in a row."""
        cpu = self.name == "onnxruntime:CPUExecutionProvider"
        if not (cpu and self.intra_op_num_threads == 0 and (os.cpu_count() or 1) >= 2):
            return self.segment_boxes(*first), self.segment_boxes(*second)
        with self._lock:
            if self._pair is None:
                session = self._create("segment_boxes", intra_op_num_threads=1)
                self._pair = (session, ThreadPoolExecutor(1, thread_name_prefix="ort-pair"))
        session, worker = self._pair

        def run(feeds: SegmentFeeds) -> dict[str, np.ndarray]:
            return self._run("segment_boxes", self._segment_feeds(*feeds), SEGMENT_BOXES_OUTPUTS, session)

        later = worker.submit(run, second)  # ONNX Runtime releases the GIL while it runs
        return run(first), later.result()

    def detect_and_segment(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Run `detect_and_segment.onnx` on a model-input image."""
        feeds = {"image": np.ascontiguousarray(image, dtype=np.float32)}
        return self._run("detect_and_segment", feeds, DETECT_OUTPUTS)
