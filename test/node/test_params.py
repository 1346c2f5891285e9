"""The node's parameters, params file and ROS-free helpers in ros_bridge/ (no rclpy here; the node class is
tested on the rclpy stand-in in test_node_lifecycle.py)."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from shapemask_ros.config.node_config import NodeConfig, validate_node_config
from shapemask_ros.ros_bridge import inbox as inbox_mod
from shapemask_ros.ros_bridge import node_health
from shapemask_ros.ros_bridge import node_params as node_mod
from support import REPO as REPO_ROOT

ROOT = REPO_ROOT
PARAMS_FILE = ROOT / "config" / "segment_params.yaml"
FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}
DEFAULTS = dataclasses.asdict(NodeConfig())
EMPTY_SEQ = {name for name, v in DEFAULTS.items() if isinstance(v, tuple) and not v}


def _params_yaml() -> tuple[str, dict]:
    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert isinstance(data, dict) and len(data) == 1, "one node key"
    (key, body) = next(iter(data.items()))
    return key, body["ros__parameters"]


# ---- parameters from NodeConfig ------------------------------------------------------------------------
def test_parameter_specs_mirror_nodeconfig():
    specs = {s.name: s for s in node_mod.parameter_specs()}
    assert list(specs) == list(FIELDS)
    expected_type = {str: "STRING", bool: "BOOL", int: "INTEGER", float: "DOUBLE"}
    for name, spec in specs.items():
        assert spec.default == DEFAULTS[name]
        default = DEFAULTS[name]
        ros_type = "STRING_ARRAY" if isinstance(default, tuple) else expected_type[type(default)]
        assert spec.ros_type == ros_type, name
        assert spec.description.strip(), f"{name} has no description"
        assert ("[requires reconfigure]" in spec.description) == (name in node_mod.RESTART_PARAMS)
    # descriptions come from the field metadata in config/node_config.py (one place to document a field)
    assert specs["sync_slop_s"].description.startswith("approximate match window")


def test_descriptions_come_from_field_metadata_and_unsupported_types():
    @dataclasses.dataclass
    class Demo:
        a: int = dataclasses.field(default=1, metadata={"description": "first description"})
        c: float = dataclasses.field(default=2.0, metadata={"description": "third"})

    assert {s.name: s.description for s in node_mod.parameter_specs(Demo)} == {"a": "first description", "c": "third"}

    @dataclasses.dataclass
    class Undocumented:
        a: int = 1  # a comment is not a description

    with pytest.raises(TypeError, match="Undocumented.a: no description"):
        node_mod.parameter_specs(Undocumented)

    @dataclasses.dataclass
    class Bad:
        d: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match="Bad.d|NodeConfig.d"):
        node_mod.parameter_specs(Bad)


# ---- the shipped params file -----------------------------------------------------------------------------
def test_params_file_matches_nodeconfig_defaults_exactly():
    key, params = _params_yaml()
    assert key == f"/**/{node_mod.NODE_NAME}", "wildcard key so the file applies in any namespace"
    # empty lists cannot be written in a ROS 2 params file (ros2/rclcpp#1955): those stay commented out
    assert set(params) == set(FIELDS) - EMPTY_SEQ
    for name, value in params.items():
        default = DEFAULTS[name]
        assert value == default, f"{name}: file {value!r} != NodeConfig default {default!r}"
        # ROS parameters are statically typed: 30 (int) would be rejected for a double parameter
        assert type(value) is type(default), f"{name}: {type(value).__name__} vs {type(default).__name__}"
    text = PARAMS_FILE.read_text()
    for name in EMPTY_SEQ:
        assert re.search(rf"^\s*#\s*{name}:", text, re.M), f"{name} should be documented as a comment"


def test_params_file_restart_markers_match_the_node():
    marked = set()
    for line in PARAMS_FILE.read_text().splitlines():
        m = re.match(r"^\s*(\w+):.*\[restart\]", line)
        if m:
            marked.add(m.group(1))
    assert marked == set(node_mod.RESTART_PARAMS)
    assert node_mod.RESTART_PARAMS <= set(FIELDS)


# ---- conversions ROS parameter values -> NodeConfig ------------------------------------------------------
def test_config_from_parameters_converts_ros_values():
    cfg = node_mod.config_from_parameters(
        {"class_filter": ["cup", "", "bottle"], "expected_rate_hz": 15, "max_objects": 7, "model_path": None}
    )
    assert cfg.class_filter == ("cup", "bottle")
    assert cfg.expected_rate_hz == 15.0 and isinstance(cfg.expected_rate_hz, float)
    assert cfg.max_objects == 7 and cfg.model_path == NodeConfig().model_path  # None = not set = default
    assert node_mod.config_from_parameters({"class_filter": [""]}).class_filter == ()
    with pytest.raises(ValueError, match="max_objects"):
        node_mod.config_from_parameters({"max_objects": "many"})
    with pytest.raises(ValueError, match="unknown"):
        node_mod.config_from_parameters({"no_such_param": 1})


def test_split_changes_rejects_restart_params_only_when_configured():
    cfg = NodeConfig()
    apply, rejected = node_mod.split_changes(cfg, {"image_topic": "/cam", "score_threshold": 0.6}, configured=False)
    assert apply == {"image_topic": "/cam", "score_threshold": 0.6} and not rejected

    apply, rejected = node_mod.split_changes(cfg, {"image_topic": "/cam", "score_threshold": 0.6}, configured=True)
    assert rejected == {"image_topic": node_mod.RESTART_REASON}
    assert apply == {"score_threshold": 0.6}
    assert "deactivate, cleanup, configure" in node_mod.RESTART_REASON

    # re-sending unchanged values (`ros2 param load` of the whole file) is not a rejection
    apply, rejected = node_mod.split_changes(cfg, {"image_topic": cfg.image_topic, "max_objects": 5}, configured=True)
    assert apply == {"max_objects": 5} and not rejected

    apply, rejected = node_mod.split_changes(cfg, {"max_objects": "x", "mask_threshold": 0.4}, configured=True)
    assert not apply and set(rejected) == {"max_objects", "mask_threshold"}


def test_topic_and_mode_helpers():
    assert node_mod.image_type_for_topic("/cam/image_raw") == "sensor_msgs/msg/Image"
    assert node_mod.image_type_for_topic("/cam/image_raw/compressed") == "sensor_msgs/msg/CompressedImage"
    assert node_mod.image_type_for_topic("/cam/compressed_depth") == "sensor_msgs/msg/Image"
    assert node_mod.uses_detector(NodeConfig())
    assert not node_mod.uses_detector(NodeConfig(detections_topic=""))
    assert not node_mod.uses_detector(NodeConfig(self_detect=True))
    assert node_mod.output_topic("/shapemask/", "masks") == "/shapemask/masks"
    assert node_mod.output_topic("", "masks") == "masks"
    # QoS reliability: exactly one of the two names (validated with every other parameter, config/node_config.py)
    assert not validate_node_config(NodeConfig(), {"image_qos_reliability": "best_effort"})[1]
    for value in ("sometimes", "Best-Effort"):
        assert (
            "reliable"
            in validate_node_config(NodeConfig(), {"image_qos_reliability": value})[1]["image_qos_reliability"]
        )
    # cache covers rate x detector latency (+2); self-detection only needs the newest image
    assert node_mod.image_cache_size(NodeConfig(expected_rate_hz=30.0, detector_latency_s=0.5)) == 17
    assert node_mod.image_cache_size(NodeConfig(detections_topic="")) == 1
    # 3D: off without a depth topic; CameraInfo next to the depth image unless named
    assert not node_mod.uses_depth(NodeConfig()) and not node_mod.uses_depth(NodeConfig(depth_topic="  "))
    cfg = NodeConfig(depth_topic="/camera/aligned_depth_to_color/image_raw")
    assert node_mod.uses_depth(cfg)
    assert node_mod.camera_info_topic_for(cfg) == "/camera/aligned_depth_to_color/camera_info"
    assert node_mod.camera_info_topic_for(NodeConfig(depth_topic="depth")) == "camera_info"
    named = NodeConfig(depth_topic="/d/image_rect", camera_info_topic="/d/info")
    assert node_mod.camera_info_topic_for(named) == "/d/info"


def test_resolve_model_path(tmp_path):
    from shapemask_ros.runtime.bundle import resolve_model_path

    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert Path(resolve_model_path("")).parts[-2:] == ("models", "real_lite0")


# ---- health reporting ------------------------------------------------------------------------------------
def _qos(reliability: str, depth: int = 5):
    name = SimpleNamespace(name=reliability.upper())
    return SimpleNamespace(reliability=name, durability=SimpleNamespace(name="VOLATILE"),
                           history=SimpleNamespace(name="KEEP_LAST"), depth=depth)  # fmt: skip


def test_silent_input_message_names_both_qos_profiles_and_mismatches():
    pubs = [
        SimpleNamespace(node_name="cam", node_namespace="/", topic_type="sensor_msgs/msg/Image",
                        qos_profile=_qos("best_effort", 1)),
        SimpleNamespace(node_name="other", node_namespace="/x", topic_type="sensor_msgs/msg/CompressedImage",
                        qos_profile=_qos("reliable")),
    ]  # fmt: skip
    text = node_health.silent_input_message("/cam/image", "sensor_msgs/msg/Image", _qos("reliable"), pubs, 6.0)
    assert "2 publisher(s) on /cam/image" in text and "6.0 s" in text
    assert "Subscriber (sensor_msgs/msg/Image): reliability=reliable" in text
    cam_line = next(line for line in text.splitlines() if "/cam (" in line)
    assert "reliability=best_effort" in cam_line and "set *_qos_reliability to auto or best_effort" in cam_line
    other_line = next(line for line in text.splitlines() if "/x/other" in line)
    assert "TYPE MISMATCH" in other_line


def test_node_stats_rates_and_latency_percentiles():
    now = [100.0]
    stats = node_health.NodeStats(clock=lambda: now[0])
    for _ in range(30):
        stats.count("image")
    for latency in np.linspace(0.01, 0.10, 10):
        stats.count("processed")
        stats.add_latency(latency)
    now[0] += 2.0
    report = stats.report()
    assert report["image_rate_hz"] == pytest.approx(15.0)
    assert report["processed_rate_hz"] == pytest.approx(5.0)
    assert report["latency_p50_ms"] == pytest.approx(55.0)
    assert report["latency_p95_ms"] == pytest.approx(95.5)
    now[0] += 1.0
    stats.count("image")
    report = stats.report()  # rates restart from the previous report, totals keep counting
    assert report["image_rate_hz"] == pytest.approx(1.0) and report["image_total"] == 31
    assert "processed_rate_hz" not in report


def test_processor_counters_flatten_any_stats_shape():
    @dataclasses.dataclass
    class Stats:
        processed: int = 4
        dropped: dict = dataclasses.field(default_factory=lambda: {"superseded": 2, "decode_error": 1})
        latencies: list = dataclasses.field(default_factory=lambda: [0.1, 0.2])
        backend: str = "onnxruntime"
        busy: bool = True

    assert node_health.processor_counters(Stats()) == {
        "processed": 4.0,
        "dropped.superseded": 2.0,
        "dropped.decode_error": 1.0,
    }
    assert node_health.processor_counters({"stale": np.int64(3)}) == {"stale": 3.0}
    assert node_health.processor_counters(None) == {}


# ---- inbox ---------------------------------------------------------------------------
def test_inbox_keeps_newest_and_reports_overflow():
    inbox = inbox_mod.Inbox(image_capacity=2)
    assert not inbox.put(inbox.images, ("a", "t"))
    assert not inbox.put(inbox.images, ("b", "t"))
    assert inbox.put(inbox.images, ("c", "t")), "oldest pushed out must be reported (counted as a drop)"
    inbox.put(inbox.camera_info, "info1")
    inbox.put(inbox.camera_info, "info2")  # only the newest CameraInfo is kept
    inbox.put(inbox.depth, "depth1")
    drained = inbox.drain()
    assert [m for m, _ in drained.images] == ["b", "c"] and drained.detections == []
    assert drained.camera_info == ["info2"] and drained.depth == ["depth1"]
    assert not any(inbox.drain())


# ---- entry point without ROS -----------------------------------------------------------------------------
def test_parse_args_autostart_forms():
    assert node_mod.parse_node_args([]).autostart is False
    assert node_mod.parse_node_args(["--autostart"]).autostart is True
    assert node_mod.parse_node_args(["--autostart", "false"]).autostart is False
    assert node_mod.parse_node_args(["--autostart", "TRUE"]).autostart is True
    with pytest.raises(SystemExit):
        node_mod.parse_node_args(["--autostart", "maybe"])


def test_node_script_without_ros_exits_with_a_clear_message():
    # a fresh interpreter where rclpy is unimportable even if a ROS installation is sourced
    code = (
        "import runpy, sys; sys.modules['rclpy'] = None; sys.argv = ['shapemask_node', '--autostart']\n"
        f"runpy.run_path({str(ROOT / 'scripts' / 'shapemask_node')!r}, run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "needs ROS 2" in r.stderr and "source /opt/ros/" in r.stderr
    assert "Traceback" not in r.stderr


def test_split_changes_ignores_parameters_that_are_not_ours():
    """rclpy passes use_sim_time, diagnostic_updater.period, ... to the node's on-set callback too."""
    apply, rejected = node_mod.split_changes(
        NodeConfig(), {"use_sim_time": True, "diagnostic_updater.period": 2.0, "score_threshold": 0.6}, True
    )
    assert apply == {"score_threshold": 0.6} and rejected == {}


def test_keyed_throttle_is_per_key():
    now = [0.0]
    throttle = node_health.KeyedThrottle(5.0, clock=lambda: now[0])
    assert throttle.ready("a") and throttle.ready("b"), "another key is not held back by the first"
    assert not throttle.ready("a")
    now[0] = 5.0
    assert throttle.ready("a") and not throttle.ready("a")


def test_diagnostic_summary_levels_and_values():
    @dataclasses.dataclass
    class PStats:
        dropped: dict = dataclasses.field(default_factory=lambda: {"bad_box": 2})
        geometry_error: str = ""

    ok = node_health.diagnostic_summary("active", "onnxruntime", {"image_total": 3.0}, PStats())
    assert ok.level == "OK" and ok.message == "active, backend onnxruntime"
    assert ok.values == [("backend", "onnxruntime"), ("image_total", "3"), ("processor.dropped.bad_box", "2")]
    warn = node_health.diagnostic_summary(
        "active", "x", {"error.step_rate_hz": 0.5}, PStats(geometry_error="size_mismatch"), {"/b", "/a"}
    )
    assert warn.level == "WARN"
    assert warn.message == (
        "active, backend x; errors in the last second; no input on /a, /b; no 3D output: size_mismatch"
    )


def test_published_outputs_follow_the_publish_switches_and_depth():
    """One table of what a configuration publishes (the node's publishers, bag-eval's output topics)."""
    base = NodeConfig()
    assert node_mod.published_outputs(base) == {
        "masks": "shapemask_ros/msg/InstanceMaskArray",
        "labels": "sensor_msgs/msg/Image",
        "detections": "vision_msgs/msg/Detection2DArray",
        "overlay": "sensor_msgs/msg/Image",
    }  # no depth topic: no 3D outputs
    cfg = dataclasses.replace(
        base, depth_topic="/d", publish_label_image=False, publish_overlay=False, publish_points=False
    )
    assert list(node_mod.published_outputs(cfg)) == ["masks", "detections", "objects3d"]
    assert tuple(node_mod.OUTPUT_TYPES) == node_mod.OUTPUTS
