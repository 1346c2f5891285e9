"""The training package's configuration: data (`DataConfig`), optimisation (`TrainConfig`) and the whole
experiment (`ExperimentConfig`, with the runtime's `ModelConfig`), loaded by `load_config`.

The one source of their defaults. YAML files (training/configs/*.yaml) only override fields; unknown keys
are an error so a typo never silently falls back to a default (`shapemask_ros.config.loading.merge`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from shapemask_ros.config.loading import merge
from shapemask_ros.config.model_config import ModelConfig


@dataclass
class DataConfig:
    train_pattern: str = ""  # TFRecord glob (local or gs://)
    eval_pattern: str = ""
    eval_annotations: str = ""  # COCO JSON for COCOeval
    max_instances: int = 8  # sampled ground-truth instances per image
    max_boxes: int = 100  # padded ground-truth boxes per image for the detector
    scale_min: float = 0.8
    scale_max: float = 1.2
    hflip: bool = True
    box_jitter_sigma: float = 0.1  # paper 0.1, tensorflow/tpu default 0.025; 0 disables
    # Cut boxes: with this probability an instance's training box has each edge moved inward by U(0, box_cut_max)
    # x its side (before the jitter), as a detector that cuts objects would give. Teaches masks to reach past a
    # box that is too small; 0 disables (and leaves every other random draw unchanged).
    box_cut_prob: float = 0.0
    box_cut_max: float = 0.15
    mask_split: str = "all"  # all | voc | nonvoc | comma separated category ids: which classes get mask loss
    subsample_fraction: float = 1.0  # keep this fraction of training images (by image id hash)
    shuffle_buffer: int = 256
    # category id -> contiguous class index; filled from the dataset when empty
    category_ids: tuple[int, ...] = ()


@dataclass
class TrainConfig:
    batch_size: int = 64  # global batch
    steps: int = 45000
    learning_rate: float = 0.08
    warmup_steps: int = 500
    warmup_start_factor: float = 0.067
    lr_decay_steps: tuple[int, ...] = (30000, 40000)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    gradient_clip_norm: float = 0.0  # 0 = off
    # > 0: exponential moving averages of the trainable weights (decay min(ema_decay, (1 + t) / (10 + t)) at
    # step t), saved with every checkpoint; evaluation and export then use the averages. 0 = off.
    ema_decay: float = 0.0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 100
    seed: int = 0
    mixed_precision: str = "auto"  # auto (bfloat16 on TPU) | float32 | bfloat16 | mixed_float16
    tpu: str = ""  # TPU name/address: selects TPUStrategy


@dataclass
class ExperimentConfig:
    """Everything `shapemask train` needs; loaded from YAML overrides on these defaults."""

    name: str = "default"
    model_dir: str = "out/model"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path: str | None = None, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load an ExperimentConfig: dataclass defaults <- YAML file (local or gs://) <- `overrides`."""
    cfg = ExperimentConfig()
    if path:
        from shapemask_ros.utils.io import read_text

        data = yaml.safe_load(read_text(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: top level must be a mapping")
        cfg = merge(cfg, data)
    if overrides:
        cfg = merge(cfg, overrides)
    return cfg
