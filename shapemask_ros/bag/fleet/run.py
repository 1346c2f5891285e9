"""A whole fleet evaluation: the bags' tasks, where they run, the records, the aggregated report.

Layout of `--out`:

    bags/<id>/          each bag's bag-eval output (output bag, report.md/json, overlays), atomic
    .fleet/<id>.json    each finished bag's record (key, row, AP pool), atomic; what a rerun reuses
    fleet_report.md     the aggregated report (+ fleet_report.json), atomic, written at the end
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions
from shapemask_ros.bag.evaluation.pooled_ap import pooled_accuracy
from shapemask_ros.bag.fleet.inputs import TOPIC_KEYS, BagJob
from shapemask_ros.bag.fleet.job import RECORDS, JobTask, PredictorSpec
from shapemask_ros.bag.fleet.keys import content_sha256
from shapemask_ros.bag.fleet.schedule import run_processes, run_ray, run_serial, threads_per_worker
from shapemask_ros.bag.fleet.summary import build_fleet_report, write_fleet_report
from shapemask_ros.bag.recording.reader import BagError

log = logging.getLogger(__name__)

_PER_BAG = {*TOPIC_KEYS, "bag", "out", "overwrite"}


@dataclass
class FleetResult:
    """Where the fleet report went, and the report itself."""

    out: Path
    report_json: Path
    report_md: Path
    report: dict[str, Any]


def shared_options(opts: BagEvalOptions) -> dict[str, Any]:
    """The options every bag shares (the per-bag ones come from its BagJob)."""
    return {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts) if f.name not in _PER_BAG}


def _model_sha(spec: PredictorSpec) -> str:
    if spec.factory is not None:
        return spec.cache_key()
    from shapemask_ros.runtime.bundle import resolve_model_path

    path = resolve_model_path(spec.model)
    if not Path(path).exists():
        raise BagError(f"model bundle not found: {path}")
    return content_sha256([path])


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BagError(f"--out {out} is a file")
    if out.exists() and any(out.iterdir()) and not (out / RECORDS).is_dir():
        raise BagError(f"--out {out} exists and is not a fleet output directory (give another --out)")
    if overwrite and (out / RECORDS).is_dir():
        shutil.rmtree(out / RECORDS)  # nothing is reused; bags/<id> are replaced as each bag finishes
    (out / RECORDS).mkdir(parents=True, exist_ok=True)


def evaluate_fleet(
    jobs: Sequence[BagJob],
    opts: BagEvalOptions,
    out: str,
    predictor: PredictorSpec,
    workers: int = 1,
    ray_address: str = "",
    ray_cpus: int | None = None,
    ship_model: bool = False,
    progress: Callable[[JobTask, dict[str, Any]], None] | None = None,
) -> FleetResult:
    """Evaluate every bag of `jobs` with the shared options of `opts` and write the aggregated report.
    `workers` > 1: local processes; `ray_address`: Ray tasks instead. A bag that fails is a row with its
    error; a bag whose record matches (same bag content, model and parameters) is reused."""
    out_dir = Path(out)
    _prepare_out(out_dir, opts.overwrite)
    if ray_address:
        executor = f"ray ({ray_address})"
        threads = predictor.threads or 1  # one Ray task per CPU
    elif workers > 1:
        executor = f"{workers} worker processes"
        threads = threads_per_worker(workers, predictor.threads)
    else:
        executor = "serial"
        threads = predictor.threads
    spec = dataclasses.replace(predictor, threads=threads)
    model_sha = _model_sha(spec)
    shared = shared_options(opts)
    tasks = [JobTask(job, shared, str(out_dir), model_sha, spec) for job in jobs]
    records: dict[str, dict[str, Any]] = {}

    def done(task: JobTask, record: dict[str, Any]) -> None:
        records[task.job.id] = record
        if progress is not None:
            progress(task, record)

    t0 = time.perf_counter()
    if ray_address:
        run_ray(tasks, ray_address, done, num_cpus=ray_cpus, ship_model=ship_model)
    elif workers > 1:
        run_processes(tasks, workers, done)
    else:
        run_serial(tasks, done)
    wall = time.perf_counter() - t0
    ordered = [records[j.id] for j in jobs]
    pooled = pooled_accuracy([r["pool"] for r in ordered if r.get("pool")])
    run = {
        "executor": executor,
        "workers": workers if not ray_address else None,
        "ray_address": ray_address or None,
        "model_shipped_through_object_store": bool(ray_address and ship_model),
        "onnxruntime_threads_per_worker": threads,
        "model": spec.model or ("(shipped demo model)" if spec.factory is None else spec.cache_key()),
        "model_sha256": model_sha,
        "wall_s": wall,
        "frames_per_s": sum(r["row"].get("processed", 0) for r in ordered) / wall if wall > 0 else None,
    }
    report = build_fleet_report([r["row"] for r in ordered], pooled, run)
    j, m = write_fleet_report(out_dir, report)
    return FleetResult(out_dir, j, m, report)
