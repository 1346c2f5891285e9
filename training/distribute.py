"""Choosing the tf.distribute strategy: TPU -> TPUStrategy, TF_CONFIG -> multi-worker, GPUs -> mirrored."""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def get_strategy(tpu: str = "", logical_cpus: int = 0) -> tf.distribute.Strategy:
    """Pick the strategy for this host.

    tpu: TPU name or grpc:// address (Cloud TPU VM: "local") -> TPUStrategy.
    TF_CONFIG set with more than one worker -> MultiWorkerMirroredStrategy.
    More than one GPU -> MirroredStrategy; one GPU -> OneDeviceStrategy; else the default (CPU).
    logical_cpus > 1 splits the CPU into that many logical devices and mirrors over them (tests, and a
    way to check distribution code without accelerators); must be called before TensorFlow initialises.
    """
    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        log.info("TPU strategy on %s", tpu)
        return tf.distribute.TPUStrategy(resolver)
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    if len(tf_config.get("cluster", {}).get("worker", [])) > 1:
        log.info("multi-worker mirrored strategy from TF_CONFIG")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if logical_cpus > 1:
        cpus = tf.config.list_physical_devices("CPU")
        try:
            tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
        except RuntimeError:
            pass  # already initialised (e.g. a second call in the same process)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:logical_cpus]
        if len(devices) < logical_cpus:
            raise RuntimeError("TensorFlow was initialised before the logical CPUs could be configured")
        return tf.distribute.MirroredStrategy(devices)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def set_precision(policy: str, strategy: tf.distribute.Strategy) -> str:
    """'auto' -> mixed_bfloat16 on TPU (float32 variables), float32 elsewhere. Returns the policy used."""
    if policy == "auto":
        policy = "mixed_bfloat16" if isinstance(strategy, tf.distribute.TPUStrategy) else "float32"
    names = {
        "float32": "float32",
        "bfloat16": "mixed_bfloat16",
        "mixed_bfloat16": "mixed_bfloat16",
        "mixed_float16": "mixed_float16",
    }
    if policy not in names:
        raise ValueError(f"train.mixed_precision must be auto|float32|bfloat16|mixed_float16, got {policy!r}")
    keras.mixed_precision.set_global_policy(names[policy])
    return names[policy]
