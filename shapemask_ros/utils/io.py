"""File I/O that works on local paths and on remote ones (gs://, as on Cloud TPU) and writes atomically.

Remote paths (anything with a `scheme://`) go through `tf.io.gfile`; local paths use the OS directly so
the ROS runtime does not have to import TensorFlow just to read a file. Writes go to a temporary file in
the destination directory and are renamed into place, so a reader never sees a half-written file.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np


def is_remote(path: str) -> bool:
    return "://" in str(path)


def _gfile():
    import tensorflow as tf  # only for remote paths

    return tf.io.gfile


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        with _gfile().GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def glob(pattern: str) -> list[str]:
    if is_remote(pattern):
        return sorted(_gfile().glob(pattern))
    import glob as _glob

    return sorted(_glob.glob(pattern))


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = str(path)
    if is_remote(path):
        gf = _gfile()
        tmp = f"{path}.tmp-{os.getpid()}"
        with gf.GFile(tmp, "wb") as f:
            f.write(data)
        gf.rename(tmp, path, overwrite=True)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_npy(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_npy(path: str) -> np.ndarray:
    """Load a .npy file; object arrays (pickles) are refused."""
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
