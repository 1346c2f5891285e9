"""The real-ROS lane's test-only vision_msgs (test/ros2/vision_msgs) and the rosbags typestore's vision_msgs
(ros_bridge.typestore.VISION_MSGS_TEXT) must describe the same wire types: both are written from the
vision_msgs 4.x interface, so a field that differs between them is a mistake in one of them."""

from __future__ import annotations

import re

from shapemask_ros.ros_bridge.typestore import VISION_MSGS_TEXT
from support import REPO

LANE_MSGS = REPO / "test" / "ros2" / "vision_msgs" / "msg"


def _fields(text: str) -> list[tuple[str, str]]:
    """(type, name) of every field line; package prefixes of vision_msgs' own types dropped."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        ftype, name = line.split()[:2]
        out.append((re.sub(r"^vision_msgs/", "", ftype), name))
    return out


def test_lane_vision_msgs_match_the_typestore_field_for_field():
    lane = {p.stem: _fields(p.read_text()) for p in sorted(LANE_MSGS.glob("*.msg"))}
    store = {name.rsplit("/", 1)[1]: _fields(text) for name, text in VISION_MSGS_TEXT.items()}
    assert set(lane) == set(store)
    for name in lane:
        assert lane[name] == store[name], name


def test_lane_cmake_lists_every_msg_file():
    cmake = (LANE_MSGS.parent / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"msg/(\w+)\.msg"', cmake))
    assert listed == {p.stem for p in LANE_MSGS.glob("*.msg")}
