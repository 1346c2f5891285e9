#!/usr/bin/env bash
# Issue 13 speed targets in one run on one quiet machine: the official TF2 ShapeMask (ResNet-50, 640²)
# first, then `shapemask bench bundles` on a 640x480 frame with 20 given boxes (ONNX Runtime) for the
# default model, its INT8 version (issue 24), the synthetic demo model and a random-weight ResNet-50 640
# bundle, with the official per-frame median beside them, and each bundle again with mirrored-image
# averaging (`flip_average`). Then the 3D stage (issue 24): the frame processor at 640x480 with 20 objects
# and the default model, without and with depth (pinhole camera, and a distorted camera whose intrinsics
# change every frame, as in `make demo`); last, bag-eval on the demo bag three times (issue 24 item 4).
# Results: build/bench/bundles.json, appended to docs/benchmarks.md; the 3D and bag-eval lines are printed
# (benchmarks/bag_eval_overhead.py compares two commits in alternating processes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/official_reference/setup.sh
build/official_reference/venv/bin/python benchmarks/official_reference/time_official.py \
  --image-size 640 --depth 50 --iters 5 --warmup 2 --out build/official_reference/timing.json
# models/real_lite0_int8 was made by (calibrated on training images only; see its MODEL_CARD.md):
#   shapemask quantize --model models/real_lite0 --out models/real_lite0_int8 --images 64 \
#     --calibration ../shared/data/coco_tiny/annotations/instances_train2017.json=../shared/data/coco_tiny/train2017 \
#     --calibration ../shared/data/coco_mini/annotations/instances_train2017.json=../shared/data/coco_mini/train2017
.venv/bin/shapemask bench bundles --model real_lite0=models/real_lite0 --model real_lite0_int8=models/real_lite0_int8 \
  --model demo=models/demo --resnet50 --flip-average --iters 20 --write-docs
for camera in "" "--distortion --pan"; do
  .venv/bin/python -m shapemask_ros.bench.frame3d_bench --predictor bundle --model models/real_lite0 --repeats 30 $camera
done
# bag-eval's overhead around the model on the demo bag (issue 24 item 4), three runs: wall and CPU time outside
# the model and the 3D stage, and CPU time outside the model with the 3D stage (report.json "timing")
for run in 1 2 3; do
  rm -rf "build/bench/demo_$run"
  .venv/bin/shapemask demo --out "build/bench/demo_$run" --overlays 0 > /dev/null
  .venv/bin/python -c 'import json, sys; t = json.load(open(sys.argv[1]))["timing"]; c = t["per_frame_cpu"]
print("bag-eval demo: overhead/model wall %.1f %%, CPU %.1f %%, CPU with 3D %.1f %% (model %.1f ms, outside it %.2f + 3D %.2f ms CPU a frame), warm-up %.2f s"
      % (100 * t["overhead_fraction"], 100 * t["overhead_fraction_cpu"], 100 * t["overhead_fraction_cpu_with_3d"],
         c["model"]["mean_ms"], c["overhead"]["mean_ms"], c["geometry"]["mean_ms"], t["warm_up_s"]))' \
    "build/bench/demo_$run/bag_eval/report.json"
done
