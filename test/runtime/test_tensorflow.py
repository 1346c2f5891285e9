"""TensorFlow backend on a tiny hand-made SavedModel with the bundle's two signatures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from shapemask_ros.runtime.bundle import BUNDLE_FORMAT
from shapemask_ros.runtime.predictor import Predictor

S, M = 32, 16


def write_tf_bundle(root: str, signatures: tuple[str, ...] = ("segment_boxes", "detect_and_segment")) -> str:
    import tensorflow as tf

    class Stub(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([1, S, S, 3], tf.float32, name="image"),
                tf.TensorSpec([1, None, 4], tf.float32, name="boxes"),
                tf.TensorSpec([1, None], tf.int32, name="classes"),
            ]
        )
        def segment_boxes(self, image, boxes, classes):
            n = tf.shape(boxes)[1]
            # mask value = the class id fed + 0.5 (so the test can see which class reached the model)
            value = tf.cast(classes, tf.float32)[:, :, None, None] + 0.5 + 0.0 * tf.reduce_mean(image)
            return {"masks": tf.broadcast_to(value, [1, n, M, M]), "outer_boxes": boxes * 1.0}

        @tf.function(input_signature=[tf.TensorSpec([1, S, S, 3], tf.float32, name="image")])
        def detect_and_segment(self, image):
            level = tf.reduce_mean(image) / 255.0  # 1 for a white image: proves the pixels arrive
            return {
                "boxes": tf.constant([[[2.0, 2.0, 10.0, 10.0]]]),
                "scores": tf.reshape(level, [1, 1]),
                "classes": tf.constant([[1]], tf.int32),
                "num_detections": tf.constant([1], tf.int32),
                "masks": tf.ones([1, 1, M, M]),
                "outer_boxes": tf.constant([[[2.0, 2.0, 10.0, 10.0]]]),
            }

    stub = Stub()
    sigs = {name: getattr(stub, name) for name in signatures}
    tf.saved_model.save(stub, os.path.join(root, "saved_model"), signatures=sigs)
    meta = {
        "format": BUNDLE_FORMAT,
        "image_size": S,
        "class_names": ["a", "b"],
        "num_classes": 2,
        "mask_class_agnostic": False,
        "max_boxes": 100,
        "mask_size": M,
        "score_threshold": 0.05,
        "onnx": None,
        "saved_model": "saved_model",
    }
    with open(os.path.join(root, "model.json"), "w") as f:
        json.dump(meta, f)
    return root


@pytest.mark.tf
def test_tensorflow_backend_runs_both_signatures(tmp_path):
    root = write_tf_bundle(str(tmp_path / "b"))
    pred = Predictor.load(root, backend="auto")  # no TensorRT, no ONNX: TensorFlow
    assert pred.backend.startswith("tensorflow:")
    assert "tensorrt" in pred.skipped_backends and "onnxruntime" in pred.skipped_backends

    image = np.zeros((16, 32, 3), np.uint8)  # scale 1.0
    inst = pred.predict(image, [[1, 1, 9, 9], [4, 4, 12, 12]], classes=[1, 0], mask_threshold=1.0)
    # class 1 -> probability 1.5 >= 1.0 (foreground); class 0 -> 0.5 (background): the classes arrived
    assert inst.masks[0].all() and not inst.masks[1].any()
    np.testing.assert_allclose(inst.mask_scores, [1.5, 0.0])

    white = np.full((16, 32, 3), 255, np.uint8)  # letterboxed: half the input is padding -> mean 127.5
    det = pred.predict(white, score_threshold=0.4)
    np.testing.assert_allclose(det.scores, [0.5], atol=1e-3)
    assert det.class_ids.tolist() == [1]
    assert len(pred.predict(np.zeros((16, 32, 3), np.uint8), score_threshold=0.4)) == 0


@pytest.mark.tf
def test_missing_signature_is_a_clear_error(tmp_path):
    root = write_tf_bundle(str(tmp_path / "b"), signatures=("segment_boxes",))
    with pytest.raises(RuntimeError, match="lacks signature 'detect_and_segment'"):
        Predictor.load(root, backend="tensorflow")
