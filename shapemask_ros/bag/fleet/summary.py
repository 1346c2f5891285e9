"""The aggregated report of a fleet evaluation (`fleet_report.json` / `fleet_report.md`): a row per bag,
totals, AP pooled over every bag's ground truth, the worst and slowest bags first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shapemask_ros.bag.evaluation.report import now_iso
from shapemask_ros.utils.formatting import json_safe
from shapemask_ros.utils.io import atomic_write_text

FLEET_FORMAT = "shapemask_ros.bag_eval_fleet_report/1"


def _worst_first(row: Mapping[str, Any]) -> tuple:
    """Faults first, then lowest mask AP (bags without ground truth after), then the largest share dropped."""
    ok = row["status"] == "ok"
    ap = row.get("mask_ap")
    read = row.get("images_read") or 0
    drop_share = (read - (row.get("processed") or 0)) / read if read else 1.0
    return (ok, ap is None, ap if ap is not None else 0.0, -drop_share, row["id"])


def _slowest_first(row: Mapping[str, Any]) -> tuple:
    p99 = (row.get("latency_ms") or {}).get("p99")
    return (p99 is None, -(p99 or 0.0), row["id"])


def build_fleet_report(
    rows: Sequence[Mapping[str, Any]], pooled: Mapping[str, Any] | None, run: Mapping[str, Any]
) -> dict[str, Any]:
    """The report dict: `rows` (one per bag), `pooled` (pooled_ap.pooled_accuracy), `run` (how it ran)."""
    ok = [r for r in rows if r["status"] == "ok"]
    drops: Counter = Counter()
    for r in ok:
        drops.update(r.get("drops") or {})
    damaged = [r["id"] for r in ok if r.get("damage")]
    totals = {
        "bags": len(rows),
        "bags_ok": len(ok),
        "bags_failed": len(rows) - len(ok),
        "bags_damaged": len(damaged),
        "bags_reused": sum(1 for r in ok if r.get("reused")),
        "images_read": sum(r["images_read"] for r in ok),
        "processed": sum(r["processed"] for r in ok),
        "objects": sum(r["objects"] for r in ok),
        "drops": dict(sorted(drops.items())),
        "bag_wall_s": sum(r["wall_s"] for r in ok),
    }
    return {
        "format": FLEET_FORMAT,
        "created": now_iso(),
        "run": dict(run),
        "totals": totals,
        "pooled_accuracy": pooled,
        "bags": sorted(rows, key=_worst_first),
        "slowest": [r["id"] for r in sorted(ok, key=_slowest_first)],
    }


def _f(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_fleet_markdown(rep: Mapping[str, Any]) -> str:
    """The markdown version of a fleet report."""
    t, run = rep["totals"], rep["run"]
    lines = [
        "# Fleet bag evaluation",
        "",
        f"{t['bags']} bags ({t['bags_ok']} evaluated, {t['bags_failed']} failed, {t['bags_damaged']} damaged, "
        f"{t['bags_reused']} reused from an earlier run); {t['processed']} of {t['images_read']} frames processed, "
        f"{t['objects']} objects. Run: {run.get('executor')}, wall {_f(run.get('wall_s'))} s, model "
        f"`{run.get('model')}`.",
        "",
    ]
    p = rep.get("pooled_accuracy")
    if p and "mask_ap" in p:
        lines += [
            f"**Pooled over {p['bags']} bags with ground truth** ({p['images_evaluated']} images, {p['annotations']} "
            f"objects): mask AP {_f(p['mask_ap']['AP'])}, class-agnostic {_f(p['mask_ap_agnostic']['AP'])}, "
            f"box AP {_f(p['box_ap']['AP'])}.",
            "",
        ]
    elif p:
        lines += [f"Pooled accuracy: {p.get('error')}", ""]
    lines += [
        "## Bags, worst first",
        "",
        "| bag | status | frames | processed | dropped | p50 ms | p99 ms | mask AP | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rep["bags"]:
        if r["status"] != "ok":
            lines.append(f"| `{r['bag']}` | **{r['status']}** | | | | | | | {r['error']} |")
            continue
        lat = r.get("latency_ms") or {}
        notes = []
        if r.get("damage"):
            d = r["damage"]
            lost = d.get("messages_lost")
            notes.append(f"damaged: {d.get('reason')}" + (f" ({lost} messages lost)" if lost else ""))
        top = sorted((r.get("drops") or {}).items(), key=lambda kv: -kv[1])[:3]
        notes += [f"{k} {v}" for k, v in top]
        lines.append(
            f"| `{r['bag']}` | ok | {r['images_read']} | {r['processed']} | {r['dropped']} | "
            f"{_f(lat.get('p50'))} | {_f(lat.get('p99'))} | {_f(r.get('mask_ap'))} | {'; '.join(notes)} |"
        )
    by_id = {r["id"]: r for r in rep["bags"]}
    lines += ["", "## Slowest bags (p99 frame latency)", ""]
    for i in rep["slowest"][:10]:
        r = by_id[i]
        lines.append(f"- `{r['bag']}`: p99 {_f(r['latency_ms']['p99'])} ms, {_f(r.get('fps'))} frames/s")
    if t["drops"]:
        lines += ["", "## Drops over all bags", ""]
        lines += [f"- {k}: {v}" for k, v in sorted(t["drops"].items(), key=lambda kv: -kv[1])]
    lines += ["", "Per-bag outputs (output bag, report, overlays): `bags/<id>/`.", ""]
    return "\n".join(lines)


def write_fleet_report(out: Path, rep: Mapping[str, Any]) -> tuple[Path, Path]:
    """fleet_report.json and fleet_report.md in `out`, each written atomically."""
    import json

    j, m = out / "fleet_report.json", out / "fleet_report.md"
    atomic_write_text(str(j), json.dumps(json_safe(rep), indent=1, sort_keys=False) + "\n")
    atomic_write_text(str(m), render_fleet_markdown(rep))
    return j, m
