"""End-to-end jobs shared by the CLI, the demo and the experiments: train, restore, evaluate, export."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np

from shapemask_ros.config.loading import to_dict
from shapemask_ros.utils.io import atomic_write_text, exists, read_text
from shapemask_training.config import ExperimentConfig

log = logging.getLogger(__name__)


def dataset_category_ids(cfg: ExperimentConfig) -> tuple[int, ...]:
    """Category ids in contiguous-class order: config, else the TFRecords' meta JSON, else eval annotations."""
    if cfg.data.category_ids:
        return tuple(cfg.data.category_ids)
    pattern = cfg.data.train_pattern
    prefix = pattern.split("-*")[0].split("*")[0].rstrip("-")
    meta = f"{prefix}-meta.json"
    if pattern and exists(meta):
        return tuple(json.loads(read_text(meta))["category_ids"])
    if cfg.data.eval_annotations:
        from shapemask_ros.datasets.coco import category_ids

        return category_ids(cfg.data.eval_annotations)
    raise ValueError("set data.category_ids, or provide TFRecords with a -meta.json, or data.eval_annotations")


def load_priors_for(cfg: ExperimentConfig) -> np.ndarray | None:
    m = cfg.model.mask
    if not m.priors_path:
        return None
    from shapemask_training.priors import load_priors

    shape = (cfg.model.num_mask_classes, m.num_priors, m.crop_size, m.crop_size)
    return load_priors(m.priors_path, expected_shape=shape)


def train_experiment(cfg: ExperimentConfig, steps: int | None = None, progress: bool = True, strategy=None) -> dict:
    """Train `cfg` (resuming from model_dir) and return the last losses. Saves the resolved config."""
    import tensorflow as tf

    from shapemask_training.data.parser import build_dataset
    from shapemask_training.trainer import Trainer

    if not cfg.data.train_pattern:
        raise ValueError("data.train_pattern is empty: point it at TFRecords from `shapemask make-tfrecords`")
    cats = dataset_category_ids(cfg)
    if len(cats) != cfg.model.detector.num_classes:
        raise ValueError(
            f"the data has {len(cats)} categories but model.detector.num_classes is {cfg.model.detector.num_classes}"
        )
    cfg = replace(cfg, data=replace(cfg.data, category_ids=cats))
    atomic_write_text(f"{cfg.model_dir}/config.json", json.dumps(to_dict(cfg), indent=2))
    trainer = Trainer(cfg, strategy=strategy, priors=load_priors_for(cfg))
    ds = build_dataset(
        cfg.data.train_pattern, cfg.data, cfg.model, True, cfg.train.batch_size, cats, seed=cfg.train.seed
    )
    last = trainer.train(ds.prefetch(tf.data.AUTOTUNE), steps=steps, progress=progress)
    return last


def load_trained_model(cfg: ExperimentConfig, checkpoint: str | None = None):
    """Build the model and restore `checkpoint` (default: latest in model_dir/checkpoints)."""
    import tensorflow as tf

    from shapemask_ros.model.shapemask import build_model
    from shapemask_training.checkpointing import restore_model

    model = build_model(cfg.model, priors=load_priors_for(cfg))
    ckpt_path = checkpoint or tf.train.latest_checkpoint(f"{cfg.model_dir}/checkpoints")
    if not ckpt_path:
        raise FileNotFoundError(f"no checkpoint in {cfg.model_dir}/checkpoints")
    averages = cfg.train.ema_decay > 0
    restore_model(model, ckpt_path, averages=averages)
    log.info("restored %s%s", ckpt_path, " (moving averages of the weights)" if averages else "")
    return model


def class_names_for(annotations: str, cats: tuple[int, ...]) -> list[str]:
    from shapemask_ros.datasets.coco import load_coco_json

    names = {c["id"]: c["name"] for c in load_coco_json(annotations)["categories"]}
    return [names.get(c, str(c)) for c in cats]


def evaluate_experiment(
    cfg: ExperimentConfig,
    annotations: str,
    image_dir: str,
    box_source: str = "model",
    max_images: int | None = None,
    model=None,
    splits: dict[str, tuple[int, ...]] | None = None,
    results_path: str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """COCO evaluation (bbox + segm) of a trained model with boxes from the model, GT, or shrunk GT."""
    from shapemask_ros.evaluation.coco_metrics import write_results_json
    from shapemask_ros.runtime.backends.keras_backend import predictor_for_model
    from shapemask_training.evaluation import evaluate_predictor

    cats = dataset_category_ids(replace(cfg, data=replace(cfg.data, eval_annotations=annotations)))
    model = model if model is not None else load_trained_model(cfg)
    predictor = predictor_for_model(model, class_names_for(annotations, cats))

    def predict_fn(image, boxes, classes):
        return predictor.predict(image, boxes, classes)

    metrics, results = evaluate_predictor(
        predict_fn,
        annotations,
        image_dir,
        box_source,
        list(cats),
        max_images=max_images,
        seed=seed,
        progress=progress,
        splits=splits,
    )
    if results_path:
        write_results_json(results_path, results)
    return metrics
