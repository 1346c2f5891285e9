"""Study 4: mask-branch width (paper Table 6) on the synthetic shapes.

Full ShapeMask (masks of all families supervised) with 128 / 64 / 32 / 16 mask-branch channels. Per width:
mask AP (GT boxes and detections); trainable parameters of the mask branch (projection, prior, coarse and
fine heads; the fixed priors are counted apart); multiply-accumulates of its convolutions and dense layers
counted analytically (`mask_branch_macs`), cross-checked against TensorFlow's profiler FLOPs of the traced
mask branch (which also counts element-wise ops); and the measured mask-branch time on this machine
(median over repeats of the traced branch on precomputed features, batch 1).
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from shapemask_ros.config.model_config import ModelConfig
from shapemask_ros.utils.formatting import fmt
from shapemask_training.experiments.budgets import Budget
from shapemask_training.experiments.plots import new_figure
from shapemask_training.experiments.reports import claim, md_table, report_markdown, split_ap, train_minutes
from shapemask_training.experiments.study import StudyPlan, run_study
from shapemask_training.experiments.variants import Variant

STUDY = "mask_width"
WIDTHS: tuple[int, ...] = (128, 64, 32, 16)
TIMING_BOXES = 8  # instances per image in the timing run (the training sample count)


def variants() -> list[Variant]:
    """One full ShapeMask per width; everything else as the base config."""
    return [Variant(f"width_{w}", f"{w} channels", {"model": {"mask": {"channels": w}}}) for w in WIDTHS]


def mask_branch_macs(cfg: ModelConfig) -> dict[str, int]:
    """Multiply-accumulates of the mask branch's convolutions and dense layers (element-wise ops excluded).

    Returns {"per_instance", "projection_per_image", "prior_head", "coarse_head", "fine_head",
    "convolutions_per_instance"}: the 1x1 projection runs once per image on every pyramid level (before
    cropping); the heads once per instance.
    """
    m = cfg.mask
    n, cm, k, c_ = m.crop_size, m.channels, m.num_priors, cfg.num_mask_classes
    f = n * m.upsample_factor

    def conv(hw: int, kernel: int, cin: int, cout: int) -> int:
        return hw * hw * kernel * kernel * cin * cout

    # prior head: box-masked mean of X, logits, class row of the priors, weighted sum of the K priors
    prior = (n * n * cm + cm * c_ * k + c_ * k * n * n + k * n * n) if m.use_shape_prior else 0
    coarse = conv(n, 1, 1, cm) + m.num_convs * conv(n, 3, cm, cm) + conv(n, 1, cm, c_)
    # x`u` upsampling (kernel == stride) and the 1x1 logits run as one linear map from cm to u*u*c_ channels at
    # n x n (their weight product, see FineMaskHead._upsampled_logits): f*f*cm*c_ per instance
    fine = conv(n, 1, 1, cm) + m.num_convs * conv(n, 3, cm, cm) + f * f * cm * c_
    levels = range(cfg.anchors.min_level, cfg.anchors.max_level + 1)
    projection = sum(math.ceil(cfg.image_size / 2**lv) ** 2 for lv in levels) * cfg.detector.fpn_channels * cm
    return {
        "per_instance": prior + coarse + fine,
        "projection_per_image": projection,
        "prior_head": prior,
        "coarse_head": coarse,
        "fine_head": fine,
        "convolutions_per_instance": coarse + fine,
    }


def _branch_layers(model) -> list:
    return [model.mask_projection, model.prior_head, model.coarse_head, model.fine_head]


def mask_branch_params(model) -> dict[str, int]:
    """Trainable parameters of the mask branch, its batch-norm statistics, and the fixed priors."""
    trainable = sum(int(np.prod(w.shape)) for layer in _branch_layers(model) for w in layer.trainable_weights)
    fixed = sum(int(np.prod(w.shape)) for layer in _branch_layers(model) for w in layer.non_trainable_weights)
    priors = int(np.prod(model.prior_head.priors.shape))
    return {"trainable": trainable, "batchnorm_statistics": fixed - priors, "fixed_priors": priors}


def _branch_function(model, num_boxes: int):
    """Traced mask branch on precomputed features for `num_boxes` boxes (batch 1, static shapes)."""
    import tensorflow as tf

    s = model.cfg.image_size
    feats = model.features(np.zeros((1, s, s, 3), np.float32))
    spec = {lv: tf.TensorSpec(v.shape, v.dtype) for lv, v in feats.items()}

    @tf.function
    def branch(feats, boxes, classes):
        return model.mask_branch(feats, boxes, classes, training=False)["fine_logits"]

    box_spec = tf.TensorSpec((1, num_boxes, 4), tf.float32)
    cls_spec = tf.TensorSpec((1, num_boxes), tf.int32)
    return branch, branch.get_concrete_function(spec, box_spec, cls_spec), feats


def profiler_flops(model, num_boxes: int = 1) -> int:
    """Total float ops TensorFlow's profiler counts in the traced mask branch for `num_boxes` boxes."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    _, concrete, _ = _branch_function(model, num_boxes)
    graph = convert_variables_to_constants_v2(concrete).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops)


def time_mask_branch(model, num_boxes: int = TIMING_BOXES, repeats: int = 20, seed: int = 0) -> dict[str, float]:
    """Median / min wall time (ms) of the traced mask branch for `num_boxes` random boxes on one image's
    precomputed features (2 warm-up calls first)."""
    branch, _, feats = _branch_function(model, num_boxes)
    s = float(model.cfg.image_size)
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.6 * s, (1, num_boxes, 2))
    wh = rng.uniform(0.1 * s, 0.4 * s, (1, num_boxes, 2))
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    classes = np.zeros((1, num_boxes), np.int32)
    for _ in range(2):
        branch(feats, boxes, classes).numpy()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        branch(feats, boxes, classes).numpy()
        times.append((time.perf_counter() - t0) * 1e3)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "num_boxes": num_boxes,
        "repeats": len(times),
    }


def _extra(budget: Budget):
    def extra(model, cfg) -> dict[str, Any]:
        macs = mask_branch_macs(cfg.model)
        f1, f2 = profiler_flops(model, 1), profiler_flops(model, 2)
        return {
            "channels": cfg.model.mask.channels,
            "params": mask_branch_params(model),
            "macs": macs,
            "profiler_flops": {"per_instance": f2 - f1, "fixed_per_image": 2 * f1 - f2},
            "timing": time_mask_branch(model, TIMING_BOXES, budget.timing_repeats),
            "load_average_after_timing": [round(v, 2) for v in os.getloadavg()],
        }

    return extra


def claims(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paper Table 6 directions: 16 channels cost little AP (paper -1.2 AP from 128), for far fewer parameters
    and less mask-branch time."""
    by = {r["channels"]: r for r in rows}
    ap128, ap16 = split_ap(by[128], "gt", "all"), split_ap(by[16], "gt", "all")
    ratio = by[128]["params"]["trainable"] / max(by[16]["params"]["trainable"], 1)
    times = [by[w]["timing"]["median_ms"] for w in sorted(by, reverse=True)]
    return [
        claim(
            "16 channels lose <= 1.5 AP vs 128 (GT boxes; paper -1.2)",
            f"{fmt(ap16 - ap128)} AP",
            None if math.isnan(ap128 + ap16) or ap128 <= 0 else ap16 - ap128 >= -1.5,
        ),
        claim("16 channels need far fewer mask-branch parameters (>= 10x)", f"{ratio:.0f}x", ratio >= 10),
        claim(
            "mask-branch time falls with width (128 > 64 > 32 > 16)",
            " > ".join(f"{t:.1f}" for t in times) + " ms",
            all(a > b for a, b in zip(times, times[1:], strict=False)),
        ),
    ]


def markdown(payload: dict[str, Any]) -> str:
    rows = payload["variants"]
    table = md_table(
        [
            "channels",
            "AP (GT boxes)",
            "AP (detections)",
            "mask-branch params",
            "MMAC / instance",
            "profiler MFLOP / instance",
            "MMAC projection / image",
            f"mask-branch ms ({TIMING_BOXES} boxes)",
            "train min",
        ],
        [
            [
                r["channels"],
                split_ap(r, "gt", "all"),
                split_ap(r, "model", "all"),
                f"{r['params']['trainable']:,}",
                r["macs"]["per_instance"] / 1e6,
                r["profiler_flops"]["per_instance"] / 1e6,
                r["macs"]["projection_per_image"] / 1e6,
                r["timing"]["median_ms"],
                train_minutes(r),
            ]
            for r in rows
        ],
    )
    return report_markdown(
        payload,
        "Mask-branch width (paper Table 6) on synthetic shapes",
        (
            "Full ShapeMask, masks of all families supervised. Mask AP (COCO segm, %). Parameters: "
            "trainable weights of the 1x1 projection and the prior / coarse / fine heads (fixed priors and "
            "batch-norm statistics excluded). MAC: conv + dense multiply-accumulates, counted analytically; "
            "the profiler column is TensorFlow's FLOP count of the traced branch (2 per MAC, plus "
            "element-wise ops). Time: median of the traced mask branch on precomputed features on this "
            "(shared, loaded) CPU. Paper (COCO, V100): 37.0 / 36.7 / 36.6 / 35.8 AP and "
            "29.1 / 14.0 / 7.0 / 4.6 ms for 128 / 64 / 32 / 16 channels."
        ),
        table,
    )


def figure(payload: dict[str, Any]):
    rows = sorted(payload["variants"], key=lambda r: r["channels"])
    ws = [r["channels"] for r in rows]
    fig, (a1, a2) = new_figure(ncols=2, width=4.6)
    a1.plot(ws, [split_ap(r, "gt", "all") for r in rows], "o-", label="GT boxes")
    a1.plot(ws, [split_ap(r, "model", "all") for r in rows], "s-", label="detections")
    a1.set_xscale("log", base=2)
    a1.set_xticks(ws, [str(w) for w in ws])
    a1.set_xlabel("mask-branch channels")
    a1.set_ylabel("mask AP (%)")
    a1.legend(fontsize=7)
    a2.plot(ws, [r["timing"]["median_ms"] for r in rows], "o-", color="C2", label="time (ms)")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xticks(ws, [str(w) for w in ws])
    a2.set_xlabel("mask-branch channels")
    a2.set_ylabel(f"mask-branch ms ({TIMING_BOXES} boxes)")
    twin = a2.twinx()
    twin.plot(ws, [r["params"]["trainable"] for r in rows], "s--", color="C3")
    twin.set_yscale("log")
    twin.set_ylabel("parameters (dashed)")
    fig.suptitle(f"Mask-branch width ({payload['budget']} budget)")
    fig.tight_layout()
    return fig


PLAN = StudyPlan(
    STUDY,
    variants,
    claims,
    markdown,
    figure,
    reference_sources=(),
    extra=_extra,
    allow_partial=False,
    check_split=False,
)


# run(budget, out_dir, work_dir, argv=None, progress=False, reuse=True, only=None) -> payload
run = functools.partial(run_study, PLAN)
