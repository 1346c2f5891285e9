"""Where the bags of a fleet run: in this process, in N local worker processes, or as Ray tasks.

No scheduler of our own: `concurrent.futures.ProcessPoolExecutor` (spawned processes, each loading the model
once through `job.get_predictor`) on one machine, Ray (`ray` extra, pinned in requirements.txt) on a
cluster. Each takes the same `JobTask`s and the same `run_job`, which never raises for a bad bag; results
are handed to `on_done` as they finish (progress, records), in completion order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from shapemask_ros.bag.fleet.job import JobTask, fault_row, run_job

log = logging.getLogger(__name__)

Record = dict[str, Any]
OnDone = Callable[[JobTask, Record], None]


def threads_per_worker(workers: int, threads: int = 0) -> int:
    """ONNX Runtime intra-op threads for each of `workers` processes: `threads` when given, else the
    machine's cores divided among them (N workers x all cores each would oversubscribe the CPU)."""
    if threads > 0:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(workers, 1))


def _init_worker() -> None:
    """A worker process: NumPy's BLAS on one thread (the 3D stage's tiny calls; see utils/threads.py)."""
    from shapemask_ros.utils.threads import limit_blas_threads

    limit_blas_threads()


def run_serial(tasks: Sequence[JobTask], on_done: OnDone) -> None:
    """Every bag in this process, one after the other (the model loaded once)."""
    for t in tasks:
        on_done(t, run_job(t))


def run_processes(tasks: Sequence[JobTask], workers: int, on_done: OnDone) -> None:
    """Every bag in one of `workers` spawned processes. A worker that dies (killed, out of memory) fails the
    bags it had and those not started yet: they get fault rows, and a rerun of the command resumes them."""
    ctx = multiprocessing.get_context("spawn")  # not fork: the parent may hold ONNX Runtime / TF threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        futures = {pool.submit(run_job, t): t for t in tasks}
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                rec = fut.result()
            except Exception as e:  # BrokenProcessPool and the like: the bag's own errors are in its row
                rec = {"key": "", "row": fault_row(t.job, f"worker failed: {type(e).__name__}: {e}"), "pool": None}
            on_done(t, rec)


def ship_bundle(model_dir: str) -> Any:
    """The files of a model bundle put into Ray's object store once (workers fetch them once per process)."""
    import ray

    root = Path(model_dir)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return ray.put(files)


def run_ray(
    tasks: Sequence[JobTask],
    address: str,
    on_done: OnDone,
    num_cpus: int | None = None,
    ship_model: bool = False,
) -> None:
    """One Ray task per bag on the cluster at `address` ('auto': the one `ray start` made on this machine;
    'local': a new instance on 127.0.0.1 with `num_cpus`; an already initialised Ray is used as it is).
    Bags are read by path: every node must reach them (shared storage). The model bundle too, unless
    `ship_model`: then it travels once through the object store. Ray reuses its worker processes, so each
    loads the model once."""
    try:
        import ray
    except ImportError:
        raise RuntimeError(
            "--ray needs the `ray` package: pip install -r requirements.txt (or shapemask_ros[ray])"
        ) from None
    started = False
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except Exception as e:  # no cluster there (ConnectionError), a version mismatch, ...
                msg = " ".join(str(e).split())[:300]
                raise RuntimeError(f"cannot connect to the Ray cluster at {address!r}: {msg}") from None
        started = True
    try:
        if ship_model and tasks and tasks[0].predictor.factory is None:
            from shapemask_ros.runtime.bundle import resolve_model_path

            ref = ship_bundle(resolve_model_path(tasks[0].predictor.model))
            tasks = [replace(t, predictor=replace(t.predictor, bundle_ref=ref)) for t in tasks]
        remote = ray.remote(num_cpus=1, max_retries=0)(_ray_job)
        refs = {remote.remote(t): t for t in tasks}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                t = refs[ref]
                try:
                    rec = ray.get(ref)
                except Exception as e:  # the worker died (node lost, OOM-killed): the rest go on
                    msg = " ".join(str(e).split())[:300]
                    rec = {
                        "key": "",
                        "row": fault_row(t.job, f"ray task failed: {type(e).__name__}: {msg}"),
                        "pool": None,
                    }
                on_done(t, rec)
    finally:
        if started:
            ray.shutdown()


def _ray_job(task: JobTask) -> Record:
    _init_worker()
    return run_job(task)
