"""Checkpoints keyed by Keras variable path.

`tf.train.Checkpoint(model=keras_model)` does not see layers that Keras 3 keeps in attribute lists (the FPN
levels, head towers, conv stacks), so their weights were silently left out. Checkpointing an explicit
{variable path: tf.Variable} map saves and restores every variable, and a restore can be checked for
completeness.
"""

from __future__ import annotations

import tensorflow as tf


def _by_path(variables, what: str, drop_root: bool = False) -> dict[str, tf.Variable]:
    out: dict[str, tf.Variable] = {}
    for v in variables:
        # optimizer paths start with an auto-numbered name ("sgd", "sgd_1", ...): key without it
        key = v.path.split("/", 1)[-1] if drop_root else v.path
        if key in out:
            raise ValueError(f"{what} has two variables with path {key!r}: give the layers unique names")
        out[key] = v.value  # the underlying tf.Variable
    return out


def checkpoint_for(model, optimizer=None) -> tf.train.Checkpoint:
    """A tf.train.Checkpoint over every model (and optimizer) variable, keyed by variable path."""
    parts = {"model_variables": _by_path(model.variables, "the model")}
    if optimizer is not None:
        parts["optimizer_variables"] = _by_path(optimizer.variables, "the optimizer", drop_root=True)
    return tf.train.Checkpoint(**parts)


def restore_model(model, path: str) -> None:
    """Restore the model's variables from `path`; every model variable must be present in the checkpoint."""
    status = checkpoint_for(model).restore(path)
    status.expect_partial()  # optimizer slots in a training checkpoint are not needed here
    reader = tf.train.load_checkpoint(path)
    saved = {k.split("/.ATTRIBUTES")[0] for k in reader.get_variable_to_shape_map()}
    # the object graph escapes "." as ".." and "/" as ".S" in its keys (layer names may contain dots,
    # e.g. the EfficientNet "blocks.3.depthwise_conv")
    missing = [p for p in (v.path for v in model.variables)
               if "model_variables/" + p.replace(".", "..").replace("/", ".S") not in saved]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {len(missing)} model variables, e.g. {missing[:3]} "
                         "(different model config, or a checkpoint from an older version)")
