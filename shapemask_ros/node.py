"""`shapemask_node`: the rclpy lifecycle node, a thin shell over the ROS-free `ros_bridge` package.

The only module that imports rclpy. Everything the node decides -- decoding, syncing, building messages,
counting drops (`ros_bridge.frame_processor`, shared with `bag-eval`), parameters (`ros_bridge.node_params`),
rates and the diagnostics summary (`ros_bridge.node_health`), the input queues (`ros_bridge.inbox`) --
lives there and is tested without ROS; this module only wires it to rclpy. Tests import it with an rclpy
stand-in installed in `sys.modules` (test/support/rclpy_standin.py).

Lifecycle: configure loads the model and creates publishers; activate subscribes and starts processing;
deactivate unsubscribes; cleanup releases the model. `--autostart` does configure + activate at start.
/diagnostics comes from a `diagnostic_updater.Updater` (period: parameter `diagnostic_updater.period`).

3D outputs (docs/geometry.md, docs/ros.md): with `depth_topic` set the node also subscribes to the depth
image and its CameraInfo and publishes `objects3d` (ObjectGeometryArray) and `points` (PointCloud2, built
only while someone subscribes).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import threading
import time
import traceback
from array import array as PyArray
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import DiagnosticStatusWrapper, Updater
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from rosidl_runtime_py.utilities import get_message

from shapemask_ros.config import validate_node_config
from shapemask_ros.ros_bridge.inbox import Inbox
from shapemask_ros.ros_bridge.log_bridge import forward_logging
from shapemask_ros.ros_bridge.node_health import (
    KeyedThrottle,
    NodeStats,
    diagnostic_summary,
    silent_input_message,
)
from shapemask_ros.ros_bridge.node_params import (
    CAMERA_INFO_TYPE,
    DETECTIONS_TYPE,
    IMAGE_TYPE,
    MASKS_TYPE,
    NODE_NAME,
    OBJECTS3D_TYPE,
    OUTPUTS,
    POINTS_TYPE,
    camera_info_topic_for,
    config_from_parameters,
    image_cache_size,
    image_type_for_topic,
    output_topic,
    parameter_specs,
    parse_node_args,
    split_changes,
    uses_depth,
    uses_detector,
)
from shapemask_ros.runtime.bundle import resolve_model_path

_LOG_EVERY_S = 5.0  # processing errors: one log line per kind of failure per period


class RclpyFactory:
    """`MessageFactory` (see shapemask_ros.ros_bridge.factory) for rclpy message classes."""

    def __init__(self) -> None:
        self._classes: dict[str, Any] = {}

    def message_class(self, type_name: str) -> Any:
        """rclpy class of 'pkg/msg/Type' (or 'pkg/Type'), cached."""
        cls = self._classes.get(type_name)
        if cls is None:
            cls = self._classes[type_name] = get_message(type_name)
        return cls

    def make(self, type_name: str, **fields: Any) -> Any:
        """Instantiate a message with the given fields (rclpy checks names and types)."""
        return self.message_class(type_name)(**fields)

    @staticmethod
    def u8(array: np.ndarray) -> PyArray:
        """uint8[] field value: array.array('B') is stored without rclpy's per-element Python check."""
        out = PyArray("B")
        out.frombytes(np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        return out


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """KEEP_LAST QoS of `depth` (at least 1) with 'reliable' or 'best_effort' reliability."""
    reliable = reliability == "reliable"  # validate_node_config allows only reliable | best_effort
    rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)), reliability=rel)


def _logged_transition(fn: Callable[[Any, State], TransitionCallbackReturn]) -> Callable[..., Any]:
    """rclpy turns an exception in a transition callback into ERROR without logging it; log it here."""

    @functools.wraps(fn)
    def wrapper(self: ShapeMaskNode, state: State) -> TransitionCallbackReturn:
        try:
            return fn(self, state)
        except Exception as e:
            self.get_logger().error(
                f"{fn.__name__} (from state {getattr(state, 'label', state)}) raised "
                f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
            )
            return TransitionCallbackReturn.ERROR

    return wrapper


class ShapeMaskNode(LifecycleNode):
    """Lifecycle node: images (+ Detection2DArray) in, InstanceMaskArray / labels / detections out.

    Attribute names avoid rclpy.node.Node's own private ones (`_timers`, `_parameters`, `_callbacks`,
    ...): the executor and `destroy_*` work on those lists."""

    def __init__(
        self, node_name: str = NODE_NAME, *, steady_clock: Callable[[], float] = time.monotonic, **kwargs: Any
    ) -> None:
        super().__init__(node_name, **kwargs)
        self._now = steady_clock  # rates, watchdog and drop logs run on a steady clock, not ROS time
        self._specs = parameter_specs()
        for spec in self._specs:
            descriptor = ParameterDescriptor(name=spec.name, description=spec.description)
            # An empty default has no inferable ROS type (rclpy would make it a byte array).
            value = spec.default if spec.default != () else Parameter.Type[spec.ros_type]
            if isinstance(value, tuple):
                value = list(value)
            try:
                self.declare_parameter(spec.name, value, descriptor)
            except Exception as e:  # a params-file value of the wrong type: fail loudly, by name
                raise RuntimeError(
                    f"parameter '{spec.name}' (type {spec.ros_type.lower()}, default {spec.default!r}): {e}"
                ) from e
        self._cfg = config_from_parameters(self._parameter_values())
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._stats = NodeStats(clock=self._now)
        self._error_log = KeyedThrottle(_LOG_EVERY_S, clock=self._now)
        self._lock = threading.Lock()  # serialises processor calls (processing thread vs parameters)
        self._processor: Any = None
        self._factory: RclpyFactory | None = None
        self._backend = "none"
        self._pubs: dict[str, Any] = {}
        self._subs: list[tuple[Any, str, QoSProfile, str]] = []  # (subscription, type, qos, input key)
        self._input_timers: list[Any] = []  # processing + watchdog (never rclpy's own `_timers`)
        self._last_input: dict[str, float] = {}
        self._last_warn: dict[str, float] = {}
        self._silent: set[str] = set()
        self._activated_at = 0.0
        self._inbox = Inbox(1)
        self._process_group = MutuallyExclusiveCallbackGroup()
        self._input_group = ReentrantCallbackGroup()
        self._detach_logging = forward_logging(self.get_logger())  # core modules' `logging` -> /rosout
        # diagnostic_updater declares `diagnostic_updater.period` (through _on_set_parameters) and owns
        # the /diagnostics publisher and timer for the node's lifetime.
        self._updater = Updater(self, period=1.0)
        self._updater.setHardwareID("none")
        self._updater.add("segmentation", self._diagnose)

    # ---- parameters ---------------------------------------------------------------------------------
    def _parameter_values(self) -> dict[str, Any]:
        # get_parameter_or: an uninitialised statically typed parameter (empty default) gives None.
        return {s.name: self.get_parameter_or(s.name).value for s in self._specs}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # rclpy hands every parameter set on the node to every callback: split_changes ignores the ones
        # that are not NodeConfig fields (use_sim_time, diagnostic_updater.*).
        changes = {p.name: p.value for p in params}
        apply, rejected = split_changes(self._cfg, changes, configured=self._processor is not None)
        if not rejected and apply and self._processor is not None:
            with self._lock:
                try:
                    rejected = dict(self._processor.update(apply) or {})
                except Exception as e:  # the processor validates; never let a bad value escape
                    rejected = {name: f"{type(e).__name__}: {e}" for name in apply}
        if rejected:
            reason = "; ".join(f"{k}: {v}" for k, v in sorted(rejected.items()))
            self.get_logger().warning(f"parameter update rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        if apply:
            self._cfg = dataclasses.replace(self._cfg, **apply)
            self.get_logger().info(f"parameters applied: {apply}")
        return SetParametersResult(successful=True)

    # ---- lifecycle ----------------------------------------------------------------------------------
    @_logged_transition
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        return super().on_configure(state)

    def _configure(self) -> None:
        cfg, bad = validate_node_config(config_from_parameters(self._parameter_values()), {})
        if bad:  # before the model is loaded: fail fast, naming every bad parameter
            raise ValueError(f"invalid parameters: {bad}")
        from shapemask_ros.ros_bridge.frame_processor import FrameProcessor
        from shapemask_ros.runtime.predictor import Predictor

        factory = RclpyFactory()
        masks_cls = factory.message_class(MASKS_TYPE)  # fails clearly if msgs were not built
        model = resolve_model_path(cfg.model_path)
        if not os.path.exists(model) and "://" not in model:
            raise FileNotFoundError(
                f"model bundle not found: {model} (set model_path, or build/install models/real_lite0)"
            )
        self.get_logger().info(f"loading model {model} (backend requested: {cfg.backend})")
        predictor = Predictor.load(model, backend=cfg.backend, engine_cache_dir=cfg.engine_cache_dir or None)
        self._backend = str(getattr(predictor, "backend", "unknown"))
        skipped = dict(getattr(predictor, "skipped_backends", None) or {})
        used = f"inference backend in use: {self._backend} (requested: {cfg.backend}"
        used += f"; skipped: {skipped})" if skipped else ")"
        # two call sites: rclpy refuses to change the severity of one logging call site
        if cfg.backend not in ("auto", self._backend.split(":")[0]):
            self.get_logger().warning(f"{used} -- not the requested backend")
        else:
            self.get_logger().info(used)
        self._processor = FrameProcessor(predictor, cfg, factory, clock=self._now, logger=self.get_logger())
        self._factory, self._cfg = factory, cfg
        self._inbox = Inbox(image_cache_size(cfg))
        self._updater.setHardwareID(self._backend)

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)
        ns = cfg.output_namespace
        wanted = {
            "masks": (MASKS_TYPE, True),
            "labels": (IMAGE_TYPE, cfg.publish_label_image),
            "detections": (DETECTIONS_TYPE, cfg.publish_refined_detections),
            "overlay": (IMAGE_TYPE, cfg.publish_overlay),
            "objects3d": (OBJECTS3D_TYPE, uses_depth(cfg) and cfg.publish_objects3d),
            "points": (POINTS_TYPE, uses_depth(cfg) and cfg.publish_points),
        }
        self._pubs = {}
        for name, (type_name, on) in wanted.items():
            if on:
                cls = masks_cls if name == "masks" else factory.message_class(type_name)
                self._pubs[name] = self.create_lifecycle_publisher(cls, output_topic(ns, name), out_qos)

    @_logged_transition
    def on_activate(self, state: State) -> TransitionCallbackReturn:
        try:
            self._start_inputs()
        except Exception as e:  # e.g. an invalid topic name: say which, stay inactive
            self.get_logger().error(f"activate failed: {type(e).__name__}: {e}")
            self._stop_inputs()
            return TransitionCallbackReturn.FAILURE
        return super().on_activate(state)

    def _start_inputs(self) -> None:
        cfg = self._cfg
        assert self._factory is not None
        image_type = image_type_for_topic(cfg.image_topic)
        inputs = [("image", image_type, cfg.image_topic, cfg.image_qos_reliability, cfg.image_qos_depth)]
        if uses_detector(cfg):
            inputs.append(
                ("detections", DETECTIONS_TYPE, cfg.detections_topic, cfg.detections_qos_reliability,
                 cfg.detections_qos_depth)
            )  # fmt: skip
        if uses_depth(cfg):
            depth_topic = cfg.depth_topic.strip()
            inputs.append(("depth", IMAGE_TYPE, depth_topic, cfg.depth_qos_reliability, cfg.depth_qos_depth))
            inputs.append(
                ("camera_info", CAMERA_INFO_TYPE, camera_info_topic_for(cfg), cfg.camera_info_qos_reliability,
                 cfg.camera_info_qos_depth)
            )  # fmt: skip
        callbacks = {
            "image": lambda msg: self._on_input("image", self._inbox.images, (msg, image_type)),
            "detections": lambda msg: self._on_input("detections", self._inbox.detections, msg),
            "depth": lambda msg: self._on_input("depth", self._inbox.depth, msg),
            "camera_info": lambda msg: self._on_input("camera_info", self._inbox.camera_info, msg),
        }
        for key, type_name, topic, reliability, depth in inputs:
            qos = make_qos(reliability, depth)
            sub = self.create_subscription(
                self._factory.message_class(type_name), topic, callbacks[key], qos, callback_group=self._input_group
            )
            self._subs.append((sub, type_name, qos, key))
        self._activated_at = self._now()
        self._last_input.clear()
        self._input_timers = [
            self.create_timer(0.01, self._process, callback_group=self._process_group),
            self.create_timer(1.0, self._watchdog),
        ]
        mode = f"detections from {cfg.detections_topic}" if uses_detector(cfg) else "self-detection"
        three_d = f"3D from {cfg.depth_topic.strip()} + {camera_info_topic_for(cfg)}" if uses_depth(cfg) else "no 3D"
        self.get_logger().info(f"active: {cfg.image_topic} ({image_type}), {mode}, {three_d}, backend {self._backend}")

    @_logged_transition
    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    @_logged_transition
    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    @_logged_transition
    def on_error(self, state: State) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in a transition from state {state.label}; releasing resources")
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_inputs(self) -> None:
        subs, timers = self._subs, self._input_timers
        self._subs, self._input_timers = [], []
        for sub, *_ in subs:
            self.destroy_subscription(sub)
        for timer in timers:
            self.destroy_timer(timer)

    def _release(self) -> None:
        """Back to 'unconfigured': inputs, publishers, processor and model released."""
        self._stop_inputs()
        pubs, self._pubs = self._pubs, {}
        for pub in pubs.values():
            self.destroy_lifecycle_publisher(pub)
        with self._lock:
            self._processor = None
        self._backend = "none"
        self._updater.setHardwareID("none")

    def destroy_node(self) -> None:
        """Release everything, detach the logging bridge, then rclpy's destroy_node."""
        self._release()
        self._detach_logging()
        super().destroy_node()

    # ---- data path: callbacks only enqueue; one processing thread does the work ----------------------
    def _on_input(self, key: str, queue: Any, item: Any) -> None:
        self._last_input[key] = self._now()
        self._stats.count(key)
        # of CameraInfo only the newest is kept: replacing it is not a drop
        if self._inbox.put(queue, item) and key != "camera_info":
            self._stats.count("drop.inbox_overflow")

    def _guarded(self, where: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn; any exception is counted and logged (throttled per `where`) -- never raised."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            self._report_error(where, e)
            return None

    def _report_error(self, where: str, e: Exception) -> None:
        """Count `error.<where>` (shown on /diagnostics) and log it, throttled per `where`."""
        self._stats.count(f"error.{where}")
        if self._error_log.ready(where):
            total = self._stats.total(f"error.{where}")
            self.get_logger().error(f"{where} failed: {type(e).__name__}: {e} [error.{where} total {total}]")

    def _process(self) -> None:
        inbox = self._inbox.drain()
        if not any(inbox):
            return

        def subscribed(name: str) -> bool:  # build costly outputs only for someone
            pub = self._pubs.get(name)
            return pub is not None and pub.get_subscription_count() > 0

        with self._lock:
            processor = self._processor
            if processor is None:
                return
            for msg in inbox.camera_info:
                self._guarded("add_camera_info", processor.add_camera_info, msg)
            for msg in inbox.depth:
                self._guarded("add_depth", processor.add_depth, msg)
            for msg, type_name in inbox.images:
                self._guarded("add_image", processor.add_image, msg, type_name)
            for msg in inbox.detections:
                self._guarded("add_detections", processor.add_detections, msg)
            result = self._guarded(
                "step", processor.step, want_overlay=subscribed("overlay"), want_points=subscribed("points")
            )
        if result is None:
            return
        self._stats.count("processed")
        self._stats.add_latency(float(getattr(result, "latency_s", 0.0)))
        for name in OUTPUTS:
            msg = getattr(result, name, None)
            pub = self._pubs.get(name)
            if msg is not None and pub is not None:
                self._guarded(f"publish_{name}", pub.publish, msg)

    # ---- health -------------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        now = self._now()
        warn_s = max(self._cfg.no_input_warn_s, 0.5)
        silent: set[str] = set()
        for sub, type_name, qos, key in list(self._subs):
            idle = now - self._last_input.get(key, self._activated_at)
            if idle < warn_s:
                continue
            silent.add(sub.topic_name)
            if now - self._last_warn.get(sub.topic_name, -float("inf")) < max(warn_s, 10.0):
                continue
            self._last_warn[sub.topic_name] = now
            if self.count_publishers(sub.topic_name) > 0:
                infos = self.get_publishers_info_by_topic(sub.topic_name)
                self.get_logger().warning(silent_input_message(sub.topic_name, type_name, qos, infos, idle))
            else:
                self.get_logger().info(f"waiting for a publisher on {sub.topic_name} ({type_name})")
        self._silent = silent

    def _diagnose(self, stat: DiagnosticStatusWrapper) -> DiagnosticStatusWrapper:
        """diagnostic_updater task: backend, rates, latency, drops by reason (see docs/ros.md)."""
        try:
            state = "active" if self._subs else ("inactive" if self._processor is not None else "unconfigured")
            pstats = getattr(self._processor, "stats", None)
            summary = diagnostic_summary(state, self._backend, self._stats.report(), pstats, self._silent)
            level = DiagnosticStatus.OK if summary.level == "OK" else DiagnosticStatus.WARN
            stat.summary(level, summary.message)
            for key, value in summary.values:
                stat.add(key, value)
        except Exception as e:  # an exception here would end up in the executor: report it instead
            stat.summary(DiagnosticStatus.ERROR, f"diagnostics failed: {type(e).__name__}: {e}")
            self._report_error("diagnostics", e)
        return stat


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """`ros2 run shapemask_ros shapemask_node [--autostart] [--ros-args ...]`."""
    from shapemask_ros.utils.threads import limit_blas_threads

    argv = list(sys.argv if argv is None else argv)
    args = parse_node_args(remove_ros_args(args=argv)[1:])
    limit_blas_threads()  # tiny NumPy BLAS calls in the 3D stage; see utils/threads.py
    rclpy.init(args=argv)
    node = None
    try:
        node = ShapeMaskNode()
        if args.autostart:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
            else:
                node.get_logger().error("autostart: configure failed; staying unconfigured")
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            try:
                node.destroy_node()
            except Exception as e:  # the context may already be shut down by the signal handler
                print(f"{NODE_NAME}: cleanup after shutdown: {e}", file=sys.stderr)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
