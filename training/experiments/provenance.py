"""What reproduces a study run: the exact command, commit, versions, machine, budget, seeds."""

from __future__ import annotations

import dataclasses
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from shapemask_training.experiments.budgets import Budget
from shapemask_training.experiments.data_cache import TRAIN_DATA_SEED, VAL_DATA_SEED
from shapemask_training.experiments.scoring import SHRINK_SEED
from shapemask_training.experiments.variants import BASE_CONFIG, REPO_ROOT, repo_relative


def provenance(budget: Budget, argv: Sequence[str] | None, work_dir: str) -> dict[str, Any]:
    """What reproduces a run: the exact command, commit, versions, machine, budget, seeds."""
    import keras
    import tensorflow as tf

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    # absolute paths inside the repository are recorded relative to it (the command stays runnable from the root)
    root = str(REPO_ROOT)
    args = [repo_relative(a) if os.path.isabs(a) and os.path.commonpath([a, root]) == root else a for a in argv or []]
    cmd = None if argv is None else shlex.join([".venv/bin/python", "-m", "shapemask_training.experiments", *args])
    return {
        "command": cmd,
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty_files": len([ln for ln in git("status", "--porcelain").splitlines() if ln.strip()]),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "budget": dataclasses.asdict(budget),
        "base_config": str(BASE_CONFIG.relative_to(REPO_ROOT)),
        "seeds": {
            "train_data": TRAIN_DATA_SEED,
            "val_data": VAL_DATA_SEED,
            "model": budget.model_seed,
            "shrink": SHRINK_SEED,
            "priors_kmeans": budget.model_seed,
        },
        "work_dir": repo_relative(work_dir),
        "argv0": repo_relative(sys.argv[0]) if sys.argv else "",
    }
