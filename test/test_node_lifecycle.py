"""The rclpy node class driven through its lifecycle against a stand-in for rclpy (ROS is not installed).

The stand-in implements only the rclpy API the node uses, with the behaviour read from rclpy's Humble and
Jazzy sources: statically typed parameters (`Parameter.Type` as the declared value = uninitialised),
`get_parameter_or` giving None for those, lifecycle `trigger_*` calling `on_*` synchronously, lifecycle
publishers that are inactive until the base `on_activate` runs, and loggers that refuse to change the
severity or filters of one call site. Messages are rosbags typestore classes (same field names as
rclpy's), the FrameProcessor is the real one and the predictor is the shared fake.
"""

from __future__ import annotations

import enum
import sys
import types
from typing import Any

import numpy as np
import pytest

from shapemask_ros import node as node_mod
from shapemask_ros.geometry.pointcloud import pointcloud_to_arrays
from shapemask_ros.ros_bridge.typestore import normalize_type_name

try:
    from test_ros_helpers import (
        TS,
        FakePredictor,
        detection,
        detection_array,
        header,
        random_rgb,
        rgb_image_msg,
    )
except ImportError:
    from test.test_ros_helpers import (
        TS,
        FakePredictor,
        detection,
        detection_array,
        header,
        random_rgb,
        rgb_image_msg,
    )
try:
    from test_ros_frame_processor_depth import camera_info, depth_msg
except ImportError:
    from test.test_ros_frame_processor_depth import camera_info, depth_msg


# ---- the rclpy stand-in ----------------------------------------------------------------------------------
class ParamType(enum.Enum):
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
    def of(cls, v: Any) -> ParamType:
        if v is None:
            return cls.NOT_SET
        for t, name in ((bool, "BOOL"), (int, "INTEGER"), (float, "DOUBLE"), (str, "STRING")):
            if isinstance(v, t):
                return cls[name]
        if isinstance(v, (list, tuple)):
            if all(isinstance(x, bytes) for x in v):  # rclpy: an empty list is a BYTE_ARRAY
                return cls.BYTE_ARRAY
            if all(isinstance(x, str) for x in v):
                return cls.STRING_ARRAY
        raise TypeError(v)


class Parameter:
    Type = ParamType

    def __init__(self, name: str, type_: ParamType | None = None, value: Any = None) -> None:
        self.name, self.value = name, value
        self.type_ = type_ if type_ is not None else ParamType.of(value)


class SetParametersResult:
    def __init__(self, successful: bool = False, reason: str = "") -> None:
        self.successful, self.reason = successful, reason


class Msg:
    """Plain message stand-in (ParameterDescriptor, DiagnosticStatus, ...)."""

    OK, WARN, ERROR = b"\x00", b"\x01", b"\x02"

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


Reliability = enum.IntEnum("Reliability", "SYSTEM_DEFAULT RELIABLE BEST_EFFORT")
History = enum.IntEnum("History", "SYSTEM_DEFAULT KEEP_LAST KEEP_ALL")
Durability = enum.IntEnum("Durability", "SYSTEM_DEFAULT TRANSIENT_LOCAL VOLATILE")


class QoSProfile:
    """rclpy.qos.QoSProfile: unspecified policies keep their defaults (durability volatile)."""

    def __init__(
        self, *, history: History, depth: int, reliability: Reliability = Reliability.RELIABLE
    ) -> None:
        self.history, self.depth, self.reliability = history, depth, reliability
        self.durability = Durability.VOLATILE


class TCR(enum.Enum):
    SUCCESS = 97
    FAILURE = 98
    ERROR = 99


class Logger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []
        self._sites: dict[tuple[str, int], tuple[str, dict]] = {}

    def _log(self, severity: str, msg: str, **kw: Any) -> None:
        frame = sys._getframe(2)
        site = (frame.f_code.co_filename, frame.f_lineno)
        if site in self._sites and self._sites[site] != (severity, kw):
            raise ValueError("Logger severity cannot be changed between calls.")  # as rclpy does
        self._sites[site] = (severity, kw)
        self.records.append((severity, msg))

    def info(self, msg: str, **kw: Any) -> None:
        self._log("info", msg, **kw)

    def warning(self, msg: str, **kw: Any) -> None:
        self._log("warning", msg, **kw)

    def error(self, msg: str, **kw: Any) -> None:
        self._log("error", msg, **kw)

    def text(self, severity: str) -> str:
        return "\n".join(m for s, m in self.records if s == severity)


class Publisher:
    def __init__(self, msg_type: Any, topic: str, qos: Any, lifecycle: bool) -> None:
        self.msg_type, self.topic_name, self.qos = msg_type, topic, qos
        self.enabled = not lifecycle
        self.sent: list[Any] = []
        self.subscribers = 0
        self.destroyed = False

    def publish(self, msg: Any) -> None:
        if self.destroyed:
            raise RuntimeError("publisher destroyed")
        if self.enabled:  # rclpy's LifecyclePublisher drops (and warns) while inactive
            self.sent.append(msg)

    def get_subscription_count(self) -> int:
        return self.subscribers


class LifecycleNode:
    def __init__(
        self, node_name: str, *, parameter_overrides: list[Parameter] | None = None, **_: Any
    ) -> None:
        self._name = node_name
        self._overrides = {p.name: p for p in parameter_overrides or []}
        self._params: dict[str, Parameter] = {}
        self._callbacks: list[Any] = []
        self._logger = Logger()
        self.pubs: list[Publisher] = []
        self.subs: list[Any] = []
        self.timers: list[Any] = []
        self.publishers_on: dict[str, list[Any]] = {}

    # parameters
    def declare_parameter(self, name: str, value: Any = None, descriptor: Any = None) -> Parameter:
        declared = value if isinstance(value, ParamType) else ParamType.of(value)
        if isinstance(value, ParamType):
            value = None
        if name in self._overrides:
            value = self._overrides[name].value
        if value is not None and ParamType.of(value) != declared:
            raise TypeError(f"Wrong parameter type, expected '{declared}' got '{ParamType.of(value)}'")
        self._params[name] = Parameter(name, declared if value is None else None, value)
        return self._params[name]

    def get_parameter_or(self, name: str, alternative: Parameter | None = None) -> Parameter:
        p = self._params.get(name)
        if p is None or p.type_ == ParamType.NOT_SET:
            return alternative or Parameter(name, ParamType.NOT_SET)
        return p

    def add_on_set_parameters_callback(self, cb: Any) -> None:
        self._callbacks.append(cb)

    def set_parameters(self, params: list[Parameter]) -> list[SetParametersResult]:
        results = []
        for p in params:
            result = SetParametersResult(successful=True)
            for cb in self._callbacks:
                result = cb([p])
                if not result.successful:
                    break
            if result.successful:
                self._params[p.name] = p
            results.append(result)
        return results

    # entities
    def get_logger(self) -> Logger:
        return self._logger

    def get_name(self) -> str:
        return self._name

    def get_clock(self) -> Any:
        return types.SimpleNamespace(now=lambda: types.SimpleNamespace(to_msg=lambda: "stamp"))

    def create_lifecycle_publisher(self, msg_type: Any, topic: str, qos: Any) -> Publisher:
        pub = Publisher(msg_type, topic, qos, lifecycle=True)
        self.pubs.append(pub)
        return pub

    def create_publisher(self, msg_type: Any, topic: str, qos: Any) -> Publisher:
        pub = Publisher(msg_type, topic, qos, lifecycle=False)
        self.pubs.append(pub)
        return pub

    def destroy_lifecycle_publisher(self, pub: Publisher) -> None:
        self.destroy_publisher(pub)

    def destroy_publisher(self, pub: Publisher) -> None:
        pub.destroyed = True
        self.pubs.remove(pub)

    def create_subscription(
        self, msg_type: Any, topic: str, cb: Any, qos: Any, callback_group: Any = None
    ) -> Any:
        sub = types.SimpleNamespace(msg_type=msg_type, topic_name=topic, callback=cb, qos=qos)
        self.subs.append(sub)
        return sub

    def destroy_subscription(self, sub: Any) -> None:
        self.subs.remove(sub)

    def create_timer(self, period: float, cb: Any, callback_group: Any = None) -> Any:
        timer = types.SimpleNamespace(period=period, callback=cb)
        self.timers.append(timer)
        return timer

    def destroy_timer(self, timer: Any) -> None:
        self.timers.remove(timer)

    def count_publishers(self, topic: str) -> int:
        return len(self.publishers_on.get(topic, []))

    def get_publishers_info_by_topic(self, topic: str) -> list[Any]:
        return self.publishers_on.get(topic, [])

    # lifecycle
    def _transition(self, name: str) -> TCR:
        return getattr(self, f"on_{name}")(Msg(label=name))

    def trigger_configure(self) -> TCR:
        return self._transition("configure")

    def trigger_activate(self) -> TCR:
        return self._transition("activate")

    def trigger_deactivate(self) -> TCR:
        return self._transition("deactivate")

    def trigger_cleanup(self) -> TCR:
        return self._transition("cleanup")

    def on_configure(self, state: Any) -> TCR:
        return TCR.SUCCESS

    def on_activate(self, state: Any) -> TCR:
        for pub in self.pubs:
            pub.enabled = True
        return TCR.SUCCESS

    def on_deactivate(self, state: Any) -> TCR:
        for pub in self.pubs:
            if pub.topic_name != "/diagnostics":
                pub.enabled = False
        return TCR.SUCCESS

    def destroy_node(self) -> None:
        pass


def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture()
def ros(monkeypatch):
    def get_message(type_name: str) -> Any:
        return TS.types[normalize_type_name(type_name)]

    qos = _module("rclpy.qos", QoSProfile=QoSProfile, HistoryPolicy=History, ReliabilityPolicy=Reliability)
    mods = {
        "rclpy": _module("rclpy"),
        "rclpy.lifecycle": _module(
            "rclpy.lifecycle", Node=LifecycleNode, State=Msg, TransitionCallbackReturn=TCR
        ),
        "rclpy.parameter": _module("rclpy.parameter", Parameter=Parameter),
        "rclpy.qos": qos,
        "rclpy.callback_groups": _module(
            "rclpy.callback_groups", MutuallyExclusiveCallbackGroup=object, ReentrantCallbackGroup=object
        ),
        "rcl_interfaces": _module("rcl_interfaces"),
        "rcl_interfaces.msg": _module(
            "rcl_interfaces.msg", ParameterDescriptor=Msg, SetParametersResult=SetParametersResult
        ),
        "diagnostic_msgs": _module("diagnostic_msgs"),
        "diagnostic_msgs.msg": _module(
            "diagnostic_msgs.msg",
            DiagnosticArray=lambda **kw: Msg(header=Msg(stamp=None), **kw),
            DiagnosticStatus=Msg,
            KeyValue=Msg,
        ),
        "rosidl_runtime_py": _module("rosidl_runtime_py"),
        "rosidl_runtime_py.utilities": _module("rosidl_runtime_py.utilities", get_message=get_message),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(node_mod, "_NODE_CLASS", None)
    predictor = FakePredictor(class_names=["person", "cup"])
    predictor.mask_threshold = 0.5  # like the real Predictor, so updates are range-checked
    monkeypatch.setattr(
        "shapemask_ros.runtime.predictor.Predictor.load", staticmethod(lambda path, **kw: predictor)
    )
    return predictor


H, W = 48, 64


def _node(tmp_path, **overrides: Any) -> Any:
    params = [
        Parameter("model_path", value=str(tmp_path)),
        *(Parameter(k, value=v) for k, v in overrides.items()),
    ]
    return node_mod.node_class()(parameter_overrides=params)


def _frame(sec: int) -> tuple[Any, Any]:
    hdr = header(sec, 0, "cam")
    img = rgb_image_msg(random_rgb(H, W, sec), hdr)
    return img, detection_array([detection((8, 6, 30, 26), "cup", 0.9, det_id="a", hdr=hdr)], hdr)


def _topics(node: Any) -> dict[str, Publisher]:
    return {p.topic_name: p for p in node.pubs}


def _process(node: Any) -> None:
    (timer,) = [t for t in node.timers if t.period < 0.1]
    timer.callback()


# ---- tests ----------------------------------------------------------------------------------------------
def test_parameters_declared_from_nodeconfig_with_overrides(ros, tmp_path):
    node = _node(tmp_path, image_qos_depth=3, class_filter=["cup"])
    assert node._cfg.image_qos_depth == 3 and node._cfg.class_filter == ("cup",)
    assert node_mod.config_from_parameters(node._parameter_values()).model_path == str(tmp_path)
    # the empty-list default is declared as a typed, unset string array (not rclpy's byte-array guess)
    fresh = _node(tmp_path)
    assert fresh._params["class_filter"].type_ == ParamType.STRING_ARRAY and fresh._cfg.class_filter == ()
    with pytest.raises(RuntimeError, match="parameter 'expected_rate_hz' .*double"):
        _node(tmp_path, expected_rate_hz=30)  # an int in a params file for a double parameter


def test_configure_activate_process_publish(ros, tmp_path):
    node = _node(tmp_path)
    assert node.trigger_configure() == TCR.SUCCESS
    topics = _topics(node)
    assert set(topics) == {"/shapemask/masks", "/shapemask/labels", "/shapemask/detections",
                           "/shapemask/overlay", "/diagnostics"}  # fmt: skip
    assert "inference backend in use: fake" in node.get_logger().text("info")
    assert node.trigger_activate() == TCR.SUCCESS
    subs = {s.topic_name: s for s in node.subs}
    assert set(subs) == {"/camera/image_raw", "/detections"}
    assert subs["/camera/image_raw"].qos.reliability == Reliability.BEST_EFFORT
    assert (
        subs["/camera/image_raw"].qos.depth == 2
        and subs["/detections"].qos.reliability == Reliability.RELIABLE
    )

    img, dets = _frame(1)
    subs["/camera/image_raw"].callback(img)
    subs["/detections"].callback(dets)
    _process(node)
    (masks,) = topics["/shapemask/masks"].sent
    assert len(masks.instances) == 1 and masks.header.stamp.sec == 1
    assert len(topics["/shapemask/labels"].sent) == 1 and len(topics["/shapemask/detections"].sent) == 1
    assert topics["/shapemask/overlay"].sent == [], "overlay only built when someone subscribes"

    topics["/shapemask/overlay"].subscribers = 1
    img, dets = _frame(2)
    subs["/camera/image_raw"].callback(img)
    subs["/detections"].callback(dets)
    _process(node)
    assert (
        len(topics["/shapemask/overlay"].sent) == 1
        and topics["/shapemask/overlay"].sent[0].encoding == "rgb8"
    )


def test_bad_messages_are_counted_and_the_node_keeps_working(ros, tmp_path):
    node = _node(tmp_path, detections_topic="")
    node.trigger_configure()
    node.trigger_activate()
    (sub,) = node.subs
    assert sub.msg_type is TS.types["sensor_msgs/msg/Image"]
    sub.callback(object())  # no header at all
    _process(node)
    broken, _ = _frame(3)
    broken.data = np.zeros(5, np.uint8)  # too short for 48x64 rgb8
    sub.callback(broken)
    _process(node)
    assert _topics(node)["/shapemask/masks"].sent == []
    good, _ = _frame(4)
    sub.callback(good)
    _process(node)
    assert len(_topics(node)["/shapemask/masks"].sent) == 1
    dropped = node._processor.stats.dropped
    assert dropped["bad_header"] == 1 and sum(dropped.values()) >= 2


def test_runtime_parameters_applied_or_rejected(ros, tmp_path):
    node = _node(tmp_path)
    (ok,) = node.set_parameters([Parameter("image_topic", value="/other")])  # unconfigured: accepted
    assert ok.successful and node._cfg.image_topic == "/other"
    node.trigger_configure()
    node.trigger_activate()
    (res,) = node.set_parameters([Parameter("score_threshold", value=0.7)])
    assert res.successful and node._processor.cfg.score_threshold == 0.7 and node._cfg.score_threshold == 0.7
    (res,) = node.set_parameters([Parameter("image_topic", value="/cam2")])
    assert not res.successful and "requires reconfigure (deactivate, cleanup, configure)" in res.reason
    (res,) = node.set_parameters([Parameter("mask_threshold", value=5.0)])
    assert not res.successful and "mask_threshold" in res.reason and node._processor.cfg.mask_threshold == 0.5
    assert node.trigger_deactivate() == TCR.SUCCESS and node.subs == []
    assert node.trigger_cleanup() == TCR.SUCCESS
    assert node._processor is None and node.pubs == [] and node.timers == []
    (res,) = node.set_parameters([Parameter("image_topic", value="/cam2/compressed")])
    assert res.successful
    node.trigger_configure()
    node.trigger_activate()
    assert {s.topic_name: s.msg_type for s in node.subs}["/cam2/compressed"] is TS.types[
        "sensor_msgs/msg/CompressedImage"
    ]


def test_configure_fails_cleanly_without_a_model(ros, tmp_path):
    node = _node(tmp_path, model_path=str(tmp_path / "missing"))
    assert node.trigger_configure() == TCR.FAILURE
    assert "model bundle not found" in node.get_logger().text("error")
    assert node.pubs == [] and node._processor is None


def test_watchdog_names_qos_and_diagnostics_report(ros, tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(node_mod.time, "monotonic", lambda: clock[0])
    node = _node(tmp_path, no_input_warn_s=2.0)
    node.trigger_configure()
    node.trigger_activate()
    qos = QoSProfile(history=History.KEEP_LAST, depth=1, reliability=Reliability.BEST_EFFORT)
    info = {
        "node_name": "yolo",
        "node_namespace": "/",
        "topic_type": node_mod.DETECTIONS_TYPE,
        "qos_profile": qos,
    }
    node.publishers_on["/detections"] = [types.SimpleNamespace(**info)]
    watchdog = next(t for t in node.timers if t.callback == node._watchdog)
    clock[0] += 1.0
    watchdog.callback()
    assert node.get_logger().text("warning") == ""
    clock[0] += 2.0
    watchdog.callback()
    warning = node.get_logger().text("warning")
    assert "/detections" in warning and "reliability=best_effort" in warning and "/yolo" in warning
    assert "/camera/image_raw" not in warning, "no publisher there: not a QoS problem"
    watchdog.callback()  # throttled: no second warning right away
    assert node.get_logger().text("warning").count("publisher(s) on /detections") == 1

    node._subs[0][0].callback(object())  # one bad image
    _process(node)
    diag_timer = next(t for t in node.timers if t.callback == node._publish_diagnostics)
    diag_timer.callback()
    (array,) = _topics(node)["/diagnostics"].sent
    (status,) = array.statuses
    values = {kv.key: kv.value for kv in status.values}
    assert values["backend"] == "fake" and status.hardware_id == "fake"
    assert values["image_total"] == "1" and values["processor.dropped.bad_header"] == "1"
    assert status.level == Msg.WARN and "no input on /camera/image_raw, /detections" in status.message


# ---- 3D: depth + CameraInfo in, objects3d + points out ---------------------------------------------------
def _depth(sec: int, shape: tuple[int, int] = (H, W)) -> Any:
    return depth_msg(np.full(shape, 800, np.uint16), sec, frame="cam")


def test_depth_inputs_and_3d_outputs(ros, tmp_path):
    node = _node(tmp_path, depth_topic="/cam/aligned_depth_to_color/image_raw", depth_qos_depth=3)
    assert node.trigger_configure() == TCR.SUCCESS
    topics = _topics(node)
    assert topics["/shapemask/objects3d"].msg_type is TS.types["shapemask_ros/msg/ObjectGeometryArray"]
    assert topics["/shapemask/points"].msg_type is TS.types["sensor_msgs/msg/PointCloud2"]
    node.trigger_activate()
    subs = {s.topic_name: s for s in node.subs}
    depth_sub = subs["/cam/aligned_depth_to_color/image_raw"]
    info_sub = subs["/cam/aligned_depth_to_color/camera_info"]  # image_transport convention
    assert depth_sub.msg_type is TS.types["sensor_msgs/msg/Image"] and depth_sub.qos.depth == 3
    assert depth_sub.qos.reliability == Reliability.BEST_EFFORT
    assert info_sub.msg_type is TS.types["sensor_msgs/msg/CameraInfo"]
    assert "3D from /cam/aligned_depth_to_color/image_raw" in node.get_logger().text("info")

    info_sub.callback(camera_info(frame="cam"))
    depth1 = _depth(1)
    depth_sub.callback(depth1)
    img, dets = _frame(1)
    subs["/camera/image_raw"].callback(img)
    subs["/detections"].callback(dets)
    _process(node)
    (masks,) = topics["/shapemask/masks"].sent
    (objects,) = topics["/shapemask/objects3d"].sent
    assert objects.header is depth1.header and len(objects.objects) == len(masks.instances) == 1
    assert objects.objects[0].centroid.z == pytest.approx(0.8, abs=1e-3) and objects.objects[0].status == "ok"
    assert topics["/shapemask/points"].sent == [], "the cloud is built only when someone subscribes"

    topics["/shapemask/points"].subscribers = 1
    img, dets = _frame(2)
    for sub, msg in ((depth_sub, _depth(2)), (subs["/camera/image_raw"], img), (subs["/detections"], dets)):
        sub.callback(msg)
    _process(node)
    (cloud,) = topics["/shapemask/points"].sent
    points = pointcloud_to_arrays(cloud)
    assert cloud.header.stamp.sec == 2 and len(points["z"]) == objects.objects[0].num_inliers
    np.testing.assert_allclose(points["z"], 0.8, atol=1e-6)
    assert set(points["instance_id"].tolist()) == {0}

    # depth of another size: masks still go out, the reason shows on /diagnostics
    img, dets = _frame(3)
    small = _depth(3, (24, 32))
    for sub, msg in ((depth_sub, small), (subs["/camera/image_raw"], img), (subs["/detections"], dets)):
        sub.callback(msg)
    _process(node)
    assert len(topics["/shapemask/masks"].sent) == 3 and len(topics["/shapemask/objects3d"].sent) == 2
    diag_timer = next(t for t in node.timers if t.callback == node._publish_diagnostics)
    diag_timer.callback()
    (status,) = topics["/diagnostics"].sent[-1].statuses
    values = {kv.key: kv.value for kv in status.values}
    assert values["processor.dropped_3d.size_mismatch"] == "1" and values["depth_total"] == "3"
    assert status.level == Msg.WARN and "no 3D output: size_mismatch" in status.message

    # 3D knobs apply live; topics, QoS and output switches need a reconfigure
    (res,) = node.set_parameters([Parameter("geometry_min_points", value=5000)])
    assert res.successful and node._processor.cfg.geometry_min_points == 5000
    for name, value in (("depth_topic", "/other"), ("camera_info_qos_depth", 5), ("publish_points", False)):
        (res,) = node.set_parameters([Parameter(name, value=value)])
        assert not res.successful and "requires reconfigure" in res.reason, name
    node.trigger_deactivate()
    assert node.subs == []
    node.trigger_cleanup()
    assert node.pubs == []


def test_no_3d_outputs_when_switched_off(ros, tmp_path):
    node = _node(
        tmp_path, depth_topic="/depth/image_rect", camera_info_topic="/depth/info", publish_points=False
    )
    node.trigger_configure()
    assert "/shapemask/objects3d" in _topics(node) and "/shapemask/points" not in _topics(node)
    node.trigger_activate()
    assert {"/depth/image_rect", "/depth/info"} <= {s.topic_name for s in node.subs}
