"""Shared fixtures (helpers live in test/support, importable as `support`)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# test/ros2 runs on real rclpy in its own environment (`make test-ros`, test/ros2/lane.sh), not in `make test`
collect_ignore = [] if os.environ.get("SHAPEMASK_ROS_LANE") else ["ros2"]

import pytest  # noqa: E402

from shapemask_ros.config import ModelConfig  # noqa: E402
from support.configs import tiny_model_config  # noqa: E402


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_model_config()
