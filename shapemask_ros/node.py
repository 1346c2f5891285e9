"""`shapemask_node`: the rclpy lifecycle node, a thin shell over the ROS-free `ros_bridge` package.

The only module that imports rclpy. Everything the node decides -- decoding, syncing, building messages,
counting drops (`ros_bridge.frame_processor`, shared with `bag-eval`), parameters (`ros_bridge.node_params`),
rates and the diagnostics summary (`ros_bridge.node_health`), the input queues (`ros_bridge.inbox`) --
lives there and is tested without ROS; this module only wires it to rclpy. It is tested as a separate process
on real rclpy (PyPI wheels) by the lane in test/ros2 (`make test-ros`).

Data path: inputs are subscribed raw and read, outputs serialised and published as bytes, with the rosbags
typestore `bag-eval` uses (`ros_bridge.wire`): rclpy's message classes are only the topics' types here, and
the frame processor sees the same message objects as in bag evaluation.

Lifecycle: configure loads the model and creates publishers; activate subscribes and starts processing;
deactivate unsubscribes; cleanup releases the model. `--autostart` does configure + activate at start.
A change_state request that is not valid in the current state is answered `success=False` (Jazzy's rclpy
would raise it out of the executor and end the process).
/diagnostics comes from a `diagnostic_updater.Updater` (period: parameter `diagnostic_updater.period`, read
once at start as diagnostic_updater does; a later change is rejected instead of silently ignored).

Threads: a single-threaded executor runs the callbacks that enqueue (subscriptions), services and the
watchdog; one processing thread of the node's own wakes as soon as input arrives (no polling timer), so
latency is the model's plus the transport's. Processing and the watchdog run on wall/steady time, never on
ROS time: with `use_sim_time` and no `/clock` the node keeps working and says that /clock is missing.

3D outputs (docs/geometry.md, docs/ros.md): with `depth_topic` set the node also subscribes to the depth
image and its CameraInfo and publishes `objects3d` (ObjectGeometryArray) and `points` (PointCloud2, built
only while someone subscribes).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from diagnostic_updater import DiagnosticStatusWrapper, Updater
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args

from shapemask_ros.config.node_config import validate_node_config
from shapemask_ros.ros_bridge.in_flight import SecondFramePolicy, TakeOrder
from shapemask_ros.ros_bridge.inbox import Inbox
from shapemask_ros.ros_bridge.log_bridge import forward_logging
from shapemask_ros.ros_bridge.msg_types import CAMERA_INFO_TYPE, DETECTION_ARRAY_TYPE, IMAGE_TYPE, MASK_ARRAY_TYPE
from shapemask_ros.ros_bridge.node_health import (
    KeyedThrottle,
    NodeStats,
    diagnostic_summary,
    policy_name,
    silent_input_message,
)
from shapemask_ros.ros_bridge.node_params import (
    NODE_NAME,
    OUTPUTS,
    camera_info_topic_for,
    config_from_parameters,
    image_cache_size,
    image_type_for_topic,
    output_topic,
    parameter_specs,
    parse_node_args,
    published_outputs,
    split_changes,
    uses_depth,
    uses_detector,
)
from shapemask_ros.ros_bridge.transport import SequenceGaps, choose_reliability, silent_input_kind
from shapemask_ros.ros_bridge.wire import WireCodec
from shapemask_ros.runtime.bundle import resolve_model_path

_LOG_EVERY_S = 5.0  # processing errors: one log line per kind of failure per period
# read once by diagnostic_updater.Updater at construction; changing them later would be silently ignored
_UPDATER_PARAMS = frozenset({"diagnostic_updater.period", "diagnostic_updater.use_fqn"})


def import_message(type_name: str) -> Any:
    """The Python class of 'pkg/msg/Type' (or 'pkg/Type') from its generated package, without
    rosidl_runtime_py (not on PyPI). A missing package is named in the error."""
    parts = type_name.split("/")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[1] != "msg") or not all(parts):
        raise ValueError(f"message type must be 'pkg/msg/Type' or 'pkg/Type', got {type_name!r}")
    package, name = parts[0], parts[-1]
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError as e:
        raise ImportError(
            f"message package '{package}' is not importable ({e}); build it or source the workspace that has it",
            name=package,
        ) from e
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"package '{package}' has no message '{name}'", name=package) from None


def make_qos(reliability: str, depth: int) -> QoSProfile:
    """KEEP_LAST QoS of `depth` (at least 1) with 'reliable' or 'best_effort' reliability (resolve 'auto'
    with `choose_reliability` first)."""
    reliable = reliability == "reliable"
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


@dataclasses.dataclass
class _Input:
    """One subscribed input: what was asked for, the live subscription and its transport counters."""

    key: str  # image | detections | depth | camera_info
    type_name: str
    topic: str
    requested: str  # auto | reliable | best_effort
    depth: int
    enqueue: Callable[[Any], bool]  # True when the inbox pushed out its oldest entry
    sub: Any = None
    qos: QoSProfile | None = None
    reliability: str = ""  # what `sub` uses now
    gaps: SequenceGaps = dataclasses.field(default_factory=SequenceGaps)
    # one group per input: its callbacks run one at a time, in order (sequence gaps must be real), also
    # if the node is spun by a multi-threaded executor (e.g. in a component container)
    group: MutuallyExclusiveCallbackGroup = dataclasses.field(default_factory=MutuallyExclusiveCallbackGroup)
    arrivals: int = 0
    last_arrival: float | None = None  # steady clock
    publishers: int = 0  # matched publishers, refreshed by the watchdog (a graph query per message is costly)
    incompatible_qos: int = 0
    lost_events: int = 0


class ShapeMaskNode(LifecycleNode):
    """Lifecycle node: images (+ Detection2DArray) in, InstanceMaskArray / labels / detections out.

    Attribute names avoid rclpy.node.Node's own private ones (`_timers`, `_parameters`, `_callbacks`,
    ...): the executor and `destroy_*` work on those lists."""

    def __init__(
        self, node_name: str = NODE_NAME, *, steady_clock: Callable[[], float] = time.monotonic, **kwargs: Any
    ) -> None:
        super().__init__(node_name, **kwargs)
        self._now = steady_clock  # rates, watchdog and drop logs run on a steady clock, not ROS time
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)  # timers that must fire without /clock
        self._guard_change_state()
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
        self._updater_ready = False
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._stats = NodeStats(clock=self._now)
        self._error_log = KeyedThrottle(_LOG_EVERY_S, clock=self._now)
        self._lock = threading.Lock()  # serialises processor calls (processing thread vs parameters)
        self._processor: Any = None
        self._codec: WireCodec | None = None  # inputs are read and outputs written as CDR bytes (wire.py)
        self._backend = "none"
        self._pubs: dict[str, Any] = {}
        self._inputs: list[_Input] = []
        self._watchdog_timer: Any = None
        self._last_warn: dict[str, float] = {}
        self._silent: set[str] = set()
        self._activated_at = 0.0
        self._inbox = Inbox(1)
        self._wake = threading.Event()
        self._workers: list[threading.Thread] = []
        self._frames_in_flight = 1  # processing threads (frames_in_flight, when the backend gains from 2)
        self._in_flight = 0  # frames in processor.run now (under self._lock)
        self._left_untaken = False  # inputs went into the processor but no frame was taken (under self._lock)
        self._second_frame = SecondFramePolicy()  # a second frame starts only when the camera outruns the model
        self._take_order = TakeOrder()  # results are published in the order their frames were taken
        self._running = False
        self._detach_logging = forward_logging(self.get_logger())  # core modules' `logging` -> /rosout
        # diagnostic_updater declares `diagnostic_updater.period` (through _on_set_parameters) and owns
        # the /diagnostics publisher and timer for the node's lifetime.
        self._updater = Updater(self, period=1.0)
        self._updater.setHardwareID("none")
        self._updater.add("segmentation", self._diagnose)
        self._updater_ready = True
        # the health timer runs on steady time: under use_sim_time without /clock it still fires
        self._health_timer = self.create_timer(1.0, self._health, clock=self._steady)
        self._sim_clock_warned = False

    def _guard_change_state(self) -> None:
        """Answer an invalid change_state request with success=False instead of raising.

        Jazzy's rclpy (7.1.x) raises RCLError "Transition is not registered" out of the service handler,
        which ends `executor.spin()` and the process, and the client gets no reply; Kilted answers
        success=False itself. The wrapper keeps the behaviour the same on both."""
        service: Any = getattr(self, "_service_change_state", None)
        handler = getattr(service, "callback", None)
        if service is None or handler is None:  # an rclpy without this attribute: nothing to guard
            return

        def guarded(request: Any, response: Any) -> Any:
            try:
                return handler(request, response)
            except Exception as e:
                state = self._state_machine.current_state[1]
                self.get_logger().warning(
                    f"change_state rejected: transition {request.transition.id} '{request.transition.label}' "
                    f"is not valid in state '{state}' ({type(e).__name__}: {e})"
                )
                response.success = False
                return response

        service.callback = guarded

    # ---- parameters ---------------------------------------------------------------------------------
    def _parameter_values(self) -> dict[str, Any]:
        # get_parameter_or: an uninitialised statically typed parameter (empty default) gives None.
        return {s.name: self.get_parameter_or(s.name).value for s in self._specs}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # rclpy hands every parameter set on the node to every callback: split_changes ignores the ones
        # that are not NodeConfig fields (use_sim_time, diagnostic_updater.*).
        late = sorted(p.name for p in params if p.name in _UPDATER_PARAMS) if self._updater_ready else []
        if late:
            reason = "; ".join(
                f"{name}: read once when the node starts (diagnostic_updater does not watch it); set it at launch"
                for name in late
            )
            self.get_logger().warning(f"parameter update rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
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
        from shapemask_ros.runtime.predictor import load_predictor

        codec = WireCodec()
        # the rclpy classes only name the topics' types; fails clearly if the msgs were not built
        masks_cls = import_message(MASK_ARRAY_TYPE)
        self.get_logger().info(f"loading model {resolve_model_path(cfg.model_path)} (backend requested: {cfg.backend})")
        # load_predictor's ONNX Runtime threads sleep between runs: cores a robot shares with its planner
        # are not burnt waiting (at 10 Hz 45-49 % of two cores instead of 73-74 %, same latency; docs/ros.md)
        predictor = load_predictor(cfg)
        self._backend = str(getattr(predictor, "backend", "unknown"))
        skipped = dict(getattr(predictor, "skipped_backends", None) or {})
        used = f"inference backend in use: {self._backend} (requested: {cfg.backend}"
        used += f"; skipped: {skipped})" if skipped else ")"
        # two call sites: rclpy refuses to change the severity of one logging call site
        if cfg.backend not in ("auto", self._backend.split(":")[0]):
            self.get_logger().warning(f"{used} -- not the requested backend")
        else:
            self.get_logger().info(used)
        concurrent = self._concurrent_predictor(cfg, load_predictor) if cfg.frames_in_flight > 1 else None
        self._frames_in_flight = 2 if concurrent is not None else 1
        self._processor = FrameProcessor(
            predictor, cfg, codec.factory, clock=self._now, logger=self.get_logger(), concurrent_predictor=concurrent
        )
        if uses_depth(cfg):  # compile the 3D kernel now, not in the first frame with depth
            from shapemask_ros.geometry.objects3d import prepare_objects3d

            self.get_logger().info(prepare_objects3d())
        self._codec, self._cfg = codec, cfg
        self._inbox = Inbox(image_cache_size(cfg))
        self._updater.setHardwareID(self._backend)

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)
        ns = cfg.output_namespace
        self._pubs = {}
        for name, type_name in published_outputs(cfg).items():
            codec.check(type_name)
            cls = masks_cls if name == "masks" else import_message(type_name)
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
        assert self._codec is not None
        image_type = image_type_for_topic(cfg.image_topic)
        callbacks = {
            "image": lambda msg: self._inbox.put(self._inbox.images, (msg, image_type)),
            "detections": lambda msg: self._inbox.put(self._inbox.detections, msg),
            "depth": lambda msg: self._inbox.put(self._inbox.depth, msg),
            "camera_info": lambda msg: self._inbox.put(self._inbox.camera_info, msg),
        }
        specs = [("image", image_type, cfg.image_topic, cfg.image_qos_reliability, cfg.image_qos_depth)]
        if uses_detector(cfg):
            specs.append(
                ("detections", DETECTION_ARRAY_TYPE, cfg.detections_topic, cfg.detections_qos_reliability,
                 cfg.detections_qos_depth)
            )  # fmt: skip
        if uses_depth(cfg):
            depth_topic = cfg.depth_topic.strip()
            specs.append(("depth", IMAGE_TYPE, depth_topic, cfg.depth_qos_reliability, cfg.depth_qos_depth))
            specs.append(
                ("camera_info", CAMERA_INFO_TYPE, camera_info_topic_for(cfg), cfg.camera_info_qos_reliability,
                 cfg.camera_info_qos_depth)
            )  # fmt: skip
        self._activated_at = self._now()
        self._inputs = [_Input(k, t, topic, rel, depth, callbacks[k]) for k, t, topic, rel, depth in specs]
        for inp in self._inputs:
            self._subscribe(inp)
        self._start_worker()
        self._watchdog_timer = self.create_timer(1.0, self._watchdog, clock=self._steady)
        mode = f"detections from {cfg.detections_topic}" if uses_detector(cfg) else "self-detection"
        three_d = f"3D from {cfg.depth_topic.strip()} + {camera_info_topic_for(cfg)}" if uses_depth(cfg) else "no 3D"
        qos = ", ".join(f"{i.key} {i.reliability}" for i in self._inputs)
        self.get_logger().info(
            f"active: {cfg.image_topic} ({image_type}), {mode}, {three_d}, backend {self._backend}; QoS {qos}"
        )

    def _offered_reliabilities(self, topic: str) -> list[str]:
        infos = self.get_publishers_info_by_topic(topic)
        return [policy_name(i.qos_profile.reliability) for i in infos]

    def _subscribe(self, inp: _Input) -> None:
        """(Re)create the subscription of `inp` with the reliability its publishers call for."""
        assert self._codec is not None
        self._codec.check(inp.type_name)
        reliability = choose_reliability(inp.requested, self._offered_reliabilities(inp.topic))
        if inp.sub is not None:
            self.destroy_subscription(inp.sub)
            inp.sub = None
        qos = make_qos(reliability, inp.depth)
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, inp=inp: self._on_incompatible_qos(inp, info),
            message_lost=lambda info, inp=inp: self._on_message_lost(inp, info),
        )
        inp.sub = self.create_subscription(
            import_message(inp.type_name),
            inp.topic,
            lambda raw, info, inp=inp: self._on_input(inp, raw, info),
            qos,
            callback_group=inp.group,
            event_callbacks=events,
            raw=True,  # CDR bytes read with the typestore (wire.py): 3x cheaper than rclpy's classes
        )
        inp.qos, inp.reliability = qos, reliability
        inp.publishers = inp.sub.get_publisher_count()
        inp.gaps.last = None  # a new reader: sequence numbers restart their comparison

    def _on_incompatible_qos(self, inp: _Input, info: Any) -> None:
        inp.incompatible_qos += int(getattr(info, "total_count_change", 1) or 1)
        self._stats.count(f"incompatible_qos.{inp.key}")

    def _on_message_lost(self, inp: _Input, info: Any) -> None:
        n = int(getattr(info, "total_count_change", 1) or 0)
        inp.lost_events += n
        self._stats.count(f"lost.transport.{inp.key}", n)

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
        inputs, timer = self._inputs, self._watchdog_timer
        self._inputs, self._watchdog_timer = [], None
        for inp in inputs:
            if inp.sub is not None:
                self.destroy_subscription(inp.sub)
        if timer is not None:
            self.destroy_timer(timer)
        self._stop_worker()

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

    # ---- data path: callbacks only enqueue; the processing thread does the work ----------------------
    def _on_input(self, inp: _Input, raw: bytes, info: Any = None) -> None:
        inp.last_arrival = self._now()
        inp.arrivals += 1
        if inp.key == "image":
            self._second_frame.image_arrived(inp.last_arrival)
        self._stats.count(inp.key)
        sequence = info.get("publication_sequence_number") if isinstance(info, dict) else None
        if sequence is not None:
            missing = inp.gaps.observe(int(sequence), inp.publishers)
            if missing:
                self._stats.count(f"lost.sequence_gap.{inp.key}", missing)
        assert self._codec is not None
        try:
            msg = self._codec.decode(raw, inp.type_name)
        except Exception as e:  # bytes that are not this type (a publisher's bug): a counted, logged drop
            self._stats.count(f"drop.undecodable.{inp.key}")
            if self._error_log.ready(f"undecodable.{inp.key}"):
                total = self._stats.total(f"drop.undecodable.{inp.key}")
                self.get_logger().warning(
                    f"{inp.topic}: a message that is not a valid {inp.type_name} was dropped ({e}) "
                    f"[drop.undecodable.{inp.key} total {total}]"
                )
            return
        # of CameraInfo only the newest is kept: replacing it is not a drop
        if inp.enqueue(msg) and inp.key != "camera_info":
            self._stats.count("drop.inbox_overflow")
        self._wake.set()

    def _concurrent_predictor(self, cfg: Any, load: Callable[..., Any]) -> Any:
        """The model on one-thread ONNX Runtime sessions for a second frame in flight, or None where that
        does not pay: two one-thread runs side by side beat one two-thread run after another on a CPU
        (docs/benchmarks.md, "paired mirrored pass"); other backends (a GPU, TensorFlow) would only queue."""
        if not self._backend.startswith("onnxruntime:CPU") or (os.cpu_count() or 1) < 2:
            self.get_logger().info(
                f"frames_in_flight {cfg.frames_in_flight}: one frame at a time on {self._backend} "
                f"({os.cpu_count()} cores); a second frame pays only with ONNX Runtime on a multi-core CPU"
            )
            return None
        predictor = load(cfg, intra_op_num_threads=1)
        self.get_logger().info(
            "frames_in_flight 2: when a frame arrives while another is in the network, it runs beside it on "
            "one-thread sessions"
        )
        return predictor

    def _start_worker(self) -> None:
        self._running = True
        self._wake.clear()
        self._in_flight = 0
        self._left_untaken = False
        self._take_order.reset()
        self._workers = [
            threading.Thread(target=self._work, name=f"shapemask_processing_{k}", daemon=True)
            for k in range(self._frames_in_flight)
        ]
        for worker in self._workers:
            worker.start()

    def _stop_worker(self) -> None:
        self._running = False
        self._wake.set()
        self._take_order.close()
        workers, self._workers = self._workers, []
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout=30.0)

    def _work(self) -> None:
        """Processing thread (one per frame in flight): wake on input (or every 50 ms, for frames waiting on
        depth), process."""
        while self._running:
            self._wake.wait(0.05)
            self._wake.clear()
            if not self._running:
                break
            try:
                self._process()
            except Exception as e:  # _process guards its parts; this keeps the thread alive regardless
                self._report_error("process", e)

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
        if not any(inbox) and not self._left_untaken and not self._processor_holds_frame():
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
            if self._in_flight and not self._second_frame.second_frame_pays():
                # below capacity: the frame waits for the one in the network (lower latency); the thread that
                # finishes must look at the processor although the inbox it drains is empty
                self._left_untaken = True
                return
            self._left_untaken = False
            job = self._guarded(
                "step",
                processor.take,
                want_overlay=subscribed("overlay"),
                want_points=subscribed("points"),
                want_labels=subscribed("labels"),
                want_detections=subscribed("detections"),
            )
            if job is None:
                return
            concurrent = self._in_flight > 0  # another frame is in the network: run beside it
            self._in_flight += 1
            ticket = self._take_order.ticket()
        started = time.monotonic()
        try:
            result = self._guarded("step", processor.run, job, concurrent=concurrent)  # outside the lock
        finally:
            with self._lock:
                self._in_flight -= 1
                if not concurrent and not self._in_flight:
                    self._second_frame.processed_alone(time.monotonic() - started)
        self._wake.set()  # more than one frame may have become ready: look again at once
        with self._take_order.turn(ticket) as ours:  # frames taken earlier go out first
            if result is None or not ours:
                return
            self._stats.count("processed")
            if concurrent:
                self._stats.count("processed_beside_another")
            self._stats.add_latency(float(getattr(result, "latency_s", 0.0)))
            for name in OUTPUTS:
                msg = getattr(result, name, None)
                pub = self._pubs.get(name)
                if msg is not None and pub is not None:
                    self._guarded(f"publish_{name}", self._publish, pub, msg)

    def _publish(self, pub: Any, msg: Any) -> None:
        assert self._codec is not None
        pub.publish(self._codec.encode(msg))  # rclpy publishes bytes as they are

    def _processor_holds_frame(self) -> bool:
        # a frame waiting for its depth image is re-examined on the 50 ms wake-up
        return bool(getattr(self._processor, "holds_frame", False))

    # ---- health -------------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        """Every second (steady time): follow publishers' QoS for 'auto' inputs; say why an input is silent."""
        now = self._now()
        warn_s = max(self._cfg.no_input_warn_s, 0.5)
        silent: set[str] = set()
        for inp in list(self._inputs):
            inp.publishers = inp.sub.get_publisher_count() if inp.sub is not None else 0
            if inp.requested == "auto":
                wanted = choose_reliability("auto", self._offered_reliabilities(inp.topic))
                if wanted != inp.reliability:
                    self.get_logger().info(
                        f"{inp.topic}: publishers now call for {wanted} (was {inp.reliability}); re-subscribing"
                    )
                    self._guarded("resubscribe", self._subscribe, inp)
            idle = now - (self._activated_at if inp.last_arrival is None else inp.last_arrival)
            if idle < warn_s:
                continue
            silent.add(inp.topic)
            if now - self._last_warn.get(inp.topic, -float("inf")) < max(warn_s, 10.0):
                continue
            self._last_warn[inp.topic] = now
            if self.count_publishers(inp.topic):
                self.get_logger().warning(self._silence_text(inp, idle))
            else:
                self.get_logger().info(f"waiting for a publisher on {inp.topic} ({inp.type_name})")
        self._silent = silent

    def _silence_text(self, inp: _Input, idle: float) -> str:
        infos = self.get_publishers_info_by_topic(inp.topic)
        kind = silent_input_kind(len(infos), inp.incompatible_qos, inp.arrivals)
        if kind == "stopped":
            return (
                f"{inp.topic}: no message for {idle:.1f} s after {inp.arrivals} arrived; {len(infos)} publisher(s) "
                f"still matched (publisher paused, or messages lost in transport: "
                f"{inp.gaps.lost + inp.lost_events} counted lost so far)"
            )
        assert inp.qos is not None
        return silent_input_message(inp.topic, inp.type_name, inp.qos, infos, idle, kind)

    def _health(self) -> None:
        """Steady-time check independent of activation: sim time without /clock stalls ROS-time timers."""
        use_sim = bool(self.get_parameter_or("use_sim_time", Parameter("use_sim_time", value=False)).value)
        if not use_sim:
            self._sim_clock_warned = False
            return
        if self.get_clock().now().nanoseconds == 0 and not self._sim_clock_warned:
            self._sim_clock_warned = True
            self.get_logger().warning(
                "use_sim_time is true but no /clock message has arrived: processing goes on (it runs on steady "
                "time), but output stamps follow the inputs and /diagnostics (diagnostic_updater, on ROS "
                "time) is paused until /clock is published"
            )
            self._stats.count("warning.no_clock")

    def _diagnose(self, stat: DiagnosticStatusWrapper) -> DiagnosticStatusWrapper:
        """diagnostic_updater task: backend, rates, latency, drops by reason (see docs/ros.md)."""
        try:
            state = "active" if self._inputs else ("inactive" if self._processor is not None else "unconfigured")
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
        # One executor thread is enough (callbacks only enqueue; processing has its own thread) and much
        # faster than rclpy's MultiThreadedExecutor, whose Python thread pool contends for the GIL with the
        # processing thread: measured with `node_bench` at 10 Hz, 640x480, 20 boxes: 300 of 300 frames
        # back, stamp -> mask p50 70 ms, against 254 of 300 (21 lost in the reader queue, 25 superseded)
        # and p50 88 ms with the multi-threaded one (docs/ros.md, "Latency").
        executor = SingleThreadedExecutor()
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
