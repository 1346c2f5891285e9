"""`shapemask bench bundles`: frames per second of shipped bundles on a camera frame, side by side (issue 13).

One process, interleaved rounds, medians after warm-up: every bundle segments the same 640 x 480 frames with
the same N given boxes (default 20) through `Predictor.predict` on ONNX Runtime — what the node does per
frame (letterbox, graph, pasting every mask into the frame). Optionally a random-weight ResNet-50 640
configuration (the paper's, exported once under --cache-dir) and the official TF2 ShapeMask's per-frame
median from `benchmarks/official_reference/time_official.py` (run right before, same machine) for the
ratio. Targets: the default bundle >= 20 frames/s and >= 50x faster per frame than the official model.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shapemask_ros.bench.model_bench import fmt_ms, fmt_x, host_info, ratio, target, targets_table, time_interleaved
from shapemask_ros.bench.runtime_bench import (
    bench_boxes,
    bench_config,
    bench_images,
    bundle_dir_for,
    ensure_bundle,
    read_official,
)
from shapemask_ros.runtime.backends import BackendOptions
from shapemask_ros.runtime.predictor import Predictor, flip_label

log = logging.getLogger(__name__)

TARGET_FPS = 20.0
TARGET_OFFICIAL_OVER_OURS = 50.0
FRAME_HW = (480, 640)


def camera_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic 640 x 480 uint8 RGB frames (blobs + noise; content does not change the graph's cost)."""
    return [np.ascontiguousarray(img[: FRAME_HW[0], : FRAME_HW[1]]) for img in bench_images(FRAME_HW[1], count, seed)]


def run_bundle_bench(
    bundles: Sequence[tuple[str, str]],
    num_boxes: int = 20,
    iters: int = 20,
    warmup: int = 3,
    num_images: int = 2,
    resnet50_cache: str | None = None,
    official_json: str | None = None,
    threads: int = 0,
    seed: int = 0,
    progress: bool = True,
    block: int = 3,
    flip_average: bool = False,
    spin: bool = BackendOptions.spin,
) -> dict[str, Any]:
    """Time `Predictor.predict(frame, boxes)` for every (label, bundle) on ONNX Runtime, interleaved.

    block: calls of one bundle in a row per round, the first untimed (`time_interleaved`): a node runs one
    model frame after frame, so a call must not pay for the previous bundle's session.
    flip_average: also time each given bundle with `Predictor.flip_average` (rows "<label> +flip").
    spin: ONNX Runtime's threads busy-wait between runs (`BackendOptions.spin`); off by default, as every
    frame pipeline loads its model (`load_predictor`: node, bag-eval, fleet, demo)."""
    entries = list(bundles)
    flipped = {flip_label(label): path for label, path in entries} if flip_average else {}
    if resnet50_cache:
        from shapemask_ros.config.model_config import ModelConfig

        cfg = bench_config(dataclasses.replace(ModelConfig(), image_size=640))
        path, _ = ensure_bundle(cfg, bundle_dir_for(cfg, resnet50_cache))
        entries.append(("resnet50-640 (paper config, random weights)", path))
    entries += list(flipped.items())
    frames = camera_frames(num_images, seed)
    boxes = bench_boxes(FRAME_HW[0], num_boxes, seed)  # inside a 480 x 480 square: inside the frame too
    predictors = {
        label: Predictor.load(
            path,
            backend="onnxruntime",
            options=BackendOptions(intra_op_num_threads=threads, signatures=["segment_boxes"], spin=spin),
            flip_average=label in flipped,
        )
        for label, path in entries
    }

    def call(p):
        return lambda r: p.predict(frames[r % len(frames)], boxes)

    timing = time_interleaved(
        {k: call(p) for k, p in predictors.items()}, iters, warmup, progress=progress, block=block
    )
    rows = {}
    for label, path in entries:
        t = timing[label]
        rows[label] = {
            "bundle": path,
            "backend": predictors[label].backend,
            "median_s": t["median_s"],
            "p90_s": t["p90_s"],
            "fps": 1.0 / t["median_s"],
            "median_cpu_s": t["median_cpu_s"],
            "image_size": predictors[label].image_size,
            "flip_average": label in flipped,
        }
    official = read_official(official_json, 640, 50)
    default = entries[0][0]
    targets = {"fps": target(rows[default]["fps"], TARGET_FPS, True, unit="frames/s")}
    if official:
        speedup = ratio(official["median_s"], rows[default]["median_s"])
        targets["official_over_ours"] = target(speedup, TARGET_OFFICIAL_OVER_OURS, True)
    return {
        "frame": list(FRAME_HW),
        "boxes": num_boxes,
        "iters": iters,
        "warmup": warmup,
        "block": block,
        "threads": threads,
        "spin": spin,
        "rows": rows,
        "official": official,
        "default": default,
        "targets": targets,
        "host": host_info(),
    }


def bundles_table(result: Mapping[str, Any]) -> str:
    """Markdown: per bundle ms/frame, frames/s, and the official model's time over it."""
    off = result.get("official")
    lines = [
        f"640 x 480 frame, {result['boxes']} given boxes, `Predictor.predict` on ONNX Runtime "
        f"({result['iters']} timed rounds, medians"
        + (
            f"; each round calls a bundle {result['block']}x in a row and times all but the first"
            if result.get("block", 1) > 1
            else ""
        )
        + ("; ONNX Runtime threads spin between runs" if result.get("spin") else "; threads sleep between runs")
        + ").",
        "",
        "| model | input | ms / frame | frames / s | official / this |",
        "|---|---|---|---|---|",
    ]
    for label, r in result["rows"].items():
        x = fmt_x(ratio(off["median_s"], r["median_s"])) if off else "–"
        lines.append(f"| {label} | {r['image_size']}² | {fmt_ms(r['median_s'])} | {r['fps']:.1f} | {x} |")
    if off:
        lines.append(
            f"| official TF2 ShapeMask (R-50, 640², graph only, time_official.py) | 640² | "
            f"{fmt_ms(off['median_s'])} | {1 / off['median_s']:.2f} | 1.0x |"
        )
    lines += ["", targets_table(result["targets"])]
    return "\n".join(lines)


def add_args(p) -> None:
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[LABEL=]BUNDLE",
        help="bundle to time (repeatable; the first is checked against the targets)",
    )
    p.add_argument("--boxes", type=int, default=20)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--block",
        type=int,
        default=3,
        help="calls of one bundle in a row per round, the first untimed (1 = strictly alternating: then each "
        "call also pays for the previous bundle's ONNX Runtime threads)",
    )
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)")
    p.add_argument(
        "--spin",
        action="store_true",
        help="ONNX Runtime's threads busy-wait between runs (its own default); without it they sleep, as in "
        "the node, bag-eval and the demo",
    )
    p.add_argument(
        "--resnet50",
        action="store_true",
        help="also time a random-weight ResNet-50 640 bundle (exported once into --cache-dir)",
    )
    p.add_argument("--cache-dir", default="build/bench")
    p.add_argument("--official-json", default="build/official_reference/timing.json")
    p.add_argument(
        "--flip-average",
        action="store_true",
        help=f"also time each --model with mirrored-image averaging (rows '{flip_label('<label>')}')",
    )
