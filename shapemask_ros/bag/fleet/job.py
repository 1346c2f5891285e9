"""One bag of a fleet evaluated in whatever process runs it (the main one, a local worker, a Ray worker).

The model is loaded once per process (`get_predictor` keeps it), not once per bag. A finished bag leaves its
usual bag-eval output directory (`<out>/bags/<id>/`, written atomically by bag-eval) and then a record
(`<out>/.fleet/<id>.json`: key, report row, AP pool; written atomically), so a run killed at any moment
leaves no half-written result and a rerun reuses every bag whose record has the same key.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, evaluate_bag, load_bag_predictor
from shapemask_ros.bag.fleet.inputs import BagJob
from shapemask_ros.bag.fleet.keys import content_sha256, result_key
from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.config.loading import to_dict
from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.utils.formatting import json_safe
from shapemask_ros.utils.io import atomic_write_text

log = logging.getLogger(__name__)

RECORDS = ".fleet"  # under the fleet's --out: one JSON record per finished bag
BAGS = "bags"  # under the fleet's --out: one bag-eval output directory per bag
# row fields that measure the machine rather than the result (they differ between identical runs)
TIMING_FIELDS = ("latency_ms", "model_ms_p50", "wall_s", "fps", "worker", "reused", "job_s")


@dataclass(frozen=True)
class PredictorSpec:
    """How a process gets its predictor: a bundle path (every worker must be able to read it), or a factory
    (a picklable callable: tests inject fake predictors this way)."""

    model: str = ""
    backend: str = "auto"
    threads: int = 0  # ONNX Runtime intra-op threads per process (0 = its default)
    engine_cache_dir: str = ""  # TensorRT engine cache ("" = the default)
    factory: Callable[[], Any] | None = None
    # Ray: the bundle's files in the object store ({relative path: bytes}), for workers that cannot read
    # `model`; each worker process writes them to a temporary directory once and loads from there
    bundle_ref: Any = field(default=None, compare=False)

    def cache_key(self) -> str:
        if self.factory is not None:
            return f"factory:{getattr(self.factory, '__module__', '')}.{getattr(self.factory, '__qualname__', '')}"
        where = "shipped" if self.bundle_ref is not None else "path"
        return f"{self.model}|{self.backend}|{self.threads}|{self.engine_cache_dir}|{where}"

    def node_config(self, path: str) -> NodeConfig:
        """The loading parameters of `load_predictor` for the bundle at `path`."""
        return NodeConfig(model_path=path, backend=self.backend, engine_cache_dir=self.engine_cache_dir)


_PREDICTORS: dict[str, Any] = {}
_LOADS: dict[str, int] = {}  # per process: how often each spec was loaded (1; reported in the row)


def _materialise(bundle_ref: Any) -> str:
    """The shipped bundle written to a temporary directory of this process (removed when it exits)."""
    import atexit
    import shutil
    import tempfile

    import ray

    files: dict[str, bytes] = ray.get(bundle_ref)
    root = tempfile.mkdtemp(prefix="shapemask-bundle-")
    atexit.register(shutil.rmtree, root, True)
    for rel, data in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:  # stay inside the temporary directory
            raise BagError(f"shipped model bundle: bad file name {rel!r}")
        dst = Path(root, rel)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
    return root


def get_predictor(spec: PredictorSpec) -> Any:
    """This process's predictor for `spec`, loaded on first use."""
    key = spec.cache_key()
    if key not in _PREDICTORS:
        if spec.factory is not None:
            _PREDICTORS[key] = spec.factory()
        else:
            path = _materialise(spec.bundle_ref) if spec.bundle_ref is not None else spec.model
            _PREDICTORS[key] = load_bag_predictor(spec.node_config(path), spec.threads)
        _LOADS[key] = _LOADS.get(key, 0) + 1
    return _PREDICTORS[key]


@dataclass(frozen=True)
class JobTask:
    """Everything a worker needs for one bag (picklable; no open files or models)."""

    job: BagJob
    options: dict[str, Any]  # BagEvalOptions fields shared by every bag (not bag/out/topics/ground truth)
    out_root: str
    model_sha: str
    predictor: PredictorSpec = field(default_factory=PredictorSpec)


def _pct(stats: dict[str, Any], key: str) -> float | None:
    v = stats.get(key)
    return None if v is None else float(v)


def report_row(job: BagJob, report: dict[str, Any]) -> dict[str, Any]:
    """The aggregated report's row of one finished bag."""
    total = report["timing"]["per_frame"]["total"]
    drops: dict[str, int] = {}
    for group, counts in report["drops"].items():
        for reason, n in counts.items():
            drops[f"{group}:{reason}"] = int(n)
    acc = report.get("accuracy") or {}
    damage = report["input"].get("damage")
    return {
        "id": job.id,
        "bag": job.bag,
        "status": "ok",
        "error": None,
        "images_read": int(report["frames"]["images_read"]),
        "processed": int(report["frames"]["processed"]),
        "objects": int(report["frames"]["objects"]),
        "drops": drops,
        "dropped": sum(drops.values()),
        "latency_ms": {k: _pct(total, f"{k}_ms") for k in ("p50", "p90", "p99", "max")},
        "model_ms_p50": _pct(report["timing"]["per_frame"]["model"], "p50_ms"),
        "wall_s": float(report["timing"]["wall_s"]),
        "fps": report["timing"]["throughput_fps"],
        "mask_ap": (acc.get("mask_ap") or {}).get("AP"),
        "mask_ap_agnostic": (acc.get("mask_ap_agnostic") or {}).get("AP"),
        "images_evaluated": acc.get("images_evaluated"),
        "damage": damage,
        "backend": report["model"]["backend"],
        "out": f"{BAGS}/{job.id}",
    }


def fault_row(job: BagJob, error: str) -> dict[str, Any]:
    """The row of a bag that could not be evaluated (the rest of the fleet goes on)."""
    return {"id": job.id, "bag": job.bag, "status": "error", "error": error, "out": None}


def _record_path(task: JobTask) -> Path:
    return Path(task.out_root) / RECORDS / f"{task.job.id}.json"


def _reusable(task: JobTask, key: str) -> dict[str, Any] | None:
    path = _record_path(task)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key or record.get("row", {}).get("status") != "ok":
        return None  # another bag content / model / parameters, or a bag that failed: evaluate again
    if not (Path(task.out_root) / BAGS / task.job.id / "report.json").is_file():
        return None
    return record


def params_of(task: JobTask) -> dict[str, Any]:
    """The parameters a result depends on: the shared options, the bag's topics and its ground truth's content."""
    opts = {k: (to_dict(v) if k == "node" else v) for k, v in task.options.items()}
    settings = task.job.settings()
    gt_sha = content_sha256([settings["gt"]]) if settings["gt"] else ""
    return {"options": opts, "topics": {k: v for k, v in settings.items() if k != "gt"}, "gt_sha256": gt_sha}


def run_job(task: JobTask) -> dict[str, Any]:
    """Evaluate one bag (or reuse its finished record) and return the record {key, row, pool}; a bag that
    cannot be evaluated gives a fault row, never an exception (one bad bag must not stop the fleet)."""
    job = task.job
    t0 = time.perf_counter()
    key = ""
    try:
        key = result_key(content_sha256([job.bag]), task.model_sha, params_of(task))
        cached = _reusable(task, key)
        if cached is not None:
            cached["row"]["reused"] = True
            return cached
        predictor = get_predictor(task.predictor)
        kw: dict[str, Any] = {**task.options, **job.settings()}
        # overwrite: what is there has no valid record (another key, or a run killed before its record)
        opts = BagEvalOptions(**kw, bag=job.bag, out=str(Path(task.out_root) / BAGS / job.id), overwrite=True)
        res = evaluate_bag(opts, predictor=predictor, progress=lambda s: log.debug("%s", s))
        report = res.report
        row = report_row(job, report)
        pool = res.accuracy_pool
    except BagError as e:
        row, pool = fault_row(job, str(e)), None
    except Exception as e:  # a crash on one bag (a bug, an exotic failure): in its row, the fleet goes on
        log.exception("bag %s failed", job.bag)
        row, pool = fault_row(job, f"{type(e).__name__}: {' '.join(str(e).split())}"), None
    row["worker"] = {"pid": os.getpid(), "model_loads": _LOADS.get(task.predictor.cache_key(), 0)}
    if row["status"] == "ok":  # where this process loaded the model from (a temporary copy when shipped)
        row["worker"]["model_path"] = report["model"]["path"]
    row["job_s"] = time.perf_counter() - t0
    record = {"key": key, "row": row, "pool": pool}
    atomic_write_text(str(_record_path(task)), json.dumps(json_safe(record), sort_keys=True))
    return record
