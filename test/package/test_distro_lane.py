"""`make test-distro`: its requirements, and the `tf` marker that skips tests there and nowhere else (issue 27)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from support import REPO


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (REPO / name).read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_lane_installs_requirements_ros_with_jazzys_opencv_and_numpy():
    text = (REPO / "requirements-distro.txt").read_text()
    assert re.search(r"^-r requirements-ros\.txt$", text, re.M)
    lane = _pins("requirements-distro.txt")
    assert lane["opencv-python-headless"] == "4.6.0.66"  # Ubuntu 24.04's python3-opencv is 4.6.0
    assert lane["numpy"] == "1.26.4"  # and its python3-numpy 1.26.4


def test_lane_test_tools_are_pinned_as_in_requirements_txt():
    lane, main = _pins("requirements-distro.txt"), _pins("requirements.txt")
    shared = sorted(set(lane) & set(main) - {"numpy", "opencv-python-headless"})  # the stack under test differs
    assert {"pytest", "hypothesis", "catkin-pkg", "onnx"} <= set(shared)
    assert {n: lane[n] for n in shared} == {n: main[n] for n in shared}


TF_MODULE = """
import pytest
import tensorflow_missing_for_this_test  # noqa: F401

pytestmark = pytest.mark.tf


def test_in_a_tf_module():
    pass
"""
TF_TEST = """
import pytest


@pytest.mark.tf
def test_marked():
    import tensorflow_missing_for_this_test  # noqa: F401


def test_unmarked():
    pass
"""


def _run(tmp_path: Path, lane: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHAPEMASK_TEST_NO_TF"}
    if lane is not None:
        env["SHAPEMASK_TEST_NO_TF"] = lane
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "test")])
    args = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--continue-on-collection-errors"]
    args += ["--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_tf_marked_tests_skip_in_the_lane_and_fail_everywhere_else(tmp_path):
    shutil.copy(REPO / "test" / "conftest.py", tmp_path / "conftest.py")  # the real switch
    (tmp_path / "test_tf_module.py").write_text(TF_MODULE)
    (tmp_path / "test_tf_test.py").write_text(TF_TEST)

    lane = _run(tmp_path, "1")
    assert lane.returncode == 0, lane.stdout[-3000:]
    assert "1 passed, 2 skipped" in lane.stdout and "needs TensorFlow" in lane.stdout

    for plain in (None, "", "0"):  # plain CI: a missing TensorFlow is an error, never a skip
        r = _run(tmp_path, plain)
        assert r.returncode == 1, (plain, r.stdout[-3000:])
        assert "1 failed, 1 passed, 1 error" in r.stdout, (plain, r.stdout[-3000:])
        assert "skipped" not in r.stdout
