"""Time the official TF2 ShapeMask (tf-models-official 2.20, ``official.legacy.detection``) per frame.

Runs inside ``build/official_reference/venv`` (made by ``setup.sh``), not in the project venv: it needs
the registry's ``official`` package and its TensorFlow 2.20 / tf-keras. It builds the official model
with random weights in eval mode, exactly as ``official/legacy/detection/main.py`` does for eval
(``model_generator(params).build_model(params, mode=PREDICT_WITH_GT)``, then ``model(inputs,
training=False)`` + ``post_processing`` inside one ``tf.function``), feeds one image, and reports the
first-call time (tracing + graph optimisation + run) and the median of ``--iters`` calls after
``--warmup`` calls, as JSON to stdout and to ``--out``.

Usage (from the repository root)::

    bash benchmarks/official_reference/setup.sh
    build/official_reference/venv/bin/python benchmarks/official_reference/time_official.py \
        --image-size 640 --depth 50 --iters 5 --warmup 2 --out build/official_reference/timing.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
    from official.legacy.detection.configs import factory as config_factory
    from official.legacy.detection.dataloader import mode_keys
    from official.legacy.detection.modeling import factory as model_factory
except ImportError as exc:  # the usual cause: run with the project venv instead of the reference one
    sys.exit(
        f"time_official.py: cannot import official.legacy.detection ({exc}).\n"
        "Run `bash benchmarks/official_reference/setup.sh` and use build/official_reference/venv/bin/python."
    )

# COCO label space of the official config: 90 classes + background at index 0.
OFFICIAL_NUM_CLASSES = 91
MASK_CROP_SIZE = 32


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    (The project's shapemask_ros.utils.io is not importable from this venv, hence this tiny copy.)
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; these are plain shareable build outputs
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_random_priors(
    path: Path, num_classes: int, num_clusters: int, seed: int, identical_rows: bool
) -> tuple[int, ...]:
    """Write random shape priors ``[num_classes, num_clusters, 32, 32]`` float32 in [0, 1) to ``path``.

    Content does not affect speed; only the shape does. With ``identical_rows`` every class row holds
    the same K priors (how a class-agnostic prior set must be laid out for the official code, which
    gathers priors by class id even when ``use_category_for_mask`` is False). An existing file of the
    right shape and dtype is reused.
    """
    shape = (num_classes, num_clusters, MASK_CROP_SIZE, MASK_CROP_SIZE)
    if path.exists():
        try:
            old = np.load(path, allow_pickle=False)
            if old.shape == shape and old.dtype == np.float32:
                return shape
        except (OSError, ValueError):
            pass  # unreadable or truncated: regenerate below
    rng = np.random.default_rng(seed)
    if identical_rows:
        priors = np.broadcast_to(rng.random(shape[1:], dtype=np.float32), shape).copy()
    else:
        priors = rng.random(shape, dtype=np.float32)
    _atomic_write_bytes(path, _npy_bytes(priors))
    return shape


def _npy_bytes(array: np.ndarray) -> bytes:
    """Serialise ``array`` in .npy format (no pickle)."""
    bio = io.BytesIO()
    np.save(bio, array, allow_pickle=False)
    return bio.getvalue()


def build_params(image_size: int, depth: int, prior_path: Path, class_agnostic: bool) -> Any:
    """Official ``shapemask`` config, overridden the way ``main.py`` does for a non-TPU run, batch 1."""
    params = config_factory.config_generator("shapemask")
    params.override(
        {
            "use_tpu": False,
            "strategy_type": "one_device",
            # main.py turns bfloat16 and sync BN off whenever it is not on TPU.
            "architecture": {"use_bfloat16": False},
            "norm_activation": {"use_sync_bn": False},
            "resnet": {"resnet_depth": depth},
            "shapemask_parser": {"output_size": [image_size, image_size]},
            "eval": {"batch_size": 1},
            "predict": {"batch_size": 1},
            "shapemask_head": {
                "shape_prior_path": str(prior_path),
                "use_category_for_mask": not class_agnostic,
            },
        },
        is_strict=True,
    )
    params.validate()
    params.lock()
    return params


def build_eval_step(params: Any) -> tuple[Any, Any]:
    """Build the official model in eval mode and the ``tf.function`` that the official eval step runs."""
    model_builder = model_factory.model_generator(params)
    model = model_builder.build_model(params, mode=mode_keys.PREDICT_WITH_GT)

    @tf.function
    def eval_step(image: tf.Tensor, image_info: tf.Tensor) -> dict[str, tf.Tensor]:
        # Same body as DetectionDistributedExecutor._create_test_step's _test_step_fn (one replica).
        outputs = model({"image": image, "image_info": image_info}, training=False)
        _, predictions = model_builder.post_processing({"image_info": image_info}, outputs)
        return predictions

    return model, eval_step


def _run_once(step: Any, *inputs: tf.Tensor) -> tuple[float, float, dict[str, np.ndarray]]:
    """One call, timed until every output is on the host (so asynchronous work is counted).

    Returns (wall seconds, process CPU seconds summed over threads, outputs as numpy). CPU seconds
    help read a run on a shared machine: wall time grows with contention, CPU time much less.
    """
    w0, c0 = time.perf_counter(), time.process_time()
    out = step(*inputs)
    host = {k: v.numpy() for k, v in out.items()}
    return time.perf_counter() - w0, time.process_time() - c0, host


def _pkg_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def time_model(
    image_size: int,
    depth: int,
    iters: int,
    warmup: int,
    build_dir: Path,
    num_clusters: int,
    class_agnostic: bool,
    seed: int,
) -> dict[str, Any]:
    """Build the official ShapeMask and time it; returns the JSON-ready result dict."""
    prior_path = build_dir / (
        f"random_priors_{'agnostic' if class_agnostic else 'class'}_"
        f"{OFFICIAL_NUM_CLASSES}x{num_clusters}x{MASK_CROP_SIZE}x{MASK_CROP_SIZE}.npy"
    )
    prior_shape = write_random_priors(prior_path, OFFICIAL_NUM_CLASSES, num_clusters, seed, class_agnostic)

    tf.random.set_seed(seed)
    t0 = time.perf_counter()
    params = build_params(image_size, depth, prior_path, class_agnostic)
    model, step = build_eval_step(params)
    build_s = time.perf_counter() - t0

    rng = np.random.default_rng(seed)
    # The official parser feeds mean/std-normalised pixels; a standard-normal image stands in for one.
    image = tf.constant(rng.standard_normal((1, image_size, image_size, 3), dtype=np.float32))
    # image_info rows: original size, scaled size, scale (y, x), offset (y, x); no resize here.
    image_info = tf.constant(
        [[[image_size, image_size], [image_size, image_size], [1.0, 1.0], [0.0, 0.0]]], dtype=tf.float32
    )

    first_s, first_cpu_s, out = _run_once(step, image, image_info)
    for _ in range(warmup):
        _run_once(step, image, image_info)
    times, cpu_times = [], []
    for _ in range(iters):
        dt, dcpu, out = _run_once(step, image, image_info)
        times.append(dt)
        cpu_times.append(dcpu)

    return {
        "implementation": "tf-models-official official.legacy.detection ShapeMask (random weights)",
        "mode": "eval (PREDICT_WITH_GT model, training=False, inside tf.function, + post_processing)",
        "image_size": image_size,
        "batch_size": 1,
        "resnet_depth": depth,
        "class_agnostic_masks": class_agnostic,
        "shape_prior_shape": list(prior_shape),
        "shape_prior_path": str(prior_path),
        "postprocess": params.postprocess.as_dict(),
        "num_parameters": int(model.count_params()),
        "build_s": build_s,
        "first_call_s": first_s,
        "first_call_cpu_s": first_cpu_s,
        "warmup": warmup,
        "iters": iters,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "mean_s": statistics.fmean(times),
        "cpu_times_s": cpu_times,
        "median_cpu_s": statistics.median(cpu_times),
        "detection_masks_shape": list(out["detection_masks"].shape),
        "num_detections_last_call": int(out["num_detections"][0]),
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "tf-models-official": _pkg_version("tf-models-official"),
            "tf-keras": _pkg_version("tf-keras"),
            "numpy": np.__version__,
        },
        "host": {
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "loadavg_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments; sizes are validated here so a bad value fails before any build."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=640, help="square input side, px (multiple of 128)")
    p.add_argument("--depth", type=int, default=50, choices=[10, 18, 34, 50, 101, 152, 200], help="ResNet depth")
    p.add_argument("--iters", type=int, default=5, help="timed calls after warm-up (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first call")
    p.add_argument("--num-clusters", type=int, default=20, help="K shape priors per class row")
    p.add_argument(
        "--class-agnostic",
        action="store_true",
        help="use_category_for_mask=False (one mask channel); priors rows identical",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("build/official_reference/timing.json"))
    args = p.parse_args(argv)
    # FPN levels 3..7 need the side divisible by 2**7.
    if args.image_size <= 0 or args.image_size % 128:
        p.error(f"--image-size must be a positive multiple of 128, got {args.image_size}")
    if args.iters < 1 or args.warmup < 0 or args.num_clusters < 1:
        p.error("--iters >= 1, --warmup >= 0 and --num-clusters >= 1 are required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point: time, print JSON, write it atomically to ``--out``."""
    args = parse_args(argv)
    result = time_model(
        args.image_size,
        args.depth,
        args.iters,
        args.warmup,
        args.out.parent,
        args.num_clusters,
        args.class_agnostic,
        args.seed,
    )
    result["command"] = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    text = json.dumps(result, indent=2)
    print(text)
    _atomic_write_bytes(args.out, (text + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
