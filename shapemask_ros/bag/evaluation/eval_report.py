"""The report of a bag-eval run (`report.json` / `report.md` content): inputs, model, outputs, frame counts,
per-frame timing and CPU, drops, the config, and accuracy / 3D error against ground truth when given.

The evaluator (`bag_eval.BagEvaluation`) hands over a finished run as an `EvalRun`: what it measured and
counted, and nothing of its working state, so the report never reaches into the evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shapemask_ros.bag.evaluation.report import (
    REPORT_FORMAT,
    FramePrediction,
    GroundTruth,
    evaluate_accuracy,
    geometry_summary,
    latency_stats,
    now_iso,
)
from shapemask_ros.bag.recording.reader import BagReader
from shapemask_ros.config.loading import to_dict
from shapemask_ros.config.node_config import NodeConfig


@dataclass(frozen=True)
class EvalRun:
    """A finished bag-eval run: its inputs and options, the model, and what the run measured and counted."""

    # inputs and options
    bag: str
    image_topic: str
    detections_topic: str
    depth_topic: str
    camera_info_topic: str
    max_frames: int
    storage: str
    config: NodeConfig  # the processor's parameters
    # the model: the bundle actually loaded (resolved path), else what was asked for
    model_path: str
    backend: str
    skipped_backends: dict[str, str]
    class_names: tuple[str, ...]
    # per processed frame: seconds by stage and CPU ("total", "model", ..., "cpu_model", ...), and predictions
    frames: tuple[dict[str, float], ...]
    preds: tuple[FramePrediction, ...]
    stamps_read: tuple[int, ...]  # header stamps of every image read (ground truth of unread frames is not due)
    images_read: int
    with_geometry: int
    # outputs
    output_topics: dict[str, int]  # output bag topic -> messages written
    overlay_files: tuple[str, ...]
    video: bool
    # drops by reason (zero counts left out)
    processor_drops: dict[str, int]
    processor_drops_3d: dict[str, int]
    pairing_drops: dict[str, int]
    writer_not_copied: dict[str, int]
    # the loop's own costs
    copied: int
    copy_s: float
    overlay_s: float
    loop_cpu_s: float
    warm_up_s: float = 0.0  # start-up work before the timed loop (BagEvaluation.warm_up)


def build_report(ev: EvalRun, reader: BagReader, gt: GroundTruth | None, wall: float) -> dict[str, Any]:
    """The report dict of a finished run `ev` that took `wall` seconds (`gt`: its ground truth, if any)."""
    o = ev
    keys = ("total", "model", "network", "geometry", "overhead", "io", "process_other", "encode")
    per_frame = {k: latency_stats([f[k] for f in ev.frames]) for k in keys}
    cpu_keys = ("cpu_model", "cpu_geometry", "cpu_overhead", "cpu_io", "cpu_process", "cpu_encode")
    per_frame_cpu = {k[4:]: latency_stats([f[k] for f in ev.frames]) for k in cpu_keys}
    cpu_model_sum = sum(f["cpu_model"] for f in ev.frames)
    cpu_over_sum = sum(f["cpu_overhead"] for f in ev.frames)
    cpu_geometry_sum = sum(f["cpu_geometry"] for f in ev.frames)
    model_sum = sum(f["model"] for f in ev.frames)
    over_sum = sum(f["overhead"] for f in ev.frames)
    # Everything of the read/process/write loop that is not model, 3D or overlays: reading every message,
    # copying the inputs, pairing, the processor's own work and writing the outputs.
    run_over = wall - model_sum - sum(f["geometry"] for f in ev.frames) - ev.overlay_s
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
            "path": ev.model_path,
            "backend": ev.backend,
            "skipped_backends": dict(ev.skipped_backends),
            "class_names": list(ev.class_names),
        },
        "output": {
            "bag": "bag",
            "storage": o.storage,
            "topics": dict(ev.output_topics),
            "overlays": list(ev.overlay_files),
            "video": "overlay.mp4" if ev.video else None,
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
            # CPU split as the wall time: overhead excludes the 3D stage (per_frame_cpu.geometry)
            "overhead_fraction_cpu": cpu_over_sum / cpu_model_sum if cpu_model_sum > 0 else None,
            # everything of a frame outside the model, the 3D stage included (with depth)
            "overhead_fraction_cpu_with_3d": (cpu_over_sum + cpu_geometry_sum) / cpu_model_sum
            if cpu_model_sum > 0 and o.depth_topic
            else None,
            "overhead_fraction_run": run_over / model_sum if model_sum > 0 else None,
            "overhead_run_s": run_over,
            # CPU of the whole process over the loop (inputs read and copied, outputs written) outside predict
            "loop_cpu_s": ev.loop_cpu_s,
            "model_cpu_s": cpu_model_sum,
            "overhead_fraction_run_cpu": (ev.loop_cpu_s - cpu_model_sum - ev.overlay_s) / cpu_model_sum
            if cpu_model_sum > 0
            else None,
            "first_frame_ms": ev.frames[0]["total"] * 1e3 if ev.frames else None,
            # start-up work done before the timed loop (deserialisers, the 3D kernel, a distorted camera's rays)
            "warm_up_s": ev.warm_up_s,
            "copied_messages": ev.copied,
            "copy_s": ev.copy_s,
            "overlay_s": ev.overlay_s,
        },
        "drops": {
            "processor": dict(ev.processor_drops),
            "processor_3d": dict(ev.processor_drops_3d),
            "pairing": dict(ev.pairing_drops),
            "reader": {k: int(v) for k, v in reader.dropped.items() if v},
            "writer_not_copied": dict(ev.writer_not_copied),
        },
        "config": to_dict(ev.config),
    }
    if gt is not None:
        report["accuracy"] = evaluate_accuracy(gt, ev.preds, ev.stamps_read)
    if o.depth_topic:
        report["geometry"] = geometry_summary(ev.preds, gt)
    return report
