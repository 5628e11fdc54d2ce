"""Uncertain dataset cells and scenario fields (rareflow.targets) through ensembles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from equivalence import assert_equivalent
from rareflow import load_dataset, load_scenario, simulate, targets
from rareflow.cli import app
from rareflow.data import Dataset
from rareflow.scenario import Scenario, ScenarioError

DATASET = load_dataset()
#: a planned US magnet plant, 10,000 t/yr from 2027 (facilities.csv); planned plants count with
#: settings.include_planned, which the scenarios here set
PLANT = "vulcan_benson"


def _scenario(parameters: list[dict], end: str = "2031-12", **extra) -> Scenario:
    base = load_scenario("baseline").model_dump(mode="json")
    base.update(name="targets-test", end=end, **extra)
    base["settings"]["include_planned"] = True
    base["uncertain"] = {"sampling": "mc", "parameters": parameters}
    return Scenario.model_validate(base)


def _start_year(values: list[float]) -> dict:
    return {"target": f"dataset:facilities.start_year[facility_id={PLANT}]", "dist": "choice",
            "values": values}


# ---- syntax and checks ------------------------------------------------------------------------
def test_targets_parse():
    cell = targets.parse("dataset:facilities.capacity[facility_id=a, country=USA]")
    assert cell == targets.DatasetCell("facilities", "capacity",
                                       (("facility_id", "a"), ("country", "USA")))
    assert targets.parse("dataset:inventories.weeks_of_cover") == targets.DatasetCell(
        "inventories", "weeks_of_cover", ())
    assert targets.parse("scenario:events.0.magnitude") == targets.ScenarioField(
        ("events", 0, "magnitude"))
    assert targets.parse("demand_scale") is None
    for bad, rule in [("dataset:facilities", "must read dataset:TABLE.COLUMN"),
                      ("dataset:facilities.capacity[facility_id]", "must read KEY=VALUE"),
                      ("scenario:", "must read scenario:FIELD"),
                      ("scenario:uncertain.parameters.0.low", "cannot be uncertain")]:
        with pytest.raises(ValueError, match=rule):
            targets.parse(bad)


def test_unknown_targets_are_refused_when_the_scenario_is_read():
    with pytest.raises(ValueError, match="neither a run parameter"):
        _scenario([{"target": "demand_scael", "dist": "uniform", "low": 0.9, "high": 1.1}])


@pytest.mark.parametrize("target, how, message", [
    ("dataset:facilitiez.capacity", "set", "no dataset table 'facilitiez'"),
    ("dataset:facilities.capacty", "set", "table facilities has no column 'capacty'"),
    ("dataset:facilities.owner", "set", "column facilities.owner is str, not a number"),
    ("dataset:facilities.capacity[plant=x]", "set", "no column 'plant' to select rows by"),
    ("dataset:facilities.capacity[facility_id=nowhere]", "set", "no row of facilities matches"),
    ("dataset:facilities.capacity[facility_id=lynas_seadrift_texas]", "scale",
     "a selected cell is empty; 'scale' needs a value"),
    ("scenario:events.0.magnitude", "set", "the scenario has no list entry 0 in events"),
    ("scenario:responses.prices", "set", "responses is empty"),
    ("scenario:description", "set", "not a number"),
    ("demand_scale", "scale", "is a run parameter, set per run"),
])
def test_target_checks_name_the_field_the_value_and_the_rule(target, how, message):
    sc = _scenario([{"target": target, "dist": "uniform", "low": 0.5, "high": 1.5, "how": how}])
    with pytest.raises(ScenarioError) as err:
        simulate(DATASET, sc, runs=2)
    text = str(err.value)
    assert "uncertain.parameters[0]" in text and repr(target) in text and message in text


def test_values_outside_the_schema_stop_the_ensemble_before_it_runs():
    # capacity has min:0 in data/schema/facilities.csv; a normal around 0 goes below it
    sc = _scenario([{"target": f"dataset:facilities.capacity[facility_id={PLANT}]",
                     "dist": "normal", "mean": 0.0, "sd": 1000.0}])
    ticks = []
    with pytest.raises(ScenarioError, match=r"facilities.capacity would be -[0-9.]+; the schema "
                                            r"wants it >= 0"):
        simulate(DATASET, sc, runs=20, seed=1, progress=lambda done, total: ticks.append(done))
    assert ticks == []  # no month of any run was simulated


def test_values_that_fail_only_together_stop_the_ensemble_before_it_runs():
    # a fraction set to 1.0 and then scaled by 1.5 breaks its bound (<= 1); each alone is fine
    sc = _outage([{"target": "scenario:events.0.fraction", "dist": "choice",
                   "values": [0.5, 1.0]},
                  {"target": "scenario:events.0.fraction", "name": "fraction_scale",
                   "dist": "choice", "values": [1.0, 1.5], "how": "scale"}])
    ticks = []
    with pytest.raises(ScenarioError) as err:
        simulate(DATASET, sc, runs=16, seed=1, progress=lambda done, total: ticks.append(done))
    text = " ".join(str(err.value).split())
    assert "uncertain.parameters[1] (fraction_scale, value 1.5)" in text
    assert "less than or equal to 1" in text
    assert ticks == []


def test_the_scenarios_own_checks_apply_to_changed_fields():
    # april-2025 writes an extra licence regime inline; its approval share must lie in [0, 1]
    sc = _inline_regime([{"target": "scenario:policies.extra_regimes.0.approval_share",
                          "dist": "uniform", "low": 0.5, "high": 3.0}])
    with pytest.raises(ScenarioError, match=r"approval_share.*must be a number between 0 and 1"):
        simulate(DATASET, sc, runs=4, seed=1)


def test_a_refusal_in_a_worker_process_is_a_clean_error(tmp_path):
    # moving a plant's start year to the base year drops it from the pipeline and its country
    # (Estonia) from the model: found only when the run is compiled, in a worker process
    sc = _scenario([{"target": "dataset:facilities.start_year[facility_id=neo_narva_magnets]",
                     "dist": "choice", "values": [2026, 2024]}], end="2024-06")
    with pytest.raises(ScenarioError, match=r"change the model's countries \(17 -> 16\)"):
        simulate(DATASET, sc, runs=8, seed=1, workers=2)
    path = tmp_path / "sc.yaml"
    path.write_text(json.dumps(sc.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["run", str(path), "--runs", "8", "--json"])
    assert res.exit_code == 2
    assert "change the model's countries" in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_cli_reports_a_bad_target_with_exit_code_2(tmp_path):
    sc = _scenario([{"target": "dataset:facilities.capacity[facility_id=nowhere]",
                     "dist": "uniform", "low": 0, "high": 1}])
    path = tmp_path / "sc.yaml"
    path.write_text(json.dumps(sc.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["run", str(path), "--runs", "2", "--out",
                                   str(tmp_path / "out"), "--json"])
    assert res.exit_code == 2
    assert "no row of facilities matches" in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()  # nothing half-written


def _outage(parameters: list[dict]) -> Scenario:
    base = load_scenario("mountain-pass-outage").model_dump(mode="json")
    base["uncertain"] = {"parameters": parameters}
    return Scenario.model_validate(base)


def _inline_regime(parameters: list[dict]) -> Scenario:
    base = load_scenario("april-2025").model_dump(mode="json")
    assert base["policies"]["extra_regimes"][0]["review_days_median"] == 63  # an int in YAML
    base["end"] = "2025-09"
    base["uncertain"] = {"parameters": parameters}
    return Scenario.model_validate(base)


def test_selectors_match_lists_booleans_and_numbers():
    frame = DATASET.facilities
    by_source = targets._rows(frame, targets.DatasetCell(
        "facilities", "capacity", (("source_id", "mp_2026_q4fy2025_results"),)))
    assert by_source.sum() >= 2  # a list column: rows that cite the source
    planned = targets._rows(frame, targets.DatasetCell(
        "facilities", "capacity", (("estimate", "FALSE"), ("start_year", "2027.0"))))
    expected = (frame["estimate"] == False) & (frame["start_year"] == 2027)  # noqa: E712
    assert planned.tolist() == expected.fillna(False).tolist() and planned.any()


# ---- applying values by hand --------------------------------------------------------------------
def test_apply_sets_and_scales_cells_and_rounds_integers():
    sc = _scenario([
        {"target": f"dataset:facilities.capacity[facility_id={PLANT}]", "dist": "uniform",
         "low": 0.5, "high": 1.5, "how": "scale"},
        {"target": f"dataset:facilities.start_year[facility_id={PLANT}]", "dist": "uniform",
         "low": 2026, "high": 2034},
        {"target": "demand_scale", "dist": "uniform", "low": 0.9, "high": 1.1},
    ])
    ds, out = targets.apply(DATASET, sc, sc.uncertain, np.array([1.25, 2029.6, 0.95]))
    row = ds.facilities[ds.facilities["facility_id"] == PLANT].iloc[0]
    assert row["capacity"] == 12_500.0  # 10,000 t/yr x 1.25
    assert row["start_year"] == 2030  # an int column takes the nearest integer
    before = DATASET.facilities[DATASET.facilities["facility_id"] == PLANT].iloc[0]
    assert before["capacity"] == 10_000.0 and before["start_year"] == 2027  # the input stays
    others = ds.facilities["facility_id"] != PLANT
    assert ds.facilities[others].equals(DATASET.facilities[others])
    assert out == sc  # no scenario fields among the targets


def test_apply_sets_scenario_fields_through_the_scenarios_validation():
    base = load_scenario("mountain-pass-outage")  # the mine stops (fraction 1.0) for 6 months
    dumped = base.model_dump(mode="json")
    dumped["uncertain"] = {"parameters": [
        {"target": "scenario:events.0.fraction", "dist": "uniform", "low": 0.2, "high": 1.0},
        {"target": "scenario:events.0.months", "dist": "uniform", "low": 0.5, "high": 1.5,
         "how": "scale"}]}
    sc = Scenario.model_validate(dumped)
    _, out = targets.apply(DATASET, sc, sc.uncertain, np.array([0.3, 0.75]))
    assert out.events[0].fraction == 0.3
    assert out.events[0].months == 5  # 6 x 0.75 = 4.5 months -> an int field's nearest integer
    assert sc.events[0].fraction == 1.0 and sc.events[0].months == 6  # the input stays
    with pytest.raises(ValueError, match=r"uncertain.parameters\[0\] \(scenario:events.0."
                                         r"fraction, value 7\): scenario:events.0.fraction: "
                                         r"Input should be less than or equal to 1"):
        targets.apply(DATASET, sc, sc.uncertain, np.array([7.0, 1.0]))
    with pytest.raises(ValueError, match=r"parameters\[0\].*needs a finite number"):
        targets.apply(DATASET, sc, sc.uncertain, np.array([np.nan, 1.0]))


def test_fields_of_inline_rules_are_not_rounded():
    # review_days_median is written 63 (an int) in a free-form regime: a float stays a float
    sc = _inline_regime([{"target": "scenario:policies.extra_regimes.0.review_days_median",
                          "dist": "uniform", "low": 40, "high": 90}])
    _, out = targets.apply(DATASET, sc, sc.uncertain, np.array([70.4]))
    assert out.policies.extra_regimes[0]["review_days_median"] == 70.4


# ---- ensembles ---------------------------------------------------------------------------------
def _by_hand(start_year: int) -> Dataset:
    tables = dict(DATASET.tables)
    facilities = tables["facilities"].copy()
    facilities.loc[facilities["facility_id"] == PLANT, "start_year"] = start_year
    tables["facilities"] = facilities
    return Dataset(tables=tables, origin=DATASET.origin)


def test_each_run_equals_the_scenario_run_on_a_dataset_changed_by_hand():
    sc = _scenario([_start_year([2027, 2031]),
                    {"target": "demand_scale", "dist": "uniform", "low": 0.95, "high": 1.05}])
    res = simulate(DATASET, sc, runs=5, seed=3)
    values = res.parameters[1]
    assert set(values[:, 0]) == {2027.0, 2031.0}  # both choices drawn
    plain = Scenario.model_validate({**sc.model_dump(mode="json"), "uncertain": {}})
    for run in range(5):
        year, demand = values[run]
        alone = Scenario.model_validate({**plain.model_dump(mode="json"), "uncertain": {
            "parameters": [{"target": "demand_scale", "dist": "choice", "values": [demand]}]}})
        expected = simulate(_by_hand(int(year)), alone)
        for name in ("shortfall", "production", "trade", "price"):
            assert_equivalent(res.data[name].isel(run=run).values,
                              expected.data[name].isel(run=0).values)


def test_a_later_plant_makes_fewer_us_magnets():
    sc = _scenario([_start_year([2027, 2031])])
    res = simulate(DATASET, sc, runs=6, seed=0)
    years = res.parameters[1][:, 0]
    made = res.data["production"].sel(stage="magnet", country="USA").sel(
        month=slice("2027-01", "2030-12")).sum("month").values
    early, late = made[years == 2027], made[years == 2031]
    assert len(early) and len(late)
    assert early.min() > late.max() + 5000  # t of magnets over four years (10,000 t/yr plant)
    # runs that share a value share their results exactly
    assert np.ptp(early) == 0 and np.ptp(late) == 0


def test_results_do_not_depend_on_batches_or_workers():
    sc = _scenario([_start_year([2027, 2029, 2031]),
                    {"target": "switching_rate", "dist": "uniform", "low": 0.05, "high": 0.3}],
                   end="2027-06")
    one = simulate(DATASET, sc, runs=8, seed=5, batch_size=8, keep=False)
    split = simulate(DATASET, sc, runs=8, seed=5, batch_size=3, keep=False, workers=2)
    assert one.summary() == split.summary()
    for name, series in one.series().items():
        np.testing.assert_array_equal(series, split.series()[name], err_msg=name)
    for name, values in one.headline().items():
        np.testing.assert_array_equal(values, split.headline()[name], err_msg=name)


def test_a_kept_dataset_describes_the_scenario_as_written():
    # scale China's mine output: runs differ in their mine capacities and element mix, the
    # dataset's static variables stay those of the scenario as written
    sc = _scenario([{"target": "dataset:mine_production.value[country=CHN]", "dist": "choice",
                     "values": [0.5, 1.0], "how": "scale"}], end="2024-03")
    res = simulate(DATASET, sc, runs=4, seed=2)
    nominal = simulate(DATASET, _scenario([], end="2024-03"))
    for name in ("capacity", "grade_content", "mine_composition"):
        assert "run" not in res.data[name].dims
        np.testing.assert_array_equal(res.data[name].values, nominal.data[name].values)
    half = res.parameters[1][:, 0] == 0.5
    mined = res.data["production"].sel(stage="mining", country="CHN").sum("month").values
    assert half.any() and (~half).any()
    assert mined[half].max() < mined[~half].min()  # and the runs did differ


def test_a_sweep_refuses_bad_values_before_writing_anything(tmp_path):
    from rareflow.sweep import run_sweep

    sc = _scenario([{"target": f"dataset:facilities.capacity[facility_id={PLANT}]",
                     "dist": "normal", "mean": 0.0, "sd": 1000.0}])
    out = tmp_path / "sweep"
    with pytest.raises(ScenarioError, match="the schema wants it >= 0"):
        run_sweep(out, sc, runs=8, seed=1, batch_size=4)
    assert not out.exists()


def test_a_planned_facility_needs_include_planned():
    # a planned plant is not built unless the scenario says so: its start year could not
    # change any run, and an ensemble over it would report flat bands as if it had no effect
    built = _scenario([_start_year([2027.0, 2031.0])])
    dumped = built.model_dump(mode="json")
    dumped["settings"]["include_planned"] = False
    unbuilt = Scenario.model_validate(dumped)
    errors = targets.check_targets(unbuilt.uncertain, unbuilt, DATASET)
    assert len(errors) == 1 and "selects only planned facilities" in errors[0]
    assert targets.check_targets(built.uncertain, built, DATASET) == []
    dumped["overrides"] = [{"facility": PLANT, "status": "construction"}]
    overridden = Scenario.model_validate(dumped)
    assert targets.check_targets(overridden.uncertain, overridden, DATASET) == []
    # a planned facility's capacity counts without include_planned too (the mix of elements a
    # country mines weighs every mine by capacity): not refused
    dumped["overrides"] = []
    dumped["uncertain"]["parameters"] = [{
        "target": "dataset:facilities.capacity[facility_id=arafura_nolans_mine]",
        "dist": "uniform", "low": 0.0, "high": 2.0, "how": "scale"}]
    capacity = Scenario.model_validate(dumped)
    assert targets.check_targets(capacity.uncertain, capacity, DATASET) == []


def _drops_a_country() -> Scenario:
    # a magnet plant in Estonia: starting in 2024 rather than 2026 brings a country into a
    # 2024 model, which every run of an ensemble must share
    return _scenario([{"target": "dataset:facilities.start_year[facility_id=neo_narva_magnets]",
                       "dist": "choice", "values": [2026, 2024], "weights": [0.9, 0.1]}],
                     end="2024-06")


def test_a_sweep_compiles_each_choice_before_writing_anything(tmp_path, monkeypatch):
    import dask.distributed

    from rareflow.sweep import run_sweep

    def no_cluster(*args, **kwargs):
        raise AssertionError("the refusal must come before any batch is submitted")

    monkeypatch.setattr(dask.distributed, "LocalCluster", no_cluster)
    monkeypatch.setattr(dask.distributed, "Client", no_cluster)
    out = tmp_path / "sweep"
    with pytest.raises(ScenarioError, match="change the model's countries"):
        run_sweep(out, _drops_a_country(), runs=16, seed=3, batch_size=4)
    assert not out.exists()


def test_a_sweep_refused_half_way_removes_only_what_it_wrote(tmp_path, monkeypatch):
    # with more combinations than are compiled up front, a refusal comes from a batch (with
    # seed 23 only the last of four holds the start year 2024): the sweep cannot finish
    import rareflow.api
    from rareflow.ensemble import design
    from rareflow.sweep import run_sweep

    monkeypatch.setattr(rareflow.api, "check_compiles", lambda *args, **kwargs: [])
    sc = _drops_a_country()
    years = design(sc.uncertain, 16, 23)[:, 0]
    assert (years[:12] == 2026).all() and (years[12:] == 2024).any()
    out = tmp_path / "a" / "b" / "sweep"  # directories made for it go too
    with pytest.raises(ScenarioError, match="change the model's countries"):
        run_sweep(out, sc, runs=16, seed=23, batch_size=4)
    assert not (tmp_path / "a").exists()
    # a directory that holds other things keeps them (a run's summary, a user's file)
    kept = tmp_path / "runs"
    (kept / "batches").mkdir(parents=True)
    (kept / "summary.json").write_text("{}")
    (kept / "batches" / "mine.txt").write_text("mine")
    with pytest.raises(ScenarioError):
        run_sweep(kept, sc, runs=16, seed=23, batch_size=4)
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*")) == [
        "batches", "batches/mine.txt", "summary.json"]
    # a sweep begun earlier keeps its batches, and the message says what to do
    earlier = tmp_path / "earlier"
    assert run_sweep(earlier, sc, runs=16, seed=23, batch_size=4, max_batches=1) is None
    with pytest.raises(ScenarioError, match="cannot finish with these values; its 3 batches "
                       "are kept"):
        run_sweep(earlier, sc, runs=16, seed=23, batch_size=4)
    assert len(list((earlier / "batches").glob("batch_*.npz"))) == 3


def test_series_names_do_not_depend_on_the_runs():
    # capacity by country is reported for every country, so that batches and groups of runs
    # that differ in which countries build agree on the series they return
    res = simulate(DATASET, load_scenario("allied-buildout-2030").model_copy(
        update={"end": "2024-03"}))
    countries = res.data["country"].values
    for stage in ("mining", "separation", "magnet"):
        assert {f"capacity_t.{stage}.{c}" for c in countries} <= set(res.series())


def test_exposure_runs_with_an_uncertain_field_of_a_removed_event():
    # exposure compares with the scenario without its events; an uncertain field inside an
    # event goes with them there, instead of failing that comparison run
    from pathlib import Path

    from rareflow.exposure import analyse, load_bom

    sc = _outage([{"target": "scenario:events.0.fraction", "dist": "uniform", "low": 0.5,
                   "high": 1.0},
                  {"target": "demand_scale", "dist": "uniform", "low": 0.95, "high": 1.05}])
    sc = sc.model_copy(update={"end": "2025-12"})
    bom = load_bom(Path(__file__).parents[1] / "examples" / "bom" / "ev-maker.yaml", DATASET)
    answer = analyse(bom, DATASET, sc, runs=2, seed=1)
    assert answer["products"][0]["product"] == "Compact EV"
