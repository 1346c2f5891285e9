"""`shapemask bench runtime`: the inference runtime end to end, through `Predictor` (issue 3).

One process, one machine, the same images for every variant, interleaved rounds, medians after warm-up:

- TensorFlow (SavedModel) vs ONNX Runtime at N given boxes (default 20); target: ONNX Runtime >= 1.3x faster;
- ONNX Runtime latency vs the number of boxes (1, 5, 20, 100);
- full inference with self-detection (`detect_and_segment`) on both backends, compared with the official
  TF2 ShapeMask's median per frame from `benchmarks/official_reference/time_official.py` when its JSON
  is present (same input size and ResNet depth required); target: ours >= 10x faster.

Every timed call is `Predictor.predict` on a uint8 image: letterbox, the backend's graph, and pasting the
masks into the image -- more than the official timing covers (graph only), so the comparison is
conservative. The model is a random-weight bundle exported once into a cache folder (reused when its
configuration matches). Its score threshold is 0 by default so random weights give `max_detections`
(100) detections and the mask branch runs on 100 boxes, like the official model's 100 padded slots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from shapemask_ros.bench.model_bench import (
    configure_threads,
    fmt_ms,
    fmt_x,
    host_info,
    ratio,
    target,
    targets_table,
    time_interleaved,
)
from shapemask_ros.config.loading import to_dict
from shapemask_ros.config.model_config import ModelConfig

log = logging.getLogger(__name__)

TARGET_ORT_OVER_TF = 1.3  # issue 3: ONNX Runtime >= 1.3x faster than TensorFlow (20 boxes)
TARGET_OFFICIAL_OVER_OURS = 10.0  # issue 3: ours >= 10x faster per frame than the official ShapeMask
DEFAULT_BOX_COUNTS: tuple[int, ...] = (1, 5, 20, 100)
DEFAULT_OFFICIAL_JSON = "build/official_reference/timing.json"
BACKENDS: tuple[str, ...] = ("tensorflow", "onnxruntime")
_DEPTHS = {"resnet50": 50, "resnet101": 101}


# ------------------------------------------------------------------------------------------------ bundle
def bench_config(cfg: ModelConfig, score_threshold: float | None = 0.0) -> ModelConfig:
    """`cfg` with the benchmark's score threshold (None = keep the configured one)."""
    if score_threshold is None:
        return cfg
    return dataclasses.replace(
        cfg, postprocess=dataclasses.replace(cfg.postprocess, score_threshold=float(score_threshold))
    )


def bundle_dir_for(cfg: ModelConfig, cache_dir: str) -> str:
    """Cache folder name of the random-weight bundle for `cfg` (the JSON check below guards the rest)."""
    thr = f"{cfg.postprocess.score_threshold:g}".replace(".", "p")
    return os.path.join(cache_dir, f"bundle-{cfg.backbone.name}-{cfg.image_size}-score{thr}")


def _cached_matches(path: str, cfg: ModelConfig, max_boxes: int) -> bool:
    """True when `path` holds a complete bundle exported from exactly this configuration."""
    try:
        with open(os.path.join(path, "model.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    wanted = json.loads(json.dumps(to_dict(cfg)))  # tuples -> lists, as stored
    complete = bool(meta.get("saved_model")) and set(meta.get("onnx") or {}) >= set(
        ("segment_boxes", "detect_and_segment")
    )
    return complete and meta.get("model_config") == wanted and meta.get("max_boxes") == max_boxes


def ensure_bundle(
    cfg: ModelConfig, path: str, max_boxes: int = 100, seed: int = 0, force: bool = False
) -> tuple[str, bool]:
    """Export a random-weight bundle (SavedModel + ONNX) of `cfg` to `path` unless a matching one is there.

    Returns (path, reused). The export replaces `path` atomically (see `export_bundle`).
    """
    if not force and _cached_matches(path, cfg, max_boxes):
        log.info("reusing benchmark bundle %s", path)
        return path, True
    import keras

    from shapemask_ros.export.bundle import export_bundle
    from shapemask_ros.model.shapemask import build_model

    log.info(
        "exporting a random-weight %s %d bundle to %s (minutes for a ResNet)", cfg.backbone.name, cfg.image_size, path
    )
    keras.utils.set_random_seed(seed)
    model = build_model(cfg)
    rng = np.random.default_rng(seed)
    model.set_priors(rng.uniform(size=tuple(model.prior_head.priors.shape)).astype(np.float32))
    names = [f"class_{i}" for i in range(cfg.detector.num_classes)]
    export_bundle(model, path, names, max_boxes=max_boxes, extra={"created_by": "shapemask bench runtime"})
    return path, False


# ------------------------------------------------------------------------------------------------ inputs
def bench_images(size: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` deterministic uint8 RGB images, size x size (smooth blobs + noise, not flat)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = []
    for _ in range(count):
        img = np.zeros((size, size, 3), np.float32)
        for _blob in range(6):
            cx, cy, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3)
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            img[inside] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 12, img.shape)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images


def bench_boxes(size: int, count: int, seed: int = 0) -> np.ndarray:
    """[count, 4] float (x1, y1, x2, y2) boxes inside a size x size image, 5-60 % of the side."""
    rng = np.random.default_rng(seed)
    wh = rng.uniform(0.05, 0.6, (count, 2)) * size
    xy = rng.uniform(0, 1, (count, 2)) * (size - wh)
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


# ------------------------------------------------------------------------------------------------ official
def read_official(path: str | None, image_size: int, depth: int | None) -> dict[str, Any] | None:
    """The official reference timing (time_official.py JSON) or None when absent/unreadable.

    `comparable` says whether it ran at our input size and ResNet depth (the ratio is only a target
    check when it did).
    """
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        median = float(data["median_s"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring official reference timing %s: %s", path, e)
        return None
    if not median > 0:
        log.warning("ignoring official reference timing %s: median_s %r is not positive", path, median)
        return None
    same = data.get("image_size") == image_size and depth is not None and data.get("resnet_depth") == depth
    return {
        "path": path,
        "median_s": median,
        "first_call_s": data.get("first_call_s"),
        "image_size": data.get("image_size"),
        "resnet_depth": data.get("resnet_depth"),
        "class_agnostic_masks": data.get("class_agnostic_masks"),
        "loadavg_at_end": (data.get("host") or {}).get("loadavg_at_end"),
        "timestamp": data.get("timestamp"),
        "comparable": bool(same),
    }


# ------------------------------------------------------------------------------------------------ bench
def _key(backend: str, what: str) -> str:
    return f"{backend}/{what}"


def run_runtime_bench(
    bundle_path: str,
    num_boxes: int = 20,
    box_counts: Sequence[int] = DEFAULT_BOX_COUNTS,
    iters: int = 10,
    warmup: int = 3,
    threads: int = 0,
    num_images: int = 2,
    official_json: str | None = DEFAULT_OFFICIAL_JSON,
    backbone: str | None = None,
    seed: int = 0,
    progress: bool = True,
    threads_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Time the bundle through `Predictor` on TensorFlow and ONNX Runtime; returns the JSON-ready result.

    threads: ONNX Runtime intra-op threads (0 = all cores); TensorFlow's are set by `configure_threads`
    before TensorFlow starts (pass its result as `threads_info` for the report).
    backbone: the bundle's backbone name for the official comparison (None = from model.json).
    """
    from shapemask_ros.runtime.backends import BackendOptions
    from shapemask_ros.runtime.predictor import Predictor

    if num_boxes < 1 or any(int(n) < 1 for n in box_counts):
        raise ValueError(f"box counts must be >= 1, got {num_boxes} and {list(box_counts)}")
    if num_images < 1:
        raise ValueError(f"--images must be >= 1, got {num_images}")
    counts = sorted({int(n) for n in box_counts} | {int(num_boxes)})
    n_threads = int(threads) if threads > 0 else (os.cpu_count() or 1)
    try:  # both backends are required: the comparison between them is the point
        predictors = {
            "tensorflow": Predictor.load(bundle_path, backend="tensorflow"),
            "onnxruntime": Predictor.load(
                # spinning threads, as this comparison's earlier results were measured
                bundle_path,
                backend="onnxruntime",
                options=BackendOptions(intra_op_num_threads=n_threads, spin=True),
            ),
        }
    except RuntimeError as e:
        raise ValueError(f"cannot benchmark {bundle_path} (needs its SavedModel and ONNX graphs): {e}") from e
    bundle = predictors["onnxruntime"].bundle
    s = bundle.image_size
    images = bench_images(s, num_images, seed)
    boxes = {n: [bench_boxes(s, n, seed + 1000 * i + n) for i in range(num_images)] for n in counts}
    detections: dict[str, int] = {}

    def segment(pred: Predictor, n: int) -> Callable[[int], Any]:
        return lambda r: pred.predict(images[r % num_images], boxes[n][r % num_images])

    def detect(name: str, pred: Predictor) -> Callable[[int], Any]:
        def fn(r: int) -> None:
            detections[name] = len(pred.predict(images[r % num_images]))

        return fn

    fns: dict[str, Callable[[int], Any]] = {}
    for name, pred in predictors.items():
        fns[_key(name, f"segment_boxes@{num_boxes}")] = segment(pred, num_boxes)
        fns[_key(name, "detect_and_segment")] = detect(name, pred)
    for n in counts:
        fns.setdefault(_key("onnxruntime", f"segment_boxes@{n}"), segment(predictors["onnxruntime"], n))
    log.info("timing %d variants: %d warm-up + %d timed rounds", len(fns), warmup, iters)
    latency = time_interleaved(fns, iters, warmup, progress=progress)
    med = {k: v["median_s"] for k, v in latency.items()}

    meta = _bundle_meta(bundle_path)
    mcfg = meta.get("model_config") or {}
    backbone = backbone or (mcfg.get("backbone") or {}).get("name")
    official = read_official(official_json, s, _DEPTHS.get(backbone or ""))
    tf_seg, ort_seg = (
        med[_key("tensorflow", f"segment_boxes@{num_boxes}")],
        med[_key("onnxruntime", f"segment_boxes@{num_boxes}")],
    )
    ort_over_tf = ratio(tf_seg, ort_seg)  # > 1: ONNX Runtime faster
    ratios: dict[str, float | None] = {
        f"tensorflow_over_onnxruntime_segment_boxes@{num_boxes}": ort_over_tf,
        "tensorflow_over_onnxruntime_detect_and_segment": ratio(
            med[_key("tensorflow", "detect_and_segment")], med[_key("onnxruntime", "detect_and_segment")]
        ),
    }
    targets: dict[str, dict[str, Any]] = {
        f"onnxruntime_speedup_over_tensorflow@{num_boxes}": target(ort_over_tf, TARGET_ORT_OVER_TF, True),
    }
    if official is not None:
        for name in BACKENDS:
            r = ratio(official["median_s"], med[_key(name, "detect_and_segment")])
            ratios[f"official_over_{name}_detect_and_segment"] = r
            if official["comparable"]:
                targets[f"speedup_over_official ({name})"] = target(r, TARGET_OFFICIAL_OVER_OURS, True)
    return {
        "benchmark": "runtime",
        "bundle": os.path.abspath(bundle_path),
        "config": {
            "image_size": s,
            "backbone": backbone,
            "boxes": num_boxes,
            "box_counts": counts,
            "images": num_images,
            "iters": iters,
            "warmup": warmup,
            "score_threshold": bundle.score_threshold,
            "max_boxes": bundle.max_boxes,
            "mask_class_agnostic": bundle.mask_class_agnostic,
            "num_classes": bundle.num_classes,
            "seed": seed,
            "timed": "Predictor.predict on uint8 RGB (letterbox + graph + mask pasting)",
        },
        "threads": dict(threads_info) if threads_info else {"ort_intra_op": n_threads},
        "backends": {name: pred.backend for name, pred in predictors.items()},
        "latency": latency,
        "onnxruntime_latency_vs_boxes": {str(n): med[_key("onnxruntime", f"segment_boxes@{n}")] for n in counts},
        "detect_and_segment_detections": detections,
        "official": official,
        "ratios": ratios,
        "targets": targets,
    }


def _bundle_meta(path: str) -> dict[str, Any]:
    try:
        with open(os.path.join(path, "model.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_runtime_bench_with_export(
    cfg: ModelConfig,
    cache_dir: str = "build/bench",
    force_export: bool = False,
    max_boxes: int = 100,
    score_threshold: float | None = 0.0,
    threads: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Set threads, export (or reuse) the random-weight bundle of `cfg` under `cache_dir`, then bench it."""
    threads_info = configure_threads(threads)
    cfg = bench_config(cfg, score_threshold)
    path = bundle_dir_for(cfg, cache_dir)
    t0 = time.perf_counter()
    path, reused = ensure_bundle(cfg, path, max_boxes=max_boxes, force=force_export)
    export_s = time.perf_counter() - t0
    result = run_runtime_bench(path, threads=threads, backbone=cfg.backbone.name, threads_info=threads_info, **kwargs)
    result["bundle_reused"] = reused
    result["export_s"] = None if reused else export_s
    result["host"] = host_info()
    return result


# ------------------------------------------------------------------------------------------------ report
def runtime_table(result: Mapping[str, Any]) -> str:
    """The runtime benchmark as markdown: backends, boxes sweep, official comparison, targets."""
    c, lat = result["config"], result["latency"]
    n = c["boxes"]
    th = result.get("threads") or {}
    rows = [
        f"ShapeMask runtime benchmark: {c['backbone']} {c['image_size']}x{c['image_size']}, random weights, "
        f"Predictor.predict (letterbox + graph + pasting), median of {c['iters']} after {c['warmup']} warm-up "
        f"rounds over {c['images']} images; threads: TF intra {th.get('tf_intra_op', '?')} / inter "
        f"{th.get('tf_inter_op', '?')}, ORT intra {th.get('ort_intra_op', '?')} (0 = library default)",
        "",
        f"| backend | segment_boxes, {n} boxes: median ms | min ms | detect_and_segment: median ms | min ms "
        "| detections |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name in BACKENDS:
        seg, det = lat[_key(name, f"segment_boxes@{n}")], lat[_key(name, "detect_and_segment")]
        rows.append(
            f"| {result['backends'][name]} | {fmt_ms(seg['median_s'])} | {fmt_ms(seg['min_s'])} "
            f"| {fmt_ms(det['median_s'])} | {fmt_ms(det['min_s'])} "
            f"| {result['detect_and_segment_detections'].get(name, 'n/a')} |"
        )
    rows += ["", "| boxes (ONNX Runtime) | median ms | min ms | ms per box |", "| --- | --- | --- | --- |"]
    for k in c["box_counts"]:
        v = lat[_key("onnxruntime", f"segment_boxes@{k}")]
        rows.append(f"| {k} | {fmt_ms(v['median_s'])} | {fmt_ms(v['min_s'])} | {fmt_ms(v['median_s'] / k)} |")
    off = result.get("official")
    rows.append("")
    if off is None:
        rows.append("Official reference: no timing JSON found (run benchmarks/official_reference first).")
    else:
        rows += [
            f"Official TF2 ShapeMask (tf-models-official 2.20, {off['path']}): median {fmt_ms(off['median_s'])} ms "
            f"per frame at {off['image_size']}x{off['image_size']}, ResNet-{off['resnet_depth']}, "
            f"{'class-agnostic' if off['class_agnostic_masks'] else 'class-specific'} masks"
            + ("" if off["comparable"] else " -- NOT the same input size / depth as ours: no target check"),
            "",
            "| ours (detect_and_segment) | median ms | official / ours |",
            "| --- | --- | --- |",
        ]
        for name in BACKENDS:
            r = result["ratios"].get(f"official_over_{name}_detect_and_segment")
            rows.append(
                f"| {result['backends'][name]} | {fmt_ms(lat[_key(name, 'detect_and_segment')]['median_s'])} "
                f"| {fmt_x(r)} |"
            )
    rows += ["", targets_table(result["targets"])]
    return "\n".join(rows)
