"""Detection2DArray parsing/validation and refined Detection2DArray building (ros_bridge.detections)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.ros_bridge.detections import detections_to_arrays, instances_to_detections
from support.ros import FACTORY, FakePredictor, detection, detection_array, header

IMG = (60, 80)  # camera image (height, width)


def test_center_size_to_xyxy_and_best_hypothesis():
    det = detection([10, 20, 30, 50], "cup", 0.6, det_id="a")
    hyp2 = FACTORY.make("vision_msgs/msg/ObjectHypothesis", class_id="mug", score=0.8)
    det.results.append(
        FACTORY.make("vision_msgs/msg/ObjectHypothesisWithPose", hypothesis=hyp2, pose=det.results[0].pose)
    )
    p = detections_to_arrays(detection_array([det, detection([0, 0, 5, 5], None, det_id="b")]), IMG, NodeConfig())
    np.testing.assert_allclose(p.boxes, [[10, 20, 30, 50], [0, 0, 5, 5]])
    assert p.class_ids == ["mug", ""]
    np.testing.assert_allclose(p.scores, [0.8, 1.0])
    assert p.ids == ["a", "b"] and list(p.source_index) == [0, 1] and not p.dropped


def test_resize_parameters_rescale_to_camera_pixels():
    # The detector saw a 40x30 image (half size); boxes must double.
    cfg = NodeConfig(detection_image_width=40, detection_image_height=30)
    p = detections_to_arrays(detection_array([detection([5, 5, 15, 10])]), IMG, cfg)
    np.testing.assert_allclose(p.boxes, [[10, 10, 30, 20]])
    # Only a width given: uniform scale (aspect kept) rather than a silently distorted box.
    p2 = detections_to_arrays(detection_array([detection([5, 5, 15, 10])]), IMG, NodeConfig(detection_image_width=160))
    np.testing.assert_allclose(p2.boxes, [[2.5, 2.5, 7.5, 5]])


def test_validation_drops_and_clips_with_reasons():
    dets = [
        detection([10, 10, 20, 20], "cup", 0.9),  # kept
        detection([float("nan"), 0, 5, 5]),  # bad_box
        detection([10, 10, 10, 30]),  # zero width: bad_box
        detection([30, 30, 20, 40]),  # negative width: bad_box
        detection([-10, 50, 10, 70], "cup", 0.9),  # partly outside: clipped, kept
        detection([100, 100, 120, 120]),  # entirely outside: bad_box
        detection([0, 0, 10, 10], "cup", 0.1),  # low_score
        detection([0, 0, 10, 10], "person", 0.9),  # filtered
        detection([0, 0, math.inf, 10]),  # bad_box
    ]
    cfg = NodeConfig(score_threshold=0.3, class_filter=("cup",))
    p = detections_to_arrays(detection_array(dets), IMG, cfg)
    assert list(p.source_index) == [0, 4]
    np.testing.assert_allclose(p.boxes, [[10, 10, 20, 20], [0, 50, 10, 60]])
    assert p.dropped == {"bad_box": 5, "clipped": 1, "low_score": 1, "filtered": 1}


def test_over_max_keeps_highest_scores_in_message_order():
    scores = [0.5, 0.9, 0.4, 0.95, 0.7]
    dets = [detection([i, i, i + 10, i + 10], "cup", s) for i, s in enumerate(scores)]
    p = detections_to_arrays(detection_array(dets), IMG, NodeConfig(max_objects=3))
    assert list(p.source_index) == [1, 3, 4] and p.dropped["over_max"] == 2


def test_rotated_box_uses_axis_aligned_hull():
    det = detection([20, 20, 40, 30], theta=math.pi / 2)  # 20 x 10 rotated 90 deg -> 10 x 20
    p = detections_to_arrays(detection_array([det]), IMG, NodeConfig())
    np.testing.assert_allclose(p.boxes, [[25, 15, 35, 35]], atol=1e-5)
    assert p.dropped["rotated"] == 1


def test_not_a_detection_array_is_counted():
    p = detections_to_arrays(header(), IMG, NodeConfig())
    assert len(p) == 0 and p.dropped["bad_message"] == 1


_floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-100, 200).map(float))


@settings(max_examples=100, deadline=None)
@given(
    boxes=st.lists(st.tuples(_floats, _floats, _floats, _floats, _floats), max_size=6),
    scores=st.lists(_floats, min_size=6, max_size=6),
    max_objects=st.integers(1, 4),
)
def test_fuzz_detections_never_raise_and_account_for_every_input(boxes, scores, max_objects):
    dets = []
    for (cx, cy, sx, sy, th), s in zip(boxes, scores, strict=False):
        d = detection([0, 0, 1, 1], "cup", s)
        d.bbox.center.position.x, d.bbox.center.position.y = cx, cy
        d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta = sx, sy, th
        dets.append(d)
    p = detections_to_arrays(detection_array(dets), IMG, NodeConfig(max_objects=max_objects, score_threshold=0.0))
    kept = len(p)
    removed = sum(v for k, v in p.dropped.items() if k not in ("clipped", "rotated"))
    assert kept + removed == len(dets) and kept <= max_objects
    assert np.isfinite(p.boxes).all()
    assert (p.boxes[:, 2] > p.boxes[:, 0]).all() and (p.boxes[:, 3] > p.boxes[:, 1]).all()
    assert (p.boxes[:, 0::2] >= 0).all() and (p.boxes[:, 0::2] <= IMG[1]).all() and (p.boxes[:, 1::2] <= IMG[0]).all()


def test_box_that_collapses_in_float32_is_dropped_not_passed_on():
    d = detection([0, 0, 1, 1], "cup", 0.9)
    d.bbox.center.position.x, d.bbox.center.position.y = 10.0, 10.0
    d.bbox.size_x, d.bbox.size_y, d.bbox.center.theta = 0.0, 1.0, 3.3e-306  # width ~1e-306 in float64
    p = detections_to_arrays(detection_array([d]), IMG, NodeConfig(score_threshold=0.0))
    assert len(p) == 0 and p.dropped["bad_box"] == 1


@pytest.mark.parametrize("given_dets", [True, False])
def test_instances_to_detections_keeps_source_labels(given_dets):
    pred = FakePredictor(
        class_names=["person", "cup"], self_boxes=[[5, 5, 25, 35]], self_scores=[0.8], self_classes=[1]
    )
    hdr = header(3, 4, "cam")
    rgb = np.zeros((*IMG, 3), np.uint8)
    if given_dets:
        p = detections_to_arrays(
            detection_array([detection([1, 1, 2, 2], "bad", 0.0), detection([10, 10, 30, 20], "77", 0.66, "id7")]),
            IMG,
            NodeConfig(score_threshold=0.1),
        )
        inst = pred.predict(rgb, p.boxes, np.array([-1]))
    else:
        p, inst = None, pred.predict(rgb, None, None)
    msg = instances_to_detections(FACTORY, inst, hdr, pred.class_names, p)
    assert msg.header is hdr and len(msg.detections) == 1
    d = msg.detections[0]
    hyp = d.results[0].hypothesis
    if given_dets:
        assert (hyp.class_id, d.id) == ("77", "id7") and hyp.score == pytest.approx(0.66)
        assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == (
            20,
            15,
            20,
            10,
        )
    else:
        assert (hyp.class_id, d.id) == ("cup", "") and hyp.score == pytest.approx(0.8)
        assert (d.bbox.size_x, d.bbox.size_y) == (20, 30)
    # serialises, i.e. every field was given with a valid type
    raw = FACTORY.typestore.serialize_cdr(msg, "vision_msgs/msg/Detection2DArray")
    back = FACTORY.typestore.deserialize_cdr(raw, "vision_msgs/msg/Detection2DArray")
    assert back.detections[0].id == d.id
