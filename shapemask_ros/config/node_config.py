"""The parameters of the ROS node and of `bag-eval` (`NodeConfig`) and of their 3D outputs (`GeometryConfig`).

The one source of their defaults (config/segment_params.yaml documents them for users; a test keeps the two
identical). Each NodeConfig field carries its description and constraints as field metadata (`_param`) and is
validated in one place, `validate_node_config`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Choices and limits of the NodeConfig fields (the field metadata below refers to them).
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "onnxruntime", "tensorflow")
# auto: reliable when every publisher offers it, else best_effort (ros_bridge.transport.choose_reliability)
QOS_RELIABILITIES: tuple[str, ...] = ("auto", "reliable", "best_effort")
DEPTH_REGISTRATIONS: tuple[str, ...] = ("none", "scale")  # how colour-image masks map onto the depth image
MAX_OBJECTS_LIMIT = 65535  # the mono16 label image numbers objects 1..65535
MAX_IMAGE_CACHE = 256  # raw images held for matching; 256 x 1080p rgb8 is ~1.6 GB already


def cache_size_for(rate_hz: float, latency_s: float) -> int:
    """Image cache size that covers the detector latency: ceil(rate * latency) + 2."""
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"expected_rate_hz must be > 0, got {rate_hz}")
    if not (math.isfinite(latency_s) and latency_s >= 0):
        raise ValueError(f"detector_latency_s must be >= 0, got {latency_s}")
    return math.ceil(rate_hz * latency_s) + 2


@dataclass
class GeometryConfig:
    """Parameters of the 3D outputs (candidates for NodeConfig; defaults suit RGB-D cameras at 0.3-3 m)."""

    min_points: int = 30  # fewer inliers -> status too_few_points (object kept)
    mad_k: float = 3.0  # band half-width in robust standard deviations; <= 0 disables the MAD band
    min_band_m: float = 0.02  # lower bound of the band half-width: sensor noise and curved surfaces
    percentile_low: float = 0.0  # additional percentile band of valid depths; 0 / 100 = off
    percentile_high: float = 100.0
    min_depth_m: float = 0.0  # readings outside [min_depth_m, max_depth_m] are invalid; 0 = no limit
    max_depth_m: float = 0.0
    registration: str = "none"  # none | scale: how colour-image masks map onto the depth image

    def __post_init__(self) -> None:
        if self.min_points < 1:
            raise ValueError(f"min_points must be >= 1, got {self.min_points}")
        if self.min_band_m < 0:
            raise ValueError(f"min_band_m must be >= 0, got {self.min_band_m}")
        if not 0.0 <= self.percentile_low < self.percentile_high <= 100.0:
            raise ValueError(
                f"need 0 <= percentile_low < percentile_high <= 100, got {self.percentile_low}, {self.percentile_high}"
            )
        if self.min_depth_m < 0 or self.max_depth_m < 0 or (0 < self.max_depth_m <= self.min_depth_m):
            raise ValueError(f"bad depth range [{self.min_depth_m}, {self.max_depth_m}]")
        if (self.registration or "none").strip().lower() not in DEPTH_REGISTRATIONS:
            raise ValueError(f"registration must be one of {DEPTH_REGISTRATIONS}, got {self.registration!r}")


# NodeConfig's geometry_* defaults come from GeometryConfig so they are written down once.
_GEOMETRY_DEFAULTS = GeometryConfig()


def _param(
    default: Any,
    description: str,
    *,
    range: tuple[float | None, float | None] | None = None,  # the metadata key it fills
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
    nonempty: bool = False,
    note: str = "",
    live: bool = False,
) -> Any:
    """A NodeConfig field whose metadata documents and constrains it (in the spirit of the `restrictions`
    of tensorflow/models' configs): `description` (ROS ParameterDescriptor), `range` (inclusive bounds,
    None = open), `above` (exclusive lower bound), `choices`, `nonempty` (strings), `note` (added to the
    reason a value is rejected). `check_node_config` enforces them. `live`: the running node applies a
    change (the frame processor takes it); the others define ROS entities or the loaded model and need a
    reconfigure (`LIVE_PARAMS` / `RESTART_PARAMS`, read by the node and the processor alike)."""
    meta: dict[str, Any] = {"description": description}
    for key, value in (("range", range), ("above", above), ("choices", choices)):
        if value is not None:
            meta[key] = value
    if nonempty:
        meta["nonempty"] = True
    if note:
        meta["note"] = note
    if live:
        meta["live"] = True
    return field(default=default, metadata=meta)


@dataclass
class NodeConfig:
    """Parameters of the ROS node and of `bag-eval` (same frame processor, same defaults).

    Every field is a ROS parameter of the same name, described and constrained by its field metadata
    (`_param`); `config/segment_params.yaml` documents them for users. `validate_node_config` is the one
    place that checks values (types, ranges, choices and the combinations).
    """

    model_path: str = _param("", 'model bundle directory; "" = the shipped default model (models/real_lite0)')
    backend: str = _param("auto", "auto | tensorrt | onnxruntime | tensorflow", choices=BACKENDS)
    engine_cache_dir: str = _param("", 'TensorRT engine cache; "" = $XDG_CACHE_HOME/shapemask_ros/engines')
    frames_in_flight: int = _param(
        2,
        "frames in the network at once: 1, or 2 = a newer frame starts while one is still in it when the camera"
        " outruns the model (ONNX Runtime on a multi-core CPU, each on one thread): more frames/s above capacity,"
        " more memory and per-frame latency",
        range=(1, 2),
    )
    image_topic: str = _param(
        "/camera/image_raw", "sensor_msgs/Image, or .../compressed for CompressedImage", nonempty=True
    )
    detections_topic: str = _param("/detections", 'vision_msgs/Detection2DArray; "" = self-detection mode')
    self_detect: bool = _param(False, 'use the model\'s own RetinaNet boxes (also used when detections_topic == "")')
    image_qos_reliability: str = _param(
        "auto",
        "auto (reliable when every publisher is, else best_effort) | reliable | best_effort",
        choices=QOS_RELIABILITIES,
    )
    image_qos_depth: int = _param(2, "image subscription queue depth", range=(1, None))
    detections_qos_reliability: str = _param("reliable", "auto | reliable | best_effort", choices=QOS_RELIABILITIES)
    detections_qos_depth: int = _param(10, "detections subscription queue depth", range=(1, None))
    score_threshold: float = _param(0.3, "detections below are ignored", range=(0.0, 1.0), live=True)
    mask_threshold: float = _param(0.5, "probability threshold of the pasted mask", range=(0.0, 1.0), live=True)
    flip_average: bool = _param(
        False, "also segment the mirrored image and average the masks: better masks, 1.6-2x the model time", live=True
    )
    max_objects: int = _param(
        100, "at most this many objects per image", range=(1, MAX_OBJECTS_LIMIT), note="mono16 label image", live=True
    )
    class_filter: tuple[str, ...] = _param(
        (), "keep only these class ids (strings as in the detector); () = all", live=True
    )
    detection_image_width: int = _param(
        0,
        "size of the image the detector saw; 0 = same as the camera image",
        range=(0, None),
        note="0 = same size as the camera image",
        live=True,
    )
    detection_image_height: int = _param(
        0,
        "height of the image the detector saw; 0 = same as the camera image",
        range=(0, None),
        note="0 = same size as the camera image",
        live=True,
    )
    sync_slop_s: float = _param(
        0.05, "approximate match window after exact-stamp matching", range=(0.0, None), live=True
    )
    detector_latency_s: float = _param(
        0.5, "longest expected detector delay; sizes the image cache", range=(0.0, None), live=True
    )
    expected_rate_hz: float = _param(30.0, "camera rate; image cache = ceil(rate * latency) + 2", above=0.0, live=True)
    publish_label_image: bool = _param(True, "mono16 instance labels on /shapemask/labels")
    publish_refined_detections: bool = _param(True, "vision_msgs/Detection2DArray on /shapemask/detections")
    publish_overlay: bool = _param(True, "debug overlay on /shapemask/overlay (only built when subscribed)")
    no_input_warn_s: float = _param(
        5.0, "warn when publishers exist but nothing arrives (QoS mismatch)", range=(0.0, None), live=True
    )
    output_namespace: str = _param("/shapemask", "namespace of the output topics", nonempty=True)
    # 3D outputs for grasp planners (docs/geometry.md): off while depth_topic is "".
    depth_topic: str = _param("", 'depth Image registered to the colour image (16UC1 mm, 32FC1 m); "" = no 3D')
    camera_info_topic: str = _param("", 'CameraInfo of the depth image; "" = camera_info next to depth_topic')
    depth_qos_reliability: str = _param(
        "auto",
        "auto (reliable when every publisher is, else best_effort) | reliable | best_effort",
        choices=QOS_RELIABILITIES,
    )
    depth_qos_depth: int = _param(2, "depth subscription queue depth", range=(1, None))
    camera_info_qos_reliability: str = _param("auto", "auto | reliable | best_effort", choices=QOS_RELIABILITIES)
    camera_info_qos_depth: int = _param(2, "camera info subscription queue depth", range=(1, None))
    depth_registration: str = _param(
        "none",
        "none: colour size | scale: same optical frame, other resolution",
        choices=DEPTH_REGISTRATIONS,
        live=True,
    )
    depth_rectified: bool = _param(False, "depth is rectified (image_rect): use CameraInfo P, no distortion", live=True)
    depth_wait_s: float = _param(
        0.1, "a ready frame waits this long for its depth image, then goes out without 3D", range=(0.0, None), live=True
    )
    publish_objects3d: bool = _param(True, "shapemask_ros/ObjectGeometryArray on <output_namespace>/objects3d")
    publish_points: bool = _param(True, "PointCloud2 on <output_namespace>/points (built only when subscribed)")
    # Defaults read from GeometryConfig (one source), which also checks their values (`check_node_config`);
    # its registration is depth_registration.
    geometry_min_points: int = _param(
        _GEOMETRY_DEFAULTS.min_points, "fewer inlier points -> status too_few_points", live=True
    )
    geometry_mad_k: float = _param(
        _GEOMETRY_DEFAULTS.mad_k, "depth band half-width in robust sigmas; <= 0 = off", live=True
    )
    geometry_min_band_m: float = _param(
        _GEOMETRY_DEFAULTS.min_band_m, "depth band never narrower than +- this", live=True
    )
    geometry_percentile_low: float = _param(
        _GEOMETRY_DEFAULTS.percentile_low, "percentile band; 0 / 100 = off", live=True
    )
    geometry_percentile_high: float = _param(
        _GEOMETRY_DEFAULTS.percentile_high, "upper end of the percentile band; 100 = off", live=True
    )
    geometry_min_depth_m: float = _param(
        _GEOMETRY_DEFAULTS.min_depth_m, "nearer readings are invalid; 0 = off", live=True
    )
    geometry_max_depth_m: float = _param(
        _GEOMETRY_DEFAULTS.max_depth_m, "farther readings are invalid; 0 = off", live=True
    )


# Which parameters a running node applies (field metadata `live`); the rest need a reconfigure.
LIVE_PARAMS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(NodeConfig) if f.metadata.get("live"))
RESTART_PARAMS: frozenset[str] = frozenset(f.name for f in dataclasses.fields(NodeConfig)) - LIVE_PARAMS

# Mapping of the NodeConfig parameters onto GeometryConfig (every field of it).
GEOMETRY_PARAMS: dict[str, str] = {
    "geometry_min_points": "min_points",
    "geometry_mad_k": "mad_k",
    "geometry_min_band_m": "min_band_m",
    "geometry_percentile_low": "percentile_low",
    "geometry_percentile_high": "percentile_high",
    "geometry_min_depth_m": "min_depth_m",
    "geometry_max_depth_m": "max_depth_m",
    "depth_registration": "registration",
}


def geometry_config(cfg: NodeConfig) -> GeometryConfig:
    """GeometryConfig from the geometry_* and depth_registration parameters (ValueError when out of range)."""
    return GeometryConfig(**{geo: getattr(cfg, name) for name, geo in GEOMETRY_PARAMS.items()})


def coerce_node_value(tp: Any, value: Any) -> Any:
    """`value` (from YAML, a ROS parameter or Python) as a NodeConfig field of type `tp`; ValueError with
    the reason otherwise. NumPy scalars are accepted (rclpy hands them over), non-finite floats are not."""
    if tp is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"expected bool, got {value!r}")
        return bool(value)
    if tp is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"expected int, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"expected float, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"expected a finite float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"expected string, got {value!r}")
        return value
    if typing.get_origin(tp) is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list of strings, got {value!r}")
        if not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(value)
    raise ValueError(f"unsupported parameter type {tp}")  # pragma: no cover - NodeConfig has no others


def _field_problem(f: dataclasses.Field, value: Any) -> str:
    """Why `value` breaks field `f`'s metadata constraints ("" when it does not)."""
    meta = f.metadata
    reason = ""
    if "choices" in meta and value not in meta["choices"]:
        reason = f"must be one of {list(meta['choices'])}"
    elif meta.get("nonempty") and not value:
        reason = "must not be empty"
    elif "above" in meta and not value > meta["above"]:
        reason = f"must be > {meta['above']:g}"
    elif "range" in meta:
        lo, hi = meta["range"]
        # written so that NaN fails every bound
        if (lo is not None and not value >= lo) or (hi is not None and not value <= hi):
            reason = f"must be in [{lo:g}, {hi:g}]" if lo is not None and hi is not None else f"must be >= {lo:g}"
    if reason and meta.get("note"):
        reason += f" ({meta['note']})"
    return reason


def check_node_config(cfg: NodeConfig) -> dict[str, str]:
    """Range, choice and combination checks of a whole NodeConfig -> {field: reason} (empty when valid)."""
    bad = {f.name: r for f in dataclasses.fields(NodeConfig) if (r := _field_problem(f, getattr(cfg, f.name)))}
    if "expected_rate_hz" not in bad and "detector_latency_s" not in bad:
        if cache_size_for(cfg.expected_rate_hz, cfg.detector_latency_s) > MAX_IMAGE_CACHE:
            reason = f"image cache ceil(rate * latency) + 2 would exceed {MAX_IMAGE_CACHE} images"
            bad["expected_rate_hz"] = bad["detector_latency_s"] = reason
    if "depth_registration" not in bad:
        try:
            geometry_config(cfg)
        except ValueError as e:  # GeometryConfig checks the geometry values and their combination
            bad.update({name: str(e) for name in GEOMETRY_PARAMS if name != "depth_registration"})
    return bad


def validate_node_config(cfg: NodeConfig, changes: Mapping[str, Any]) -> tuple[NodeConfig, dict[str, str]]:
    """Apply `changes` to a copy of `cfg`, checking names, types (`coerce_node_value`) and values
    (`check_node_config`): the one validation of NodeConfig, used by the frame processor, the node's
    parameter callbacks and configure, and bag-eval.

    Returns (new config, {}) when all are valid, else (cfg unchanged, {name: reason}). Does not check
    which parameters may change at run time (`FrameProcessor.update` does); usable at node configure.
    """
    hints = typing.get_type_hints(NodeConfig)
    rejected: dict[str, str] = {}
    coerced: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in hints:
            rejected[name] = "unknown parameter"
            continue
        try:
            coerced[name] = coerce_node_value(hints[name], value)
        except ValueError as e:
            rejected[name] = str(e)
    if rejected:
        return cfg, rejected
    new = dataclasses.replace(cfg, **coerced)
    bad = check_node_config(new)
    # A problem in a field nobody touched (e.g. cache size) is blamed on the changed ones.
    rejected = {k: v for k, v in bad.items() if k in coerced}
    if bad and not rejected:
        rejected = {k: "; ".join(f"{b}: {r}" for b, r in bad.items()) for k in coerced} or dict(bad)
    return (cfg, rejected) if rejected else (new, {})
