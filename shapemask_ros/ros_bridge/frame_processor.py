"""The frame processor shared by the rclpy node and bag evaluation: messages in, messages out.

The node only forwards subscription callbacks to `add_image` / `add_detections`, calls `step()` from a
timer (or right after adding) and publishes the `FrameResult`; bag-eval calls `process()` per frame. So
what is tested offline is what runs live. Nothing raises out of `add_*`, `step` or `process`: a bad
message is counted in `stats.dropped` under its reason, logged (throttled per reason), and skipped.

Policies (see shared docs, ros_interfaces.md, "What users complain about"):
- only the newest frame is processed (stale-frame complaints), older unprocessed ones are `superseded`;
- an input stamped before the newest processed frame is `stale` (out-of-order delivery); a jump back
  by more than max(1 s, 2 x detector_latency_s) is a clock reset (bag loop, simulator restart): the
  caches are cleared and counted `time_reset`;
- output headers are the image header, verbatim;
- every parameter update is applied or rejected with a reason, all or nothing (`update`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
import typing
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shapemask_ros.config import NodeConfig
from shapemask_ros.ros_bridge.detections import (
    ParsedDetections,
    detections_to_arrays,
    instances_to_detections,
)
from shapemask_ros.ros_bridge.factory import MessageFactory, stamp_of, stamp_to_ns
from shapemask_ros.ros_bridge.image_codec import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    ImageDecodeError,
    image_to_rgb,
    labels_to_image_msg,
    rgb_to_image_msg,
)
from shapemask_ros.ros_bridge.messages import instances_to_mask_array, overlay_image
from shapemask_ros.ros_bridge.sync import Synchronizer, cache_size_for
from shapemask_ros.runtime.instances import Instances

# Counters that always exist (0 until they happen), so diagnostics show the full set.
DROP_REASONS = (
    "decode_error",
    "unsupported_encoding",
    "bad_size",
    "empty_image",
    "bad_header",
    "no_match",
    "superseded",
    "evicted",
    "bad_box",
    "low_score",
    "filtered",
    "over_max",
    "stale",
    "predictor_error",
    "internal_error",
)

# Parameters the processor applies while running. The rest (model, backend, topics, QoS, namespace)
# only take effect when the node is configured, so `update` rejects them instead of pretending.
RUNTIME_PARAMS = frozenset(
    {
        "self_detect",
        "score_threshold",
        "mask_threshold",
        "max_objects",
        "class_filter",
        "detection_image_width",
        "detection_image_height",
        "sync_slop_s",
        "detector_latency_s",
        "expected_rate_hz",
        "publish_label_image",
        "publish_refined_detections",
        "publish_overlay",
        "no_input_warn_s",
    }
)
MAX_IMAGE_CACHE = 256  # raw images held for matching; 256 x 1080p rgb8 is ~1.6 GB already
MAX_OBJECTS_LIMIT = 65535  # the mono16 label image numbers objects 1..65535
_BACKENDS = ("auto", "tensorrt", "onnxruntime", "tensorflow")
_RELIABILITY = ("reliable", "best_effort")
_LOG_EVERY_S = 5.0


@dataclass
class FrameResult:
    """Everything published for one image. `labels`, `detections` and `overlay` are None when disabled
    (publish_label_image / publish_refined_detections; overlay only when asked with want_overlay)."""

    masks: Any  # shapemask_ros/msg/InstanceMaskArray
    labels: Any | None  # sensor_msgs/Image mono16, value i+1 = masks.instances[i]
    detections: Any | None  # vision_msgs/Detection2DArray with the refined boxes
    overlay: Any | None  # sensor_msgs/Image rgb8
    instances: Instances
    latency_s: float  # decode + predict + message building, by the processor's clock
    dropped: dict[str, int]  # this frame's detection drops (bad_box, low_score, ...) and notes


@dataclass
class ProcessorStats:
    """Counters for diagnostics: drops by reason, processed frames, recent latencies, backend in use."""

    dropped: Counter = field(default_factory=lambda: Counter({r: 0 for r in DROP_REASONS}))
    processed: int = 0
    latency_s: deque = field(default_factory=lambda: deque(maxlen=256))
    backend: str = ""

    def as_dict(self) -> dict[str, str]:
        """Flat string key/values (diagnostic_msgs/KeyValue)."""
        out = {"backend": self.backend, "processed": str(self.processed)}
        if self.latency_s:
            lat = np.asarray(self.latency_s, np.float64)
            out["latency_mean_ms"] = f"{lat.mean() * 1e3:.1f}"
            out["latency_p95_ms"] = f"{np.percentile(lat, 95) * 1e3:.1f}"
        out.update({f"dropped.{k}": str(v) for k, v in sorted(self.dropped.items())})
        return out


def _coerce_param(name: str, tp: Any, value: Any) -> Any:
    """Value of a ROS parameter update as the NodeConfig field type; ValueError with a reason otherwise."""
    if tp is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"expected bool, got {value!r}")
        return bool(value)
    if tp is int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"expected int, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
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


def _check_ranges(cfg: NodeConfig) -> dict[str, str]:
    """Range checks on a whole NodeConfig -> {field: reason} (empty when valid)."""
    bad: dict[str, str] = {}
    for name in ("score_threshold", "mask_threshold"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            bad[name] = "must be in [0, 1]"
    if not 1 <= cfg.max_objects <= MAX_OBJECTS_LIMIT:
        bad["max_objects"] = f"must be in [1, {MAX_OBJECTS_LIMIT}] (mono16 label image)"
    for name in ("image_qos_depth", "detections_qos_depth"):
        if getattr(cfg, name) < 1:
            bad[name] = "must be >= 1"
    for name in ("image_qos_reliability", "detections_qos_reliability"):
        if getattr(cfg, name) not in _RELIABILITY:
            bad[name] = f"must be one of {list(_RELIABILITY)}"
    if cfg.backend not in _BACKENDS:
        bad["backend"] = f"must be one of {list(_BACKENDS)}"
    for name in ("detection_image_width", "detection_image_height"):
        if getattr(cfg, name) < 0:
            bad[name] = "must be >= 0 (0 = same size as the camera image)"
    for name in ("sync_slop_s", "detector_latency_s", "no_input_warn_s"):
        if getattr(cfg, name) < 0:
            bad[name] = "must be >= 0"
    if cfg.expected_rate_hz <= 0:
        bad["expected_rate_hz"] = "must be > 0"
    elif (
        cfg.detector_latency_s >= 0
        and cache_size_for(cfg.expected_rate_hz, cfg.detector_latency_s) > MAX_IMAGE_CACHE
    ):
        reason = f"image cache ceil(rate * latency) + 2 would exceed {MAX_IMAGE_CACHE} images"
        bad["expected_rate_hz"] = bad["detector_latency_s"] = reason
    if not cfg.image_topic:
        bad["image_topic"] = "must not be empty"
    if not cfg.output_namespace:
        bad["output_namespace"] = "must not be empty"
    return bad


def validate_node_config(cfg: NodeConfig, changes: dict[str, Any]) -> tuple[NodeConfig, dict[str, str]]:
    """Apply `changes` to a copy of `cfg`, checking names, types and ranges.

    Returns (new config, {} ) when all are valid, else (cfg unchanged, {name: reason}). Does not check
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
            coerced[name] = _coerce_param(name, hints[name], value)
        except ValueError as e:
            rejected[name] = str(e)
    if rejected:
        return cfg, rejected
    new = dataclasses.replace(cfg, **coerced)
    bad = _check_ranges(new)
    # A range problem in a field nobody touched (e.g. cache size) is blamed on the changed ones.
    rejected = {k: v for k, v in bad.items() if k in coerced}
    if bad and not rejected:
        rejected = {k: "; ".join(f"{b}: {r}" for b, r in bad.items()) for k in coerced} or dict(bad)
    return (cfg, rejected) if rejected else (new, {})


def _image_type_of(msg: Any) -> str:
    """Guess Image vs CompressedImage from the fields (both rosbags and rclpy objects have them)."""
    return COMPRESSED_TYPE if hasattr(msg, "format") and not hasattr(msg, "encoding") else IMAGE_TYPE


def _select(instances: Instances, keep: np.ndarray) -> Instances:
    """Subset of `instances` (order of `keep`)."""
    keep = np.asarray(keep, np.int64)
    return dataclasses.replace(
        instances,
        boxes=instances.boxes[keep],
        scores=instances.scores[keep],
        class_ids=instances.class_ids[keep],
        masks=[instances.masks[int(k)] for k in keep],
        regions=instances.regions[keep],
        mask_scores=instances.mask_scores[keep],
        source_index=instances.source_index[keep],
    )


class FrameProcessor:
    """Images + detections -> InstanceMaskArray (+ label image, refined detections, overlay)."""

    def __init__(
        self,
        predictor: Any,
        cfg: NodeConfig,
        factory: MessageFactory,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
    ) -> None:
        """`predictor` follows the runtime Predictor contract (predict, backend, class_names);
        `logger` needs .warning(str) and .error(str) (a logging.Logger or an rclpy logger)."""
        new, bad = validate_node_config(cfg, {})
        if bad:
            raise ValueError(f"invalid NodeConfig: {bad}")
        self.predictor = predictor
        self.cfg = new
        self.factory = factory
        self.clock = clock
        self.log = logger or logging.getLogger(__name__)
        self.stats = ProcessorStats(backend=str(getattr(predictor, "backend", "")))
        self._sync = Synchronizer(self.cfg.sync_slop_s, self._cache_size())
        self._sync.counters = self.stats.dropped  # one set of counters
        self._latest: tuple[tuple[int, int], Any, str] | None = None  # self-detection: newest image only
        self._last_ns: int | None = None  # stamp of the newest processed frame
        self._last_logged: dict[str, float] = {}
        if hasattr(predictor, "mask_threshold"):
            predictor.mask_threshold = self.cfg.mask_threshold

    # ----------------------------------------------------------------------------------- configuration
    @property
    def self_detect(self) -> bool:
        """True when the model's own detector is used (self_detect or no detections topic)."""
        return bool(self.cfg.self_detect or not self.cfg.detections_topic)

    def _cache_size(self) -> int:
        return cache_size_for(self.cfg.expected_rate_hz, self.cfg.detector_latency_s)

    def update(self, changes: dict[str, Any]) -> dict[str, str]:
        """Apply parameter changes all-or-nothing; returns {name: reason} for rejected ones ({} = applied)."""
        read_only = "read-only while running: set it at launch / reconfigure the node"
        rejected = {n: read_only for n in changes if n not in RUNTIME_PARAMS and hasattr(self.cfg, n)}
        if "mask_threshold" in changes and not hasattr(self.predictor, "mask_threshold"):
            rejected["mask_threshold"] = "the predictor does not support changing mask_threshold"
        new, bad = validate_node_config(self.cfg, changes)
        rejected.update(bad)
        if rejected:
            return rejected
        was_self_detect = self.self_detect
        self.cfg = new
        self._sync.configure(new.sync_slop_s, self._cache_size())
        if hasattr(self.predictor, "mask_threshold"):
            self.predictor.mask_threshold = new.mask_threshold
        if self.self_detect != was_self_detect:
            self._sync.clear()
            self._latest = None
        return {}

    # -------------------------------------------------------------------------------------- logging
    def _drop(self, reason: str, detail: str, n: int = 1) -> None:
        self.stats.dropped[reason] += n
        self._warn(reason, f"dropped ({reason}): {detail}")

    def _warn(self, key: str, text: str) -> None:
        now = self.clock()
        last = self._last_logged.get(key)
        if last is None or now - last >= _LOG_EVERY_S:
            self._last_logged[key] = now
            self.log.warning(f"{text} [{key} total {self.stats.dropped[key]}]")

    # ---------------------------------------------------------------------------------------- input
    def _admit(self, msg: Any, what: str) -> tuple[int, int] | None:
        """Stamp of `msg` if it is not stale; handles clock resets."""
        try:
            stamp = stamp_of(msg)
        except ValueError as e:
            self._drop("bad_header", f"{what}: {e}")
            return None
        key = stamp_to_ns(stamp)
        if self._last_ns is not None and key != 0:
            jump_ns = int(max(1.0, 2.0 * self.cfg.detector_latency_s) * 1e9)
            if self._last_ns - key > jump_ns:
                self.stats.dropped["time_reset"] += 1
                self._warn(
                    "time_reset", f"clock jumped back {(self._last_ns - key) / 1e9:.3f} s; caches cleared"
                )
                self._sync.clear()
                self._latest = None
                self._last_ns = None
            elif key <= self._last_ns:
                self._drop("stale", f"{what} stamped {stamp} is not newer than the last processed frame")
                return None
        return stamp

    def add_image(self, msg: Any, type_name: str | None = None) -> None:
        """Queue an Image / CompressedImage (decoded only if it gets processed)."""
        stamp = self._admit(msg, "image")
        if stamp is None:
            return
        type_name = type_name or _image_type_of(msg)
        if self.self_detect:
            if self._latest is not None:  # normal when the model is slower than the camera: count, no log
                self.stats.dropped["superseded"] += 1
            self._latest = (stamp, msg, type_name)
        else:
            self._sync.add_image(stamp, (msg, type_name))

    def add_detections(self, msg: Any) -> None:
        """Queue a Detection2DArray for matching (ignored in self-detection mode)."""
        if self.self_detect:
            return
        stamp = self._admit(msg, "detections")
        if stamp is not None:
            self._sync.add_detections(stamp, msg)

    # ----------------------------------------------------------------------------------- processing
    def step(self, want_overlay: bool = False) -> FrameResult | None:
        """Process the newest ready frame (pair, or image in self-detection); None when nothing is ready
        or the frame was dropped (counted)."""
        try:
            if self.self_detect:
                if self._latest is None:
                    return None
                _stamp, image_msg, type_name = self._latest
                self._latest = None
                detections_msg = None
            else:
                pair = self._sync.pop_newest_pair()
                if pair is None:
                    return None
                (image_msg, type_name), detections_msg = pair.image, pair.detections
        except Exception as e:  # never let a bug in queueing kill the node's timer
            self._drop("internal_error", f"step: {e!r}\n{traceback.format_exc(limit=3)}")
            return None
        return self.process(image_msg, detections_msg, image_type=type_name, want_overlay=want_overlay)

    def process(
        self,
        image_msg: Any,
        detections_msg: Any | None,
        image_type: str | None = None,
        want_overlay: bool = False,
    ) -> FrameResult | None:
        """Segment one image with the given detections (None = self-detection).

        Returns None when the image cannot be used (decode error, bad header) or the predictor fails;
        the reason is counted in `stats.dropped`. An empty (or fully dropped) detection array gives a
        result with no instances, without calling the predictor.
        """
        t0 = self.clock()
        try:
            header = image_msg.header
            stamp = stamp_of(image_msg)
        except (AttributeError, ValueError) as e:
            self._drop("bad_header", f"image: {e}")
            return None
        try:
            rgb = image_to_rgb(image_msg, image_type or _image_type_of(image_msg))
        except ImageDecodeError as e:
            self._drop("empty_image" if e.reason == "empty" else e.reason, e.detail)
            return None
        try:
            result = self._segment(rgb, header, detections_msg, want_overlay, t0)
        except _PredictorError as e:
            self._drop("predictor_error", str(e))
            return None
        except Exception as e:  # a bug must cost one frame, not the node
            self._drop("internal_error", f"{e!r}\n{traceback.format_exc(limit=3)}")
            return None
        key = stamp_to_ns(stamp)
        if key != 0:
            self._last_ns = key if self._last_ns is None else max(self._last_ns, key)
        return result

    def _predict(self, rgb: np.ndarray, parsed: ParsedDetections | None) -> Instances:
        names = list(getattr(self.predictor, "class_names", []) or [])
        try:
            if parsed is None:
                return self.predictor.predict(rgb, None, None, score_threshold=self.cfg.score_threshold)
            # Detector class strings that are model class names keep their index; others are unknown (-1).
            index = {n: i for i, n in enumerate(names)}
            classes = np.asarray([index.get(c, -1) for c in parsed.class_ids], np.int32)
            return self.predictor.predict(rgb, parsed.boxes, classes, None)
        except Exception as e:
            raise _PredictorError(f"{type(e).__name__}: {e}") from e

    def _segment(
        self, rgb: np.ndarray, header: Any, detections_msg: Any | None, want_overlay: bool, t0: float
    ) -> FrameResult:
        h, w = rgb.shape[:2]
        frame_drops: Counter = Counter()
        names = list(getattr(self.predictor, "class_names", []) or [])
        parsed: ParsedDetections | None = None
        if detections_msg is not None:
            parsed = detections_to_arrays(detections_msg, (h, w), self.cfg)
            frame_drops.update(parsed.dropped)
            instances = self._predict(rgb, parsed) if len(parsed) else Instances.empty((h, w))
        else:
            instances = self._predict(rgb, None)
            instances = self._filter_self_detections(instances, names, frame_drops)
        if tuple(int(v) for v in instances.image_size) != (h, w):
            raise ValueError(f"predictor returned image_size {instances.image_size}, image is {(h, w)}")
        frame_drops.update(instances.dropped)
        backend = str(getattr(self.predictor, "backend", "") or instances.backend)
        self.stats.backend = backend
        masks = instances_to_mask_array(self.factory, instances, header, names, parsed, backend=backend)
        labels = (
            labels_to_image_msg(self.factory, instances.label_image(), header)
            if self.cfg.publish_label_image
            else None
        )
        detections = (
            instances_to_detections(self.factory, instances, header, names, parsed)
            if self.cfg.publish_refined_detections
            else None
        )
        overlay = (
            rgb_to_image_msg(self.factory, overlay_image(rgb, instances), header)
            if want_overlay and self.cfg.publish_overlay
            else None
        )
        for reason, n in frame_drops.items():
            self.stats.dropped[reason] += n
            if reason in ("bad_box", "over_max"):
                self._warn(reason, f"detections dropped ({reason}): {n} in this frame")
        latency = self.clock() - t0
        self.stats.processed += 1
        self.stats.latency_s.append(latency)
        dropped = {k: int(v) for k, v in frame_drops.items() if v}
        return FrameResult(masks, labels, detections, overlay, instances, latency, dropped)

    def _filter_self_detections(self, instances: Instances, names: list[str], drops: Counter) -> Instances:
        """class_filter and max_objects for the model's own detections (given ones are filtered earlier)."""
        keep = np.arange(len(instances))
        if self.cfg.class_filter:
            allowed = set(self.cfg.class_filter)
            ok = [0 <= int(c) < len(names) and names[int(c)] in allowed for c in instances.class_ids]
            drops["filtered"] += int(len(keep) - sum(ok))
            keep = keep[np.asarray(ok, bool)] if len(keep) else keep
        if len(keep) > self.cfg.max_objects:
            order = np.argsort(-instances.scores[keep], kind="stable")[: self.cfg.max_objects]
            drops["over_max"] += len(keep) - len(order)
            keep = np.sort(keep[order])
        if len(keep) == len(instances):
            return instances
        return _select(instances, keep)


class _PredictorError(RuntimeError):
    """The predictor raised; counted as predictor_error."""
