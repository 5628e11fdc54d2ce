"""Plotly figures of a run: fan charts, Sankey, licences, stocks, capacity, map, criticality.

Every function takes the result dataset (``xarray.Dataset``) and/or the summary dict and
returns a ``plotly.graph_objects.Figure``; none fetches anything from the internet.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import numpy as np
import plotly.graph_objects as go
import xarray as xr

BAND = "rgba(31, 119, 180, 0.18)"
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f"]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def _layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(title=title, yaxis_title=y_title, template="plotly_white",
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, height=380,
                      legend={"orientation": "h", "y": -0.15})
    return fig


def fan_chart(summary: dict, names: list[str], labels: list[str], title: str,
              y_title: str) -> go.Figure:
    """Median lines with 5-95% bands over runs, one per series name."""
    months = summary["months"]
    fig = go.Figure()
    for i, (name, label) in enumerate(zip(names, labels, strict=True)):
        bands = summary["series"].get(name)
        if bands is None:
            continue
        colour = COLOURS[i % len(COLOURS)]
        fig.add_trace(go.Scatter(x=months + months[::-1], y=bands["p95"] + bands["p5"][::-1],
                                 fill="toself", fillcolor=_rgba(colour, 0.15),
                                 line={"width": 0}, hoverinfo="skip", showlegend=False,
                                 name=f"{label} 5-95%"))
        fig.add_trace(go.Scatter(x=months, y=bands["p50"], name=label,
                                 line={"color": colour, "width": 2}))
    return _layout(fig, title, y_title)


def top_sectors(summary: dict, prefix: str = "shortfall_t.", n: int = 5) -> list[str]:
    totals = {k[len(prefix):]: sum(v["p50"]) for k, v in summary["series"].items()
              if k.startswith(prefix)}
    ranked = sorted(totals, key=totals.get, reverse=True)
    return [s for s in ranked if totals[s] > 0][:n] or ranked[:1]


def shortfall_chart(summary: dict) -> go.Figure:
    sectors = top_sectors(summary)
    return fan_chart(summary, [f"shortfall_t.{s}" for s in sectors], sectors,
                     "Shortfall by sector (largest five)", "t per month")


def units_chart(summary: dict) -> go.Figure:
    sectors = top_sectors(summary, "units_not_built.")
    return fan_chart(summary, [f"units_not_built.{s}" for s in sectors], sectors,
                     "Units not built (largest five sectors)", "units per month")


def price_chart(summary: dict, items: tuple[str, ...] = ("NdPr_oxide", "Dy2O3",
                                                         "Tb4O7")) -> go.Figure:
    names, labels = [], []
    for item in items:
        for market in ("china", "ex_china"):
            name = f"price_usd_per_kg.{item}.{market}"
            if name in summary["series"]:
                names.append(name)
                labels.append(f"{item} ({'China' if market == 'china' else 'outside China'})")
    fig = fan_chart(summary, names, labels, "Prices in both markets", "US$/kg")
    fig.update_yaxes(type="log")
    return fig


def exports_chart(summary: dict) -> go.Figure:
    totals = {k: sum(v["p50"]) for k, v in summary["series"].items()
              if k.startswith("china_magnet_exports_to_")}
    top = sorted(totals, key=totals.get, reverse=True)[:5]
    labels = [k[len("china_magnet_exports_to_"):-2] for k in top]
    return fan_chart(summary, ["china_magnet_exports_t", *top], ["all", *labels],
                     "China's magnet exports by destination", "t per month")


def licence_chart(summary: dict) -> go.Figure:
    months = summary["months"]
    s = summary["series"]
    fig = go.Figure()
    for name, colour in (("applications", COLOURS[0]), ("approved", COLOURS[2]),
                         ("denied", COLOURS[1])):
        key = f"licences.{name}"
        if key in s:
            fig.add_trace(go.Bar(x=months, y=s[key]["p50"], name=name, marker_color=colour))
    if "licences.backlog" in s:
        fig.add_trace(go.Scatter(x=months, y=s["licences.backlog"]["p50"], name="backlog",
                                 line={"color": COLOURS[3], "width": 3}))
    if "licences.median_wait_days" in s:
        fig.add_trace(go.Scatter(x=months, y=s["licences.median_wait_days"]["p50"],
                                 name="median wait (days, right axis)", yaxis="y2",
                                 line={"color": COLOURS[4], "dash": "dot"}))
    fig.update_layout(barmode="group", yaxis2={"overlaying": "y", "side": "right",
                                               "title": "days"})
    return _layout(fig, "Licences: applications, decisions and backlog (median run)",
                   "t per month of flow")


def inventory_chart(data: xr.Dataset, summary: dict) -> go.Figure:
    months = summary["months"]
    inv = data["inventory"].median("run").sum("country")
    fig = go.Figure()
    for i, stage in enumerate(inv["inventory_stage"].values):
        values = inv.sel(inventory_stage=stage).values
        if np.nanmax(np.abs(values)) <= 0:
            continue
        fig.add_trace(go.Scatter(x=months, y=values, name=f"{stage} stock (t)",
                                 line={"color": COLOURS[i % len(COLOURS)]}))
    weeks = summary["series"].get("inventory_weeks.all_magnet_users")
    if weeks:
        fig.add_trace(go.Scatter(x=months, y=weeks["p50"], name="users' magnet cover (weeks)",
                                 yaxis="y2", line={"color": "black", "dash": "dot"}))
    fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "weeks"})
    fig.update_yaxes(type="log", selector={"anchor": "x"})
    return _layout(fig, "Stocks along the chain and users' cover (median run)", "t")


def response_figures(summary: dict) -> list[tuple[str, str, str, go.Figure]]:
    """Charts of the responses model (empty when the run had none): capacity in use outside
    China, government spending, stockpiles and self-sufficiency."""
    series = summary["series"]
    if "policy_cost_usd" not in series:
        return []
    out = []
    stages = [s for s in ("mining", "separation", "magnet")
              if f"capacity_t.{s}.outside_china" in series]
    out.append(("response-capacity", "Capacity outside China", "Capacity in use outside China "
                "by stage, with new capacity decided in the model, projects that slip and "
                "producers that shut down (t per month: REO for mining and separation feed, "
                "magnet for magnets).",
                fan_chart(summary, [f"capacity_t.{s}.outside_china" for s in stages], stages,
                          "Capacity in use outside China", "t per month")))
    kinds = ("price_floor", "stockpile_purchases", "capital_subsidy")
    out.append(("response-cost", "Government spending", "What governments have paid since "
                "the start: price-floor top-ups, stockpile purchases and capital subsidies "
                "(committed with the capacity they pay for).",
                fan_chart(summary, [f"policy_cost_usd_cumulative.{k}" for k in kinds],
                          [k.replace("_", " ") for k in kinds], "Cumulative government "
                          "spending", "US$")))
    holders = [k for k in series if k.startswith("stockpile_t.")]
    if holders:
        out.append(("response-stockpiles", "Stockpiles", "Level of each stockpile: releases "
                    "while its country's users run short, purchases while prices are low.",
                    fan_chart(summary, holders, [h.split(".", 1)[1] for h in holders],
                              "Stockpile levels", "t")))
    ratios = [k for k in series if k.startswith("self_sufficiency.")]
    if ratios:
        out.append(("response-self-sufficiency", "Self-sufficiency", "Output of each bloc "
                    "over its own use, by stage (1 = self-sufficient).",
                    fan_chart(summary, ratios, [r.split(".", 1)[1] for r in ratios],
                              "Self-sufficiency", "output / use")))
    return out


def capacity_chart(data: xr.Dataset, top: int = 5) -> go.Figure:
    if "capacity" not in data:
        return _layout(go.Figure(), "Capacity (not recorded)", "")
    cap = data["capacity"].sel(capacity_stage="magnet") * 12
    months = [str(m) for m in data["month"].values]
    totals = cap.sum("month").to_series().sort_values(ascending=False)
    leaders = [c for c in totals.index[:top] if totals[c] > 0]
    fig = go.Figure()
    for i, code in enumerate(leaders):
        fig.add_trace(go.Scatter(x=months, y=cap.sel(country=code).values, name=code,
                                 stackgroup="one", line={"color": COLOURS[i % len(COLOURS)]}))
    rest = cap.drop_sel(country=leaders).sum("country").values
    fig.add_trace(go.Scatter(x=months, y=rest, name="others", stackgroup="one",
                             line={"color": "#bbbbbb"}))
    return _layout(fig, "Magnet-making capacity by country", "t per year")


def sankey(data: xr.Dataset, month: str | None = None, min_share: float = 0.002) -> go.Figure:
    """Flows of one month (median run): mines -> separation -> magnet makers and users."""
    months = [str(m) for m in data["month"].values]
    month = month or months[len(months) // 2]
    d = data.median("run").sel(month=month)
    nodes: list[str] = []

    def node(label: str) -> int:
        if label not in nodes:
            nodes.append(label)
        return nodes.index(label)

    src, dst, val, lab = [], [], [], []
    total = float(d["production"].sel(stage="mining").sum()) or 1.0
    for stage, left, right, unit in (("concentrate", "mine", "separation", "t REO"),
                                     ("refined", "separation", "makers & users", "t REO"),
                                     ("magnet", "magnet makers", "magnet users", "t magnet")):
        flows = d["trade"].sel(trade_stage=stage)
        for x in flows["exporter"].values:
            for c in flows["importer"].values:
                v = float(flows.sel(exporter=x, importer=c))
                if v > min_share * total:
                    src.append(node(f"{left} {x}"))
                    dst.append(node(f"{right} {c}"))
                    val.append(v)
                    lab.append(f"{v:,.0f} {unit}")
    fig = go.Figure(go.Sankey(node={"label": nodes, "pad": 12},
                              link={"source": src, "target": dst, "value": val, "label": lab}))
    fig.update_layout(title=f"Flows in {month} (median run; t per month)", height=560,
                      margin={"l": 20, "r": 20, "t": 50, "b": 20})
    return fig


@cache
def world_geojson() -> dict:
    """Natural Earth 1:110m countries, shipped with the package (report/WORLD_GEOMETRY.md)."""
    path = resources.files("rareflow").joinpath("report", "world.geojson")
    return json.loads(path.read_text(encoding="utf-8"))


def dependence(data: xr.Dataset) -> dict[str, float]:
    """Share of each country's magnet receipts that came from China, over the whole run."""
    flows = data["trade"].sel(trade_stage="magnet").median("run").sum("month")
    received = flows.sum("exporter")
    from_china = flows.sel(exporter="CHN")
    out = {}
    for code in flows["importer"].values:
        total = float(received.sel(importer=code))
        if total > 0 and code not in ("ROW", "WLD"):
            out[str(code)] = float(from_china.sel(importer=code)) / total
    return out


def dependence_map(data: xr.Dataset) -> go.Figure:
    """Choropleth drawn as filled polygons on plain axes (equirectangular), so that no map
    tiles or topology are fetched: the report works offline."""
    from plotly.colors import sample_colorscale

    shares = dependence(data)
    fig = go.Figure()
    for feature in world_geojson()["features"]:
        code = feature["properties"].get("iso3")
        geom = feature["geometry"]
        polygons = geom["coordinates"] if geom["type"] == "MultiPolygon" else [geom["coordinates"]]
        xs: list[float | None] = []
        ys: list[float | None] = []
        for polygon in polygons:
            ring = polygon[0]
            xs += [pt[0] for pt in ring] + [None]
            ys += [pt[1] for pt in ring] + [None]
        if code in shares:
            colour = sample_colorscale("Reds", [0.15 + 0.85 * shares[code]])[0]
            text = f"{feature['properties']['name']}: {100 * shares[code]:.0f}% from China"
        else:
            colour, text = "#e6e6e6", f"{feature['properties']['name']}: not modelled"
        fig.add_trace(go.Scatter(x=xs, y=ys, fill="toself", fillcolor=colour, mode="lines",
                                 line={"color": "white", "width": 0.4}, hoverinfo="text",
                                 text=text, showlegend=False))
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", showlegend=False,
                             marker={"colorscale": "Reds", "cmin": 0, "cmax": 100,
                                     "color": [0], "showscale": True,
                                     "colorbar": {"title": "% from China"}}))
    fig.update_xaxes(visible=False, range=[-170, 190])
    fig.update_yaxes(visible=False, range=[-58, 85], scaleanchor="x", scaleratio=1)
    fig.update_layout(title="Dependence on China for magnets (share of receipts, median run; "
                            "grey: not a separate country in the model)", height=480,
                      template="plotly_white", margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def criticality_matrix(points: list[dict]) -> go.Figure:
    """EI (x) against SR (y); points: {label, ei, sr, kind}; EU thresholds EI 2.8, SR 1.0."""
    fig = go.Figure()
    for kind, symbol in (("published", "diamond"), ("base year", "circle"),
                         ("final year", "square")):
        pts = [p for p in points if p["kind"] == kind and p["ei"] is not None]
        if pts:
            fig.add_trace(go.Scatter(x=[p["ei"] for p in pts], y=[p["sr"] for p in pts],
                                     mode="markers+text", text=[p["label"] for p in pts],
                                     textposition="top center", name=kind,
                                     marker={"symbol": symbol, "size": 12}))
    fig.add_hline(y=1.0, line_dash="dash", line_color="grey")
    fig.add_vline(x=2.8, line_dash="dash", line_color="grey")
    fig.update_layout(xaxis_title="economic importance (EI)", yaxis_title="supply risk (SR)")
    return _layout(fig, "Criticality (EU method; dashed: EU thresholds)", "supply risk (SR)")
