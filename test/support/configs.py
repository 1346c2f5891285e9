"""Tiny model and experiment configs (model tests run in seconds on 2 cores) and where shared data lives."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from shapemask_ros.config.model_config import BackboneConfig, DetectorConfig, MaskConfig, ModelConfig, PostprocessConfig
from support import REPO

if TYPE_CHECKING:
    from shapemask_training.config import ExperimentConfig


def tiny_model_config(image_size: int = 64, num_classes: int = 3, agnostic: bool = True, **mask) -> ModelConfig:
    m = {"channels": 8, "num_priors": 4, "num_convs": 1, **mask}
    return ModelConfig(
        image_size=image_size,
        backbone=BackboneConfig(name="tiny", tiny_filters=(8, 8, 16, 16)),
        detector=DetectorConfig(fpn_channels=16, head_convs=1, head_channels=16, num_classes=num_classes),
        postprocess=PostprocessConfig(max_detections=10, pre_nms_top_k=50),
        mask=MaskConfig(class_agnostic=agnostic, **m),
    )


def tiny_experiment(model_dir: str, **train) -> ExperimentConfig:
    # imported here: the lane without TensorFlow (make test-distro) has no training package, and conftest.py
    # imports this module
    from shapemask_training.config import ExperimentConfig, TrainConfig

    t = {
        "batch_size": 2,
        "steps": 4,
        "learning_rate": 0.01,
        "warmup_steps": 0,
        "checkpoint_every": 2,
        **train,
    }
    return ExperimentConfig(model_dir=model_dir, model=tiny_model_config(), train=TrainConfig(**t))


def coco_mini_dir() -> Path | None:
    """../shared/data/coco_mini (or $SHAPEMASK_COCO_MINI) when present."""
    p = Path(os.environ.get("SHAPEMASK_COCO_MINI", REPO.parent / "shared/data/coco_mini"))
    return p if (p / "annotations/instances_train2017.json").exists() else None


def require_shared_data(path: Path | None, what: str) -> Path:
    """`path` when the shared data is there; otherwise skip locally, but fail under CI=true: CI lays
    ../shared beside the clone, so a missing folder there is a broken set-up, not a reason to pass."""
    import pytest

    if path is not None:
        return path
    message = f"{what} not found (../shared/data, or the environment variable that points to it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " -- required under CI=true")
    pytest.skip(message)
