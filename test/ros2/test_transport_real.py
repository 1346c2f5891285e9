"""Frames over real DDS: nothing lost below capacity, the QoS follows the publishers, silence explained."""

from __future__ import annotations

import numpy as np

from shapemask_ros.bench.node_driver import default_boxes, node_counters, stamp, stamp_ns, synthetic_rgb


def test_every_frame_comes_back_at_10hz(launch, lane_frames, driver):
    # the default parameters (image QoS 'auto') with a reliable camera: 640x480 rgb8 at 10 Hz, 4 boxes
    node = launch({"backend": "onnxruntime"}, autostart=True)
    run = lane_frames(node, n=150, rate_hz=10.0)
    missing = [i for i in range(150) if stamp_ns(stamp(i, 10.0)) not in run.by_stamp]
    counters = node_counters(driver, node.name) if run.received < 149 else {}
    assert run.received >= 149, f"{run.received}/150 back, missing {missing}, node counters {counters}"
    p50 = float(np.percentile(run.latencies, 50))
    assert p50 < 0.5, f"stamp -> mask p50 {p50 * 1e3:.0f} ms"
    assert "reliable" in node.log_text()  # 'auto' followed the reliable publisher


def test_best_effort_publisher_is_heard_and_silence_is_explained(launch, lane_frames, driver):
    node = launch({"backend": "onnxruntime", "no_input_warn_s": 1.0}, autostart=True)
    run = lane_frames(node, n=10, rate_hz=5.0, reliable=False)
    assert run.received >= 1, node.log_text()[-3000:]  # auto -> best_effort: a best-effort camera is heard
    # a reliable-only subscriber never hears a best-effort publisher: the watchdog names the QoS mismatch
    strict = launch({"backend": "onnxruntime", "image_qos_reliability": "reliable", "no_input_warn_s": 1.0},
                    autostart=True)  # fmt: skip
    from sensor_msgs.msg import Image

    from shapemask_ros.bench.node_driver import qos

    pub = driver.node.create_publisher(Image, "/camera/image_raw", qos(reliable=False))
    try:
        assert driver.wait_for(lambda: "incompatible QoS" in strict.log_text(), timeout=20.0), strict.log_text()
    finally:
        driver.node.destroy_publisher(pub)
    assert "Likely a QoS mismatch" not in strict.log_text()


def _masks_of(msg) -> list[np.ndarray]:
    out = []
    for inst in msg.instances:
        m = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(inst.mask.height, inst.mask.step)
        out.append(m[:, : inst.mask.width] > 0)
    return out


def test_above_capacity_a_second_frame_runs_beside_the_first_in_order_and_unchanged(launch, lane_frames, driver):
    # 30 Hz with 20 boxes outruns the model on this CPU: with frames_in_flight 2 a frame that arrives while
    # another is in the network runs beside it on one-thread sessions
    from shapemask_ros.config.node_config import NodeConfig
    from shapemask_ros.runtime.bundle import resolve_model_path
    from shapemask_ros.runtime.predictor import Predictor

    h, w, n, boxes = 480, 640, 90, 20
    node = launch({"backend": "onnxruntime", "frames_in_flight": 2}, autostart=True)
    run = lane_frames(node, n=n, rate_hz=30.0, boxes=boxes)
    counters = node_counters(driver, node.name)
    assert "one-thread sessions" in node.log_text()
    assert counters.get("processed_beside_another_total", 0) > 0, counters
    assert run.received >= 10, counters
    # published in stamp order, each frame once: a frame that finished after a newer one is not sent
    assert run.order == sorted(set(run.order)), run.order
    # what ran beside another frame is what the predictor makes of that frame (bit-exact masks)
    index = {stamp_ns(stamp(i, 30.0)): i for i in range(n)}
    predictor = Predictor.load(resolve_model_path(NodeConfig().model_path), backend="onnxruntime")
    for key in run.order:
        i = index[key]
        want = predictor.predict(synthetic_rgb(h, w, i % 8), np.asarray(default_boxes(h, w, boxes), np.float32))
        got = _masks_of(run.by_stamp[key][1])
        assert len(got) == len(want.masks) == boxes
        for k in range(boxes):
            np.testing.assert_array_equal(got[k], np.asarray(want.masks[k]) > 0)


def test_one_frame_in_flight_never_runs_two(launch, lane_frames, driver):
    node = launch({"backend": "onnxruntime", "frames_in_flight": 1}, autostart=True)
    run = lane_frames(node, n=60, rate_hz=30.0, boxes=20)
    counters = node_counters(driver, node.name)
    assert run.received >= 10 and counters.get("processed_total", 0) >= 10, counters
    assert counters.get("processed_beside_another_total", 0) == 0, counters
    assert "one frame at a time" not in node.log_text() and "one-thread sessions" not in node.log_text()
