"""Latency and throughput of the real node process (a benchmark, not a test): stamp -> mask over DDS.

    python -m shapemask_ros.bench.node_bench [--rates 10,30] [--frames 300] [--boxes 20] [--frames-in-flight 1,2]
                                             [--soak 10000]

Run inside a ROS environment (e.g. `. ~/.cache/shapemask_ros/ros-jazzy/env.sh` after `make test-ros`, or a
sourced workspace) with the recommended transport (`FASTRTPS_DEFAULT_PROFILES_FILE=config/fastdds_shm.xml`).
Per input rate: the node as its own process (autostart, 640x480 rgb8 + Detection2DArray, reliable QoS),
stamp -> masks received p50/p90/max, output rate, drops by reason (from /diagnostics), the node's RSS after
warm-up and at the end; next to the Predictor's own per-frame time on the same frames and boxes, measured
in this process before and after every node run (never while a node runs, so the two do not compete for the
cores), and the frames/s of two threads calling it at once on one-thread sessions (frames_in_flight 2's way).
`--soak N` adds a run of N frames at the highest rate for RSS growth. Prints a markdown table; `--out` JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from typing import Any

import numpy as np

from shapemask_ros.bench.node_driver import (
    Driver,
    counters_of,
    default_boxes,
    node_values,
    send_frames,
    synthetic_rgb,
)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _load(model: str, backend: str, threads: int = 0) -> Any:
    from shapemask_ros.runtime.backends import BackendOptions
    from shapemask_ros.runtime.bundle import resolve_model_path
    from shapemask_ros.runtime.predictor import Predictor

    # ONNX Runtime's spinning threads, as the reference rate of the earlier node_bench results was measured
    options = BackendOptions(intra_op_num_threads=threads, spin=True)
    return Predictor.load(resolve_model_path(model), backend=backend, options=options)


def predictor_time(predictor: Any, frames: list[tuple[np.ndarray, list]], rounds: int, warm: int = 3) -> float:
    """Median seconds of `Predictor.predict` over `frames`, one call after another, after `warm` warm-up
    passes (with one, the first measurement of a run came out 10-40 % slower than the next)."""
    for rgb, boxes in frames * warm:
        predictor.predict(rgb, np.asarray(boxes, np.float32))
    times = []
    for k in range(rounds):
        rgb, boxes = frames[k % len(frames)]
        t0 = time.perf_counter()
        predictor.predict(rgb, np.asarray(boxes, np.float32))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def two_caller_fps(predictor: Any, frames: list[tuple[np.ndarray, list]], rounds: int) -> float:
    """Frames/s of two threads calling `predictor` at once (what frames_in_flight 2 does above capacity)."""
    from concurrent.futures import ThreadPoolExecutor

    def calls(offset: int) -> None:
        for k in range(offset, rounds, 2):
            rgb, boxes = frames[k % len(frames)]
            predictor.predict(rgb, np.asarray(boxes, np.float32))

    calls(0)  # warm-up
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        list(pool.map(calls, (0, 1)))
        return rounds / (time.perf_counter() - t0)


def run_rate(
    driver: Driver,
    args: argparse.Namespace,
    rate: float,
    frames: list,
    n: int,
    in_flight: int = 2,
    predictor: Any = None,
) -> dict[str, Any]:
    """One node process, `n` frames at `rate` Hz: latency percentiles, output rate, drops, RSS."""
    h, w = args.height, args.width
    params = {
        "backend": args.backend,
        "frames_in_flight": in_flight,
        **({"model_path": args.model} if args.model else {}),
    }
    node = driver.start_node(params, autostart=True)
    try:
        # warm-up at the run's own rate (3 s), so whatever the run uses -- a second frame's one-thread
        # sessions above capacity -- has allocated its memory before the RSS at start is read
        n_warm = max(20, int(3 * rate))
        wire = args.camera == "wire"
        warm = send_frames(
            driver, n_warm, rate, size=(h, w), frames=frames, settle_s=5.0, reliable=args.camera_qos == "reliable",
            wire=wire,
        )  # fmt: skip
        rss_start = _rss_mb(node.popen.pid)
        # where the two cores went while frames were sent (not in the settling wait after the last one):
        # the node process and this one (camera + collector)
        cpu: dict[str, float] = {}

        def sample(tag: str) -> None:
            cpu[tag + "node"], cpu[tag + "own"] = _cpu_s(node.popen.pid), time.process_time()
            cpu[tag + "t"] = time.monotonic()

        # --segment: the Predictor alone is measured in the camera's pauses, next to each stretch of the run
        segment_pred: list[float] = []
        between = None
        if args.segment and predictor is not None:
            between = lambda: segment_pred.append(predictor_time(predictor, frames, rounds=16, warm=1))  # noqa: E731
            predictor_time(predictor, frames, rounds=1, warm=3)  # idle since the last run: warm it up again
            between()
        sample("0")
        # the CPU window ends with the last frame sent (not the settling wait); with pauses there are no CPU
        # shares: they would mix in the Predictor's own runs
        timer = None if between else threading.Timer(n / rate, sample, args=("1",))
        if timer is not None:
            timer.start()
        # stamps continue after the warm-up's (the processor treats a stamp going back as a clock reset)
        run = send_frames(
            driver, n, rate, size=(h, w), frames=frames, settle_s=5.0, first=n_warm + 1,
            reliable=args.camera_qos == "reliable", wire=wire, segment=args.segment, between=between,
        )  # fmt: skip
        if timer is not None:
            timer.join()
        if between is not None:
            between()
            sample("1")
        wall = cpu["1t"] - cpu["0t"]
        node_cpu, camera_cpu = cpu["1node"] - cpu["0node"], cpu["1own"] - cpu["0own"]
        if between:  # the pauses and this process's Predictor runs would count: no CPU shares then
            node_cpu = camera_cpu = float("nan")
        rss_end = _rss_mb(node.popen.pid)
        values = node_values(driver, node.name)
        drops = counters_of(values)
    finally:
        node.stop()
    lat = np.asarray(run.latencies) * 1e3
    segment_fps = [run.output_fps(seg) for seg in run.segments]
    return {
        "rate_hz": rate,
        "frames_in_flight": in_flight,
        "frames_sent": n,
        "frames_back": run.received,
        "warmup_back": warm.received,
        "latency_ms": {k: float(np.percentile(lat, q)) for k, q in (("p50", 50), ("p90", 90), ("max", 100))}
        if len(lat)
        else {},
        # segmented: the median stretch (the whole run's span would include the pauses)
        "output_fps": float(np.median(segment_fps)) if segment_fps else run.output_fps(),
        "rss_mb": {"start": rss_start, "end": rss_end},
        "cpu_share": {
            "node": node_cpu / wall / (os.cpu_count() or 1),
            "camera": camera_cpu / wall / (os.cpu_count() or 1),
        },
        "node_counters": drops,
        # the Predictor's own call inside the node (its diagnostics, last 256 frames): output_fps x this is
        # the share of the processing thread's time spent in the model
        "predictor_in_node_ms": values.get("predictor_p50_ms", float("nan")),
        # per segment: output fps and its ratio to the Predictor alone measured just before and after it
        "segments": [
            {
                "frames": list(seg),
                "output_fps": fps,
                "predictor_ms_around": [segment_pred[k] * 1e3, segment_pred[k + 1] * 1e3],
                "ratio": fps * float(np.mean(segment_pred[k : k + 2])),
            }
            for k, (seg, fps) in enumerate(zip(run.segments, segment_fps, strict=True))
            if k + 1 < len(segment_pred)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shapemask_ros.bench.node_bench", description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="10,30", help="input rates in Hz, comma-separated")
    p.add_argument("--frames", type=int, default=300, help="frames per rate")
    p.add_argument("--boxes", type=int, default=20, help="boxes per frame")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--model", default="", help='model bundle ("" = the node\'s default, models/real_lite0)')
    p.add_argument("--camera-qos", default="reliable", choices=("reliable", "best_effort"), help="the camera's QoS")
    p.add_argument("--frames-in-flight", default="2", help="node frames_in_flight values to run at each rate, e.g. 1,2")
    p.add_argument("--soak", type=int, default=0, help="frames of an extra run at the highest rate (RSS growth)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each rate x frames-in-flight, interleaved")
    p.add_argument(
        "--segment", type=int, default=0,
        help="pause the camera every N frames and measure the Predictor alone in the pause (0 = never): a host "
        "whose speed drifts within a run is then compared stretch by stretch",
    )  # fmt: skip
    p.add_argument(
        "--camera", default="wire", choices=("wire", "rclpy"),
        help="wire: the camera publishes pre-built CDR bytes (as cheap as a compiled driver); rclpy: builds "
        "rclpy messages every frame",
    )  # fmt: skip
    p.add_argument("--out", default="", help="write the result as JSON")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    in_flight = [int(v) for v in args.frames_in_flight.split(",") if v.strip()]
    frames = [
        (synthetic_rgb(args.height, args.width, i), default_boxes(args.height, args.width, args.boxes))
        for i in range(8)
    ]
    # The Predictor alone is measured before and after every node run (no node running then): a host's speed
    # drifts by up to 1.35x within minutes, so each run is compared with the predictor around it.
    sequential, single = _load(args.model, args.backend), _load(args.model, args.backend, threads=1)
    pred = [predictor_time(sequential, frames, rounds=30)]
    two = [two_caller_fps(single, frames, rounds=30)]
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    driver = Driver()
    runs = []
    try:
        for _ in range(args.repeats):
            for rate, k in ((r, k) for r in rates for k in in_flight):
                runs.append(run_rate(driver, args, rate, frames, args.frames, k, predictor=sequential))
                pred.append(predictor_time(sequential, frames, rounds=30))
                two.append(two_caller_fps(single, frames, rounds=30))
                runs[-1]["predictor_ms_around"] = [pred[-2] * 1e3, pred[-1] * 1e3]
                runs[-1]["two_caller_fps_around"] = [two[-2], two[-1]]
        soak = run_rate(driver, args, max(rates), frames, args.soak, max(in_flight)) if args.soak else None
    finally:
        driver.close()
    pred_s = float(np.mean(pred))
    result = {
        "predictor_ms_each": [t * 1e3 for t in pred],
        "predictor_ms": pred_s * 1e3,
        "predictor_max_fps": 1.0 / pred_s,
        "two_caller_fps_each": two,
        "runs": runs,
        "soak": soak,
        "size": [args.width, args.height],
        "boxes": args.boxes,
        "backend": args.backend,
        "camera_qos": args.camera_qos,
        "camera": args.camera,
        "transport_profile": os.path.basename(os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")) or "default",
    }
    transport = result["transport_profile"] if result["transport_profile"] != "default" else "Fast DDS defaults"
    print(
        f"Predictor alone: {pred_s * 1e3:.1f} ms/frame ({1 / pred_s:.1f} frames/s; each: "
        f"{', '.join(f'{t * 1e3:.1f}' for t in pred)} ms), two callers on one-thread sessions "
        f"{np.mean(two):.1f} frames/s; {args.boxes} boxes, {args.width}x{args.height}, {args.backend}; "
        f"camera QoS {args.camera_qos}, transport {transport}"
    )
    print("| input Hz | in flight | back / sent | stamp->mask p50 / p90 / max ms | p50 / predictor | output fps | "
          "out / min(in, predictor max) | out / two callers | predictor in node ms | model share | "
          "RSS MB start -> end | CPU node / camera | node counters |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs + ([soak] if soak else []):
        around = r.get("predictor_ms_around", [pred_s * 1e3] * 2)
        ref_ms = float(np.mean(around))
        two_fps = float(np.mean(r.get("two_caller_fps_around", two)))
        lat = {k: r["latency_ms"].get(k, float("nan")) for k in ("p50", "p90", "max")}
        cap = min(r["rate_hz"], 1e3 / ref_ms)
        out_ratio = r["output_fps"] / cap
        if r.get("segments"):  # segmented: each stretch against the Predictor measured next to it
            out_ratio = float(np.median([max(seg["ratio"], seg["output_fps"] / r["rate_hz"]) for seg in r["segments"]]))
        print(
            f"| {r['rate_hz']:g} | {r['frames_in_flight']} | {r['frames_back']} / {r['frames_sent']} | "
            f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['max']:.1f} | {lat['p50'] / ref_ms:.2f}x | "
            f"{r['output_fps']:.1f} | {out_ratio:.2f} | "
            f"{r['output_fps'] / min(r['rate_hz'], two_fps):.2f} | "
            f"{r.get('predictor_in_node_ms', float('nan')):.1f} | "
            f"{r['output_fps'] * r.get('predictor_in_node_ms', float('nan')) / 1e3:.2f} | "
            f"{r['rss_mb']['start']:.0f} -> {r['rss_mb']['end']:.0f} | "
            f"{100 * r['cpu_share']['node']:.0f} / {100 * r['cpu_share']['camera']:.0f} % | {r['node_counters']} |"
        )
    for r in runs:
        if r.get("segments"):
            ratios = [seg["ratio"] for seg in r["segments"]]
            around = [r["segments"][0]["predictor_ms_around"][0]] + [g["predictor_ms_around"][1] for g in r["segments"]]
            print(
                f"{r['rate_hz']:g} Hz, {r['frames_in_flight']} in flight, segments of {args.segment} frames: "
                f"output / Predictor alone around it {', '.join(f'{x:.2f}' for x in ratios)} "
                f"(median {np.median(ratios):.2f}); Predictor {', '.join(f'{t:.1f}' for t in around)} ms"
            )
    if args.out:
        tmp = f"{args.out}.tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
