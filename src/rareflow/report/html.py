"""One self-contained HTML report of a run: written summary, every chart, the scenario's events
and rules with sources, criticality, and the data provenance. Works offline: the Plotly library
is embedded once; the world map geometry ships with the package.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import jinja2
import numpy as np
import plotly.offline
import xarray as xr

from rareflow import __version__
from rareflow.criticality import EU_GROUPS, criticality
from rareflow.data import Dataset
from rareflow.metrics import concentration_by_year, leverage, time_to_recover, time_to_survive
from rareflow.report import charts

SECTIONS = [("summary", "In brief"), ("shortfall", "Shortfall"), ("units", "Units"),
            ("prices", "Prices"), ("exports", "Exports"), ("licences", "Licences"),
            ("stocks", "Stocks"), ("capacity", "Capacity"), ("flows", "Flows"),
            ("map", "Map"), ("resilience", "Resilience"), ("leverage", "Leverage"),
            ("concentration", "Concentration"), ("criticality", "Criticality"),
            ("scenario", "Scenario"), ("provenance", "Sources"), ("checks", "Checks")]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-" if value is None or math.isnan(value) else "∞"
    return f"{value:,.{digits}f}"


def _band(head: dict, digits: int = 0, runs: int = 1) -> str:
    text = _fmt(head["p50"], digits)
    if runs > 1 and head["p5"] != head["p95"]:
        text += f" ({_fmt(head['p5'], digits)}-{_fmt(head['p95'], digits)})"
    return text


def _first_event_month(scenario: dict, months: list[str], rules_in_play: list[dict]) -> int:
    starts = [e.get("start") for e in scenario.get("events", []) if e.get("start")]
    starts += [r["effective"][:7] for r in rules_in_play if r.get("effective")]
    starts = [s for s in starts if s in months]
    return months.index(min(starts)) if starts else 0


def _brief(summary: dict, data: xr.Dataset, runs: int) -> tuple[list[dict], list[str]]:
    months = summary["months"]
    head = summary["headline"]
    series = summary["series"]
    first = head["first_shortfall_month"]["p50"]
    cards = [
        {"value": "none" if first is None else months[first], "label": "first month short"},
        {"value": _band(head["shortfall_total_t"], 0, runs), "label": "total shortfall, t"},
        {"value": _band(head["units_not_built_total"], 0, runs), "label": "units not built"},
        {"value": "US$ " + _band(head["value_at_risk_usd"], 0, runs),
         "label": "value of units not built"},
    ]
    brief = []
    short = data["shortfall"].median("run").sum("month")
    if float(short.sum()) > 0:
        by_sector = short.sum("country").to_series().sort_values(ascending=False)
        by_country = short.sum("sector").to_series().sort_values(ascending=False)
        top_s = [f"{s} ({v:,.0f} t)" for s, v in by_sector.items() if v > 0][:3]
        top_c = [f"{c} ({v:,.0f} t)" for c, v in by_country.items() if v > 0][:3]
        brief.append(f"Hardest hit sectors: {', '.join(top_s)}; countries: {', '.join(top_c)}.")
        brief.append(f"The first shortfall comes in {months[first]}." if first is not None
                     else "")
    else:
        brief.append("No sector runs short over the horizon.")
    for item in ("NdPr_oxide", "Dy2O3"):
        for market, name in (("china", "in China"), ("ex_china", "outside China")):
            key = f"price_usd_per_kg.{item}.{market}"
            if key in series:
                p = np.array(series[key]["p50"])
                peak = int(np.argmax(p))
                if p[peak] > p[0] * 1.05:
                    brief.append(f"{item} {name} peaks at US${p[peak]:,.0f}/kg in {months[peak]}, "
                                 f"{p[peak] / p[0]:.1f} times its {months[0]} level.")
    exports = np.array(series["china_magnet_exports_t"]["p50"])
    first_year = exports[:12].mean() if len(exports) >= 12 else exports.mean()
    low = int(np.argmin(exports))
    if exports[low] < 0.95 * first_year:
        brief.append(f"China's magnet exports fall to {exports[low]:,.0f} t in {months[low]}, "
                     f"{100 * (1 - exports[low] / first_year):.0f}% below their first-year "
                     "monthly average.")
    apps = np.array(series.get("licences.applications", {}).get("p50", [0]))
    if apps.sum() > 0:
        approved = np.array(series["licences.approved"]["p50"]).sum()
        denied = np.array(series["licences.denied"]["p50"]).sum()
        backlog = np.array(series["licences.backlog"]["p50"])
        wait = np.array(series["licences.median_wait_days"]["p50"])
        decided = approved + denied
        share = f"{100 * approved / decided:.0f}%" if decided > 0 else "-"
        brief.append(f"Licences: {apps.sum():,.0f} t of flow applied for, {share} of decisions "
                     f"approved, backlog peaking at {backlog.max():,.0f} t in "
                     f"{months[int(np.argmax(backlog))]}, median waits up to "
                     f"{wait.max():.0f} days.")
    brief += _response_brief(summary)
    return cards, [b for b in brief if b]


def _response_brief(summary: dict) -> list[str]:
    """Lines on the responses model's outcomes: triggers, spending, new capacity, residue."""
    months, head = summary["months"], summary["headline"]
    lines = []
    for name, bands in head.items():
        if name.startswith("trigger_fired_month."):
            month = bands["p50"]
            lines.append(f"Trigger {name.split('.', 1)[1]}: "
                         + ("did not fire." if month is None
                            else f"fired in {months[int(month)]} (median run)."))
    if "policy_cost_usd_total" in head and (head["policy_cost_usd_total"]["p50"] or 0) > 0:
        lines.append(f"Governments spend US${head['policy_cost_usd_total']['p50']:,.0f} over "
                     "the horizon (price floors, stockpile purchases, capital subsidies).")
    built = {k.split(".", 1)[1]: v["p50"] for k, v in head.items()
             if k.startswith("new_capacity_t_per_year.") and (v["p50"] or 0) > 0}
    committed = {k.split(".", 1)[1]: v["p50"] for k, v in head.items()
                 if k.startswith("committed_capacity_t_per_year.") and (v["p50"] or 0) > 0}
    if committed:
        lines.append("Capacity committed in the model: "
                     + ", ".join(f"{s} {v:,.0f} t/yr" for s, v in committed.items())
                     + " (what has not arrived by the end is still being permitted or built).")
    if built:
        lines.append("Capacity decided in the model and in place at the end: "
                     + ", ".join(f"{s} {v:,.0f} t/yr" for s, v in built.items())
                     + f"; residue from new separation {head['residue_t_total']['p50']:,.0f} t "
                     f"holding {head['thorium_kg_total']['p50']:,.0f} kg of thorium.")
    return lines


def _resilience(data: xr.Dataset, start: int) -> list[dict]:
    short = data["shortfall"].median("run")
    need = data["need"].median("run")
    units = data["units_not_built"].median("run").sum("month")
    rows = []
    for c in short["country"].values:
        for s in short["sector"].values:
            sh = short.sel(country=c, sector=s).values
            if sh.sum() <= 1e-6:
                continue
            nd = need.sel(country=c, sector=s).values
            rows.append({"country": str(c), "sector": str(s),
                         "tts": _fmt(time_to_survive(sh, nd, start)),
                         "ttr": _fmt(time_to_recover(sh, nd, start)),
                         "short": _fmt(float(sh.sum())),
                         "units": _fmt(float(units.sel(country=c, sector=s))),
                         "_order": float(sh.sum())})
    rows.sort(key=lambda r: r["_order"], reverse=True)
    return rows[:25]


def _concentration(data: xr.Dataset) -> tuple[list[str], list[dict]]:
    stages = [str(s) for s in data["stage"].values]
    prod = data["production"].median("run").values  # [month, stage, country]
    months = [str(m) for m in data["month"].values]
    china = list(data["country"].values).index("CHN")
    by_year = concentration_by_year(prod, months)
    rows = []
    for year, stats in by_year.items():
        cells = [(f"{100 * stats[i]['shares'][china]:.0f}%", f"{stats[i]['hhi']:,.0f}")
                 for i in range(len(stages))]
        rows.append({"year": year, "cells": cells})
    return stages, rows


def _rules_in_play(scenario: dict, dataset: Dataset, months: list[str]) -> list[dict]:
    from rareflow.compile import resolve_rules
    from rareflow.scenario import Scenario

    try:
        rules = resolve_rules(dataset, Scenario.model_validate(scenario))
    except Exception:  # a report of an old run whose rules left the library
        return []
    urls = dict(zip(dataset.sources["source_id"], dataset.sources["url"], strict=True))
    out = []
    days = [dt.date(int(m[:4]), int(m[5:7]), 15) for m in months]
    for r in rules:
        if not r.acts_on_flows or not any(r.active_on(day) for day in days):
            continue
        source = next((s for s in r.source_id if s in urls), None)
        out.append({"id": r.rule_id, "title": r.title, "mechanism": r.mechanism,
                    "effective": r.effective.isoformat(),
                    "suspended": r.suspended.isoformat() if r.suspended else "",
                    "until": r.suspended_until.isoformat() if r.suspended_until else "",
                    "ended": r.ended.isoformat() if r.ended else "",
                    "source": source or "", "url": urls.get(source, "")})
    return out


def _events(scenario: dict) -> list[dict]:
    out = []
    for e in scenario.get("events", []):
        details = ", ".join(f"{k}: {v}" for k, v in e.items()
                            if k not in ("type", "start", "months") and v is not None)
        out.append({"type": e["type"], "start": e.get("start", ""),
                    "months": e.get("months") or "open", "details": details})
    return out


def _criticality_rows(data: xr.Dataset, dataset: Dataset, months: list[str]) -> tuple:
    years = sorted({int(m[:4]) for m in months})
    first = criticality(data, dataset, years[0])
    last = criticality(data, dataset, years[-1])
    rows, points = [], []
    for subject in [*EU_GROUPS, *first["elements"]]:
        a = first["groups"].get(subject) or first["elements"].get(subject)
        b = last["groups"].get(subject) or last["elements"].get(subject)
        pub = first["published"].get(subject, {})
        rows.append({"subject": subject, "first": _fmt(a["SR"], 2), "last": _fmt(b["SR"], 2),
                     "pub_sr": _fmt(pub.get("SR"), 1), "pub_ei": _fmt(pub.get("EI"), 1)})
        if subject in EU_GROUPS:
            points.append({"label": f"{subject} published", "sr": pub.get("SR"),
                           "ei": pub.get("EI"), "kind": "published"})
            points.append({"label": f"{subject} {years[0]}", "sr": a["SR"], "ei": a["EI"],
                           "kind": "base year"})
            points.append({"label": f"{subject} {years[-1]}", "sr": b["SR"], "ei": b["EI"],
                           "kind": "final year"})
    chart = charts.criticality_matrix(points).to_html(full_html=False, include_plotlyjs=False,
                                                      div_id="chart-criticality")
    return rows, chart


def render(data: xr.Dataset, summary: dict, scenario: dict, dataset: Dataset,
           exposure: dict | None = None) -> str:
    """The report as one HTML string."""
    months = summary["months"]
    runs = summary["runs"]
    rules = _rules_in_play(scenario, dataset, months)
    start = _first_event_month(scenario, months, rules)
    figures = [
        ("shortfall", "Shortfall by sector", "Tonnes per month that users needed and did not "
         "get; the band spans the 5th to 95th percentile of runs.",
         charts.shortfall_chart(summary)),
        ("units", "Units not built", "Shortfall turned into units of each sector's product "
         "(vehicles, MW, robots...) with the dataset's intensities.", charts.units_chart(summary)),
        ("prices", "Prices in China and outside China", "Oxide prices by market (log scale); a "
         "gap opens when exports are restricted.", charts.price_chart(summary)),
        ("exports", "China's magnet exports", "All destinations and the five largest.",
         charts.exports_chart(summary)),
        ("licences", "Licences", "Applications, approvals and denials each month, the backlog "
         "awaiting review and the median wait of decisions.", charts.licence_chart(summary)),
        ("stocks", "Stocks and cover", "Stocks along the chain and users' magnet cover in weeks.",
         charts.inventory_chart(data, summary)),
        ("capacity", "Capacity", "Magnet-making capacity over time (pipeline plants arrive at "
         "their dates).", charts.capacity_chart(data)),
        ("flows", "Flows by stage and country", "Concentrate, refined material and magnets in "
         "the month the scenario's first event starts.",
         charts.sankey(data, months[min(start + 2, len(months) - 1)])),
        ("map", "Dependence on China", "Share of each modelled country's magnet receipts that "
         "came from China over the run.", charts.dependence_map(data)),
        *charts.response_figures(summary),
    ]
    chart_blocks = [{"id": cid, "title": title, "caption": caption,
                     "html": fig.to_html(full_html=False, include_plotlyjs=False,
                                         div_id=f"chart-{cid}")}
                    for cid, title, caption, fig in figures]
    cards, brief = _brief(summary, data, runs)
    stages, concentration = _concentration(data)
    crit_rows, crit_chart = _criticality_rows(data, dataset, months)
    lev = [{"product": r["product"], "destination": r["destination"], "sector": r["sector"],
            "tonnes": _fmt(r["tonnes_withheld"], 1), "units": _fmt(r["units_per_t"]),
            "usd": _fmt(r["usd_per_t"])} for r in leverage(data)]
    sources = dataset.sources
    urls = dict(zip(sources["source_id"], sources["url"], strict=True))
    scenario_sources = [{"id": s, "url": urls.get(s, s)} for s in scenario.get("sources", [])]
    template = jinja2.Environment(
        loader=jinja2.PackageLoader("rareflow.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
    ).get_template("report.html")
    return template.render(
        title=summary["scenario"], description=data.attrs.get("description", ""),
        months=months, runs=runs, seed=summary["seed"],
        base_year=data.attrs.get("base_year", ""), version=__version__,
        generated=dt.date.today().isoformat(), toc=SECTIONS, cards=cards, brief=brief,
        charts=chart_blocks, resilience=_resilience(data, start), leverage=lev,
        stages=stages, concentration=concentration, criticality=crit_rows,
        criticality_chart=crit_chart,
        criticality_note="Groups and elements with no simulated supply show '-'.",
        events=_events(scenario), rules=rules, scenario_sources=scenario_sources,
        sources=[{"id": r["source_id"], "publisher": r["publisher"], "year": r["year"],
                  "title": r["title"], "url": r["url"]}
                 for r in sources.to_dict("records")],
        n_sources=len(sources), checks=summary["checks"],
        plotly_js=plotly.offline.get_plotlyjs(), exposure=exposure,
    )


def write_report(run_dir: str | Path, dataset: Dataset, out: str | Path | None = None) -> Path:
    """Render ``RUN_DIR`` (from ``rareflow run --out``) to ``report.html`` (or ``out``)."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    scenario = json.loads((run_dir / "scenario.json").read_text()) if (
        run_dir / "scenario.json").is_file() else {}
    from rareflow.result import NETCDF_LOCK

    with NETCDF_LOCK:
        data = xr.load_dataset(run_dir / "result.nc")
    exposure = json.loads((run_dir / "exposure.json").read_text()) if (
        run_dir / "exposure.json").is_file() else None
    html = render(data, summary, scenario, dataset, exposure)
    target = Path(out) if out else run_dir / "report.html"
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)
    return target


__all__ = ["render", "write_report"]
