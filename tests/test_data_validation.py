"""Each validation rule, against a deliberately broken copy of the shipped data."""

from __future__ import annotations

import math

import pytest

from dataset_problems import only, problems_of
from rareflow import DatasetError, check_dataset, load_dataset
from rareflow.data import TABLE_ORDER, load_schema


def test_shipped_dataset_is_valid():
    dataset, problems = check_dataset()
    errors = [p for p in problems if p.severity == "error"]
    assert errors == [], "\n".join(map(str, errors))
    assert set(dataset.table_names) == set(TABLE_ORDER)


def test_every_table_has_rows_and_schema_columns():
    dataset = load_dataset()
    for table in TABLE_ORDER:
        frame = dataset[table]
        assert len(frame) > 0, table
        assert [c for c in frame.columns if c != "_line"] == load_schema(table).column_names


def test_typed_columns():
    dataset = load_dataset()
    assert dataset.mine_production["value"].dtype == float
    assert dataset.elements["atomic_number"].dtype.name == "Int64"
    assert all(isinstance(v, list) for v in dataset.mine_production["source_id"])


def test_seventeen_rare_earths():
    elements = load_dataset().elements
    assert len(elements) == 17
    assert set(elements["atomic_number"]) == {21, 39, *range(57, 72)}


def test_unknown_country_is_named(edit_table):
    def change(header, rows):
        rows[0]["country"] = "XXX"

    errors = problems_of(edit_table("mine_production", change))
    hit = only(errors, "ref:countries.iso3")
    assert hit and hit[0].table == "mine_production" and hit[0].row == 2
    assert hit[0].column == "country" and hit[0].value == "XXX"


def test_unknown_element_in_list_column(edit_table):
    def change(header, rows):
        rows[0]["elements"] = "Nd;Xx"

    errors = problems_of(edit_table("items", change))
    assert [p.value for p in only(errors, "ref:elements.symbol")] == ["Xx"]


def test_negative_capacity(edit_table):
    def change(header, rows):
        rows[0]["capacity"] = "-5"

    errors = problems_of(edit_table("facilities", change))
    hit = only(errors, "min")
    assert hit and hit[0].column == "capacity" and hit[0].value == "-5.0"


def test_unknown_unit(edit_table):
    def change(header, rows):
        rows[0]["capacity_unit"] = "kg/day"

    errors = problems_of(edit_table("facilities", change))
    hit = only(errors, "allowed")
    assert hit and hit[0].value == "kg/day" and "must be one of" in hit[0].message


def test_number_with_separator_is_a_type_error(edit_table):
    def change(header, rows):
        rows[0]["value"] = "270,000"

    errors = problems_of(edit_table("mine_production", change))
    hit = only(errors, "type:float")
    assert hit and hit[0].value == "270,000"


def test_missing_source_id(edit_table):
    def change(header, rows):
        rows[0]["source_id"] = ""

    errors = problems_of(edit_table("prices", change))
    hit = only(errors, "required")
    assert hit and hit[0].column == "source_id" and hit[0].row == 2


def test_dangling_source_id(edit_table):
    def change(header, rows):
        rows[0]["source_id"] = "no_such_source"

    errors = problems_of(edit_table("prices", change))
    hit = only(errors, "ref:sources.source_id")
    assert hit and hit[0].value == "no_such_source"


def test_duplicate_key(edit_table):
    def change(header, rows):
        rows.append(dict(rows[0]))

    errors = problems_of(edit_table("elements", change))
    hit = only(errors, "unique")
    assert hit and hit[0].column == "symbol" and "duplicate of line 2" in hit[0].message


def test_estimate_without_method(edit_table):
    def change(header, rows):
        rows[0]["estimate"] = "true"
        rows[0]["note"] = ""

    errors = problems_of(edit_table("mine_production", change))
    assert only(errors, "estimate-needs-method")


def test_unknown_and_missing_columns(edit_table):
    def change(header, rows):
        header.append("colour")
        header.remove("name")
        for row in rows:
            row["colour"] = "red"
            del row["name"]

    errors = problems_of(edit_table("sectors", change))
    assert [p.column for p in only(errors, "unknown-column")] == ["colour"]
    assert [p.column for p in only(errors, "missing-column")] == ["name"]


def test_magnet_grade_must_sum_to_one(edit_table):
    def change(header, rows):
        rows[0]["mass_fraction"] = str(float(rows[0]["mass_fraction"]) + 0.1)

    errors = problems_of(edit_table("magnet_grades", change))
    hit = only(errors, "composition-sums-to-one")
    assert hit and hit[0].table == "magnet_grades"


def test_country_rows_must_reconcile_with_world_total(edit_table):
    def change(header, rows):
        for row in rows:
            if row["country"] == "CHN":
                row["value"] = str(float(row["value"]) * 1.2)

    errors = problems_of(edit_table("mine_production", change))
    hit = only(errors, "total-reconciles")
    assert hit and all("WLD" in p.message for p in hit)


def test_all_errors_are_reported_not_only_the_first(edit_table):
    def change(header, rows):
        rows[0]["country"] = "XXX"
        rows[1]["value"] = "lots"

    errors = problems_of(edit_table("mine_production", change))
    rules = {p.rule for p in errors}
    assert {"ref:countries.iso3", "type:float"} <= rules


def test_load_dataset_raises_with_every_problem(edit_table):
    def change(header, rows):
        rows[0]["country"] = "XXX"

    with pytest.raises(DatasetError) as info:
        load_dataset(edit_table("mine_production", change))
    assert any(p.value == "XXX" for p in info.value.problems)
    assert "mine_production line 2" in str(info.value)


def test_partial_override_uses_builtin_for_the_rest(tmp_path, data_copy):
    only_prices = tmp_path / "mine"
    only_prices.mkdir()
    (only_prices / "prices.csv").write_bytes((data_copy / "prices.csv").read_bytes())
    dataset, problems = check_dataset(only_prices)
    assert not [p for p in problems if p.severity == "error"]
    assert dataset.origin["prices"].endswith("prices.csv")
    assert dataset.origin["elements"] == "built-in"


def test_oxide_to_metal_factor_from_atomic_weights():
    # Nd2O3: 2*144.242 / (2*144.242 + 3*15.999) = 0.8573 (hand computed)
    elements = load_dataset().elements.set_index("symbol")
    assert math.isclose(elements.loc["Nd", "oxide_to_metal"], 0.8573, abs_tol=5e-4)
