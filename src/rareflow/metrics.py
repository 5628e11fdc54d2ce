"""Concentration and resilience metrics.

Pure functions on shares and series; documented with their formula and source.
"""

from __future__ import annotations

import json
from collections.abc import Iterable


def herfindahl_hirschman(shares: Iterable[float]) -> float:
    """Herfindahl-Hirschman index of market shares, on the 0-10,000 scale.

    Parameters
    ----------
    shares : iterable of float
        Market shares as fractions [-] that sum to one.

    Returns
    -------
    float
        HHI [-], 10,000 for a monopoly, near 0 for an atomised market.

    Notes
    -----
    .. math:: HHI = \\sum_i (100 s_i)^2

    Aggregates such as "rest of world" are counted as one producer, which overstates the index
    slightly; the US agencies treat markets above 1,800 as highly concentrated.

    References
    ----------
    U.S. Department of Justice and Federal Trade Commission, Merger Guidelines (2023), section 2.1,
    https://www.justice.gov/atr/2023-merger-guidelines
    """
    return float(sum((100.0 * s) ** 2 for s in shares))


def time_to_survive(shortfall, need, start: int, threshold: float = 1e-3) -> float:
    """Months from a disruption until the first month short by more than ``threshold`` of need.

    Parameters
    ----------
    shortfall, need : array-like [month]
        Monthly shortfall and need [t].
    start : int
        Index of the month the disruption begins.
    threshold : float
        Share of need that counts as short [-].

    Returns
    -------
    float
        TTS in months; ``inf`` if never short after ``start`` (the node survives the horizon).

    Notes
    -----
    Simchi-Levi's time-to-survive is the longest time a node can match demand after a
    disruption, from inventory and alternatives; in a simulation it is the delay to the first
    shortfall.

    References
    ----------
    Simchi-Levi, D., Schmidt, W., Wei, Y. (2014), "From superstorms to factory fires: managing
    unpredictable supply-chain disruptions", Harvard Business Review 92(1-2), 96-101.
    """
    import numpy as np

    short = np.asarray(shortfall, dtype=float)[start:]
    demand = np.asarray(need, dtype=float)[start:]
    hit = short > threshold * np.maximum(demand, 1e-12)
    return float(np.argmax(hit)) if hit.any() else float("inf")


def time_to_recover(shortfall, need, start: int, threshold: float = 1e-3,
                    settle_months: int = 3) -> float:
    """Months from a disruption until supply is back: the end of the last short spell.

    Returns the number of months from ``start`` to the first month of a run of
    ``settle_months`` consecutive months without shortfall that follows the last shortfall;
    0 if never short; ``inf`` if still short at the end of the horizon.

    Notes
    -----
    Simchi-Levi's time-to-recover is the time a node needs to be restored to full function; the
    simulation measures it on the demand side, as the end of the shortfall.

    References
    ----------
    Simchi-Levi, D., Schmidt, W., Wei, Y. (2014), Harvard Business Review 92(1-2), 96-101.
    """
    import numpy as np

    short = np.asarray(shortfall, dtype=float)[start:]
    demand = np.asarray(need, dtype=float)[start:]
    hit = short > threshold * np.maximum(demand, 1e-12)
    if not hit.any():
        return 0.0
    last = int(np.where(hit)[0][-1])
    if len(hit) - (last + 1) < settle_months:
        return float("inf")
    return float(last + 1)


def concentration_by_year(production, months: list[str]) -> dict:
    """China's share and HHI of each stage per year, from a production array.

    Parameters
    ----------
    production : ndarray [month, stage, country]
        One run's monthly output.
    months : list of str
        YYYY-MM labels of the month axis.

    Returns
    -------
    dict
        ``{year: {stage_index: {"hhi": x, "shares": ndarray[country]}}}`` (HHI on 0-10,000).
    """
    import numpy as np

    years = sorted({m[:4] for m in months})
    out = {}
    for year in years:
        idx = [i for i, m in enumerate(months) if m.startswith(year)]
        total = np.asarray(production)[idx].sum(axis=0)  # [stage, country]
        out[year] = {}
        for stage in range(total.shape[0]):
            world = total[stage].sum()
            shares = total[stage] / world if world > 0 else np.zeros_like(total[stage])
            out[year][stage] = {"hhi": herfindahl_hirschman(shares), "shares": shares}
    return out


def leverage(data, top: int = 15) -> list[dict]:
    """Damage per tonne withheld, by (product, destination, sector), largest first.

    Parameters
    ----------
    data : xarray.Dataset
        A result with ``held_back`` (t by destination and product), ``units_not_built``,
        ``value_at_risk_usd`` and ``grade_content``.

    Returns
    -------
    list of dict
        ``{product, destination, sector, tonnes_withheld, units_per_t, usd_per_t}``.

    Notes
    -----
    A magnet grade held back from a destination is charged with the damage (units not built,
    their value) of that destination's sectors that use the grade; a refined element with the
    damage of the sectors whose grade contains it. Damage per tonne is that damage over the
    tonnes of the product withheld (median run, whole horizon). It ranks what others cannot do
    without; it is an attribution, not a counterfactual run per product.
    """
    import numpy as np

    held = data["held_back"].median("run").sum("month")
    units = data["units_not_built"].median("run").sum("month")
    value = data["value_at_risk_usd"].median("run").sum("month")
    content = data["grade_content"]
    grades = [str(g) for g in content["grade"].values]
    sector_grade = data.attrs.get("sector_grade")
    if sector_grade is None:
        return []
    sector_grade = json.loads(sector_grade) if isinstance(sector_grade, str) else sector_grade
    rows = []
    for product in held["product"].values:
        product = str(product)
        if product in grades:
            uses = {s for s, g in sector_grade.items() if g == product}
        else:
            using = {g for g in grades if float(content.sel(grade=g, element=product)) > 0}
            uses = {s for s, g in sector_grade.items() if g in using}
        if not uses:
            continue
        for dest in held["country"].values:
            tonnes = float(held.sel(product=product, country=dest))
            if tonnes <= 1e-6:
                continue
            for sector in uses:
                u = float(units.sel(country=dest, sector=sector))
                v = float(value.sel(country=dest, sector=sector))
                if u <= 0:
                    continue
                rows.append({"product": product, "destination": str(dest), "sector": sector,
                             "tonnes_withheld": tonnes, "units_per_t": u / tonnes,
                             "usd_per_t": v / tonnes if np.isfinite(v) else None})
    rows.sort(key=lambda r: (r["usd_per_t"] or 0, r["units_per_t"]), reverse=True)
    return rows[:top]
