"""Shared fixtures (helpers live in test/support, importable as `support`)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from shapemask_ros.config import ModelConfig  # noqa: E402
from support.configs import tiny_model_config  # noqa: E402


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_model_config()
