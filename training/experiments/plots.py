"""Matplotlib helpers of the study figures (no pyplot state: figures are saved by `reports.write_report`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shapemask_training.experiments.reports import split_ap


def grouped_bars(ax: Any, rows: Sequence[Mapping[str, Any]], series: Sequence[tuple[str, str]], split: str) -> None:
    """Bar groups of mask AP on `split`, one group a row and one bar a (box source, legend label) pair."""
    x = np.arange(len(rows))
    width = 0.76 / len(series)
    for i, (source, label) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, [split_ap(r, source, split) for r in rows], width, label=label)
    ax.set_xticks(x, [r["name"].replace("_", "\n") for r in rows])
    ax.legend()


def new_figure(ncols: int = 1, width: float = 6.0, height: float = 3.6):
    """A matplotlib Figure (no pyplot state) with `ncols` axes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=110)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)
