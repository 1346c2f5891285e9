"""`shapemask bench model`: where the time of one ShapeMask inference goes (random weights, batch 1).

Times, side by side in one process and interleaved round by round (so load drifts hit every variant
alike), each inside a `tf.function` with fully static input shapes:

- `backbone`: the bare backbone forward (with the model's own pixel normalisation);
- `segment_boxes`: full inference for N given boxes (backbone + FPN + mask branch, masks as probabilities);
- `detect_and_segment`: full inference with self-detection (RetinaNet head, decode, NMS, mask branch);
- `mask_branch@C`: the mask branch alone on precomputed FPN features, for each width C (128/64/32/16).

Reported figures are medians after warm-up. Ratios and targets (issue 2): segment_boxes / backbone
<= 1.6; mask branch widest / narrowest (128 / 16) >= 5. TensorFlow is imported inside functions, so the
timing helpers here can be imported cheaply (the runtime bench uses them too).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from shapemask_ros.config.model_config import ModelConfig

log = logging.getLogger(__name__)

TARGET_FULL_OVER_BACKBONE = 1.6  # issue 2: full inference (20 boxes) <= 1.6x the bare backbone
TARGET_MASK_WIDE_OVER_NARROW = 5.0  # issue 2: 16-channel mask branch >= 5x cheaper than 128
DEFAULT_CHANNELS: tuple[int, ...] = (128, 64, 32, 16)


# ------------------------------------------------------------------------------------------------ timing
def time_interleaved(
    fns: Mapping[str, Callable[[int], Any]],
    iters: int,
    warmup: int,
    progress: bool = True,
    block: int = 1,
) -> dict[str, dict[str, Any]]:
    """Time several variants in rounds: each round calls every variant once, rotating the start.

    Each `fn(round_index)` must block until its result is on the host. The first call of each variant
    (tracing, graph optimisation, session warm-up) is timed on its own as `first_call_s`; then `warmup`
    untimed rounds; then `iters` timed rounds. Returns per variant: `first_call_s`, `times_s`,
    `median_s`, `min_s`, `p90_s`, `median_cpu_s` (process CPU time, all threads: less distorted by a
    loaded machine than wall time).

    block > 1: each round calls every variant `block` times in a row and times all but the first of them,
    so a call never pays for the switch from another variant (for ONNX Runtime sessions: the previous
    session's intra-op threads still spin-waiting on the same cores, +35 % on 2 cores measured) -- what a
    node running one model frame after frame sees. Each round then gives `block - 1` times per variant.
    """
    if iters < 1 or warmup < 0 or block < 1:
        raise ValueError(f"need iters >= 1, warmup >= 0, block >= 1, got {iters}, {warmup}, {block}")
    if not fns:
        raise ValueError("nothing to time")
    names = list(fns)
    first: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        fns[name](0)
        first[name] = time.perf_counter() - t0
        log.info("first call of %s: %.2f s", name, first[name])
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    rounds = range(warmup + iters)
    if progress:
        from tqdm import tqdm

        rounds = tqdm(rounds, desc="timing rounds", unit="round", leave=False)
    for r in rounds:
        k = r % len(names)
        for name in names[k:] + names[:k]:  # rotate so no variant always runs right after another
            for j in range(block):
                c0, t0 = time.process_time(), time.perf_counter()
                fns[name](r)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if r >= warmup and (block == 1 or j > 0):
                    wall[name].append(dt)
                    cpu[name].append(dc)
    return {
        n: {
            "first_call_s": first[n],
            "times_s": wall[n],
            "median_s": float(np.median(wall[n])),
            "min_s": float(np.min(wall[n])),
            "p90_s": float(np.percentile(wall[n], 90)),
            "median_cpu_s": float(np.median(cpu[n])),
        }
        for n in names
    }


def configure_threads(threads: int = 0) -> dict[str, Any]:
    """Use `threads` intra-op threads in TensorFlow (and report the number for ONNX Runtime).

    0 = all cores (`os.cpu_count()`), set explicitly so both runtimes get the same number. TensorFlow
    only accepts this before its runtime starts; later (e.g. in a test process) it keeps its setting
    and a warning says so. The returned dict is what actually applies, for the report.
    """
    import tensorflow as tf

    n = int(threads) if threads and threads > 0 else (os.cpu_count() or 1)
    applied = True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
    except RuntimeError as e:  # "cannot be modified after initialization"
        applied = False
        log.warning("TensorFlow thread pools are already running; keeping their settings (%s)", e)
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    return {
        "threads": n,
        "tf_intra_op": intra,  # 0 = TensorFlow default (all cores)
        "tf_inter_op": inter,  # 0 = TensorFlow default (all cores)
        "tf_threads_applied": applied,
        "ort_intra_op": n,
        "ort_inter_op": "default (sequential execution)",
        "cpu_count": os.cpu_count(),
    }


def _cpu_model() -> str | None:
    """CPU model name from /proc/cpuinfo (Linux), None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def host_info() -> dict[str, Any]:
    """Machine, load and library versions, stored with every result."""

    def ver(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    return {
        "machine": platform.machine(),
        "processor": _cpu_model() or platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {
            p: ver(p)
            for p in ("tensorflow", "tensorflow-cpu", "keras", "onnxruntime", "onnxruntime-gpu", "numpy")
            if ver(p)
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None when the denominator is not positive."""
    return float(numerator) / float(denominator) if denominator > 0 else None


def target(value: float | None, goal: float, higher_is_better: bool, unit: str = "x") -> dict[str, Any]:
    """A target check for the report: value, goal, and whether it is met (None when not measurable).

    unit: "x" for ratios (shown as 1.23x), else a unit name shown after value and goal (e.g. "frames/s")."""
    met = None if value is None else (value >= goal if higher_is_better else value <= goal)
    goal_text = (">= " if higher_is_better else "<= ") + f"{goal:g}" + ("" if unit == "x" else f" {unit}")
    return {"value": value, "goal": goal_text, "met": met, "unit": unit}


# ------------------------------------------------------------------------------------------------ model
def _to_host(out: Any) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(lambda t: t.numpy(), out)


def _mask_branch_params(model: Any) -> tuple[int, int]:
    """(trainable, total) weight counts of the mask branch (projection + prior, coarse, fine heads).

    `total` adds the fixed shape priors and batch-norm statistics.
    """
    layers = (model.mask_projection, model.prior_head, model.coarse_head, model.fine_head)
    trainable = sum(int(np.prod(w.shape)) for layer in layers for w in layer.trainable_weights)
    total = sum(int(np.prod(w.shape)) for layer in layers for w in layer.weights)
    return trainable, total


def _with_score_threshold(cfg: ModelConfig, score_threshold: float | None) -> ModelConfig:
    if score_threshold is None:
        return cfg
    return dataclasses.replace(
        cfg, postprocess=dataclasses.replace(cfg.postprocess, score_threshold=float(score_threshold))
    )


def run_model_bench(
    cfg: ModelConfig,
    num_boxes: int = 20,
    iters: int = 10,
    warmup: int = 3,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    score_threshold: float | None = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a random-weight model from `cfg` and time backbone / full inference / mask-branch widths.

    score_threshold: overrides `cfg.postprocess.score_threshold` for `detect_and_segment` (None = keep).
    The default 0.0 makes random weights yield `max_detections` boxes, so the mask branch of the
    self-detection path runs on as many boxes as the official model's padded 100 slots.
    Returns the JSON-ready result (see `model_table` for the printed form).
    """
    import keras
    import tensorflow as tf

    from shapemask_ros.export.bundle import random_inputs
    from shapemask_ros.model.shapemask import build_model

    if num_boxes < 1:
        raise ValueError(f"--boxes must be >= 1, got {num_boxes}")
    widths = sorted({int(c) for c in channels}, reverse=True)
    if not widths or min(widths) < 1:
        raise ValueError(f"mask-branch widths must be positive integers, got {list(channels)}")
    cfg = _with_score_threshold(cfg, score_threshold)
    s = cfg.image_size
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    model = build_model(cfg)
    # priors do not change the cost; random ones keep the prior head's softmax mixing non-trivial
    model.set_priors(rng.uniform(size=tuple(model.prior_head.priors.shape)).astype(np.float32))
    build_s = time.perf_counter() - t0

    image_np, boxes_np, classes_np = random_inputs(s, num_boxes, seed)
    image, boxes, classes = tf.constant(image_np), tf.constant(boxes_np), tf.constant(classes_np)
    image_spec = tf.TensorSpec((1, s, s, 3), tf.float32)
    boxes_spec = tf.TensorSpec((1, num_boxes, 4), tf.float32)
    classes_spec = tf.TensorSpec((1, num_boxes), tf.int32)

    @tf.function(input_signature=[image_spec])
    def backbone_fn(x):
        return model.backbone(model.preprocess(x), training=False)

    @tf.function(input_signature=[image_spec, boxes_spec, classes_spec])
    def segment_fn(x, b, c):
        return model.segment_boxes(x, b, c)

    @tf.function(input_signature=[image_spec])
    def detect_fn(x):
        return model.detect_and_segment(x)

    feats = model.features(image, training=False)  # precomputed once for the mask-branch-only variants
    feat_spec = {level: tf.TensorSpec(t.shape, t.dtype) for level, t in feats.items()}
    last_detect: dict[str, Any] = {}

    def run_detect(_r: int) -> None:
        last_detect["out"] = _to_host(detect_fn(image))

    fns: dict[str, Callable[[int], Any]] = {
        "backbone": lambda _r: _to_host(backbone_fn(image)),
        "segment_boxes": lambda _r: _to_host(segment_fn(image, boxes, classes)),
        "detect_and_segment": run_detect,
    }
    params: dict[int, tuple[int, int]] = {}
    for width in widths:
        if width == cfg.mask.channels:
            variant = model
        else:
            # Only the mask branch of this model is timed; it sees the same 256-channel FPN features
            # whatever the backbone, so a tiny backbone saves building another ResNet.
            vcfg = dataclasses.replace(
                cfg,
                mask=dataclasses.replace(cfg.mask, channels=width),
                backbone=dataclasses.replace(cfg.backbone, name="tiny", weights_path=None),
            )
            variant = build_model(vcfg)
            variant.set_priors(rng.uniform(size=tuple(variant.prior_head.priors.shape)).astype(np.float32))
        params[width] = _mask_branch_params(variant)

        def mask_fn(f, b, c, _m=variant):
            out = _m.mask_branch(f, b, c, training=False)
            return {"masks": tf.sigmoid(out["fine_logits"]), "outer_boxes": out["outer_boxes"]}

        traced = tf.function(mask_fn, input_signature=[feat_spec, boxes_spec, classes_spec])

        def run_mask(_r: int, _f: Any = traced) -> Any:  # _f binds this width's function, not the loop's last
            return _to_host(_f(feats, boxes, classes))

        fns[f"mask_branch@{width}"] = run_mask

    log.info("timing %d variants: %d warm-up + %d timed rounds", len(fns), warmup, iters)
    latency = time_interleaved(fns, iters, warmup, progress=progress)
    med = {k: v["median_s"] for k, v in latency.items()}
    wide, narrow = widths[0], widths[-1]
    full_over_backbone = ratio(med["segment_boxes"], med["backbone"])
    wide_over_narrow = ratio(med[f"mask_branch@{wide}"], med[f"mask_branch@{narrow}"])
    detections = int(np.asarray(last_detect["out"]["num_detections"]).reshape(-1)[0])
    return {
        "benchmark": "model",
        "config": {
            "image_size": s,
            "backbone": cfg.backbone.name,
            "boxes": num_boxes,
            "iters": iters,
            "warmup": warmup,
            "mask_channels": cfg.mask.channels,
            "mask_branch_widths": widths,
            "num_mask_classes": cfg.num_mask_classes,
            "num_priors": cfg.mask.num_priors,
            "detector_classes": cfg.detector.num_classes,
            "score_threshold": cfg.postprocess.score_threshold,
            "max_detections": cfg.postprocess.max_detections,
            "seed": seed,
        },
        "build_s": build_s,
        "num_parameters": int(model.count_params()),
        "detect_and_segment_detections": detections,
        "latency": latency,
        "mask_branch": {
            str(w): {
                "median_s": med[f"mask_branch@{w}"],
                "params_trainable": params[w][0],
                "params_total": params[w][1],
                "speedup_vs_widest": ratio(med[f"mask_branch@{wide}"], med[f"mask_branch@{w}"]),
            }
            for w in widths
        },
        "ratios": {
            "segment_boxes_over_backbone": full_over_backbone,
            "detect_and_segment_over_backbone": ratio(med["detect_and_segment"], med["backbone"]),
            f"mask_branch_{wide}_over_{narrow}": wide_over_narrow,
            f"mask_branch_{wide}_share_of_segment_boxes": ratio(med[f"mask_branch@{wide}"], med["segment_boxes"]),
        },
        "targets": {
            "segment_boxes_over_backbone": target(full_over_backbone, TARGET_FULL_OVER_BACKBONE, False),
            f"mask_branch_{wide}_over_{narrow}": target(wide_over_narrow, TARGET_MASK_WIDE_OVER_NARROW, True),
        },
    }


# ------------------------------------------------------------------------------------------------ report
def fmt_ms(seconds: float | None) -> str:
    """Seconds as milliseconds with one decimal ("n/a" for None)."""
    return "n/a" if seconds is None else f"{seconds * 1000:.1f}"


def fmt_x(value: float | None) -> str:
    """A ratio as "1.23x" ("n/a" for None)."""
    return "n/a" if value is None else f"{value:.2f}x"


def targets_table(targets: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown table of target checks."""
    rows = ["| target | value | goal | met |", "| --- | --- | --- | --- |"]
    for name, t in targets.items():
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        unit = t["unit"]
        value = fmt_x(t["value"]) if unit == "x" or t["value"] is None else f"{t['value']:.1f} {unit}"
        rows.append(f"| {name} | {value} | {t['goal']} | {met} |")
    return "\n".join(rows)


def model_table(result: Mapping[str, Any]) -> str:
    """The model benchmark as markdown: latency table, mask-branch widths, targets."""
    c, lat = result["config"], result["latency"]
    head = (
        f"ShapeMask model benchmark: {c['backbone']} {c['image_size']}x{c['image_size']}, {c['boxes']} boxes, "
        f"random weights, batch 1, median of {c['iters']} after {c['warmup']} warm-up rounds"
    )
    rows = [
        head,
        "",
        "| variant | median ms | min ms | median CPU ms | first call s | vs backbone |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    base = lat["backbone"]["median_s"]
    for name in ("backbone", "segment_boxes", "detect_and_segment"):
        v = lat[name]
        label = name
        if name == "detect_and_segment":
            label += f" ({result['detect_and_segment_detections']} detections)"
        rows.append(
            f"| {label} | {fmt_ms(v['median_s'])} | {fmt_ms(v['min_s'])} | {fmt_ms(v['median_cpu_s'])} "
            f"| {v['first_call_s']:.2f} | {fmt_x(ratio(v['median_s'], base))} |"
        )
    rows += [
        "",
        "| mask branch width | median ms | min ms | speed-up vs widest | params (trainable) | params (total) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for w, m in result["mask_branch"].items():
        v = lat[f"mask_branch@{w}"]
        rows.append(
            f"| {w} | {fmt_ms(v['median_s'])} | {fmt_ms(v['min_s'])} | {fmt_x(m['speedup_vs_widest'])} "
            f"| {m['params_trainable']:,} | {m['params_total']:,} |"
        )
    rows += ["", targets_table(result["targets"])]
    return "\n".join(rows)
