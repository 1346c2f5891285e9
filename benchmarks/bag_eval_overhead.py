"""bag-eval's CPU and wall time outside the model on the demo bag, several runs in one process (issue 24 item 4).

    python benchmarks/bag_eval_overhead.py [--bag DIR] [--runs 3]

Writes the demo bag (`shapemask demo`'s: 24 frames of the ARC tote, 512x384, depth + CameraInfo) into a
temporary directory unless --bag names one, loads the default model as bag-eval does, and evaluates the bag
--runs times with the ray caches cleared before each run (as a fresh process finds them). Prints each run's
`overhead_fraction` (wall) and `overhead_fraction_cpu` (both with the 3D stage excluded, as the report splits
them), `overhead_fraction_cpu_with_3d` and the CPU a frame, then the medians. To compare two commits, run it
alternately with PYTHONPATH set to a worktree of each: the host's speed drifts, so only runs close in time
compare.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, evaluate_bag, load_bag_predictor
from shapemask_ros.bag.scenes import demo_bag
from shapemask_ros.bag.scenes.tote_bag import make_tote_bag
from shapemask_ros.config.node_config import NodeConfig
from shapemask_ros.geometry.rays import clear_ray_caches
from shapemask_ros.utils.threads import limit_blas_threads


def _describe(row: Sequence[float]) -> str:
    wall, cpu, cpu_3d, model_ms, outside_ms, geometry_ms = row
    where = f"model {model_ms:.2f} ms, outside it {outside_ms:.3f} ms + 3D {geometry_ms:.3f} ms CPU a frame"
    return f"wall {100 * wall:.1f} %, CPU {100 * cpu:.1f} %, CPU with 3D {100 * cpu_3d:.1f} % ({where})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bag", help="a tote bag written by `shapemask demo` (DIR/demo_bag); default: write one")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(args.bag) if args.bag else make_tote_bag(Path(tmp) / "demo_bag").bag
        predictor = load_bag_predictor(NodeConfig())
        limit_blas_threads()  # as bag-eval's command line does
        rows = []
        for run in range(args.runs):
            clear_ray_caches()
            opts = BagEvalOptions(
                bag=str(bag),
                **demo_bag.EVAL_TOPICS,
                out=str(Path(tmp) / f"eval_{run}"),
                overlays=0,
            )
            t = evaluate_bag(opts, predictor=predictor).report["timing"]
            cpu = t["per_frame_cpu"]
            row = (
                t["overhead_fraction"],
                t["overhead_fraction_cpu"],
                t["overhead_fraction_cpu_with_3d"],
                cpu["model"]["mean_ms"],
                cpu["overhead"]["mean_ms"],
                cpu["geometry"]["mean_ms"],
            )
            rows.append(row)
            print(f"run {run}: {_describe(row)}")
        med = [statistics.median(r[i] for r in rows) for i in range(len(rows[0]))]
        print(f"median: {_describe(med)}")


if __name__ == "__main__":
    main()
