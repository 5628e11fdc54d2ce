"""Compare two runs: a delta table of the headline numbers and a one-file comparison report."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline

from rareflow import __version__

KEY_SERIES = [
    ("china_magnet_exports_t", "China's magnet exports", "t per month"),
    ("price_usd_per_kg.NdPr_oxide.ex_china", "NdPr oxide outside China", "US$/kg"),
    ("price_usd_per_kg.Dy2O3.ex_china", "Dy oxide outside China", "US$/kg"),
    ("price_usd_per_kg.Dy2O3.china", "Dy oxide in China", "US$/kg"),
    ("licences.backlog", "Licence backlog", "t per month of flow"),
    ("inventory_weeks.all_magnet_users", "Users' magnet cover", "weeks"),
]


def load_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no summary.json (write one with rareflow run --out)")
    return json.loads(path.read_text())


def deltas(a: dict, b: dict) -> list[dict]:
    """Headline medians of A and B, the difference and the ratio."""
    rows = []
    for name in a["headline"]:
        va = a["headline"][name]["p50"]
        vb = b["headline"].get(name, {}).get("p50")
        row = {"measure": name, "a": va, "b": vb, "delta": None, "ratio": None}
        if isinstance(va, int | float) and isinstance(vb, int | float):
            row["delta"] = vb - va
            row["ratio"] = vb / va if va else None
        rows.append(row)
    for series in ("china_magnet_exports_t", "licences.applications"):
        if series in a["series"] and series in b["series"]:
            va, vb = sum(a["series"][series]["p50"]), sum(b["series"][series]["p50"])
            rows.append({"measure": f"{series} (total)", "a": va, "b": vb, "delta": vb - va,
                         "ratio": vb / va if va else None})
    return rows


def _overlay(a: dict, b: dict, key: str, title: str, unit: str) -> go.Figure:
    fig = go.Figure()
    for summary, colour, label in ((a, "#1f77b4", a["scenario"]), (b, "#d62728", b["scenario"])):
        bands = summary["series"].get(key)
        if bands is None:
            continue
        months = summary["months"]
        fig.add_trace(go.Scatter(x=months + months[::-1], y=bands["p95"] + bands["p5"][::-1],
                                 fill="toself", fillcolor=colour + "26",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=months, y=bands["p50"], name=label, line={"color": colour}))
    fig.update_layout(title=title, yaxis_title=unit, template="plotly_white", height=340,
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    return fig


def render(a: dict, b: dict) -> str:
    rows = deltas(a, b)

    def fmt(v):
        if v is None:
            return "-"
        return f"{v:,.2f}" if isinstance(v, float) and abs(v) < 100 else f"{v:,.0f}"

    table = "".join(
        f"<tr><td>{html.escape(r['measure'])}</td><td class=n>{fmt(r['a'])}</td>"
        f"<td class=n>{fmt(r['b'])}</td><td class=n>{fmt(r['delta'])}</td>"
        f"<td class=n>{fmt(r['ratio'])}</td></tr>" for r in rows)
    charts = "".join(
        "<section>" + _overlay(a, b, key, title, unit).to_html(
            full_html=False, include_plotlyjs=False, div_id=f"cmp-{i}") + "</section>"
        for i, (key, title, unit) in enumerate(KEY_SERIES)
        if key in a["series"] or key in b["series"])
    name_a, name_b = html.escape(a["scenario"]), html.escape(b["scenario"])
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>rareflow comparison: {name_a} vs {name_b}</title>
<style>body{{font-family:Helvetica,Arial,sans-serif;margin:24px;color:#222}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #eee;padding:4px 10px}}
td.n{{text-align:right}}section{{margin:18px 0}}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>
<h1>{name_a} (A) vs {name_b} (B)</h1>
<p>Medians over runs; rareflow {__version__}; generated {dt.date.today().isoformat()}.</p>
<table><tr><th>measure</th><th>A</th><th>B</th><th>B - A</th><th>B / A</th></tr>{table}</table>
{charts}</body></html>"""


def write_comparison(run_a: str | Path, run_b: str | Path, out: str | Path) -> tuple[Path, list]:
    a, b = load_summary(run_a), load_summary(run_b)
    target = Path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(render(a, b), encoding="utf-8")
    tmp.replace(target)
    return target, deltas(a, b)


__all__ = ["deltas", "render", "write_comparison"]
