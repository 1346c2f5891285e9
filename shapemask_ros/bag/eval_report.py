"""The report of a bag-eval run (`report.json` / `report.md` content): inputs, model, outputs, frame counts,
per-frame timing and CPU, drops, the config, and accuracy / 3D error against ground truth when given."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shapemask_ros.bag.reader import BagReader
from shapemask_ros.bag.report import (
    REPORT_FORMAT,
    GroundTruth,
    evaluate_accuracy,
    geometry_summary,
    latency_stats,
    now_iso,
)
from shapemask_ros.config import to_dict

if TYPE_CHECKING:  # the run loop imports this module
    from shapemask_ros.bag.bag_eval import BagEvaluation


def build_report(ev: BagEvaluation, reader: BagReader, gt: GroundTruth | None, wall: float) -> dict[str, Any]:
    """The report dict of a finished run `ev` that took `wall` seconds (`gt`: its ground truth, if any)."""
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
            "path": str(getattr(getattr(ev.timed, "bundle", None), "path", "") or o.model or "(given predictor)"),
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
