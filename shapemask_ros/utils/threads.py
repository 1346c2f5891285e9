"""Process-wide thread settings for the processes that run the frame pipeline (node, bag-eval, benches)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)
_LIMITER: Any = None  # keeps the threadpoolctl limit alive for the life of the process


def limit_blas_threads(n: int = 1) -> bool:
    """Limit NumPy's BLAS/LAPACK (OpenBLAS) to `n` threads for the rest of the process; True when applied.

    The per-object 3D statistics make many tiny BLAS/LAPACK calls (3x3 eigh, 3 x M products). OpenBLAS
    threads them and its idle workers then spin: measured 2x the stage's CPU time for no gain in wall time,
    on cores a robot shares with the model. TensorFlow and ONNX Runtime use their own thread pools and are
    not affected. Only entry points (node, bag-eval, benchmarks) call this, never library code.
    """
    global _LIMITER
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it, OPENBLAS_NUM_THREADS=1 does the same
        log.info("threadpoolctl not installed: NumPy BLAS threads left as they are")
        return False
    import numpy  # noqa: F401  (threadpoolctl limits the libraries loaded now: NumPy's BLAS must be one)

    _LIMITER = threadpool_limits(limits=n, user_api="blas")
    return True


def add_blas_threads_argument(parser: argparse.ArgumentParser) -> None:
    """Add the benchmarks' `--blas-threads N` flag (default 1, as the node and bag-eval run; 0 = as is)."""
    parser.add_argument(
        "--blas-threads", type=int, default=1, help="NumPy BLAS threads: 1 as in the node and bag-eval, 0 = as is"
    )


def apply_blas_threads(args: argparse.Namespace) -> None:
    """Apply a parsed `--blas-threads` (see `add_blas_threads_argument`); 0 or less leaves BLAS as it is."""
    if args.blas_threads > 0:
        limit_blas_threads(args.blas_threads)
