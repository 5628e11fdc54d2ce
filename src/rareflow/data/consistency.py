"""Cross-table checks: the arithmetic that ties the tables together.

Gathered in one module (as PyPSA's ``consistency.py`` does) so that every rule and its message
can be read in one place. Each check returns :class:`Problem` items that name the table, the
line, the value and what it should be.
"""

from __future__ import annotations

import math

import pandas as pd

from rareflow.data.problems import Problem
from rareflow.data.validation import is_blank
from rareflow.dims import WORLD

#: Tolerance of country sums against published world totals (USGS rounds world totals).
TOTAL_TOLERANCE = 0.02
#: Tolerance of compositions that must sum to one (rounding in published tables).
COMPOSITION_TOLERANCE = 0.02
MAGNET_GRADE_TOLERANCE = 0.005
#: Production above this multiple of listed operating capacity is flagged.
CAPACITY_SLACK = 1.05

#: Facility capacity units whose stage totals can be compared with published output.
_CAPACITY_UNIT_FOR_OUTPUT = {
    "mining": ("t REO/yr", "t REO"),
    "magnet": ("t magnet/yr", "t magnet"),
}


def _first_line(frame: pd.DataFrame) -> int | None:
    return int(frame["_line"].iloc[0]) if len(frame) else None


def check_totals(
    table: str, frame: pd.DataFrame, keys: list[str], part_column: str, label: str
) -> list[Problem]:
    """Rows whose ``part_column`` is WLD are totals; the other rows of the same key must add up.

    Only groups where every part has a value are checked: a share-only row leaves the sum open.
    """
    problems: list[Problem] = []
    if frame.empty:
        return problems
    for key, group in frame.groupby(keys, dropna=False):
        world = group[group[part_column] == WORLD]
        parts = group[group[part_column] != WORLD]
        if world.empty or parts.empty or world["value"].isna().all():
            continue
        if parts["value"].isna().any():
            continue
        total = float(world["value"].iloc[0])
        summed = float(parts["value"].sum())
        if total == 0:
            continue
        rel = abs(summed - total) / total
        if rel > TOTAL_TOLERANCE:
            key_text = ", ".join(f"{k}={v}" for k, v in zip(keys, key, strict=True))
            problems.append(
                Problem(
                    table, _first_line(world), "value", f"{total:g}", "total-reconciles",
                    f"{label} ({key_text}) sum to {summed:g}, {rel:.1%} off the {WORLD} row "
                    f"{total:g}; allowed {TOTAL_TOLERANCE:.0%}",
                )
            )
    return problems


def check_compositions(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Deposit element splits and magnet compositions must each sum to one."""
    problems: list[Problem] = []
    comp = tables["deposit_composition"]
    complete = {}
    if "distribution_complete" in tables["deposit_types"].columns:
        types = tables["deposit_types"]
        complete = dict(zip(types["code"], types["distribution_complete"], strict=True))
    for deposit, group in comp.groupby("deposit_type"):
        total = float(group["share"].sum())
        is_complete = bool(complete.get(deposit, True))
        too_high = total > 1 + COMPOSITION_TOLERANCE
        too_low = is_complete and total < 1 - COMPOSITION_TOLERANCE
        if too_high or too_low:
            problems.append(
                Problem(
                    "deposit_composition", _first_line(group), "share", f"{total:.4f}",
                    "composition-sums-to-one",
                    f"shares of deposit type '{deposit}' sum to {total:.4f}; must be 1 "
                    f"within {COMPOSITION_TOLERANCE} (mark the deposit type "
                    "distribution_complete=false if the source gives only part of the split)",
                )
            )
    grades = tables["magnet_grades"]
    for grade, group in grades.groupby("grade"):
        total = float(group["mass_fraction"].sum())
        if abs(total - 1) > MAGNET_GRADE_TOLERANCE:
            problems.append(
                Problem(
                    "magnet_grades", _first_line(group), "mass_fraction", f"{total:.4f}",
                    "composition-sums-to-one",
                    f"components of grade '{grade}' sum to {total:.4f}; must be 1 "
                    f"within {MAGNET_GRADE_TOLERANCE}",
                )
            )
    return problems


def latest_edition(frame: pd.DataFrame, year: int) -> pd.DataFrame:
    """Rows for ``year`` from the newest edition that reports it (later editions revise)."""
    rows = frame[frame["year"] == year]
    if rows.empty:
        return rows
    newest = sorted(rows["edition"].unique())[-1]
    return rows[rows["edition"] == newest]


def check_capacity_against_output(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """A country cannot produce more than the facilities listed for it can make.

    Checked only for countries that have at least one operating (or aggregate) facility of the
    stage in the comparable unit, and for the newest year with published output.
    """
    problems: list[Problem] = []
    facilities = tables["facilities"]
    live = facilities[
        facilities["status"].isin(["operating", "ramping", "aggregate"])
        & facilities["within"].map(is_blank)
    ]
    for stage, (cap_unit, out_unit) in _CAPACITY_UNIT_FOR_OUTPUT.items():
        caps = live[(live["stage"] == stage) & (live["capacity_unit"] == cap_unit)]
        caps = caps.groupby("country")["capacity"].sum(min_count=1).dropna()
        if stage == "mining":
            output = tables["mine_production"]
            years = sorted(output["year"].dropna().unique())
            if not years:
                continue
            rows = latest_edition(output, int(years[-1]))
        else:
            output = tables["stage_output"]
            rows = output[(output["stage"] == stage) & (output["unit"] == out_unit)]
            if rows.empty:
                continue
            rows = rows[rows["year"] == rows["year"].max()]
        for _, row in rows.iterrows():
            country = row["country"]
            if country not in caps.index or math.isnan(row["value"]):
                continue
            capacity = float(caps[country])
            if row["value"] > CAPACITY_SLACK * capacity:
                table = "mine_production" if stage == "mining" else "stage_output"
                problems.append(
                    Problem(
                        table, int(row["_line"]), "value", f"{row['value']:g}",
                        "output-within-capacity",
                        f"{country} {stage} output {row['value']:g} {out_unit} in {row['year']} "
                        f"exceeds the {capacity:g} {cap_unit} of its operating facilities "
                        "(facilities.csv): a facility or its capacity is missing",
                        severity="warning",
                    )
                )
    return problems


def check_ranges(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Central intensity values must lie within their stated low-high range."""
    problems: list[Problem] = []
    frame = tables["intensities"]
    for _, row in frame.iterrows():
        low, high, mid = row["low"], row["high"], row["kg_per_unit"]
        if not math.isnan(low) and mid < low or not math.isnan(high) and mid > high:
            problems.append(
                Problem(
                    "intensities", int(row["_line"]), "kg_per_unit", f"{mid:g}", "within-range",
                    f"central value lies outside its range [{low:g}, {high:g}]",
                )
            )
        if not math.isnan(low) and not math.isnan(high) and low > high:
            problems.append(
                Problem(
                    "intensities", int(row["_line"]), "low", f"{low:g}", "within-range",
                    f"low {low:g} is above high {high:g}",
                )
            )
    return problems


def check_sources_used(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """A source nobody cites is probably a typo elsewhere: warn."""
    cited: set[str] = set()
    for name, frame in tables.items():
        if name != "sources" and "source_id" in frame.columns:
            for ids in frame["source_id"]:
                cited.update(ids)
    return [
        Problem(
            "sources", int(row["_line"]), "source_id", row["source_id"], "source-cited",
            "no table cites this source", severity="warning",
        )
        for _, row in tables["sources"].iterrows()
        if row["source_id"] not in cited
    ]


def check_item_links(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Magnet items need a grade and concentrates a deposit type, or the model cannot split them."""
    problems: list[Problem] = []
    for _, row in tables["items"].iterrows():
        if row["form"] == "magnet" and is_blank(row["magnet_grade"]):
            problems.append(
                Problem(
                    "items", int(row["_line"]), "magnet_grade", "", "magnet-has-grade",
                    "a magnet item needs a magnet_grade so its element content is known",
                )
            )
    return problems


def cross_table_checks(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Run every cross-table check."""
    problems: list[Problem] = []
    problems += check_totals(
        "mine_production", tables["mine_production"], ["year", "edition"], "country",
        "country mine outputs",
    )
    problems += check_totals(
        "stage_output", tables["stage_output"], ["stage", "year", "unit"], "country",
        "country outputs",
    )
    problems += check_totals(
        "trade_links", tables["trade_links"], ["stage", "item", "exporter", "year"], "importer",
        "exports by destination",
    )
    problems += check_compositions(tables)
    problems += check_capacity_against_output(tables)
    problems += check_ranges(tables)
    problems += check_item_links(tables)
    problems += check_sources_used(tables)
    return problems
