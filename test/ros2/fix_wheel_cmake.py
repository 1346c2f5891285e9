"""Point the ROS wheels' exported CMake targets at this interpreter's include directories.

The PyPI wheels were built under /opt/python/cp311-cp311; their `<pkg>__rosidl_generator_py` targets name
that interpreter's Python and NumPy include directories, and cmake refuses a target whose include path does
not exist. Usage: python fix_wheel_cmake.py VENV (run with the venv's python). Idempotent.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy as np

_PY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
_NP_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(_core/)?include")


def fix(venv: Path) -> int:
    """Rewrite every `share/*/cmake/*.cmake` of `venv`; returns the number of files changed."""
    changed = 0
    for path in sorted((venv / "share").glob("*/cmake/*.cmake")):
        text = path.read_text()
        new = _NP_INCLUDE.sub(np.get_include(), _PY_INCLUDE.sub(sysconfig.get_paths()["include"], text))
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    print(f"fix_wheel_cmake: {fix(Path(sys.argv[1]))} cmake files pointed at this interpreter")
