"""Input tables of the responses model (issue 5): shipped rows, and each rule on a broken copy."""

from __future__ import annotations

import math

import pytest

from dataset_problems import only, problems_of
from rareflow import check_dataset, load_dataset
from rareflow.data import TABLE_ORDER
from rareflow.data.schema import RESPONSE_TABLES

#: Parameters the responses model reads by name (docs/model.md, "Responses").
REQUIRED_PARAMETERS = (
    "price_elasticity_long_run",
    "demand_adjustment_months",
    "recycling_collection_price_elasticity",
    "capacity_investment_price_ratio",
    "capacity_rampup_months_mining",
    "capacity_rampup_months_separation",
    "capacity_rampup_months_magnet",
    "price_floor_ndpr_usd_per_kg",
    "mp_10x_magnet_offtake_t_per_year",
    "eu_crma_extraction_share",
    "eu_crma_processing_share",
    "eu_crma_recycling_share",
    "eu_crma_max_single_country_share",
)




def test_response_tables_are_registered_and_valid():
    dataset, problems = check_dataset()
    errors = [p for p in problems if p.severity == "error"]
    assert errors == [], "\n".join(map(str, errors))
    for table in RESPONSE_TABLES:
        assert table in TABLE_ORDER
        assert len(dataset[table]) > 0, table


def test_model_parameters_present_with_values():
    params = load_dataset().response_parameters.set_index("parameter")
    for name in REQUIRED_PARAMETERS:
        assert name in params.index, name
        assert not math.isnan(params.loc[name, "value"]), name
    assert params.loc["price_floor_ndpr_usd_per_kg", "value"] == 110
    assert params.loc["eu_crma_processing_share", "value"] == pytest.approx(0.40)
    assert params.loc["eu_crma_max_single_country_share", "value"] == pytest.approx(0.65)


def test_every_number_has_a_source_or_a_stated_estimate():
    dataset = load_dataset()
    for table in RESPONSE_TABLES:
        frame = dataset[table]
        numeric = [
            c for c in frame.columns
            if c not in ("_line", "year") and frame[c].dtype == float
        ]
        for _, row in frame.iterrows():
            if all(math.isnan(row[c]) for c in numeric):
                continue
            if row["source_id"]:
                continue
            assert bool(row["estimate"]) and row["note"], (table, row["_line"])


def test_lead_times_have_a_default_for_each_built_stage():
    lead = load_dataset().lead_times
    for stage in ("mining", "separation", "magnet"):
        assert ((lead["stage"] == stage) & (lead["country"] == "*")).sum() == 1, stage


def test_negative_stockpile_quantity_is_named(edit_table):
    def change(header, rows):
        rows[0]["quantity_t"] = "-300"

    hit = only(problems_of(edit_table("stockpiles", change)), "min")
    assert hit and hit[0].table == "stockpiles" and hit[0].row == 2
    assert hit[0].column == "quantity_t" and hit[0].value == "-300.0"


def test_release_share_above_one_is_rejected(edit_table):
    def change(header, rows):
        rows[0]["max_release_share_per_month"] = "1.5"

    hit = only(problems_of(edit_table("stockpiles", change)), "max")
    assert hit and hit[0].column == "max_release_share_per_month" and hit[0].value == "1.5"


def test_number_without_source_or_estimate_is_an_error(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["parameter"] == "price_floor_ndpr_usd_per_kg")
        row["source_id"] = ""
        row["estimate"] = "false"

    hit = only(problems_of(edit_table("response_parameters", change)), "numeric-row-sourced")
    assert hit and hit[0].table == "response_parameters" and hit[0].column == "source_id"
    assert "value=110" in hit[0].message


def test_estimate_without_method_is_an_error(edit_table):
    def change(header, rows):
        rows[0]["note"] = ""

    hit = only(problems_of(edit_table("response_parameters", change)), "estimate-needs-method")
    assert hit and hit[0].row == 2


def test_value_outside_its_range(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["parameter"] == "capacity_investment_price_ratio")
        row["value"] = "2.0"

    hit = only(problems_of(edit_table("response_parameters", change)), "within-range")
    assert hit and hit[0].column == "value" and hit[0].value == "2"


def test_share_parameter_above_one(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["parameter"] == "eu_crma_recycling_share")
        row["value"] = "25"

    hit = only(problems_of(edit_table("response_parameters", change)), "share-in-unit-interval")
    assert hit and hit[0].value == "25" and "eu_crma_recycling_share" in hit[0].message


def test_permitting_low_above_high(edit_table):
    def change(header, rows):
        rows[0]["permitting_years_low"] = "5"
        rows[0]["permitting_years_high"] = "2"

    hit = only(problems_of(edit_table("lead_times", change)), "within-range")
    assert hit and hit[0].column == "permitting_years_low" and hit[0].row == 2


def test_duplicate_stage_country_lead_time(edit_table):
    def change(header, rows):
        rows.append(dict(rows[0]))

    hit = only(problems_of(edit_table("lead_times", change)), "unique")
    assert hit and hit[0].table == "lead_times" and "duplicate line 2" in hit[0].message


def test_missing_generic_lead_time(edit_table):
    def change(header, rows):
        rows[:] = [r for r in rows if not (r["stage"] == "magnet" and r["country"] == "*")]

    hit = only(problems_of(edit_table("lead_times", change)), "lead-time-default")
    assert hit and "magnet" in hit[0].message


def test_unknown_lead_time_country(edit_table):
    def change(header, rows):
        rows[0]["country"] = "XYZ"

    hit = only(problems_of(edit_table("lead_times", change)), "ref:countries.iso3")
    assert hit and hit[0].value == "XYZ" and "(or one of *, EU)" in hit[0].message


def test_weibull_lifetime_needs_shape(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["sector"] == "ev_traction")
        row["distribution"] = "weibull"

    hit = only(problems_of(edit_table("product_lifetimes", change)), "weibull-has-shape")
    assert hit and hit[0].column == "shape" and "ev_traction" in hit[0].message


def test_unknown_deposit_type_in_residues(edit_table):
    def change(header, rows):
        rows[0]["deposit_type"] = "moon_regolith"

    hit = only(problems_of(edit_table("residues", change)), "ref:deposit_types.code")
    assert hit and hit[0].value == "moon_regolith"


def test_cost_without_basis(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["cost_usd_per_kg"])
        row["cost_basis"] = ""

    hit = only(problems_of(edit_table("supply_costs", change)), "cost-has-basis")
    assert hit and hit[0].column == "cost_basis"


def test_substitution_target_must_be_element_or_magnet(edit_table):
    def change(header, rows):
        rows[0]["target"] = "Xx"

    hit = only(problems_of(edit_table("substitution_options", change)), "ref:elements.symbol")
    assert hit and hit[0].column == "target" and hit[0].value == "Xx"


def test_price_floor_disagreeing_with_prices_warns(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["parameter"] == "price_floor_ndpr_usd_per_kg")
        row["value"] = "95"

    hit = only(
        problems_of(edit_table("response_parameters", change), "warning"),
        "price-floor-matches-prices",
    )
    assert hit and hit[0].value == "95" and "110" in hit[0].message


def test_offtake_above_mp_capacity_warns(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["parameter"] == "mp_10x_magnet_offtake_t_per_year")
        row["value"] = "20000"
        row["high"] = "20000"

    hit = only(
        problems_of(edit_table("response_parameters", change), "warning"),
        "offtake-within-capacity",
    )
    assert hit and hit[0].value == "20000" and "10000" in hit[0].message


def test_stockpile_element_must_be_in_item(edit_table):
    def change(header, rows):
        row = next(r for r in rows if r["holder_id"] == "US_NDS_SMCO")
        row["element"] = "Dy"

    hit = only(problems_of(edit_table("stockpiles", change)), "stockpile-element-in-item")
    assert hit and hit[0].value == "Dy" and "SmCo" in hit[0].message
