#!/usr/bin/env bash
# Reproduces models/demo: synthetic data -> priors -> TFRecords -> train (synthetic_tiny) -> eval -> export.
# About 40 minutes on a 2-core CPU. Deterministic data (seeds 1 and 2); training is seeded.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/shapemask
export TF_CPP_MIN_LOG_LEVEL=2
$S make-synthetic --out out/synthetic/train --images 600 --seed 1
$S make-synthetic --out out/synthetic/val --images 100 --seed 2
$S priors --annotations out/synthetic/train/annotations.json --k 16 --out out/synthetic/priors.npy \
  --picture out/synthetic/priors.png
$S make-tfrecords --annotations out/synthetic/train/annotations.json --images out/synthetic/train/images \
  --out out/synthetic/tfrecords/train --shards 4
$S train --config training/configs/synthetic_tiny.yaml
for src in gt gt_shrunk model; do
  $S eval --config training/configs/synthetic_tiny.yaml --annotations out/synthetic/val/annotations.json \
    --images out/synthetic/val/images --box-source "$src" --metrics "out/synthetic_tiny/eval_$src.json"
done
$S export --config training/configs/synthetic_tiny.yaml --annotations out/synthetic/train/annotations.json \
  --out models/demo --no-saved-model --verify
