"""The built-in scenarios of the responses model run on the built-in data and behave as stated.

Checks are invariants (mass balance, non-negative stocks and stockpiles), directions of effect
against the same scenario with one lever removed, and hand-computed quantities (a stockpile sized
in days of use, lead times from data/lead_times.csv).
"""

from __future__ import annotations

import numpy as np
import pytest

from rareflow import load_dataset, load_scenario, simulate
from rareflow.compile import compile_scenario
from rareflow.compile_responses import compile_responses
from rareflow.scenario import ScenarioError, scenario_from_dict

NEW = ("allied-buildout-2030", "price-floor", "stockpile-90-days", "escalation-ladder",
       "quota-2010")


@pytest.fixture(scope="module")
def dataset():
    return load_dataset()


@pytest.fixture(scope="module")
def results(dataset):
    return {name: simulate(dataset, load_scenario(name)) for name in NEW}


@pytest.mark.parametrize("name", NEW)
def test_scenario_runs_with_mass_balance_and_no_negative_stock(results, name):
    res = results[name]
    checks = res.checks()
    assert checks["mass_balance_max_rel_error"] < 1e-9
    assert checks["min_stock_t"] > -1e-6
    d = res.data
    assert "capacity_run" in d
    assert float(d["stockpile_level"].min()) >= -1e-9 if d.sizes["holder"] else True
    assert float(d["capacity_run"].min()) >= 0.0
    assert float(d["policy_cost"].min()) >= 0.0
    summary = res.summary()
    assert "time_to_recover_months" in summary["headline"]
    assert "policy_cost_usd" in summary["series"] and "recycled_t" in summary["series"]
    assert any(k.startswith("capacity_t.separation.") for k in summary["series"])


def test_self_sufficiency_series_for_us_and_eu(results):
    series = results["price-floor"].summary()["series"]
    for bloc in ("US", "EU"):
        for stage in ("mining", "separation", "magnet"):
            assert f"self_sufficiency.{bloc}.{stage}" in series
    # Japan is inside ROW in the 2024 base year: no series rather than a wrong one
    assert not any(k.startswith("self_sufficiency.Japan") for k in series)


def test_price_floor_keeps_the_us_separator_running(dataset, results):
    sc = load_scenario("price-floor")
    without = sc.model_copy(update={"responses": sc.responses.model_copy(
        update={"price_floors": []})})
    bare = simulate(dataset, without)
    us = {"stage": "separation", "country": "USA"}
    with_floor = results["price-floor"].data["production"].sel(**us).values[0]
    no_floor = bare.data["production"].sel(**us).values[0]
    start = sc.months.index("2025-10")
    # identical before the floor and the shutdown rule start
    np.testing.assert_allclose(with_floor[:start], no_floor[:start], rtol=1e-12)
    # after: the NdPr price stays below the reported cash cost, so without the floor the plant
    # winds down and with it it keeps running
    assert no_floor[-1] < 0.1 * no_floor[start - 1]
    assert with_floor[-1] > 0.9 * with_floor[start - 1]
    cost = results["price-floor"].headline()["policy_cost_usd_total"][0]
    assert cost > 0 and bare.headline()["policy_cost_usd_total"][0] == 0


def test_stockpile_90_days_is_sized_from_base_year_use_and_helps(dataset, results):
    sc = load_scenario("stockpile-90-days")
    net, _ = compile_scenario(dataset, sc)
    inp = compile_responses(dataset, sc, net)
    usa = net.countries.index("USA")
    for k, holder in enumerate(sc.responses.stockpiles):
        grade = net.grades.index(holder.item)
        monthly = net.magnet_need[0, usa][net.sector_grade == grade].sum()
        assert inp.sp_initial[k] == pytest.approx(monthly * 12 / 365.25 * 90)
        assert inp.sp_max_release[k] == pytest.approx(monthly)
    level = results["stockpile-90-days"].data["stockpile_level"].values[0]
    assert (np.diff(level, axis=0) >= -inp.sp_max_release[None] - 1e-9).all()
    without = simulate(dataset, sc.model_copy(update={"responses": sc.responses.model_copy(
        update={"stockpiles": []})}))
    short = results["stockpile-90-days"].data["shortfall"].sel(country="USA").sum().item()
    assert short < without.data["shortfall"].sel(country="USA").sum().item()


def test_escalation_ladder_fires_in_order(results):
    fired = {k.split(".", 1)[1]: v[0] for k, v in results["escalation-ladder"].headline().items()
             if k.startswith("trigger_fired_month.")}
    months = load_scenario("escalation-ladder").months
    first = fired["china-answers-affiliates-rule"]
    # the Affiliates Rule's suspension ends on 10 November 2026: mid-November is the first month
    # the rule is in force after the watch starts
    assert months[int(first)] == "2026-11"
    assert fired["us-stops-exports-to-china"] >= fired["us-releases-stockpile"] + 2
    assert fired["china-cuts-all-to-us"] == fired["us-stops-exports-to-china"]


def test_stockpile_named_by_holder_id_takes_its_row_of_the_data(dataset):
    sc = load_scenario("escalation-ladder")
    net, _ = compile_scenario(dataset, sc)
    inp = compile_responses(dataset, sc, net)
    row = dataset.stockpiles.set_index("holder_id").loc["US_NDS_NDFEB"]
    assert inp.sp_ids == ("US_NDS_NDFEB",)
    assert inp.sp_initial[0] == row["quantity_t"]
    assert net.countries[inp.sp_country[0]] == row["country"]
    assert net.grades[inp.sp_index[0]] == row["item"] and inp.sp_magnet[0]
    # a holder the data do not know needs its own country, item and level
    bare = scenario_from_dict({"name": "x", "responses": {"stockpiles": [{"holder": "NEW"}]}})
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, bare)
    assert ("responses.stockpiles[0] (holder 'NEW'): give country, item, tonnes or "
            "days_of_cover") in str(info.value)


def test_allied_buildout_arrives_after_lead_times(dataset, results):
    sc = load_scenario("allied-buildout-2030")
    net, _ = compile_scenario(dataset, sc)
    inp = compile_responses(dataset, sc, net)
    d = results["allied-buildout-2030"].data
    new = d["capacity_new"].values[0]  # [T, 3, C]
    first_decision = int(np.argmax(inp.decision_months))
    for stage in range(3):
        for c in np.where(inp.build[stage])[0]:
            arrived = np.nonzero(new[:, stage, c] > 0)[0]
            if arrived.size:
                assert arrived[0] >= first_decision + inp.lead_months[stage, c]
    # mines take longer than the horizon (15.7 years from data/lead_times.csv): none arrive
    assert inp.lead_months[0, net.countries.index("USA")] == round(15.7 * 12)
    assert new[:, 0].max() == 0
    assert d["capacity_new"].sel(capacity_stage="magnet").isel(month=-1).sum() > 0
    head = results["allied-buildout-2030"].headline()
    assert head["residue_t_total"][0] > 0 and head["policy_cost_usd_total"][0] > 0


def test_quota_2010_prices_rise_for_months_then_ease(results):
    d = results["quota-2010"].data
    dy = d["price"].sel(item="Dy2O3", market="ex_china").values[0]
    peak = int(np.argmax(dy))
    assert peak >= 3  # rises for months, not in one step
    assert dy[-1] < dy[peak]
    # inside China the quota leaves material at home: the domestic price falls
    china = d["price"].sel(item="Dy2O3", market="china").values[0]
    assert china[-1] < china[0]


def test_errors_name_field_value_and_rule(dataset):
    raw = {"name": "x", "responses": {
        "stockpiles": [{"holder": "A", "country": "XXX", "item": "NdFeB_std", "tonnes": 5}],
        "price_floors": [{"item": "nope", "start": "2040-01"}],
        "triggers": [{"id": "t", "when": {"fired": "missing"},
                      "then": {"type": "stockpile_release", "holder": "B"}}],
        "capacity": {"build_in": ["ZZZ"]}}}
    sc = scenario_from_dict(raw)
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, sc)
    text = "\n".join(info.value.errors)
    for expected in ("responses.stockpiles[0].country (value 'XXX')",
                     "responses.price_floors[0].item (value 'nope')",
                     "responses.price_floors[0].start (value '2040-01'): outside the horizon",
                     "responses.triggers[0].when.fired (value 'missing')",
                     "responses.triggers[0].then.holder (value 'B')",
                     "responses.capacity.build_in[0] (value 'ZZZ')"):
        assert expected in text
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({"name": "x", "responses": {"stockpiles": [
            {"holder": "A", "country": "USA", "item": "NdFeB_std", "tonnes": 1,
             "days_of_cover": 2}]}})
    assert "tonnes or as days_of_cover, not both" in str(info.value)
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({"name": "x", "responses": {"capacity": {
            "target_share": {"separation": 1.5}}}})
    assert ("responses.capacity.target_share: separation (value 1.5): a share must be between "
            "0 and 1") in info.value.errors
    # codes that exist but cannot act: Japan is inside ROW in 2024, a magnet has no price,
    # a trigger waiting for itself, an exporter restricting its own market
    raw = {"name": "x", "responses": {
        "price_floors": [{"item": "NdPr_oxide", "country": "JPN", "start": "2025-01"}],
        "triggers": [{"id": "t", "when": {"fired": "t"},
                      "then": {"type": "trade_restriction", "exporter": "CHN",
                               "importers": ["CHN"]}}]}}
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, scenario_from_dict(raw))
    text = "\n".join(info.value.errors)
    assert "responses.triggers[0].when.fired (value 't'): a trigger cannot wait" in text
    assert "responses.triggers[0].then.importers (value 'CHN')" in text
    raw["responses"].pop("triggers")
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, scenario_from_dict(raw))
    assert ("responses.price_floors[0].country (value 'JPN'): not modelled separately"
            in str(info.value))
    raw["responses"]["price_floors"] = [{"item": "NdFeB_std", "start": "2025-01",
                                         "floor_usd_per_kg": 80}]
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, scenario_from_dict(raw))
    assert "responses.price_floors[0].item (value 'NdFeB_std'): has no base-year price" in str(
        info.value)
    # the US$110/kg default is NdPr's: other items need their own floor
    raw["responses"]["price_floors"] = [{"item": "La2O3", "start": "2025-01"}]
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, scenario_from_dict(raw))
    assert "responses.price_floors[0].floor_usd_per_kg: required for item 'La2O3'" in str(
        info.value)
    # triggers waiting for each other can never fire
    raw["responses"] = {"triggers": [
        {"id": "a", "when": {"fired": "b"}, "then": {"type": "stockpile_release", "holder": "h"}},
        {"id": "b", "when": {"fired": "a"}, "then": {"type": "stockpile_release", "holder": "h"}}],
        "stockpiles": [{"holder": "h", "country": "USA", "item": "NdFeB_std", "tonnes": 1}]}
    with pytest.raises(ScenarioError) as info:
        simulate(dataset, scenario_from_dict(raw))
    assert "waits in a cycle (a -> b -> a)" in str(info.value)
