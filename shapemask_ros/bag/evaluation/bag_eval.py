"""`shapemask bag-eval`: run the node's frame processor over a recorded rosbag2, offline.

Reads the bag once in bag (receive) order, pairs every image with its detections -- and, when asked, its
aligned depth image and camera info -- processes each pair with the same `FrameProcessor` the node uses,
and writes an output bag (the input topics copied raw + the node's outputs), a report (markdown + JSON)
and overlays. See docs/bag_eval.md.

The pieces: `pairing` (which image goes with which detections / depth / camera info), `timing` (the
model's share of a frame), `eval_report` (the report's content), `eval_cli` (the command line); this
module holds the options and the read -> pair -> process -> write loop.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2

from shapemask_ros.bag.evaluation.eval_report import EvalRun, build_report
from shapemask_ros.bag.evaluation.pairing import PairedFrame, Pairer, PairInput
from shapemask_ros.bag.evaluation.pooled_ap import accuracy_pool
from shapemask_ros.bag.evaluation.report import FramePrediction, GroundTruth, frame_prediction, write_report
from shapemask_ros.bag.evaluation.timing import TimedPredictor
from shapemask_ros.bag.recording.reader import BagError, BagMessage, BagReader
from shapemask_ros.bag.recording.writer import STORAGES, AtomicOutputDir, BagWriter
from shapemask_ros.config.node_config import NodeConfig, validate_node_config
from shapemask_ros.geometry.objects3d import prepare_objects3d
from shapemask_ros.ros_bridge.factory import RosbagsFactory, stamp_of, stamp_to_ns
from shapemask_ros.ros_bridge.frame_processor import FrameProcessor, FrameResult
from shapemask_ros.ros_bridge.image_codec import ImageDecodeError, image_to_rgb
from shapemask_ros.ros_bridge.msg_types import (
    CAMERA_INFO_TYPE,
    COMPRESSED_TYPE,
    DETECTION_ARRAY_TYPE,
    IMAGE_TYPE,
    MASK_ARRAY_TYPE,
)
from shapemask_ros.ros_bridge.node_params import published_outputs
from shapemask_ros.runtime.overlay import instance_color, overlay_image

if TYPE_CHECKING:
    from shapemask_ros.runtime.predictor import Predictor

log = logging.getLogger(__name__)


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
    # the objects' PointCloud2 in the output bag (with depth; the node's publish_points still applies). Off by
    # default: the report does not read it, it is most of the output bag (1.6 MB a frame on the demo, 3x its
    # input) and writing it costs about 3 ms of CPU a frame; the live node also builds it only for subscribers
    points: bool = False
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

    def predictor_config(self) -> NodeConfig:
        """What the predictor is loaded with: the node parameters (engine cache, mask settings) with this
        run's model and backend."""
        return dataclasses.replace(self.node, model_path=self.model, backend=self.backend)

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
    accuracy_pool: dict[str, Any] | None = None  # this bag's share of an AP pooled over bags (pooled_ap.py)


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


def load_bag_predictor(config: NodeConfig, threads: int = 0) -> Predictor:
    """`runtime.predictor.load_predictor` (the node's loading) with its errors as BagError, bag-eval's and the
    demo's user errors. `threads`: ONNX Runtime intra-op threads (0 = its default: every core).

    ONNX Runtime's threads do not spin (load_predictor's default): offline, nothing waits on a frame's
    latency, and a spinning worker burns a core after every run while this thread does the 3D stage and
    writes the outputs (on the demo bag ~7 ms of CPU a frame outside the model, more on a busy host)."""
    from shapemask_ros.runtime.bundle import resolve_model_path
    from shapemask_ros.runtime.predictor import ModelNotFoundError, load_predictor

    try:
        return load_predictor(config, intra_op_num_threads=threads)
    except ModelNotFoundError as e:
        raise BagError(str(e)) from None
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        path = resolve_model_path(config.model_path)
        raise BagError(f"cannot load model {path} with backend {config.backend!r}: {e}") from None


class BagEvaluation:
    """One bag-eval run (state shared by the read loop and the frame handler)."""

    def __init__(self, opts: BagEvalOptions, predictor: Any, reader: BagReader, out: AtomicOutputDir) -> None:
        self.opts = opts
        self.reader = reader
        self.out = out
        self.factory = RosbagsFactory(reader.typestore)
        self.cfg = opts.node_config()
        self.timed = TimedPredictor(predictor)
        self.processor = FrameProcessor(self.timed, self.cfg, self.factory, clock=time.perf_counter, logger=log)
        self.drops: collections.Counter = collections.Counter()
        self.pairer = Pairer(self.cfg, self.processor.self_detect, bool(opts.depth_topic), self.drops)
        self.writer = BagWriter(out.path / "bag", reader.typestore, storage=opts.storage, compress=opts.compress)
        self.ns = self.cfg.output_namespace.rstrip("/")
        # the node's outputs for this configuration, less the overlay (image files here) and the points unless asked
        self._output_types = {
            k: t for k, t in published_outputs(self.cfg).items() if k != "overlay" and (k != "points" or opts.points)
        }
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
        self.warm_up_s = 0.0

    def result(self) -> EvalRun:
        """The finished run as the report reads it (call after `run`, once the writer is closed)."""

        def counts(counter: Any) -> dict[str, int]:
            return {k: int(v) for k, v in counter.items() if v}

        o, timed = self.opts, self.timed
        return EvalRun(
            bag=str(o.bag),
            image_topic=o.image_topic,
            detections_topic=o.detections_topic,
            depth_topic=o.depth_topic,
            camera_info_topic=o.camera_info_topic,
            max_frames=o.max_frames,
            storage=o.storage,
            config=self.cfg,
            model_path=str(getattr(getattr(timed, "bundle", None), "path", "") or o.model or "(given predictor)"),
            backend=str(getattr(timed, "backend", "") or self.processor.stats.backend),
            skipped_backends=dict(getattr(timed, "skipped_backends", {}) or {}),
            class_names=tuple(getattr(timed, "class_names", []) or []),
            frames=tuple(self.frames),
            preds=tuple(self.preds),
            stamps_read=tuple(self.stamps_read),
            images_read=self.images_read,
            with_geometry=self.with_geometry,
            output_topics=dict(sorted(self.writer.counts.items())),
            overlay_files=tuple(self.overlay_files),
            video=self.video is not None,
            processor_drops=counts(self.processor.stats.dropped),
            processor_drops_3d=counts(self.processor.stats.dropped_3d),
            pairing_drops=counts(self.drops),
            writer_not_copied=counts(self.writer.not_copied),
            copied=self.copied,
            copy_s=self.copy_s,
            overlay_s=self.overlay_s,
            loop_cpu_s=self.loop_cpu_s,
            warm_up_s=self.warm_up_s,
        )

    # -- outputs
    def _conn(self, name: str, typ: str) -> Any:
        key = f"{self.ns}/{name}"
        if key not in self.outputs:
            self.outputs[key] = self.writer.add_output(key, typ)
        return self.outputs[key]

    def warm_up(self) -> None:
        """Start-up work the first frames would otherwise pay inside their timing: rosbags compiles each message
        type's (de)serialiser on first use (~60 ms for this pipeline's types, measured on the demo bag); with
        depth, the 3D stage's compiled kernel is compiled or loaded from numba's cache (seconds), and a
        distorted camera's rays are undistorted for every depth pixel of the bag's first CameraInfo (the
        first frame would otherwise undistort its objects' pixels: 12 ms on the demo). Its time is reported
        (`warm_up_s`)."""
        t0 = time.perf_counter()
        o = self.opts
        self.reader.warm_up([t for t in (o.image_topic, o.detections_topic, o.depth_topic, o.camera_info_topic) if t])
        for typ in set(self._output_types.values()):
            self.reader.typestore.get_msgdef(typ)
        if o.depth_topic:
            log.info("%s", prepare_objects3d())
            self._prime_rays()
        self.warm_up_s = time.perf_counter() - t0

    def _prime_rays(self) -> None:
        info = self.reader.first_message(self.opts.camera_info_topic)
        depth: Any = self.reader.first_message(self.opts.depth_topic)
        try:
            shape = (int(depth.height), int(depth.width))
        except (AttributeError, TypeError, ValueError):  # no readable depth image: the frames report it
            return
        t0 = time.perf_counter()
        try:
            n = self.processor.prime_rays(info, shape) if info is not None else 0
        except Exception as e:  # start-up help only: the frames compute what they need (and report errors)
            log.debug("priming the rays: %r", e)
            return
        if n:
            log.info("undistorted the rays of %d depth pixels in %.0f ms", n, (time.perf_counter() - t0) * 1e3)

    def open_outputs(self) -> None:
        """Register the output topics this configuration writes for every processed frame (the writer must be
        open): the connections' message definitions, RIHS01 hashes and QoS YAML cost ~11 ms, bag set-up that
        the first frame would otherwise pay inside its timing (measured on the demo bag). A run in which no
        frame is processed then leaves these topics empty, as `ros2 bag record` leaves a subscribed topic."""
        for name, typ in self._output_types.items():
            self._conn(name, typ)

    def _write_outputs(self, result: FrameResult, log_ns: int) -> None:
        for name, typ in self._output_types.items():
            msg = getattr(result, name)
            if msg is not None:
                self.writer.write(self._conn(name, typ), log_ns, msg)

    # -- per frame
    def handle(self, frame: PairedFrame, now_ns: int) -> None:
        if self.opts.depth_topic and frame.depth is None:
            self.drops["no_depth_match"] += 1  # processed without 3D
        self.timed.take()
        # CPU of the whole process (time.process_time), so work of any other thread outside predict counts
        t0, c0 = time.perf_counter(), time.process_time()
        result = self.processor.process(
            frame.image.msg,
            frame.detections.msg if frame.detections else None,
            image_type=frame.image.type_name,
            depth_msg=frame.depth.msg if frame.depth else None,
            camera_info_msg=frame.info.msg if frame.info else None,
            want_points=self.opts.points,
        )
        t1, c1 = time.perf_counter(), time.process_time()
        tm = self.timed.take()
        if result is None:  # counted by the processor (decode error, predictor error, ...)
            return
        self._write_outputs(result, max(now_ns, frame.ready_log_ns))
        t2, c2 = time.perf_counter(), time.process_time()
        inputs = [x for x in (frame.image, frame.detections, frame.depth, frame.info) if x is not None]
        io_s, io_cpu = sum(x.io_s for x in inputs), sum(x.io_cpu_s for x in inputs)
        geometry_s, geometry_cpu = float(result.geometry_s), float(result.geometry_cpu_s)
        process_other = max((t1 - t0) - tm["model"] - geometry_s, 0.0)
        # CPU, split as the wall time: the process's time outside the predictor and the 3D stage
        process_cpu = max((c1 - c0) - tm["model_cpu"] - geometry_cpu, 0.0)
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
                "cpu_geometry": geometry_cpu,
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
            frame_prediction(frame.image.stamp_ns, result.instances, labels, objects, encode_masks=self.has_gt)
        )
        self._overlay(frame, result, objects, labels)

    def _overlay(self, frame: PairedFrame, result: FrameResult, objects: Any, labels: list[tuple[str, float]]) -> None:
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
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]  # missing from OpenCV's stubs
                self.video = cv2.VideoWriter(str(path), fourcc, self._fps(), size)
                self.video_size = size
                if not self.video.isOpened():
                    raise BagError("cv2.VideoWriter cannot write MP4 (mp4v) here; use --overlays instead of --video")
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
    def _decoded(self, m: BagMessage, type_name: str = "") -> PairInput | None:
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
        return PairInput(msg, stamp, m.log_time_ns, io_s, io_cpu, type_name)

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
        try:  # the AP is scored with pycocotools (an optional dependency)
            import pycocotools.mask  # noqa: F401
        except ImportError as e:
            raise BagError(f"mask AP needs pycocotools (pip install pycocotools): {e}") from None
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
                    f"topic {t}: type {reader.topics[t].declared_type!r} is unknown and the bag has no definition of it"
                )
        if predictor is None:
            say(f"loading model {opts.model or '(shipped demo model)'} (backend {opts.backend})")
            predictor = load_bag_predictor(opts.predictor_config())
        try:
            out = AtomicOutputDir(opts.out, overwrite=opts.overwrite)
        except FileExistsError as e:
            raise BagError(str(e)) from None
        except OSError as e:  # e.g. a read-only or missing parent directory
            raise BagError(f"cannot create the output directory {opts.out}: {e}") from None
        with out:
            ev = BagEvaluation(opts, predictor, reader, out)
            ev.warm_up()
            say(f"reading {opts.bag}: {reader.describe_topics()}")
            t0, p0 = time.perf_counter(), time.process_time()
            with ev.writer:
                ev.open_outputs()
                ev.run()
            wall, ev.loop_cpu_s = time.perf_counter() - t0, time.process_time() - p0
            gt = gt_file
            if opts.gt_topic:
                gt = GroundTruth.from_messages(ev.gt_msgs, f"topic {opts.gt_topic}")
            report = build_report(ev.result(), reader, gt, wall)
            pool = accuracy_pool(gt, ev.preds, ev.stamps_read) if gt is not None else None
            if reader.damage is not None:
                say(f"damaged input: {reader.damage.describe()}")
            json_path, md_path = write_report(out.path, report)
            final = out.commit()
    return BagEvalResult(final, final / "bag", final / json_path.name, final / md_path.name, report, pool)
