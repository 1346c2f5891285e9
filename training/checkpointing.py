"""Checkpoints keyed by Keras variable path.

`tf.train.Checkpoint(model=keras_model)` does not see layers that Keras 3 keeps in attribute lists (the FPN
levels, head towers, conv stacks), so their weights were silently left out. Checkpointing an explicit
{variable path: tf.Variable} map saves and restores every variable, and a restore can be checked for
completeness.
"""

from __future__ import annotations

import logging
import re

import tensorflow as tf

log = logging.getLogger(__name__)


def _by_path(variables, what: str, drop_root: bool = False) -> dict[str, tf.Variable]:
    out: dict[str, tf.Variable] = {}
    for v in variables:
        # optimizer paths start with an auto-numbered name ("sgd", "sgd_1", ...): key without it
        key = v.path.split("/", 1)[-1] if drop_root else v.path
        if key in out:
            raise ValueError(f"{what} has two variables with path {key!r}: give the layers unique names")
        out[key] = v.value  # the underlying tf.Variable
    return out


def checkpoint_for(model, optimizer=None, averages: dict[str, tf.Variable] | None = None) -> tf.train.Checkpoint:
    """A tf.train.Checkpoint over every model (and optimizer) variable, keyed by variable path.

    averages: {trainable variable path: its moving average} (`train.ema_decay`), saved as `ema_variables`."""
    parts = {"model_variables": _by_path(model.variables, "the model")}
    if optimizer is not None:
        parts["optimizer_variables"] = _by_path(optimizer.variables, "the optimizer", drop_root=True)
    if averages:
        parts["ema_variables"] = dict(averages)
    return tf.train.Checkpoint(**parts)


def _key(group: str, path: str) -> str:
    # the object graph escapes "." as ".." and "/" as ".S" in its keys (layer names may contain dots,
    # e.g. the EfficientNet "blocks.3.depthwise_conv")
    return f"{group}/" + path.replace(".", "..").replace("/", ".S")


def restore_model(model, path: str, averages: bool = False) -> None:
    """Restore the model's variables from `path`; every model variable must be present in the checkpoint.

    averages: load the trainable weights from their moving averages (a run with `train.ema_decay` > 0);
    a checkpoint without them is refused rather than silently giving the raw weights."""
    status = checkpoint_for(model).restore(path)
    status.expect_partial()  # optimizer slots in a training checkpoint are not needed here
    reader = tf.train.load_checkpoint(path)
    saved = {k.split("/.ATTRIBUTES")[0] for k in reader.get_variable_to_shape_map()}
    missing = [p for p in (v.path for v in model.variables) if _key("model_variables", p) not in saved]
    if missing:
        raise ValueError(
            f"checkpoint {path} lacks {len(missing)} model variables, e.g. {missing[:3]} "
            "(different model config, or a checkpoint from an older version)"
        )
    if not averages:
        return
    trainable = list(model.trainable_variables)
    lacking = [v.path for v in trainable if _key("ema_variables", v.path) not in saved]
    if lacking:
        raise ValueError(
            f"checkpoint {path} has no moving averages for {len(lacking)} trainable variables, e.g. "
            f"{lacking[:3]} (trained with train.ema_decay 0?)"
        )
    for v in trainable:
        v.assign(reader.get_tensor(_key("ema_variables", v.path) + "/.ATTRIBUTES/VARIABLE_VALUE"))


def _has_iterator_state(path: str) -> bool:
    """True when the checkpoint at `path` holds an input-pipeline iterator."""
    try:
        keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError):
        return False
    return any(k.startswith("iterator/") for k in keys)


def restore_training(checkpoint: tf.train.Checkpoint, latest: str | None, iterator=None) -> None:
    """Restore `latest` (if any) into `checkpoint`; with `iterator`, also the input pipeline's position.

    The iterator is tracked by the checkpoint from now on (tf.data iterator checkpointing): every later
    save holds its state -- shuffle buffers, the per-example augmentation seeds, the position in the
    repeated data -- so a resumed run reads exactly the batches an uninterrupted one would. A checkpoint
    written before this existed has no iterator state: the model and optimizer still restore, the data
    order restarts, and a warning says so.
    """
    legacy = iterator is not None and latest is not None and not _has_iterator_state(latest)
    if iterator is not None and not legacy:
        checkpoint.iterator = iterator
    if latest:
        checkpoint.restore(latest).assert_existing_objects_matched()
    if legacy:
        log.warning("%s has no input-pipeline state (an older checkpoint): the data order restarts", latest)
        checkpoint.iterator = iterator


def save_checkpoint(manager: tf.train.CheckpointManager, step: int) -> str:
    """`manager.save(step)`; when the input iterator cannot be saved (e.g. TPUStrategy's), it is dropped from
    the checkpoint with a warning and the save is repeated without it."""
    checkpoint = manager.checkpoint
    try:
        return manager.save(checkpoint_number=step)
    except (ValueError, TypeError, tf.errors.UnimplementedError, tf.errors.FailedPreconditionError) as e:
        if not hasattr(checkpoint, "iterator"):
            raise
        log.warning(
            "the input iterator cannot be checkpointed (%s): a resumed run sees a different data order",
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        delattr(checkpoint, "iterator")
        return manager.save(checkpoint_number=step)


_PARTIAL = re.compile(r"^ckpt-\d+_temp.*$")


def remove_partial_checkpoints(directory: str) -> list[str]:
    """Delete what a save killed part-way left (`ckpt-N_temp*` directories: TensorFlow writes a checkpoint
    there and renames it into place at the end). One trainer per model_dir is assumed."""
    removed: list[str] = []
    if not tf.io.gfile.isdir(directory):
        return removed
    for name in tf.io.gfile.listdir(directory):
        name = name.rstrip("/")
        if _PARTIAL.match(name):
            tf.io.gfile.rmtree(f"{directory}/{name}")
            removed.append(name)
    if removed:
        log.warning("removed partial checkpoints of an interrupted save: %s", removed)
    return removed
