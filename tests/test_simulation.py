"""Whole-model behaviour on the real dataset: calibration, balance, directions of effect."""

from __future__ import annotations

import numpy as np
import pytest

from rareflow import load_dataset, load_scenario, simulate
from rareflow.overview import supply_overview
from rareflow.scenario import scenario_from_dict


@pytest.fixture(scope="module")
def dataset():
    return load_dataset()


@pytest.fixture(scope="module")
def baseline(dataset):
    return simulate(dataset, load_scenario("baseline"))


def _year(result, year):
    return [i for i, m in enumerate(result.months) if m.startswith(str(year))]


def _run(dataset, events, end="2026-12", **settings):
    sc = scenario_from_dict({"name": "t", "end": end, "events": events, "settings": settings})
    return simulate(dataset, sc)


# ---- calibration to 2024 --------------------------------------------------------------------
def test_world_mine_output_2024_within_three_percent(baseline, dataset):
    months = _year(baseline, 2024)
    mined = float(baseline.data["production"].sel(stage="mining").isel(month=months).sum())
    assert mined == pytest.approx(380_000, rel=0.03)  # USGS MCS 2026 world total


def test_china_share_at_each_stage_within_three_points(baseline, dataset):
    months = _year(baseline, 2024)
    published = supply_overview(dataset, 2024)["stages"]
    prod = baseline.data["production"].isel(run=0, month=months).sum("month")
    for stage in ("mining", "separation", "magnet"):
        row = prod.sel(stage=stage)
        share = float(row.sel(country="CHN") / row.sum())
        assert abs(share - published[stage]["china_share"]) <= 0.03, stage


def test_china_magnet_exports_2024_and_their_split(baseline):
    months = _year(baseline, 2024)
    trade = baseline.data["trade"].sel(trade_stage="magnet", exporter="CHN").isel(
        run=0, month=months).sum("month")
    exports = float(trade.sum() - trade.sel(importer="CHN"))
    assert exports == pytest.approx(58_152, rel=0.10)  # Adamas / China customs
    for code, tonnes in {"DEU": 11_000, "USA": 7_444, "KOR": 6_571, "IND": 2_850}.items():
        assert float(trade.sel(importer=code)) == pytest.approx(tonnes, rel=0.10), code


def test_baseline_meets_calibration_year_in_full(baseline):
    months = _year(baseline, 2024)
    short = baseline.data["shortfall"].isel(run=0, month=months).sum(("month", "country"))
    need = baseline.data["need"].isel(run=0, month=months).sum(("month", "country"))
    ratio = (short / need.where(need > 0)).fillna(0)
    assert float(ratio.max()) <= 0.001, ratio.to_series().to_dict()


def test_baseline_2025_dip_is_covered_from_stocks_until_autumn(baseline):
    """In 2025 the baseline holds China's mined output at the reported 270 kt (USGS MCS 2026,
    equal to the quota) while Myanmar's falls by about a fifth, so separated Nd, Pr and Dy dip
    a few per cent as demand grows. Users' magnet stocks cover the gap through the summer; only
    the last months may run short, and by less than 5 % of the year's need.
    """
    months = _year(baseline, 2025)
    short = baseline.data["shortfall"].isel(run=0, month=months).sum("country")
    need = baseline.data["need"].isel(run=0, month=months).sum("country")
    assert float(short.isel(month=slice(0, 8)).sum()) <= 1e-3 * float(need.sum())
    ratio = (short.sum("month") / need.sum("month").where(need.sum("month") > 0)).fillna(0)
    assert float(ratio.max()) <= 0.05, ratio.to_series().to_dict()


# ---- invariants -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["baseline", "mountain-pass-outage", "myanmar-halt"])
def test_mass_balance_and_non_negativity(dataset, name):
    result = simulate(dataset, load_scenario(name))
    checks = result.checks()
    assert checks["mass_balance_max_rel_error"] <= 1e-9
    assert checks["min_stock_t"] >= -1e-6
    for var in ("production", "trade", "inventory", "consumption", "shortfall", "price"):
        assert float(result.data[var].min()) >= -1e-6, var


def test_identical_seeds_give_identical_results(dataset):
    sc = load_scenario("myanmar-halt")
    a = simulate(dataset, sc, runs=2, seed=7)
    b = simulate(dataset, sc, runs=2, seed=7)
    for var in a.data.data_vars:
        assert np.array_equal(a.data[var].values, b.data[var].values, equal_nan=True), var


# ---- directions of effect -------------------------------------------------------------------
def test_outage_lowers_downstream_supply_and_raises_prices(dataset, baseline):
    shock = simulate(dataset, load_scenario("mountain-pass-outage"))
    window = [i for i, m in enumerate(shock.months) if "2025-03" <= m <= "2025-08"]
    base = baseline.data.isel(run=0, month=window)
    hit = shock.data.isel(run=0, month=window)
    # Mountain Pass is all but 308 t/yr of US output (USGS 51,000 t vs MP's 50,692 t in 2025)
    us_mined = float(hit["production"].sel(stage="mining", country="USA").sum())
    assert us_mined < 0.01 * float(base["production"].sel(stage="mining", country="USA").sum())
    assert float(hit["production"].sel(stage="separation").sum()) < float(
        base["production"].sel(stage="separation").sum())
    assert float(hit["shortfall"].sum()) > float(base["shortfall"].sum())
    nd = "price_usd_per_kg.NdPr_oxide.china"
    assert max(shock.series()[nd][0][window]) > max(baseline.series()[nd][0][window])


def test_refined_export_ban_raises_the_ex_china_price_not_chinas(dataset):
    events = [{"type": "trade_restriction", "exporter": "CHN", "items": ["Dy2O3"],
               "start": "2025-01"}]
    free = _run(dataset, [])
    ban = _run(dataset, events)
    window = [i for i, m in enumerate(ban.months) if m >= "2025-03"]
    ex = "price_usd_per_kg.Dy2O3.ex_china"
    cn = "price_usd_per_kg.Dy2O3.china"
    assert ban.series()[ex][0][window].mean() > free.series()[ex][0][window].mean() * 1.05
    assert ban.series()[cn][0][window].mean() <= free.series()[cn][0][window].mean() + 1e-9


def test_magnet_ban_on_one_importer_cuts_its_flow_and_buyers_reroute(dataset):
    # Cut demand in the rest of the world so its magnet makers have spare output to offer.
    magnet_sectors = ("ev_traction", "hybrid_vehicles", "conventional_vehicles",
                      "wind_turbines", "consumer_electronics", "industrial_motors_robotics",
                      "other_magnet_uses")
    events = [{"type": "trade_restriction", "exporter": "CHN", "importers": ["USA"],
               "items": ["NdFeB_std", "NdFeB_high_temp", "SmCo"], "start": "2025-01"},
              *[{"type": "demand_shock", "sector": s, "country": "ROW", "start": "2025-01",
                 "factor": 0.2} for s in magnet_sectors]]
    ban = _run(dataset, events, switching_rate=0.3)
    months = [i for i, m in enumerate(ban.months) if m >= "2025-01"]
    trade = ban.data["trade"].sel(trade_stage="magnet").isel(run=0, month=months)
    assert float(trade.sel(exporter="CHN", importer="USA").max()) == 0.0
    others = trade.sel(importer="USA").drop_sel(exporter=["CHN", "USA"]).sum("exporter")
    assert float(others.isel(month=-1)) > float(others.isel(month=0))


def test_defense_priority_setting_changes_nothing_without_defense_need(dataset):
    # The sharing itself is worked by hand in test_kernel_hand.py.
    # Give defense a demand by shocking it from zero is impossible; instead check that the
    # setting is accepted and changes nothing when defense has no need (dataset gap).
    a = _run(dataset, [], defense_priority=["USA"])
    b = _run(dataset, [])
    assert np.allclose(a.data["shortfall"].values, b.data["shortfall"].values)


def test_stockpile_release_helps_and_purchase_competes(dataset):
    shock = {"type": "trade_restriction", "exporter": "CHN", "importers": ["USA"],
             "items": ["NdFeB_std"], "start": "2025-01", "months": 6}
    release = {"type": "stockpile_release", "holder": "US_NDS", "country": "USA",
               "item": "NdFeB_std", "tonnes": 450, "start": "2025-01", "months": 6}
    purchase = dict(release, type="stockpile_purchase", start="2024-06")
    hit = _run(dataset, [shock])
    helped = _run(dataset, [shock, release])
    bought = _run(dataset, [purchase])
    usa = lambda r: float(r.data["shortfall"].sel(country="USA").sum())  # noqa: E731
    assert usa(helped) < usa(hit)
    held = bought.data["inventory"].sel(inventory_stage="stockpile_purchases", country="USA")
    # purchases compete with users for the same supply: most, never more, of 450 t arrives
    assert 0.9 * 450 <= float(held.isel(run=0, month=-1)) <= 450 + 1e-6
    assert bought.checks()["mass_balance_max_rel_error"] <= 1e-9
