"""Short content hashes that name cached artefacts (data sets, priors, trained models) in a work dir."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def digest(obj: Any, n: int = 12) -> str:
    """First `n` hex digits of the SHA-256 of `obj` as sorted-key JSON (non-JSON values through str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:n]


def file_digest(path: Path) -> str:
    """First 12 hex digits of the SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
