"""Health of the node without rclpy: its own rates and latency, drop counters, the /diagnostics
summary, the "publishers exist but nothing arrives" text and a per-key log throttle.

`shapemask_ros.node` feeds these into `diagnostic_updater` and the rclpy logger.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def policy_name(policy: Any) -> str:
    """Lower-case name of an rclpy QoS policy value (enum member or plain value): 'reliable', 'keep_last'."""
    return str(getattr(policy, "name", policy)).lower()


def qos_text(qos: Any) -> str:
    """Short QoS description (reliability, durability, history/depth) of an rclpy QoSProfile-like object."""
    return (
        f"reliability={policy_name(qos.reliability)} durability={policy_name(qos.durability)} "
        f"history={policy_name(qos.history)} depth={qos.depth}"
    )


_SILENCE_CAUSES = {
    "incompatible_qos": "rmw reported an incompatible QoS with a publisher",
    "never_arrived": "publishers are matched but nothing ever arrived: a type mismatch, or a transport that "
    "cannot carry the messages",
}


def silent_input_message(
    topic: str, our_type: str, our_qos: Any, publishers: list[Any], silent_s: float, kind: str = ""
) -> str:
    """Warning for 'publishers exist but nothing arrives': the cause `kind` found (see
    `transport.silent_input_kind`), both QoS profiles and type mismatches."""
    cause = _SILENCE_CAUSES.get(
        kind, "Likely a QoS mismatch (a best_effort publisher never reaches a reliable subscriber) or a type mismatch"
    )
    lines = [
        f"{len(publishers)} publisher(s) on {topic} but no message for {silent_s:.1f} s: {cause}. "
        f"Subscriber ({our_type}): {qos_text(our_qos)}"
    ]
    for info in publishers:
        ptype = str(info.topic_type)
        hint = ""
        if ptype.replace("/msg/", "/") != our_type.replace("/msg/", "/"):
            hint = f"  <-- TYPE MISMATCH (we expect {our_type})"
        elif (
            policy_name(info.qos_profile.reliability) == "best_effort"
            and policy_name(our_qos.reliability) == "reliable"
        ):
            hint = "  <-- best_effort publisher vs reliable subscriber: set *_qos_reliability to auto or best_effort"
        lines.append(
            f"  publisher {info.node_namespace.rstrip('/')}/{info.node_name} ({ptype}): "
            f"{qos_text(info.qos_profile)}{hint}"
        )
    return "\n".join(lines)


class NodeStats:
    """Rates and latency the node measures itself, for /diagnostics (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: int = 500) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._totals: collections.Counter[str] = collections.Counter()
        self._since_report: collections.Counter[str] = collections.Counter()
        self._latency: collections.deque[float] = collections.deque(maxlen=window)
        self._last_report = clock()

    def count(self, key: str, n: int = 1) -> None:
        """Count an event (image, detections, processed, error.<where>, ...)."""
        with self._lock:
            self._totals[key] += n
            self._since_report[key] += n

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency.append(float(seconds))

    def total(self, key: str) -> int:
        with self._lock:
            return self._totals[key]

    def report(self) -> dict[str, float]:
        """`<key>_rate_hz` since the previous report, totals, and latency p50/p95 in ms; resets the rates."""
        with self._lock:
            now = self._clock()
            dt = max(now - self._last_report, 1e-6)
            out: dict[str, float] = {f"{k}_rate_hz": v / dt for k, v in self._since_report.items()}
            out.update({f"{k}_total": float(v) for k, v in self._totals.items()})
            if self._latency:
                p50, p95 = np.percentile(np.asarray(self._latency), [50, 95])
                out["latency_p50_ms"], out["latency_p95_ms"] = float(p50) * 1e3, float(p95) * 1e3
            self._since_report.clear()
            self._last_report = now
            return out


def processor_counters(stats: Any) -> dict[str, float]:
    """Numeric counters of a FrameProcessor `stats` object (dataclass, object or mapping), flattened.

    Nested mappings become `<name>.<key>` (e.g. drops by reason); sequences (latency samples) and
    strings are left out. Tolerant by design: diagnostics must never take the node down.
    """
    if stats is None:
        return {}
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        items = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    elif isinstance(stats, Mapping):
        items = dict(stats)
    else:
        items = {k: v for k, v in vars(stats).items() if not k.startswith("_")} if hasattr(stats, "__dict__") else {}
    out: dict[str, float] = {}
    for key, value in items.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)):
            out[str(key)] = float(value)
        elif isinstance(value, Mapping):
            for sub, v in value.items():
                if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                    out[f"{key}.{sub}"] = float(v)
    return out


class KeyedThrottle:
    """At most one log line per key every `period_s` (thread-safe).

    rclpy's `throttle_duration_sec` throttles per *call site*: one site that logs many kinds of failure
    would hide all but the first kind for the whole period. This keys the throttle by what failed."""

    def __init__(self, period_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s = float(period_s)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def ready(self, key: str) -> bool:
        """True (and the key's period restarts) when `key` has not been let through for `period_s`."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.period_s:
                return False
            self._last[key] = now
            return True


@dataclasses.dataclass(frozen=True)
class DiagnosticSummary:
    """Content of the node's one DiagnosticStatus: level name (OK | WARN), message, key/values."""

    level: str
    message: str
    values: list[tuple[str, str]]


def _format_value(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".")


def diagnostic_summary(
    state: str,
    backend: str,
    report: Mapping[str, float],
    processor_stats: Any,
    silent_topics: set[str] | frozenset[str] = frozenset(),
) -> DiagnosticSummary:
    """Level, message and values for /diagnostics (see docs/ros.md, "Diagnostics").

    `report` is `NodeStats.report()`; `processor_stats` the FrameProcessor's stats (or None).
    WARN when errors were counted since the previous report, an input is silent, or the newest frame had
    no 3D output although depth is on."""
    values = dict(report)
    values.update({f"processor.{k}": v for k, v in processor_counters(processor_stats).items()})
    predictor_s = list(getattr(processor_stats, "predictor_s", None) or ())
    if predictor_s:  # the model's part of latency_p50_ms: the rest is the node's own work
        values["predictor_p50_ms"] = float(np.median(predictor_s)) * 1e3
    errors = sum(v for k, v in values.items() if k.startswith("error.") and k.endswith("_rate_hz"))
    level, message = "OK", f"{state}, backend {backend}"
    if errors:
        level, message = "WARN", f"{message}; errors in the last second"
    if silent_topics:
        level = "WARN"
        message = f"{message}; no input on {', '.join(sorted(silent_topics))}"
    geometry_error = str(getattr(processor_stats, "geometry_error", "") or "")
    if geometry_error:  # masks still go out; whoever waits for 3D should see why it is missing
        level = "WARN"
        message = f"{message}; no 3D output: {geometry_error}"
    kv = [("backend", backend)] + [(k, _format_value(v)) for k, v in sorted(values.items())]
    return DiagnosticSummary(level, message, kv)
