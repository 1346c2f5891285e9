"""Soak test: 10,000 camera frames at 30 Hz through the node on the rclpy stand-in's multi-threaded executor.

Simulated time (test/support/rclpy_standin.py): the model is a stub that sleeps 0.25 s of simulated time per frame
(slower than the camera), detections follow their image by 5 ms, and 1 message in 50 is malformed (bad
encoding, truncated data, NaN boxes, a stamp jumping back). Checked: no callback raises, every image is
accounted for (published or counted under a drop reason), every kind of malformed message shows up under
its reason, the published frames are never older than 1.2x the model latency (the node keeps only the
newest frame: no queue builds up), and traced memory grows < 5 % after warm-up. The figures are printed
(pytest -s) and in docs/ros.md.
"""

from __future__ import annotations

import collections
import gc
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest

from support import rclpy_standin as standin
from support.ros import FakePredictor, detection, detection_array, get_message, header, random_rgb, rgb_image_msg

FRAMES, RATE_HZ, MODEL_S, DETECTOR_S = 10_000, 30.0, 0.25, 0.005
# memory is compared at two chunk boundaries (same in-flight state): after warm-up -- once the bounded
# windows (500 latency samples, log ring) are full, ~600 processed frames -- and after the last full chunk
WARMUP, MEM_END = 4_500, FRAMES - FRAMES % 30
H, W = 48, 64
KINDS = ("bad_encoding", "truncated", "nan_box", "stamp_back")
# the drop reason each kind must show up under
REASON = {"bad_encoding": "unsupported_encoding", "truncated": "bad_size", "nan_box": "bad_box", "stamp_back": "stale"}


class SlowPredictor(FakePredictor):
    """FakePredictor that takes MODEL_S of simulated time per call."""

    def __init__(self, clock: standin.SimClock) -> None:
        super().__init__(class_names=["person", "cup"])
        self.mask_threshold = 0.5
        self._clock = clock

    def predict(self, image, boxes, classes, score_threshold=None):
        self._clock.sleep(MODEL_S)
        out = super().predict(image, boxes, classes, score_threshold)
        self.calls.clear()  # FakePredictor keeps every call: not in a soak test
        return out


def _messages(i: int, t: float, images: list[np.ndarray], kind: str | None) -> tuple[Any, Any]:
    stamp_t = t - 0.5 if kind == "stamp_back" else t
    sec = int(stamp_t)
    hdr = header(sec, int(round((stamp_t - sec) * 1e9)), "cam")
    img = rgb_image_msg(images[i % len(images)], hdr)
    box = (8.0, 6.0, 30.0, 26.0) if kind != "nan_box" else (float("nan"), 6.0, 30.0, 26.0)
    dets = detection_array([detection(box, "cup", 0.9, det_id=str(i), hdr=hdr)], hdr)
    if kind == "bad_encoding":
        img.encoding = "yuv422_10bit"
    elif kind == "truncated":
        img.data = img.data[: len(img.data) // 2]
    return img, dets


@pytest.mark.slow
def test_soak_10000_frames_slow_model_malformed_inputs(monkeypatch, tmp_path):
    node_mod = standin.install(monkeypatch, get_message, distro="jazzy")
    clock = standin._DEFAULT_CONTEXT.clock
    predictor = SlowPredictor(clock)
    monkeypatch.setattr("shapemask_ros.runtime.predictor.Predictor.load", staticmethod(lambda path, **kw: predictor))
    wall0 = time.perf_counter()
    tracemalloc.start()
    node = node_mod.ShapeMaskNode(parameter_overrides=[standin.Parameter("model_path", value=str(tmp_path))],
                                  steady_clock=clock.now)  # fmt: skip
    ex = standin.SimExecutor()
    ex.add_node(node)
    try:
        assert node.trigger_configure() == standin.TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == standin.TransitionCallbackReturn.SUCCESS
        masks_pub = next(p for p in node.publishers if p.topic_name == "/shapemask/masks")
        ages = np.full(FRAMES, np.nan)  # preallocated: the measurement must not grow memory itself
        published_at = np.full(FRAMES, np.nan)
        frame_of = np.zeros(FRAMES, np.int64)
        n_pub = [0]
        publish = masks_pub.publish

        def timed_publish(msg: Any) -> None:
            stamp = msg.header.stamp
            stamp_s = stamp.sec + stamp.nanosec * 1e-9
            ages[n_pub[0]] = clock.now() - stamp_s
            frame_of[n_pub[0]] = round((stamp_s - t0) * RATE_HZ)
            published_at[n_pub[0]] = clock.now()
            n_pub[0] += 1
            publish(msg)

        masks_pub.publish = timed_publish
        # what the stand-in keeps for inspection must not count as the node's memory growth
        filler = [("info", f"{k:04d}" + "x" * 150) for k in range(100)]  # distinct, like real log lines
        node.get_logger().records = collections.deque(filler, maxlen=100)
        for pub in node.publishers:
            pub.sent, pub.sent_times = collections.deque(maxlen=1), collections.deque(maxlen=1)
        rng = np.random.default_rng(0)
        # 1 in 50 malformed, at random frames (every 50th would phase-lock with the frames the model picks)
        bad = rng.choice(FRAMES, FRAMES // 50, replace=False)
        kinds = {int(i): KINDS[n % len(KINDS)] for n, i in enumerate(bad)}
        images = [random_rgb(H, W, s) for s in range(8)]
        injected = collections.Counter()
        t0 = clock.now() + 0.1
        mem: dict[int, int] = {}
        for i in range(FRAMES):
            t = t0 + i / RATE_HZ + rng.uniform(-0.002, 0.002)  # camera jitter (and no phase lock with the model)
            kind = kinds.get(i)
            img, dets = _messages(i, t, images, kind)
            ex.deliver("/camera/image_raw", img, at=t)
            ex.deliver("/detections", dets, at=t + DETECTOR_S + rng.uniform(0.0, 0.005))
            injected[kind] += 1
            if i % 30 == 29:  # one simulated second at a time, so messages are created as they are sent
                ex.spin_until(t0 + (i + 1) / RATE_HZ - 0.003)
                if i + 1 in (WARMUP, MEM_END):
                    gc.collect()
                    mem[i + 1] = tracemalloc.get_traced_memory()[0]
        mem_warm, mem_end = mem[WARMUP], mem[MEM_END]
        t_last = clock.now()
        ex.spin_for(1.0)
    finally:
        tracemalloc.stop()
        ex.shutdown()
        node._detach_logging()
    wall = time.perf_counter() - wall0

    dropped = node._processor.stats.dropped
    published = n_pub[0]
    # frames published while the camera runs (after it stops, the last frame has nothing newer to replace it)
    running = published_at[:published] <= t_last
    ages_ms = ages[:published][running] * 1e3
    # a malformed frame just before leaves the newest usable frame one period older (a gap in the stream)
    after_gap = np.isin(frame_of[:published][running] + 1, bad) | np.isin(frame_of[:published][running] + 2, bad)
    clean_ms = ages_ms[~after_gap]
    growth = (mem_end - mem_warm) / mem_warm
    drops = {k: v for k, v in sorted(dropped.items()) if v}
    print(f"\nsoak: {FRAMES} frames at {RATE_HZ:.0f} Hz, model {MODEL_S * 1e3:.0f} ms: {published} published, "
          f"frame age median {np.median(ages_ms):.0f} ms, max {clean_ms.max():.0f} ms "
          f"({clean_ms.max() / (MODEL_S * 1e3):.2f}x model latency), {ages_ms.max():.0f} ms right after a "
          f"malformed frame; drops {drops}; node errors "
          f"{ {k: v for k, v in node._stats.report().items() if k.startswith(('error.', 'drop.'))} }; "
          f"traced memory {mem_warm / 1e6:.2f} -> {mem_end / 1e6:.2f} MB ({growth * 100:+.2f} %); "
          f"wall {wall:.1f} s")  # fmt: skip

    assert node._stats.total("image") == FRAMES and node._stats.total("detections") == FRAMES
    assert not [k for k in node._stats.report() if k.startswith("error.")], "no exception in the node"
    assert node._stats.total("drop.inbox_overflow") == 0
    # every message is accounted for exactly once: published, or counted under one drop reason. Images are
    # decoded (and boxes checked) only for the frame that gets processed, so a malformed frame that a newer
    # one replaced first counts as image_unused / superseded; one that is processed counts under its reason.
    decode = sum(dropped[r] for r in ("unsupported_encoding", "bad_size", "decode_error", "empty_image"))
    cached = len(node._processor._sync)
    assert published + dropped["image_unused"] + injected["stamp_back"] + decode + cached == FRAMES, drops
    assert published + dropped["superseded"] + injected["stamp_back"] + decode + dropped["no_match"] >= FRAMES - 1
    for kind, reason in REASON.items():
        assert 1 <= dropped[reason] <= injected[kind] * (2 if kind == "stamp_back" else 1), (kind, drops)
    assert dropped["stale"] == 2 * injected["stamp_back"], "stamps are checked on arrival: image + detections"
    # no queue build-up: the newest frame is processed, so output age stays near one model latency
    assert published >= 0.9 * FRAMES / RATE_HZ / (MODEL_S + 1 / RATE_HZ)
    assert clean_ms.max() <= 1.2 * MODEL_S * 1e3 and len(clean_ms) > 0.8 * len(ages_ms)
    assert ages_ms.max() <= MODEL_S * 1e3 + 3 * 1e3 / RATE_HZ + 10, "never more than a gap behind"
    assert growth < 0.05
