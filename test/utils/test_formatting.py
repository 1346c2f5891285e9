"""One formatter for every report's numbers and one strict-JSON converter (shapemask_ros.utils.formatting)."""

from __future__ import annotations

import json
import math

import numpy as np

from shapemask_ros.utils.formatting import fmt, json_safe


def test_fmt_cells():
    assert fmt(12.345) == "12.3" and fmt(np.float32(0.25), 2) == "0.25"
    assert fmt(3) == "3" and fmt(np.int64(7)) == "7"
    assert fmt(True) == "yes" and fmt(np.bool_(False)) == "no"
    for missing in (None, math.nan, math.inf, np.float64("nan")):
        assert fmt(missing) == "n/a"
        assert fmt(missing, missing="–") == "–"  # bag reports mark missing values with a dash
    assert fmt("text") == "text"


def test_json_safe_output_is_strict_json():
    data = {1: [np.float32(1.5), math.nan, (np.int64(2), np.bool_(True))], "a": np.array([[1, 2]]), "b": -math.inf}
    out = json.loads(json.dumps(json_safe(data), allow_nan=False))
    assert out == {"1": [1.5, None, [2, True]], "a": [[1, 2]], "b": None}
