"""The node's parameters and topic wiring, without rclpy: NodeConfig fields -> ROS parameter specs,
parameter values -> NodeConfig, live vs restart-only updates, topic names and the command line.

`shapemask_ros.node` (the only rclpy module) is a thin shell over this module, `node_health` and `inbox`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from array import array as PyArray
from collections.abc import Mapping
from typing import Any

import numpy as np

from shapemask_ros.config.loading import merge
from shapemask_ros.config.node_config import RESTART_PARAMS, NodeConfig, cache_size_for
from shapemask_ros.ros_bridge.msg_types import (
    COMPRESSED_TYPE,
    DETECTION_ARRAY_TYPE,
    IMAGE_TYPE,
    MASK_ARRAY_TYPE,
    OBJECTS3D_TYPE,
    POINTS_TYPE,
)

NODE_NAME = "shapemask_node"
NODE_CONFIG_FIELDS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(NodeConfig))
RESTART_REASON = "requires reconfigure (deactivate, cleanup, configure)"
# result field = publisher key (= topic name under output_namespace) -> message type
OUTPUT_TYPES = {
    "masks": MASK_ARRAY_TYPE,
    "labels": IMAGE_TYPE,
    "detections": DETECTION_ARRAY_TYPE,
    "overlay": IMAGE_TYPE,
    "objects3d": OBJECTS3D_TYPE,
    "points": POINTS_TYPE,
}
OUTPUTS = tuple(OUTPUT_TYPES)
_SCALAR_ROS_TYPES = {bool: "BOOL", int: "INTEGER", float: "DOUBLE", str: "STRING"}


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter derived from a NodeConfig field."""

    name: str
    default: Any  # the dataclass default (tuples stay tuples)
    ros_type: str  # rclpy.Parameter.Type member name: BOOL, INTEGER, DOUBLE, STRING, STRING_ARRAY, ...
    description: str


def _ros_type(tp: Any, name: str) -> str:
    if tp in _SCALAR_ROS_TYPES:
        return _SCALAR_ROS_TYPES[tp]
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        if inner in _SCALAR_ROS_TYPES:
            return f"{_SCALAR_ROS_TYPES[inner]}_ARRAY"
    raise TypeError(f"NodeConfig.{name}: type {tp!r} has no ROS parameter equivalent")


def parameter_specs(cls: type = NodeConfig) -> list[ParamSpec]:
    """One ParamSpec per dataclass field: names, defaults, types and descriptions come from the dataclass
    only (the description from the field metadata, `config._param`); a field without one is a TypeError."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif callable(f.default_factory):
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default")
        ros_type = _ros_type(hints[f.name], f.name)
        description = f.metadata.get("description", "").strip()
        if not description:
            raise TypeError(f"{cls.__name__}.{f.name}: no description in its field metadata")
        restart = " [requires reconfigure]" if f.name in RESTART_PARAMS else ""
        specs.append(ParamSpec(f.name, default, ros_type, description + restart))
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
        elif name in hints and hints[name] is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        overrides[name] = value
    return merge(base or NodeConfig(), overrides)


def split_changes(
    current: NodeConfig, changes: Mapping[str, Any], configured: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a parameter update into (values to apply, name -> rejection reason).

    Values are converted to NodeConfig types; unchanged values are dropped (so `ros2 param load` of a
    whole file does not fail on restart-only parameters that it leaves as they are). Names that are not
    NodeConfig fields are not ours to judge and are ignored: rclpy passes every parameter set on the node
    (`use_sim_time`, `diagnostic_updater.period`, ...) to every on-set-parameters callback.
    """
    changes = {name: value for name, value in changes.items() if name in NODE_CONFIG_FIELDS}
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


def published_outputs(cfg: NodeConfig) -> dict[str, str]:
    """Output name -> message type of every output `cfg` publishes: the node's publishers, and the topics of
    bag-eval's output bag (which leaves out the overlay and, unless asked, the points)."""
    on = {
        "masks": True,
        "labels": cfg.publish_label_image,
        "detections": cfg.publish_refined_detections,
        "overlay": cfg.publish_overlay,
        "objects3d": uses_depth(cfg) and cfg.publish_objects3d,
        "points": uses_depth(cfg) and cfg.publish_points,
    }
    return {name: typ for name, typ in OUTPUT_TYPES.items() if on[name]}


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


def image_cache_size(cfg: NodeConfig) -> int:
    """Images kept while waiting for their detections: `config.cache_size_for` (1 in self-detection).
    For a validated NodeConfig (rate > 0, latency >= 0); anything else is a ValueError naming the field."""
    if not uses_detector(cfg):
        return 1
    return cache_size_for(cfg.expected_rate_hz, cfg.detector_latency_s)


def _truthy(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {value!r}")


def parse_node_args(argv: list[str]) -> argparse.Namespace:
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
