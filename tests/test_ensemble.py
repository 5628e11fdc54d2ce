"""Ensembles: sampling, batch invariance, exceedance, PRIM, Sobol and distributed sweeps."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from rareflow import load_dataset, simulate
from rareflow.cli import app
from rareflow.discovery import parse_where, prim
from rareflow.ensemble import Uncertain, Uncertainties, exceedance, sample
from rareflow.scenario import ScenarioError, scenario_from_dict

DATASET = load_dataset()


def _unc(**kw):
    return Uncertainties.model_validate(kw)


def _pair(first: dict, second: dict, rho: float, sampling: str) -> Uncertainties:
    """Two parameters with a rank correlation ``rho`` between them."""
    return _unc(sampling=sampling, parameters=[first, second],
                correlation=[(first["target"], second["target"], rho)])


# ---- sampling -------------------------------------------------------------------------------
def test_sampling_is_reproducible_and_respects_the_distributions():
    u = _unc(sampling="lhs", parameters=[
        {"target": "approval_scale", "dist": "uniform", "low": 0.5, "high": 1.0},
        {"target": "price_elasticity", "dist": "triangular", "low": 0.1, "mode": 0.2, "high": 0.6},
        {"target": "leakage", "dist": "choice", "values": [0.0, 0.1], "weights": [0.75, 0.25]},
    ])
    labels, a = sample(u, 4000, seed=3)
    _, b = sample(u, 4000, seed=3)
    _, c = sample(u, 4000, seed=4)
    assert labels == ["approval_scale", "price_elasticity", "leakage"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[:, 0].min() >= 0.5 and a[:, 0].max() <= 1.0
    # Latin hypercube: exactly one draw in each of 4000 equal strata
    strata = np.floor((a[:, 0] - 0.5) / 0.5 * 4000).astype(int)
    assert len(np.unique(strata)) == 4000
    # triangular(0.1, 0.2, 0.6): mean (0.1 + 0.2 + 0.6) / 3 = 0.3
    assert a[:, 1].mean() == pytest.approx(0.3, abs=0.005)
    assert np.mean(a[:, 2] == 0.1) == pytest.approx(0.25, abs=0.01)


def test_correlation_is_imposed():
    u = _pair({"target": "approval_scale", "dist": "uniform", "low": 0, "high": 1},
              {"target": "demand_scale", "dist": "normal", "mean": 1, "sd": 0.1}, 0.6, "mc")
    _, v = sample(u, 20000, seed=1)
    rho = stats.spearmanr(v[:, 0], v[:, 1]).statistic
    assert rho == pytest.approx(0.6, abs=0.02)


def test_bad_distribution_is_refused():
    with pytest.raises(ValueError, match="needs mode"):
        Uncertain.model_validate({"target": "leakage", "dist": "triangular", "low": 0,
                                  "high": 1})
    for bad, rule in [({"values": []}, "at least one value"),
                      ({"values": [0.0, 0.1], "weights": [0, 0]}, "positive sum"),
                      ({"values": [0.0, 0.1], "weights": [-1, 2]}, "finite, >= 0"),
                      ({"values": [0.0, 0.1], "weights": [float("nan"), 1]}, "finite, >= 0")]:
        with pytest.raises(ValueError, match=rule):
            Uncertain.model_validate({"target": "leakage", "dist": "choice", **bad})


def test_a_zero_width_range_is_a_fixed_value():
    for dist in ({"dist": "uniform"}, {"dist": "triangular", "mode": 0.9},
                 {"dist": "beta", "a": 2, "b": 2}):
        p = Uncertain.model_validate({"target": "demand_scale", "low": 0.9, "high": 0.9, **dist})
        assert p.quantile(np.array([0.1, 0.5, 0.9])).tolist() == [0.9, 0.9, 0.9]


@pytest.mark.parametrize("pairs, rule", [
    ([("approval_scale", "approval_scale", 0.5)], "a parameter with itself"),
    ([("approval_scale", "demand_scale", 0.5), ("demand_scale", "approval_scale", 0.2)],
     "given twice"),
    ([("approval_scale", "demand_scale", 0.9), ("demand_scale", "leakage", 0.9),
      ("approval_scale", "leakage", -0.9)], "cannot hold together"),
])
def test_impossible_correlations_are_refused(pairs, rule):
    params = [{"target": t, "dist": "uniform", "low": 0, "high": 1}
              for t in ("approval_scale", "demand_scale", "leakage")]
    with pytest.raises(ValueError, match=rule):
        _unc(parameters=params, correlation=pairs)


@pytest.mark.parametrize("values", [[0.0, 0.02, 0.05], [0.05, 0.0, 0.02], [0.05, 0.02, 0.0]])
def test_a_choice_keeps_its_correlation_whatever_the_order_of_its_values(values):
    # the draws are reordered to carry the rank correlation; a choice maps a higher draw to a
    # higher value only if its values are taken in ascending order (the order in the YAML file
    # must not matter: before, [0.05, 0.02, 0.0] reversed the sign of the correlation)
    weights = dict(zip([0.0, 0.02, 0.05], [0.5, 0.3, 0.2], strict=True))
    u = _pair({"target": "demand_scale", "dist": "uniform", "low": 0.8, "high": 1.2},
              {"target": "leakage", "dist": "choice", "values": values,
               "weights": [weights[v] for v in values]}, 0.8, "lhs")
    _, v = sample(u, 2000, seed=1)
    assert stats.spearmanr(v[:, 0], v[:, 1]).statistic > 0.6
    assert np.mean(v[:, 1] == 0.05) == pytest.approx(0.2, abs=0.01)  # weights follow values
    draws = np.linspace(0.001, 0.999, 200)
    assert np.all(np.diff(u.parameters[1].quantile(draws)) >= 0)


@pytest.mark.parametrize("spec, rule", [
    ({"dist": "lognormal", "mean": 800.0, "sd": 0.1}, "its draws overflow"),
    ({"dist": "normal", "mean": 1.0, "sd": float("inf")}, r"sd \(value inf\): must be a finite"),
    ({"dist": "uniform", "low": 0.0, "high": float("nan")}, r"high \(value nan\)"),
    ({"dist": "choice", "values": [1.0, float("inf")]}, r"values\[1\] \(value inf\)"),
    ({"dist": "normal", "mean": 1.0, "sd": 0.05, "low": 0.95}, r"low \(value 0.95\): a normal "
     r"distribution takes only mean, sd \(it is not truncated"),
    ({"dist": "uniform", "low": 0.8, "high": 1.0, "mean": 3.0}, r"mean \(value 3.0\): a uniform "
     "distribution takes only low, high"),
])
def test_distributions_refuse_numbers_they_cannot_use(spec, rule):
    # before, a lognormal with mean 800 (of the logarithm) raised OverflowError from the
    # sampler (a traceback, not a message), and a normal with low and high ran untruncated
    with pytest.raises(ValueError, match=rule):
        Uncertain(target="demand_scale", **spec)


def test_correlated_latin_hypercube_keeps_its_strata():
    u = _pair({"target": "approval_scale", "dist": "uniform", "low": 0, "high": 1},
              {"target": "demand_scale", "dist": "uniform", "low": 0, "high": 1}, 0.6, "lhs")
    _, v = sample(u, 1000, seed=2)
    for k in range(2):  # one draw in each of 1000 equal strata, in both columns
        assert len(np.unique(np.floor(v[:, k] * 1000))) == 1000
    assert stats.spearmanr(v[:, 0], v[:, 1]).statistic == pytest.approx(0.6, abs=0.03)


def test_sobol_sampling_needs_a_power_of_two():
    u = _unc(sampling="sobol", parameters=[
        {"target": "approval_scale", "dist": "uniform", "low": 0, "high": 1}])
    assert sample(u, 64, seed=1)[1].shape == (64, 1)
    with pytest.raises(ValueError, match=r"runs \(value 1000\): uncertain.sampling 'sobol' "
                                         r"needs a power of two.*e.g. 1024"):
        sample(u, 1000, seed=1)


def test_run_parameters_outside_their_ranges_stop_the_ensemble_before_it_runs():
    sc = _short(sampling="mc", parameters=[
        {"target": "mine_scale", "dist": "normal", "mean": 1.0, "sd": 0.6}])
    ticks = []
    with pytest.raises(ScenarioError, match=r"uncertain.parameters\[0\] \(mine_scale, value "
                                            r"-[0-9.]+\) in run [0-9]+: mine_scale must lie in "
                                            r"\[0, 1000\]"):
        simulate(DATASET, sc, runs=64, seed=1, progress=lambda d, t: ticks.append(d))
    assert ticks == []
    # huge but finite draws (a lognormal around 1e304) would overflow the model's tonnes to
    # inf and NaN: the upper ends of the ranges refuse them too
    huge = _short(parameters=[{"target": "mine_scale", "dist": "lognormal", "mean": 700.0,
                               "sd": 0.1}])
    with pytest.raises(ScenarioError, match=r"mine_scale must lie in \[0, 1000\]"):
        simulate(DATASET, huge, runs=4, seed=1)


def test_the_median_of_a_choice_is_its_lower_weighted_median():
    def median(values, weights=None):
        return Uncertain.model_validate({"target": "leakage", "dist": "choice",
                                         "values": values, "weights": weights}).median()

    assert median([0.0, 0.02, 0.05], [0.5, 0.3, 0.2]) == 0.0  # half the weight at 0
    assert median([0.0, 0.02, 0.05], [0.4, 0.3, 0.3]) == 0.02
    assert median([1.0, 2.0]) == 1.0
    assert median([0.3, 0.1, 0.2]) == 0.2  # by value, not by listed order


def test_two_parameters_on_one_target_are_checked_together():
    sc = _short(sampling="mc", parameters=[
        {"target": "price_elasticity", "dist": "uniform", "low": 0.02, "high": 0.03},
        {"target": "price_elasticity", "name": "elasticity_scale", "dist": "uniform",
         "low": 0.02, "high": 0.03}])
    with pytest.raises(ScenarioError, match=r"elasticity_scale, value [0-9.]+\) in run 0; "
                                            r"together [0-9.e-]+: price_elasticity must lie"):
        simulate(DATASET, sc, runs=4, seed=1)


def test_one_run_is_the_scenario_at_its_medians(tmp_path):
    # equal weights on two values: the lower weighted median is 0.0 (the draw at u = 0.5
    # would give 0.1)
    sc = _short(parameters=[
        {"target": "demand_scale", "dist": "triangular", "low": 0.8, "mode": 0.9, "high": 1.3},
        {"target": "leakage", "dist": "choice", "values": [0.0, 0.1]}])
    labels, values = simulate(DATASET, sc, runs=1, seed=7).parameters
    median = stats.triang(0.2, loc=0.8, scale=0.5).ppf(0.5)
    assert values.tolist() == [[pytest.approx(median), 0.0]]
    from rareflow.sweep import dataset_digest, prepare

    stored, _ = prepare(tmp_path / "sweep", sc, 1, 7, 1,
                        dataset_digest(DATASET))  # a one-run sweep alike
    assert stored.tolist() == values.tolist()


def test_run_design_refuses_before_any_run():
    from rareflow.api import run_design

    sc = _short(parameters=[{"target": "demand_scale", "dist": "uniform", "low": 0.9,
                             "high": 1.1}])
    for kwargs, rule in [({"runs": 0}, r"runs \(value 0\): must be at least 1"),
                         ({"seed": -1}, r"seed \(value -1\): must be 0 or more"),
                         ({"parameter_values": np.ones((1, 3))},
                          r"parameter_values \(shape \(1, 3\)\): needs \(3, 1\)")]:
        args = {"runs": 3, "seed": 0, **kwargs}
        errors, _ = run_design(DATASET, sc, args.pop("runs"), args.pop("seed"), **args)
        assert len(errors) == 1 and re.search(rule, errors[0]), errors
    res = CliRunner().invoke(app, ["run", "baseline", "--seed", "-1"])
    assert res.exit_code == 2 and "--seed" in res.output


def test_headline_names_follow_the_responses_switch():
    from rareflow import load_scenario
    from rareflow.result import headline_names

    sc = load_scenario("allied-buildout-2030")
    assert "investment_usd_total" in headline_names(sc)
    off = sc.model_copy(update={"responses": sc.responses.model_copy(update={"enabled": False})})
    assert headline_names(off) == list(headline_names(load_scenario("baseline")))
    short = off.model_copy(update={"end": "2024-03"})
    assert sorted(simulate(DATASET, short).headline()) == sorted(headline_names(off))


def test_thresholds_must_name_a_headline():
    with pytest.raises(ScenarioError, match=r"uncertain.thresholds \(value 'shortfal_total_t'\)"
                                            ": not a headline"):
        simulate(DATASET, _short(parameters=[], thresholds={"shortfal_total_t": [1.0]}))


def test_exceedance_by_hand():
    out = exceedance({"x": np.array([1.0, 5.0, 10.0, np.nan])}, {"x": [4.0, 10.0]})
    assert out == {"x": {"4.0": 0.5, "10.0": 0.0}}


# ---- ensembles ------------------------------------------------------------------------------
SC = scenario_from_dict({
    "name": "u", "end": "2025-06", "policies": {"include": ["CN-2025-18-MHREE"]},
    "uncertain": {"parameters": [
        {"target": "approval_scale", "dist": "uniform", "low": 0.5, "high": 1.1},
        {"target": "demand_scale", "dist": "normal", "mean": 1.0, "sd": 0.05},
        {"target": "price_elasticity", "dist": "uniform", "low": 0.2, "high": 0.5}],
        "thresholds": {"shortfall_total_t": [100.0]}}})


def test_results_do_not_depend_on_batch_size():
    a = simulate(DATASET, SC, runs=7, seed=11, batch_size=7)
    b = simulate(DATASET, SC, runs=7, seed=11, batch_size=2)
    for name, values in a.series().items():
        assert np.array_equal(values, b.series()[name]), name
    for name, values in a.headline().items():
        assert np.array_equal(values, b.headline()[name], equal_nan=True), name


def test_batches_written_over_the_last_batch_keep_their_results():
    """Without kept datasets each batch's records are written over the last batch's arrays
    (api._SPARE_RECORDS): every batch's series must be the same as when all runs are one
    batch that keeps its dataset."""
    split = simulate(DATASET, SC, runs=6, seed=5, batch_size=2, keep=False)
    whole = simulate(DATASET, SC, runs=6, seed=5, batch_size=6, keep=True)
    for name, values in whole.series().items():
        np.testing.assert_array_equal(split.series()[name], values, err_msg=name)
    for name, values in whole.headline().items():
        np.testing.assert_array_equal(split.headline()[name], values, err_msg=name)


def test_results_do_not_depend_on_worker_processes():
    one = simulate(DATASET, SC, runs=6, seed=5, batch_size=2, keep=False)
    two = simulate(DATASET, SC, runs=6, seed=5, batch_size=2, keep=False, workers=2)
    for name, values in one.headline().items():
        np.testing.assert_array_equal(values, two.headline()[name], err_msg=name)
    for name, values in one.series().items():
        np.testing.assert_array_equal(values, two.series()[name], err_msg=name)


def test_runs_differ_and_summary_has_bands_parameters_and_exceedance():
    res = simulate(DATASET, SC, runs=12, seed=2)
    s = res.summary()
    short = res.headline()["shortfall_total_t"]
    assert len(set(np.round(short, 6))) > 1
    assert s["headline"]["shortfall_total_t"]["p5"] <= s["headline"]["shortfall_total_t"]["p95"]
    for band in (5, 50, 95):
        assert s["headline"]["shortfall_total_t"][f"p{band}"] == pytest.approx(
            np.percentile(short, band), rel=1e-6)
    assert set(s["parameters"]) == {"approval_scale", "demand_scale", "price_elasticity"}
    assert s["exceedance"]["shortfall_total_t"]["100.0"] == pytest.approx(
        float(np.mean(short > 100.0)))


def test_parameter_bands_are_values_some_run_used():
    from rareflow.result import Result

    # half the runs at 0.0, half at 0.02: an interpolated median would be 0.01, a leakage no
    # run had; the fifth of ten sorted values is 0.0
    leakage = np.array([0.0] * 5 + [0.02] * 5)
    res = Result(None, series={}, headline={"x": np.zeros(10)}, months=["2024-01"],
                 parameters=(["leakage"], leakage[:, None]),
                 checks={"mass_balance_max_rel_error": 0.0, "min_stock_t": 0.0})
    assert res.summary()["parameters"] == {"leakage": {"p5": 0.0, "p50": 0.0, "p95": 0.02}}


def test_large_ensembles_keep_only_the_summary():
    res = simulate(DATASET, SC, runs=3, seed=2, keep=False)
    assert not res.has_data
    with pytest.raises(ValueError, match="kept only its summary"):
        _ = res.data
    assert res.summary()["runs"] == 3


def test_higher_approval_never_worse_on_average():
    low = scenario_from_dict({**json.loads(SC.model_dump_json()), "uncertain": {"parameters": [
        {"target": "approval_scale", "dist": "uniform", "low": 0.3, "high": 0.31}]}})
    high = scenario_from_dict({**json.loads(SC.model_dump_json()), "uncertain": {"parameters": [
        {"target": "approval_scale", "dist": "uniform", "low": 1.0, "high": 1.01}]}})
    s_low = simulate(DATASET, low, runs=2).headline()["shortfall_total_t"].mean()
    s_high = simulate(DATASET, high, runs=2).headline()["shortfall_total_t"].mean()
    assert s_high <= s_low


# ---- discovery and sensitivity --------------------------------------------------------------
def test_prim_finds_a_known_box():
    rng = np.random.default_rng(0)
    x = rng.random((4000, 3))
    y = (x[:, 0] > 0.7) & (x[:, 1] < 0.4)
    box = prim(x, y)
    assert box["low"][0] == pytest.approx(0.7, abs=0.03)
    assert box["high"][1] == pytest.approx(0.4, abs=0.03)
    assert box["restricted"] == [True, True, False]  # the irrelevant input stays open
    assert box["density"] > 0.9 and box["coverage"] > 0.8


def test_prim_with_noise_keeps_coverage_and_restricts_what_matters():
    # a region x0 > 0.5 and x1 < 0.5 holding runs of interest with probability 0.8 (0.1
    # outside), among five inputs: the box chosen (highest coverage at density >= 0.8) must
    # restrict x0 and x1 near 0.5 and keep most of the runs of interest (coverage; a box
    # peeled to the densest corner would keep about a third)
    rng = np.random.default_rng(0)
    x = rng.random((500, 5))
    inside = (x[:, 0] > 0.5) & (x[:, 1] < 0.5)
    y = np.where(inside, rng.random(500) < 0.8, rng.random(500) < 0.1)
    box = prim(x, y)
    assert box["restricted"][0] and box["restricted"][1]
    assert box["low"][0] == pytest.approx(0.5, abs=0.05)
    assert box["high"][1] == pytest.approx(0.5, abs=0.05)
    assert box["density"] >= 0.8 and box["coverage"] > 0.6
    assert box["trajectory"][box["index"]]["coverage"] == box["coverage"]
    with pytest.raises(ValueError, match="runs of interest and runs that are not"):
        prim(x, np.zeros(500, dtype=bool))


def test_prim_reports_the_densest_box_when_none_reaches_the_threshold():
    # runs of interest: x0 > 0.6 in half the runs, noise elsewhere; no box reaches density
    # 0.8, so the densest box on the trajectory is reported (not the whole sample)
    rng = np.random.default_rng(1)
    x = rng.random((1000, 3))
    y = np.where(rng.random(1000) < 0.5, x[:, 0] > 0.6, rng.random(1000) < 0.2)
    box = prim(x, y)
    assert len(box["trajectory"]) > 5 and box["index"] > 0
    assert box["density"] == max(t["density"] for t in box["trajectory"]) < 0.8
    assert box["restricted"][0] and box["low"][0] == pytest.approx(0.6, abs=0.05)


def test_parse_where():
    assert parse_where("trigger_fired_month.china-answers-affiliates-rule < 24") == (
        "trigger_fired_month.china-answers-affiliates-rule", "<", 24.0)
    assert parse_where("units_not_built_total >= 1e6") == ("units_not_built_total", ">=", 1e6)
    for bad in ("units are many", "x > 1e", "x > nan"):
        with pytest.raises(ValueError, match="NAME > NUMBER"):
            parse_where(bad)


def test_sobol_points_at_the_parameter_that_matters():
    from rareflow.sensitivity import sobol_indices

    out = sobol_indices(DATASET, SC, "shortfall_total_t", base_samples=16)
    st = {k: v["ST"] for k, v in out["parameters"].items()}
    assert st["price_elasticity"] == pytest.approx(0.0, abs=1e-6)  # prices do not feed back
    assert max(st, key=st.get) in ("demand_scale", "approval_scale")
    # the bootstrap confidence intervals too are the same for the same seed, 0 included (SALib
    # leaves seed 0 unseeded)
    assert sobol_indices(DATASET, SC, "shortfall_total_t", base_samples=16) == out


def test_cli_discover_and_sensitivity_errors(monkeypatch):
    res = CliRunner().invoke(app, ["discover", "baseline", "--where", "x > 1"])
    assert res.exit_code == 2 and "no uncertain parameters" in res.stderr
    res = CliRunner().invoke(app, ["sensitivity", "history-2025", "--samples", "10"])
    assert res.exit_code == 2 and "power of two" in res.stderr
    # a misspelt outcome is refused before any run
    import rareflow.api

    def no_runs(*args, **kwargs):
        raise AssertionError("simulated before checking the name")

    monkeypatch.setattr(rareflow.api, "simulate", no_runs)
    monkeypatch.setattr("rareflow.cli.simulate", no_runs)
    monkeypatch.setattr("rareflow.sensitivity.simulate", no_runs)
    res = CliRunner().invoke(app, ["discover", "history-2025", "--where", "shortfal_t > 1"])
    assert res.exit_code == 2 and "'shortfal_t' is not a headline" in res.stderr
    res = CliRunner().invoke(app, ["sensitivity", "history-2025", "--output", "no_such"])
    assert res.exit_code == 2 and "--output (value 'no_such'): not a headline" in res.stderr


def _short(**uncertain) -> object:
    return scenario_from_dict({**json.loads(SC.model_dump_json()), "end": "2024-09",
                               "uncertain": uncertain})


def test_cli_discover_json_and_text():
    sc = _short(sampling="mc", parameters=[
        {"target": "demand_scale", "dist": "uniform", "low": 0.6, "high": 1.6},
        {"target": "switching_rate", "dist": "uniform", "low": 0.05, "high": 0.3}])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.yaml"
        path.write_text(json.dumps(json.loads(sc.model_dump_json())))
        res = CliRunner().invoke(app, ["discover", str(path), "--where",
                                       "shortfall_total_t > 0", "--runs", "40", "--json"])
        assert res.exit_code == 0, res.output
        answer = json.loads(res.stdout)
        assert answer["output"] == "shortfall_total_t" and answer["operator"] == ">"
        assert answer["runs"] == 40 and 0 < answer["runs_of_interest"] < 40
        assert set(answer["box"]) == {"demand_scale", "switching_rate"}
        assert answer["box"]["demand_scale"]["restricted"]  # more demand, more shortfall
        assert answer["box"]["demand_scale"]["low"] > 0.6
        assert answer["trajectory"][answer["chosen"]]["coverage"] == answer["coverage"]
        res = CliRunner().invoke(app, ["discover", str(path), "--where",
                                       "shortfall_total_t > 1e15", "--runs", "10"])
        assert res.exit_code == 0 and "no box to find" in res.stdout


def test_first_shortfall_month_counts_never_as_after_the_horizon():
    from rareflow.result import Result, outcome_values

    # never short (NaN) is later than any month: in percentiles, exceedance and analyses
    months = np.array([3.0, np.nan, np.nan, np.nan])
    assert outcome_values({"first_shortfall_month": months}, "first_shortfall_month",
                          24).tolist() == [3.0, 24.0, 24.0, 24.0]
    with pytest.raises(ValueError, match="2 of 3 runs have no value"):
        outcome_values({"x": np.array([1.0, np.nan, np.nan])}, "x", 24)
    assert exceedance({"first_shortfall_month": months},
                      {"first_shortfall_month": [5.0]}) == {"first_shortfall_month": {"5.0": 0.75}}
    res = Result(None, series={}, headline={"first_shortfall_month": months},
                 months=[f"2024-{m:02d}" for m in range(1, 13)],
                 checks={"mass_balance_max_rel_error": 0.0, "min_stock_t": 0.0})
    bands = res.summary()["headline"]["first_shortfall_month"]
    assert bands == {"p5": 3, "p50": None, "p95": None}  # most runs: not within the horizon


# ---- distributed sweeps ---------------------------------------------------------------------
def _write_scenario(tmp_path: Path) -> Path:
    path = tmp_path / "u.yaml"
    path.write_text(json.dumps(json.loads(SC.model_dump_json())))
    return path


def test_sweep_resumes_after_being_killed(tmp_path):
    scenario = _write_scenario(tmp_path)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "rareflow.cli_main", "sweep", str(scenario), "--runs", "12",
           "--batch-size", "2", "--out", str(out), "--seed", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    batches = out / "batches"
    while time.time() < deadline:
        if batches.is_dir() and len(list(batches.glob("batch_*.npz"))) >= 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its local Dask workers
    proc.wait()
    done_before = sorted(p.name for p in batches.glob("batch_*.npz"))
    assert 1 <= len(done_before) < 6, done_before
    res = CliRunner().invoke(app, ["sweep", str(scenario), "--runs", "12", "--batch-size", "2",
                                   "--out", str(out), "--seed", "5", "--json"])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in batches.glob("batch_*.npz"))
    assert files == [f"batch_{i:05d}.npz" for i in range(6)]
    assert not list(batches.glob(".*"))  # no half-written leftovers counted
    summary = json.loads((out / "summary.json").read_text())
    direct = simulate(DATASET, SC, runs=12, seed=5).summary()
    assert summary["runs"] == 12
    for key in ("shortfall_total_t", "units_not_built_total"):
        assert summary["headline"][key] == pytest.approx(direct["headline"][key], rel=1e-6)


def test_a_paused_sweep_says_where_it_stands(tmp_path):
    scenario = _write_scenario(tmp_path)
    args = ["sweep", str(scenario), "--runs", "4", "--batch-size", "2", "--out",
            str(tmp_path / "s"), "--max-batches", "1", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"complete": False, "out": str(tmp_path / "s"),
                                      "batches_done": 1, "batches": 2}


def test_error_messages_stay_on_one_line_when_piped():
    # stderr that is not a terminal is not wrapped at 80 columns: one problem, one line
    res = CliRunner().invoke(app, ["sensitivity", "history-2025", "--output", "nope"])
    assert res.exit_code == 2
    line = next(x for x in res.output.splitlines() if x.startswith("--output"))
    assert line.endswith("time_to_recover_months") and len(line) > 80


def test_sweep_resume_removes_half_written_batches(tmp_path):
    # a killed sweep can leave a temporary file behind; the next run deletes it and redoes the
    # batch (the temporary name never counts as done)
    from rareflow.sweep import run_sweep

    out = tmp_path / "sweep"
    (out / "batches").mkdir(parents=True)
    leftover = out / "batches" / ".batch_00000.999.tmp.npz"
    leftover.write_bytes(b"half written")
    summary = run_sweep(out, SC, runs=2, seed=5, batch_size=2)
    assert not leftover.exists()
    assert summary is not None and summary["runs"] == 2


def test_a_resumed_sweep_must_be_the_same_sweep(tmp_path):
    # a changed sweep is named as such, before its stored values are checked against it
    from rareflow.sweep import dataset_digest, prepare, run_sweep

    out = tmp_path / "sweep"
    prepare(out, SC, 4, 5, 2, dataset_digest(DATASET))
    with pytest.raises(ValueError, match=r"holds a different sweep \(runs: was 4, now 8\)"):
        run_sweep(out, SC, runs=8, seed=5, batch_size=2)


def test_a_resumed_sweep_must_use_the_same_dataset(tmp_path):
    from rareflow.data import Dataset
    from rareflow.sweep import dataset_digest, prepare, run_sweep

    tables = dict(DATASET.tables)
    tables["countries"] = tables["countries"].copy()
    tables["countries"].iloc[0, 0] = tables["countries"].iloc[1, 0]
    assert dataset_digest(Dataset(tables=tables)) != dataset_digest(DATASET)
    out = tmp_path / "sweep"
    prepare(out, SC, 4, 5, 2, dataset_digest(Dataset(tables=tables)))
    with pytest.raises(ValueError, match=r"holds a different sweep \(dataset: changed\)"):
        run_sweep(out, SC, runs=4, seed=5, batch_size=2)
    # a sweep from before fingerprints: not "changed", but unknown
    spec = json.loads((out / "sweep.json").read_text())
    del spec["dataset"]
    (out / "sweep.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="made by an earlier rareflow, which did not record"):
        run_sweep(out, SC, runs=4, seed=5, batch_size=2)


def test_two_sweeps_never_share_task_keys():
    # a Dask scheduler treats tasks with equal keys as one: the keys were
    # "rareflow-batch-{i}-{seed}", so two sweeps of different scenarios with the same seed on
    # one scheduler could receive each other's results
    from rareflow.sweep import _spec, _task_prefix, dataset_digest

    data = dataset_digest(DATASET)
    other = SC.model_copy(update={"name": "other"})
    prefix = _task_prefix(_spec(SC, 4, 5, 2, data))
    assert prefix == _task_prefix(_spec(SC, 4, 5, 2, data))  # a resumed sweep: the same
    for spec in (_spec(other, 4, 5, 2, data), _spec(SC, 8, 5, 2, data),
                 _spec(SC, 4, 6, 2, data), _spec(SC, 4, 5, 4, data), _spec(SC, 4, 5, 2, "x")):
        assert _task_prefix(spec) != prefix


def test_sweep_combines_series_a_few_at_a_time(tmp_path):
    # the summary does not depend on how many series are read at once; a batch missing a
    # series (from another version) is an error, not a shorter array
    from rareflow import sweep

    out = tmp_path / "sweep"
    summary = sweep.run_sweep(out, SC, runs=4, seed=5, batch_size=2)
    values, parts = sweep.prepare(out, SC, 4, 5, 2, sweep.dataset_digest(DATASET))
    one_by_one = sweep.combine(out, SC, parts, values, 5, memory=1)
    assert one_by_one == summary
    direct_summary = simulate(DATASET, SC, runs=4, seed=5).summary()
    assert summary["notes"] == direct_summary["notes"]  # where the compiler filled gaps
    direct = simulate(DATASET, SC, runs=4, seed=5).summary()["series"]
    assert one_by_one["series"].keys() == direct.keys()
    for name, bands in direct.items():  # batches store series in float32
        for band, values in bands.items():
            assert one_by_one["series"][name][band] == pytest.approx(values, rel=1e-6,
                                                                     abs=2e-4), name
    batch = out / "batches" / "batch_00001.npz"
    with np.load(batch) as data:
        kept = {k: data[k] for k in data.files if k != "series|production_t.mining"}
    np.savez(batch, **kept)
    with pytest.raises(ValueError, match=r"batch_00001.npz \(series production_t.mining\): "
                                         "missing"):
        sweep.combine(out, SC, parts, values, 5, memory=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_on_a_real_dask_cluster(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--no-dashboard"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env)
    workers = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
         "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=env) for _ in range(2)]
    try:
        from dask.distributed import Client

        deadline = time.time() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=30)
                    break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        scenario = _write_scenario(tmp_path)
        res = CliRunner().invoke(app, ["sweep", str(scenario), "--runs", "8", "--batch-size",
                                       "4", "--out", str(tmp_path / "s"), "--scheduler", address,
                                       "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["runs"] == 8
    finally:
        for p in [*workers, scheduler]:
            p.terminate()
        for p in [*workers, scheduler]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
