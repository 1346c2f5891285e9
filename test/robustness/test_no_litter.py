"""No litter (issue 15): a run killed with SIGKILL leaves temporaries that the next run removes.

The unit tests kill a child process that holds a temporary and check that the next writer removes it, but
never one that a live process holds. The slow tests SIGKILL real `bag-eval`, `priors` and `export` runs at
random moments (several seeds) and check that a rerun succeeds, leaves nothing behind and writes the same
outputs as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shapemask_ros.utils.io import AtomicDir, atomic_write_bytes, remove_stale_temporaries
from support import REPO as REPO_ROOT

REPO = REPO_ROOT
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
ENV["TF_CPP_MIN_LOG_LEVEL"] = "2"
CLI = [sys.executable, "-c", "import sys; from shapemask_ros.cli import main; sys.exit(main())"]


def _temporaries(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)


def _child(code: str) -> subprocess.Popen:
    """A Python child that runs `code`, prints 'ready' and sleeps until killed."""
    p = subprocess.Popen(
        [sys.executable, "-c", code + "\nprint('ready', flush=True)\nimport time\ntime.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_stale_atomic_dir_of_a_killed_process_is_removed_but_a_live_one_is_kept(tmp_path):
    final = tmp_path / "out"
    code = (
        f"from shapemask_ros.utils.io import AtomicDir\nd = AtomicDir({str(final)!r})\n(d.path / 'x').write_text('1')"
    )
    live, dead = _child(code), _child(code)
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    assert len(_temporaries(tmp_path)) == 4  # two directories, two lock files
    with AtomicDir(final) as d:  # a rerun: removes the dead one, keeps the live one's
        (d.path / "y").write_text("2")
        assert len(_temporaries(tmp_path)) == 4  # live + ours
        d.commit()
    assert (final / "y").read_text() == "2"
    assert len(_temporaries(tmp_path)) == 2  # the live process's, untouched
    live.send_signal(signal.SIGKILL)
    live.wait()
    # an old-style leftover without a lock file is stale too; unrelated names are never touched
    (tmp_path / ".out.tmp-abcdefgh").mkdir()
    (tmp_path / ".other.tmp-abcdefgh").mkdir()
    removed = remove_stale_temporaries(tmp_path, "out")
    assert len(removed) == 2
    assert _temporaries(tmp_path) == [".other.tmp-abcdefgh"]


def test_stale_temp_file_of_a_killed_writer_is_removed_but_a_live_one_is_kept(tmp_path):
    hold = (
        "import fcntl, os, tempfile\n"
        f"fd, p = tempfile.mkstemp(prefix='.tmp-', suffix='priors.npy', dir={str(tmp_path)!r})\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'partial')"
    )
    live, dead = _child(hold), _child(hold)
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    assert len(_temporaries(tmp_path)) == 2
    import shapemask_ros.utils.io as io_mod

    io_mod._cleaned_dirs.discard(str(tmp_path))  # a fresh process would clean: pretend to be one
    atomic_write_bytes(str(tmp_path / "priors.npy"), b"data")
    assert (tmp_path / "priors.npy").read_bytes() == b"data"
    assert len(_temporaries(tmp_path)) == 1  # the live writer's file is kept
    live.send_signal(signal.SIGKILL)
    live.wait()


# ------------------------------------------------------------------------------- real SIGKILLs, reruns


def _kill_rerun(
    cmd: list[str], workdir: Path, seeds: list[int], outputs, env: dict | None = None, intact_after_kill: bool = False
) -> list[dict]:
    """Baseline run, then per seed: start, SIGKILL at a random moment, rerun; compare the outputs.
    intact_after_kill: also require the previous outputs, unchanged, right after the kill (atomic replace)."""
    env = env or ENV
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=workdir, capture_output=True)
    duration = time.perf_counter() - t0
    expected = outputs()
    log = []
    for seed in seeds:
        # A run can be faster than the timed baseline (warm caches, a faster CI machine): a run that ends before
        # its kill is retried with half the delay, so every seed really kills a live run (up to 4 tries).
        delay = random.Random(seed).uniform(0.15, 0.85) * duration
        for _ in range(4):
            p = subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(delay)
            killed = p.poll() is None
            if killed:
                p.send_signal(signal.SIGKILL)
            p.wait()
            if killed:
                break
            delay /= 2
        left = _temporaries(workdir)
        if intact_after_kill:
            assert outputs() == expected, f"seed {seed}: the kill left the previous outputs changed"
        r = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert _temporaries(workdir) == [], f"seed {seed}: litter after the rerun"
        assert outputs() == expected, f"seed {seed}: the rerun's outputs differ"
        log.append({"seed": seed, "delay_s": round(delay, 2), "killed": killed, "left_by_kill": left})
    print(json.dumps(log))
    return log


def _bag_outputs(out: Path) -> dict:
    """The output bag's messages (raw bytes per topic, in order), overlays and the report's frame counts."""
    from rosbags.rosbag2 import Reader

    with Reader(out / "bag") as r:
        msgs: dict = {}
        for c, t, raw in r.messages():
            msgs.setdefault(c.topic, []).append((t, bytes(raw)))
    report = json.loads((out / "report.json").read_text())
    overlays = {p.name: p.read_bytes() for p in sorted((out / "overlays").glob("*.png"))}
    return {"msgs": msgs, "frames": report["frames"], "drops": report["drops"], "overlays": overlays}


@pytest.mark.slow
def test_killed_bag_eval_leaves_nothing_a_rerun_does_not_clean(tmp_path):
    from support.bags import DETS, IMAGE, scene_bag_messages, write_bag

    write_bag(tmp_path / "in", scene_bag_messages(frames=12), "mcap")
    cmd = CLI + [
        "bag-eval", "--bag", "in", "--image-topic", IMAGE, "--detections-topic", DETS,
        "--out", "ev", "--overwrite", "--overlays", "2", "--backend", "onnxruntime",
    ]  # fmt: skip
    log = _kill_rerun(cmd, tmp_path, [0, 1, 2], lambda: _bag_outputs(tmp_path / "ev"))
    assert sum(e["killed"] for e in log) >= 2


@pytest.mark.tf
@pytest.mark.slow
def test_killed_priors_leaves_nothing_a_rerun_does_not_clean(tmp_path):
    from shapemask_ros.datasets.synthetic import generate_dataset

    ann = generate_dataset(str(tmp_path / "data"), num_images=6, height=96, width=96, seed=0)
    (tmp_path / "p").mkdir()
    cmd = CLI + [
        "priors", "--annotations", ann, "--k", "4", "--n-init", "1", "--out", "p/priors.npy",
        "--picture", "p/priors.png", "--no-progress",
    ]  # fmt: skip

    def outputs() -> dict:
        return {n: (tmp_path / "p" / n).read_bytes() for n in sorted(os.listdir(tmp_path / "p"))}

    log = _kill_rerun(cmd, tmp_path, [0, 1, 2], outputs)
    assert sum(e["killed"] for e in log) >= 2
    assert _temporaries(tmp_path / "p") == []


EXPORT = """
import sys
import numpy as np
import keras
from shapemask_ros.export.bundle import export_bundle
from shapemask_ros.model.shapemask import build_model
from support.configs import tiny_model_config
keras.utils.set_random_seed(0)
cfg = tiny_model_config(image_size=64)
model = build_model(cfg)
pause = len(sys.argv) > 1 and sys.argv[1] == "--pause-half-way"
seed = 1 if pause else 0  # the paused export writes other priors: an in-place write would show
model.set_priors(np.random.default_rng(seed).uniform(size=tuple(model.prior_head.priors.shape)).astype(np.float32))
if pause:
    # the second ONNX file never starts: the first is written, then the process waits to be killed
    import time
    from shapemask_ros.export import bundle as bundle_mod
    real, calls = bundle_mod.export_onnx, []
    def pausing(*args, **kwargs):
        if calls:
            print("half-way", flush=True)
            time.sleep(600)
        calls.append(1)
        return real(*args, **kwargs)
    bundle_mod.export_onnx = pausing
export_bundle(model, "bundle", ["a", "b", "c"], saved_model=False)
"""


@pytest.mark.tf
@pytest.mark.slow
def test_killed_export_leaves_nothing_a_rerun_does_not_clean(tmp_path):
    # one hash seed for every run: tf2onnx's graph optimizer visits nodes in an order that depends on Python's
    # string hashing (onnx/tensorflow-onnx#1789), so two processes can write the same model with a Transpose
    # in one graph that is a Reshape in the other (seen in 1 of 6 unseeded exports) -- not what this test is about
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(REPO / "test"), ENV["PYTHONPATH"]]), "PYTHONHASHSEED": "0"}

    def outputs() -> dict:
        import hashlib

        import onnx
        from onnx import numpy_helper

        b = tmp_path / "bundle"
        out: dict = {n: (b / n).read_bytes() for n in sorted(os.listdir(b)) if not n.endswith(".onnx")}
        for n in sorted(os.listdir(b)):
            if n.endswith(".onnx"):  # tf2onnx numbers its node names per process: compare the content
                g = onnx.load(str(b / n)).graph
                weights = sorted(hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest() for t in g.initializer)
                out[n] = (weights, sorted(node.op_type for node in g.node), [i.name for i in g.input])
        return out

    log = _kill_rerun([sys.executable, "-c", EXPORT], tmp_path, [0], outputs, env, intact_after_kill=True)
    assert log[0]["killed"]
    assert sorted(os.listdir(tmp_path)) == ["bundle"]  # nothing else beside it, whatever its name
    # a kill at a random moment mostly lands in imports and model building: also kill one for sure half-way
    # through writing (one ONNX file written, the next not started) and check the old bundle is untouched
    expected = outputs()
    p = subprocess.Popen([sys.executable, "-c", EXPORT, "--pause-half-way"], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "half-way"
    finally:
        p.kill()
        p.wait()
    assert outputs() == expected, "a kill half-way through writing changed the existing bundle"
    r = subprocess.run([sys.executable, "-c", EXPORT], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert outputs() == expected and sorted(os.listdir(tmp_path)) == ["bundle"]
