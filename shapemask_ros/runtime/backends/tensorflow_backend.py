"""TensorFlow backend: the bundle's SavedModel, called through its `segment_boxes` and
`detect_and_segment` signatures. TensorFlow is imported only when this backend is created."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from shapemask_ros.runtime.backends.base import (
    DETECT_OUTPUTS,
    SEGMENT_BOXES_OUTPUTS,
    BackendUnavailable,
    check_outputs,
)
from shapemask_ros.runtime.bundle import SIGNATURES, Bundle

log = logging.getLogger(__name__)


class TensorFlowBackend:
    """Runs the SavedModel signatures (eagerly, on TensorFlow's default device: a GPU when visible)."""

    def __init__(self, bundle: Bundle) -> None:
        if not bundle.has_saved_model:
            raise BackendUnavailable(f"model bundle {bundle.path} has no SavedModel")
        try:
            import tensorflow as tf
        except ImportError as e:
            raise BackendUnavailable(f"tensorflow is not installed ({e})") from e
        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(bundle.saved_model)  # keep a reference: it owns the variables
        except Exception as e:  # TF raises OSError / various internal errors for a bad SavedModel
            raise RuntimeError(f"tensorflow could not load SavedModel {bundle.saved_model}: {e}") from e
        self._fns: dict[str, Any] = {}
        for sig in SIGNATURES:
            if sig not in self._loaded.signatures:
                raise RuntimeError(
                    f"SavedModel {bundle.saved_model} lacks signature '{sig}' "
                    f"(has {sorted(self._loaded.signatures)}); re-export the bundle"
                )
            self._fns[sig] = self._loaded.signatures[sig]
        device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
        self.name = f"tensorflow:{device}"
        log.info("tensorflow SavedModel %s loaded (%s)", bundle.saved_model, device)

    def _run(self, signature: str, required: tuple[str, ...], **inputs: np.ndarray) -> dict[str, np.ndarray]:
        tf = self._tf
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        outputs = self._fns[signature](**tensors)
        return check_outputs({k: v.numpy() for k, v in outputs.items()}, required, signature, self.name)

    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        """Call the `segment_boxes` signature on model-input tensors."""
        return self._run(
            "segment_boxes",
            SEGMENT_BOXES_OUTPUTS,
            image=np.asarray(image, np.float32),
            boxes=np.asarray(boxes, np.float32),
            classes=np.asarray(classes, np.int32),
        )

    def detect_and_segment(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Call the `detect_and_segment` signature on a model-input image."""
        return self._run("detect_and_segment", DETECT_OUTPUTS, image=np.asarray(image, np.float32))
