"""Company exposure: hand-worked stock-outs, invariants, and the example BOMs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from rareflow import load_dataset, load_scenario
from rareflow.cli import app
from rareflow.exposure import (
    Bom,
    analyse,
    load_bom,
    months_to_stockout,
    run_component,
    stock_to_ride_out,
)
from rareflow.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
DATASET = load_dataset()


def test_stockout_by_hand():
    # need 10 t/month; one month of stock (52/12 weeks) = 10 t; arrivals 10, 5, 5, 5, 10:
    # stock after each month 10, 5, 0, -5 -> short in month 3
    path = run_component(10.0, np.array([10.0, 5.0, 5.0, 5.0, 10.0]), 52 / 12)
    assert path.tolist() == pytest.approx([10.0, 5.0, 0.0, -5.0, 0.0])
    assert months_to_stockout(path, start=0) == 3
    assert months_to_stockout(path, start=1) == 2
    # stock needed to ride out those arrivals: worst cumulative deficit 15 t = 1.5 months
    assert stock_to_ride_out(10.0, np.array([10.0, 5.0, 5.0, 5.0, 10.0])) == pytest.approx(
        1.5 * 52 / 12)


@settings(max_examples=40, deadline=None)
@given(arrivals=st.lists(st.floats(0, 20), min_size=3, max_size=24),
       low=st.floats(0, 10), extra=st.floats(0, 20))
def test_more_inventory_never_brings_stockout_earlier(arrivals, low, extra):
    a = np.array(arrivals)
    first = months_to_stockout(run_component(10.0, a, low), 0)
    later = months_to_stockout(run_component(10.0, a, low + extra), 0)
    assert later >= first


def _bom(country: str, supplier: str, grade: str = "NdFeB_high_temp", weeks: float = 4.0):
    return Bom.model_validate({
        "company": "T", "country": country, "products": [{
            "name": "P", "units_per_month": 1000, "value_per_unit_usd": 10000,
            "components": [{"name": "magnets", "magnet_kg": 2.0, "grade": grade,
                            "inventory_weeks": weeks,
                            "suppliers": [{"name": "S", "country": supplier, "share": 1.0}]}]}]})


def test_bom_without_china_exposure_is_untouched_by_china_only_rules(monkeypatch):
    # Direct effect: in a world where China-only rules stop every Chinese supplier and nothing
    # else, a BOM without Chinese suppliers loses nothing. (Through the markets a Chinese rule
    # can still move other makers' element supply; the simulation carries that on purpose.)
    import rareflow.exposure as ex

    def availability(self, supplier, company, grade, military):
        runs, months = self.data.sizes["run"], len(self.months)
        return np.zeros((runs, months)) if supplier.country == "CHN" else np.ones((runs, months))

    monkeypatch.setattr(ex._World, "availability", availability)
    sc = scenario_from_dict({"name": "t", "end": "2025-12"})
    clean = analyse(_bom("USA", "USA", weeks=0.0), DATASET, sc)["products"][0]
    exposed = analyse(_bom("USA", "CHN", weeks=0.0), DATASET, sc)["products"][0]
    assert clean["units_at_risk"]["p50"] == 0
    assert clean["months_to_stockout"]["p50"] is None
    assert exposed["units_at_risk"]["p50"] == pytest.approx(1000 * 24)


def test_china_rule_is_not_named_for_a_bom_without_china_suppliers():
    ban = {"rule_id": "T", "actor": "CHN", "mechanism": "ban", "forms": ["magnet"],
           "destinations_mode": "include", "destinations": ["USA"], "effective": "2025-03-01"}
    banned = scenario_from_dict({"name": "ban", "end": "2026-12", "policies": {"rules": [ban]}})
    clean = analyse(_bom("USA", "USA"), DATASET, banned)["products"][0]
    assert clean["binding"]["rule"] is None and clean["export_rules"] == []
    exposed = analyse(_bom("USA", "CHN"), DATASET, banned)["products"][0]
    assert exposed["binding"]["rule"] == "T"
    assert exposed["units_at_risk"]["p50"] > clean["units_at_risk"]["p50"]


def test_lower_dy_grade_never_increases_exposure_to_dy_rules():
    sc = load_scenario("april-2025")
    high = analyse(_bom("DEU", "CHN", "NdFeB_high_temp"), DATASET, sc)["products"][0]
    std = analyse(_bom("DEU", "CHN", "NdFeB_std"), DATASET, sc)["products"][0]
    assert std["units_at_risk"]["p50"] <= high["units_at_risk"]["p50"]
    assert high["binding"]["element"] and "Dy" in high["binding"]["element"]
    assert std["binding"]["rule"] != "CN-2025-18-MHREE"


def test_military_end_use_is_refused_by_rules_that_deny_it():
    bom = _bom("USA", "CHN", "SmCo", weeks=0.0)
    bom.products[0].end_use = "military"
    sc = load_scenario("history-2025")
    out = analyse(bom, DATASET, sc)["products"][0]
    assert out["months_to_stockout"]["p50"] == 0  # refused from the first month of No. 18
    assert out["binding"]["rule"] == "CN-2025-18-MHREE"


@pytest.mark.parametrize("name", ["ev-maker", "wind-turbine-maker", "defense-contractor"])
def test_example_boms_untouched_without_disruption_and_worse_under_embargo(name):
    """Without controls nothing runs out (availability is measured against the undisrupted
    run); a full US embargo on top of the 2025 rules never helps."""
    bom = load_bom(ROOT / "examples" / "bom" / f"{name}.yaml", DATASET)
    short = load_scenario("baseline").model_copy(update={"end": "2026-12"})
    calm = analyse(bom, DATASET, short)["products"][0]
    assert calm["months_to_stockout"]["p50"] is None and calm["units_at_risk"]["p50"] == 0
    embargo = analyse(bom, DATASET, load_scenario("us-embargo"))["products"][0]
    assert embargo["mitigations"]
    assert embargo["months_to_stockout"]["p50"] is not None  # every example is exposed
    if name == "defense-contractor":  # military end use is refused; 52 weeks of stock first
        assert embargo["months_to_stockout"]["p50"] >= 12
    else:  # civil users with about a month of stock run out within half a year
        assert embargo["months_to_stockout"]["p50"] <= 6


def test_cli_exposure_json_and_bad_bom(tmp_path):
    res = CliRunner().invoke(app, ["exposure", str(ROOT / "examples/bom/ev-maker.yaml"),
                                   "--scenario", "history-2025", "--json"])
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["products"][0]["binding"]["supplier"].endswith("(CHN)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("company: X\ncountry: XXX\nproducts:\n  - name: P\n    units_per_month: -1\n"
                   "    value_per_unit_usd: 1\n    components: []\n")
    res = CliRunner().invoke(app, ["exposure", str(bad)])
    assert res.exit_code == 2
    assert "products[0].units_per_month (value -1)" in res.stderr
    assert "products[0].components" in res.stderr


def test_csv_bom_matches_yaml(tmp_path):
    csv_text = (
        "company,country,product,units_per_month,value_per_unit_usd,end_use,"
        "export_destinations,component,magnet_kg,grade,inventory_weeks,supplier,"
        "supplier_country,stage,share,lead_time_weeks\n"
        "T,DEU,P,1000,10000,civil,,magnets,2.0,NdFeB_high_temp,4,S,CHN,magnet,1.0,0\n")
    path = tmp_path / "bom.csv"
    path.write_text(csv_text)
    bom = load_bom(path, DATASET)
    assert bom == _bom("DEU", "CHN")


def test_alternatives_share_one_gap_by_hand():
    """China stops after month 1; two alternatives (60 % each, no qualification time, fully
    available) cover 60 % + the remaining 40 %, never 120 %."""
    from rareflow.exposure import _component_arrivals

    class World:
        def availability(self, supplier, country, grade, military):
            if supplier.country == "CHN":
                return np.array([[1.0, 0.0, 0.0, 0.0]])
            return np.ones((1, 4))

    bom = Bom.model_validate({"company": "x", "country": "DEU", "products": [{
        "name": "p", "units_per_month": 10, "value_per_unit_usd": 1, "components": [{
            "name": "c", "magnet_kg": 1.0, "grade": "NdFeB_std",
            "suppliers": [{"name": "cn", "country": "CHN", "share": 1.0}],
            "alternatives": [
                {"name": "a", "country": "JPN", "qualification_months": 0, "max_share": 0.6},
                {"name": "b", "country": "USA", "qualification_months": 0, "max_share": 0.6}],
        }]}]})
    product = bom.products[0]
    arrivals = _component_arrivals(World(), bom, product, product.components[0], need=10.0)
    np.testing.assert_allclose(arrivals, [[10.0, 10.0, 10.0, 10.0]])
    only_one = product.components[0].model_copy(
        update={"alternatives": product.components[0].alternatives[:1]})
    arrivals = _component_arrivals(World(), bom, product, only_one, need=10.0)
    np.testing.assert_allclose(arrivals, [[10.0, 6.0, 6.0, 6.0]])


def test_availability_is_fill_relative_to_the_undisrupted_run_by_hand():
    """Fill 0.3 where the undisrupted run fills 0.6 is half the usual volume; a route the
    undisrupted run does not fill at all counts as fully available; never above 1."""
    import xarray as xr

    from rareflow.exposure import Supplier, _World

    def fills(values):
        fill = xr.DataArray(
            np.array(values, dtype=float).reshape(1, 3, 1, 1, 1),
            dims=("run", "month", "exporter", "importer", "grade"),
            coords={"month": ["2025-01", "2025-02", "2025-03"], "exporter": ["CHN"],
                    "importer": ["DEU"], "grade": ["NdFeB_std"]})
        return xr.Dataset({"magnet_fill": fill}, coords={"country": ["CHN", "DEU"]})

    class Run:
        def __init__(self, data):
            self.data = data

    world = _World(Run(fills([0.3, 0.2, 0.9])), DATASET, load_scenario("baseline"),
                   reference=Run(fills([0.6, 0.0, 0.6])))
    cn = Supplier(name="cn", country="CHN", share=1.0)
    np.testing.assert_allclose(world.availability(cn, "DEU", "NdFeB_std", military=False),
                               [[0.5, 1.0, 1.0]])


def test_bad_alternative_country_is_named_as_an_alternative():
    bom = {"company": "x", "country": "DEU", "products": [{
        "name": "p", "units_per_month": 1, "value_per_unit_usd": 1, "components": [{
            "name": "c", "magnet_kg": 1.0, "grade": "NdFeB_std",
            "suppliers": [{"name": "cn", "country": "CHN", "share": 1.0}],
            "alternatives": [{"name": "a", "country": "XXX"}]}]}]}
    from rareflow.exposure import BomError, load_bom_dict

    with pytest.raises(BomError) as info:
        load_bom_dict(bom, DATASET)
    assert "products[0].components[0].alternatives[0].country (value 'XXX')" in str(info.value)
