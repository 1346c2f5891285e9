"""`shapemask bag-eval` command line: arguments, the node parameters file, options, the printed summary."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from shapemask_ros.bag.evaluation.bag_eval import BagEvalOptions, BagEvalResult, evaluate_bag
from shapemask_ros.bag.recording.reader import BagError
from shapemask_ros.bag.recording.writer import STORAGES
from shapemask_ros.config.node_config import NodeConfig


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `shapemask bag-eval`."""
    d = NodeConfig()
    parser.add_argument(
        "--bag",
        nargs="+",
        action="extend",
        default=[],
        help="rosbag2 directory (or a .mcap / .db3 file); several bags, a directory of bags or a quoted glob "
        "evaluate a fleet: per-bag outputs under OUT/bags/ and one OUT/fleet_report.md (docs/fleet_eval.md)",
    )
    parser.add_argument(
        "--manifest", default="", help="YAML/JSON list of bags with their own topics and ground truth (fleet)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fleet: evaluate N bags at once in local processes (model loaded once each)",
    )
    parser.add_argument(
        "--ray",
        default="",
        metavar="auto|ADDRESS|local",
        help="fleet: one Ray task per bag on the cluster at ADDRESS ('auto': the one `ray start` made here; "
        "'local': a new local instance); needs the `ray` extra",
    )
    parser.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a --ray local instance (default: all)")
    parser.add_argument(
        "--ray-ship-model",
        action="store_true",
        help="send the model bundle through Ray's object store (for nodes that cannot read --model's path)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime threads per process (0 = the cores divided among workers)"
    )
    parser.add_argument("--image-topic", default="", help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument(
        "--detections-topic", default="", help="vision_msgs/Detection2DArray topic; omit for self-detection"
    )
    parser.add_argument("--depth-topic", default="", help="aligned depth Image (16UC1 mm / 32FC1 m) for 3D outputs")
    parser.add_argument("--camera-info-topic", default="", help="sensor_msgs/CameraInfo of the depth image")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt", default="", help="COCO JSON ground truth whose images carry stamp_ns")
    gt.add_argument("--gt-topic", default="", help="shapemask_ros/InstanceMaskArray ground-truth topic")
    parser.add_argument("--model", default="", help="model bundle directory (default: the shipped models/real_lite0)")
    parser.add_argument("--backend", default="auto", choices=["auto", "tensorrt", "onnxruntime", "tensorflow"])
    parser.add_argument("--out", required=True, help="output directory: bag/, report.md, report.json, overlays/")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many images (0 = all)")
    vis = parser.add_mutually_exclusive_group()
    vis.add_argument("--overlays", type=int, default=8, help="overlay PNGs of the first N processed frames")
    vis.add_argument("--video", action="store_true", help="overlay MP4 of every processed frame instead")
    parser.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="output bag storage")
    parser.add_argument("--compress", action="store_true", help="zstd-compress the output bag (slower)")
    parser.add_argument("--no-copy", action="store_true", help="do not copy the input topics into the output bag")
    parser.add_argument(
        "--points",
        action="store_true",
        help="with depth, also write the objects' PointCloud2 (<ns>/points) into the output bag (large: the "
        "report does not need it)",
    )
    parser.add_argument("--distro", default="humble", choices=["humble", "jazzy"], help="message definitions")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse a damaged bag (cut by a killed recorder, corrupt chunks/pages, a leftover sqlite WAL) "
        "instead of reading it up to the damage",
    )
    parser.add_argument(
        "--params",
        default="",
        help="the node's parameters YAML (config/segment_params.yaml format) to run with the live node's "
        "settings; the flags below override it",
    )
    # None = not given: the params file (or NodeConfig's default) applies
    parser.add_argument("--score-threshold", type=float, default=None, help=f"default {d.score_threshold}")
    parser.add_argument("--mask-threshold", type=float, default=None, help=f"default {d.mask_threshold}")
    parser.add_argument(
        "--flip-average",
        action="store_const",
        const=True,
        default=None,
        help=f"also segment each mirrored frame and average the masks (1.6-2x model time; default {d.flip_average})",
    )
    parser.add_argument("--max-objects", type=int, default=None, help=f"default {d.max_objects}")
    parser.add_argument("--sync-slop-s", type=float, default=None, help=f"default {d.sync_slop_s}")
    parser.add_argument(
        "--detector-latency-s",
        type=float,
        default=None,
        help=f"longest detector delay; also how long a frame waits for its depth image (default "
        f"{d.detector_latency_s})",
    )
    parser.add_argument(
        "--depth-wait-s",
        type=float,
        default=None,
        help=f"bag time a frame waits for its depth image before going out without 3D (default {d.depth_wait_s})",
    )
    parser.add_argument(
        "--detection-image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("W", "H"),
        help="size of the image the detector saw (0 0 = the camera image)",
    )


def load_node_params(path: str) -> NodeConfig:
    """NodeConfig from a node parameters YAML (`<node key>: {ros__parameters: {...}}`, as
    config/segment_params.yaml); unknown or mistyped parameters raise ValueError naming them."""
    import yaml

    from shapemask_ros.config.loading import merge
    from shapemask_ros.utils.io import read_text

    data = yaml.safe_load(read_text(path)) or {}
    blocks = [v["ros__parameters"] for v in data.values() if isinstance(v, dict) and "ros__parameters" in v]
    if len(blocks) != 1 or not isinstance(blocks[0], dict):
        raise ValueError(f"{path}: expected one '<node>: {{ros__parameters: {{...}}}}' block, found {len(blocks)}")
    try:
        return merge(NodeConfig(), blocks[0])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def options_from_args(args: argparse.Namespace) -> BagEvalOptions:
    """BagEvalOptions from parsed arguments: `--params` (or the defaults) with the given flags on top."""
    node = load_node_params(args.params) if getattr(args, "params", "") else NodeConfig()
    given = {
        "score_threshold": args.score_threshold,
        "mask_threshold": args.mask_threshold,
        "flip_average": args.flip_average,
        "max_objects": args.max_objects,
        "sync_slop_s": args.sync_slop_s,
        "detector_latency_s": args.detector_latency_s,
        "depth_wait_s": args.depth_wait_s,
    }
    if args.detection_image_size is not None:
        given["detection_image_width"] = int(args.detection_image_size[0])
        given["detection_image_height"] = int(args.detection_image_size[1])
    node = dataclasses.replace(node, **{k: v for k, v in given.items() if v is not None})
    return BagEvalOptions(
        bag=args.bag[0] if args.bag else "",
        image_topic=args.image_topic,
        out=args.out,
        detections_topic=args.detections_topic,
        depth_topic=args.depth_topic,
        camera_info_topic=args.camera_info_topic,
        gt=args.gt,
        gt_topic=args.gt_topic,
        model=args.model,
        backend=args.backend,
        max_frames=args.max_frames,
        overlays=0 if args.video else args.overlays,
        video=args.video,
        overwrite=args.overwrite,
        storage=args.storage,
        compress=args.compress,
        copy_inputs=not args.no_copy,
        points=args.points,
        distro=args.distro,
        strict=args.strict,
        node=node,
    )


def summary_lines(result: BagEvalResult) -> list[str]:
    """What the CLI prints at the end: where things are and the headline numbers."""
    r = result.report
    t = r["timing"]
    lines = [
        f"output bag: {result.bag}",
        f"report:     {result.report_md} (+ {result.report_json.name})",
    ]
    if r["output"]["overlays"]:
        lines.append(f"overlays:   {result.out / 'overlays'} ({len(r['output']['overlays'])} PNGs)")
    if r["output"]["video"]:
        lines.append(f"video:      {result.out / r['output']['video']}")
    p50 = t["per_frame"]["total"]["p50_ms"]
    frac = t["overhead_fraction"]
    cpu, with_3d = t.get("overhead_fraction_cpu"), t.get("overhead_fraction_cpu_with_3d")
    cpu_text = ""
    if cpu is not None:
        extra = "" if with_3d is None else f"; {with_3d * 100:.1f} % with the 3D stage"
        cpu_text = f" ({cpu * 100:.1f} % in CPU time{extra})"
    lines.append(
        f"frames:     {r['frames']['processed']} of {r['frames']['images_read']} processed, "
        f"backend {r['model']['backend']}, "
        f"p50 {p50:.1f} ms/frame, overhead {frac * 100:.1f} % of model time{cpu_text}"
        if p50 is not None and frac is not None
        else f"frames:     {r['frames']['processed']} of {r['frames']['images_read']} processed"
    )
    acc = r.get("accuracy")
    if acc and "mask_ap" in acc:
        lines.append(f"mask AP:    {acc['mask_ap']['AP']:.1f} (class-agnostic {acc['mask_ap_agnostic']['AP']:.1f})")
    ce = (r.get("geometry") or {}).get("centroid_error")
    if ce and ce["error_mm"]["n"]:
        lines.append(f"centroid:   median error {ce['error_mm']['median']:.1f} mm over {ce['evaluated']} objects")
    return lines


def is_fleet(args: argparse.Namespace) -> bool:
    """Several bags, a manifest, a glob, a directory of bags, workers or Ray: the fleet evaluation."""
    from pathlib import Path

    from shapemask_ros.bag.fleet.inputs import is_bag

    if len(args.bag) != 1 or args.manifest or args.workers > 1 or args.ray:
        return True
    p = Path(args.bag[0])
    return any(c in args.bag[0] for c in "*?[") or (p.is_dir() and not is_bag(p))


def run_fleet(args: argparse.Namespace, opts: BagEvalOptions) -> int:
    """`shapemask bag-eval` over many bags (bag/fleet/)."""
    from tqdm import tqdm

    from shapemask_ros.bag.fleet.inputs import TOPIC_KEYS, collect_jobs
    from shapemask_ros.bag.fleet.job import PredictorSpec
    from shapemask_ros.bag.fleet.run import evaluate_fleet

    if args.workers < 1:
        raise BagError("--workers must be >= 1")
    if args.video:
        raise BagError("--video is for one bag; a fleet writes --overlays PNGs per bag")
    jobs = collect_jobs(args.bag, args.manifest, {k: getattr(opts, k) for k in TOPIC_KEYS})
    bar = tqdm(total=len(jobs), unit="bag", desc="bag-eval", disable=None)

    def progress(task: object, record: dict) -> None:
        row = record["row"]
        bar.update(1)
        if row["status"] != "ok":  # why a bag failed: on stderr with the errors, the summary stays on stdout
            bar.write(f"{row['bag']}: {row['status']}: {row['error']}", file=sys.stderr)

    spec = PredictorSpec(args.model, args.backend, args.threads, engine_cache_dir=opts.node.engine_cache_dir)
    try:
        res = evaluate_fleet(
            jobs, opts, args.out, spec, args.workers, args.ray, args.ray_cpus, args.ray_ship_model, progress
        )
    finally:
        bar.close()
    t = res.report["totals"]
    print(f"fleet report: {res.report_md} (+ {res.report_json.name}); per-bag outputs: {res.out / 'bags'}")
    print(
        f"bags:         {t['bags_ok']} of {t['bags']} evaluated ({t['bags_failed']} failed, {t['bags_reused']} "
        f"reused), {t['processed']} of {t['images_read']} frames processed"
    )
    p = res.report.get("pooled_accuracy")
    if p and "mask_ap" in p:
        print(f"pooled mask AP: {p['mask_ap']['AP']:.1f} over {p['images_evaluated']} images of {p['bags']} bags")
    return 0 if t["bags_failed"] == 0 else 1


def run(args: argparse.Namespace) -> int:
    """`shapemask bag-eval`; user errors -> one line on stderr and exit code 2 (a fleet with failed bags: 1)."""
    from shapemask_ros.utils.threads import limit_blas_threads

    limit_blas_threads()  # tiny NumPy BLAS calls in the 3D stage; see utils/threads.py
    try:
        opts = options_from_args(args)
    except (OSError, ValueError) as e:  # unreadable or invalid --params
        print(f"shapemask bag-eval: error: {e}", file=sys.stderr)
        return 2
    if not args.bag and not args.manifest:
        print("shapemask bag-eval: error: give --bag (or --manifest)", file=sys.stderr)
        return 2
    try:
        if is_fleet(args):
            return run_fleet(args, opts)
        if not opts.image_topic:
            raise BagError("--image-topic is required")
    except (BagError, RuntimeError) as e:
        print(f"shapemask bag-eval: error: {e}", file=sys.stderr)
        return 2
    try:
        result = evaluate_bag(opts)
    except BagError as e:
        print(f"shapemask bag-eval: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(result)))
    return 0
