"""Two frames in flight (the node's `frames_in_flight: 2`): when a second frame may start, and results that
leave in the order their frames were taken.

A second frame beside one in the network only pays when the camera outruns the model: two one-thread
inference runs side by side finish more frames per second than one two-thread run after another, but each
takes longer, so below capacity they would only add latency. `SecondFramePolicy` lets a second frame start
when images arrive faster than a frame that ran alone took (both as moving averages). `TakeOrder` makes the
processing threads publish in the order they took their frames, so subscribers never see a stamp go back.
ROS-free; the node wires them (shapemask_ros/node.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SecondFramePolicy:
    """Whether a frame may start while another is in the network (thread-safe)."""

    def __init__(self, smoothing: float = 0.2) -> None:
        """smoothing: weight of the newest sample in the moving averages (0 < smoothing <= 1)."""
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self._a = smoothing
        self._lock = threading.Lock()
        self._last_arrival: float | None = None
        self._interval_s: float | None = None  # between images
        self._alone_s: float | None = None  # a frame processed with no other in flight

    def _mix(self, old: float | None, new: float) -> float:
        return new if old is None else (1.0 - self._a) * old + self._a * new

    def image_arrived(self, t: float) -> None:
        """An image arrived at time `t` (seconds, steady clock)."""
        with self._lock:
            if self._last_arrival is not None and t > self._last_arrival:
                self._interval_s = self._mix(self._interval_s, t - self._last_arrival)
            self._last_arrival = t

    def processed_alone(self, seconds: float) -> None:
        """A frame took `seconds` from take to result with no other frame in flight."""
        with self._lock:
            self._alone_s = self._mix(self._alone_s, seconds)

    def second_frame_pays(self) -> bool:
        """True when images arrive faster than a lone frame is processed (False until both are measured)."""
        with self._lock:
            return self._interval_s is not None and self._alone_s is not None and self._interval_s < self._alone_s


class TakeOrder:
    """Tickets in the order frames are taken; `turn(ticket)` waits until every earlier ticket has had its turn."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._issued = 0
        self._next = 0  # the ticket whose turn it is
        self._open = True

    def ticket(self) -> int:
        """The next ticket (call where frames are taken, under the same lock, so tickets follow take order)."""
        with self._cond:
            t = self._issued
            self._issued += 1
            return t

    @contextmanager
    def turn(self, ticket: int, timeout_s: float = 30.0) -> Iterator[bool]:
        """Hold the turn of `ticket`: yields True once the earlier tickets are done, False when closed or timed
        out (the caller then skips publishing). The turn passes on when the block ends, also on an exception."""
        with self._cond:
            ok = self._cond.wait_for(lambda: not self._open or self._next >= ticket, timeout=timeout_s)
            ok = ok and self._open
            try:
                yield ok
            finally:
                self._next = max(self._next, ticket + 1)
                self._cond.notify_all()

    def close(self) -> None:
        """Release every waiter (processing stops); later turns yield False until `reset`."""
        with self._cond:
            self._open = False
            self._cond.notify_all()

    def reset(self) -> None:
        """Start over at ticket 0 (processing starts again)."""
        with self._cond:
            self._issued = self._next = 0
            self._open = True
