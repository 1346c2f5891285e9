"""`Budget`: how big a study run is (tiny = CI miniature, short = quick evidence, full = the real run)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The model seed: initialisation, data order, augmentation and k-means (a budget can override it).
MODEL_SEED = 0


@dataclass(frozen=True)
class Budget:
    """Size of a study run. `model` overrides the base config's architecture (tiny uses a smaller net)."""

    name: str
    image_size: int
    train_images: int
    val_images: int
    objects_per_image: int  # most objects per synthetic scene
    steps: int  # training steps, the same for every variant of a study
    batch_size: int
    learning_rate: float
    warmup_steps: int
    num_priors: int  # K class-agnostic shape priors
    timing_repeats: int  # mask-branch timing runs (width study)
    model: dict[str, Any] = field(default_factory=dict)
    study_steps: dict[str, int] = field(default_factory=dict)  # per-study exceptions to `steps`
    note: str = ""
    # initialisation, data order, augmentation and k-means seed; another value repeats a study with new
    # models (own cache keys, results `<stem>_seed<N>`) to measure seed noise, on the same data and split
    model_seed: int = MODEL_SEED

    def steps_for(self, study: str) -> int:
        """Training steps of every variant of `study`."""
        return int(self.study_steps.get(study, self.steps))

    @staticmethod
    def lr_decay_steps(steps: int) -> tuple[int, ...]:
        """x0.1 at ~73% and ~93% of training (the base config's 1100 / 1400 of 1500)."""
        return (max(1, round(steps * 0.73)), max(1, round(steps * 0.93)))


_TINY_MODEL = {
    "anchors": {"max_level": 5, "num_scales": 1},  # fewer pyramid levels and anchors: less to trace
    "backbone": {"tiny_filters": [8, 8, 16, 16]},
    "detector": {"fpn_channels": 16, "head_convs": 1, "head_channels": 16},
    "postprocess": {"max_detections": 10, "pre_nms_top_k": 100},
    "mask": {"num_convs": 1},  # width 32 as the base config, so the width study reuses the oracle model
}

BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        "tiny",
        image_size=64,
        train_images=600,
        val_images=4,
        objects_per_image=3,
        steps=2,
        batch_size=2,
        learning_rate=0.01,
        warmup_steps=0,
        num_priors=4,
        timing_repeats=2,
        model=_TINY_MODEL,
        note="CI miniature: checks the tooling end to end; its numbers mean nothing.",
    ),
    "short": Budget(
        "short",
        image_size=128,
        train_images=1000,
        val_images=100,
        objects_per_image=4,
        steps=600,
        batch_size=8,
        learning_rate=0.02,
        warmup_steps=60,
        num_priors=16,
        timing_repeats=20,
        note="quick evidence: ~20-35 min per study on 2 idle cores (about twice that on the shared machine).",
    ),
    "full": Budget(
        "full",
        image_size=256,
        train_images=3000,
        val_images=200,
        objects_per_image=4,
        steps=1500,
        batch_size=8,
        learning_rate=0.02,
        warmup_steps=100,
        num_priors=16,
        timing_repeats=50,
        note=(
            "the real run: the schedule of the shipped demo model (synthetic_tiny.yaml: 256 px, 1500 steps, "
            "47.7 mask AP with GT boxes since issue 12; 42.7 before), ~1.5-2 h per study on 2 idle cores."
        ),
    ),
}


def get_budget(name: str, model_seed: int = MODEL_SEED) -> Budget:
    """Budget by name, with its model seed set; unknown names raise ValueError listing the choices."""
    try:
        budget = BUDGETS[name]
    except KeyError:
        raise ValueError(f"unknown budget {name!r}; choose one of {', '.join(BUDGETS)}") from None
    if model_seed < 0:
        raise ValueError(f"model seed must be >= 0, got {model_seed}")
    return dataclasses.replace(budget, model_seed=int(model_seed))
