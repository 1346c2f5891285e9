"""`shapemask bench model` and `shapemask bench runtime` (see model_bench.py / runtime_bench.py).

Both print a markdown table, write the full result as JSON (`--out`), and with `--write-docs` append the
table, the command and the machine to docs/benchmarks.md. They are scripts, not tests: run them on a
quiet machine (`make bench`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
from typing import Any

from shapemask_ros.config.model_config import ModelConfig

log = logging.getLogger(__name__)

DEFAULT_DOCS = "docs/benchmarks.md"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from e
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _common(p: argparse.ArgumentParser, out: str, iters: int) -> None:
    p.add_argument(
        "--config",
        default=None,
        help="experiment YAML whose `model:` section is benchmarked (default: the built-in ModelConfig)",
    )
    p.add_argument(
        "--image-size",
        type=_positive,
        default=None,
        help="square input size (default: the config's; 640 without --config)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        choices=["resnet50", "resnet101", "tiny"],
        help="backbone (default: the config's; resnet50 without --config)",
    )
    p.add_argument("--boxes", type=_positive, default=20, help="number of given boxes for segment_boxes")
    p.add_argument("--iters", type=_positive, default=iters, help="timed rounds (the median is reported)")
    p.add_argument("--warmup", type=_non_negative, default=3, help="untimed rounds after the first call")
    p.add_argument(
        "--threads",
        type=_non_negative,
        default=0,
        help="intra-op threads for TensorFlow and ONNX Runtime alike (0 = all cores)",
    )
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.0,
        help="detection score threshold of the timed model; 0 makes random weights give "
        "max_detections boxes, so self-detection always segments 100 objects (worst case)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, images and boxes")
    p.add_argument("--out", default=out, help="JSON result file (written atomically)")
    p.add_argument("--write-docs", action="store_true", help=f"append the table to --docs ({DEFAULT_DOCS})")
    p.add_argument("--docs", default=DEFAULT_DOCS, help="markdown file that --write-docs appends to")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_args(p: argparse.ArgumentParser) -> None:
    """Subcommands `model` and `runtime`."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    sub = p.add_subparsers(dest="bench", metavar="WHAT")
    sub.required = True
    m = sub.add_parser(
        "model",
        formatter_class=fmt,
        help="latency of backbone vs full inference vs mask-branch widths (random weights, tf.function)",
        description="Median latency of the bare backbone, full inference with N given boxes, full inference "
        "with self-detection, and the mask branch alone at several widths, interleaved in one "
        "run. Targets: full / backbone <= 1.6; mask branch 128 / 16 >= 5.",
    )
    _common(m, "build/bench/model.json", iters=10)
    m.add_argument(
        "--channels", type=_int_list, default=[128, 64, 32, 16], help="mask-branch widths to time (comma-separated)"
    )
    m.set_defaults(_parser=m)
    r = sub.add_parser(
        "runtime",
        formatter_class=fmt,
        help="TensorFlow vs ONNX Runtime through Predictor, boxes sweep, official ShapeMask comparison",
        description="Exports (or reuses) a random-weight bundle under --cache-dir and times Predictor.predict "
        "on TensorFlow and ONNX Runtime, the ONNX Runtime latency vs number of boxes, and full "
        "self-detection inference against the official TF2 ShapeMask timing JSON. Targets: ONNX "
        "Runtime >= 1.3x faster than TensorFlow; ours >= 10x faster than the official.",
    )
    _common(r, "build/bench/runtime.json", iters=10)
    r.add_argument(
        "--box-counts", type=_int_list, default=[1, 5, 20, 100], help="numbers of boxes for the ONNX Runtime sweep"
    )
    r.add_argument("--images", type=_positive, default=2, help="distinct images, cycled through the rounds")
    r.add_argument(
        "--bundle",
        default=None,
        help="time this existing bundle instead of exporting a random-weight one "
        "(--config/--image-size/--backbone/--score-threshold are then ignored)",
    )
    r.add_argument("--cache-dir", default="build/bench", help="where the random-weight bundle is kept")
    r.add_argument("--force-export", action="store_true", help="re-export even if a matching bundle is cached")
    r.add_argument("--max-boxes", type=_positive, default=100, help="boxes per model call of the exported bundle")
    r.add_argument(
        "--official-json",
        default="build/official_reference/timing.json",
        help="timing of the official ShapeMask (benchmarks/official_reference); skipped if absent",
    )
    r.set_defaults(_parser=r)
    b = sub.add_parser(
        "bundles",
        formatter_class=fmt,
        help="frames/s of shipped bundles on a 640x480 frame with N boxes (ONNX Runtime), vs the official",
        description="Times Predictor.predict on 640x480 frames with N given boxes for each --model bundle on "
        "ONNX Runtime, interleaved in one run, optionally with a random-weight ResNet-50 640 bundle "
        "and the official TF2 ShapeMask timing JSON. Targets: the first bundle >= 20 frames/s and "
        ">= 50x faster per frame than the official model.",
    )
    from shapemask_ros.bench import bundle_bench

    bundle_bench.add_args(b)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default="build/bench/bundles.json", help="JSON result file (written atomically)")
    b.add_argument("--write-docs", action="store_true", help=f"append the table to --docs ({DEFAULT_DOCS})")
    b.add_argument("--docs", default=DEFAULT_DOCS)
    b.add_argument("--no-progress", action="store_true")
    b.set_defaults(_parser=b)


def model_config(args: argparse.Namespace) -> ModelConfig:
    """ModelConfig from --config (or defaults) with --image-size / --backbone applied."""
    import dataclasses

    from shapemask_ros.config.loading import load_model_config

    cfg = load_model_config(args.config) if args.config else ModelConfig()
    if args.image_size is not None:
        cfg = dataclasses.replace(cfg, image_size=args.image_size)
    if args.backbone is not None:
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, name=args.backbone))
    return cfg


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run: `shapemask bench WHAT` plus every non-default option."""
    parts = ["shapemask", "bench", args.bench]
    parser: argparse.ArgumentParser = args._parser
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help",):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            parts.append(flag)
        elif isinstance(value, list) and action.__class__.__name__ == "_AppendAction":
            for v in value:  # repeatable flags (bench bundles --model) are repeated, not joined
                parts += [flag, shlex.quote(str(v))]
        elif isinstance(value, list):
            parts += [flag, ",".join(str(v) for v in value)]
        else:
            parts += [flag, shlex.quote(str(value))]
    return " ".join(parts)


def append_docs(path: str, title: str, command: str, result: dict[str, Any], table: str) -> None:
    """Append one measured section (title, command, machine, table) to the markdown file `path`."""
    from shapemask_ros.utils.io import atomic_write_text

    host = result.get("host") or {}
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
    load = host.get("loadavg")
    section = "\n".join(
        [
            "",
            f"### {title} ({host.get('timestamp', '')})",
            "",
            "```bash",
            command,
            "```",
            "",
            f"Machine: {host.get('processor') or 'unknown CPU'} ({host.get('machine')}), {host.get('cpu_count')} CPUs, "
            f"load average at the end {load}; versions {host.get('versions')}.",
            "",
            table,
            "",
        ]
    )
    atomic_write_text(path, old.rstrip("\n") + "\n" + section)


def _finish(args: argparse.Namespace, result: dict[str, Any], table: str, title: str) -> None:
    from shapemask_ros.utils.io import atomic_write_text

    command = command_line(args)
    result["command"] = command
    print(table)
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))
        print(f"\nresult: {args.out}")
    if args.write_docs:
        append_docs(args.docs, title, command, result, table)
        print(f"appended to {args.docs}")


def run(args: argparse.Namespace) -> int:
    """Run `bench model` or `bench runtime`; returns the exit status (2 for bad input, e.g. a bundle
    without a SavedModel or ONNX graphs, or a config file that does not load)."""
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as e:
        log.error("bench %s: %s", args.bench, e)
        return 2


def _run(args: argparse.Namespace) -> int:
    from shapemask_ros.bench import model_bench, runtime_bench

    if args.bench == "bundles":
        from shapemask_ros.bench import bundle_bench
        from shapemask_ros.utils.cli_args import labelled_paths

        if not args.model:
            from shapemask_ros.runtime.bundle import default_model_dir

            args.model = [f"default={default_model_dir()}"]
        model_bench.configure_threads(args.threads)
        result = bundle_bench.run_bundle_bench(
            labelled_paths(args.model),
            num_boxes=args.boxes,
            iters=args.iters,
            warmup=args.warmup,
            resnet50_cache=args.cache_dir if args.resnet50 else None,
            official_json=args.official_json,
            threads=args.threads,
            seed=args.seed,
            progress=not args.no_progress,
            block=args.block,
            flip_average=args.flip_average,
            spin=args.spin,
        )
        _finish(args, result, bundle_bench.bundles_table(result), "bench bundles")
        return 0
    if args.bench == "model":
        threads = model_bench.configure_threads(args.threads)  # before TensorFlow starts its pools
        result = model_bench.run_model_bench(
            model_config(args),
            num_boxes=args.boxes,
            iters=args.iters,
            warmup=args.warmup,
            channels=args.channels,
            score_threshold=args.score_threshold,
            seed=args.seed,
            progress=not args.no_progress,
        )
        result["threads"] = threads
        result["host"] = model_bench.host_info()
        _finish(args, result, model_bench.model_table(result), "bench model")
        return 0
    common = dict(
        num_boxes=args.boxes,
        box_counts=args.box_counts,
        iters=args.iters,
        warmup=args.warmup,
        num_images=args.images,
        official_json=args.official_json,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if args.bundle:
        threads = model_bench.configure_threads(args.threads)
        result = runtime_bench.run_runtime_bench(args.bundle, threads=args.threads, threads_info=threads, **common)
        result["bundle_reused"] = True
        result["host"] = model_bench.host_info()
    else:
        result = runtime_bench.run_runtime_bench_with_export(
            model_config(args),
            cache_dir=args.cache_dir,
            force_export=args.force_export,
            max_boxes=args.max_boxes,
            score_threshold=args.score_threshold,
            threads=args.threads,
            **common,
        )
    _finish(args, result, runtime_bench.runtime_table(result), "bench runtime")
    return 0
