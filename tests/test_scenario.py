"""Scenario files: what is accepted, and errors that name the field and the value."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from rareflow import ScenarioError, load_dataset, load_scenario
from rareflow.cli import app
from rareflow.scenario import builtin_names, check_scenario, scenario_from_dict


@pytest.fixture(scope="module")
def dataset():
    return load_dataset()


def test_builtin_library_has_baseline_and_two_shocks():
    names = builtin_names()
    assert {"baseline", "mountain-pass-outage", "myanmar-halt"} <= set(names)


@pytest.mark.parametrize("name", builtin_names())
def test_every_builtin_is_valid_against_the_dataset(name, dataset):
    assert check_scenario(load_scenario(name), dataset) == []


def test_unknown_key_is_refused():
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({"name": "x", "evnets": []})
    assert any(e.startswith("evnets") for e in info.value.errors)


def test_wrong_type_names_the_field_and_value():
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({"name": "x", "events": [
            {"type": "demand_shock", "sector": "ev_traction", "start": "2025-01", "factor": "big"}
        ]})
    assert any("events[0].factor" in e and "'big'" in e for e in info.value.errors)


def test_bad_month_is_refused():
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({"name": "x", "start": "2024-13"})
    assert any("start" in e and "YYYY-MM" in e for e in info.value.errors)


def test_unknown_codes_and_dates_outside_horizon(dataset):
    sc = scenario_from_dict({"name": "x", "end": "2026-12", "events": [
        {"type": "trade_restriction", "exporter": "XXX", "items": ["Unobtainium"],
         "start": "2025-01"},
        {"type": "demand_shock", "sector": "teleporters", "country": "CHN", "start": "2031-01",
         "factor": 2},
        {"type": "facility_outage", "facility": "nowhere_mine", "start": "2025-01"},
    ]})
    errors = check_scenario(sc, dataset)
    assert "events[0].exporter (value 'XXX'): not a country code in the dataset" in errors
    assert "events[0].items[0] (value 'Unobtainium'): not an item code in the dataset" in errors
    assert any(e.startswith("events[1].sector (value 'teleporters')") for e in errors)
    assert any(e.startswith("events[1].start (value '2031-01'): outside the horizon")
               for e in errors)
    assert any(e.startswith("events[2].facility (value 'nowhere_mine')") for e in errors)


def test_cli_rejects_bad_scenario_file_with_exit_two(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nevents:\n  - type: facility_outage\n    facility: nope\n"
                    "    start: 2025-01\n")
    result = CliRunner().invoke(app, ["run", str(path), "--json"])
    assert result.exit_code == 2
    assert "events[0].facility (value 'nope')" in result.stderr
    assert result.stdout == ""


def test_cli_unknown_scenario_name():
    result = CliRunner().invoke(app, ["run", "no-such-scenario"])
    assert result.exit_code == 2
    assert "no-such-scenario" in result.stderr and "baseline" in result.stderr


def test_cli_scenarios_show():
    result = CliRunner().invoke(app, ["scenarios", "show", "myanmar-halt"])
    assert result.exit_code == 0 and "trade_restriction" in result.stdout
