"""A fleet bag-eval killed with SIGKILL part-way (issue 26): the same command resumes it, reuses the bags
that had finished, leaves nothing half-written, and ends with the results of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shapemask_ros.bag.fleet.job import TIMING_FIELDS
from shapemask_ros.runtime.bundle import resolve_model_path
from support import REPO
from support.bags import DETS, IMAGE, scene_bag_messages, write_bag

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "test"), os.environ.get("PYTHONPATH", "")])}
ENV["TF_CPP_MIN_LOG_LEVEL"] = "2"
CLI = [sys.executable, "-c", "import sys; from shapemask_ros.cli import main; sys.exit(main())"]


def _cmd(bags: Path, out: Path) -> list[str]:
    return [*CLI, "bag-eval", "--bag", str(bags), "--image-topic", IMAGE, "--detections-topic", DETS]  + [
        "--out", str(out), "--workers", "2", "--overlays", "2"]  # fmt: skip


def _results(out: Path) -> list[dict]:
    rep = json.loads((out / "fleet_report.json").read_text())
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rep["bags"]]


def _records(out: Path) -> set[str]:
    """Bags with a finished record: `.fleet/<id>.json`, not the `.tmp-…` file a kill can leave mid-write."""
    return {f.stem for f in (out / ".fleet").glob("*.json") if not f.name.startswith(".tmp-")}


@pytest.mark.slow  # three real runs of 6 bags with the shipped model (~30-60 s on 2 shared cores)
def test_killed_fleet_run_resumes_with_the_same_command(tmp_path):
    if not Path(resolve_model_path("")).exists():
        pytest.skip("the shipped demo model is not built")
    bags = tmp_path / "bags"
    for k in range(6):
        write_bag(bags / f"robot{k}", scene_bag_messages(40), "mcap")
    whole = tmp_path / "whole"
    subprocess.run(_cmd(bags, whole), env=ENV, check=True, capture_output=True, timeout=600)

    out = tmp_path / "out"
    p = subprocess.Popen(_cmd(bags, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(_records(out)) < 2:
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the command and its worker processes, mid-run
    p.wait()
    finished = _records(out)
    assert 2 <= len(finished) < 6, finished
    assert not (out / "fleet_report.json").exists()

    again = subprocess.run(_cmd(bags, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, f"stdout:\n{again.stdout}\nstderr:\n{again.stderr}"
    rep = json.loads((out / "fleet_report.json").read_text())
    reused = {r["id"] for r in rep["bags"] if r.get("reused")}
    assert finished <= reused  # every bag finished before the kill is reused (maybe one more, killed late)
    assert _results(out) == _results(whole)
    litter = [str(q.relative_to(out)) for q in out.rglob("*") if ".tmp-" in q.name]
    assert not litter
