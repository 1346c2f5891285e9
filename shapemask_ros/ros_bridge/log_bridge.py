"""Python `logging` -> a ROS logger, so the core modules' log lines reach /rosout (no rclpy here).

The ROS-free core (geometry/, ros_bridge/, runtime/) logs with `logging.getLogger(__name__)`, which a
ROS 2 node does not see: rclpy's loggers write to rcutils and /rosout, Python's to stderr at best. The
node attaches `RosLogHandler` to the `shapemask_ros` logger for its lifetime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shapemask_ros.ros_bridge.node_health import KeyedThrottle


class RosLogHandler(logging.Handler):
    """Forwards records to `ros_logger` (an rclpy logger: .debug/.info/.warning/.error/.fatal).

    Each source line logs at most once per `throttle_s` (the count of suppressed lines is added to the
    next one), because the core logs per object/frame and /rosout is a network topic."""

    def __init__(self, ros_logger: Any, throttle_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(level=logging.DEBUG)
        self._ros = ros_logger
        self._throttle = KeyedThrottle(throttle_s, clock)
        self._suppressed: dict[str, int] = {}
        self._lock2 = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        """Forward one record; never raises (logging must not take the node down)."""
        try:
            key = f"{record.name}:{record.lineno}"
            if not self._throttle.ready(key):
                with self._lock2:
                    self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            with self._lock2:
                skipped = self._suppressed.pop(key, 0)
            text = f"[{record.name}] {record.getMessage()}"
            if skipped:
                text += f" (+{skipped} similar suppressed)"
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            # one call site per severity: rclpy refuses to change the severity of a logging call site
            level = record.levelno
            if level >= logging.CRITICAL:
                self._ros.fatal(text)
            elif level >= logging.ERROR:
                self._ros.error(text)
            elif level >= logging.WARNING:
                self._ros.warning(text)
            elif level >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:  # pragma: no cover - logging's own error path
            self.handleError(record)


def forward_logging(ros_logger: Any, package: str = "shapemask_ros", level: int = logging.INFO) -> Callable[[], None]:
    """Attach a RosLogHandler to `package`'s logger (records at `level` and above); returns the detach
    function. The package logger's level is lowered to `level` if it was stricter or unset, so INFO lines
    (backend selection, engine builds) are not lost to the root logger's WARNING default."""
    logger = logging.getLogger(package)
    handler = RosLogHandler(ros_logger)
    handler.setLevel(level)
    old_level = logger.level
    if old_level == logging.NOTSET or old_level > level:
        logger.setLevel(level)
    logger.addHandler(handler)

    def detach() -> None:
        logger.removeHandler(handler)
        if not any(isinstance(h, RosLogHandler) for h in logger.handlers):  # another node may still listen
            logger.setLevel(old_level)

    return detach
