"""Timing of the model inside a bag-eval run: `TimedPredictor` wraps the predictor the processor calls.

Timing: per frame, `model` is the time inside `Predictor.predict` (letterbox + network + pasting) and
`network` the backend calls alone; `geometry` is the processor's 3D stage (real work, reported on its
own); `overhead` is everything else the frame costs: reading and deserialising its messages (`io`), the
processor's decoding, validation and message building (`process_other`) and serialising + writing the
outputs (`encode`). CPU, split the same way: `model` is the whole process's CPU inside `predict`, `geometry`
its CPU in the 3D stage; the processor's and the encoding's CPU are the whole process's outside both (so
runtime threads still busy after a run count as overhead), reading's is the reading thread's. Overlays and
copying the input topics are reported separately (optional debug outputs / proportional to the bag, not to
the frames).
"""

from __future__ import annotations

import time
from typing import Any


class TimedBackend:
    """Wraps a runtime backend to time its network calls."""

    def __init__(self, inner: Any, sink: list[float]) -> None:
        self._inner = inner
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in ("segment_boxes", "segment_boxes_pair", "detect_and_segment") and callable(attr):

            def timed(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return attr(*a, **k)
                finally:
                    self._sink[0] += time.perf_counter() - t0

            return timed
        return attr


class TimedPredictor:
    """The predictor as the processor sees it, with the time spent in `predict` recorded: wall and CPU of
    the whole process (the runtime's worker threads included)."""

    def __init__(self, inner: Any) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["network_s"] = [0.0]
        self.__dict__["acc"] = dict.fromkeys(("model", "model_cpu"), 0.0)
        backend = getattr(inner, "runtime_backend", None)
        if backend is not None:
            inner.runtime_backend = TimedBackend(backend, self.network_s)

    def predict(self, *a: Any, **k: Any) -> Any:
        t0, p0 = time.perf_counter(), time.process_time()
        try:
            return self._inner.predict(*a, **k)
        finally:
            self.acc["model"] += time.perf_counter() - t0
            self.acc["model_cpu"] += time.process_time() - p0

    def take(self) -> dict[str, float]:
        """{model, model_cpu, network} seconds since the last call."""
        out = {**self.acc, "network": self.network_s[0]}
        self.acc.update(dict.fromkeys(self.acc, 0.0))
        self.network_s[0] = 0.0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. mask_threshold set by the processor
        setattr(self._inner, name, value)
