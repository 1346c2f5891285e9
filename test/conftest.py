"""Shared fixtures (helpers live in test/support, importable as `support`), and the `tf` marker's lane switch.

`@pytest.mark.tf` (or a module's `pytestmark = pytest.mark.tf`) marks tests that need TensorFlow/Keras or the
training package. They run everywhere, and fail when TensorFlow is missing, except where the environment sets
SHAPEMASK_TEST_NO_TF=1: `make test-distro`, the lane with a ROS distro's Python stack and no TensorFlow,
where they are reported as skipped. Modules marked as a whole are skipped before import (they import
TensorFlow at the top).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# test/ros2 runs on real rclpy in its own environment (`make test-ros`, test/ros2/lane.sh), not in `make test`
collect_ignore = [] if os.environ.get("SHAPEMASK_ROS_LANE") else ["ros2"]

import pytest  # noqa: E402

from shapemask_ros.config.model_config import ModelConfig  # noqa: E402
from support.configs import tiny_model_config  # noqa: E402

NO_TF_ENV = "SHAPEMASK_TEST_NO_TF"
NO_TF_REASON = f"needs TensorFlow: {NO_TF_ENV}=1 (make test-distro runs a ROS distro's stack without it)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"tf: needs TensorFlow/Keras or the training package; skipped only where {NO_TF_ENV}=1"
    )


def without_tensorflow() -> bool:
    """True only in the lane that asked for it (the variable set to 1), never because TF is missing."""
    return os.environ.get(NO_TF_ENV, "") == "1"


def marks_whole_module_tf(path: Path) -> bool:
    """Whether a test module says `pytestmark = pytest.mark.tf` (or a list holding it) at its top level."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            return re.search(r"\bmark\.tf\b", ast.unparse(node.value)) is not None
    return False


class _UnimportedModule(pytest.File):
    """A `tf` test module in the lane without TensorFlow: one skipped item in its name, never imported."""

    def collect(self) -> Iterator[pytest.Item]:
        item = _ModuleSkipped.from_parent(self, name="module")
        item.add_marker(pytest.mark.skip(reason=NO_TF_REASON))
        yield item


class _ModuleSkipped(pytest.Item):
    def runtest(self) -> None:  # never reached: the skip mark stops it at setup
        raise AssertionError("a module that needs TensorFlow ran without it")

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.path.name} (not imported)"


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if without_tensorflow() and marks_whole_module_tf(module_path):
        return _UnimportedModule.from_parent(parent, path=module_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if without_tensorflow():
        for item in items:
            if item.get_closest_marker("tf") is not None:
                item.add_marker(pytest.mark.skip(reason=NO_TF_REASON))


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_model_config()
