"""Two frames in flight: when a second frame may start, and results leave in take order."""

from __future__ import annotations

import threading
import time

import pytest

from shapemask_ros.ros_bridge.in_flight import SecondFramePolicy, TakeOrder


def _feed(policy: SecondFramePolicy, rate_hz: float, alone_s: float, n: int = 20) -> None:
    for i in range(n):
        policy.image_arrived(100.0 + i / rate_hz)
        policy.processed_alone(alone_s)


def test_a_second_frame_pays_only_when_the_camera_outruns_a_lone_frame():
    below, near, above = SecondFramePolicy(), SecondFramePolicy(), SecondFramePolicy()
    assert not below.second_frame_pays()  # nothing measured yet: one frame at a time
    _feed(below, 10.0, 0.050)  # 100 ms between images, 50 ms a frame
    _feed(near, 16.0, 0.050)  # 62.5 ms: below capacity still
    _feed(above, 30.0, 0.050)  # 33 ms between images
    assert not below.second_frame_pays()
    assert not near.second_frame_pays()
    assert above.second_frame_pays()


def test_the_policy_follows_a_camera_that_slows_down():
    policy = SecondFramePolicy()
    _feed(policy, 30.0, 0.050)
    assert policy.second_frame_pays()
    for i in range(30):  # now 10 Hz; lone frames are not re-measured while two run, the arrivals decide
        policy.image_arrived(200.0 + i / 10.0)
    assert not policy.second_frame_pays()


def test_a_repeated_or_backward_arrival_time_is_not_an_interval():
    policy = SecondFramePolicy()
    policy.processed_alone(0.05)
    policy.image_arrived(5.0)
    policy.image_arrived(5.0)
    policy.image_arrived(4.0)
    assert not policy.second_frame_pays()


def test_smoothing_is_checked():
    with pytest.raises(ValueError, match="smoothing"):
        SecondFramePolicy(smoothing=0.0)


def test_results_leave_in_take_order_even_when_the_later_frame_finishes_first():
    order = TakeOrder()
    first, second = order.ticket(), order.ticket()
    published: list[int] = []
    second_waiting = threading.Event()

    def publish_second() -> None:
        second_waiting.set()
        with order.turn(second) as ok:
            assert ok
            published.append(second)

    t = threading.Thread(target=publish_second)
    t.start()
    second_waiting.wait(5.0)
    time.sleep(0.1)  # the later frame is done and waits for its turn
    assert published == []
    with order.turn(first) as ok:
        assert ok
        published.append(first)
    t.join(5.0)
    assert published == [first, second]


def test_the_turn_passes_on_after_an_exception_and_close_releases_waiters():
    order = TakeOrder()
    a, b, c = order.ticket(), order.ticket(), order.ticket()
    with pytest.raises(RuntimeError):
        with order.turn(a):
            raise RuntimeError("publishing failed")
    with order.turn(b, timeout_s=1.0) as ok:
        assert ok  # a's failure did not block b
    order.close()
    with order.turn(c + 5, timeout_s=5.0) as ok:  # would wait for c: closing answers at once
        assert not ok
    order.reset()
    assert order.ticket() == 0
    with order.turn(0, timeout_s=1.0) as ok:
        assert ok
