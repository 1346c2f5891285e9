"""`shapemask bag-eval`: run the node's frame processor over a recorded rosbag2, offline.

Reads the bag once in bag (receive) order, pairs every image with its detections -- and, when asked, its
aligned depth image and camera info -- processes each pair with the same `FrameProcessor` the node uses,
and writes an output bag (the input topics copied raw + the node's outputs), a report (markdown + JSON)
and overlays. See docs/bag_eval.md.

Pairing offline (no frame is dropped for being old): images and detection arrays go through the node's
`Synchronizer` (exact stamp first, then the nearest image within `sync_slop_s`), and the ready pair is
taken after *every* message, so the node's "newest pair only" policy never has an older ready pair to
discard. What still cannot be paired is counted: an image whose detections never come (`image_unused`),
a detection array whose image is missing (`no_match`), an image pushed out of the cache because its
detections came more than the cache (`64` images by default offline) later (`evicted`). Without a
detections topic every image is processed with the model's own boxes. A paired frame then waits for its
depth image (exact stamp, then nearest within the slop) for at most `depth_wait_s` of bag time (then
it goes out without 3D, counted `no_depth_match`); camera info is matched the same way, else the latest
one received is used (counted `camera_info_unsynced`). The 3D stage itself is the processor's.

Timing: per frame, `model` is the time inside `Predictor.predict` (letterbox + network + pasting) and
`network` the backend calls alone; `geometry` is the processor's 3D stage (real work, reported on its
own); `overhead` is everything else the frame costs: reading and deserialising its messages (`io`), the
processor's decoding, validation and message building (`process_other`) and serialising + writing the
outputs (`encode`). Overlays and copying the input topics are reported separately (optional debug
outputs / proportional to the bag, not to the frames).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from shapemask_ros.bag.reader import BagError, BagMessage, BagReader
from shapemask_ros.bag.report import (
    REPORT_FORMAT,
    FramePrediction,
    GroundTruth,
    evaluate_accuracy,
    frame_prediction,
    geometry_summary,
    latency_stats,
    now_iso,
    write_report,
)
from shapemask_ros.bag.writer import STORAGES, AtomicOutputDir, BagWriter
from shapemask_ros.config import NodeConfig, to_dict
from shapemask_ros.ros_bridge.detections import DETECTION_ARRAY_TYPE
from shapemask_ros.ros_bridge.factory import RosbagsFactory, stamp_of, stamp_to_ns
from shapemask_ros.ros_bridge.frame_processor import FrameProcessor, FrameResult, validate_node_config
from shapemask_ros.ros_bridge.image_codec import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    ImageDecodeError,
    image_to_rgb,
)
from shapemask_ros.ros_bridge.messages import MASK_ARRAY_TYPE
from shapemask_ros.ros_bridge.sync import StampCache, Synchronizer
from shapemask_ros.runtime.overlay import instance_color, overlay_image

log = logging.getLogger(__name__)

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
OBJECTS3D_TYPE = "shapemask_ros/msg/ObjectGeometryArray"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
OFFLINE_IMAGE_CACHE = 64  # images waiting for detections; offline memory is cheap, lost frames are not
STAMP_CACHE = 64  # depth images / camera infos kept for matching


@dataclass
class BagEvalOptions:
    """Everything `bag-eval` needs (the CLI fills it; tests construct it)."""

    bag: str
    image_topic: str
    out: str
    detections_topic: str = ""  # "" = self-detection (the model's own boxes)
    depth_topic: str = ""
    camera_info_topic: str = ""
    gt: str = ""  # COCO JSON keyed by images[].stamp_ns
    gt_topic: str = ""  # InstanceMaskArray topic with ground-truth masks
    model: str = ""  # bundle directory; "" = the shipped demo model
    backend: str = "auto"
    max_frames: int = 0  # 0 = all images
    overlays: int = 8  # PNG overlays of the first N processed frames
    video: bool = False  # MP4 of every processed frame instead of PNGs
    overwrite: bool = False
    storage: str = "mcap"
    compress: bool = False  # zstd costs ~30 ms per 1 MB chunk here: opt-in
    copy_inputs: bool = True  # copy every input topic into the output bag
    distro: str = "humble"
    strict: bool = False  # a damaged bag is an error instead of being read up to the damage
    node: NodeConfig = field(default_factory=NodeConfig)  # thresholds, slop, latency, outputs

    def validate(self) -> None:
        """BagError on inconsistent options."""
        if bool(self.depth_topic) != bool(self.camera_info_topic):
            raise BagError("--depth-topic and --camera-info-topic go together (3D needs both)")
        if self.gt and self.gt_topic:
            raise BagError("give either --gt or --gt-topic, not both")
        if self.max_frames < 0 or self.overlays < 0:
            raise BagError("--max-frames and --overlays must be >= 0")
        if self.storage not in STORAGES:
            raise BagError(f"--storage must be one of {sorted(STORAGES)}")
        _, bad = validate_node_config(self.node_config(), {})
        if bad:
            raise BagError(f"invalid parameters: {bad}")

    def node_config(self) -> NodeConfig:
        """The processor's parameters: `node` with this run's topics."""
        return dataclasses.replace(
            self.node,
            image_topic=self.image_topic,
            detections_topic=self.detections_topic,
            depth_topic=self.depth_topic,
            camera_info_topic=self.camera_info_topic,
        )


@dataclass
class BagEvalResult:
    """Where things went, and the report itself."""

    out: Path
    bag: Path
    report_json: Path
    report_md: Path
    report: dict[str, Any]


# ------------------------------------------------------------------------------------------- timing


class _TimedBackend:
    """Wraps a runtime backend to time its network calls."""

    def __init__(self, inner: Any, sink: list[float]) -> None:
        self._inner = inner
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name in ("segment_boxes", "detect_and_segment") and callable(attr):

            def timed(*a: Any, **k: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return attr(*a, **k)
                finally:
                    self._sink[0] += time.perf_counter() - t0

            return timed
        return attr


class _TimedPredictor:
    """The predictor as the processor sees it, with the time spent in `predict` recorded: wall, CPU of
    the whole process (the runtime's worker threads included) and CPU of the calling thread."""

    def __init__(self, inner: Any) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["network_s"] = [0.0]
        self.__dict__["acc"] = dict.fromkeys(("model", "model_cpu", "model_thread_cpu"), 0.0)
        backend = getattr(inner, "runtime_backend", None)
        if backend is not None:
            inner.runtime_backend = _TimedBackend(backend, self.network_s)

    def predict(self, *a: Any, **k: Any) -> Any:
        t0, p0, c0 = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            return self._inner.predict(*a, **k)
        finally:
            self.acc["model"] += time.perf_counter() - t0
            self.acc["model_cpu"] += time.process_time() - p0
            self.acc["model_thread_cpu"] += time.thread_time() - c0

    def take(self) -> dict[str, float]:
        """{model, model_cpu, model_thread_cpu, network} seconds since the last call."""
        out = {**self.acc, "network": self.network_s[0]}
        self.acc.update(dict.fromkeys(self.acc, 0.0))
        self.network_s[0] = 0.0
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:  # e.g. mask_threshold set by the processor
        setattr(self._inner, name, value)


# ------------------------------------------------------------------------------------------ pairing


@dataclass
class _Input:
    """One decoded message and what it cost to get it."""

    msg: Any
    stamp_ns: int
    log_time_ns: int
    io_s: float
    io_cpu_s: float
    type_name: str = ""


@dataclass
class _Frame:
    image: _Input
    detections: _Input | None
    ready_log_ns: int  # bag time at which the pair became complete
    depth: _Input | None = None
    info: _Input | None = None


def _stamp(ns: int) -> tuple[int, int]:
    return divmod(int(ns), 1_000_000_000)


class _Pairer:
    """Offline pairing (see the module docstring): frames come out in the order they become complete."""

    def __init__(
        self, cfg: NodeConfig, self_detect: bool, need_depth: bool, drops: collections.Counter
    ) -> None:
        self.self_detect = self_detect
        self.need_depth = need_depth
        self.drops = drops
        self.sync = Synchronizer(cfg.sync_slop_s, OFFLINE_IMAGE_CACHE)
        self.sync.counters = drops
        self.depth = StampCache(cfg.sync_slop_s, STAMP_CACHE, drops, "depth_evicted", "depth_unused")
        self.info = StampCache(
            cfg.sync_slop_s, STAMP_CACHE, drops, "camera_info_evicted", "camera_info_unused"
        )
        self.latest_info: _Input | None = None
        self.wait_ns = int(round(max(cfg.depth_wait_s, cfg.sync_slop_s) * 1e9))  # bag time
        self.waiting: collections.deque[_Frame] = collections.deque()

    def add_image(self, item: _Input) -> None:
        if self.self_detect:
            self.waiting.append(_Frame(item, None, item.log_time_ns))
            return
        self.sync.add_image(_stamp(item.stamp_ns), item)
        self._pop(item.log_time_ns)

    def add_detections(self, item: _Input) -> None:
        self.sync.add_detections(_stamp(item.stamp_ns), item)
        self._pop(item.log_time_ns)

    def add_depth(self, item: _Input) -> None:
        self.depth.add(_stamp(item.stamp_ns), item)

    def add_camera_info(self, item: _Input) -> None:
        self.info.add(_stamp(item.stamp_ns), item)
        if self.latest_info is None or item.stamp_ns >= self.latest_info.stamp_ns:
            self.latest_info = item

    def _pop(self, now_ns: int) -> None:
        while (pair := self.sync.pop_newest_pair()) is not None:
            self.waiting.append(_Frame(pair.image, pair.detections, now_ns))

    def ready(self, now_ns: int, final: bool = False) -> list[_Frame]:
        """Frames to process now: complete ones, and those whose depth can no longer come (the depth
        stream is past them, it waited depth_wait_s of bag time, or the bag ended)."""
        out, keep = [], collections.deque()
        for fr in self.waiting:
            if self.need_depth:
                stamp = _stamp(fr.image.stamp_ns)
                found = self.depth.take(stamp)
                fr.depth = found[1] if found else None
                waited = now_ns - fr.ready_log_ns > self.wait_ns
                if fr.depth is None and not (final or waited or self.depth.passed(stamp)):
                    keep.append(fr)
                    continue
                info = self.info.take(stamp)
                fr.info = info[1] if info else self.latest_info
                if info is None and fr.info is not None:
                    self.drops["camera_info_unsynced"] += 1  # static intrinsics: the newest one is used
            out.append(fr)
        self.waiting = keep
        return out

    def finish(self) -> None:
        """Count what is left unpaired at the end of the bag."""
        self.drops["image_unused"] += len(self.sync)
        self.drops["no_match"] += self.sync.pending_detections
        self.sync.clear()


# --------------------------------------------------------------------------------------------- run


def _stamp_ns(msg: Any) -> int | None:
    try:
        return stamp_to_ns(stamp_of(msg))
    except ValueError:
        return None


def _best_label(inst: Any) -> tuple[str, float]:
    """(class id string, score) of an InstanceMask's first (best) vision_msgs/ObjectHypothesis."""
    if not len(inst.hypotheses):
        return "", 0.0
    return str(inst.hypotheses[0].class_id), float(inst.hypotheses[0].score)


def load_predictor(model: str, backend: str) -> Any:
    """Predictor for a bundle path ("" = the shipped demo model); BagError with the reason otherwise."""
    from shapemask_ros.runtime.bundle import resolve_model_path
    from shapemask_ros.runtime.predictor import Predictor

    path = resolve_model_path(model)
    if not Path(path).exists():
        hint = " (the shipped demo model: build it, or pass --model)" if not model else ""
        raise BagError(f"model bundle not found: {path}{hint}")
    try:
        return Predictor.load(path, backend)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        raise BagError(f"cannot load model {path} with backend {backend!r}: {e}") from None


class _Evaluation:
    """One bag-eval run (state shared by the read loop and the frame handler)."""

    def __init__(self, opts: BagEvalOptions, predictor: Any, reader: BagReader, out: AtomicOutputDir) -> None:
        self.opts = opts
        self.reader = reader
        self.out = out
        self.factory = RosbagsFactory(reader.typestore)
        self.cfg = opts.node_config()
        self.timed = _TimedPredictor(predictor)
        self.processor = FrameProcessor(
            self.timed, self.cfg, self.factory, clock=time.perf_counter, logger=log
        )
        self.drops: collections.Counter = collections.Counter()
        self.pairer = _Pairer(self.cfg, self.processor.self_detect, bool(opts.depth_topic), self.drops)
        self.writer = BagWriter(
            out.path / "bag", reader.typestore, storage=opts.storage, compress=opts.compress
        )
        self.ns = self.cfg.output_namespace.rstrip("/")
        self.outputs: dict[str, Any] = {}
        self.frames: list[dict[str, float]] = []
        self.preds: list[FramePrediction] = []
        self.stamps_read: list[int] = []
        self.gt_msgs: list[Any] = []
        self.overlay_files: list[str] = []
        self.video: Any = None
        self.video_size: tuple[int, int] = (0, 0)
        self.images_read = 0
        self.overlay_s = 0.0
        self.copy_s = 0.0
        self.copied = 0
        self.with_geometry = 0
        self.has_gt = bool(opts.gt or opts.gt_topic)
        self.loop_cpu_s = 0.0

    # -- outputs
    def _conn(self, name: str, typ: str) -> Any:
        key = f"{self.ns}/{name}"
        if key not in self.outputs:
            self.outputs[key] = self.writer.add_output(key, typ)
        return self.outputs[key]

    def _write_outputs(self, result: FrameResult, log_ns: int) -> None:
        self.writer.write(self._conn("masks", MASK_ARRAY_TYPE), log_ns, result.masks)
        if result.labels is not None:
            self.writer.write(self._conn("labels", IMAGE_TYPE), log_ns, result.labels)
        if result.detections is not None:
            self.writer.write(self._conn("detections", DETECTION_ARRAY_TYPE), log_ns, result.detections)
        if result.objects3d is not None:
            self.writer.write(self._conn("objects3d", OBJECTS3D_TYPE), log_ns, result.objects3d)
        if result.points is not None:
            self.writer.write(self._conn("points", POINTS_TYPE), log_ns, result.points)

    # -- per frame
    def handle(self, frame: _Frame, now_ns: int) -> None:
        if self.opts.depth_topic and frame.depth is None:
            self.drops["no_depth_match"] += 1  # processed without 3D
        self.timed.take()
        t0, c0 = time.perf_counter(), time.thread_time()
        result = self.processor.process(
            frame.image.msg,
            frame.detections.msg if frame.detections else None,
            image_type=frame.image.type_name,
            depth_msg=frame.depth.msg if frame.depth else None,
            camera_info_msg=frame.info.msg if frame.info else None,
        )
        t1, c1 = time.perf_counter(), time.thread_time()
        tm = self.timed.take()
        if result is None:  # counted by the processor (decode error, predictor error, ...)
            return
        self._write_outputs(result, max(now_ns, frame.ready_log_ns))
        t2, c2 = time.perf_counter(), time.thread_time()
        inputs = [x for x in (frame.image, frame.detections, frame.depth, frame.info) if x is not None]
        io_s, io_cpu = sum(x.io_s for x in inputs), sum(x.io_cpu_s for x in inputs)
        geometry_s = float(result.geometry_s)
        process_other = max((t1 - t0) - tm["model"] - geometry_s, 0.0)
        # CPU: our thread's time outside the predictor (the 3D stage included: it runs on this thread)
        process_cpu = max((c1 - c0) - tm["model_thread_cpu"], 0.0)
        self.frames.append(
            {
                "model": tm["model"],
                "network": tm["network"],
                "geometry": geometry_s,
                "io": io_s,
                "process_other": process_other,
                "encode": t2 - t1,
                "overhead": io_s + process_other + (t2 - t1),
                "total": io_s + (t2 - t0),
                "cpu_model": tm["model_cpu"],
                "cpu_io": io_cpu,
                "cpu_process": process_cpu,
                "cpu_encode": c2 - c1,
                "cpu_overhead": io_cpu + process_cpu + (c2 - c1),
            }
        )
        objects = result.objects
        if objects is not None:
            self.with_geometry += 1
        labels = [_best_label(inst) for inst in result.masks.instances]
        self.preds.append(
            frame_prediction(
                frame.image.stamp_ns, result.instances, labels, objects, encode_masks=self.has_gt
            )
        )
        self._overlay(frame, result, objects, labels)

    def _overlay(
        self, frame: _Frame, result: FrameResult, objects: Any, labels: list[tuple[str, float]]
    ) -> None:
        k = len(self.preds) - 1
        if not self.opts.video and k >= self.opts.overlays:
            return
        t0 = time.perf_counter()
        try:
            rgb = image_to_rgb(frame.image.msg, frame.image.type_name)
        except ImageDecodeError:  # cannot happen for a processed frame; never fail the run for a picture
            return
        img = overlay_image(rgb, result.instances)
        for i, (cls, score) in enumerate(labels):
            x1, y1 = (int(v) for v in result.instances.boxes[i][:2])
            text = f"{cls} {score:.2f}"
            if objects is not None and math.isfinite(float(objects.centroids[i][2])):
                text += f" z={objects.centroids[i][2]:.2f}m"
            org = (x1 + 2, max(y1 - 4, 10))
            for color, thick in (((0, 0, 0), 3), (instance_color(i), 1)):  # dark halo: readable anywhere
                cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, thick, cv2.LINE_AA)
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if self.opts.video:
            size = (bgr.shape[1], bgr.shape[0])
            if self.video is None:
                path = self.out.path / "overlay.mp4"
                self.video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self._fps(), size)
                self.video_size = size
                if not self.video.isOpened():
                    raise BagError(
                        "cv2.VideoWriter cannot write MP4 (mp4v) here; use --overlays instead of --video"
                    )
            if size == self.video_size:
                self.video.write(bgr)
            else:  # an MP4 has one frame size
                self.drops["video_size_changed"] += 1
        else:
            name = f"overlays/frame_{k:04d}_{frame.image.stamp_ns}.png"
            (self.out.path / "overlays").mkdir(exist_ok=True)
            ok, png = cv2.imencode(".png", bgr)
            if ok:
                (self.out.path / name).write_bytes(png.tobytes())  # inside the atomic output directory
                self.overlay_files.append(name)
        self.overlay_s += time.perf_counter() - t0

    def _fps(self) -> float:
        info = self.reader.topics.get(self.opts.image_topic)
        dur = self.reader.reader.duration / 1e9
        return float(min(max(info.count / dur, 1.0), 60.0)) if info and dur > 0 else 15.0

    # -- reading
    def _decoded(self, m: BagMessage, type_name: str = "") -> _Input | None:
        """The decoded message with its stamp and read + deserialise time; None when unusable (counted)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        msg = self.reader.decode_or_none(m)
        io_s, io_cpu = m.read_s + time.perf_counter() - t0, m.read_cpu_s + time.thread_time() - c0
        if msg is None:
            return None
        stamp = _stamp_ns(msg)
        if stamp is None:
            self.drops[f"bad_header:{m.topic}"] += 1
            return None
        return _Input(msg, stamp, m.log_time_ns, io_s, io_cpu, type_name)

    def _copy(self, m: BagMessage) -> None:
        t0 = time.perf_counter()
        conn = self.writer.copy_connection(m.connection)
        if conn is not None:
            self.writer.write_raw(conn, m.log_time_ns, m.raw)
            self.copied += 1
        self.copy_s += time.perf_counter() - t0

    def _consume(self, m: BagMessage) -> None:
        """Decode a message of a topic we use and hand it to the pairing (or keep it as ground truth)."""
        o = self.opts
        item = self._decoded(m, m.msgtype if m.topic == o.image_topic else "")
        if item is None:
            return
        if m.topic == o.image_topic:
            self.images_read += 1
            self.stamps_read.append(item.stamp_ns)
            self.pairer.add_image(item)
        elif m.topic == o.detections_topic:
            self.pairer.add_detections(item)
        elif m.topic == o.depth_topic:
            self.pairer.add_depth(item)
        elif m.topic == o.camera_info_topic:
            self.pairer.add_camera_info(item)
        elif m.topic == o.gt_topic:
            self.gt_msgs.append(item.msg)

    def run(self) -> None:
        """Read the bag once, in receive order; process frames as they become complete."""
        o = self.opts
        topics = (o.image_topic, o.detections_topic, o.depth_topic, o.camera_info_topic, o.gt_topic)
        consumed = {t for t in topics if t}
        stop_after_ns: int | None = None
        now = 0
        for m in self.reader.messages(None if o.copy_inputs else consumed):
            now = m.log_time_ns
            if stop_after_ns is not None and now > stop_after_ns:
                break
            if o.copy_inputs:
                self._copy(m)
            if m.topic not in consumed or (stop_after_ns is not None and m.topic == o.image_topic):
                continue
            self._consume(m)
            if o.max_frames and stop_after_ns is None and self.images_read >= o.max_frames:
                # keep reading until the last image's detections and depth can have arrived
                wait_s = self.cfg.detector_latency_s + self.cfg.depth_wait_s + self.cfg.sync_slop_s
                stop_after_ns = now + int(round(wait_s * 1e9))
            for frame in self.pairer.ready(now):
                self.handle(frame, now)
        for frame in self.pairer.ready(now, final=True):
            self.handle(frame, now)
        self.pairer.finish()
        if self.video is not None:
            self.video.release()


def evaluate_bag(
    opts: BagEvalOptions, predictor: Any = None, progress: Callable[[str], None] | None = None
) -> BagEvalResult:
    """Run bag evaluation (see the module docstring). `predictor`: inject one (tests); default: load
    `opts.model` with `opts.backend`. Raises BagError for user errors; nothing is left at `opts.out`
    unless the whole run succeeds."""
    opts.validate()
    say = progress or (lambda s: log.info("%s", s))
    gt_file = GroundTruth.from_json(opts.gt) if opts.gt else None
    if opts.gt or opts.gt_topic:
        try:
            import training.evaluation  # noqa: F401  (pycocotools glue for AP)
        except ImportError as e:
            raise BagError(
                f"mask AP needs the training package (pip install shapemask_ros[training]): {e}"
            ) from None
    with BagReader(opts.bag, distro=opts.distro, strict=opts.strict) as reader:
        reader.require_topic(opts.image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image")
        if opts.detections_topic:
            reader.require_topic(opts.detections_topic, (DETECTION_ARRAY_TYPE,), "detections")
        if opts.depth_topic:
            reader.require_topic(opts.depth_topic, (IMAGE_TYPE,), "depth")
            reader.require_topic(opts.camera_info_topic, (CAMERA_INFO_TYPE,), "camera info")
        if opts.gt_topic:
            reader.require_topic(opts.gt_topic, (MASK_ARRAY_TYPE,), "ground-truth")
        for t in (
            opts.image_topic,
            opts.detections_topic,
            opts.depth_topic,
            opts.camera_info_topic,
            opts.gt_topic,
        ):
            if t and not reader.can_decode(t):
                raise BagError(
                    f"topic {t}: type {reader.topics[t].declared_type!r} is unknown "
                    "and the bag has no definition of it"
                )
        if predictor is None:
            say(f"loading model {opts.model or '(shipped demo model)'} (backend {opts.backend})")
            predictor = load_predictor(opts.model, opts.backend)
        try:
            out = AtomicOutputDir(opts.out, overwrite=opts.overwrite)
        except FileExistsError as e:
            raise BagError(str(e)) from None
        except OSError as e:  # e.g. a read-only or missing parent directory
            raise BagError(f"cannot create the output directory {opts.out}: {e}") from None
        with out:
            ev = _Evaluation(opts, predictor, reader, out)
            say(f"reading {opts.bag}: {reader.describe_topics()}")
            t0, p0 = time.perf_counter(), time.process_time()
            with ev.writer:
                ev.run()
            wall, ev.loop_cpu_s = time.perf_counter() - t0, time.process_time() - p0
            gt = gt_file
            if opts.gt_topic:
                gt = GroundTruth.from_messages(ev.gt_msgs, f"topic {opts.gt_topic}")
            report = _report(ev, reader, gt, wall)
            if reader.damage is not None:
                say(f"damaged input: {reader.damage.describe()}")
            json_path, md_path = write_report(out.path, report)
            final = out.commit()
    return BagEvalResult(final, final / "bag", final / json_path.name, final / md_path.name, report)


def _report(ev: _Evaluation, reader: BagReader, gt: GroundTruth | None, wall: float) -> dict[str, Any]:
    o = ev.opts
    keys = ("total", "model", "network", "geometry", "overhead", "io", "process_other", "encode")
    per_frame = {k: latency_stats([f[k] for f in ev.frames]) for k in keys}
    cpu_keys = ("cpu_model", "cpu_overhead", "cpu_io", "cpu_process", "cpu_encode")
    per_frame_cpu = {k[4:]: latency_stats([f[k] for f in ev.frames]) for k in cpu_keys}
    cpu_model_sum = sum(f["cpu_model"] for f in ev.frames)
    cpu_over_sum = sum(f["cpu_overhead"] for f in ev.frames)
    model_sum = sum(f["model"] for f in ev.frames)
    over_sum = sum(f["overhead"] for f in ev.frames)
    # Everything of the read/process/write loop that is not model, 3D or overlays: reading every message,
    # copying the inputs, pairing, the processor's own work and writing the outputs.
    run_over = wall - model_sum - sum(f["geometry"] for f in ev.frames) - ev.overlay_s
    proc_drops = {k: int(v) for k, v in ev.processor.stats.dropped.items() if v}
    sync_drops = {k: int(v) for k, v in ev.drops.items() if v}
    backend = str(getattr(ev.timed, "backend", "") or ev.processor.stats.backend)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": now_iso(),
        "input": {
            "bag": str(o.bag),
            "storage": reader.storage_id,
            "compression": reader.compression,
            "topics": {t.name: {"type": t.declared_type, "count": t.count} for t in reader.topics.values()},
            "image_topic": o.image_topic,
            "detections_topic": o.detections_topic or None,
            "depth_topic": o.depth_topic or None,
            "camera_info_topic": o.camera_info_topic or None,
            "max_frames": o.max_frames,
            # a damaged recording read up to the damage: what was lost (None: the bag is intact)
            "damage": reader.damage.to_dict() if reader.damage is not None else None,
        },
        "model": {
            # the bundle actually loaded (resolved path), else what was asked for
            "path": str(
                getattr(getattr(ev.timed, "bundle", None), "path", "") or o.model or "(given predictor)"
            ),
            "backend": backend,
            "skipped_backends": dict(getattr(ev.timed, "skipped_backends", {}) or {}),
            "class_names": list(getattr(ev.timed, "class_names", []) or []),
        },
        "output": {
            "bag": "bag",
            "storage": o.storage,
            "topics": dict(sorted(ev.writer.counts.items())),
            "overlays": ev.overlay_files,
            "video": "overlay.mp4" if ev.video is not None else None,
        },
        "frames": {
            "images_read": ev.images_read,
            "processed": len(ev.frames),
            "objects": int(sum(p.num_objects for p in ev.preds)),
            "with_geometry": ev.with_geometry,
        },
        "timing": {
            "wall_s": wall,
            "throughput_fps": len(ev.frames) / wall if wall > 0 else None,
            "per_frame": per_frame,
            "overhead_fraction": over_sum / model_sum if model_sum > 0 else None,
            "per_frame_cpu": per_frame_cpu,
            "overhead_fraction_cpu": cpu_over_sum / cpu_model_sum if cpu_model_sum > 0 else None,
            "cpu_overhead_includes_3d": bool(o.depth_topic),
            "overhead_fraction_run": run_over / model_sum if model_sum > 0 else None,
            "overhead_run_s": run_over,
            # CPU of the whole process over the loop (inputs read and copied, outputs written) outside predict
            "loop_cpu_s": ev.loop_cpu_s,
            "model_cpu_s": cpu_model_sum,
            "overhead_fraction_run_cpu": (ev.loop_cpu_s - cpu_model_sum - ev.overlay_s) / cpu_model_sum
            if cpu_model_sum > 0
            else None,
            "first_frame_ms": ev.frames[0]["total"] * 1e3 if ev.frames else None,
            "copied_messages": ev.copied,
            "copy_s": ev.copy_s,
            "overlay_s": ev.overlay_s,
        },
        "drops": {
            "processor": proc_drops,
            "processor_3d": {k: int(v) for k, v in ev.processor.stats.dropped_3d.items() if v},
            "pairing": sync_drops,
            "reader": {k: int(v) for k, v in reader.dropped.items() if v},
            "writer_not_copied": {k: int(v) for k, v in ev.writer.not_copied.items() if v},
        },
        "config": to_dict(ev.cfg),
    }
    if gt is not None:
        report["accuracy"] = evaluate_accuracy(gt, ev.preds, ev.stamps_read)
    if o.depth_topic:
        report["geometry"] = geometry_summary(ev.preds, gt)
    return report


# ------------------------------------------------------------------------------------------------- CLI


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask bag-eval`."""
    d = NodeConfig()
    parser.add_argument("--bag", required=True, help="rosbag2 directory (or a .mcap / .db3 file)")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument(
        "--detections-topic", default="", help="vision_msgs/Detection2DArray topic; omit for self-detection"
    )
    parser.add_argument(
        "--depth-topic", default="", help="aligned depth Image (16UC1 mm / 32FC1 m) for 3D outputs"
    )
    parser.add_argument("--camera-info-topic", default="", help="sensor_msgs/CameraInfo of the depth image")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt", default="", help="COCO JSON ground truth whose images carry stamp_ns")
    gt.add_argument("--gt-topic", default="", help="shapemask_ros/InstanceMaskArray ground-truth topic")
    parser.add_argument(
        "--model", default="", help="model bundle directory (default: the shipped models/real_lite0)"
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "tensorflow"]
    )
    parser.add_argument(
        "--out", required=True, help="output directory: bag/, report.md, report.json, overlays/"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many images (0 = all)")
    vis = parser.add_mutually_exclusive_group()
    vis.add_argument("--overlays", type=int, default=8, help="overlay PNGs of the first N processed frames")
    vis.add_argument("--video", action="store_true", help="overlay MP4 of every processed frame instead")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="output bag storage")
    parser.add_argument("--compress", action="store_true", help="zstd-compress the output bag (slower)")
    parser.add_argument(
        "--no-copy", action="store_true", help="do not copy the input topics into the output bag"
    )
    parser.add_argument("--distro", default="humble", choices=["humble", "jazzy"], help="message definitions")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a damaged bag (cut by a killed recorder, corrupt chunks/pages, a leftover sqlite WAL) "
        "instead of reading it up to the damage",
    )
    parser.add_argument(
        "--params",
        default="",
        help="the node's parameters YAML (config/segment_params.yaml format) to run with the live node's "
        "settings; the flags below override it",
    )
    # None = not given: the params file (or NodeConfig's default) applies
    parser.add_argument("--score-threshold", type=float, default=None, help=f"default {d.score_threshold}")
    parser.add_argument("--mask-threshold", type=float, default=None, help=f"default {d.mask_threshold}")
    parser.add_argument("--max-objects", type=int, default=None, help=f"default {d.max_objects}")
    parser.add_argument("--sync-slop-s", type=float, default=None, help=f"default {d.sync_slop_s}")
    parser.add_argument(
        "--detector-latency-s",
        type=float,
        default=None,
        help=f"longest detector delay; also how long a frame waits for its depth image (default "
        f"{d.detector_latency_s})",
    )
    parser.add_argument(
        "--depth-wait-s",
        type=float,
        default=None,
        help=f"bag time a frame waits for its depth image before going out without 3D (default {d.depth_wait_s})",
    )
    parser.add_argument(
        "--detection-image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="size of the image the detector saw (0 0 = the camera image)",
    )


def load_node_params(path: str) -> NodeConfig:
    """NodeConfig from a node parameters YAML (`<node key>: {ros__parameters: {...}}`, as
    config/segment_params.yaml); unknown or mistyped parameters raise ValueError naming them."""
    import yaml

    from shapemask_ros.config import merge
    from shapemask_ros.utils.io import read_text

    data = yaml.safe_load(read_text(path)) or {}
    blocks = [v["ros__parameters"] for v in data.values() if isinstance(v, dict) and "ros__parameters" in v]
    if len(blocks) != 1 or not isinstance(blocks[0], dict):
        raise ValueError(f"{path}: expected one '<node>: {{ros__parameters: {{...}}}}' block, found {len(blocks)}")
    try:
        return merge(NodeConfig(), blocks[0])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def options_from_args(args: argparse.Namespace) -> BagEvalOptions:
    node = load_node_params(args.params) if getattr(args, "params", "") else NodeConfig()
    given = {
        "score_threshold": args.score_threshold,
        "mask_threshold": args.mask_threshold,
        "max_objects": args.max_objects,
        "sync_slop_s": args.sync_slop_s,
        "detector_latency_s": args.detector_latency_s,
        "depth_wait_s": args.depth_wait_s,
    }
    if args.detection_image_size is not None:
        given["detection_image_width"] = int(args.detection_image_size[0])
        given["detection_image_height"] = int(args.detection_image_size[1])
    node = dataclasses.replace(node, **{k: v for k, v in given.items() if v is not None})
    return BagEvalOptions(
        bag=args.bag,
        image_topic=args.image_topic,
        out=args.out,
        detections_topic=args.detections_topic,
        depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic,
        gt=args.gt,
        gt_topic=args.gt_topic,
        model=args.model,
        backend=args.backend,
        max_frames=args.max_frames,
        overlays=0 if args.video else args.overlays,
        video=args.video,
        overwrite=args.overwrite,
        storage=args.storage,
        compress=args.compress,
        copy_inputs=not args.no_copy,
        distro=args.distro,
        strict=args.strict,
        node=node,
    )


def summary_lines(result: BagEvalResult) -> list[str]:
    """What the CLI prints at the end: where things are and the headline numbers."""
    r = result.report
    t = r["timing"]
    lines = [
        f"output bag: {result.bag}",
        f"report:     {result.report_md} (+ {result.report_json.name})",
    ]
    if r["output"]["overlays"]:
        lines.append(f"overlays:   {result.out / 'overlays'} ({len(r['output']['overlays'])} PNGs)")
    if r["output"]["video"]:
        lines.append(f"video:      {result.out / r['output']['video']}")
    p50 = t["per_frame"]["total"]["p50_ms"]
    frac = t["overhead_fraction"]
    cpu = t.get("overhead_fraction_cpu")
    lines.append(
        f"frames:     {r['frames']['processed']} of {r['frames']['images_read']} processed, "
        f"backend {r['model']['backend']}, "
        f"p50 {p50:.1f} ms/frame, overhead {frac * 100:.1f} % of model time"
        + (f" ({cpu * 100:.1f} % in CPU time)" if cpu is not None else "")
        if p50 is not None and frac is not None
        else f"frames:     {r['frames']['processed']} of {r['frames']['images_read']} processed"
    )
    acc = r.get("accuracy")
    if acc and "mask_ap" in acc:
        lines.append(
            f"mask AP:    {acc['mask_ap']['AP']:.1f} (class-agnostic {acc['mask_ap_agnostic']['AP']:.1f})"
        )
    ce = (r.get("geometry") or {}).get("centroid_error")
    if ce and ce["error_mm"]["n"]:
        lines.append(
            f"centroid:   median error {ce['error_mm']['median']:.1f} mm over {ce['evaluated']} objects"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """`shapemask bag-eval`; user errors -> one line on stderr and exit code 2."""
    from shapemask_ros.utils.threads import limit_blas_threads

    limit_blas_threads()  # tiny NumPy BLAS calls in the 3D stage; see utils/threads.py
    try:
        opts = options_from_args(args)
    except (OSError, ValueError) as e:  # unreadable or invalid --params
        print(f"shapemask bag-eval: error: {e}", file=sys.stderr)
        return 2
    try:
        result = evaluate_bag(opts)
    except BagError as e:
        print(f"shapemask bag-eval: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0
