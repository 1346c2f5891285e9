"""Exact resume (issue 15): a training run SIGKILLed during a checkpoint write and resumed produces exactly
the per-step losses of an uninterrupted run with the same seed.

What makes it exact: the input iterator is checkpointed with the model (tf.data iterator checkpointing:
shuffle buffers, per-example augmentation seeds, position in the repeated data), the job runs on one CPU
device with `tf.config.experimental.enable_op_determinism()`. Without the iterator state the resumed run
restarts the data order and its step-4 loss is the step-1 batch's -- the comparison below fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO as REPO_ROOT

JOB = REPO_ROOT / "test" / "support" / "resume_job.py"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
ENV["TF_CPP_MIN_LOG_LEVEL"] = "2"
EVERY = 3


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> str:
    from shapemask_ros.datasets.synthetic import generate_dataset
    from shapemask_training.data.tfrecords import write_tfrecords

    root = tmp_path_factory.mktemp("resume")
    ann = generate_dataset(str(root / "data"), num_images=10, height=64, width=64, seed=0, families=[1, 2, 3])
    write_tfrecords(ann, str(root / "data" / "images"), str(root / "rec" / "train"), num_shards=2, progress=False)
    return str(root / "rec" / "train-*")


def _run(model_dir: Path, pattern: str, losses: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(JOB), str(model_dir), pattern, str(losses), *extra]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.mark.tf
@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_resume_gives_identical_losses(tmp_path, records):
    base = tmp_path / "base.jsonl"
    r = _run(tmp_path / "m_base", records, base)
    assert r.returncode == 0, r.stderr[-3000:]
    expected = {x["step"]: x["losses"] for x in _records(base)}
    assert sorted(expected) == list(range(1, 13))

    kill_at = 6
    run = tmp_path / "run.jsonl"
    r = _run(tmp_path / "m", records, run, str(kill_at), "1")
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    before = _records(run)
    assert [x["step"] for x in before] == list(range(1, kill_at))  # died in the save after step 6
    r = _run(tmp_path / "m", records, run)  # resume: must neither crash nor lose more than one interval
    assert r.returncode == 0, r.stderr[-3000:]
    after = _records(run)[len(before) :]
    resumed_from = after[0]["step"] - 1
    assert resumed_from in (kill_at - EVERY, kill_at)
    assert [x["step"] for x in after] == list(range(resumed_from + 1, 13))
    for x in before + after:  # exactly equal, every loss term, including the steps trained twice
        assert x["losses"] == expected[x["step"]], f"step {x['step']}"
    assert not [p for p in os.listdir(tmp_path / "m" / "checkpoints") if "_temp" in p]
