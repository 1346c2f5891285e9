"""msg/*.msg through ROS 2's own IDL tool chain (Debian's python3-rosidl: rosidl_adapter + rosidl_parser).

colcon build runs exactly these parsers in rosidl_generate_interfaces; this catches a .msg that rosbags
(which the rest of the suite uses) accepts but ROS does not, and checks that both read the same fields.
The parser lives in the system Python, so it runs in a subprocess. Without it the test skips, except in CI
(CI=true), where `make test` installs it (target `ros-idl-parser`) and a missing parser is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shapemask_ros.ros_bridge.typestore import get_typestore
from shapemask_ros.ros_bridge.typestore import normalize_type_name as norm
from support import REPO as REPO_ROOT

ROOT = REPO_ROOT
SCRIPT = REPO_ROOT / "test" / "support" / "rosidl_parse_msgs.py"
PROBE = "import rosidl_adapter.parser, rosidl_adapter.msg, rosidl_parser.parser"


def _rosidl_python() -> str | None:
    """An interpreter that imports rosidl_adapter and rosidl_parser (this one, or Debian's python3)."""
    for exe in dict.fromkeys([sys.executable, "/usr/bin/python3", shutil.which("python3") or ""]):
        if exe and Path(exe).exists():
            if subprocess.run([exe, "-c", PROBE], capture_output=True, timeout=60).returncode == 0:
                return exe
    return None


@pytest.fixture(scope="module")
def rosidl_fields() -> dict:
    exe = _rosidl_python()
    if exe is None:
        message = "ROS 2 IDL parser missing: apt-get install -y python3-rosidl python3-empy (make ros-idl-parser)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    r = subprocess.run([exe, str(SCRIPT), "shapemask_ros", str(ROOT / "msg")], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def test_every_msg_file_parses_with_the_ros_idl_parser(rosidl_fields):
    assert sorted(rosidl_fields) == sorted(p.stem for p in (ROOT / "msg").glob("*.msg"))


def test_rosidl_and_rosbags_read_the_same_fields(rosidl_fields):
    """The typestore (bags, tests, bag-eval) and colcon's generated classes agree field by field."""
    ts = get_typestore("humble")
    for name, fields in rosidl_fields.items():
        _, ours = ts.fielddefs[f"shapemask_ros/msg/{name}"]
        assert [f[1] for f in fields] == [n for n, _ in ours], name
        for (type_, field, is_array, size), (_, (node, spec)) in zip(fields, ours, strict=True):
            seq = node.name in ("SEQUENCE", "ARRAY")
            assert is_array == seq, f"{name}.{field}: array {is_array} vs rosbags {node.name}"
            inner_node, inner = spec[0] if seq else (node, spec)
            rosbags_type = inner[0] if inner_node.name == "BASE" else inner
            ros_type = type_ if "/" not in type_ else norm(type_)
            assert ros_type == (rosbags_type if "/" not in rosbags_type else norm(rosbags_type)), f"{name}.{field}"
            if node.name == "ARRAY":
                assert size == spec[1], f"{name}.{field}: fixed size"
