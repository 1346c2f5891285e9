"""The real-ROS lane (`make test-ros`): the node runs as its own process on real rclpy (PyPI wheels, Fast DDS)
and these tests drive it from this process through real services and topics.

Collected only inside the lane's environment (test/ros2/lane.sh writes it; SHAPEMASK_ROS_LANE is set there);
`make test` ignores this folder (test/conftest.py). Discovery stays on this host
(ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) on a domain id of this run's own.
"""

from __future__ import annotations

import os

# before rclpy is imported anywhere: private, local-only discovery for this pytest run and its children
os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 80))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

import pytest  # noqa: E402

from shapemask_ros.bench.node_driver import Driver  # noqa: E402


@pytest.fixture(scope="session")
def driver():
    """One rclpy context and driver node (with its own executor thread) for the whole lane."""
    d = Driver()
    yield d
    d.close()


@pytest.fixture
def launch(driver, tmp_path):
    """launch(params, autostart=False) -> NodeProcess; every process is stopped after the test."""
    started = []

    def _launch(params=None, autostart=False, name=None, env=None):
        proc = driver.start_node(params or {}, autostart=autostart, log_dir=tmp_path, name=name, env=env)
        started.append(proc)
        return proc

    yield _launch
    for proc in started:
        proc.stop()


@pytest.fixture
def lane_frames(driver):
    """lane_frames(node, n, rate_hz, **kw) -> FrameRun (node_driver.send_frames); fails if the node died."""
    from shapemask_ros.bench.node_driver import send_frames

    def _run(node, n=20, rate_hz=10.0, **kw):
        result = send_frames(driver, n, rate_hz, **kw)
        assert node.alive(), node.log_text()[-3000:]
        return result

    return _run
