"""Criticality computed inside a simulated year: the EU supply-risk method and a USGS-style
supply risk, from the simulated shares of production and trade.

EU method (European Commission 2017 methodology, used for the 2020 and 2023 lists)
-----------------------------------------------------------------------------------
.. math::

    SR = [HHI_{WGI,GS} \\cdot IR/2 + HHI_{WGI,EU} \\cdot (1 - IR/2)] \\cdot (1 - EoL_{RIR})
         \\cdot SI_{SR}, \\qquad HHI_{WGI} = \\sum_i s_i^2 \\, WGI_i

with ``s_i`` the country shares of global supply (GS) or of EU sourcing at the bottleneck stage
(the higher of extraction and processing), ``WGI_i`` the governance indicator rescaled to 0-10
(10 = poorest governance) as ``5 - 2 * WGI_mean`` (the linear rescaling of the CritMAT
implementation of the EU method; the EU guidelines' exact scaling was not available), ``IR`` the
EU import reliance, ``EoL_RIR`` the end-of-life recycling input rate and ``SI_SR`` the
substitution index (group values: the mean of the member elements' indices). EI cannot be
recomputed (end-use shares and sector value added were not found), so the published EI is used.

USGS-style supply risk (after Nassar & Fortier 2021)
----------------------------------------------------
``disruption potential = sum_i s_i^2 (1 - WGI_pct_i / 100)`` over processing shares,
``trade exposure`` = US net import reliance of refined material in the simulation (USGS MCS
value where the US consumes none in the model); economic vulnerability was not found, so the
reported ``supply_risk`` is ``disruption potential x trade exposure`` and says so.

References
----------
European Commission (2017), Methodology for establishing the EU list of critical raw materials,
doi:10.2873/769526. Grohol, M., Veeh, C. (2023), Study on the Critical Raw Materials for the EU
2023, doi:10.2873/725585. Nassar, N.T., Fortier, S.M. (2021), Methodology and technical input for
the 2021 review and revision of the U.S. Critical Minerals List, USGS Open-File Report 2021-1045.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from rareflow.data import Dataset

#: EU 2023 grouping of rare earths.
EU_GROUPS = {
    "LREE": ("La", "Ce", "Pr", "Nd", "Sm"),
    "HREE": ("Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Y"),
}
EU_MEMBERS = ("AUT", "BEL", "BGR", "HRV", "CYP", "CZE", "DNK", "EST", "FIN", "FRA", "DEU", "GRC",
              "HUN", "IRL", "ITA", "LVA", "LTU", "LUX", "MLT", "NLD", "POL", "PRT", "ROU", "SVK",
              "SVN", "ESP", "SWE")


def _governance(dataset: Dataset) -> tuple[dict[str, float], dict[str, float]]:
    g = dataset.governance
    latest = g[g["year"] == g["year"].max()]
    scaled = {r["country"]: 5.0 - 2.0 * r["value"]
              for _, r in latest[latest["indicator"] == "WGI_mean"].iterrows()}
    pct = {r["country"]: r["value"]
           for _, r in latest[latest["indicator"] == "WGI_percentile_mean"].iterrows()}
    return scaled, pct


def _param(dataset: Dataset, subject: str, parameter: str, stage: str | None = None,
           default: float | None = None) -> float | None:
    p = dataset.criticality_parameters
    rows = p[(p["subject"] == subject) & (p["parameter"] == parameter)]
    if stage is not None:
        rows = rows[rows["note"].fillna("").str.startswith(f"stage={stage}")]
    return float(rows["value"].iloc[0]) if len(rows) else default


def _hhi_wgi(shares: dict[str, float], wgi: dict[str, float]) -> float:
    """sum s_i^2 WGI_i over countries with a governance value (others: the mean, stated)."""
    known = [v for v in wgi.values()]
    fallback = float(np.mean(known)) if known else 5.0
    return float(sum(s * s * wgi.get(c, fallback) for c, s in shares.items()))


def _shares(values: xr.DataArray) -> dict[str, float]:
    """Country shares of a one-dimensional array (its one dimension is a country axis)."""
    total = float(values.sum())
    if total <= 0:
        return {}
    (dim,) = values.dims
    return {str(c): float(v) / total for c, v in zip(values[dim].values, values.values,
                                                      strict=True) if v > 0}


def _year_index(data: xr.Dataset, year: int) -> list[int]:
    return [i for i, m in enumerate(data["month"].values) if str(m).startswith(str(year))]


def eu_supply_risk(data: xr.Dataset, dataset: Dataset, year: int,
                   elements: tuple[str, ...], subject: str) -> dict:
    """EU SR of a group or element in a simulated year (median run)."""
    idx = _year_index(data, year)
    if not idx:
        raise ValueError(f"year {year} is outside the run's months")
    d = data.median("run").isel(month=idx)
    wgi, _ = _governance(dataset)
    present = [e for e in elements if e in d["element"].values]
    # processing: separated output by country; extraction: mine output x composition
    processing = d["refined_output"].sel(element=present).sum(("month", "element"))
    if "mine_composition" in data:
        comp = data["mine_composition"].sel(element=present).sum("element")
        extraction = d["production"].sel(stage="mining").sum("month") * comp
    else:
        extraction = d["production"].sel(stage="mining").sum("month")
    refined_trade = d["trade"].sel(trade_stage="refined").sum("month")
    eu = [c for c in refined_trade["importer"].values if c in EU_MEMBERS]
    eu_in = refined_trade.sel(importer=eu).sum("importer") if eu else None
    sourcing = _shares(eu_in) if eu_in is not None else {}
    members = [m for m in present]
    si = [v for v in (_param(dataset, m, "SI_SR") for m in members) if v is not None]
    si_sr = _param(dataset, subject, "SI_SR", default=float(np.mean(si)) if si else 1.0)
    eol = _param(dataset, subject, "EoL_RIR", default=0.0)
    out = {}
    if not _shares(processing) and not _shares(extraction):
        return {"SR": None, "SR_extraction": None, "SR_processing": None, "EI": None,
                "EI_note": "no simulated supply of this material (no element split in the data)",
                "eu_sourcing_observed": False}
    for stage, values in (("extraction", extraction), ("processing", processing)):
        gs = _shares(values)
        if not gs:
            continue
        ir = _param(dataset, subject, "IR_EU", stage=stage, default=1.0)
        hhi_gs = _hhi_wgi(gs, wgi)
        hhi_eu = _hhi_wgi(sourcing, wgi) if sourcing else hhi_gs
        out[stage] = (hhi_gs * ir / 2 + hhi_eu * (1 - ir / 2)) * (1 - eol) * si_sr
    published = dataset.criticality_published
    ei_rows = published[(published["subject"] == subject) & (published["indicator"] == "EI")]
    ei = float(ei_rows["value"].iloc[-1]) if len(ei_rows) else None
    def r3(v):
        return None if v is None else round(v, 3)

    return {"SR": r3(max(out.values())), "SR_extraction": r3(out.get("extraction")),
            "SR_processing": r3(out.get("processing")), "EI": ei,
            "EI_note": "published EU 2023 value (inputs to recompute it not found)",
            "eu_sourcing_observed": bool(sourcing)}


def usgs_supply_risk(data: xr.Dataset, dataset: Dataset, year: int, element: str) -> dict:
    idx = _year_index(data, year)
    d = data.median("run").isel(month=idx)
    _, pct = _governance(dataset)
    shares = _shares(d["refined_output"].sel(element=element).sum("month"))
    if not shares:
        return {"disruption_potential": None, "trade_exposure": None, "supply_risk": None,
                "note": "no simulated supply of this element"}
    known = list(pct.values()) or [50.0]
    dp = float(sum(s * s * (1 - pct.get(c, float(np.mean(known))) / 100.0)
                   for c, s in shares.items()))
    refined = d["trade"].sel(trade_stage="refined").sum("month")
    received = float(refined.sel(importer="USA").sum()) if "USA" in refined["importer"] else 0.0
    made = float(d["refined_output"].sel(country="USA").sum()) if "USA" in d["country"] else 0.0
    home = float(refined.sel(exporter="USA", importer="USA")) if "USA" in refined[
        "importer"] else 0.0
    imports = received - home
    if received + made > 0 and imports > 0:
        te = max(0.0, min(1.0, imports / max(received, 1e-9)))
    else:
        te = _param(dataset, "REE", "net_import_reliance_US", default=1.0) or 1.0
    return {"disruption_potential": round(dp, 4), "trade_exposure": round(te, 4),
            "supply_risk": round(dp * te, 4),
            "note": "economic vulnerability not available; supply_risk = DP x TE"}


def criticality(data: xr.Dataset, dataset: Dataset, year: int) -> dict:
    """The ``rareflow criticality --json`` object for one simulated year."""
    groups = {g: eu_supply_risk(data, dataset, year, members, g)
              for g, members in EU_GROUPS.items()}
    elements = {}
    for e in ("Nd", "Pr", "Dy", "Tb", "Sm", "La", "Ce", "Y"):
        elements[e] = eu_supply_risk(data, dataset, year, (e,), e)
    usgs = {e: usgs_supply_risk(data, dataset, year, e) for e in ("Nd", "Pr", "Dy", "Tb")}
    published = dataset.criticality_published
    pub = {}
    for subject in [*groups, *elements]:
        rows = published[published["subject"] == subject]
        vals = {r["indicator"]: r["value"] for _, r in rows.iterrows()
                if r["indicator"] in ("SR", "EI")}
        if vals:
            pub[subject] = {"assessment": str(rows["assessment"].iloc[0]), **vals}
    return {"year": year, "method": "EU", "groups": groups, "elements": elements,
            "usgs": usgs, "published": pub}
