"""The rclpy node driven through its lifecycle on the rclpy stand-in (test/support/rclpy_standin.py; no ROS here).

Every test runs against the Humble and the Jazzy flavour of the stand-in. Timers and subscriptions run on
the stand-in's multi-threaded executor on simulated time, so what is tested is what rclpy would execute
(e.g. a node that replaces rclpy's own timer list loses its diagnostics). Messages are rosbags typestore
classes (same field names as rclpy's), the FrameProcessor is the real one and the predictor the shared fake.
"""

from __future__ import annotations

import ast
import logging
import types
from array import array
from typing import Any

import numpy as np
import pytest

from shapemask_ros.ros_bridge.pointcloud import pointcloud_to_arrays
from support import REPO as REPO_ROOT
from support import rclpy_standin as standin
from support.depth import camera_info, depth_msg
from support.ros import TS, FakePredictor, detection, detection_array, get_message, header, random_rgb, rgb_image_msg

Parameter, TCR = standin.Parameter, standin.TransitionCallbackReturn
OK, WARN = standin.DiagnosticStatus.OK, standin.DiagnosticStatus.WARN
H, W = 48, 64
ROOT = REPO_ROOT


class Harness(types.SimpleNamespace):
    """node_mod (shapemask_ros.node imported on the stand-in), predictor, clock; makes nodes + executors."""

    def node(self, **overrides: Any) -> Any:
        params = [Parameter(k, value=v) for k, v in {"model_path": str(self.tmp_path), **overrides}.items()]
        node = self.node_mod.ShapeMaskNode(parameter_overrides=params, steady_clock=self.clock.now)
        self.nodes.append(node)
        return node

    def executor(self, node: Any) -> standin.SimExecutor:
        ex = standin.SimExecutor()
        ex.add_node(node)
        self.executors.append(ex)
        return ex


@pytest.fixture(params=["humble", "jazzy"])
def ros(request, monkeypatch, tmp_path):
    node_mod = standin.install(monkeypatch, get_message, distro=request.param)
    predictor = FakePredictor(class_names=["person", "cup"])
    predictor.mask_threshold = 0.5  # like the real Predictor, so updates are range-checked
    monkeypatch.setattr("shapemask_ros.runtime.predictor.Predictor.load", staticmethod(lambda path, **kw: predictor))
    h = Harness(node_mod=node_mod, predictor=predictor, tmp_path=tmp_path, clock=standin._DEFAULT_CONTEXT.clock,
                nodes=[], executors=[])  # fmt: skip
    yield h
    for ex in h.executors:
        ex.shutdown()
    for node in h.nodes:
        node._detach_logging()  # the logging bridge must not outlive the test


def _frame(sec: int) -> tuple[Any, Any]:
    hdr = header(sec, 0, "cam")
    img = rgb_image_msg(random_rgb(H, W, sec), hdr)
    return img, detection_array([detection((8, 6, 30, 26), "cup", 0.9, det_id="a", hdr=hdr)], hdr)


def _topics(node: Any) -> dict[str, Any]:
    return {p.topic_name: p for p in node.publishers}


def _state(node: Any) -> str:
    return node._state_machine.current_state[1]


def _send(ex: standin.SimExecutor, sec: int, spin: float = 0.05) -> None:
    img, dets = _frame(sec)
    ex.deliver("/camera/image_raw", img)
    ex.deliver("/detections", dets)
    ex.spin_for(spin)


def _diag_values(array: Any) -> tuple[Any, dict[str, str]]:
    (status,) = array.status
    return status, {kv.key: kv.value for kv in status.values}


# ---- parameters ---------------------------------------------------------------------------------------
def test_parameters_declared_from_nodeconfig_with_overrides(ros):
    node = ros.node(image_qos_depth=3, class_filter=["cup"])
    assert node._cfg.image_qos_depth == 3 and node._cfg.class_filter == ("cup",)
    # the empty-list default is declared as a typed, unset string array (not rclpy's byte-array guess)
    fresh = ros.node()
    assert fresh.describe_parameter("class_filter").type == Parameter.Type.STRING_ARRAY.value
    assert fresh.get_parameter_or("class_filter").type_ == Parameter.Type.NOT_SET and fresh._cfg.class_filter == ()
    with pytest.raises(RuntimeError, match="parameter 'expected_rate_hz' .*double"):
        ros.node(expected_rate_hz=30)  # an int in a params file for a double parameter


def test_parameters_of_others_are_accepted(ros):
    """rclpy hands every parameter set on the node (use_sim_time, diagnostic_updater.*) to every callback."""
    node = ros.node()
    (res,) = node.set_parameters([Parameter("use_sim_time", value=True)])
    assert res.successful, res.reason
    assert node.get_parameter("use_sim_time").value is True and node._time_source.ros_time_is_active
    (res,) = node.set_parameters([Parameter("diagnostic_updater.period", value=2.0)])
    assert res.successful, res.reason
    node.trigger_configure()
    (res,) = node.set_parameters([Parameter("use_sim_time", value=False)])
    assert res.successful, "also while configured"
    # types are checked against the descriptor before any callback runs
    (res,) = node.set_parameters([Parameter("use_sim_time", value="yes")])
    assert not res.successful and res.reason.startswith("Wrong parameter type")
    (res,) = node.set_parameters([Parameter("score_threshold", value=1)])
    assert not res.successful and "Wrong parameter type" in res.reason and node._cfg.score_threshold != 1


def test_runtime_parameters_applied_or_rejected(ros):
    node = ros.node()
    (ok,) = node.set_parameters([Parameter("image_topic", value="/other")])  # unconfigured: accepted
    assert ok.successful and node._cfg.image_topic == "/other"
    assert node.trigger_configure() == TCR.SUCCESS and node.trigger_activate() == TCR.SUCCESS
    (res,) = node.set_parameters([Parameter("score_threshold", value=0.7)])
    assert res.successful and node._processor.cfg.score_threshold == 0.7 and node._cfg.score_threshold == 0.7
    (res,) = node.set_parameters([Parameter("image_topic", value="/cam2")])
    assert not res.successful and "requires reconfigure (deactivate, cleanup, configure)" in res.reason
    assert node.get_parameter("image_topic").value == "/other", "a rejected value is not stored"
    (res,) = node.set_parameters([Parameter("mask_threshold", value=5.0)])
    assert not res.successful and "mask_threshold" in res.reason and node._processor.cfg.mask_threshold == 0.5
    assert node.trigger_deactivate() == TCR.SUCCESS and list(node.subscriptions) == []
    assert node.trigger_cleanup() == TCR.SUCCESS
    assert node._processor is None and {p.topic_name for p in node.publishers} == {"/parameter_events", "/diagnostics"}
    (res,) = node.set_parameters([Parameter("image_topic", value="/cam2/compressed")])
    assert res.successful
    node.trigger_configure()
    node.trigger_activate()
    assert {s.topic_name: s.msg_type for s in node.subscriptions}["/cam2/compressed"] is TS.types[
        "sensor_msgs/msg/CompressedImage"
    ]


# ---- lifecycle ----------------------------------------------------------------------------------------
def test_configure_activate_process_publish(ros):
    node = ros.node()
    ex = ros.executor(node)
    assert node.trigger_configure() == TCR.SUCCESS and _state(node) == "inactive"
    topics = _topics(node)
    assert set(topics) >= {"/shapemask/masks", "/shapemask/labels", "/shapemask/detections", "/shapemask/overlay"}
    assert "inference backend in use: fake" in node.get_logger().text("info")
    _send(ex, 1)  # not subscribed yet
    assert topics["/shapemask/masks"].count == 0
    assert node.trigger_activate() == TCR.SUCCESS and _state(node) == "active"
    subs = {s.topic_name: s for s in node.subscriptions}
    assert set(subs) == {"/camera/image_raw", "/detections"}
    assert subs["/camera/image_raw"].qos_profile.reliability == standin.ReliabilityPolicy.BEST_EFFORT
    assert subs["/camera/image_raw"].qos_profile.depth == 2
    assert subs["/detections"].qos_profile.reliability == standin.ReliabilityPolicy.RELIABLE

    _send(ex, 2)
    (masks,) = topics["/shapemask/masks"].sent
    assert len(masks.instances) == 1 and masks.header.stamp.sec == 2
    assert topics["/shapemask/labels"].count == 1 and topics["/shapemask/detections"].count == 1
    assert topics["/shapemask/overlay"].count == 0, "overlay only built when someone subscribes"
    topics["/shapemask/overlay"].subscribers = 1
    _send(ex, 3)
    assert topics["/shapemask/overlay"].count == 1 and topics["/shapemask/overlay"].sent[0].encoding == "rgb8"

    # inactive lifecycle publishers drop silently: nothing goes out after deactivate
    assert node.trigger_deactivate() == TCR.SUCCESS
    topics["/shapemask/masks"].publish(masks)
    assert topics["/shapemask/masks"].count == 2


def test_transitions_follow_the_state_machine_and_exceptions_are_logged(ros):
    node = ros.node(image_topic="/camera/image raw")  # a space: rclpy raises InvalidTopicNameException
    with pytest.raises(standin.RCLError):
        node.trigger_activate()  # not from unconfigured
    assert node.trigger_configure() == TCR.SUCCESS
    assert node.trigger_activate() == TCR.FAILURE and _state(node) == "inactive"
    error = node.get_logger().text("error")
    assert "InvalidTopicNameException" in error and "/camera/image raw" in error
    assert list(node.subscriptions) == [] and len(list(node.timers)) == 1, "nothing half-activated is left"

    # an unexpected exception in a transition: logged with its traceback, ERROR, then on_error -> unconfigured
    node.trigger_cleanup()
    node.set_parameters([Parameter("image_topic", value="/camera/image_raw")])
    node.trigger_configure()
    node.trigger_activate()

    stop_inputs, calls = node._stop_inputs, []

    def broken_once() -> None:  # fails in on_deactivate, works again for on_error's cleanup
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("subscription vanished")
        stop_inputs()

    node._stop_inputs = broken_once
    assert node.trigger_deactivate() == TCR.ERROR and _state(node) == "unconfigured"
    error = node.get_logger().text("error")
    assert "on_deactivate (from state active) raised RuntimeError: subscription vanished" in error
    assert "Traceback" in error and "error in a transition from state active" in error


def test_configure_fails_cleanly_without_a_model(ros):
    node = ros.node(model_path=str(ros.tmp_path / "missing"))
    assert node.trigger_configure() == TCR.FAILURE and _state(node) == "unconfigured"
    assert "model bundle not found" in node.get_logger().text("error")
    assert {p.topic_name for p in node.publishers} == {"/parameter_events", "/diagnostics"}
    assert node._processor is None


def test_node_keeps_clear_of_rclpy_private_attributes():
    """rclpy.node.Node keeps its timers, parameters, callbacks ... in private attributes that the executor
    and destroy_* use; the node must not assign any of them (statically: also code paths tests miss)."""
    source = (ROOT / "shapemask_ros" / "node.py").read_text()
    assigned = {
        target.attr
        for n in ast.walk(ast.parse(source))
        if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        for target in ([*t.elts] if isinstance(t, ast.Tuple) else [t])
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
    }
    assert assigned, "no attribute assignments parsed"
    assert not assigned & standin.RCLPY_PRIVATE_ATTRS


# ---- the data path ------------------------------------------------------------------------------------
def test_bad_messages_are_counted_and_the_node_keeps_working(ros):
    node = ros.node(detections_topic="")
    ex = ros.executor(node)
    node.trigger_configure()
    node.trigger_activate()
    (sub,) = node.subscriptions
    assert sub.msg_type is TS.types["sensor_msgs/msg/Image"]
    ex.deliver("/camera/image_raw", object())  # no header at all
    broken, _ = _frame(3)
    broken.data = np.zeros(5, np.uint8)  # too short for 48x64 rgb8
    ex.deliver("/camera/image_raw", broken, at=ros.clock.now() + 0.02)
    ex.spin_for(0.05)
    assert _topics(node)["/shapemask/masks"].count == 0
    good, _ = _frame(4)
    ex.deliver("/camera/image_raw", good)
    ex.spin_for(0.05)
    assert _topics(node)["/shapemask/masks"].count == 1
    dropped = node._processor.stats.dropped
    assert dropped["bad_header"] == 1 and sum(dropped.values()) >= 2


def test_processing_errors_are_throttled_per_kind(ros):
    """Two different failures in the same second are both logged (rclpy throttles per call site)."""
    node = ros.node()
    ex = ros.executor(node)
    node.trigger_configure()
    node.trigger_activate()

    def fail(kind: type[Exception], text: str) -> Any:
        def raiser(*args: Any, **kwargs: Any) -> None:
            raise kind(text)

        return raiser

    node._processor.add_image = fail(RuntimeError, "image path broke")
    node._processor.add_detections = fail(ValueError, "detections path broke")
    for sec in (1, 2, 3):
        _send(ex, sec, spin=0.1)
    errors = node.get_logger().text("error").splitlines()
    assert len([e for e in errors if "add_image failed: RuntimeError: image path broke" in e]) == 1
    assert len([e for e in errors if "add_detections failed: ValueError: detections path broke" in e]) == 1
    assert node._stats.total("error.add_image") == 3 and node._stats.total("error.add_detections") == 3
    ex.spin_for(5.0)
    _send(ex, 4)
    assert "add_image failed: RuntimeError: image path broke [error.add_image total 4]" in node.get_logger().text(
        "error"
    ), "logged again after the throttle period, with the running total"


def test_core_logging_reaches_the_ros_logger(ros):
    node = ros.node()
    logging.getLogger("shapemask_ros.ros_bridge.pointcloud").warning("dropped %d non-finite points", 3)
    logging.getLogger("shapemask_ros.runtime.engine_cache").info("building engine")
    assert "[shapemask_ros.ros_bridge.pointcloud] dropped 3 non-finite points" in node.get_logger().text("warning")
    assert "[shapemask_ros.runtime.engine_cache] building engine" in node.get_logger().text("info")
    node.destroy_node()
    logging.getLogger("shapemask_ros.ros_bridge.pointcloud").warning("after destroy")
    assert "after destroy" not in node.get_logger().text("warning")


# ---- health -------------------------------------------------------------------------------------------
def test_diagnostics_come_from_the_executor_every_period(ros):
    """/diagnostics is published by diagnostic_updater's timer, which only runs if rclpy's timer list is
    intact; its content: backend, rates, latency and drops by reason."""
    node = ros.node()
    ex = ros.executor(node)
    diag = _topics(node)["/diagnostics"]
    ex.spin_for(1.01)
    status, values = _diag_values(diag.sent[-1])
    assert status.name == "shapemask_node: segmentation" and "unconfigured" in status.message
    node.trigger_configure()
    node.trigger_activate()
    start = diag.count
    for sec in range(1, 4):
        _send(ex, sec, spin=1.0)
    assert diag.count - start == 3, "one DiagnosticArray per second"
    status, values = _diag_values(diag.sent[-1])
    assert status.hardware_id == "fake" and values["backend"] == "fake" and status.level == OK
    assert values["image_total"] == "3" and values["processed_total"] == "3" and float(values["processed_rate_hz"]) > 0
    assert "latency_p50_ms" in values and values["processor.dropped.bad_header"] == "0"
    # deactivate destroys the processing and watchdog timers, and only those
    node.trigger_deactivate()
    assert list(node.timers) == [node._updater.timer]
    node.trigger_cleanup()
    before = diag.count
    ex.spin_for(2.0)
    assert diag.count - before == 2 and "unconfigured" in diag.sent[-1].status[0].message


def test_watchdog_names_qos_and_diagnostics_report(ros):
    node = ros.node(no_input_warn_s=2.0)
    ex = ros.executor(node)
    node.trigger_configure()
    node.trigger_activate()
    qos = standin.QoSProfile(depth=1, reliability=standin.ReliabilityPolicy.BEST_EFFORT)
    info = types.SimpleNamespace(node_name="yolo", node_namespace="/", topic_type="vision_msgs/msg/Detection2DArray",
                                 qos_profile=qos)  # fmt: skip
    node.context.graph_publishers["/detections"] = [info]
    ex.spin_for(1.5)
    assert node.get_logger().text("warning") == ""
    ex.spin_for(1.0)
    warning = node.get_logger().text("warning")
    assert "/detections" in warning and "reliability=best_effort" in warning and "/yolo" in warning
    assert "/camera/image_raw" not in warning, "no publisher there: not a QoS problem"
    ex.spin_for(2.0)  # throttled: no second warning right away
    assert node.get_logger().text("warning").count("publisher(s) on /detections") == 1

    ex.deliver("/camera/image_raw", object())  # one bad image
    ex.spin_for(1.0)
    status, values = _diag_values(_topics(node)["/diagnostics"].sent[-1])
    assert values["backend"] == "fake" and status.hardware_id == "fake"
    assert values["image_total"] == "1" and values["processor.dropped.bad_header"] == "1"
    assert status.level == WARN and "no input on" in status.message and "/detections" in status.message


# ---- 3D: depth + CameraInfo in, objects3d + points out ------------------------------------------------
def _depth(sec: int, shape: tuple[int, int] = (H, W)) -> Any:
    return depth_msg(np.full(shape, 800, np.uint16), sec, frame="cam")


def test_depth_inputs_and_3d_outputs(ros):
    node = ros.node(depth_topic="/cam/aligned_depth_to_color/image_raw", depth_qos_depth=3)
    ex = ros.executor(node)
    assert node.trigger_configure() == TCR.SUCCESS
    topics = _topics(node)
    assert topics["/shapemask/objects3d"].msg_type is TS.types["shapemask_ros/msg/ObjectGeometryArray"]
    assert topics["/shapemask/points"].msg_type is TS.types["sensor_msgs/msg/PointCloud2"]
    node.trigger_activate()
    subs = {s.topic_name: s for s in node.subscriptions}
    depth_sub = subs["/cam/aligned_depth_to_color/image_raw"]
    info_sub = subs["/cam/aligned_depth_to_color/camera_info"]  # image_transport convention
    assert depth_sub.msg_type is TS.types["sensor_msgs/msg/Image"] and depth_sub.qos_profile.depth == 3
    assert depth_sub.qos_profile.reliability == standin.ReliabilityPolicy.BEST_EFFORT
    assert info_sub.msg_type is TS.types["sensor_msgs/msg/CameraInfo"]
    assert "3D from /cam/aligned_depth_to_color/image_raw" in node.get_logger().text("info")

    def send(sec: int, depth: Any) -> None:
        ex.deliver(info_sub.topic_name, camera_info(frame="cam"))
        ex.deliver(depth_sub.topic_name, depth)
        _send(ex, sec)

    depth1 = _depth(1)
    send(1, depth1)
    (masks,) = topics["/shapemask/masks"].sent
    (objects,) = topics["/shapemask/objects3d"].sent
    assert objects.header is depth1.header and len(objects.objects) == len(masks.instances) == 1
    assert objects.objects[0].centroid.z == pytest.approx(0.8, abs=1e-3) and objects.objects[0].status == "ok"
    assert topics["/shapemask/points"].count == 0, "the cloud is built only when someone subscribes"

    topics["/shapemask/points"].subscribers = 1
    send(2, _depth(2))
    (cloud,) = topics["/shapemask/points"].sent
    points = pointcloud_to_arrays(cloud)
    assert cloud.header.stamp.sec == 2 and len(points["z"]) == objects.objects[0].num_inliers
    np.testing.assert_allclose(points["z"], 0.8, atol=1e-6)
    assert set(points["instance_id"].tolist()) == {0}

    # depth of another size: masks still go out, the reason shows on /diagnostics
    send(3, _depth(3, (24, 32)))
    assert topics["/shapemask/masks"].count == 3 and topics["/shapemask/objects3d"].count == 2
    ex.spin_for(1.0)
    status, values = _diag_values(topics["/diagnostics"].sent[-1])
    assert values["processor.dropped_3d.size_mismatch"] == "1" and values["depth_total"] == "3"
    assert status.level == WARN and "no 3D output: size_mismatch" in status.message

    # 3D knobs apply live; topics, QoS and output switches need a reconfigure
    (res,) = node.set_parameters([Parameter("geometry_min_points", value=5000)])
    assert res.successful and node._processor.cfg.geometry_min_points == 5000
    for name, value in (("depth_topic", "/other"), ("camera_info_qos_depth", 5), ("publish_points", False)):
        (res,) = node.set_parameters([Parameter(name, value=value)])
        assert not res.successful and "requires reconfigure" in res.reason, name
    node.trigger_deactivate()
    assert list(node.subscriptions) == []
    node.trigger_cleanup()
    assert "/shapemask/masks" not in _topics(node)


def test_no_3d_outputs_when_switched_off(ros):
    node = ros.node(depth_topic="/depth/image_rect", camera_info_topic="/depth/info", publish_points=False)
    node.trigger_configure()
    assert "/shapemask/objects3d" in _topics(node) and "/shapemask/points" not in _topics(node)
    node.trigger_activate()
    assert {"/depth/image_rect", "/depth/info"} <= {s.topic_name for s in node.subscriptions}


def test_rclpy_factory_u8_is_a_compact_byte_array(ros):
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)[:, ::2]  # non-contiguous view
    out = ros.node_mod.RclpyFactory.u8(img)
    assert isinstance(out, array) and out.typecode == "B"
    assert out.tobytes() == np.ascontiguousarray(img).tobytes()


def test_main_autostarts_spins_and_cleans_up(ros, monkeypatch):
    made: list[Any] = []

    class Executor(standin.SimExecutor):
        def spin(self) -> None:  # Ctrl-C right away
            (node,) = self._nodes
            made.append((node, _state(node)))
            raise KeyboardInterrupt

    monkeypatch.setattr(ros.node_mod, "MultiThreadedExecutor", Executor)
    monkeypatch.setattr(ros.node_mod.ShapeMaskNode, "destroy_node", lambda self: made.append("destroyed"))
    argv = ["shapemask_node", "--autostart", "--ros-args", "-p", "model_path:=/x"]
    assert ros.node_mod.main(argv) == 0
    (node, state), destroyed = made
    assert state == "active" and destroyed == "destroyed"
    node._detach_logging()


# ---- the stand-in itself: where it must be as strict as rclpy -------------------------------------------------
def test_standin_is_as_strict_as_rclpy(ros):
    if standin.DISTRO == "humble":
        with pytest.raises(AssertionError, match="Invalid arguments passed to constructor: statuses"):
            standin.DiagnosticArray(statuses=[])  # Humble's generated constructor
    else:
        assert standin.DiagnosticArray(statuses=[1]).status == [], "Jazzy: ignored, an empty array goes out"
    node = ros.node()
    seen: list[str] = []
    node.add_on_set_parameters_callback(lambda ps: seen.extend(p.name for p in ps) or standin.SetParametersResult(
        successful=True))  # fmt: skip
    (res,) = node.set_parameters([Parameter("max_objects", value=2.5)])
    assert not res.successful and seen == [], "type checked before any callback"
    with pytest.raises(standin.ParameterNotDeclaredException):
        node.set_parameters([Parameter("no_such_parameter", value=1)])
    # mutually exclusive groups never run two callbacks at once, even with sleeping callbacks
    group, running, overlap = standin.MutuallyExclusiveCallbackGroup(), [0], []

    def slow() -> None:
        running[0] += 1
        overlap.append(running[0])
        ros.clock.sleep(0.25)
        running[0] -= 1

    node.create_timer(0.1, slow, callback_group=group)
    node.create_timer(0.1, slow, callback_group=group)
    ex = ros.executor(node)
    ex.spin_for(1.0)
    assert len(overlap) >= 3 and max(overlap) == 1
    with pytest.raises(standin.InvalidTopicNameException):
        node.create_subscription(object, "/a//b", lambda m: None, 1)
