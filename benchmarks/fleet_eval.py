"""Issue 26 benchmark (not a timed test): a fleet of 8 demo bags evaluated serially, with --workers 2 and on
a local Ray instance with 2 CPUs, with the shipped model (ONNX Runtime, CPU). Prints a markdown section
for docs/benchmarks.md. Each mode runs `shapemask bag-eval` as a fresh process (model loading and worker
start-up included), all three in one run on one machine so their ratios compare.

    .venv/bin/python benchmarks/fleet_eval.py [--bags 8 --frames 20 --work build/bench/fleet]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE, DETS = "/camera/color/image_raw", "/detections"


def make_bags(work: Path, bags: int, frames: int) -> Path:
    """`bags` demo bags (different seeds) and a manifest with their ground truth."""
    entries = []
    for k in range(bags):
        out = work / "bags" / f"robot{k}"
        if not out.exists():
            cmd = ["make-demo-bag", "--out", str(out), "--frames", str(frames), "--seed", str(k)]
            subprocess.run([sys.executable, "-m", "shapemask_ros.cli", *cmd], check=True, capture_output=True)
        entries.append({"bag": f"bags/robot{k}", "gt": f"bags/robot{k}.gt.json"})
    manifest = work / "manifest.yaml"
    manifest.write_text(json.dumps({"defaults": {"image_topic": IMAGE, "detections_topic": DETS}, "bags": entries}))
    return manifest


def run_mode(manifest: Path, out: Path, extra: list[str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "shapemask_ros.cli", "bag-eval", "--manifest", str(manifest), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--overlays", "0", *extra], check=True, capture_output=True)
    process_s = time.perf_counter() - t0
    rep = json.loads((out / "fleet_report.json").read_text())
    rows = [r for r in rep["bags"] if r["status"] == "ok"]
    return {
        "process_s": process_s,
        "eval_wall_s": rep["run"]["wall_s"],
        "frames": rep["totals"]["processed"],
        "job_s": [r["job_s"] for r in rows],
        "bag_wall_s": [r["wall_s"] for r in rows],
        "ap": (rep.get("pooled_accuracy") or {}).get("mask_ap", {}).get("AP"),
        "threads": rep["run"]["onnxruntime_threads_per_worker"],
    }


def ray_task_overhead(n: int = 200) -> tuple[float, float]:
    """(seconds to start a local 2-CPU Ray, seconds per no-op task round trip when 2 run at a time)."""
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    start = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def noop(i: int) -> int:
        return i

    ray.get([noop.remote(i) for i in range(4)])  # workers started
    t0 = time.perf_counter()
    ray.get([noop.remote(i) for i in range(n)])
    per = (time.perf_counter() - t0) / n
    ray.shutdown()
    return start, per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bags", type=int, default=8)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--work", default=str(REPO / "build" / "bench" / "fleet"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = make_bags(work, args.bags, args.frames)
    modes = {
        "serial": [],
        "--workers 2": ["--workers", "2"],
        "--ray local --ray-cpus 2": ["--ray", "local", "--ray-cpus", "2"],
    }
    res = {name: run_mode(manifest, work / f"out_{k}", extra) for k, (name, extra) in enumerate(modes.items())}
    ray_start, ray_task = ray_task_overhead()
    base = res["serial"]["process_s"]
    print(f"### bench fleet ({time.strftime('%Y-%m-%dT%H:%M:%S%z')})\n")
    print(
        f"{args.bags} demo bags x {args.frames} frames (640x480, given boxes), shipped model `models/real_lite0`, "
        f"ONNX Runtime CPU, `{os.cpu_count()}` cores. `benchmarks/fleet_eval.py`.\n"
    )
    print(
        "| mode | ORT threads/worker | wall s (whole command) | of which evaluating | frames/s | speed-up "
        "| pooled mask AP |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in res.items():
        fps = r["frames"] / r["process_s"]
        print(
            f"| {name} | {r['threads']} | {r['process_s']:.1f} | {r['eval_wall_s']:.1f} | {fps:.2f} | "
            f"{base / r['process_s']:.2f}x | {r['ap']:.2f} |"
        )
    s = res["serial"]
    per_bag = sum(s["job_s"]) / len(s["job_s"])
    print(
        f"\nPer bag (serial): {per_bag:.2f} s ({per_bag / args.frames * 1e3:.0f} ms per frame, model loaded once). "
        f"Ray: {ray_start:.1f} s to start a local 2-CPU instance, {ray_task * 1e3:.1f} ms per no-op task "
        f"round trip ({200} tasks, 2 at a time)."
    )
    print("\n<!-- raw: " + json.dumps(res) + " -->")


if __name__ == "__main__":
    main()
