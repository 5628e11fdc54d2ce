"""The supply-chain overview: world output, leading countries and concentration at each stage.

Everything here is computed from the dataset tables, so a user's own copy of the data gives their
own overview.
"""

from __future__ import annotations

import math

import pandas as pd

from rareflow.data import Dataset
from rareflow.data.consistency import latest_edition
from rareflow.dims import CHINA, STAGES, WORLD
from rareflow.metrics import herfindahl_hirschman

#: The unit in which each downstream stage is compared across countries.
STAGE_UNITS = {"mining": "t REO", "separation": "t REO", "metal": "t metal", "magnet": "t magnet"}


def _stage_rows(dataset: Dataset, stage: str, year: int) -> tuple[pd.DataFrame, int | None, str]:
    """Country rows with values for a stage, the year they are for and their edition."""
    if stage == "mining":
        rows = latest_edition(dataset.mine_production, year)
        edition = str(rows["edition"].iloc[0]) if len(rows) else ""
        return rows, (year if len(rows) else None), edition
    frame = dataset.stage_output
    frame = frame[(frame["stage"] == stage) & (frame["year"] <= year)]
    valued = frame[(frame["unit"] == STAGE_UNITS[stage]) & frame["value"].notna()]
    if valued.empty:
        # Only shares are published for this stage: report them, with no world tonnage.
        shared = frame[frame["share"].notna()]
        if shared.empty:
            return shared, None, ""
        data_year = int(shared["year"].max())
        rows = shared[shared["year"] == data_year].copy()
        rows["value"] = rows["share"]
        return rows, data_year, "shares-only"
    data_year = int(valued["year"].max())
    return valued[valued["year"] == data_year], data_year, ""


def stage_overview(dataset: Dataset, stage: str, year: int = 2024) -> dict:
    """World output, shares by country, China's share and HHI for one stage.

    Shares are each country's value over the sum of the country rows (``ROW`` counted as one), so
    they add up to one; ``world_t`` is the published world total where the table has a ``WLD`` row,
    else that sum.
    """
    rows, data_year, edition = _stage_rows(dataset, stage, year)
    parts = rows[rows["country"] != WORLD]
    world_rows = rows[rows["country"] == WORLD]
    total = float(parts["value"].sum()) if len(parts) else 0.0
    if total <= 0:
        return {"year": data_year, "world_t": None, "unit": STAGE_UNITS[stage], "shares": {},
                "top3": [], "china_share": None, "hhi": None, "sources": []}
    shares_only = edition == "shares-only"
    published = float(world_rows["value"].iloc[0]) if len(world_rows) else math.nan
    shares = (parts.groupby("country")["value"].sum() / total).sort_values(ascending=False)
    shares = shares[shares > 0]
    sources = sorted({s for ids in rows["source_id"] for s in ids})
    result = {
        "year": data_year,
        "world_t": None if shares_only else (published if not math.isnan(published) else total),
        "unit": STAGE_UNITS[stage],
        "shares": {c: round(float(s), 4) for c, s in shares.items()},
        "top3": [[c, round(float(s), 4)] for c, s in shares.head(3).items()],
        "china_share": round(float(shares.get(CHINA, 0.0)), 4),
        "hhi": round(herfindahl_hirschman(shares.values), 1),
        "sources": sources,
    }
    if shares_only:
        result["note"] = "only shares are published for this stage; no world tonnage"
    elif edition:
        result["edition"] = edition
    return result


def supply_overview(dataset: Dataset, year: int = 2024) -> dict:
    """The overview of every stage, in the JSON shape ``rareflow overview --json`` prints."""
    return {
        "year": year,
        "hhi_scale": "0-10000",
        "stages": {stage: stage_overview(dataset, stage, year) for stage in STAGES},
    }
