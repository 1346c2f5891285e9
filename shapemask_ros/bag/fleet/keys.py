"""What a finished bag's result is keyed by, so a resumed run reuses it: the bag's content, the model's
content and the evaluation parameters (a change to any of them means the bag is evaluated again).

Content, not names or modification times: a bag copied again or a model re-exported under the same path is
not mistaken for the one evaluated. Hashing reads every byte once (sha256, ~1 GB/s on one core), small next
to evaluating the frames; it runs in the worker that evaluates the bag, so it is parallel too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_BLOCK = 1 << 22


def _files_of(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


def content_sha256(paths: Iterable[str | Path]) -> str:
    """sha256 over the relative names and bytes of every file under `paths` (files or directories)."""
    h = hashlib.sha256()
    for root in paths:
        root = Path(root)
        if not root.exists():
            h.update(b"\0missing\0" + str(root).encode())
            continue
        for f in _files_of(root):
            rel = f.name if root.is_file() else f.relative_to(root).as_posix()
            h.update(rel.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
            with open(f, "rb") as fh:
                while block := fh.read(_BLOCK):
                    h.update(block)
    return h.hexdigest()


def result_key(bag_sha: str, model_sha: str, params: Mapping[str, Any]) -> str:
    """The key of one bag's result: bag content + model content + parameters (JSON, sorted)."""
    blob = json.dumps({"bag": bag_sha, "model": model_sha, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
