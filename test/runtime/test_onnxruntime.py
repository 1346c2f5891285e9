"""ONNX Runtime backend end to end on a tiny hand-made bundle that honours the export contract.

The graphs are stand-ins for the real export (which the integrator tests separately): segment_boxes
returns outer = 1.25 x box and a fixed "central 1/1.25" mask, so a correct pipeline pastes each mask
onto its input box; detect_and_segment returns fixed, padded detections.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from shapemask_ros.runtime.backends import BackendOptions
from shapemask_ros.runtime.predictor import Predictor
from support.onnx_bundle import M, S, write_onnx_bundle


def foreground_box(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([region[0] + xs.min(), region[1] + ys.min(), region[0] + xs.max() + 1, region[1] + ys.max() + 1])


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    root = write_onnx_bundle(str(tmp_path_factory.mktemp("bundle")), max_boxes=40)
    return Predictor.load(root, backend="auto", options=BackendOptions(intra_op_num_threads=1))


def test_auto_picks_onnxruntime_here_and_says_why_not_tensorrt(predictor):
    assert predictor.backend.startswith("onnxruntime:")
    assert "tensorrt" in predictor.skipped_backends  # no TensorRT on this machine
    assert "tensorflow" not in predictor.skipped_backends  # never tried: ONNX Runtime worked


def test_given_boxes_are_chunked_through_a_dynamic_graph_and_pasted_in_place(predictor):
    rng = np.random.default_rng(3)
    height, width = 90, 120  # scale 64 / 120
    wh = rng.uniform(20, 40, (95, 2))
    xy = rng.uniform(0, 1, (95, 2)) * (np.array([width, height]) - wh)
    boxes = np.concatenate([xy, xy + wh], axis=1)
    inst = predictor.predict(np.zeros((height, width, 3), np.uint8), boxes)  # 95 boxes, max_boxes 40: 3 calls
    assert len(inst) == 95 and inst.source_index.tolist() == list(range(95))
    assert inst.backend == predictor.backend
    tol = 1.0 + 0.5 * (40 * 1.25 / M)  # 1 px + half a (coarse, 32-bin) mask bin
    for i in range(0, 95, 7):
        np.testing.assert_allclose(foreground_box(inst.masks[i], inst.regions[i]), boxes[i], atol=tol)


def test_self_detection_through_onnxruntime(predictor):
    image = np.zeros((32, 128, 3), np.uint8)  # scale 0.5; detection 1 sits in rows < 16: kept
    inst = predictor.predict(image, score_threshold=0.5)
    assert inst.source_index.tolist() == [0]
    np.testing.assert_allclose(inst.boxes, [[8, 8, 40, 32]])  # clipped to the 32-row image
    assert inst.class_ids.tolist() == [2]
    assert predictor.predict(image).source_index.tolist() == [0, 1]


def test_explicit_providers_and_image_size_mismatch(tmp_path):
    root = write_onnx_bundle(str(tmp_path / "b"))
    pred = Predictor.load(root, backend="onnxruntime", options=BackendOptions(providers=["CPUExecutionProvider"]))
    assert pred.backend == "onnxruntime:CPUExecutionProvider" and pred.skipped_backends == {}
    bad = write_onnx_bundle(str(tmp_path / "c"), image_size=S + 8)  # graph says 72, model.json says 64
    with pytest.raises(RuntimeError, match="input 'image' has shape"):
        Predictor.load(bad, backend="onnxruntime")


class _OneAtATime:
    """The ONNX Runtime backend without segment_boxes_pair: what every other backend looks like."""

    def __init__(self, backend):
        self.inner, self.name = backend, backend.name

    def segment_boxes(self, *a):
        return self.inner.segment_boxes(*a)

    def detect_and_segment(self, *a):
        return self.inner.detect_and_segment(*a)


@pytest.fixture(scope="module")
def shipped():
    from shapemask_ros.runtime.bundle import default_model_dir

    return Predictor.load(
        default_model_dir(), backend="onnxruntime", options=BackendOptions(signatures=["segment_boxes"])
    )


def test_segment_boxes_pair_equals_two_calls_in_order(shipped):
    """The paired run (two one-thread sessions side by side on a CPU) gives each call's own outputs, in order."""
    from shapemask_ros.runtime.backends.base import PairedSegmentBackend, segment_boxes_pair

    backend = shipped.runtime_backend
    assert isinstance(backend, PairedSegmentBackend) and not isinstance(_OneAtATime(backend), PairedSegmentBackend)
    rng = np.random.default_rng(0)
    s = shipped.image_size
    feeds = []
    for n in (3, 5):  # different images and box counts: swapped or mixed outputs cannot pass
        image = rng.uniform(0, 255, (1, s, s, 3)).astype(np.float32)
        xy = rng.uniform(0, s / 2, (1, n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, s / 2, (1, n, 2))], axis=2).astype(np.float32)
        feeds.append((image, boxes, np.zeros((1, n), np.int32)))
    got = segment_boxes_pair(backend, feeds[0], feeds[1])
    if (os.cpu_count() or 1) >= 2:
        assert backend._pair is not None  # the concurrent path ran (one-thread session + worker)
    for out, f in zip(got, feeds, strict=True):
        want = backend.segment_boxes(*f)
        assert out["masks"].shape == want["masks"].shape
        # another thread count may sum in another order: equal to float32 rounding
        np.testing.assert_allclose(out["masks"], want["masks"], atol=1e-4)
        np.testing.assert_allclose(out["outer_boxes"], want["outer_boxes"], atol=1e-3)


def test_flip_average_with_the_paired_run_equals_one_call_at_a_time(shipped):
    image = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    boxes = np.array([[100, 80, 260, 300], [300, 50, 420, 200], [10, 300, 200, 470]], np.float64)
    paired = Predictor(shipped.runtime_backend, shipped.bundle, flip_average=True).predict(image, boxes)
    serial = Predictor(_OneAtATime(shipped.runtime_backend), shipped.bundle, flip_average=True).predict(image, boxes)
    plain = Predictor(shipped.runtime_backend, shipped.bundle).predict(image, boxes)
    np.testing.assert_array_equal(paired.regions, serial.regions)
    np.testing.assert_allclose(paired.mask_scores, serial.mask_scores, atol=1e-4)
    for a, b, c in zip(paired.masks, serial.masks, plain.masks, strict=True):
        assert np.mean(a != b) < 1e-3  # a pixel at exactly the threshold may flip
        assert np.mean(a != c) > 1e-3  # and the mirrored pass did change the masks
