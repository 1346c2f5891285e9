"""Atomic writes give files the mode a plain open() would (mkstemp alone makes them owner-only)."""

from __future__ import annotations

import os
import stat

import pytest

from shapemask_ros.utils.io import atomic_write_bytes, atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomically_written_files_get_the_umask_mode_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(str(tmp_path / "a.onnx"), b"x")
        atomic_write_text(str(tmp_path / "model.json"), "{}")
        with open(tmp_path / "plain", "w") as f:  # the reference: what open() gives under this umask
            f.write("y")
    finally:
        os.umask(old)
    want = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert want == 0o666 & ~umask
    for name in ("a.onnx", "model.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == want, name
    assert (tmp_path / "a.onnx").read_bytes() == b"x"
