"""Predictor logic with an injected fake backend: chunking, source indices, classes, self-detection."""

from __future__ import annotations

import numpy as np
import pytest

from shapemask_ros.ops.box_ops import flip_boxes_lr, scale_boxes
from shapemask_ros.ops.sampling import box_prior_in_outer, crop_and_sample
from shapemask_ros.runtime import backends as backends_mod
from shapemask_ros.runtime.backends import BackendUnavailable, create_backend
from shapemask_ros.runtime.bundle import Bundle
from shapemask_ros.runtime.predictor import Predictor

S = 64  # model input size
M = 64  # mask size returned by the fake


def make_bundle(**over) -> Bundle:
    fields = dict(
        path="/nonexistent/bundle",
        image_size=S,
        class_names=("cup", "box", "can"),
        num_classes=3,
        mask_class_agnostic=True,
        max_boxes=100,
        mask_size=M,
        score_threshold=0.05,
    )
    fields.update(over)
    return Bundle(**fields)


class FakeBackend:
    """Behaves like an exported model whose mask is exactly the (model-input) tight box."""

    name = "fake:test"

    def __init__(self, detections: dict | None = None) -> None:
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.detections = detections

    def segment_boxes(self, image, boxes, classes):
        assert image.shape == (1, S, S, 3) and image.dtype == np.float32
        assert boxes.dtype == np.float32 and classes.dtype == np.int32
        assert boxes.shape[:2] == classes.shape and boxes.shape[0] == 1
        self.calls.append((boxes[0].copy(), classes[0].copy()))
        outer = scale_boxes(boxes[0], 1.25)
        masks = np.stack([box_prior_in_outer(b, o, M) for b, o in zip(boxes[0], outer, strict=True)])
        return {"masks": masks[None], "outer_boxes": outer[None].astype(np.float32)}

    def detect_and_segment(self, image):
        assert image.shape == (1, S, S, 3)
        return self.detections


def random_boxes(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wh = rng.uniform(12, 30, (n, 2))
    xy = rng.uniform(0, 1, (n, 2)) * (np.array([width, height]) - wh)
    return np.concatenate([xy, xy + wh], axis=1)


def foreground_box(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([region[0] + xs.min(), region[1] + ys.min(), region[0] + xs.max() + 1, region[1] + ys.max() + 1])


def test_250_boxes_run_in_three_chunks_and_come_back_in_order():
    height, width = 60, 80  # scale 0.8 into the 64 x 64 input
    image = np.zeros((height, width, 3), np.uint8)
    boxes = random_boxes(250, height, width)
    fake = FakeBackend()
    pred = Predictor(fake, make_bundle())
    inst = pred.predict(image, boxes)

    assert [len(b) for b, _ in fake.calls] == [100, 100, 50]
    fed = np.concatenate([b for b, _ in fake.calls])
    np.testing.assert_allclose(fed, boxes * 0.8, rtol=1e-5)  # boxes scaled into model-input pixels
    assert len(inst) == 250 and inst.source_index.tolist() == list(range(250))
    np.testing.assert_allclose(inst.boxes, boxes, rtol=1e-5)
    assert inst.backend == "fake:test" and inst.dropped == {} and inst.image_size == (60, 80)
    np.testing.assert_array_equal(inst.scores, 1.0)
    np.testing.assert_array_equal(inst.class_ids, -1)
    # each mask lands on its own box in original pixels (outer boxes mapped back by 1/scale)
    tol = 1.0 + 0.5 * (30 * 1.25 / M)  # 1 px + half a mask bin
    for i in (0, 99, 100, 199, 200, 249):
        np.testing.assert_allclose(foreground_box(inst.masks[i], inst.regions[i]), boxes[i], atol=tol)
    np.testing.assert_allclose(inst.mask_scores, 1.0)


def test_dropped_boxes_keep_source_indices_and_counts():
    image = np.zeros((50, 50, 3), np.uint8)
    boxes = np.array(
        [
            [5, 5, 20, 20],
            [np.nan, 0, 1, 1],
            [30, 30, 30, 40],
            [60, 60, 70, 70],
            [-4, 10, 12, 30],
            [25, 5, 45, 25],
        ]
    )
    inst = Predictor(FakeBackend(), make_bundle()).predict(image, boxes, classes=[0, 1, 2, 0, 1, 2])
    assert inst.source_index.tolist() == [0, 4, 5]
    assert inst.class_ids.tolist() == [0, 1, 2]
    assert inst.dropped == {"non_finite": 1, "empty_box": 1, "outside_image": 1, "clipped": 1}
    np.testing.assert_allclose(inst.boxes[1], [0, 10, 12, 30])
    assert all(0 <= r[0] and r[0] + r[2] <= 50 and r[1] + r[3] <= 50 for r in inst.regions)


def test_all_boxes_invalid_or_none_given_returns_empty_without_calling_the_model():
    fake = FakeBackend()
    pred = Predictor(fake, make_bundle())
    inst = pred.predict(np.zeros((20, 20, 3), np.uint8), [[30, 30, 40, 40]])
    assert len(inst) == 0 and inst.dropped == {"outside_image": 1} and fake.calls == []
    inst = pred.predict(np.zeros((20, 20, 3), np.uint8), np.zeros((0, 4)))
    assert len(inst) == 0 and fake.calls == [] and inst.backend == "fake:test"


def test_class_agnostic_model_is_fed_class_zero_but_reports_given_classes():
    fake = FakeBackend()
    inst = Predictor(fake, make_bundle(mask_class_agnostic=True)).predict(
        np.zeros((40, 40, 3), np.uint8), [[1, 1, 20, 20], [5, 5, 30, 30], [2, 2, 9, 9]], classes=[2, -1, 17]
    )
    assert fake.calls[0][1].tolist() == [0, 0, 0]
    assert inst.class_ids.tolist() == [2, -1, 17] and "unknown_class" not in inst.dropped


def test_class_specific_model_gets_the_class_and_unknowns_become_minus_one():
    fake = FakeBackend()
    inst = Predictor(fake, make_bundle(mask_class_agnostic=False)).predict(
        np.zeros((40, 40, 3), np.uint8),
        [[1, 1, 20, 20], [5, 5, 30, 30], [2, 2, 9, 9], [3, 3, 12, 12]],
        classes=[2, -1, 7, 1],
    )
    assert fake.calls[0][1].tolist() == [2, 0, 0, 1]
    assert inst.class_ids.tolist() == [2, -1, -1, 1]
    assert inst.dropped == {"unknown_class": 1}
    assert len(inst) == 4  # unknown classes are not a reason to lose the object


def detections(num: int) -> dict:
    """5 padded detections in model-input pixels (scale 0.5 for a 128 x 96 image)."""
    boxes = np.array(
        [[4, 4, 20, 20], [10, 10, 30, 40], [30, 2, 60, 30], [0, 50, 10, 60], [1, 1, 2, 2]], np.float32
    )  # box 3 lies in the letterbox padding (rows >= 48)
    outer = scale_boxes(boxes, 1.25).astype(np.float32)
    masks = np.stack([box_prior_in_outer(b, o, M) for b, o in zip(boxes, outer, strict=True)])
    return {
        "boxes": boxes[None],
        "scores": np.array([[0.9, 0.2, 0.6, 0.95, 0.99]], np.float32),
        "classes": np.array([[1, 2, 0, 1, 1]], np.int32),
        "num_detections": np.array([num], np.int32),
        "masks": masks[None],
        "outer_boxes": outer[None],
    }


def test_self_detection_keeps_num_detections_applies_threshold_and_maps_back():
    image = np.zeros((96, 128, 3), np.uint8)  # scale 64 / 128 = 0.5
    pred = Predictor(FakeBackend(detections(4)), make_bundle())
    inst = pred.predict(image, score_threshold=0.5)
    assert inst.source_index.tolist() == [0, 2]  # 1 below threshold; 3 only in the padding; 4 is padding
    assert inst.dropped == {"outside_image": 1}
    np.testing.assert_allclose(inst.boxes, [[8, 8, 40, 40], [60, 4, 120, 60]])
    np.testing.assert_allclose(inst.scores, [0.9, 0.6])
    assert inst.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(foreground_box(inst.masks[0], inst.regions[0]), [8, 8, 40, 40], atol=1.5)
    # the bundle's threshold (0.05) applies when none is given
    assert pred.predict(image).source_index.tolist() == [0, 1, 2]
    # num_detections larger than the padded outputs is clamped, not an IndexError
    assert len(Predictor(FakeBackend(detections(99)), make_bundle()).predict(image, score_threshold=0.0)) == 4


def test_full_masks_option():
    inst = Predictor(FakeBackend(), make_bundle()).predict(np.zeros((30, 40, 3), np.uint8), [[5, 5, 20, 25]])
    full = Predictor(FakeBackend(), make_bundle()).predict(
        np.zeros((30, 40, 3), np.uint8), [[5, 5, 20, 25]], full_masks=True
    )
    assert full.masks[0].shape == (30, 40) and full.regions.tolist() == [[0, 0, 40, 30]]
    np.testing.assert_array_equal(full.masks[0], inst.full_masks()[0])
    assert full.label_image().max() == 1


def test_bad_image_and_bad_backend_output_are_clear_errors():
    pred = Predictor(FakeBackend(), make_bundle())
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(np.zeros((10, 10, 3), np.float32), [[1, 1, 5, 5]])

    class Broken(FakeBackend):
        def segment_boxes(self, image, boxes, classes):
            out = super().segment_boxes(image, boxes, classes)
            out["masks"] = out["masks"][:, :-1]
            return out

    with pytest.raises(RuntimeError, match="fake:test: segment_boxes returned masks"):
        Predictor(Broken(), make_bundle()).predict(np.zeros((10, 10, 3), np.uint8), [[1, 1, 5, 5], [2, 2, 6, 6]])


def test_predictor_exposes_model_facts():
    pred = Predictor(FakeBackend(), make_bundle(), skipped_backends={"tensorrt": "not installed"})
    assert pred.backend == "fake:test" and pred.class_names == ("cup", "box", "can")
    assert pred.image_size == S and pred.max_boxes == 100 and pred.skipped_backends == {"tensorrt": "not installed"}


def test_auto_falls_back_in_order_and_records_why(monkeypatch, caplog):
    attempts = []

    def fake_create(name, bundle, *args):
        attempts.append(name)
        if name == "tensorrt":
            raise BackendUnavailable("tensorrt is not importable")
        if name == "onnxruntime":
            raise RuntimeError("onnxruntime could not load x.onnx")
        return FakeBackend()

    monkeypatch.setattr(backends_mod, "_create_one", fake_create)
    backend, skipped = create_backend(make_bundle(), "auto")
    assert attempts == ["tensorrt", "onnxruntime", "tensorflow"] and backend.name == "fake:test"
    assert skipped["tensorrt"] == "tensorrt is not importable"
    assert "onnxruntime could not load" in skipped["onnxruntime"]
    assert any("tensorrt skipped" in r.getMessage() for r in caplog.records)
    # a named backend never falls back silently
    with pytest.raises(RuntimeError, match="'tensorrt' was requested but cannot run here"):
        create_backend(make_bundle(), "tensorrt")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend(make_bundle(), "cuda")


def test_tensorrt_backend_reports_why_it_is_unavailable_here():
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    from shapemask_ros.runtime.backends.tensorrt_backend import TensorRTBackend, unavailable_reason

    assert "tensorrt" in unavailable_reason()
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        TensorRTBackend(make_bundle())


class ContentBackend(FakeBackend):
    """A model whose mask is the input's red channel / 255 sampled over each outer box (clipped to the
    input like the real model's): a perfect content follower, so a mirrored pass mapped back correctly
    must give the same probabilities as the plain pass."""

    def segment_boxes(self, image, boxes, classes):
        self.calls.append((boxes[0].copy(), classes[0].copy()))
        outer = np.clip(scale_boxes(boxes[0], 1.25), 0, S)
        masks = np.stack([crop_and_sample(image[0, :, :, 0] / 255.0, o, M) for o in outer])
        return {"masks": masks[None].astype(np.float32), "outer_boxes": outer[None].astype(np.float32)}


class LeftHalfBackend(FakeBackend):
    """An asymmetric model: foreground = the left half of each outer box, whatever the image shows."""

    def segment_boxes(self, image, boxes, classes):
        self.calls.append((boxes[0].copy(), classes[0].copy()))
        outer = np.clip(scale_boxes(boxes[0], 1.25), 0, S)
        masks = np.zeros((len(outer), M, M), np.float32)
        masks[:, :, : M // 2] = 1.0
        return {"masks": masks[None], "outer_boxes": outer[None].astype(np.float32)}


def test_flip_boxes_lr_mirrors_x_and_is_its_own_inverse():
    boxes = np.array([[0.0, 1.0, 20.0, 30.0], [55.5, 2.0, 80.0, 9.0]])
    np.testing.assert_allclose(flip_boxes_lr(boxes, 80), [[60, 1, 80, 30], [0, 2, 24.5, 9]])
    np.testing.assert_allclose(flip_boxes_lr(flip_boxes_lr(boxes, 80), 80), boxes)


def test_flip_average_maps_the_mirrored_pass_back_onto_the_same_pixels():
    # portrait and landscape (outer boxes clipped at different input edges in the two passes)
    for height, width in ((80, 50), (50, 80)):
        rng = np.random.default_rng(height)
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = (rng.uniform(0, 1, (height // 5 + 1, width // 5 + 1)) > 0.5).repeat(5, 0).repeat(5, 1)[
            :height, :width
        ] * 255
        boxes = np.array([[0, 0, 20, 30], [width - 25, 10, width, 40], [10, 12, 34, 45]], np.float64)
        plain = Predictor(ContentBackend(), make_bundle()).predict(image, boxes)
        fake = ContentBackend()
        both = Predictor(fake, make_bundle(), flip_average=True).predict(image, boxes)
        assert len(fake.calls) == 2
        mirrored_fed = fake.calls[1][0] / (64 / max(height, width))
        np.testing.assert_allclose(mirrored_fed[:, [0, 2]], width - boxes[:, [2, 0]], atol=1e-4)
        np.testing.assert_array_equal(both.regions, plain.regions)
        for a, b in zip(plain.masks, both.masks, strict=True):
            # equal up to a few boundary pixels (bilinear sampling of the hard edges from two sides)
            assert np.mean(a != b) < 0.03
            assert a.sum() > 0


def test_flip_average_takes_the_mean_of_both_passes_probabilities():
    image = np.zeros((64, 64, 3), np.uint8)
    box = [[16, 16, 48, 48]]
    plain = Predictor(LeftHalfBackend(), make_bundle(), mask_threshold=0.6).predict(image, box)
    x, _, w, _ = plain.regions[0]
    cols = np.nonzero(plain.masks[0].any(axis=0))[0]
    assert x + cols.max() < 33  # left half only
    pred = Predictor(LeftHalfBackend(), make_bundle(), mask_threshold=0.6, flip_average=True)
    # left half from one pass, right half from the other: 0.5 everywhere, below 0.6, above 0.4
    assert pred.predict(image, box).masks[0].sum() == 0
    half = pred.predict(image, box, mask_threshold=0.4).masks[0]
    assert half.all() and half.shape == (40, 40)
    np.testing.assert_allclose(pred.predict(image, box, mask_threshold=0.4).mask_scores, [0.5 * (1.0 + 1.0)])


def test_flip_average_in_self_detection_segments_the_kept_detections_mirrored():
    image = np.zeros((96, 128, 3), np.uint8)  # scale 0.5
    fake = FakeBackend(detections(4))
    inst = Predictor(fake, make_bundle(), flip_average=True).predict(image, score_threshold=0.5)
    assert inst.source_index.tolist() == [0, 2]
    ((fed, cls),) = fake.calls  # one segment_boxes call: the two kept detections, mirrored, class 0 (agnostic)
    np.testing.assert_allclose(fed / 0.5, [[128 - 40, 8, 128 - 8, 40], [128 - 120, 4, 128 - 60, 60]], atol=1e-4)
    assert cls.tolist() == [0, 0]
    # the fake's masks are the tight boxes in both passes: the average keeps them
    np.testing.assert_allclose(foreground_box(inst.masks[0], inst.regions[0]), [8, 8, 40, 40], atol=1.5)
    # class-specific mask head: the mirrored pass is fed the detector's classes of the kept detections
    fake = FakeBackend(detections(4))
    Predictor(fake, make_bundle(mask_class_agnostic=False), flip_average=True).predict(image, score_threshold=0.5)
    assert fake.calls[0][1].tolist() == [1, 0]
    # nothing kept: no mirrored call
    fake = FakeBackend(detections(4))
    assert len(Predictor(fake, make_bundle(), flip_average=True).predict(image, score_threshold=0.999)) == 0
    assert fake.calls == []
