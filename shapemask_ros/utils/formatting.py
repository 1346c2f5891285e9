"""Numbers for reports: markdown cells and strict JSON (one home for the helpers every report uses)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def fmt(v: Any, digits: int = 1, missing: str = "n/a") -> str:
    """A number for a markdown cell: fixed `digits` for floats, ints as they are, bools as yes/no, and
    `missing` for None, NaN and infinities (reports say which marker they use: studies 'n/a', bag reports '–')."""
    if v is None:
        return missing
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f"{f:.{digits}f}" if math.isfinite(f) else missing
    return str(v)


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None, NumPy scalars and arrays -> Python, mapping keys -> str: what `json.dumps(...,
    allow_nan=False)` accepts, so the files are strict JSON that any reader parses."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
