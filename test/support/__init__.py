"""Shared test helpers, importable from every test module as `support` (pytest puts test/ on sys.path).

support.configs        tiny model / experiment configs (model tests run in seconds on 2 cores)
support.bags           synthetic camera bags written with rosbags (bag, node and fuzz tests)
support.fuzz_plugin    `make fuzz`: every hypothesis property at >= 10,000 examples
support.resume_job, support.rosidl_parse_msgs   scripts the tests run as subprocesses
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root
