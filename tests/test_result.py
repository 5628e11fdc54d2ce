"""Result persistence and the summary contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from rareflow import load_dataset, load_scenario, simulate
from rareflow.cli import app
from rareflow.result import Result


@pytest.fixture(scope="module")
def result():
    sc = load_scenario("myanmar-halt").model_copy(update={"end": "2025-06"})
    return simulate(load_dataset(), sc, runs=2, seed=3)


def test_dataset_has_named_dimensions_and_units(result):
    d = result.data
    for var in ("production", "trade", "inventory", "consumption", "shortfall",
                "units_not_built", "value_at_risk_usd", "price"):
        assert var in d and "units" in d[var].attrs, var
    assert d["production"].dims == ("run", "month", "stage", "country")
    assert d["price"].dims == ("run", "month", "item", "market")


def test_netcdf_round_trip(result, tmp_path):
    path = tmp_path / "r.nc"
    result.to_netcdf(path)
    back = xr.load_dataset(path)
    assert np.allclose(back["shortfall"].values, result.data["shortfall"].values)


def test_parquet_export(result, tmp_path):
    import pandas as pd

    result.to_parquet(tmp_path / "pq")
    frame = pd.read_parquet(tmp_path / "pq" / "price.parquet")
    assert {"run", "month", "item", "market", "price"} <= set(frame.columns)


def test_summary_contract(result):
    s = result.summary()
    assert s["scenario"] == "myanmar-halt" and s["runs"] == 2 and s["seed"] == 3
    assert s["months"][0] == "2024-01" and len(s["months"]) == 18
    for name in ("china_magnet_exports_t", "china_magnet_exports_to_USA_t",
                 "shortfall_t.ev_traction", "units_not_built.ev_traction",
                 "price_usd_per_kg.Dy2O3.ex_china", "price_usd_per_kg.NdPr_oxide.china",
                 "inventory_weeks.all_magnet_users"):
        assert set(s["series"][name]) == {"p5", "p50", "p95"}, name
        assert len(s["series"][name]["p50"]) == 18
    for name in ("units_not_built_total", "value_at_risk_usd", "first_shortfall_month"):
        assert set(s["headline"][name]) == {"p5", "p50", "p95"}
    assert s["headline"]["first_shortfall_month"]["p50"] == 6  # the halt starts 2024-07
    assert set(s["checks"]) == {"mass_balance_max_rel_error", "min_stock_t"}
    json.dumps(s)


def test_series_are_the_datasets_selections_and_sums(result):
    """Result.series reads the arrays by position; each series is the label selection and sum
    it names on the dataset (spelled out here with xarray)."""
    d, series = result.data, Result(result.data).series()
    magnets = d["trade"].sel(trade_stage="magnet", exporter="CHN")
    foreign = [c for c in d["importer"].values if c != "CHN"]
    expected = {
        "china_magnet_exports_t": magnets.sel(importer=foreign).sum("importer"),
        "china_magnet_exports_to_USA_t": magnets.sel(importer="USA"),
        "shortfall_t.ev_traction": d["shortfall"].sum("country").sel(sector="ev_traction"),
        "units_not_built.wind_turbines": d["units_not_built"].sum("country").sel(
            sector="wind_turbines"),
        "price_usd_per_kg.Dy2O3.ex_china": d["price"].sel(item="Dy2O3", market="ex_china"),
        "licences.denied": d["licences"].sel(licence_stat="denied").sum("country"),
        "licences.held_back_t.USA": d["licences"].sel(licence_stat="held_back", country="USA"),
        "production_t.magnet": d["production"].sel(stage="magnet").sum("country"),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(series[name], value.values, rtol=1e-12, err_msg=name)
    china = d["production"].sel(stage="separation", country="CHN").values
    world = d["production"].sel(stage="separation").sum("country").values
    np.testing.assert_allclose(series["china_share.separation"], china / world, rtol=1e-12)
    assert series["china_share.separation"].max() > 0.5  # China separates most of the world's


def test_write_is_atomic_when_interrupted(result, tmp_path, monkeypatch):
    target = tmp_path / "out"

    def boom(self, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(Result, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        result.write(target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_result(result, tmp_path):
    target = tmp_path / "out"
    result.write(target)
    result.write(target)
    assert sorted(p.name for p in target.iterdir()) == ["parquet", "result.nc", "scenario.json",
                                                        "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_run_json_and_out(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", "baseline", "--end", "2024-12", "--json",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["months"][-1] == "2024-12"
    assert json.loads((out / "summary.json").read_text()) == summary


def test_cli_bad_month_option():
    res = CliRunner().invoke(app, ["run", "baseline", "--end", "2024-13"])
    assert res.exit_code == 2 and "--end" in res.stderr


def test_series_bands_in_threads_equal_one_by_one():
    """Ensembles of 1,000 runs or more take their series' percentiles in threads: the same
    bands, in the same order, as one series after another."""
    from rareflow.result import _bands, _series_bands

    rng = np.random.default_rng(3)
    series = {f"s{k}": rng.lognormal(size=(1200, 7)) for k in range(5)}
    series["s2"][:, 3] = np.nan  # a month without values: None in every band
    bands = _series_bands(series)
    assert list(bands) == list(series)
    for name, values in series.items():
        assert bands[name] == _bands(values), name
    assert bands["s2"]["p50"][3] is None
