"""FrameProcessor end to end with a fake predictor (ros_bridge.frame_processor)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shapemask_ros.config.node_config import NodeConfig, validate_node_config
from shapemask_ros.ros_bridge.frame_processor import FrameProcessor
from shapemask_ros.ros_bridge.image_codec import image_to_rgb
from support.ros import (
    FACTORY,
    FakePredictor,
    compressed_msg,
    detection,
    detection_array,
    ellipse_mask,
    header,
    image_msg,
    jpeg_bytes,
    random_rgb,
    rgb_image_msg,
)

H, W = 48, 64


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001  # every reading advances 1 ms, so latencies are positive and known
        return self.now


def make(cfg: NodeConfig | None = None, predictor=None) -> tuple[FrameProcessor, FakePredictor]:
    pred = predictor or FakePredictor(class_names=["person", "cup"])
    return FrameProcessor(pred, cfg or NodeConfig(), FACTORY, clock=FakeClock()), pred


def frame(sec: int, nsec: int = 0, boxes=((8, 6, 30, 26), (35, 20, 60, 44)), seed: int = 0):
    hdr = header(sec, nsec, "camera_optical")
    img = rgb_image_msg(random_rgb(H, W, seed), hdr)
    dets = [detection(b, "cup", 0.9, det_id=f"d{i}", hdr=hdr) for i, b in enumerate(boxes)]
    return img, detection_array(dets, hdr)


def mask_of(im) -> np.ndarray:
    return np.asarray(im.data, np.uint8).reshape(im.height, im.step)[:, : im.width]


def test_end_to_end_given_detections():
    proc, pred = make()
    hdr = header(5, 123, "camera_optical")
    img = rgb_image_msg(random_rgb(H, W), hdr)
    boxes = [(8, 6, 30, 26), (1, 1, 1, 9), (35, 20, 60, 44)]  # the middle one has zero width: bad_box
    dets = detection_array([detection(b, "cup", 0.9, f"d{i}", hdr) for i, b in enumerate(boxes)], hdr)
    proc.add_image(img, "sensor_msgs/msg/Image")
    proc.add_detections(dets)
    res = proc.step()
    assert res is not None
    # the predictor saw the decoded image and the valid boxes with mapped classes ("cup" -> 1)
    call = pred.calls[-1]
    np.testing.assert_array_equal(call["image"], random_rgb(H, W))
    np.testing.assert_allclose(call["boxes"], [boxes[0], boxes[2]])
    assert list(call["classes"]) == [1, 1]
    m = res.masks
    assert m.header is hdr and (m.image_height, m.image_width, m.backend) == (H, W, "fake")
    assert [i.detection_id for i in m.instances] == ["d0", "d2"]
    assert [i.detection_index for i in m.instances] == [0, 2]
    expected_labels = np.zeros((H, W), np.uint16)
    for k, (inst, box) in enumerate(zip(m.instances, [boxes[0], boxes[2]], strict=True)):
        region = np.array([inst.roi.x_offset, inst.roi.y_offset, inst.roi.width, inst.roi.height])
        assert inst.mask.header is hdr and inst.mask.encoding == "mono8" and not inst.roi.do_rectify
        want = ellipse_mask(np.asarray(box, np.float64), region)
        np.testing.assert_array_equal(mask_of(inst.mask), want * 255)
        assert inst.hypotheses[0].class_id == "cup" and inst.hypotheses[0].score == pytest.approx(0.9)
        assert inst.mask_score == pytest.approx(0.75)
        x, y, w, h = region
        expected_labels[y : y + h, x : x + w][want.astype(bool)] = k + 1
    lab = res.labels
    assert lab.header is hdr and lab.encoding == "mono16"
    np.testing.assert_array_equal(np.frombuffer(lab.data.tobytes(), "<u2").reshape(H, W), expected_labels)
    assert len(res.detections.detections) == 2 and res.overlay is None
    assert res.dropped == {"bad_box": 1}
    assert proc.stats.dropped["bad_box"] == 1 and proc.stats.processed == 1
    assert res.latency_s > 0 and list(proc.stats.latency_s) == [res.latency_s]
    assert proc.stats.backend == "fake"


def test_step_processes_only_newest_pair():
    proc, pred = make()
    for s in (1, 2, 3):
        img, dets = frame(s, seed=s)
        proc.add_image(img)
        proc.add_detections(dets)
    res = proc.step()
    assert res.masks.header.stamp.sec == 3 and len(pred.calls) == 1
    assert proc.stats.dropped["superseded"] == 2
    assert proc.step() is None


def test_detections_arriving_after_image_with_slop():
    proc, _ = make(NodeConfig(sync_slop_s=0.02))
    img, _ = frame(1, 0)
    _, dets = frame(1, 10_000_000)  # detector re-stamped 10 ms later
    proc.add_image(img)
    assert proc.step() is None  # nothing to pair yet
    proc.add_detections(dets)
    res = proc.step()
    assert res is not None and res.masks.header is img.header


def test_self_detection_mode_newest_image_and_filters():
    pred = FakePredictor(
        class_names=["person", "cup"],
        self_boxes=[[2, 2, 20, 20], [30, 5, 50, 25], [5, 30, 25, 45], [40, 30, 60, 46]],
        self_scores=[0.9, 0.2, 0.8, 0.7],
        self_classes=[1, 1, 0, 1],
    )
    cfg = NodeConfig(detections_topic="", score_threshold=0.3, class_filter=("cup",), max_objects=1)
    proc, _ = make(cfg, pred)
    for s in (1, 2, 3):
        proc.add_image(frame(s)[0])
    proc.add_detections(frame(3)[1])  # ignored in self-detection
    res = proc.step()
    assert proc.stats.dropped["superseded"] == 2 and res.masks.header.stamp.sec == 3
    assert pred.calls[-1]["boxes"] is None and pred.calls[-1]["score_threshold"] == 0.3
    # 0.2 removed by the predictor's threshold, "person" filtered, then the best of the two cups kept
    assert len(res.masks.instances) == 1 and res.dropped == {"filtered": 1, "over_max": 1}
    inst = res.masks.instances[0]
    assert (inst.detection_index, inst.detection_id, inst.hypotheses[0].class_id) == (-1, "", "cup")
    assert inst.hypotheses[0].score == pytest.approx(0.9)


def test_bad_messages_are_counted_and_processing_continues():
    proc, pred = make()
    hdr = header(1)
    bad = image_msg(np.zeros(10, np.uint8), H, W, "rgb8", 3 * W, hdr)
    proc.add_image(bad)
    proc.add_detections(detection_array([detection((1, 1, 9, 9), hdr=hdr)], hdr))
    assert proc.step() is None and proc.stats.dropped["bad_size"] == 1
    yuv = image_msg(np.zeros(2 * H * W, np.uint8), H, W, "yuv422", 2 * W, header(2))
    assert proc.process(yuv, None) is None and proc.stats.dropped["unsupported_encoding"] == 1
    no_header = rgb_image_msg(random_rgb(H, W))
    no_header.header = None
    proc.add_image(no_header)
    assert proc.stats.dropped["bad_header"] == 1
    pred.fail = True
    img, dets = frame(3)
    assert proc.process(img, dets) is None and proc.stats.dropped["predictor_error"] == 1
    pred.fail = False
    img, dets = frame(4)
    proc.add_image(img)
    proc.add_detections(dets)
    assert proc.step() is not None and proc.stats.processed == 1


def test_empty_detections_publish_empty_result_without_predicting():
    proc, pred = make()
    img, _ = frame(1)
    res = proc.process(img, detection_array([], img.header))
    assert res is not None and len(res.masks.instances) == 0 and pred.calls == []
    assert not np.frombuffer(res.labels.data.tobytes(), "<u2").any()


def test_stale_and_clock_reset():
    proc, _ = make()
    img, dets = frame(100)
    proc.add_image(img)
    proc.add_detections(dets)
    assert proc.step() is not None
    old_img, old_dets = frame(99, 900_000_000)  # 0.1 s before the processed frame: out of order
    proc.add_image(old_img)
    proc.add_detections(old_dets)
    assert proc.stats.dropped["stale"] == 2 and proc.step() is None
    loop_img, loop_dets = frame(10)  # 90 s back: a bag loop / simulator restart
    proc.add_image(loop_img)
    proc.add_detections(loop_dets)
    assert proc.stats.dropped["time_reset"] == 1
    assert proc.step().masks.header.stamp.sec == 10


def test_overlay_only_when_wanted():
    proc, _ = make()
    img, dets = frame(1, boxes=((10, 10, 40, 40),))
    res = proc.process(img, dets, want_overlay=True)
    ov = image_to_rgb(res.overlay)
    orig = random_rgb(H, W)
    assert res.overlay.encoding == "rgb8" and res.overlay.header is img.header
    assert (ov[25, 25] != orig[25, 25]).any()  # mask centre is tinted
    np.testing.assert_array_equal(ov[45:, :], orig[45:, :])  # far from the object: untouched
    # publish_overlay decides whether the node creates the publisher: restart-only, for the processor too
    assert "read-only" in proc.update({"publish_overlay": False})["publish_overlay"]
    off, _ = make(NodeConfig(publish_overlay=False))
    assert off.process(*frame(2), want_overlay=True).overlay is None


def test_compressed_image_type_inferred():
    proc, _ = make()
    rgb = random_rgb(H, W)
    _, dets = frame(1)
    msg = compressed_msg(jpeg_bytes(rgb, ".png"), "png", dets.header)
    res = proc.process(msg, dets)
    assert res is not None and len(res.masks.instances) == 2


def test_update_applies_or_rejects_all_or_nothing():
    proc, _ = make()
    assert proc.update({"score_threshold": 0.95, "class_filter": ["cup"]}) == {}
    assert proc.cfg.score_threshold == 0.95 and proc.cfg.class_filter == ("cup",)
    img, dets = frame(1)
    res = proc.process(img, dets)
    assert len(res.masks.instances) == 0 and res.dropped == {"low_score": 2}  # 0.9 < 0.95 now applies
    rejected = proc.update({"score_threshold": 0.2, "max_objects": "ten"})
    assert set(rejected) == {"max_objects"} and proc.cfg.score_threshold == 0.95
    assert "unknown" in proc.update({"nonsense": 1})["nonsense"]
    assert "read-only" in proc.update({"image_topic": "/other"})["image_topic"]
    assert set(proc.update({"score_threshold": 1.5, "max_objects": 0})) == {"score_threshold", "max_objects"}
    assert "bool" in proc.update({"depth_rectified": 1})["depth_rectified"]
    # the predictor's own settings (PredictorProtocol): every predictor takes them
    pred = FakePredictor()
    proc2, _ = make(predictor=pred)
    assert proc2.update({"mask_threshold": 0.4}) == {} and pred.mask_threshold == 0.4
    assert proc2.update({"flip_average": True}) == {} and pred.flip_average is True
    assert "bool" in proc2.update({"flip_average": "yes"})["flip_average"] and pred.flip_average is True
    pred.flip_average = False
    proc3, _ = make(NodeConfig(flip_average=True), predictor=pred)
    assert pred.flip_average is True  # handed over at start
    assert proc3.update({"flip_average": False}) == {} and pred.flip_average is False
    assert proc2.update({"expected_rate_hz": 10, "detector_latency_s": 1.0}) == {}
    assert proc2._sync.cache_size == 12
    assert "exceed" in proc2.update({"expected_rate_hz": 1000.0})["expected_rate_hz"]


def test_validate_node_config_rejects_bad_values():
    cfg, bad = validate_node_config(NodeConfig(), {"image_qos_reliability": "sometimes", "backend": "cuda"})
    assert set(bad) == {"image_qos_reliability", "backend"} and cfg == NodeConfig()
    with pytest.raises(ValueError):
        FrameProcessor(FakePredictor(), NodeConfig(max_objects=0), FACTORY)


_ENC = st.sampled_from(["rgb8", "bgr8", "mono8", "mono16", "bgra8", "yuv422", "", "32FC1"])
_F = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-50, 100).map(float))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=_ENC,
    height=st.integers(-1, 6),
    width=st.integers(-1, 6),
    step=st.integers(-1, 30),
    n=st.integers(0, 150),
    boxes=st.lists(st.tuples(_F, _F, _F, _F), max_size=4),
    with_detections=st.booleans(),
)
def test_fuzz_processor_counts_instead_of_raising(encoding, height, width, step, n, boxes, with_detections):
    proc, _ = make()
    hdr = header(1)
    img = image_msg(np.arange(n, dtype=np.uint8), height, width, encoding, step, hdr)
    dets = detection_array([detection((0, 0, 1, 1), hdr=hdr) for _ in boxes], hdr)
    for d, (cx, cy, sx, sy) in zip(dets.detections, boxes, strict=True):
        d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y = cx, cy, sx, sy
    res = proc.process(img, dets if with_detections else None)
    drops = sum(v for k, v in proc.stats.dropped.items() if k not in ("clipped", "rotated"))
    if res is None:
        assert drops >= 1 and proc.stats.processed == 0
    else:
        assert proc.stats.processed == 1 and res.masks.image_height == height
        n_in = len(boxes) if with_detections else 0
        assert (
            len(res.masks.instances) + sum(v for k, v in res.dropped.items() if k not in ("clipped", "rotated")) == n_in
        )


def test_drops_are_logged_throttled_per_reason():
    class ListLogger:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def warning(self, text: str) -> None:
            self.lines.append(text)

        error = warning

    log = ListLogger()
    proc = FrameProcessor(FakePredictor(), NodeConfig(), FACTORY, clock=FakeClock(), logger=log)
    yuv = image_msg(np.zeros(2 * H * W, np.uint8), H, W, "yuv422", 2 * W, header(2))
    for _ in range(3):  # 3 drops within 5 s of the fake clock: one log line, three counts
        proc.process(yuv, None)
    assert proc.stats.dropped["unsupported_encoding"] == 3
    assert len(log.lines) == 1 and "unsupported_encoding" in log.lines[0] and "yuv422" in log.lines[0]


def test_processor_applies_exactly_the_live_parameters():
    """One home for live vs restart (the `live` field metadata): the processor agrees with the node."""
    from shapemask_ros.config.node_config import LIVE_PARAMS, RESTART_PARAMS

    pred = FakePredictor()
    pred.mask_threshold, pred.flip_average = 0.5, False
    proc, _ = make(predictor=pred)
    for name in sorted(RESTART_PARAMS):
        assert "read-only" in proc.update({name: getattr(proc.cfg, name)}).get(name, ""), name
    for name in sorted(LIVE_PARAMS):
        assert proc.update({name: getattr(proc.cfg, name)}) == {}, name
    assert {"self_detect", "publish_label_image", "publish_overlay", "publish_refined_detections"} <= RESTART_PARAMS


def test_predictor_time_is_recorded_apart_from_the_node_latency():
    """The Predictor's own call is timed per frame and reaches /diagnostics as predictor_p50_ms: what the node
    adds around the model is latency minus it (the node benchmark's "model share" reads it)."""
    import time

    from shapemask_ros.ros_bridge.node_health import diagnostic_summary

    class SlowPredictor(FakePredictor):
        def predict(self, *args, **kwargs):
            time.sleep(0.02)
            return super().predict(*args, **kwargs)

    proc = FrameProcessor(SlowPredictor(class_names=["person", "cup"]), NodeConfig(), FACTORY)  # real clock
    for sec in (1, 2, 3):
        img, dets = frame(sec)
        proc.add_image(img, "sensor_msgs/msg/Image")
        proc.add_detections(dets)
        assert proc.step() is not None
    times = list(proc.stats.predictor_s)
    assert len(times) == 3 and all(0.02 <= t < 1.0 for t in times)
    assert all(t <= lat for t, lat in zip(times, proc.stats.latency_s, strict=True))
    values = dict(diagnostic_summary("active", "fake", {}, proc.stats).values)
    assert 20.0 <= float(values["predictor_p50_ms"]) < 1000.0
    assert "predictor_mean_ms" in proc.stats.as_dict()
    # an empty detection array never calls the predictor: nothing recorded for it
    img, _ = frame(4)
    proc.add_image(img, "sensor_msgs/msg/Image")
    proc.add_detections(detection_array([], header(4, 0, "camera_optical")))
    assert proc.step() is not None and len(proc.stats.predictor_s) == 3
