"""File I/O that works on local paths and on remote ones (gs://, as on Cloud TPU) and writes atomically.

Remote paths (anything with a `scheme://`) go through `tf.io.gfile`; local paths use the OS directly so
the ROS runtime does not have to import TensorFlow just to read a file. Writes go to a temporary file in
the destination directory and are renamed into place, so a reader never sees a half-written file.

No litter: a process killed with SIGKILL cannot delete its temporaries, so every temporary is held with an
exclusive `flock` for as long as its writer lives (the kernel drops the lock when the process dies, however
it dies). The next writer into the same directory deletes the temporaries nobody holds: stale files
`.tmp-*` of `atomic_write_bytes` (once per directory and process) and stale `.NAME.tmp-*` directories of
`AtomicDir` (`bag-eval`, `export`, `make-demo-bag` outputs).
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
_TMP_FILE = re.compile(r"^\.tmp-[A-Za-z0-9_]{8}.")  # mkstemp(prefix=".tmp-", suffix=basename)
_cleaned_dirs: set[str] = set()


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
    if directory not in _cleaned_dirs:
        _cleaned_dirs.add(directory)
        remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        # mkstemp makes 0600 files; a written file gets the mode open() would give it (0666 minus the umask),
        # so a bundle exported by one user is readable by the node running as another
        os.fchmod(fd, 0o666 & ~_umask())
        fcntl.flock(fd, fcntl.LOCK_EX)  # "alive": a later writer leaves it alone (released when we close or die)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # while still locked: a concurrent cleaner must not take it for stale
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process umask (Linux: read from /proc, which does not change it; elsewhere set and restored)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _lock_if_free(path: str | Path) -> int | None:
    """An fd holding an exclusive flock on `path`, or None when a live process holds it (or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its writer is alive
        os.close(fd)
        return None
    return fd


def remove_stale_temporaries(directory: str | Path, final_name: str | None = None) -> list[str]:
    """Delete the temporaries in `directory` that no live process holds; returns their names.

    `final_name=None`: the `.tmp-*` files of `atomic_write_bytes`. `final_name=NAME`: the `.NAME.tmp-*`
    directories of `AtomicDir(…/NAME)` and their `.lock` files (a directory without its lock file is
    stale too: the lock is created before the directory and removed after it).
    """
    removed: list[str] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    if final_name is None:
        for name in names:
            if _TMP_FILE.match(name):
                p = os.path.join(directory, name)
                fd = _lock_if_free(p)
                if fd is not None:
                    try:
                        os.unlink(p)
                        removed.append(name)
                    except OSError:
                        pass
                    finally:
                        os.close(fd)
    else:
        pat = re.compile(r"^\." + re.escape(final_name) + r"\.tmp-[A-Za-z0-9_]{8}(\.lock)?$")
        ours = [n for n in names if pat.match(n)]
        locks = {n[: -len(".lock")] for n in ours if n.endswith(".lock")}
        for name in ours:
            p = os.path.join(directory, name)
            if name.endswith(".lock"):
                fd = _lock_if_free(p)
                if fd is None:
                    continue
                try:
                    shutil.rmtree(p[: -len(".lock")], ignore_errors=True)
                    os.unlink(p)
                    removed.append(name[: -len(".lock")])
                except OSError:
                    pass
                finally:
                    os.close(fd)
            elif name not in locks:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(name)
    if removed:
        log.info("removed stale temporaries left by killed runs in %s: %s", directory, ", ".join(removed))
    return removed


class AtomicDir:
    """A directory that appears at `final` complete or not at all.

    Use as a context manager: write under `.path`, call `commit()` at the end. Leaving the block without
    commit (an exception, Ctrl-C) deletes the temporary directory; a SIGKILL leaves it, and the next
    `AtomicDir` for the same `final` deletes it (it is held with a flock while its process lives).
    `overwrite=False` refuses an existing `final` up front, so no work is wasted. `.path` lives in a hidden
    sibling `.NAME.tmp-*` of `final` (same filesystem, so the final rename is atomic); with create=False it
    does not exist yet (for writers such as rosbags' that insist on creating their directory themselves).
    """

    def __init__(self, final: str | Path, overwrite: bool = False, create: bool = True) -> None:
        self.final = Path(final).absolute()
        self.overwrite = overwrite
        if self.final.exists() and not overwrite:
            raise FileExistsError(f"{self.final} exists (use --overwrite to replace it)")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.final.parent, self.final.name)
        # the lock file first, then the directory named after it (see remove_stale_temporaries)
        fd, lock = tempfile.mkstemp(prefix=f".{self.final.name}.tmp-", suffix=".lock", dir=self.final.parent)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd: int | None = fd
        self._lock = Path(lock)
        self._holder = Path(lock[: -len(".lock")])
        self._holder.mkdir()
        self.path = self._holder / self.final.name
        if create:
            self.path.mkdir()
        self.committed = False

    def _release(self) -> None:
        shutil.rmtree(self._holder, ignore_errors=True)
        if self._lock_fd is not None:
            try:
                self._lock.unlink()
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None

    def commit(self) -> Path:
        """Move the finished directory into place (replacing an old one when overwrite=True)."""
        if not self.path.is_dir():
            raise FileNotFoundError(f"nothing to commit: {self.path} was not created")
        if self.final.exists():
            if not self.overwrite:
                raise FileExistsError(f"{self.final} appeared while writing; not replacing it")
            os.rename(self.final, self._holder / ".old")
        os.rename(self.path, self.final)
        self.committed = True
        self._release()  # and the old output, if any
        return self.final

    def discard(self) -> None:
        """Delete the temporary directory (no-op after commit)."""
        if not self.committed:
            self._release()

    def __enter__(self) -> AtomicDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_npy(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def load_npy(path: str) -> np.ndarray:
    """Load a .npy file; object arrays (pickles) are refused."""
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)
