#!/usr/bin/env bash
# Issue 13 speed targets in one run on one quiet machine: the official TF2 ShapeMask (ResNet-50, 640²)
# first, then `shapemask bench bundles` on a 640x480 frame with 20 given boxes (ONNX Runtime) for the
# default model, the synthetic demo model and a random-weight ResNet-50 640 bundle, with the official
# per-frame median beside them, and each bundle again with mirrored-image averaging (`flip_average`).
# Results: build/bench/bundles.json, appended to docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/official_reference/setup.sh
build/official_reference/venv/bin/python benchmarks/official_reference/time_official.py \
  --image-size 640 --depth 50 --iters 5 --warmup 2 --out build/official_reference/timing.json
.venv/bin/shapemask bench bundles --model real_lite0=models/real_lite0 --model demo=models/demo --resnet50 \
  --flip-average --iters 20 --write-docs
