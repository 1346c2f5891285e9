"""Test-only `diagnostic_updater` for the real-ROS lane (the ROS package is not on PyPI).

Written for this project from the behaviour of ros/diagnostics' Python `diagnostic_updater` (ros2 branch,
4.x), covering the API subset shapemask_ros uses, with the same observable behaviour:
- `Updater(node, period=1.0)` publishes `diagnostic_msgs/DiagnosticArray` on `/diagnostics` (depth 1) from a
  timer on the node's default clock (so it follows ROS time, and stops without `/clock` under sim time);
- it declares `diagnostic_updater.period` (default: the `period` argument, overridable at launch) and reads
  it once, in the constructor: setting it later changes the parameter but not the timer;
- it declares `diagnostic_updater.use_fqn` (False): status names are "<node name>: <task name>", or the
  fully qualified node name when True;
- `add(name, fn)` / `add(task)` publishes an OK "Node starting up" status for the task at once;
- every update runs each task on a fresh `DiagnosticStatusWrapper` (level ERROR, "No message was set",
  the hardware id) and publishes all of them in one array, stamped with the node clock.
The lane's tests check the node against this behaviour; a ROS install uses the real package.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["DiagnosticStatusWrapper", "DiagnosticTask", "FunctionDiagnosticTask", "Updater"]


class DiagnosticStatusWrapper(DiagnosticStatus):
    """A DiagnosticStatus with the helpers tasks fill it through."""

    def summary(self, *args: Any) -> None:
        """summary(status) copies level and message; summary(level, message) sets them."""
        if len(args) == 1:
            self.level, self.message = args[0].level, args[0].message
        elif len(args) == 2:
            self.level, self.message = args[0], str(args[1])
        else:
            raise TypeError("summary(status) or summary(level, message)")

    def clearSummary(self) -> None:  # noqa: N802 (upstream name)
        self.summary(DiagnosticStatus.OK, "")

    def mergeSummary(self, *args: Any) -> None:  # noqa: N802 (upstream name)
        """Keep the worse level; join messages of the same kind (both OK or both not) with '; '."""
        level, message = (args[0].level, args[0].message) if len(args) == 1 else (args[0], str(args[1]))
        if (level > DiagnosticStatus.OK) == (self.level > DiagnosticStatus.OK):
            self.message = f"{self.message}; {message}" if self.message else message
        elif level > self.level:
            self.message = message
        if level > self.level:
            self.level = level

    def add(self, key: str, value: str) -> None:
        """Append a key/value pair (the value must already be a string, as with the real package)."""
        self.values.append(KeyValue(key=key, value=value))


class DiagnosticTask:
    """A named task that fills a status."""

    def __init__(self, name: str) -> None:
        self.name = name

    def getName(self) -> str:  # noqa: N802 (upstream name)
        return self.name

    def run(self, stat: DiagnosticStatusWrapper) -> DiagnosticStatusWrapper:
        return stat


class FunctionDiagnosticTask(DiagnosticTask):
    """A task made of a function `fn(stat) -> stat`."""

    def __init__(self, name: str, fn: Callable[[DiagnosticStatusWrapper], DiagnosticStatusWrapper]) -> None:
        super().__init__(name)
        self.fn = fn

    def run(self, stat: DiagnosticStatusWrapper) -> DiagnosticStatusWrapper:
        return self.fn(stat)


class Updater:
    """Runs its tasks every `diagnostic_updater.period` seconds (node clock) and publishes /diagnostics."""

    def __init__(self, node: Any, period: float = 1.0) -> None:
        self.node = node
        self.tasks: list[tuple[str, Callable[[DiagnosticStatusWrapper], DiagnosticStatusWrapper]]] = []
        self.lock = threading.Lock()
        self.hwid = ""
        self.verbose = False
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 1)
        self.period_parameter = "diagnostic_updater.period"
        self._period = node.declare_parameter(self.period_parameter, period).value
        self.timer = node.create_timer(self._period, self.update)
        fqn = "diagnostic_updater.use_fqn"
        use_fqn = node.get_parameter(fqn).value if node.has_parameter(fqn) else node.declare_parameter(fqn, False).value
        self.node_name = f"{node.get_namespace().rstrip('/')}/{node.get_name()}" if use_fqn else node.get_name()

    @property
    def period(self) -> float:
        return self._period

    @period.setter
    def period(self, period: float) -> None:
        self._period = period
        self.node.destroy_timer(self.timer)
        self.timer = self.node.create_timer(period, self.update)

    def add(self, *args: Any) -> None:
        """add(task) or add(name, fn)."""
        if len(args) == 1:
            name, fn = args[0].getName(), args[0].run
        elif len(args) == 2:
            name, fn = args
        else:
            raise TypeError("add(task) or add(name, fn)")
        with self.lock:
            self.tasks.append((name, fn))
        stat = DiagnosticStatusWrapper(name=name)
        stat.summary(DiagnosticStatus.OK, "Node starting up")
        self.publish(stat)

    def removeByName(self, name: str) -> bool:  # noqa: N802 (upstream name)
        with self.lock:
            for i, (task_name, _) in enumerate(self.tasks):
                if task_name == name:
                    del self.tasks[i]
                    return True
        return False

    def setHardwareID(self, hwid: str) -> None:  # noqa: N802 (upstream name)
        self.hwid = hwid

    def update(self) -> None:
        """Run every task and publish the results."""
        statuses = []
        with self.lock:
            for name, fn in self.tasks:
                stat = DiagnosticStatusWrapper(
                    level=DiagnosticStatus.ERROR, name=name, message="No message was set", hardware_id=self.hwid
                )
                statuses.append(fn(stat))
        self.publish(statuses)

    def force_update(self) -> None:
        self.update()

    def broadcast(self, level: bytes, message: str) -> None:
        statuses = []
        for name, _ in self.tasks:
            stat = DiagnosticStatusWrapper(name=name)
            stat.summary(level, message)
            statuses.append(stat)
        self.publish(statuses)

    def publish(self, msg: DiagnosticStatus | list[DiagnosticStatus]) -> None:
        """Publish one status or a list, names prefixed with the node's name."""
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        for stat in msg if isinstance(msg, list) else [msg]:
            array.status.append(
                DiagnosticStatus(
                    level=stat.level,
                    name=f"{self.node_name}: {stat.name}",
                    message=stat.message,
                    hardware_id=stat.hardware_id,
                    values=list(stat.values),
                )
            )
        self.publisher.publish(array)
