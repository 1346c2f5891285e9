"""A stand-in for the rclpy API that `shapemask_ros.node` uses (ROS 2 cannot be installed here).

No tests in this file. Behaviour follows rclpy's Humble and Jazzy sources (rclpy/node.py, parameter.py,
time_source.py, lifecycle/*.py, impl/rcutils_logger.py, executors.py), rosidl_generator_py's message
classes and diagnostic_updater's Python Updater -- written from reading them, not copied:

- `Node` owns rclpy's private attributes (`_timers`, `_parameters`, `_descriptors`, `_callbacks`, ...,
  see RCLPY_PRIVATE_ATTRS) and works through them, so a subclass that reuses one breaks as with rclpy.
- Parameters: declared statically typed, overrides applied, every set (declare included) checked against
  the descriptor *before* the on-set callbacks, and every callback sees every parameter; `use_sim_time`
  is declared by the node's time source, which registers its own callback.
- Lifecycle: rcl_lifecycle's state machine; an invalid transition raises RCLError; callbacks get the
  previous `LifecycleState`; an exception in a callback becomes ERROR (unlogged, like rclpy) and then
  `on_error`; lifecycle publishers drop messages silently while inactive.
- Messages built here reject unknown constructor fields as Humble's generated `__init__` does (Jazzy's
  ignores them unless ROS_PYTHON_CHECK_FIELDS=1).
- Loggers refuse to change a call site's severity or filters; throttling is per call site.
- `SimExecutor`: a multi-threaded executor on simulated time. Timers and subscriptions run on a thread
  pool, gated by their callback groups (a mutually exclusive group runs one callback at a time);
  `SimClock.sleep` in a callback lets simulated time pass for that thread only.

`install(monkeypatch, distro)` puts the modules into `sys.modules` and imports `shapemask_ros.node`.
"""

from __future__ import annotations

import array
import collections
import enum
import heapq
import importlib
import itertools
import math
import os
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

_HERE = os.path.abspath(__file__)

# rclpy.node.Node.__init__ (Humble + Jazzy) and LifecycleNodeMixin.__init__: attributes a subclass must not
# rebind. Name-mangled ones appear as _Node__x.
RCLPY_PRIVATE_ATTRS = frozenset(
    {
        "_Node__handle", "_Node__node", "_Node__executor_weakref", "_Node__waitables",
        "_context", "_parameters", "_publishers", "_subscriptions", "_clients", "_services", "_timers",
        "_guards", "_default_callback_group", "_parameters_callbacks", "_pre_set_parameters_callbacks",
        "_on_set_parameters_callbacks", "_post_set_parameters_callbacks", "_rate_group",
        "_allow_undeclared_parameters", "_parameter_overrides", "_descriptors", "_logger",
        "_parameter_event_publisher", "_clock", "_time_source", "_parameter_service", "_logger_service",
        "_type_description_service",
        # lifecycle
        "_callbacks", "_managed_entities", "_state_machine", "_service_change_state", "_service_get_state",
        "_service_get_available_states", "_service_get_available_transitions", "_service_get_transition_graph",
    }
)  # fmt: skip


# ---- exceptions ----
class RCLError(RuntimeError):
    """_rclpy.RCLError (e.g. 'Transition is not registered')."""


class InvalidTopicNameException(Exception):
    """rclpy.exceptions.InvalidTopicNameException."""


class ParameterException(Exception):
    pass


class ParameterAlreadyDeclaredException(ParameterException):
    pass


class ParameterNotDeclaredException(ParameterException):
    pass


class InvalidParameterValueException(ParameterException):
    def __init__(self, name: str, value: Any, reason: str) -> None:
        super().__init__(f"Invalid parameter value ({value}) for parameter. Reason: {reason}")
        self.name, self.value, self.reason = name, value, reason


class InvalidParameterTypeException(ParameterException):
    def __init__(self, param: Any, expected: str) -> None:
        super().__init__(f"Trying to set parameter '{param.name}' to '{param.value}' of type '{param.type_.name}'"
                         f", expecting type '{expected}'")  # fmt: skip


class ParameterUninitializedException(ParameterException):
    pass


class ExternalShutdownException(Exception):
    pass


class InvalidHandle(Exception):
    pass


# ---- message classes that behave like rosidl's (Humble: unknown constructor keywords assert) ----
def msg_class(full_name: str, fields: dict[str, Callable[[], Any]], **constants: Any) -> type:
    """A message class with `fields` (name -> default factory); unknown keywords and attributes fail."""

    def __init__(self: Any, **kwargs: Any) -> None:
        unknown = sorted(k for k in kwargs if k not in fields)
        # Humble asserts; Jazzy ignores unknown keywords unless ROS_PYTHON_CHECK_FIELDS=1
        if DISTRO == "humble" or os.environ.get("ROS_PYTHON_CHECK_FIELDS", "") == "1":
            assert not unknown, "Invalid arguments passed to constructor: " + ", ".join(unknown)
        for name, factory in fields.items():
            object.__setattr__(self, name, kwargs[name] if name in kwargs else factory())

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if name not in fields:  # __slots__ in the generated classes
            raise AttributeError(f"'{full_name}' object has no attribute '{name}'")
        object.__setattr__(self, name, value)

    def __repr__(self: Any) -> str:
        return f"{full_name}(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in fields) + ")"

    def __eq__(self: Any, other: Any) -> bool:
        return type(self) is type(other) and all(getattr(self, k) == getattr(other, k) for k in fields)

    ns = {"__init__": __init__, "__setattr__": __setattr__, "__repr__": __repr__, "__eq__": __eq__,
          "__hash__": None, "_fields": dict(fields), **constants}  # fmt: skip
    return type(full_name.rsplit("/", 1)[-1], (), ns)


Time = msg_class("builtin_interfaces/msg/Time", {"sec": int, "nanosec": int})
Header = msg_class("std_msgs/msg/Header", {"stamp": Time, "frame_id": str})
ParameterDescriptor = msg_class(
    "rcl_interfaces/msg/ParameterDescriptor",
    {"name": str, "type": int, "description": str, "additional_constraints": str, "read_only": bool,
     "dynamic_typing": bool, "floating_point_range": list, "integer_range": list},
)  # fmt: skip
SetParametersResult = msg_class("rcl_interfaces/msg/SetParametersResult", {"successful": bool, "reason": str})
ParameterEvent = msg_class(
    "rcl_interfaces/msg/ParameterEvent",
    {"stamp": Time, "node": str, "new_parameters": list, "changed_parameters": list, "deleted_parameters": list},
)
KeyValue = msg_class("diagnostic_msgs/msg/KeyValue", {"key": str, "value": str})
DiagnosticStatus = msg_class(
    "diagnostic_msgs/msg/DiagnosticStatus",
    {"level": lambda: b"\x00", "name": str, "message": str, "hardware_id": str, "values": list},
    OK=b"\x00", WARN=b"\x01", ERROR=b"\x02", STALE=b"\x03",
)  # fmt: skip
DiagnosticArray = msg_class("diagnostic_msgs/msg/DiagnosticArray", {"header": Header, "status": list})


# ---- parameters (rclpy/parameter.py) ----
class ParameterType(enum.Enum):
    NOT_SET = 0
    BOOL = 1
    INTEGER = 2
    DOUBLE = 3
    STRING = 4
    BYTE_ARRAY = 5
    BOOL_ARRAY = 6
    INTEGER_ARRAY = 7
    DOUBLE_ARRAY = 8
    STRING_ARRAY = 9

    @classmethod
    def from_parameter_value(cls, v: Any) -> ParameterType:
        if v is None:
            return cls.NOT_SET
        for t, name in ((bool, "BOOL"), (int, "INTEGER"), (float, "DOUBLE"), (str, "STRING")):
            if isinstance(v, t):
                return cls[name]
        if isinstance(v, (list, tuple, array.array)):
            for t, name in ((bytes, "BYTE_ARRAY"), (bool, "BOOL_ARRAY"), (int, "INTEGER_ARRAY"),
                            (float, "DOUBLE_ARRAY"), (str, "STRING_ARRAY")):  # fmt: skip
                if all(isinstance(x, t) for x in v):  # an empty list is a BYTE_ARRAY, as in rclpy
                    return cls[name]
            raise TypeError(f"The given value is not a list of one of the allowed types '{v}'.")
        raise TypeError(f"The given value is not one of the allowed types '{v}'.")

    def check(self, v: Any) -> bool:
        if self is ParameterType.NOT_SET:
            return v is None
        try:
            return ParameterType.from_parameter_value(v) is self or (
                self.name.endswith("_ARRAY") and isinstance(v, (list, tuple, array.array)) and len(v) == 0
            )
        except TypeError:
            return False


class Parameter:
    """rclpy.parameter.Parameter: the type is inferred from the value unless given, and must agree."""

    Type = ParameterType

    def __init__(self, name: str, type_: ParameterType | None = None, value: Any = None) -> None:
        if type_ is None:
            type_ = ParameterType.from_parameter_value(value)
        if not type_.check(value):
            raise ValueError(f"Type '{type_}' and value '{value}' do not agree")
        self._name, self._type_, self._value = name, type_, value

    @property
    def name(self) -> str:
        return self._name

    @property
    def type_(self) -> ParameterType:
        return self._type_

    @property
    def value(self) -> Any:
        return self._value


# ---- simulated time ----
class SimClock:
    """Simulated seconds shared by the executor, the node's steady clock and ROS time.

    `sleep(dt)` from an executor thread parks that thread until the executor advances time past its wake
    time; the executor advances only when no callback is running (all idle or sleeping)."""

    def __init__(self, start: float = 1000.0, deadlock_s: float = 60.0) -> None:
        self._t = float(start)
        self._cond = threading.Condition()
        self._busy = 0
        self._sleepers: list[tuple[float, int, list[bool]]] = []
        self._seq = itertools.count()
        self._deadlock_s = deadlock_s
        self._released = False

    def now(self) -> float:
        return self._t

    def sleep(self, dt: float) -> None:
        if threading.current_thread() is threading.main_thread():  # called outside the executor
            with self._cond:
                self._t += max(0.0, dt)
            return
        with self._cond:
            if self._released:
                return
            go = [False]
            heapq.heappush(self._sleepers, (self._t + max(0.0, dt), next(self._seq), go))
            self._busy -= 1
            self._cond.notify_all()
            while not go[0]:
                self._cond.wait()

    def begin(self) -> None:
        with self._cond:
            self._busy += 1

    def end(self) -> None:
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def wait_idle(self) -> None:
        deadline = time.monotonic() + self._deadlock_s
        with self._cond:
            while self._busy > 0:
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise RuntimeError("SimClock: callbacks did not finish (deadlock?)")

    def next_wake(self) -> float:
        with self._cond:
            return self._sleepers[0][0] if self._sleepers else math.inf

    def release_all(self) -> None:
        """Wake every sleeping callback and let later sleeps return at once (executor shutdown)."""
        with self._cond:
            self._released = True
            for _, _, go in self._sleepers:
                go[0] = True
            self._sleepers.clear()
            self._cond.notify_all()

    def advance_to(self, t: float) -> None:
        with self._cond:
            self._t = max(self._t, t)
            while self._sleepers and self._sleepers[0][0] <= self._t:
                _, _, go = heapq.heappop(self._sleepers)
                go[0] = True
                self._busy += 1
            self._cond.notify_all()


class TimeObj:
    """rclpy.time.Time (nanoseconds, to_msg)."""

    def __init__(self, nanoseconds: int) -> None:
        self.nanoseconds = int(nanoseconds)

    def to_msg(self) -> Any:
        return Time(sec=self.nanoseconds // 10**9, nanosec=self.nanoseconds % 10**9)


class Clock:
    def __init__(self, source: Callable[[], float]) -> None:
        self._source = source

    def now(self) -> TimeObj:
        return TimeObj(round(self._source() * 1e9))


class Context:
    """rclpy.context.Context plus what the stand-in needs of the ROS graph: the simulated clock and the
    other nodes' publishers (`graph_publishers[topic] = [TopicEndpointInfo-like, ...]`)."""

    def __init__(self) -> None:
        self.clock = SimClock()
        self.graph_publishers: dict[str, list[Any]] = {}
        self._ok = True

    def ok(self) -> bool:
        return self._ok


_DEFAULT_CONTEXT = Context()


def reset_default_context() -> Context:
    global _DEFAULT_CONTEXT
    _DEFAULT_CONTEXT = Context()
    return _DEFAULT_CONTEXT


# ---- logging (rclpy/impl/rcutils_logger.py) ----
class _CallerId(NamedTuple):
    function_name: str
    file_path: str
    line_number: int
    last_index: int


def _caller() -> _CallerId:
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) == _HERE:
        frame = frame.f_back
    assert frame is not None
    return _CallerId(frame.f_code.co_name, os.path.abspath(frame.f_code.co_filename), frame.f_lineno, frame.f_lasti)


class Logger:
    """RcutilsLogger: per call site, severity and filters are fixed on first use; throttle per call site."""

    SEVERITIES = ("debug", "info", "warning", "error", "fatal")

    def __init__(self, name: str, clock: Callable[[], float], max_records: int = 20000) -> None:
        self.name = name
        self._clock = clock
        self._contexts: dict[_CallerId, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.records: collections.deque[tuple[str, str]] = collections.deque(maxlen=max_records)

    def log(self, message: str, severity: str, **kwargs: Any) -> bool:
        caller = _caller()
        filters = tuple(sorted(k for k in ("throttle_duration_sec", "once", "skip_first") if kwargs.get(k)))
        with self._lock:
            ctx = self._contexts.get(caller)
            if ctx is None:
                ctx = self._contexts[caller] = {"severity": severity, "filters": filters, "kwargs": dict(kwargs),
                                                 "last": -math.inf, "calls": 0}  # fmt: skip
            else:
                if severity != ctx["severity"]:
                    raise ValueError("Logger severity cannot be changed between calls.")
                if filters != ctx["filters"]:
                    raise ValueError("Requested logging filters cannot be changed between calls.")
                if dict(kwargs) != ctx["kwargs"]:
                    raise ValueError("Logging filter parameters cannot be changed between calls.")
            ctx["calls"] += 1
            if "once" in filters and ctx["calls"] > 1:
                return False
            if "skip_first" in filters and ctx["calls"] == 1:
                return False
            if "throttle_duration_sec" in filters:
                now = self._clock()
                if now < ctx["last"] + float(kwargs["throttle_duration_sec"]):
                    return False
                ctx["last"] = now
            self.records.append((severity, str(message)))
        return True

    def debug(self, message: str, **kw: Any) -> bool:
        return self.log(message, "debug", **kw)

    def info(self, message: str, **kw: Any) -> bool:
        return self.log(message, "info", **kw)

    def warning(self, message: str, **kw: Any) -> bool:
        return self.log(message, "warning", **kw)

    warn = warning

    def error(self, message: str, **kw: Any) -> bool:
        return self.log(message, "error", **kw)

    def fatal(self, message: str, **kw: Any) -> bool:
        return self.log(message, "fatal", **kw)

    def text(self, severity: str) -> str:
        """Stand-in only: every logged line of one severity (what /rosout would carry)."""
        return "\n".join(m for s, m in list(self.records) if s == severity)


# ---- QoS, callback groups, entities ----
ReliabilityPolicy = enum.IntEnum("ReliabilityPolicy", "SYSTEM_DEFAULT RELIABLE BEST_EFFORT", start=0)
HistoryPolicy = enum.IntEnum("HistoryPolicy", "SYSTEM_DEFAULT KEEP_LAST KEEP_ALL", start=0)
DurabilityPolicy = enum.IntEnum("DurabilityPolicy", "SYSTEM_DEFAULT TRANSIENT_LOCAL VOLATILE", start=0)


class QoSProfile:
    """rclpy.qos.QoSProfile: history and depth required; unspecified policies keep rclpy's defaults."""

    def __init__(
        self,
        *,
        history: HistoryPolicy = HistoryPolicy.KEEP_LAST,
        depth: int | None = None,
        reliability: ReliabilityPolicy = ReliabilityPolicy.RELIABLE,
        durability: DurabilityPolicy = DurabilityPolicy.VOLATILE,
    ) -> None:
        if history == HistoryPolicy.KEEP_LAST and (depth is None or depth < 0):
            raise ValueError("A QoSProfile with KEEP_LAST history needs a depth")
        self.history, self.depth, self.reliability, self.durability = history, depth, reliability, durability


class CallbackGroup:
    def __init__(self) -> None:
        self._lock = threading.Lock()

    def can_execute(self, entity: Any) -> bool:
        return True

    def beginning_execution(self, entity: Any) -> bool:
        return True

    def ending_execution(self, entity: Any) -> None:
        pass


class ReentrantCallbackGroup(CallbackGroup):
    pass


class MutuallyExclusiveCallbackGroup(CallbackGroup):
    def __init__(self) -> None:
        super().__init__()
        self._active: Any = None

    def can_execute(self, entity: Any) -> bool:
        with self._lock:
            return self._active is None

    def beginning_execution(self, entity: Any) -> bool:
        with self._lock:
            if self._active is None:
                self._active = entity
                return True
            return False

    def ending_execution(self, entity: Any) -> None:
        with self._lock:
            self._active = None


_NAME_TOKEN = re.compile(r"^[A-Za-z_~{][A-Za-z0-9_{}]*$|^~$")


def validate_topic_name(name: str) -> None:
    """rcl's topic name rules (the parts that matter here); InvalidTopicNameException otherwise."""
    problem = ""
    if not name:
        problem = "topic name must not be empty"
    elif name.endswith("/"):
        problem = "topic name must not end with a forward slash"
    elif "//" in name:
        problem = "topic name must not contain repeated forward slashes"
    else:
        for token in name.lstrip("/").split("/"):
            if not _NAME_TOKEN.match(token):
                problem = (
                    "topic name must not contain characters other than alphanumerics, '_', '~', '{', or '}',"
                    " and tokens must not start with a number"
                )
                break
    if problem:
        raise InvalidTopicNameException(f"Invalid topic name: {problem}: '{name}'")


class Publisher:
    def __init__(self, node: Node, msg_type: Any, topic: str, qos: QoSProfile) -> None:
        self.msg_type, self.topic_name, self.qos_profile = msg_type, topic, qos
        self._node = node
        self.sent: collections.deque[Any] = collections.deque(maxlen=200)  # stand-in: recent messages
        self.sent_times: collections.deque[float] = collections.deque(maxlen=200)
        self.count = 0
        self.subscribers = 0  # stand-in: what get_subscription_count() returns
        self.destroyed = False

    def publish(self, msg: Any) -> None:
        if self.destroyed:
            raise InvalidHandle("publisher destroyed")
        if not isinstance(msg, self.msg_type):
            raise TypeError(f"Expected {self.msg_type}, got {type(msg)}")
        self.sent.append(msg)
        self.sent_times.append(self._node.context.clock.now())
        self.count += 1

    def get_subscription_count(self) -> int:
        return self.subscribers

    def destroy(self) -> None:
        self.destroyed = True


class ManagedEntity:
    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        return TransitionCallbackReturn.SUCCESS

    on_cleanup = on_shutdown = on_activate = on_deactivate = on_error = on_configure


class LifecyclePublisher(ManagedEntity, Publisher):
    """Drops (silently, like SimpleManagedEntity.when_enabled) while not activated."""

    def __init__(self, *args: Any) -> None:
        Publisher.__init__(self, *args)
        self._enabled = False

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        self._enabled = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        self._enabled = False
        return TransitionCallbackReturn.SUCCESS

    @property
    def is_activated(self) -> bool:
        return self._enabled

    def publish(self, msg: Any) -> None:
        if self._enabled:
            Publisher.publish(self, msg)


class Subscription:
    def __init__(self, msg_type: Any, topic: str, callback: Callable, qos: QoSProfile, group: CallbackGroup):
        self.msg_type, self.topic_name, self.callback, self.qos_profile = msg_type, topic, callback, qos
        self.callback_group = group
        # the DDS reader's history: KEEP_LAST depth (messages not yet taken by the executor)
        self.queue: collections.deque[Any] = collections.deque(maxlen=max(1, qos.depth or 1))
        self.destroyed = False

    def destroy(self) -> None:
        self.destroyed = True


class Timer:
    def __init__(self, callback: Callable, group: CallbackGroup, period_s: float, clock: SimClock) -> None:
        self.callback, self.callback_group = callback, group
        self.timer_period_ns = int(period_s * 1e9)
        self._period = float(period_s)
        self._clock = clock
        self.next_due = clock.now() + self._period
        self.destroyed = False

    def is_ready(self) -> bool:
        return not self.destroyed and self._clock.now() >= self.next_due - 1e-12

    def call(self) -> None:
        """rcl_timer_call: the next call is the next period boundary after now (missed ones are skipped)."""
        now = self._clock.now()
        self.next_due += self._period
        if self.next_due <= now:
            self.next_due += self._period * (math.floor((now - self.next_due) / self._period) + 1)

    def destroy(self) -> None:
        self.destroyed = True


# ---- Node (rclpy/node.py) ----
DISTRO = "jazzy"  # set by install(): callbacks attribute names, Updater parameters, message field checks


class Node:
    def __init__(
        self,
        node_name: str,
        *,
        context: Context | None = None,
        cli_args: list[str] | None = None,
        namespace: str | None = None,
        use_global_arguments: bool = True,
        enable_rosout: bool = True,
        start_parameter_services: bool = True,
        parameter_overrides: list[Parameter] | None = None,
        allow_undeclared_parameters: bool = False,
        automatically_declare_parameters_from_overrides: bool = False,
    ) -> None:
        self._Node__handle = object()
        self._context = context or _DEFAULT_CONTEXT
        self._parameters: dict[str, Parameter] = {}
        self._publishers: list[Publisher] = []
        self._subscriptions: list[Subscription] = []
        self._clients: list[Any] = []
        self._services: list[Any] = []
        self._timers: list[Timer] = []
        self._guards: list[Any] = []
        self._Node__waitables: list[Any] = []
        self._default_callback_group = MutuallyExclusiveCallbackGroup()
        if DISTRO == "humble":
            self._parameters_callbacks: list[Callable] = []
        else:
            self._pre_set_parameters_callbacks: list[Callable] = []
            self._on_set_parameters_callbacks: list[Callable] = []
            self._post_set_parameters_callbacks: list[Callable] = []
        self._rate_group = ReentrantCallbackGroup()
        self._allow_undeclared_parameters = allow_undeclared_parameters
        self._parameter_overrides: dict[str, Parameter] = {}
        self._descriptors: dict[str, Any] = {}
        self._Node__node = types.SimpleNamespace(name=node_name, namespace=namespace or "/")
        self._logger = Logger(node_name, self._context.clock.now)
        self._Node__executor_weakref = None
        self._parameter_event_publisher = self.create_publisher(ParameterEvent, "/parameter_events", 1000)
        self._parameter_overrides.update({p.name: p for p in parameter_overrides or []})
        self._clock = Clock(self._context.clock.now)
        self._time_source = _TimeSource(self)
        self._parameter_service = object() if start_parameter_services else None
        if DISTRO == "jazzy":
            self._logger_service = None
            self._type_description_service = object()

    # -- basics
    @property
    def context(self) -> Context:
        return self._context

    @property
    def default_callback_group(self) -> CallbackGroup:
        return self._default_callback_group

    @property
    def timers(self) -> Iterator[Timer]:
        yield from self._timers

    @property
    def subscriptions(self) -> Iterator[Subscription]:
        yield from self._subscriptions

    @property
    def publishers(self) -> Iterator[Publisher]:
        yield from self._publishers

    def get_name(self) -> str:
        return self._Node__node.name

    def get_namespace(self) -> str:
        return self._Node__node.namespace

    def get_logger(self) -> Logger:
        return self._logger

    def get_clock(self) -> Clock:
        return self._clock

    # -- parameters
    def _on_set_callbacks(self) -> list[Callable]:
        return self._parameters_callbacks if DISTRO == "humble" else self._on_set_parameters_callbacks

    def add_on_set_parameters_callback(self, callback: Callable) -> None:
        self._on_set_callbacks().insert(0, callback)  # rclpy prepends

    def declare_parameter(
        self, name: str, value: Any = None, descriptor: Any = None, ignore_override: bool = False
    ) -> Parameter:
        return self.declare_parameters("", [(name, value, descriptor or ParameterDescriptor())], ignore_override)[0]

    def declare_parameters(self, namespace: str, parameters: list[tuple], ignore_override: bool = False) -> list:
        plist, descriptors = [], {}
        for tup in parameters:
            name = f"{namespace}.{tup[0]}" if namespace else tup[0]
            second = tup[1] if len(tup) > 1 else None
            descriptor = tup[2] if len(tup) > 2 else ParameterDescriptor()
            value = None
            if isinstance(second, ParameterType):
                if second is ParameterType.NOT_SET:
                    raise ValueError(f"Cannot declare parameter {{{name}}} as statically typed of type NOT_SET")
                descriptor.type = second.value
            else:
                value = second
                if not descriptor.dynamic_typing:
                    descriptor.type = ParameterType.from_parameter_value(value).value
                    if descriptor.type == 0:
                        raise ValueError("Cannot declare a statically typed parameter with default value "
                                         "of type PARAMETER_NOT_SET")  # fmt: skip
            if not ignore_override and name in self._parameter_overrides:
                value = self._parameter_overrides[name].value
            plist.append(Parameter(name, value=value))
            descriptors[name] = descriptor
        already = [p.name for p in plist if p.name in self._parameters]
        if already:
            raise ParameterAlreadyDeclaredException(already)
        for p in plist:
            result = self._set_parameters_atomically_common([p], descriptors, allow_not_set_type=True)
            if not result.successful:
                if result.reason.startswith("Wrong parameter type"):
                    raise InvalidParameterTypeException(p, ParameterType(descriptors[p.name].type).name)
                raise InvalidParameterValueException(p.name, p.value, result.reason)
        return [self._parameters[p.name] for p in plist]

    def has_parameter(self, name: str) -> bool:
        return name in self._parameters

    def get_parameter(self, name: str) -> Parameter:
        if name in self._parameters:
            p = self._parameters[name]
            if p.type_ is not ParameterType.NOT_SET or self._descriptors[name].dynamic_typing:
                return p
            raise ParameterUninitializedException(name)
        if self._allow_undeclared_parameters:
            return Parameter(name, ParameterType.NOT_SET, None)
        raise ParameterNotDeclaredException(name)

    def get_parameter_or(self, name: str, alternative_value: Parameter | None = None) -> Parameter:
        if alternative_value is None:
            alternative_value = Parameter(name, ParameterType.NOT_SET)
        if name not in self._parameters or self._parameters[name].type_ is ParameterType.NOT_SET:
            return alternative_value
        return self._parameters[name]

    def describe_parameter(self, name: str) -> Any:
        if name in self._descriptors:
            return self._descriptors[name]
        raise ParameterNotDeclaredException(name)

    def set_parameters(self, parameter_list: list[Parameter]) -> list[Any]:
        """What `ros2 param set` reaches through the parameter service: one parameter at a time."""
        results = []
        for p in parameter_list:
            if not isinstance(p, Parameter):
                raise TypeError(f"parameter must be instance of type '{Parameter!r}'")
            if p.name not in self._parameters and not self._allow_undeclared_parameters:
                raise ParameterNotDeclaredException([p.name])
            results.append(self._set_parameters_atomically_common([p]))
        return results

    def _apply_descriptor(self, p: Parameter, descriptor: Any, check_read_only: bool) -> Any:
        descriptor.name = p.name
        if check_read_only and descriptor.read_only:
            return SetParametersResult(successful=False, reason=f"Trying to set a read-only parameter: {p.name}.")
        if descriptor.dynamic_typing:
            descriptor.type = p.type_.value
        elif self.has_parameter(p.name) and p.type_ is ParameterType.NOT_SET:
            return SetParametersResult(successful=False, reason="Static parameter cannot be undeclared")
        elif p.type_ is not ParameterType.NOT_SET and p.type_.value != descriptor.type:
            return SetParametersResult(
                successful=False,
                reason=f"Wrong parameter type, expected '{ParameterType(descriptor.type)}' got '{p.type_}'",
            )
        return SetParametersResult(successful=True)

    def _set_parameters_atomically_common(
        self, plist: list[Parameter], descriptors: dict | None = None, allow_not_set_type: bool = False
    ) -> Any:
        for p in plist:  # descriptors first: a wrong type never reaches the callbacks
            d = (descriptors or self._descriptors).get(p.name)
            if d is not None:
                result = self._apply_descriptor(p, d, descriptors is None)
                if not result.successful:
                    return result
        for callback in self._on_set_callbacks():
            result = callback(plist)
            if not result.successful:
                return result
        event = ParameterEvent(node=self.get_namespace().rstrip("/") + "/" + self.get_name())
        for p in plist:
            if not allow_not_set_type and p.type_ is ParameterType.NOT_SET:
                self._parameters.pop(p.name, None)
                self._descriptors.pop(p.name, None)
                event.deleted_parameters.append(p.name)
                continue
            if descriptors is not None:
                self._descriptors[p.name] = descriptors[p.name]
            elif p.name not in self._descriptors:
                self._descriptors[p.name] = ParameterDescriptor(dynamic_typing=True)
            (event.changed_parameters if p.name in self._parameters else event.new_parameters).append(p.name)
            self._parameters[p.name] = p
        event.stamp = self._clock.now().to_msg()
        self._parameter_event_publisher.publish(event)
        return SetParametersResult(successful=True)

    # -- entities
    def create_publisher(
        self, msg_type: Any, topic: str, qos_profile: QoSProfile | int, *, callback_group: Any = None,
        publisher_class: type = Publisher, **_: Any,
    ) -> Publisher:  # fmt: skip
        qos = QoSProfile(depth=qos_profile) if isinstance(qos_profile, int) else qos_profile
        validate_topic_name(topic)
        pub = publisher_class(self, msg_type, topic, qos)
        self._publishers.append(pub)
        return pub

    def destroy_publisher(self, publisher: Publisher) -> bool:
        if publisher in self._publishers:
            self._publishers.remove(publisher)
            publisher.destroy()
            return True
        return False

    def create_subscription(
        self, msg_type: Any, topic: str, callback: Callable, qos_profile: QoSProfile | int, *,
        callback_group: CallbackGroup | None = None, **_: Any,
    ) -> Subscription:  # fmt: skip
        qos = QoSProfile(depth=qos_profile) if isinstance(qos_profile, int) else qos_profile
        validate_topic_name(topic)
        sub = Subscription(msg_type, topic, callback, qos, callback_group or self._default_callback_group)
        self._subscriptions.append(sub)
        return sub

    def destroy_subscription(self, subscription: Subscription) -> bool:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            subscription.destroy()
            return True
        return False

    def create_timer(
        self, timer_period_sec: float, callback: Callable, callback_group: CallbackGroup | None = None,
        clock: Any = None, **_: Any,
    ) -> Timer:  # fmt: skip
        timer = Timer(callback, callback_group or self._default_callback_group, timer_period_sec, self._context.clock)
        self._timers.append(timer)
        return timer

    def destroy_timer(self, timer: Timer) -> bool:
        if timer in self._timers:
            self._timers.remove(timer)
            timer.destroy()
            return True
        return False

    def count_publishers(self, topic_name: str) -> int:
        return len(self._context.graph_publishers.get(topic_name, []))

    def get_publishers_info_by_topic(self, topic_name: str) -> list[Any]:
        return list(self._context.graph_publishers.get(topic_name, []))

    def destroy_node(self) -> None:
        while self._publishers:
            self.destroy_publisher(self._publishers[0])
        while self._subscriptions:
            self.destroy_subscription(self._subscriptions[0])
        while self._timers:
            self.destroy_timer(self._timers[0])


class _TimeSource:
    """rclpy.time_source.TimeSource: declares `use_sim_time` and validates it in its own callback."""

    def __init__(self, node: Node) -> None:
        self.ros_time_is_active = False
        if not node.has_parameter("use_sim_time"):
            node.declare_parameter("use_sim_time", False)
        p = node.get_parameter("use_sim_time")
        self.ros_time_is_active = bool(p.value)
        node.add_on_set_parameters_callback(self._on_parameter_event)

    def _on_parameter_event(self, parameter_list: list[Parameter]) -> Any:
        for p in parameter_list:
            if p.name == "use_sim_time":
                if p.type_ is ParameterType.BOOL:
                    self.ros_time_is_active = p.value
                else:
                    return SetParametersResult(successful=False, reason="use_sim_time parameter set to something "
                                                                      "besides a bool")  # fmt: skip
        return SetParametersResult(successful=True)


# ---- lifecycle (rclpy/lifecycle/node.py + rcl_lifecycle's default state machine) ----
class TransitionCallbackReturn(enum.Enum):
    SUCCESS = 97
    FAILURE = 98
    ERROR = 99

    def to_label(self) -> str:
        return {97: "transition_success", 98: "transition_failure", 99: "transition_error"}[self.value]


class LifecycleState(NamedTuple):
    label: str
    state_id: int


STATES = {1: "unconfigured", 2: "inactive", 3: "active", 4: "finalized", 10: "configuring", 11: "cleaningup",
          12: "shuttingdown", 13: "activating", 14: "deactivating", 15: "errorprocessing"}  # fmt: skip
# transition id -> {start state: intermediate state}; outcome label -> {intermediate: goal}
_TRANSITIONS = {1: {1: 10}, 2: {2: 11}, 3: {2: 13}, 4: {3: 14}, 5: {1: 12}, 6: {2: 12}, 7: {3: 12}}
_OUTCOMES = {
    "transition_success": {10: 2, 11: 1, 12: 4, 13: 3, 14: 2, 15: 1},
    "transition_failure": {10: 1, 11: 2, 12: 4, 13: 2, 14: 3, 15: 4},
    "transition_error": {10: 15, 11: 15, 12: 15, 13: 15, 14: 15, 15: 4},
}


class _StateMachine:
    def __init__(self) -> None:
        self.current_state = (1, "unconfigured")
        self.initialized = True

    def trigger_transition_by_id(self, transition_id: int, publish: bool) -> None:
        goal = _TRANSITIONS.get(transition_id, {}).get(self.current_state[0])
        if goal is None:
            raise RCLError(f"Transition is not registered., at ./src/rcl_lifecycle.c (transition {transition_id} "
                           f"from {self.current_state[1]})")  # fmt: skip
        self.current_state = (goal, STATES[goal])

    def trigger_transition_by_label(self, label: str, publish: bool) -> None:
        goal = _OUTCOMES[label][self.current_state[0]]
        self.current_state = (goal, STATES[goal])


class LifecycleNode(Node):
    def __init__(self, node_name: str, *args: Any, enable_communication_interface: bool = True,
                 callback_group: Any = None, **kwargs: Any) -> None:  # fmt: skip
        Node.__init__(self, node_name, *args, **kwargs)
        self._callbacks = {10: self.on_configure, 11: self.on_cleanup, 12: self.on_shutdown,
                           13: self.on_activate, 14: self.on_deactivate, 15: self.on_error}  # fmt: skip
        self._managed_entities: set[Any] = set()
        self._state_machine = _StateMachine()
        for name in ("change_state", "get_state", "get_available_states", "get_available_transitions",
                     "get_transition_graph"):  # fmt: skip
            setattr(self, f"_service_{name}", object())

    def trigger_configure(self) -> TransitionCallbackReturn:
        return self._change_state(1)

    def trigger_cleanup(self) -> TransitionCallbackReturn:
        return self._change_state(2)

    def trigger_activate(self) -> TransitionCallbackReturn:
        return self._change_state(3)

    def trigger_deactivate(self) -> TransitionCallbackReturn:
        return self._change_state(4)

    def trigger_shutdown(self) -> TransitionCallbackReturn:
        state = self._state_machine.current_state[1]
        ids = {"unconfigured": 5, "inactive": 6, "active": 7}
        if state not in ids:
            raise RCLError("Shutdown transtion not possible")
        return self._change_state(ids[state])

    def _execute_callback(self, state_id: int, previous: LifecycleState) -> TransitionCallbackReturn:
        cb = self._callbacks.get(state_id)
        if cb is None:
            return TransitionCallbackReturn.SUCCESS
        try:
            return cb(previous)
        except Exception:  # rclpy: swallowed, not logged
            return TransitionCallbackReturn.ERROR

    def _change_state(self, transition_id: int) -> TransitionCallbackReturn:
        state_id, label = self._state_machine.current_state
        initial = LifecycleState(label=label, state_id=state_id)
        self._state_machine.trigger_transition_by_id(transition_id, True)
        ret = self._execute_callback(self._state_machine.current_state[0], initial)
        self._state_machine.trigger_transition_by_label(ret.to_label(), True)
        if ret == TransitionCallbackReturn.ERROR:
            err = self._execute_callback(self._state_machine.current_state[0], initial)
            self._state_machine.trigger_transition_by_label(err.to_label(), True)
        return ret

    def _for_entities(self, name: str, state: Any) -> TransitionCallbackReturn:
        for entity in self._managed_entities:
            ret = getattr(entity, name)(state)
            if ret != TransitionCallbackReturn.SUCCESS:
                return ret
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: Any) -> TransitionCallbackReturn:
        return self._for_entities("on_configure", state)

    def on_cleanup(self, state: Any) -> TransitionCallbackReturn:
        return self._for_entities("on_cleanup", state)

    def on_shutdown(self, state: Any) -> TransitionCallbackReturn:
        return self._for_entities("on_shutdown", state)

    def on_activate(self, state: Any) -> TransitionCallbackReturn:
        return self._for_entities("on_activate", state)

    def on_deactivate(self, state: Any) -> TransitionCallbackReturn:
        return self._for_entities("on_deactivate", state)

    def on_error(self, state: Any) -> TransitionCallbackReturn:
        return self._for_entities("on_error", state)

    def create_lifecycle_publisher(self, *args: Any, **kwargs: Any) -> LifecyclePublisher:
        pub = Node.create_publisher(self, *args, **kwargs, publisher_class=LifecyclePublisher)
        self._managed_entities.add(pub)
        return pub

    def destroy_lifecycle_publisher(self, publisher: LifecyclePublisher) -> bool:
        self._managed_entities.discard(publisher)
        return Node.destroy_publisher(self, publisher)


# ---- diagnostic_updater (Python package of ros/diagnostics, Humble + Jazzy) ----
class DiagnosticStatusWrapper:
    def __init__(self) -> None:
        self.level, self.name, self.message, self.hardware_id = DiagnosticStatus.OK, "", "", ""
        self.values: list[Any] = []

    def summary(self, level: bytes, message: str) -> None:
        self.level, self.message = level, str(message)

    def add(self, key: str, value: Any) -> None:
        self.values.append(KeyValue(key=str(key), value=str(value)))


class Updater:
    """Declares `diagnostic_updater.period` (+ `use_fqn` on Jazzy), publishes DiagnosticArray on /diagnostics
    from a timer in the node's default callback group; task names are prefixed with the node name."""

    def __init__(self, node: Node, period: float = 1.0) -> None:
        self.node = node
        self.tasks: list[tuple[str, Callable]] = []
        self.lock = threading.Lock()
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 1)
        self.period = node.declare_parameter("diagnostic_updater.period", period).value
        self.timer = node.create_timer(self.period, self.update)
        self.hwid = ""
        if DISTRO == "jazzy" and not node.has_parameter("diagnostic_updater.use_fqn"):
            node.declare_parameter("diagnostic_updater.use_fqn", False)
        self.node_name = node.get_name()

    def add(self, name: str, fn: Callable) -> None:
        with self.lock:
            self.tasks.append((name, fn))
        stat = DiagnosticStatusWrapper()
        stat.name = name
        stat.summary(DiagnosticStatus.OK, "Node starting up")
        self.publish([stat])

    def setHardwareID(self, hwid: str) -> None:  # noqa: N802 - diagnostic_updater's name
        self.hwid = hwid

    def update(self) -> None:
        statuses = []
        with self.lock:
            for name, fn in self.tasks:
                stat = DiagnosticStatusWrapper()
                stat.level, stat.name, stat.message = DiagnosticStatus.ERROR, name, "No message was set"
                stat.hardware_id = self.hwid
                statuses.append(fn(stat))
        self.publish(statuses)

    def publish(self, statuses: list[DiagnosticStatusWrapper]) -> None:
        array_msg = DiagnosticArray()
        array_msg.header.stamp = self.node.get_clock().now().to_msg()
        for stat in statuses:
            array_msg.status.append(
                DiagnosticStatus(
                    level=stat.level,
                    name=f"{self.node_name}: {stat.name}",
                    message=stat.message,
                    hardware_id=stat.hardware_id,
                    values=stat.values,
                )  # fmt: skip
            )
        self.publisher.publish(array_msg)


# ---- executor ----
class SimExecutor:
    """MultiThreadedExecutor on simulated time (see the module docstring). `deliver(topic, msg, at)` plays
    the part of a publisher elsewhere in the graph; exceptions raised in callbacks re-raise from spin."""

    def __init__(self, context: Context | None = None, num_threads: int = 4) -> None:
        self.context = context or _DEFAULT_CONTEXT
        self.clock = self.context.clock
        self._nodes: list[Node] = []
        self._pool = ThreadPoolExecutor(max_workers=num_threads)
        self._pending: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.errors: list[BaseException] = []

    def add_node(self, node: Node) -> bool:
        self._nodes.append(node)
        return True

    def deliver(self, topic: str, msg: Any, at: float | None = None) -> None:
        heapq.heappush(self._pending, (self.clock.now() if at is None else at, next(self._seq), topic, msg))

    def _submit(self, entity: Any, fn: Callable[[], None]) -> bool:
        group = entity.callback_group
        if not group.can_execute(entity) or not group.beginning_execution(entity):
            return False
        self.clock.begin()

        def run() -> None:
            try:
                fn()
            except BaseException as e:  # rclpy re-raises callback exceptions from spin
                self.errors.append(e)
            finally:
                group.ending_execution(entity)
                self.clock.end()

        self._pool.submit(run)
        return True

    def _round(self) -> bool:
        """Take incoming messages, run everything that is ready and allowed; True if anything ran."""
        now = self.clock.now()
        while self._pending and self._pending[0][0] <= now:
            _, _, topic, msg = heapq.heappop(self._pending)
            for node in self._nodes:
                for sub in list(node._subscriptions):
                    if sub.topic_name == topic:
                        sub.queue.append(msg)  # KEEP_LAST: the oldest is lost when full
        ran = False
        for node in self._nodes:
            for timer in list(node._timers):
                if timer.is_ready() and timer.callback_group.can_execute(timer):
                    if self._submit(timer, timer.callback):
                        timer.call()
                        ran = True
            for sub in list(node._subscriptions):
                while sub.queue and not sub.destroyed:
                    msg = sub.queue[0]
                    if not self._submit(sub, lambda s=sub, m=msg: s.callback(m)):
                        break
                    sub.queue.popleft()
                    ran = True
        return ran

    def spin_until(self, t_end: float) -> None:
        """Run callbacks until simulated time `t_end`."""
        while True:
            self.clock.wait_idle()
            if self._round():
                continue
            self.clock.wait_idle()
            if self.errors:
                raise self.errors[0]
            candidates = [t_end, self.clock.next_wake()]
            if self._pending:
                candidates.append(self._pending[0][0])
            for node in self._nodes:
                candidates += [t.next_due for t in node._timers if t.callback_group.can_execute(t)]
            t_next = min(candidates)
            if t_next > t_end or (t_next == t_end and self.clock.now() >= t_end):
                self.clock.advance_to(t_end)
                self.clock.wait_idle()
                break
            self.clock.advance_to(t_next)
        if self.errors:
            raise self.errors[0]

    def spin_for(self, seconds: float) -> None:
        self.spin_until(self.clock.now() + seconds)

    def shutdown(self) -> None:
        self.clock.release_all()
        self._pool.shutdown(wait=True)


# ---- installing the modules ----
def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def remove_ros_args(args: list[str] | None = None) -> list[str]:
    args = list(sys.argv if args is None else args)
    if "--ros-args" in args:
        i = args.index("--ros-args")
        end = args.index("--", i) if "--" in args[i:] else len(args)
        args = args[:i] + args[end + 1 :]
    return args


def install(monkeypatch: Any, get_message: Callable[[str], Any], distro: str = "jazzy") -> types.ModuleType:
    """Install the stand-in as rclpy & co. in sys.modules (undone by monkeypatch) and import
    `shapemask_ros.node` afresh against it; returns that module."""
    global DISTRO
    DISTRO = distro
    reset_default_context()
    lifecycle = _module(
        "rclpy.lifecycle", Node=LifecycleNode, LifecycleNode=LifecycleNode, State=LifecycleState,
        LifecycleState=LifecycleState, TransitionCallbackReturn=TransitionCallbackReturn,
        Publisher=LifecyclePublisher, LifecyclePublisher=LifecyclePublisher,
    )  # fmt: skip
    mods = {
        "rclpy": _module("rclpy", init=lambda args=None: None, try_shutdown=lambda: None, ok=lambda: True),
        "rclpy.node": _module("rclpy.node", Node=Node),
        "rclpy.lifecycle": lifecycle,
        "rclpy.parameter": _module("rclpy.parameter", Parameter=Parameter),
        "rclpy.qos": _module(
            "rclpy.qos",
            QoSProfile=QoSProfile,
            HistoryPolicy=HistoryPolicy,
            ReliabilityPolicy=ReliabilityPolicy,
            DurabilityPolicy=DurabilityPolicy,
        ),  # fmt: skip
        "rclpy.callback_groups": _module(
            "rclpy.callback_groups",
            MutuallyExclusiveCallbackGroup=MutuallyExclusiveCallbackGroup,
            ReentrantCallbackGroup=ReentrantCallbackGroup,
        ),  # fmt: skip
        "rclpy.executors": _module(
            "rclpy.executors", MultiThreadedExecutor=SimExecutor, ExternalShutdownException=ExternalShutdownException
        ),  # fmt: skip
        "rclpy.exceptions": _module("rclpy.exceptions", InvalidTopicNameException=InvalidTopicNameException),
        "rclpy.utilities": _module("rclpy.utilities", remove_ros_args=remove_ros_args),
        "rcl_interfaces": _module("rcl_interfaces"),
        "rcl_interfaces.msg": _module(
            "rcl_interfaces.msg",
            ParameterDescriptor=ParameterDescriptor,
            SetParametersResult=SetParametersResult,
            ParameterEvent=ParameterEvent,
        ),
        "diagnostic_msgs": _module("diagnostic_msgs"),
        "diagnostic_msgs.msg": _module(
            "diagnostic_msgs.msg", DiagnosticArray=DiagnosticArray, DiagnosticStatus=DiagnosticStatus, KeyValue=KeyValue
        ),  # fmt: skip
        "diagnostic_updater": _module(
            "diagnostic_updater", Updater=Updater, DiagnosticStatusWrapper=DiagnosticStatusWrapper
        ),  # fmt: skip
        "rosidl_runtime_py": _module("rosidl_runtime_py"),
        "rosidl_runtime_py.utilities": _module("rosidl_runtime_py.utilities", get_message=get_message),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    import shapemask_ros

    # a fresh import against this stand-in; monkeypatch puts back whatever was there before (usually nothing)
    monkeypatch.setitem(sys.modules, "shapemask_ros.node", None)
    del sys.modules["shapemask_ros.node"]
    monkeypatch.delattr(shapemask_ros, "node", raising=False)
    return importlib.import_module("shapemask_ros.node")
