"""A tiny training job for the resume tests (test_training_resume.py): run as a subprocess, killable.

    python resume_job.py MODEL_DIR TFRECORD_PATTERN LOSSES_JSONL [KILL_DURING_SAVE_AT_STEP SEED]

Appends {"step": s, "losses": {...}} per step to LOSSES_JSONL (flushed, fsynced: a SIGKILL loses nothing
written). With KILL_DURING_SAVE_AT_STEP the process SIGKILLs itself a random few milliseconds into the
checkpoint save of that step -- a real kill during a real checkpoint write.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/: `import support`
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

tf.config.experimental.enable_op_determinism()  # exact resume needs deterministic kernels

import shapemask_training.trainer as trainer_mod  # noqa: E402
from shapemask_training.data.parser import build_dataset  # noqa: E402
from support.configs import tiny_experiment  # noqa: E402

STEPS, EVERY = 12, 3


def main() -> None:
    model_dir, pattern, losses_path = sys.argv[1:4]
    kill_at = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    cfg = tiny_experiment(model_dir, steps=STEPS, checkpoint_every=EVERY, batch_size=2)
    cfg = replace(cfg, data=replace(cfg.data, train_pattern=pattern, shuffle_buffer=8, category_ids=(1, 2, 3)))
    if kill_at:
        original = trainer_mod.save_checkpoint

        def save_and_die(manager, step):
            if step == kill_at:
                delay = rng.uniform(0.0, 0.03)
                threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
            return original(manager, step)

        trainer_mod.save_checkpoint = save_and_die
    trainer = trainer_mod.Trainer(cfg, strategy=tf.distribute.get_strategy())
    ds = build_dataset(pattern, cfg.data, cfg.model, True, 2, (1, 2, 3), seed=cfg.train.seed)
    with open(losses_path, "a") as f:

        def on_step(step: int, losses: dict) -> None:
            f.write(json.dumps({"step": step, "losses": losses}) + "\n")
            f.flush()
            os.fsync(f.fileno())

        trainer.train(ds.prefetch(tf.data.AUTOTUNE), progress=False, on_step=on_step)


if __name__ == "__main__":
    main()
