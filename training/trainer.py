"""Training loop: momentum SGD, warm-up + step LR, tf.distribute, checkpoints with resume, TensorBoard.

Paths (model_dir) go through TensorFlow's file system layer, so gs:// works on Cloud TPU.

Exact resume: the input pipeline's iterator is checkpointed with the model and optimizer
(`shapemask_training.checkpointing.restore_training`), so a run killed at any moment and resumed sees the same batches
in the same order as an uninterrupted one (shuffle buffers, the per-example augmentation seeds and the
position in the repeated data included); with deterministic ops its per-step losses are identical.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from shapemask_ros.model.backbone import check_backbone_init
from shapemask_ros.model.shapemask import ShapeMask, build_model
from shapemask_training.checkpointing import (
    checkpoint_for,
    remove_partial_checkpoints,
    restore_training,
    save_checkpoint,
)
from shapemask_training.config import ExperimentConfig, TrainConfig
from shapemask_training.distribute import get_strategy, set_precision
from shapemask_training.losses import total_loss

log = logging.getLogger(__name__)


@keras.saving.register_keras_serializable("shapemask_ros")
class WarmupStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from lr*start_factor to lr, then x factor at each decay step."""

    def __init__(self, lr, warmup_steps, start_factor, decay_steps, decay_factor):
        self.lr, self.warmup_steps, self.start_factor = float(lr), int(warmup_steps), float(start_factor)
        self.decay_steps, self.decay_factor = tuple(int(s) for s in decay_steps), float(decay_factor)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.lr)
        for s in self.decay_steps:
            lr = tf.where(step >= s, lr * self.decay_factor, lr)
        if self.warmup_steps > 0:
            frac = tf.minimum(step / self.warmup_steps, 1.0)
            warm = self.lr * (self.start_factor + (1.0 - self.start_factor) * frac)
            lr = tf.where(step < self.warmup_steps, warm, lr)
        return lr

    def get_config(self):
        return {
            "lr": self.lr,
            "warmup_steps": self.warmup_steps,
            "start_factor": self.start_factor,
            "decay_steps": list(self.decay_steps),
            "decay_factor": self.decay_factor,
        }


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    sched = WarmupStepSchedule(
        cfg.learning_rate, cfg.warmup_steps, cfg.warmup_start_factor, cfg.lr_decay_steps, cfg.lr_decay_factor
    )
    kwargs = {"global_clipnorm": cfg.gradient_clip_norm} if cfg.gradient_clip_norm > 0 else {}
    return keras.optimizers.SGD(learning_rate=sched, momentum=cfg.momentum, **kwargs)


class Trainer:
    """Owns the strategy, model, optimizer and checkpoint manager of one experiment."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        strategy: tf.distribute.Strategy | None = None,
        priors: np.ndarray | None = None,
    ):
        self.cfg = cfg
        check_backbone_init(cfg.model.backbone)  # before anything slow: a frozen random stem is refused
        if not 0.0 <= cfg.train.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1) (0 = off), got {cfg.train.ema_decay}")
        self.strategy = strategy or get_strategy(cfg.train.tpu)
        self.precision = set_precision(cfg.train.mixed_precision, self.strategy)
        tf.random.set_seed(cfg.train.seed)
        keras.utils.set_random_seed(cfg.train.seed)
        with self.strategy.scope():
            self.model: ShapeMask = build_model(cfg.model, priors=priors, pretrained_backbone=True)
            self.optimizer = make_optimizer(cfg.train)
            self.optimizer.build(self.model.trainable_variables)
            # moving averages of the trainable weights (train.ema_decay), keyed like the checkpoint
            self.averages: dict[str, tf.Variable] = (
                {
                    v.path: tf.Variable(v.value, trainable=False, name=f"ema_{i}")
                    for i, v in enumerate(self.model.trainable_variables)
                }
                if cfg.train.ema_decay > 0
                else {}
            )
            self.checkpoint = checkpoint_for(self.model, self.optimizer, self.averages)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            directory=f"{cfg.model_dir}/checkpoints",
            max_to_keep=cfg.train.keep_checkpoints,
            step_counter=self.optimizer.iterations,
        )
        self.anchors = tf.constant(self.model.anchor_boxes)
        self._step_fn: Callable[[Any], dict[str, tf.Tensor]] | None = None  # the tf.function, traced once

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self, iterator=None) -> int:
        """Restore the latest checkpoint if there is one; returns the step training resumes from.

        `iterator`: the training input iterator, saved with every checkpoint from now on and restored from
        the latest one when it holds the pipeline's state (see checkpointing.restore_training).
        """
        remove_partial_checkpoints(self.manager.directory)  # a kill during a save leaves a temp directory
        latest = self.manager.latest_checkpoint
        restore_training(self.checkpoint, latest, iterator)
        if latest:
            log.info("resumed from %s at step %d", latest, self.step)
        return self.step

    def _replica_step(self, batch):
        inputs = {
            "image": batch["image"],
            "mask_boxes": batch["mask_boxes"],
            "mask_classes": batch["mask_classes"],
            "mask_valid": batch["mask_valid"],  # padded slots stay out of the mask heads' BN statistics
        }
        with tf.GradientTape() as tape:
            out = self.model(inputs, training=True)
            variables = self.model.trainable_variables
            losses = total_loss(out, batch, self.anchors, self.cfg.model, variables, self.cfg.train.weight_decay)
        grads = tape.gradient(losses["total"], variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return losses

    def train_step(self, batch) -> dict[str, tf.Tensor]:
        """One distributed step on a global batch (dict of tensors or a distributed value)."""
        if self._step_fn is None:

            @tf.function
            def fn(b):
                per_replica = self.strategy.run(self._replica_step, args=(b,))
                out = {}
                for k, v in per_replica.items():
                    # additive per-replica shares: sum; replica-identical values: mean
                    op = (
                        tf.distribute.ReduceOp.MEAN
                        if k in ("weight_decay", "num_positives")
                        else tf.distribute.ReduceOp.SUM
                    )
                    out[k] = self.strategy.reduce(op, v, axis=None)
                if self.averages:
                    self._update_averages()
                return out

            self._step_fn = fn
        return self._step_fn(batch)

    def _update_averages(self) -> None:
        """ema <- d * ema + (1 - d) * w after the step; d = min(ema_decay, (1 + t) / (10 + t)) so the first
        steps' random initialisation is forgotten quickly (as tf.train.ExponentialMovingAverage's
        num_updates). Cross-replica: the weights are identical on every replica after the update."""
        t = tf.cast(self.optimizer.iterations, tf.float32)
        d = tf.minimum(tf.constant(self.cfg.train.ema_decay, tf.float32), (1.0 + t) / (10.0 + t))
        for v in self.model.trainable_variables:
            e = self.averages[v.path]
            e.assign(d * e + (1.0 - d) * tf.cast(v.value, e.dtype))

    def train(
        self,
        dataset: tf.data.Dataset,
        steps: int | None = None,
        progress: bool = True,
        on_step: Callable[[int, dict], None] | None = None,
    ) -> dict[str, float]:
        """Train until `steps` (default cfg.train.steps), resuming from the latest checkpoint."""
        total = int(steps or self.cfg.train.steps)
        it = iter(self.strategy.experimental_distribute_dataset(dataset))
        start = self.restore(iterator=it)
        if start >= total:
            log.info("already trained to step %d (>= %d)", start, total)
            return {}
        writer = tf.summary.create_file_writer(f"{self.cfg.model_dir}/tensorboard")
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, disable=not progress, desc="train", unit="step")
        last: dict[str, float] = {}
        t0 = time.time()
        try:
            while self.step < total:
                losses = self.train_step(next(it))
                step = self.step
                last = {k: float(v) for k, v in losses.items()}
                if not math.isfinite(last["total"]):
                    raise FloatingPointError(f"non-finite loss at step {step}: {last}")
                if step % self.cfg.train.log_every == 0 or step == total:
                    with writer.as_default(step=step):
                        for k, v in last.items():
                            tf.summary.scalar(f"train/{k}", v)
                        tf.summary.scalar("train/learning_rate", float(self.optimizer.learning_rate))
                        tf.summary.scalar("train/steps_per_sec", (step - start) / max(time.time() - t0, 1e-9))
                if step % self.cfg.train.checkpoint_every == 0:
                    save_checkpoint(self.manager, step)
                bar.update(1)
                bar.set_postfix(loss=f"{last['total']:.3f}")
                if on_step is not None:
                    on_step(step, last)
        finally:
            bar.close()
            writer.flush()
        if self.manager.latest_checkpoint != f"{self.manager.directory}/ckpt-{self.step}":
            save_checkpoint(self.manager, self.step)
        return last
