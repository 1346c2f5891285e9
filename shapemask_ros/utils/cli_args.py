"""Command-line argument forms shared by commands of several layers (bench, training)."""

from __future__ import annotations

import os
from collections.abc import Sequence


def labelled_paths(specs: Sequence[str]) -> list[tuple[str, str]]:
    """(label, path) of each `LABEL=PATH` or `PATH` argument; a bare path is labelled with its last component.

    The last `=` splits, so a label may contain `=` and a path may not (`a=b=models/x` is label `a=b`)."""
    out = []
    for spec in specs:
        label, _, path = spec.rpartition("=")
        out.append((label or os.path.basename(os.path.normpath(path)), path))
    return out
