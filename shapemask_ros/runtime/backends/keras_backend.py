"""In-memory backend over a Keras ShapeMask model (evaluation during training, experiments, benchmarks).

Uses the same serving tf.functions as export, so what is evaluated is what gets exported.
"""

from __future__ import annotations

import numpy as np

from shapemask_ros.runtime.bundle import Bundle


class KerasBackend:
    """Runs `model.segment_boxes` / `model.detect_and_segment` inside tf.function with fixed shapes."""

    def __init__(self, model) -> None:
        from shapemask_ros.export.bundle import serving_functions

        self.model = model
        self.name = "keras:tensorflow"
        self._fns = serving_functions(model)

    def segment_boxes(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
        out = self._fns["segment_boxes"](image=image, boxes=boxes, classes=classes)
        return {k: v.numpy() for k, v in out.items()}

    def detect_and_segment(self, image: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self._fns["detect_and_segment"](image=image).items()}


def predictor_for_model(model, class_names: list[str] | tuple[str, ...], max_boxes: int = 100):
    """A Predictor (same pre/post-processing as deployment) over an in-memory model."""
    from shapemask_ros.runtime.predictor import Predictor

    bundle = Bundle.from_model_config(model.cfg, class_names, max_boxes=max_boxes, path="<memory>")
    return Predictor(KerasBackend(model), bundle)
