"""`shapemask_node`: the rclpy lifecycle node (a thin shell over `ros_bridge.FrameProcessor`).

The only module that imports rclpy, and only inside functions, so `import shapemask_ros.node` works
without ROS (the helpers below are tested that way). Everything the node decides -- decoding, syncing,
building messages, counting drops -- lives in the ROS-free frame processor that `bag-eval` also runs.

Lifecycle: configure loads the model and creates publishers; activate subscribes and starts processing;
deactivate unsubscribes; cleanup releases the model. `--autostart` does configure + activate at start.

3D outputs (docs/geometry.md, docs/ros.md): with `depth_topic` set the node also subscribes to the depth
image and its CameraInfo and publishes `objects3d` (ObjectGeometryArray) and `points` (PointCloud2, built
only while someone subscribes). The cloud bytes come from geometry/pointcloud.py (the layout
sensor_msgs_py.point_cloud2.create_cloud writes), so bag-eval writes exactly what the node publishes.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import inspect
import io
import math
import os
import sys
import threading
import time
import tokenize
import typing
from array import array as PyArray
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shapemask_ros.config import NodeConfig, merge

NODE_NAME = "shapemask_node"
# Parameters that define ROS entities or the loaded model: applying them needs a new configure.
RESTART_PARAMS: frozenset[str] = frozenset(
    {
        "model_path",
        "backend",
        "engine_cache_dir",
        "image_topic",
        "detections_topic",
        "self_detect",
        "image_qos_reliability",
        "image_qos_depth",
        "detections_qos_reliability",
        "detections_qos_depth",
        "publish_label_image",
        "publish_refined_detections",
        "publish_overlay",
        "output_namespace",
        "depth_topic",
        "camera_info_topic",
        "depth_qos_reliability",
        "depth_qos_depth",
        "camera_info_qos_reliability",
        "camera_info_qos_depth",
        "publish_objects3d",
        "publish_points",
    }
)
RESTART_REASON = "requires reconfigure (deactivate, cleanup, configure)"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
DETECTIONS_TYPE = "vision_msgs/msg/Detection2DArray"
MASKS_TYPE = "shapemask_ros/msg/InstanceMaskArray"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
OBJECTS3D_TYPE = "shapemask_ros/msg/ObjectGeometryArray"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
# result field -> publisher key (= topic name under output_namespace)
OUTPUTS = ("masks", "labels", "detections", "overlay", "objects3d", "points")
_SCALAR_ROS_TYPES = {bool: "BOOL", int: "INTEGER", float: "DOUBLE", str: "STRING"}


# --------------------------------------------------------------------------------------------------
# ROS-free helpers (tested without rclpy)
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter derived from a NodeConfig field."""

    name: str
    default: Any  # the dataclass default (tuples stay tuples)
    ros_type: str  # rclpy.Parameter.Type member name: BOOL, INTEGER, DOUBLE, STRING, STRING_ARRAY, ...
    description: str


def field_comments(cls: type) -> dict[str, str]:
    """Trailing `# comment` of each field line in `cls`'s source ({} when the source is unavailable)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    line_tokens: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.NEWLINE, tokenize.NL):
            significant = [t for t in line_tokens if t.type not in (tokenize.INDENT, tokenize.DEDENT)]
            comments = [t.string for t in significant if t.type == tokenize.COMMENT]
            if (
                len(significant) >= 3
                and significant[0].type == tokenize.NAME
                and significant[1].string == ":"
                and comments
            ):
                out[significant[0].string] = comments[-1].lstrip("#").strip()
            line_tokens = []
        else:
            line_tokens.append(tok)
    return out


def _ros_type(tp: Any, name: str) -> str:
    if tp in _SCALAR_ROS_TYPES:
        return _SCALAR_ROS_TYPES[tp]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if inner in _SCALAR_ROS_TYPES:
            return f"{_SCALAR_ROS_TYPES[inner]}_ARRAY"
    raise TypeError(f"NodeConfig.{name}: type {tp!r} has no ROS parameter equivalent")


def parameter_specs(cls: type = NodeConfig) -> list[ParamSpec]:
    """One ParamSpec per dataclass field: names, defaults and types come from the dataclass only."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    specs = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        restart = " [requires reconfigure]" if f.name in RESTART_PARAMS else ""
        desc = (comments.get(f.name) or f.name.replace("_", " ")) + restart
        specs.append(ParamSpec(f.name, default, _ros_type(hints[f.name], f.name), desc))
    return specs


def config_from_parameters(values: Mapping[str, Any], base: NodeConfig | None = None) -> NodeConfig:
    """NodeConfig from ROS parameter values (None = not set -> default); ValueError on bad types/keys.

    Arrays arrive as list or array.array; string arrays drop "" entries, because `[""]` is the only
    way to clear a string array from YAML or `ros2 param set` (an empty list has no ROS type).
    """
    hints = typing.get_type_hints(NodeConfig)
    overrides: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, PyArray, np.ndarray)):
            value = [v for v in list(value) if not (isinstance(v, str) and v == "")]
        elif (
            name in hints and hints[name] is float and isinstance(value, int) and not isinstance(value, bool)
        ):
            value = float(value)
        overrides[name] = value
    return merge(base or NodeConfig(), overrides)


def split_changes(
    current: NodeConfig, changes: Mapping[str, Any], configured: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a parameter update into (values to apply, name -> rejection reason).

    Values are converted to NodeConfig types; unchanged values are dropped (so `ros2 param load` of a
    whole file does not fail on restart-only parameters that it leaves as they are).
    """
    try:
        new = config_from_parameters(changes, base=current)
    except ValueError as e:
        return {}, {name: str(e) for name in changes}
    apply: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    for name in changes:
        value = getattr(new, name)
        if value == getattr(current, name):
            continue
        if configured and name in RESTART_PARAMS:
            rejected[name] = RESTART_REASON
        else:
            apply[name] = value
    return apply, rejected


def image_type_for_topic(topic: str) -> str:
    """Message type of the image subscription: `.../compressed` topics carry CompressedImage."""
    return COMPRESSED_TYPE if topic.rstrip("/").endswith("/compressed") else IMAGE_TYPE


def uses_detector(cfg: NodeConfig) -> bool:
    """True when boxes come from an external detector topic (False = self-detection mode)."""
    return bool(cfg.detections_topic.strip()) and not cfg.self_detect


def uses_depth(cfg: NodeConfig) -> bool:
    """True when the 3D outputs are on (a depth topic is set)."""
    return bool(cfg.depth_topic.strip())


def camera_info_topic_for(cfg: NodeConfig) -> str:
    """`camera_info_topic`, or the image_transport convention: `camera_info` next to the depth topic
    (/camera/aligned_depth_to_color/image_raw -> /camera/aligned_depth_to_color/camera_info)."""
    if cfg.camera_info_topic.strip():
        return cfg.camera_info_topic.strip()
    head, sep, _ = cfg.depth_topic.strip().rstrip("/").rpartition("/")
    return f"{head}{sep}camera_info"


def output_topic(namespace: str, name: str) -> str:
    """`<namespace>/<name>`; an empty namespace leaves the topic relative to the node's namespace."""
    ns = namespace.strip().rstrip("/")
    return f"{ns}/{name}" if ns else name


def reliability_name(value: str) -> str:
    """Normalise a QoS reliability parameter to 'reliable' | 'best_effort' (ValueError otherwise)."""
    v = value.strip().lower().replace("-", "_")
    if v not in ("reliable", "best_effort"):
        raise ValueError(f"QoS reliability must be 'reliable' or 'best_effort', got {value!r}")
    return v


def image_cache_size(cfg: NodeConfig) -> int:
    """Images kept while waiting for their detections: ceil(rate * latency) + 2 (1 in self-detection)."""
    if not uses_detector(cfg):
        return 1
    return int(math.ceil(max(cfg.expected_rate_hz, 0.0) * max(cfg.detector_latency_s, 0.0))) + 2


def resolve_model_path(model_path: str) -> str:
    """`model_path`, or the demo bundle: <share>/shapemask_ros/models/demo, else ./models/demo (source)."""
    if model_path:
        return os.path.expanduser(model_path)
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return os.path.join(get_package_share_directory("shapemask_ros"), "models", "demo")
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return str(Path(__file__).resolve().parents[1] / "models" / "demo")


def _policy_name(policy: Any) -> str:
    return str(getattr(policy, "name", policy)).lower()


def qos_text(qos: Any) -> str:
    """Short QoS description (reliability, durability, history/depth) of an rclpy QoSProfile-like object."""
    return (
        f"reliability={_policy_name(qos.reliability)} durability={_policy_name(qos.durability)} "
        f"history={_policy_name(qos.history)} depth={qos.depth}"
    )


def silent_input_message(
    topic: str, our_type: str, our_qos: Any, publishers: list[Any], silent_s: float
) -> str:
    """Warning for 'publishers exist but nothing arrives': names both QoS profiles and type mismatches."""
    lines = [
        f"{len(publishers)} publisher(s) on {topic} but no message for {silent_s:.1f} s. "
        f"Likely a QoS mismatch (a best_effort publisher never reaches a reliable subscriber) "
        f"or a type mismatch. Subscriber ({our_type}): {qos_text(our_qos)}"
    ]
    for info in publishers:
        ptype = str(info.topic_type)
        hint = ""
        if ptype.replace("/msg/", "/") != our_type.replace("/msg/", "/"):
            hint = f"  <-- TYPE MISMATCH (we expect {our_type})"
        elif (
            _policy_name(info.qos_profile.reliability) == "best_effort"
            and _policy_name(our_qos.reliability) == "reliable"
        ):
            hint = "  <-- best_effort publisher vs reliable subscriber: set *_qos_reliability to best_effort"
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
        items = (
            {k: v for k, v in vars(stats).items() if not k.startswith("_")}
            if hasattr(stats, "__dict__")
            else {}
        )
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


class RclpyFactory:
    """`MessageFactory` (see shapemask_ros.ros_bridge.factory) for rclpy message classes."""

    def __init__(self) -> None:
        from rosidl_runtime_py.utilities import get_message  # ROS only; resolved lazily

        self._get_message = get_message
        self._classes: dict[str, Any] = {}

    def message_class(self, type_name: str) -> Any:
        """rclpy class of 'pkg/msg/Type' (or 'pkg/Type'), cached."""
        cls = self._classes.get(type_name)
        if cls is None:
            cls = self._classes[type_name] = self._get_message(type_name)
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


class Drained(typing.NamedTuple):
    """Everything the callbacks queued since the last drain, oldest first."""

    images: list[tuple[Any, str]]
    detections: list[Any]
    depth: list[Any]
    camera_info: list[Any]


class _Inbox:
    """What subscription callbacks hand to the processing thread: bounded queues, newest kept."""

    def __init__(self, image_capacity: int, detection_capacity: int = 16) -> None:
        self._lock = threading.Lock()
        self.images: collections.deque[tuple[Any, str]] = collections.deque(maxlen=max(1, image_capacity))
        self.detections: collections.deque[Any] = collections.deque(maxlen=max(1, detection_capacity))
        # depth waits for its frame like images do; of CameraInfo only the newest matters
        self.depth: collections.deque[Any] = collections.deque(maxlen=max(1, image_capacity))
        self.camera_info: collections.deque[Any] = collections.deque(maxlen=1)

    def put(self, queue: collections.deque, item: Any) -> bool:
        """Append; returns True when the oldest entry was pushed out."""
        with self._lock:
            full = len(queue) == queue.maxlen
            queue.append(item)
            return full

    def drain(self) -> Drained:
        """Take everything queued (one lock, so a frame's messages are not split)."""
        with self._lock:
            out = Drained(list(self.images), list(self.detections), list(self.depth), list(self.camera_info))
            for queue in (self.images, self.detections, self.depth, self.camera_info):
                queue.clear()
            return out


# --------------------------------------------------------------------------------------------------
# The rclpy node (class built on first use so that this module imports without ROS)
# --------------------------------------------------------------------------------------------------
_NODE_CLASS: type | None = None


def node_class() -> type:
    """The `ShapeMaskNode` class (an rclpy.lifecycle.Node subclass); ImportError without rclpy."""
    global _NODE_CLASS
    if _NODE_CLASS is None:
        _NODE_CLASS = _build_node_class()
    return _NODE_CLASS


def _build_node_class() -> type:  # noqa: C901 - one class body, kept in one place
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
    from rclpy.lifecycle import Node as LifecycleNode
    from rclpy.lifecycle import State, TransitionCallbackReturn
    from rclpy.parameter import Parameter
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    def make_qos(reliability: str, depth: int) -> QoSProfile:
        reliable = reliability_name(reliability) == "reliable"
        rel = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, int(depth)), reliability=rel)

    class ShapeMaskNode(LifecycleNode):
        """Lifecycle node: images (+ Detection2DArray) in, InstanceMaskArray / labels / detections out."""

        def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
            super().__init__(node_name, **kwargs)
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
                        f"parameter '{spec.name}' (type {spec.ros_type.lower()}, "
                        f"default {spec.default!r}): {e}"
                    ) from e
            self._cfg = config_from_parameters(self._parameter_values())
            self.add_on_set_parameters_callback(self._on_set_parameters)

            self._stats = NodeStats()
            self._lock = threading.Lock()  # serialises processor calls (processing thread vs parameters)
            self._processor: Any = None
            self._factory: RclpyFactory | None = None
            self._backend = "none"
            self._pubs: dict[str, Any] = {}
            self._subs: list[tuple[Any, str, QoSProfile, str]] = []  # (subscription, type, qos, input key)
            self._last_input: dict[str, float] = {}
            self._last_warn: dict[str, float] = {}
            self._silent: set[str] = set()
            self._activated_at = 0.0
            self._inbox = _Inbox(1)
            self._timers: list[Any] = []
            self._diag_timer: Any = None
            self._diag_pub: Any = None
            self._process_group = MutuallyExclusiveCallbackGroup()
            self._input_group = ReentrantCallbackGroup()

        # ---- parameters -----------------------------------------------------------------------------
        def _parameter_values(self) -> dict[str, Any]:
            # get_parameter_or: an uninitialised statically typed parameter (empty default) gives None.
            return {s.name: self.get_parameter_or(s.name).value for s in self._specs}

        def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
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

        # ---- lifecycle ------------------------------------------------------------------------------
        def on_configure(self, state: State) -> TransitionCallbackReturn:
            try:
                cfg = config_from_parameters(self._parameter_values())
                for rel in (
                    cfg.image_qos_reliability,
                    cfg.detections_qos_reliability,
                    cfg.depth_qos_reliability,
                    cfg.camera_info_qos_reliability,
                ):
                    reliability_name(rel)
                from shapemask_ros.ros_bridge.frame_processor import FrameProcessor
                from shapemask_ros.runtime.predictor import Predictor

                factory = RclpyFactory()
                masks_cls = factory.message_class(MASKS_TYPE)  # fails clearly if msgs were not built
                model = resolve_model_path(cfg.model_path)
                if not os.path.exists(model) and "://" not in model:
                    raise FileNotFoundError(
                        f"model bundle not found: {model} (set model_path, or build/install models/demo)"
                    )
                self.get_logger().info(f"loading model {model} (backend requested: {cfg.backend})")
                predictor = Predictor.load(
                    model, backend=cfg.backend, engine_cache_dir=cfg.engine_cache_dir or None
                )
                self._backend = str(getattr(predictor, "backend", "unknown"))
                skipped = dict(getattr(predictor, "skipped_backends", None) or {})
                used = f"inference backend in use: {self._backend} (requested: {cfg.backend}"
                used += f"; skipped: {skipped})" if skipped else ")"
                # two call sites: rclpy refuses to change the severity of one logging call site
                if cfg.backend not in ("auto", self._backend.split(":")[0]):
                    self.get_logger().warning(f"{used} -- not the requested backend")
                else:
                    self.get_logger().info(used)
                self._processor = FrameProcessor(predictor, cfg, factory, logger=self.get_logger())
                self._factory, self._cfg = factory, cfg
                self._inbox = _Inbox(image_cache_size(cfg))

                out_qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE
                )
                ns = cfg.output_namespace
                self._pubs = {
                    "masks": self.create_lifecycle_publisher(masks_cls, output_topic(ns, "masks"), out_qos)
                }
                if cfg.publish_label_image:
                    image_cls = factory.message_class(IMAGE_TYPE)
                    self._pubs["labels"] = self.create_lifecycle_publisher(
                        image_cls, output_topic(ns, "labels"), out_qos
                    )
                if cfg.publish_refined_detections:
                    self._pubs["detections"] = self.create_lifecycle_publisher(
                        factory.message_class(DETECTIONS_TYPE), output_topic(ns, "detections"), out_qos
                    )
                if cfg.publish_overlay:
                    self._pubs["overlay"] = self.create_lifecycle_publisher(
                        factory.message_class(IMAGE_TYPE), output_topic(ns, "overlay"), out_qos
                    )
                if uses_depth(cfg) and cfg.publish_objects3d:
                    self._pubs["objects3d"] = self.create_lifecycle_publisher(
                        factory.message_class(OBJECTS3D_TYPE), output_topic(ns, "objects3d"), out_qos
                    )
                if uses_depth(cfg) and cfg.publish_points:
                    self._pubs["points"] = self.create_lifecycle_publisher(
                        factory.message_class(POINTS_TYPE), output_topic(ns, "points"), out_qos
                    )
                self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
                self._diag_timer = self.create_timer(1.0, self._publish_diagnostics)
            except Exception as e:
                self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
                self._release()
                return TransitionCallbackReturn.FAILURE
            return super().on_configure(state)

        def on_activate(self, state: State) -> TransitionCallbackReturn:
            cfg = self._cfg
            image_type = image_type_for_topic(cfg.image_topic)
            image_qos = make_qos(cfg.image_qos_reliability, cfg.image_qos_depth)
            assert self._factory is not None
            sub = self.create_subscription(
                self._factory.message_class(image_type),
                cfg.image_topic,
                lambda msg: self._on_image(msg, image_type),
                image_qos,
                callback_group=self._input_group,
            )
            self._subs = [(sub, image_type, image_qos, "image")]
            if uses_detector(cfg):
                det_qos = make_qos(cfg.detections_qos_reliability, cfg.detections_qos_depth)
                det_sub = self.create_subscription(
                    self._factory.message_class(DETECTIONS_TYPE),
                    cfg.detections_topic,
                    self._on_detections,
                    det_qos,
                    callback_group=self._input_group,
                )
                self._subs.append((det_sub, DETECTIONS_TYPE, det_qos, "detections"))
            if uses_depth(cfg):
                depth_qos = make_qos(cfg.depth_qos_reliability, cfg.depth_qos_depth)
                depth_sub = self.create_subscription(
                    self._factory.message_class(IMAGE_TYPE),
                    cfg.depth_topic.strip(),
                    self._on_depth,
                    depth_qos,
                    callback_group=self._input_group,
                )
                info_qos = make_qos(cfg.camera_info_qos_reliability, cfg.camera_info_qos_depth)
                info_sub = self.create_subscription(
                    self._factory.message_class(CAMERA_INFO_TYPE),
                    camera_info_topic_for(cfg),
                    self._on_camera_info,
                    info_qos,
                    callback_group=self._input_group,
                )
                self._subs.append((depth_sub, IMAGE_TYPE, depth_qos, "depth"))
                self._subs.append((info_sub, CAMERA_INFO_TYPE, info_qos, "camera_info"))
            self._activated_at = time.monotonic()
            self._last_input.clear()
            self._timers = [
                self.create_timer(0.01, self._process, callback_group=self._process_group),
                self.create_timer(1.0, self._watchdog),
            ]
            mode = f"detections from {cfg.detections_topic}" if uses_detector(cfg) else "self-detection"
            depth = (
                f"3D from {cfg.depth_topic.strip()} + {camera_info_topic_for(cfg)}"
                if uses_depth(cfg)
                else "no 3D"
            )
            self.get_logger().info(
                f"active: {cfg.image_topic} ({image_type}), {mode}, {depth}, backend {self._backend}"
            )
            return super().on_activate(state)

        def on_deactivate(self, state: State) -> TransitionCallbackReturn:
            self._stop_inputs()
            return super().on_deactivate(state)

        def on_cleanup(self, state: State) -> TransitionCallbackReturn:
            self._release()
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state: State) -> TransitionCallbackReturn:
            self._release()
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state: State) -> TransitionCallbackReturn:
            self.get_logger().error(f"error in state {state.label}; releasing resources")
            self._release()
            return TransitionCallbackReturn.SUCCESS

        def _stop_inputs(self) -> None:
            for sub, *_ in self._subs:
                self.destroy_subscription(sub)
            for timer in self._timers:
                self.destroy_timer(timer)
            self._subs, self._timers = [], []

        def _release(self) -> None:
            """Back to 'unconfigured': inputs, publishers, timers, processor and model released."""
            self._stop_inputs()
            for pub in self._pubs.values():
                self.destroy_lifecycle_publisher(pub)
            self._pubs = {}
            if self._diag_timer is not None:
                self.destroy_timer(self._diag_timer)
            if self._diag_pub is not None:
                self.destroy_publisher(self._diag_pub)
            self._diag_timer = self._diag_pub = None
            with self._lock:
                self._processor = None
            self._backend = "none"

        # ---- data path: callbacks only enqueue; one processing thread does the work ------------------
        def _on_image(self, msg: Any, type_name: str) -> None:
            self._last_input["image"] = time.monotonic()
            self._stats.count("image")
            if self._inbox.put(self._inbox.images, (msg, type_name)):
                self._stats.count("drop.inbox_overflow")

        def _on_detections(self, msg: Any) -> None:
            self._last_input["detections"] = time.monotonic()
            self._stats.count("detections")
            if self._inbox.put(self._inbox.detections, msg):
                self._stats.count("drop.inbox_overflow")

        def _on_depth(self, msg: Any) -> None:
            self._last_input["depth"] = time.monotonic()
            self._stats.count("depth")
            if self._inbox.put(self._inbox.depth, msg):
                self._stats.count("drop.inbox_overflow")

        def _on_camera_info(self, msg: Any) -> None:
            self._last_input["camera_info"] = time.monotonic()
            self._stats.count("camera_info")
            self._inbox.put(self._inbox.camera_info, msg)  # only the newest is kept: not a drop

        def _guarded(self, where: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            """Run fn; any exception is counted and logged (throttled) -- a bad message never kills us."""
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                self._stats.count(f"error.{where}")
                self.get_logger().error(f"{where} failed: {type(e).__name__}: {e}", throttle_duration_sec=5.0)
                return None

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
                    "step",
                    processor.step,
                    want_overlay=subscribed("overlay"),
                    want_points=subscribed("points"),
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

        # ---- health -----------------------------------------------------------------------------------
        def _watchdog(self) -> None:
            now = time.monotonic()
            warn_s = max(self._cfg.no_input_warn_s, 0.5)
            silent: set[str] = set()
            for sub, type_name, qos, key in self._subs:
                idle = now - self._last_input.get(key, self._activated_at)
                if idle < warn_s:
                    continue
                silent.add(sub.topic_name)
                if now - self._last_warn.get(sub.topic_name, -math.inf) < max(warn_s, 10.0):
                    continue
                self._last_warn[sub.topic_name] = now
                if self.count_publishers(sub.topic_name) > 0:
                    infos = self.get_publishers_info_by_topic(sub.topic_name)
                    self.get_logger().warning(
                        silent_input_message(sub.topic_name, type_name, qos, infos, idle)
                    )
                else:
                    self.get_logger().info(f"waiting for a publisher on {sub.topic_name} ({type_name})")
            self._silent = silent

        def _publish_diagnostics(self) -> None:
            try:
                values = self._stats.report()
                values.update(
                    {
                        f"processor.{k}": v
                        for k, v in processor_counters(getattr(self._processor, "stats", None)).items()
                    }
                )
                errors = sum(
                    v for k, v in values.items() if k.startswith("error.") and k.endswith("_rate_hz")
                )
                state = "active" if self._subs else "inactive"
                level, message = DiagnosticStatus.OK, f"{state}, backend {self._backend}"
                if errors:
                    level, message = DiagnosticStatus.WARN, f"{message}; errors in the last second"
                if self._silent:
                    level = DiagnosticStatus.WARN
                    message = f"{message}; no input on {', '.join(sorted(self._silent))}"
                pstats = getattr(self._processor, "stats", None)
                geometry_error = str(getattr(pstats, "geometry_error", "") or "")
                if geometry_error:  # masks still go out; whoever waits for 3D should see why it is missing
                    level = DiagnosticStatus.WARN
                    message = f"{message}; no 3D output: {geometry_error}"
                kv = [KeyValue(key="backend", value=self._backend)]
                kv += [
                    KeyValue(key=k, value=f"{v:.3f}".rstrip("0").rstrip("."))
                    for k, v in sorted(values.items())
                ]
                status = DiagnosticStatus(
                    level=level,
                    name=f"{self.get_name()}: segmentation",
                    message=message,
                    hardware_id=self._backend,
                    values=kv,
                )
                array = DiagnosticArray(statuses=[status])
                array.header.stamp = self.get_clock().now().to_msg()
                self._diag_pub.publish(array)
            except Exception as e:
                self.get_logger().error(
                    f"diagnostics failed: {type(e).__name__}: {e}", throttle_duration_sec=30.0
                )

    return ShapeMaskNode


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------
def _truthy(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Node arguments (ROS arguments already removed): `--autostart [true|false]`."""
    parser = argparse.ArgumentParser(prog=NODE_NAME, description="ShapeMask instance segmentation node")
    parser.add_argument(
        "--autostart",
        nargs="?",
        const=True,
        default=False,
        type=_truthy,
        help="configure and activate on start (default: wait for lifecycle transitions)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`ros2 run shapemask_ros shapemask_node [--autostart] [--ros-args ...]`."""
    argv = list(sys.argv if argv is None else argv)
    try:
        import rclpy
        from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
        from rclpy.lifecycle import TransitionCallbackReturn
        from rclpy.utilities import remove_ros_args
    except ImportError as e:
        raise SystemExit(
            f"{NODE_NAME} needs ROS 2 (rclpy), which is not importable here ({e}). Source your ROS 2 "
            "installation first (e.g. `source /opt/ros/jazzy/setup.bash` and your workspace's "
            "install/setup.bash); see docs/ros.md. The ROS-free tools work without it: `shapemask --help`."
        ) from None
    from shapemask_ros.utils.threads import limit_blas_threads

    args = parse_args(remove_ros_args(args=argv)[1:])
    limit_blas_threads()  # tiny NumPy BLAS calls in the 3D stage; see utils/threads.py
    rclpy.init(args=argv)
    node = None
    try:
        node = node_class()()
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
                node._release()
                node.destroy_node()
            except Exception as e:  # the context may already be shut down by the signal handler
                print(f"{NODE_NAME}: cleanup after shutdown: {e}", file=sys.stderr)
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
