"""The user-facing error of the bag tools (its own module: the readers of single files and of split bags both
raise it, and neither may import the other)."""

from __future__ import annotations


class BagError(Exception):
    """A problem with the user's bag or arguments: shown as one line, exit code 2, no traceback."""

    def __init__(self, message: object = "") -> None:
        # one line: storage errors may quote multi-line text (SQLite quotes a damaged schema; found by fuzz)
        super().__init__(" ".join(str(message).split()))
