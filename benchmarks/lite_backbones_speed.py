"""Issue 23: is an EfficientNet-Lite1/Lite2 backbone worth training? Its speed decides first.

Exports random-weight ONNX bundles (fp16 weights, as `models/real_round2.sh export` ships) of the default
model's configuration (`training/configs/real_lite0.yaml`'s model section) with each Lite backbone, and prints
their sizes. Random weights cost what trained ones do: the graph is the same, and `bench bundles` times
`segment_boxes` on given boxes. Then time them side by side in one run (ratios within one run are what count):

    .venv/bin/python benchmarks/lite_backbones_speed.py
    .venv/bin/shapemask bench bundles --model lite0=build/bench/lite_backbones/efficientnet_lite0 \\
      --model lite1=build/bench/lite_backbones/efficientnet_lite1 \\
      --model lite2=build/bench/lite_backbones/efficientnet_lite2 --iters 30
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(REPO / "training" / "configs" / "real_lite0.yaml"))
    p.add_argument("--out", default=str(REPO / "build" / "bench" / "lite_backbones"))
    p.add_argument("--variants", nargs="+", default=list(LITE_VARIANTS), choices=list(LITE_VARIANTS))
    args = p.parse_args()
    base = load_model_config(args.config)
    for name in args.variants:
        # no weight or prior files: random initialisation builds the same graph
        cfg = dataclasses.replace(
            base,
            backbone=dataclasses.replace(base.backbone, name=name, weights_path=None),
            mask=dataclasses.replace(base.mask, priors_path=None),
        )
        keras.utils.set_random_seed(0)
        model = build_model(cfg)
        shape = tuple(model.prior_head.priors.shape)
        model.set_priors(np.random.default_rng(0).uniform(size=shape).astype(np.float32))
        out = os.path.join(args.out, name)
        names = [f"class_{i}" for i in range(cfg.detector.num_classes)]
        export_bundle(
            model, out, names, saved_model=False, onnx_weights="fp16", extra={"created_by": "lite_backbones_speed"}
        )
        size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
        print(f"{name}: {out} {size / 1e6:.1f} MB, {model.backbone.count_params() / 1e6:.2f} M backbone parameters")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
