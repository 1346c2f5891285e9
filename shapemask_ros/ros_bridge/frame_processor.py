"""The frame processor shared by the rclpy node and bag evaluation: messages in, messages out.

The node only forwards subscription callbacks to `add_image` / `add_detections` / `add_depth` /
`add_camera_info`, calls `step()` (or `take()` then `run()`, to have a second frame in the network while one
is there) and publishes the `FrameResult`; bag-eval calls `process()` per frame. So what is tested offline
is what runs live. Nothing raises out of `add_*`, `step`, `run` or `process`: a bad message is counted in
`stats.dropped` under its reason, logged (throttled per reason), and skipped.

3D outputs (docs/geometry.md): with a depth image (and the latest CameraInfo) the frame also gets an
ObjectGeometryArray and a PointCloud2 of the object points, both with the depth image's header. Depth is
matched to the chosen frame's image stamp like detections are (exact, then within sync_slop_s); a frame
whose depth has not arrived yet waits up to depth_wait_s. Bad depth input never costs the masks: the
frame goes out without 3D and the reason is counted in `stats.dropped_3d` (GeometryError reasons).

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
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shapemask_ros.config.node_config import (
    LIVE_PARAMS,
    NodeConfig,
    cache_size_for,
    geometry_config,
    validate_node_config,
)
from shapemask_ros.geometry.objects3d import Objects3D
from shapemask_ros.ros_bridge.detections import (
    ParsedDetections,
    detections_to_arrays,
    instances_to_detections,
)
from shapemask_ros.ros_bridge.factory import MessageFactory, stamp_of, stamp_to_ns
from shapemask_ros.ros_bridge.image_codec import (
    ImageDecodeError,
    image_to_rgb,
    labels_to_image_msg,
    rgb_to_image_msg,
)
from shapemask_ros.ros_bridge.messages import instances_to_mask_array
from shapemask_ros.ros_bridge.msg_types import COMPRESSED_TYPE, IMAGE_TYPE
from shapemask_ros.ros_bridge.objects3d_stage import Objects3DStage
from shapemask_ros.ros_bridge.sync import StampCache, Synchronizer
from shapemask_ros.runtime.instances import Instances
from shapemask_ros.runtime.overlay import overlay_image
from shapemask_ros.runtime.predictor import PredictorProtocol

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

# Why a frame has no 3D output (GeometryError reasons, plus the processor's own), and dropped depth
# messages; all counted in ProcessorStats.dropped_3d (0 until they happen).
GEOMETRY_REASONS = (
    "missing_camera_info",  # depth but no CameraInfo (yet), or a CameraInfo without a required field
    "bad_intrinsics",  # K not finite / fx, fy <= 0 / all zeros (uncalibrated), bad size or D
    "unsupported_distortion",
    "size_mismatch",  # depth, colour and CameraInfo sizes disagree and depth_registration does not explain it
    "bad_registration",
    "frame_mismatch",  # depth and colour image (or CameraInfo) in different optical frames: not registered
    "bad_encoding",  # depth encoding other than 16UC1 / mono16 / 32FC1
    "bad_depth",  # depth message malformed (size, step, header)
    "all_invalid_depth",  # not one valid depth pixel in the frame
    "no_depth_match",  # depth is on but no depth image matched the frame in time
    "internal_error",
    "depth_stale",  # depth message stamped before the newest processed frame
    "depth_evicted",  # depth message pushed out of its full cache
    "depth_unused",  # depth message older than a processed frame's match (depth faster than processing)
)
DEPTH_SILENT_S = 1.0  # no depth image for this long: the depth stream is down, frames stop waiting for it

_LOG_EVERY_S = 5.0


@dataclass
class FrameResult:
    """Everything published for one image. `labels`, `detections` and `overlay` are None when disabled
    (publish_label_image / publish_refined_detections; overlay only when asked with want_overlay).

    3D (only with a depth image): `objects` is always filled when the 3D stage ran; `objects3d` unless
    publish_objects3d is off; `points` only when wanted (want_points) and publish_points is on. When the 3D
    stage could not run, all three are None and `geometry_error` says why (a GeometryError reason)."""

    masks: Any  # shapemask_ros/msg/InstanceMaskArray
    labels: Any | None  # sensor_msgs/Image mono16, value i+1 = masks.instances[i]
    detections: Any | None  # vision_msgs/Detection2DArray with the refined boxes
    overlay: Any | None  # sensor_msgs/Image rgb8
    instances: Instances
    latency_s: float  # decode + predict + message building (3D included), by the processor's clock
    dropped: dict[str, int]  # this frame's detection drops (bad_box, low_score, ...) and notes
    objects3d: Any | None = None  # shapemask_ros/msg/ObjectGeometryArray, header = the depth image's
    points: Any | None = None  # sensor_msgs/PointCloud2 of the objects' inlier points, depth header
    objects: Objects3D | None = None  # the numbers behind both (row i = masks.instances[i])
    geometry_error: str = ""  # why there is no 3D although it was asked for ("" = none)
    geometry_s: float = 0.0  # time of the 3D stage (depth decoding, geometry, messages)
    geometry_cpu_s: float = 0.0  # the whole process's CPU time in it (time.process_time): bag-eval's CPU split


@dataclass
class ProcessorStats:
    """Counters for diagnostics: drops by reason, processed frames, recent latencies, backend in use."""

    dropped: Counter = field(default_factory=lambda: Counter({r: 0 for r in DROP_REASONS}))
    processed: int = 0
    latency_s: deque = field(default_factory=lambda: deque(maxlen=256))
    # the Predictor's share of latency_s (its own call, by perf_counter): what the node adds is the rest
    predictor_s: deque = field(default_factory=lambda: deque(maxlen=256))
    backend: str = ""
    dropped_3d: Counter = field(default_factory=lambda: Counter({r: 0 for r in GEOMETRY_REASONS}))
    frames_3d: int = 0  # frames published with 3D outputs
    objects_3d: Counter = field(default_factory=Counter)  # per-object status (ok, too_few_points, ...)
    geometry_error: str = ""  # reason of the newest frame without 3D although asked for; "" after a good one

    def as_dict(self) -> dict[str, str]:
        """Flat string key/values (diagnostic_msgs/KeyValue)."""
        out = {"backend": self.backend, "processed": str(self.processed)}
        if self.latency_s:
            lat = np.asarray(self.latency_s, np.float64)
            out["latency_mean_ms"] = f"{lat.mean() * 1e3:.1f}"
            out["latency_p95_ms"] = f"{np.percentile(lat, 95) * 1e3:.1f}"
        if self.predictor_s:
            out["predictor_mean_ms"] = f"{np.mean(np.asarray(self.predictor_s, np.float64)) * 1e3:.1f}"
        out.update({f"dropped.{k}": str(v) for k, v in sorted(self.dropped.items())})
        out.update({f"dropped_3d.{k}": str(v) for k, v in sorted(self.dropped_3d.items())})
        out.update({f"objects_3d.{k}": str(v) for k, v in sorted(self.objects_3d.items())})
        out["frames_3d"] = str(self.frames_3d)
        if self.geometry_error:
            out["geometry_error"] = self.geometry_error
        return out


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


@dataclass
class _Frame:
    """A frame chosen for processing: image (+ detections) with the image's stamp."""

    stamp: tuple[int, int]
    image: Any
    image_type: str
    detections: Any | None


@dataclass
class FrameJob:
    """A frame taken for processing (`FrameProcessor.take`), with its depth match; `run` it."""

    frame: _Frame
    depth_msg: Any | None
    missing_depth: str  # why it has no depth ("" = none expected or found)
    want_overlay: bool
    want_points: bool
    want_labels: bool = True
    want_detections: bool = True


class FrameProcessor:
    """Images + detections (+ depth, CameraInfo) -> InstanceMaskArray (+ label image, refined detections,
    overlay, ObjectGeometryArray, PointCloud2)."""

    def __init__(
        self,
        predictor: PredictorProtocol,
        cfg: NodeConfig,
        factory: MessageFactory,
        clock: Callable[[], float] = time.monotonic,
        logger: Any = None,
        concurrent_predictor: PredictorProtocol | None = None,
    ) -> None:
        """`predictor`: a runtime `Predictor` or any other `PredictorProtocol` (predict, backend, class_names,
        and the settable mask_threshold and flip_average);
        `logger` needs .warning(str) and .error(str) (a logging.Logger or an rclpy logger);
        `concurrent_predictor`: the same model for `run(job, concurrent=True)`, i.e. while another frame is
        in the network (e.g. one-thread ONNX Runtime sessions, which run side by side without contending)."""
        new, bad = validate_node_config(cfg, {})
        if bad:
            raise ValueError(f"invalid NodeConfig: {bad}")
        self.predictor = predictor
        self.concurrent_predictor = concurrent_predictor
        # Guards every piece of state `run` touches (counters, logs, the 3D stage's caches) so two frames can
        # be run at once; only the predictor call runs outside it.
        self._state = threading.RLock()
        self.cfg = new
        self.factory = factory
        self.clock = clock
        self.log = logger or logging.getLogger(__name__)
        self.stats = ProcessorStats(backend=str(predictor.backend))
        self._sync = Synchronizer(self.cfg.sync_slop_s, self._cache_size())
        self._sync.counters = self.stats.dropped  # one set of counters
        self._latest: tuple[tuple[int, int], Any, str] | None = None  # self-detection: newest image only
        self._last_ns: int | None = None  # stamp of the newest processed frame
        self._last_logged: dict[str, float] = {}
        # 3D: depth images wait for their frame like images wait for detections; CameraInfo: newest kept.
        self._geometry = geometry_config(self.cfg)
        self._depth = StampCache(
            self.cfg.sync_slop_s, self._cache_size(), self.stats.dropped_3d, "depth_evicted", "depth_unused"
        )
        self._depth_seen = False  # add_depth was called: frames from step() then expect depth
        self._last_depth_at: float | None = None  # processor clock at the newest depth arrival
        self._stage3d = Objects3DStage(factory)  # keeps the newest CameraInfo
        self._held: _Frame | None = None  # ready frame waiting for its depth image
        self._waiting_since: float | None = None  # when frames started waiting for depth (inherited)
        self._apply_predictor_params(self.cfg)

    # ----------------------------------------------------------------------------------- configuration
    @property
    def self_detect(self) -> bool:
        """True when the model's own detector is used (self_detect or no detections topic)."""
        return bool(self.cfg.self_detect or not self.cfg.detections_topic)

    @property
    def holds_frame(self) -> bool:
        """True while a ready frame waits for its depth image (the caller should call step() again soon)."""
        return self._held is not None

    @property
    def expects_depth(self) -> bool:
        """True when frames from step() wait for / need a depth image (depth_topic set or add_depth used)."""
        return bool(self.cfg.depth_topic) or self._depth_seen

    def _cache_size(self) -> int:
        return cache_size_for(self.cfg.expected_rate_hz, self.cfg.detector_latency_s)

    def update(self, changes: dict[str, Any]) -> dict[str, str]:
        """Apply parameter changes all-or-nothing; returns {name: reason} for rejected ones ({} = applied)."""
        read_only = "read-only while running: set it at launch / reconfigure the node"
        rejected = {n: read_only for n in changes if n not in LIVE_PARAMS and hasattr(self.cfg, n)}
        new, bad = validate_node_config(self.cfg, changes)
        rejected.update(bad)
        if rejected:
            return rejected
        was_self_detect = self.self_detect
        self.cfg = new
        self._geometry = geometry_config(new)
        self._sync.configure(new.sync_slop_s, self._cache_size())
        self._depth.configure(new.sync_slop_s, self._cache_size())
        self._apply_predictor_params(new)
        if self.self_detect != was_self_detect:
            self._sync.clear()
            self._latest = None
            self._held = None
            self._waiting_since = None
        return {}

    def _apply_predictor_params(self, cfg: NodeConfig) -> None:
        """Hand the predictor(s) their own settings."""
        for predictor in (self.predictor, self.concurrent_predictor):
            if predictor is not None:
                predictor.mask_threshold = cfg.mask_threshold
                predictor.flip_average = cfg.flip_average

    # -------------------------------------------------------------------------------------- logging
    def _drop(self, reason: str, detail: str, n: int = 1) -> None:
        with self._state:
            self.stats.dropped[reason] += n
            self._warn(reason, f"dropped ({reason}): {detail}")

    def _drop_3d(self, reason: str, detail: str) -> None:
        with self._state:
            self.stats.dropped_3d[reason] += 1
            self._warn(f"3d.{reason}", f"no 3D output ({reason}): {detail}", self.stats.dropped_3d[reason])

    def _warn(self, key: str, text: str, total: int | None = None) -> None:
        with self._state:
            now = self.clock()
            last = self._last_logged.get(key)
            if last is None or now - last >= _LOG_EVERY_S:
                self._last_logged[key] = now
                count = self.stats.dropped[key] if total is None else total
                self.log.warning(f"{text} [{key} total {count}]")

    # ---------------------------------------------------------------------------------------- input
    def _admit(self, msg: Any, what: str, stale_reason: str = "stale") -> tuple[int, int] | None:
        """Stamp of `msg` if it is not stale; handles clock resets."""
        try:
            stamp = stamp_of(msg)
        except ValueError as e:
            if what == "depth":
                self._drop_3d("bad_depth", f"depth image: {e}")
            else:
                self._drop("bad_header", f"{what}: {e}")
            return None
        key = stamp_to_ns(stamp)
        if self._last_ns is not None and key != 0:
            jump_ns = int(max(1.0, 2.0 * self.cfg.detector_latency_s) * 1e9)
            if self._last_ns - key > jump_ns:
                self.stats.dropped["time_reset"] += 1
                self._warn("time_reset", f"clock jumped back {(self._last_ns - key) / 1e9:.3f} s; caches cleared")
                self._sync.clear()
                self._depth.clear()
                self._latest = None
                self._held = None
                self._waiting_since = None
                self._last_ns = None
            elif key <= self._last_ns:
                text = f"{what} stamped {stamp} is not newer than the last processed frame"
                if stale_reason == "stale":
                    self._drop("stale", text)
                else:
                    self._drop_3d(stale_reason, text)
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

    def add_depth(self, msg: Any) -> None:
        """Queue a depth Image (16UC1 / 32FC1, aligned with the colour image) for matching to frames.

        Decoded only if its frame gets processed. From the first call on, frames from step() expect depth.
        """
        self._depth_seen = True
        stamp = self._admit(msg, "depth", stale_reason="depth_stale")
        if stamp is None:
            return
        self._last_depth_at = self.clock()
        self._depth.add(stamp, msg)

    def add_camera_info(self, msg: Any) -> None:
        """Keep the newest CameraInfo of the depth image (validated when a frame uses it)."""
        self._stage3d.camera_info = msg

    def prime_rays(self, camera_info_msg: Any, depth_shape: tuple[int, int]) -> int:
        """Undistort every depth pixel's ray of this CameraInfo's camera now, not in the first frames (start-up
        work of a batch run; see Objects3DStage.prime_rays). Returns how many pixels were undistorted."""
        with self._state:
            return self._stage3d.prime_rays(
                camera_info_msg, depth_shape, rectified=self.cfg.depth_rectified, geometry=self._geometry
            )

    # ----------------------------------------------------------------------------------- processing
    def _next_frame(self) -> _Frame | None:
        """The newest ready frame; a held frame (waiting for depth) is superseded by a newer one."""
        frame: _Frame | None = None
        if self.self_detect:
            if self._latest is not None:
                stamp, image_msg, type_name = self._latest
                self._latest = None
                frame = _Frame(stamp, image_msg, type_name, None)
        else:
            pair = self._sync.pop_newest_pair()
            if pair is not None:
                (image_msg, type_name), detections_msg = pair.image, pair.detections
                frame = _Frame(pair.image_stamp, image_msg, type_name, detections_msg)
        if frame is None:
            return self._held
        if self._held is not None:
            self.stats.dropped["superseded"] += 1
        return frame

    def _wait_for_depth(self, frame: _Frame) -> bool:
        """True when `frame` should wait for its depth image: the depth stream is alive and not past the
        frame, and frames have been waiting for less than depth_wait_s."""
        if self._depth.passed(frame.stamp):
            return False  # depth stamps are beyond the frame's: its match is lost
        now = self.clock()
        if self._last_depth_at is None or now - self._last_depth_at > DEPTH_SILENT_S:
            return False  # depth stream down: masks must not wait for it
        if self._waiting_since is None:
            self._waiting_since = now
        return now - self._waiting_since < self.cfg.depth_wait_s

    def step(self, want_overlay: bool = False, want_points: bool = True) -> FrameResult | None:
        """Process the newest ready frame (pair, or image in self-detection) with its depth image when 3D is
        on; None when nothing is ready, the frame waits for depth, or the frame was dropped (counted).

        want_points: build the PointCloud2 (the node passes "someone subscribes").
        """
        job = self.take(want_overlay, want_points)
        return None if job is None else self.run(job)

    def take(
        self,
        want_overlay: bool = False,
        want_points: bool = True,
        want_labels: bool = True,
        want_detections: bool = True,
    ) -> FrameJob | None:
        """The newest ready frame with its depth match, taken out of the queues (`step` without the work);
        None when nothing is ready or the frame waits for depth. Not thread-safe with the `add_*` calls:
        the caller serialises them (the node holds one lock around both). want_labels / want_detections:
        build the label image / refined detections (if published at all; the node passes "someone
        subscribes", as for the overlay and the cloud)."""
        try:
            frame = self._next_frame()
            if frame is None:
                return None
            depth_msg, missing = None, ""
            if self.expects_depth:
                found = self._depth.take(frame.stamp)
                if found is not None:
                    depth_msg = found[1]
                elif self._wait_for_depth(frame):
                    self._held = frame
                    return None
                else:
                    missing = "no_depth_match"
            self._held = None
            self._waiting_since = None
            self._depth.discard_older(stamp_to_ns(frame.stamp) - self._depth.slop_ns)
        except Exception as e:  # never let a bug in queueing kill the node's processing
            self._drop("internal_error", f"step: {e!r}\n{traceback.format_exc(limit=3)}")
            return None
        return FrameJob(frame, depth_msg, missing, want_overlay, want_points, want_labels, want_detections)

    def run(self, job: FrameJob, concurrent: bool = False) -> FrameResult | None:
        """Process a taken frame (see `step`). Two jobs may run at once from two threads; `concurrent`
        (another frame is in the network now) runs this one on `concurrent_predictor` when there is one."""
        predictor = self.concurrent_predictor if concurrent and self.concurrent_predictor is not None else None
        frame = job.frame
        return self._run(
            frame.image,
            frame.detections,
            frame.image_type,
            job.want_overlay,
            job.want_points,
            job.depth_msg,
            None,
            job.missing_depth,
            predictor,
            want_labels=job.want_labels,
            want_detections=job.want_detections,
        )

    def process(
        self,
        image_msg: Any,
        detections_msg: Any | None,
        image_type: str | None = None,
        want_overlay: bool = False,
        depth_msg: Any | None = None,
        camera_info_msg: Any | None = None,
        want_points: bool = True,
    ) -> FrameResult | None:
        """Segment one image with the given detections (None = self-detection).

        Returns None when the image cannot be used (decode error, bad header) or the predictor fails;
        the reason is counted in `stats.dropped`. An empty (or fully dropped) detection array gives a
        result with no instances, without calling the predictor.

        depth_msg: the depth Image of this frame (the caller matched it) -> 3D outputs with
        camera_info_msg, or the newest one given to add_camera_info. Bad depth input leaves the 3D fields
        None with `geometry_error` set (counted in stats.dropped_3d); the masks are unaffected.
        """
        return self._run(
            image_msg, detections_msg, image_type, want_overlay, want_points, depth_msg, camera_info_msg, ""
        )

    def _run(
        self,
        image_msg: Any,
        detections_msg: Any | None,
        image_type: str | None,
        want_overlay: bool,
        want_points: bool,
        depth_msg: Any | None,
        camera_info_msg: Any | None,
        missing_depth: str,
        predictor: PredictorProtocol | None = None,
        want_labels: bool = True,
        want_detections: bool = True,
    ) -> FrameResult | None:
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
            parsed, frame_drops = self._parse(rgb, detections_msg)
            if parsed is not None and not len(parsed):
                instances = Instances.empty(rgb.shape[:2])  # nothing to segment: no predictor call
            else:
                instances = self._predict(rgb, parsed, predictor or self.predictor)  # outside the lock
            with self._state:
                result = self._finish(
                    rgb, header, parsed, instances, frame_drops, t0, want_overlay, want_labels, want_detections
                )
        except _PredictorError as e:
            self._drop("predictor_error", str(e))
            return None
        except Exception as e:  # a bug must cost one frame, not the node
            self._drop("internal_error", f"{e!r}\n{traceback.format_exc(limit=3)}")
            return None
        with self._state:
            if depth_msg is not None or missing_depth:
                self._add_geometry(result, header, depth_msg, camera_info_msg, want_points, missing_depth)
                result.latency_s = self.clock() - t0
            self.stats.latency_s.append(result.latency_s)
            key = stamp_to_ns(stamp)
            if key != 0:
                self._last_ns = key if self._last_ns is None else max(self._last_ns, key)
        return result

    # ------------------------------------------------------------------------------------------- 3D
    def _add_geometry(
        self,
        result: FrameResult,
        image_header: Any,
        depth_msg: Any | None,
        camera_info_msg: Any | None,
        want_points: bool,
        missing_depth: str,
    ) -> None:
        """The 3D stage (objects3d_stage.py): fills result.objects / objects3d / points, or geometry_error
        (counted, logged)."""
        t0, c0 = self.clock(), time.process_time()
        out = self._stage3d.run(
            result.instances,
            result.masks,
            image_header,
            depth_msg,
            camera_info_msg,
            rectified=self.cfg.depth_rectified,
            geometry=self._geometry,
            want_points=want_points and self.cfg.publish_points,
            want_objects3d=self.cfg.publish_objects3d,
            missing_depth=missing_depth,
        )
        result.objects, result.objects3d, result.points = out.objects, out.objects3d, out.points
        result.geometry_s = self.clock() - t0
        result.geometry_cpu_s = time.process_time() - c0
        result.geometry_error = out.error
        self.stats.geometry_error = out.error
        if out.error:
            self._drop_3d(out.error, out.detail)
        else:
            self.stats.frames_3d += 1
            assert result.objects is not None
            self.stats.objects_3d.update(result.objects.status)

    def _predict(self, rgb: np.ndarray, parsed: ParsedDetections | None, predictor: PredictorProtocol) -> Instances:
        try:
            t0 = time.perf_counter()
            if parsed is None:
                instances = predictor.predict(rgb, None, None, score_threshold=self.cfg.score_threshold)
            else:
                # Detector class strings that are model class names keep their index; others are unknown (-1).
                index = {n: i for i, n in enumerate(predictor.class_names)}
                classes = np.asarray([index.get(c, -1) for c in parsed.class_ids], np.int32)
                instances = predictor.predict(rgb, parsed.boxes, classes, None)
            self.stats.predictor_s.append(time.perf_counter() - t0)  # deque.append: atomic, no lock needed
            return instances
        except Exception as e:
            raise _PredictorError(f"{type(e).__name__}: {e}") from e

    def _parse(self, rgb: np.ndarray, detections_msg: Any | None) -> tuple[ParsedDetections | None, Counter]:
        """The given detections as arrays (None = self-detection) and what was dropped from them."""
        frame_drops: Counter = Counter()
        if detections_msg is None:
            return None, frame_drops
        parsed = detections_to_arrays(detections_msg, rgb.shape[:2], self.cfg)
        frame_drops.update(parsed.dropped)
        return parsed, frame_drops

    def _finish(
        self,
        rgb: np.ndarray,
        header: Any,
        parsed: ParsedDetections | None,
        instances: Instances,
        frame_drops: Counter,
        t0: float,
        want_overlay: bool,
        want_labels: bool = True,
        want_detections: bool = True,
    ) -> FrameResult:
        """The predictor's instances -> messages and counters (under the state lock)."""
        h, w = rgb.shape[:2]
        names = list(self.predictor.class_names)
        if parsed is None:
            instances = self._filter_self_detections(instances, names, frame_drops)
        if tuple(int(v) for v in instances.image_size) != (h, w):
            raise ValueError(f"predictor returned image_size {instances.image_size}, image is {(h, w)}")
        frame_drops.update(instances.dropped)
        backend = str(self.predictor.backend or instances.backend)
        self.stats.backend = backend
        masks = instances_to_mask_array(self.factory, instances, header, names, parsed, backend=backend)
        labels = (
            labels_to_image_msg(self.factory, instances.label_image(), header)
            if self.cfg.publish_label_image and want_labels
            else None
        )
        detections = (
            instances_to_detections(self.factory, instances, header, names, parsed)
            if self.cfg.publish_refined_detections and want_detections
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
