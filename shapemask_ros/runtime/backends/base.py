"""The backend protocol: run the bundle's two signatures on already-preprocessed arrays.

Backends know nothing about original images, letterboxing or pasting (that is the Predictor's job);
they take model-input tensors and return NumPy dicts keyed by the bundle's output names.

    segment_boxes(image [1,S,S,3] f32, boxes [1,N,4] f32, classes [1,N] i32)
        -> {"masks": [1,N,M,M] f32, "outer_boxes": [1,N,4] f32}
    detect_and_segment(image [1,S,S,3] f32)
        -> {"boxes": [1,D,4], "scores": [1,D], "classes": [1,D] i32, "num_detections": [1] i32,
            "masks": [1,D,M,M], "outer_boxes": [1,D,4]}

A backend may also run two independent segment_boxes calls at once (`PairedSegmentBackend`, used for
mirrored-image averaging); `segment_boxes_pair` falls back to two calls in a row for every other backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

SEGMENT_BOXES_OUTPUTS: tuple[str, ...] = ("masks", "outer_boxes")
DETECT_OUTPUTS: tuple[str, ...] = ("boxes", "scores", "classes", "num_detections", "masks", "outer_boxes")


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (library missing, no GPU, no model file); `auto` tries the next one."""


@runtime_checkable
class Backend(Protocol):
    """What the Predictor needs from an inference backend."""

    name: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt:fp16", "tensorflow:CPU"

    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        """Masks for given boxes (model-input pixels)."""
        ...

    def detect_and_segment(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The model's own detections with their masks."""
        ...


SegmentFeeds = tuple[np.ndarray, np.ndarray, np.ndarray]  # segment_boxes' (image, boxes, classes)


@runtime_checkable
class PairedSegmentBackend(Protocol):
    """A backend that runs two segment_boxes calls faster together than one after the other."""

    def segment_boxes_pair(
        self, first: SegmentFeeds, second: SegmentFeeds
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """segment_boxes(*first), segment_boxes(*second), with the same outputs as two separate calls."""
        ...


def segment_boxes_pair(
    backend: Backend, first: SegmentFeeds, second: SegmentFeeds
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Two independent segment_boxes calls: together when the backend can (`PairedSegmentBackend`), else in
    a row."""
    if isinstance(backend, PairedSegmentBackend):
        return backend.segment_boxes_pair(first, second)
    return backend.segment_boxes(*first), backend.segment_boxes(*second)


def check_outputs(
    outputs: Mapping[str, np.ndarray], required: tuple[str, ...], signature: str, backend: str
) -> dict[str, np.ndarray]:
    """Return outputs as NumPy arrays; a clear error if the model lacks a required output."""
    missing = [k for k in required if k not in outputs]
    if missing:
        raise RuntimeError(
            f"{backend}: '{signature}' returned outputs {sorted(outputs)}, missing {missing}; "
            "the model bundle does not match this runtime (re-export it)"
        )
    return {k: np.asarray(v) for k, v in outputs.items()}
