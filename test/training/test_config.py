"""The training package's configs (shapemask_training.config) over the runtime's: the experiment files only
override the dataclass defaults, and the runtime reads an experiment's `model:` section exactly as training does
(`shapemask bench --config` benchmarks the model that `shapemask train` trains)."""

from __future__ import annotations

import pytest

from shapemask_ros.config.loading import load_model_config
from shapemask_ros.config.model_config import ModelConfig
from shapemask_training.config import ExperimentConfig, load_config
from support import REPO

pytestmark = pytest.mark.tf  # imports the training package (see conftest.py)

CONFIGS = sorted((REPO / "training" / "configs").glob("*.yaml"))


def test_no_file_means_the_dataclass_defaults():
    assert load_config() == ExperimentConfig()
    assert ExperimentConfig().model == ModelConfig()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_the_runtime_reads_an_experiments_model_section_as_training_does(path):
    assert load_model_config(str(path)) == load_config(str(path)).model


def test_model_section_keys_are_checked_and_the_training_sections_left_to_training(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("model: {image_size: 320, mask: {channels: 16}}\ntrain: {steps: 5}\ndata: {hflip: false}\n")
    cfg = load_model_config(str(path))
    assert (cfg.image_size, cfg.mask.channels, cfg.mask.num_convs) == (320, 16, ModelConfig().mask.num_convs)
    exp = load_config(str(path))
    assert exp.model == cfg and exp.train.steps == 5 and exp.data.hflip is False
    path.write_text("model: {mask: {chanels: 16}}\n")
    for load in (load_model_config, load_config):
        with pytest.raises(ValueError, match="unknown config keys.*chanels"):
            load(str(path))
    path.write_text("- a list\n")
    for load in (load_model_config, load_config):
        with pytest.raises(ValueError, match="top level must be a mapping"):
            load(str(path))
    path.write_text("train: {stepz: 5}\n")
    with pytest.raises(ValueError, match="unknown config keys.*stepz"):
        load_config(str(path))
