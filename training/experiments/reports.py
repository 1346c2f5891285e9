"""Study reports: markdown cells and tables, paper-claim rows, the settings section, the JSON payload and
`write_report`, which writes `<stem>.md`, `.json` and `.png` atomically."""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from shapemask_ros.utils.formatting import fmt, json_safe
from shapemask_ros.utils.io import atomic_write_bytes, atomic_write_text
from shapemask_training.experiments.budgets import MODEL_SEED, Budget
from shapemask_training.experiments.split import NOVEL_FAMILY_IDS, SEEN_FAMILY_IDS, SPLIT_RATIONALE


def train_minutes(row: Mapping[str, Any]) -> float | None:
    """A row's training wall time in minutes; None for rows that trained nothing (JSON keeps no NaN)."""
    s = row["train"].get("train_wall_s")
    return None if s is None or math.isnan(s) else s / 60.0


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (cells through `fmt` unless already strings)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(lines) + "\n"


def rows_by_name(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows keyed by variant name; a variant that was not run reads as a row without results, so the
    claims that need it come out as 'n/a' instead of failing."""
    out: dict[str, Any] = {}
    out.update((r["name"], r) for r in rows)
    return _MissingRows(out)


class _MissingRows(dict):
    def __missing__(self, key: str) -> dict[str, Any]:
        return {"name": key, "eval": {}}


def claim(text: str, measured: str, holds: bool | None) -> dict[str, Any]:
    """One paper claim checked on this run (holds None = not measurable, e.g. a NaN)."""
    return {"claim": text, "measured": measured, "holds": holds}


def claims_table(claims: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table of the checked claims with their verdicts."""
    rows = [
        [c["claim"], c["measured"], {True: "reproduced", False: "NOT reproduced", None: "n/a"}[c["holds"]]]
        for c in claims
    ]
    return md_table(["claim (issue 5 target)", "measured", "verdict"], rows)


def split_ap(row: Mapping[str, Any], source: str, split: str, iou: str = "segm") -> float:
    """AP of a variant row for a box source and split ('all' = overall AP); NaN when missing."""
    m = row["eval"].get(source, {}).get(iou, {})
    v = m.get("AP") if split == "all" else m.get("splits", {}).get(split)
    return float("nan") if v is None else float(v)


def settings_section(payload: Mapping[str, Any]) -> str:
    """Markdown: how the run was made (command, budget, seeds, machine, wall times)."""
    p = payload["provenance"]
    b = p["budget"]
    lines = [
        "## How this was run",
        "",
        f"- command: `{p['command']}`" if p.get("command") else "- command: (called from Python)",
        f"- commit: `{p['git_commit'] or 'unknown'}`"
        + (f" (+{p['git_dirty_files']} uncommitted files in the tree)" if p.get("git_dirty_files") else ""),
        f"- budget `{b['name']}`: {b['image_size']} px images, {b['train_images']} train / "
        f"{b['val_images']} val "
        f"images (<= {b['objects_per_image']} objects each), {payload['steps']} steps at batch "
        f"{b['batch_size']} (lr {b['learning_rate']}, warm-up {b['warmup_steps']}, x0.1 at "
        f"{list(Budget.lr_decay_steps(payload['steps']))}), "
        f"K = {b['num_priors']} priors. {b['note']}",
        f"- seeds: {p['seeds']}",
        f"- base config `{p['base_config']}` (architecture overrides: {b['model'] or 'none'})",
        f"- machine: {p['cpu_count']} CPUs, load average at start {p['load_average_at_start']}; "
        f"TF {p['tensorflow']}, Keras {p['keras']}, Python {p['python']}",
        *(
            [f"- **partial run**: only the variants {payload['variants_selected']} (the others: not run yet)"]
            if payload.get("variants_selected")
            else []
        ),
        f"- wall time: {fmt(payload['wall_s'] / 60.0)} min in total "
        f"({payload.get('trained_now', 0)} models trained now, "
        f"{payload.get('reused', 0)} reused from the cache)",
        "",
    ]
    return "\n".join(lines)


def output_stem(study: str, budget: Budget) -> str:
    """`<study>` for the full budget, `<study>_<budget>` otherwise (so a CI run never overwrites results),
    `_seed<N>` added for a model seed other than the default."""
    stem = study if budget.name == "full" else f"{study}_{budget.name}"
    return stem if budget.model_seed == MODEL_SEED else f"{stem}_seed{budget.model_seed}"


def report_rows(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rows of a study's results table: its variants, then the box-filled reference when present."""
    return [*payload["variants"], *([payload["reference"]] if payload.get("reference") else [])]


def report_markdown(payload: Mapping[str, Any], title: str, intro: str, table: str, extra: str | None = None) -> str:
    """The markdown report every study writes: title, intro, results table (+ `extra`), claims, settings."""
    return "\n".join(
        [
            f"# {title}",
            "",
            intro,
            "",
            "## Results",
            "",
            table,
            *([] if extra is None else [extra]),
            "## Claims",
            "",
            claims_table(payload["claims"]),
            settings_section(payload),
        ]
    )


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write `payload` as strict JSON (NaN -> null, NumPy scalars -> Python) atomically."""
    atomic_write_text(path, json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n")


def write_report(out_dir: str, stem: str, payload: Mapping[str, Any], markdown: str, figure: Any) -> dict:
    """Write `<stem>.json` (strict JSON), `<stem>.md` and `<stem>.png` (a matplotlib Figure) atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    paths = {k: os.path.join(out_dir, f"{stem}.{k}") for k in ("json", "md", "png")}
    write_json(paths["json"], payload)
    atomic_write_text(paths["md"], markdown)
    FigureCanvasAgg(figure)
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(paths["png"], buf.getvalue())
    return paths


def finish_payload(
    study: str, budget: Budget, prov: dict, rows: list, claims: list, t0: float, **extra: Any
) -> dict[str, Any]:
    """The JSON payload every study writes."""
    return {
        "study": study,
        "budget": budget.name,
        "steps": budget.steps_for(study),
        "provenance": prov,
        "split": {
            "seen": list(SEEN_FAMILY_IDS),
            "novel": list(NOVEL_FAMILY_IDS),
            "rationale": SPLIT_RATIONALE,
        },
        "variants": rows,
        "claims": claims,
        "wall_s": round(time.perf_counter() - t0, 1),
        "trained_now": sum(not r["train"]["reused"] for r in rows),
        "reused": sum(bool(r["train"]["reused"]) for r in rows),
        **extra,
    }
