"""Issue 23: is an EfficientNet-Lite1/Lite2 backbone (or a larger mask) worth training? Its speed decides first.

Exports untrained ONNX bundles (fp16 weights, as `models/real_round2.sh export` ships) of the default model's
configuration (`training/configs/real_lite0.yaml`'s model section) with each Lite backbone, and prints their
sizes. Untrained weights cost what trained ones do: the graph is the same, and `bench bundles` times
`segment_boxes` on given boxes. Sizes need real weights (float16 storage keeps some ImageNet tensors float32):
with `--backbone-weights out/backbones` the Lite0 bundle is the shipped one's 15.6 MB. Then time them side by
side in one run (ratios within one run are what count; the host's speed drifts):

    .venv/bin/python benchmarks/lite_backbones_speed.py --backbone-weights out/backbones
    .venv/bin/shapemask bench bundles --model lite0=build/bench/lite_backbones/efficientnet_lite0 \\
      --model lite1=build/bench/lite_backbones/efficientnet_lite1 \\
      --model lite2=build/bench/lite_backbones/efficientnet_lite2 --model shipped=models/real_lite0 --iters 30

`--mask-crop-size N` exports the same model with an N x N coarse mask (the fine mask is 4N x 4N; the default
config's 32 gives the paper's 128), into `<variant>_maskN`, for issue 23's "larger mask resolution".
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import keras
import numpy as np

from shapemask_ros.config.loading import load_model_config
from shapemask_ros.export.bundle import export_bundle
from shapemask_ros.model.efficientnet_lite import LITE_VARIANTS
from shapemask_ros.model.shapemask import build_model

REPO = Path(__file__).resolve().parents[1]


def _trained_like_batch_norm(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every normalisation layer varied parameters and statistics, as training does: fresh ones (all 0 / 1)
    export as few shared constants (a random Lite0 bundle 14.0 MB with them, 15.3 MB without; shipped 15.6)."""
    for v in model.variables:  # gamma, beta, moving mean, moving variance: all positive is fine
        if v.name in ("gamma", "beta", "moving_mean", "moving_variance"):
            v.assign(rng.uniform(0.5, 1.5, size=tuple(v.shape)).astype(np.float32))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "training" / "configs" / "real_lite0.yaml"))
    p.add_argument("--out", default=str(REPO / "build" / "bench" / "lite_backbones"))
    p.add_argument("--variants", nargs="+", default=list(LITE_VARIANTS), choices=list(LITE_VARIANTS))
    p.add_argument(
        "--backbone-weights",
        default=None,
        help="folder of `convert-backbone` files (efficientnet_liteN_imagenet.npz): ImageNet backbones, for "
        "the sizes a trained bundle has (float16 storage keeps some real tensors float32); default random",
    )
    p.add_argument("--mask-crop-size", type=int, default=None, help="coarse mask size (default: the config's)")
    args = p.parse_args()
    base = load_model_config(args.config)
    for name in args.variants:
        weights = os.path.join(args.backbone_weights, f"{name}_imagenet.npz") if args.backbone_weights else None
        # random priors (and backbone, without --backbone-weights): the same graph as the trained model's
        cfg = dataclasses.replace(
            base,
            backbone=dataclasses.replace(base.backbone, name=name, weights_path=weights),
            mask=dataclasses.replace(base.mask, priors_path=None, crop_size=args.mask_crop_size or base.mask.crop_size),
        )
        keras.utils.set_random_seed(0)
        model = build_model(cfg, pretrained_backbone=weights is not None)
        rng = np.random.default_rng(0)
        model.set_priors(rng.uniform(size=tuple(model.prior_head.priors.shape)).astype(np.float32))
        if weights is None:
            _trained_like_batch_norm(model, rng)
        out = os.path.join(args.out, name + (f"_mask{args.mask_crop_size}" if args.mask_crop_size else ""))
        names = [f"class_{i}" for i in range(cfg.detector.num_classes)]
        export_bundle(
            model, out, names, saved_model=False, onnx_weights="fp16", extra={"created_by": "lite_backbones_speed"}
        )
        size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
        print(f"{name}: {out} {size / 1e6:.1f} MB, {model.backbone.count_params() / 1e6:.2f} M backbone parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
