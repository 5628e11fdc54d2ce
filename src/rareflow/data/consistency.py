"""Cross-table checks: the arithmetic that ties the tables together.

Gathered in one module (as PyPSA's ``consistency.py`` does) so that every rule and its message
can be read in one place. Each check returns :class:`Problem` items that name the table, the
line, the value and what it should be.
"""

from __future__ import annotations

import math

import pandas as pd

from rareflow.data.problems import Problem
from rareflow.data.schema import RESPONSE_TABLES
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


#: Stages the responses model builds capacity for; each needs a generic (``*``) lead-time row.
LEAD_TIME_STAGES = ("mining", "separation", "magnet")
#: Tolerance when comparing an offtake with the capacity of the facilities that supply it.
OFFTAKE_TOLERANCE = 0.02
#: (table, central column, low column, high column) ranges that must be ordered low <= mid <= high.
_RANGES = (
    ("intensities", "kg_per_unit", "low", "high"),
    ("response_parameters", "value", "low", "high"),
    ("supply_costs", "cost_usd_per_kg", "cost_low", "cost_high"),
    ("substitution_options", "reduction_share", "reduction_share_low", "reduction_share_high"),
    ("lead_times", None, "permitting_years_low", "permitting_years_high"),
    ("lead_times", None, "construction_years_low", "construction_years_high"),
    ("lead_times", "total_years_mean", "total_years_low", "total_years_high"),
)


def _numeric_columns(frame: pd.DataFrame) -> list[str]:
    return [
        c for c in frame.columns
        if c not in ("_line", "year") and pd.api.types.is_numeric_dtype(frame[c])
        and not pd.api.types.is_bool_dtype(frame[c])
    ]


def check_response_rows_sourced(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """A row of a response table that holds a number cites a source or is a stated estimate."""
    problems: list[Problem] = []
    for table in RESPONSE_TABLES:
        frame = tables.get(table)
        if frame is None or frame.empty:
            continue
        numeric = _numeric_columns(frame)
        for _, row in frame.iterrows():
            filled = [c for c in numeric if not is_blank(row[c])]
            if not filled:
                continue
            sourced = bool(row["source_id"]) if isinstance(row["source_id"], list) else False
            estimate = row["estimate"] is not pd.NA and bool(row["estimate"])
            if not sourced and not estimate:
                problems.append(
                    Problem(
                        table, int(row["_line"]), "source_id", "", "numeric-row-sourced",
                        f"row holds a number ({filled[0]}={row[filled[0]]:g}) but cites no source "
                        "and is not marked estimate=true with its method in the note",
                    )
                )
    return problems


def check_ranges(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Low <= central <= high wherever a table gives a range (intensities, response inputs)."""
    problems: list[Problem] = []
    for table, mid_col, low_col, high_col in _RANGES:
        frame = tables.get(table)
        if frame is None or frame.empty:
            continue
        for _, row in frame.iterrows():
            low, high = row[low_col], row[high_col]
            mid = row[mid_col] if mid_col else math.nan
            line = int(row["_line"])
            if not math.isnan(low) and not math.isnan(high) and low > high:
                problems.append(
                    Problem(
                        table, line, low_col, f"{low:g}", "within-range",
                        f"{low_col} {low:g} is above {high_col} {high:g}",
                    )
                )
            if math.isnan(mid):
                continue
            if not math.isnan(low) and mid < low or not math.isnan(high) and mid > high:
                problems.append(
                    Problem(
                        table, line, mid_col, f"{mid:g}", "within-range",
                        f"{mid_col} {mid:g} lies outside its range "
                        f"[{low:g}, {high:g}] ({low_col}, {high_col})",
                    )
                )
    return problems


def check_response_parameters(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Shares are fractions; the NdPr price floor agrees with the floor row of prices.csv."""
    problems: list[Problem] = []
    frame = tables["response_parameters"]
    for _, row in frame.iterrows():
        if not str(row["parameter"]).endswith("_share"):
            continue
        for column in ("value", "low", "high"):
            value = row[column]
            if not math.isnan(value) and not 0 <= value <= 1:
                problems.append(
                    Problem(
                        "response_parameters", int(row["_line"]), column, f"{value:g}",
                        "share-in-unit-interval",
                        f"parameter '{row['parameter']}' is a share and must lie in [0, 1]",
                    )
                )
    floor = frame[frame["parameter"] == "price_floor_ndpr_usd_per_kg"]
    prices = tables["prices"]
    floor_prices = prices[
        (prices["item"] == "NdPr_oxide") & (prices["basis"].astype(str) == "price floor")
    ]
    if len(floor) and len(floor_prices) and not math.isnan(floor["value"].iloc[0]):
        value = float(floor["value"].iloc[0])
        listed = sorted({float(v) for v in floor_prices["usd_per_kg"] if not math.isnan(v)})
        if listed and value not in listed:
            problems.append(
                Problem(
                    "response_parameters", _first_line(floor), "value", f"{value:g}",
                    "price-floor-matches-prices",
                    f"NdPr price floor {value:g} US$/kg differs from the price-floor row of "
                    f"prices.csv ({', '.join(f'{v:g}' for v in listed)})",
                    severity="warning",
                )
            )
    offtake = frame[frame["parameter"] == "mp_10x_magnet_offtake_t_per_year"]
    if len(offtake) and not math.isnan(offtake["value"].iloc[0]):
        facilities = tables["facilities"]
        mp = facilities[
            (facilities["owner"] == "MP Materials")
            & (facilities["stage"] == "magnet")
            & (facilities["capacity_unit"] == "t magnet/yr")
        ]
        capacity = float(mp["capacity"].sum(min_count=1)) if len(mp) else math.nan
        value = float(offtake["value"].iloc[0])
        if not math.isnan(capacity) and value > capacity * (1 + OFFTAKE_TOLERANCE):
            problems.append(
                Problem(
                    "response_parameters", _first_line(offtake), "value", f"{value:g}",
                    "offtake-within-capacity",
                    f"MP 10X offtake {value:g} t/yr exceeds the {capacity:g} t magnet/yr of MP "
                    "Materials' magnet facilities in facilities.csv",
                    severity="warning",
                )
            )
    return problems


def check_lead_times(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """One row per stage and country, and a generic ``*`` row for every stage the model builds."""
    problems: list[Problem] = []
    frame = tables["lead_times"]
    seen: dict[tuple[str, str], int] = {}
    for _, row in frame.iterrows():
        key = (row["stage"], row["country"])
        line = int(row["_line"])
        if key in seen:
            problems.append(
                Problem(
                    "lead_times", line, "country", str(row["country"]), "unique",
                    f"stage '{key[0]}' and country '{key[1]}' duplicate line {seen[key]}",
                )
            )
        seen.setdefault(key, line)
    for stage in LEAD_TIME_STAGES:
        if (stage, "*") not in seen:
            problems.append(
                Problem(
                    "lead_times", None, "country", "*", "lead-time-default",
                    f"stage '{stage}' has no generic row (country '*') for countries "
                    "without their own lead times",
                )
            )
    return problems


def check_response_details(tables: dict[str, pd.DataFrame]) -> list[Problem]:
    """Rules within single response tables that the schema syntax cannot express."""
    problems: list[Problem] = []
    for _, row in tables["product_lifetimes"].iterrows():
        if (
            row["distribution"] == "weibull"
            and not math.isnan(row["mean_years"])
            and math.isnan(row["shape"])
        ):
            problems.append(
                Problem(
                    "product_lifetimes", int(row["_line"]), "shape", "", "weibull-has-shape",
                    f"sector '{row['sector']}' has a Weibull lifetime with a mean but no shape",
                )
            )
    for _, row in tables["supply_costs"].iterrows():
        if math.isnan(row["cost_usd_per_kg"]):
            continue
        for column in ("cost_basis", "cost_kind"):
            if is_blank(row[column]):
                problems.append(
                    Problem(
                        "supply_costs", int(row["_line"]), column, "", "cost-has-basis",
                        f"a cost of {row['cost_usd_per_kg']:g} US$/kg needs its {column}",
                    )
                )
    items = tables["items"]
    contents = dict(zip(items["code"], items["elements"], strict=True))
    for _, row in tables["stockpiles"].iterrows():
        element, item = row["element"], row["item"]
        if is_blank(element) or is_blank(item) or item not in contents:
            continue
        if element not in contents[item]:
            problems.append(
                Problem(
                    "stockpiles", int(row["_line"]), "element", str(element),
                    "stockpile-element-in-item",
                    f"element {element} is not contained in item {item} "
                    f"({';'.join(contents[item])})",
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
    problems += check_response_rows_sourced(tables)
    problems += check_response_parameters(tables)
    problems += check_lead_times(tables)
    problems += check_response_details(tables)
    problems += check_sources_used(tables)
    return problems
