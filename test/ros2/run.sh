#!/usr/bin/env bash
# `make test-ros`: the real-ROS lane. Builds/refreshes its environment (test/ros2/lane.sh, cached), then runs
# test/ros2 against the node as a separate process on real rclpy, with the project's recommended Fast DDS
# transport profile (config/fastdds_shm.xml; docs/ros.md, "QoS and transport").
set -euo pipefail
cd "$(dirname "$0")/../.."
DISTRO="${1:-jazzy}"
LANE_HOME="${LANE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/shapemask_ros/ros-$DISTRO}"
export LANE_HOME
start=$(date +%s)
bash test/ros2/lane.sh "$DISTRO"
# shellcheck disable=SC1091
. "$LANE_HOME/env.sh"
# Fast DDS 2.x (Jazzy) reads FASTRTPS_DEFAULT_PROFILES_FILE, 3.x (Kilted) FASTDDS_DEFAULT_PROFILES_FILE
export FASTRTPS_DEFAULT_PROFILES_FILE="$PWD/config/fastdds_shm.xml" FASTDDS_DEFAULT_PROFILES_FILE="$PWD/config/fastdds_shm.xml"
[ "$DISTRO" = jazzy ] || unset FASTRTPS_DEFAULT_PROFILES_FILE
# the pytest script (not `python -m pytest`): the source tree must not shadow the installed package
pytest -q -ra -p no:cacheprovider --confcutdir=test/ros2 test/ros2
echo "test-ros ($DISTRO): lane wall time $(( $(date +%s) - start )) s"
