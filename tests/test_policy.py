"""Export controls: the rule mechanisms in the kernel, the licence queue, and ``check``."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rareflow import load_dataset, load_scenario, simulate
from rareflow.api import check
from rareflow.cli import app
from rareflow.policy.check import Shipment
from rareflow.policy.compile import compile_rules
from rareflow.policy.licences import MAX_AGE, LicenceQueue, review_hazards
from rareflow.policy.rules import Rule
from rareflow.scenario import scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
DATASET = load_dataset()
MAGNETS = ["NdFeB_std", "NdFeB_high_temp", "SmCo"]


def _run(rules=None, end="2025-12", events=None, **policies):
    raw = {"name": "t", "end": end, "events": events or [],
           "policies": {"rules": rules or [], **policies}}
    return simulate(DATASET, scenario_from_dict(raw))


def _rule(**fields):
    base = {"rule_id": "T-RULE", "actor": "CHN", "mechanism": "licence",
            "elements": ["Dy", "Tb"], "forms": ["oxide", "metal", "magnet"],
            "magnet_content": ["Dy", "Tb"], "effective": "2024-07-01"}
    base.update(fields)
    return base


def _same(a, b):
    for var in ("production", "trade", "inventory", "consumption", "shortfall", "price"):
        assert np.allclose(a.data[var].values, b.data[var].values, rtol=0, atol=1e-9), var


@pytest.fixture(scope="module")
def free():
    return _run()


# ---- identities -----------------------------------------------------------------------------
def test_no_active_rule_is_identical_to_no_policy(free):
    future = _run([_rule(effective="2030-01-01", mechanism="ban")])
    _same(free, future)


def test_licence_with_full_approval_and_no_review_time_changes_nothing(free):
    regime = {"regime_id": "instant", "rule_id": "T-RULE", "start": "2024-01-01",
              "state": "managed_easing", "approval_share": 1.0, "review_days_median": 0.001,
              "review_days_p90": 0.002}
    instant = _run([_rule()], extra_regimes=[regime])
    _same(free, instant)
    assert float(instant.data["licences"].sel(licence_stat="approved").sum()) > 0


# ---- mechanisms -----------------------------------------------------------------------------
def test_ban_cuts_the_channel_to_zero(free):
    ban = _run([_rule(mechanism="ban", destinations_mode="include", destinations=["USA"],
                      forms=["magnet"], magnet_content=[])])
    months = [i for i, m in enumerate(ban.months) if m >= "2024-07"]
    flows = ban.data["trade"].sel(trade_stage="magnet", exporter="CHN", importer="USA")
    assert float(flows.isel(run=0, month=months).max()) == 0.0
    short = lambda r: float(r.data["shortfall"].sel(country="USA").sum())  # noqa: E731
    assert short(ban) > short(free)


def test_longer_review_deepens_and_delays_the_trough():
    def dy_imports(median):
        regime = {"regime_id": "r", "rule_id": "T-RULE", "start": "2024-01-01",
                  "state": "shock", "approval_share": 0.9, "review_days_median": median,
                  "review_days_p90": median * 1.5}
        res = _run([_rule()], extra_regimes=[regime])
        flows = res.data["trade"].sel(trade_stage="magnet", exporter="CHN").isel(run=0)
        series = flows.drop_sel(importer="CHN").sum("importer").values
        return series

    fast, slow = dy_imports(20), dy_imports(120)
    window = slice(6, 18)
    assert slow[window].min() < fast[window].min()
    assert int(np.argmin(slow[window])) >= int(np.argmin(fast[window]))


def test_suspension_restores_flows_from_its_date(free):
    ban = _rule(mechanism="ban", forms=["magnet"], magnet_content=[], effective="2024-03-01",
                suspended="2024-09-01")
    res = _run([ban])
    exports = res.data["trade"].sel(trade_stage="magnet", exporter="CHN").isel(run=0)
    exports = exports.drop_sel(importer="CHN").sum("importer")
    months = res.months
    assert all(float(exports[i]) == 0 for i, m in enumerate(months) if "2024-03" <= m < "2024-09")
    assert all(float(exports[i]) > 0 for i, m in enumerate(months) if m >= "2024-09")


def test_suspension_that_lapses_applies_the_rule_again():
    rule = Rule.model_validate(_rule(suspended="2025-11-07", suspended_until="2026-11-11"))
    assert rule.active_on(dt.date(2025, 6, 1))
    assert not rule.active_on(dt.date(2026, 6, 1))
    assert rule.active_on(dt.date(2026, 11, 11))


def test_military_end_use_is_refused_whatever_the_regime():
    # one magnet grade, all of its need military: approval becomes 0 on that channel
    rules = [Rule.model_validate(_rule(military_end_use="denied"))]
    tensors = compile_rules(rules, [], ["2025-01"], ["CHN", "USA"], ["Nd", "Dy"],
                            [{"Nd", "Dy"}], military_share=np.ones((1, 2, 1)))
    assert tensors.magnet.required[0, 0, 1, 0]
    assert tensors.magnet.approval[0, 0, 1, 0] == 0.0
    civil = compile_rules(rules, [], ["2025-01"], ["CHN", "USA"], ["Nd", "Dy"],
                          [{"Nd", "Dy"}], military_share=np.zeros((1, 2, 1)))
    assert civil.magnet.approval[0, 0, 1, 0] == pytest.approx(0.9)


def test_quota_caps_exports():
    sc = load_scenario("quota-2010")
    res = simulate(DATASET, sc)
    months = [i for i, m in enumerate(res.months) if m.startswith("2011")]
    refined = res.data["trade"].sel(trade_stage="refined", exporter="CHN").isel(run=0,
                                                                               month=months)
    exports = float(refined.drop_sel(importer="CHN").sum())
    assert exports <= 30_184 * 1.0001  # 2011 quota, t
    assert float(res.data["shortfall"].isel(run=0, month=months).sum()) > 0


# ---- the licence queue by hand --------------------------------------------------------------
def test_queue_by_hand():
    # 100 t/month requested; every review takes one month or less (hazard 1 at age 0);
    # approval 0.6; per-shipment validity: 60 t licensed and 40 denied each month.
    q = LicenceQueue.empty(1, (1,))
    hazards = np.ones((MAX_AGE, 1))
    stats = q.step(np.array([[100.0]]), np.array([True]), np.array([0.6]), hazards,
                   np.array([1.0]))
    assert stats["applications"][0, 0] == pytest.approx(100.0)
    assert stats["approved"][0, 0] == pytest.approx(60.0)
    assert stats["denied"][0, 0] == pytest.approx(40.0)
    share = q.allowed_share(np.array([[100.0]]), np.array([True]), np.array([0.0]))
    assert share[0, 0] == pytest.approx(0.6)


def test_queue_admits_a_channel_required_later_in_a_reused_array():
    # a caller may reuse one `required` array and change it between months: the second
    # channel, required from month 2, must then need a licence (approval 0: nothing ships)
    q = LicenceQueue.empty(1, (2,))
    hazards = np.ones((MAX_AGE, 2))
    required = np.array([True, False])
    requested = np.array([[100.0, 100.0]])
    for month in range(2):
        q.step(requested, required, np.array([0.0, 0.0]), hazards, np.array([1.0, 1.0]))
        share = q.allowed_share(requested, required, np.array([0.0, 0.0]))
        assert share[0].tolist() == ([0.0, 1.0] if month == 0 else [0.0, 0.0])
        required[1] = True


def test_queue_refuses_a_channel_outside_its_candidates():
    # the kernel sizes a queue by the channels a policy can ever require; a channel outside
    # them would ship unlicensed, so requiring one is an error, even after other admissions
    q = LicenceQueue.empty(2, (3,), channels=np.array([True, True, False]))
    hazards = np.ones((MAX_AGE, 3))
    args = (np.array([0.5, 0.5, 0.5]), hazards, np.array([1.0, 1.0, 1.0]))
    q.step(np.full((2, 3), 10.0), np.array([True, False, False]), *args)
    q.step(np.full((2, 3), 10.0), np.array([True, True, False]), *args)
    assert q.index.tolist() == [0, 1]
    outside = np.array([[False, False, False], [False, False, True]])  # in one run only
    with pytest.raises(ValueError, match="outside the queue's candidate channels"):
        q.step(np.full((2, 3), 10.0), outside, *args)


def test_backlog_forms_when_capacity_binds():
    q = LicenceQueue.empty(1, (1, 1))
    hazards = np.ones((MAX_AGE, 1, 1))
    stats = q.step(np.array([[[100.0]]]), np.array([[True]]), np.array([[1.0]]), hazards,
                   np.array([[1.0]]), capacity=np.array([30.0]))
    assert stats["approved"][0, 0, 0] == pytest.approx(30.0)
    assert stats["backlog"][0, 0, 0] == pytest.approx(70.0)


def test_review_hazards_match_the_lognormal():
    h = review_hazards(np.array([1.0]), np.array([2.0]))
    # median one month: half decided within the first month
    assert h[0, 0] == pytest.approx(0.5, abs=1e-6)
    assert h[-1, 0] == 1.0
    # later ages from the lognormal worked out here: sigma = ln(p90/median)/z90, the share
    # decided in month a among those still waiting is (F(a+1) - F(a)) / (1 - F(a))
    from scipy.stats import lognorm

    median, p90 = 1.5, 4.0
    sigma = math.log(p90 / median) / 1.2816
    cdf = lognorm(s=sigma, scale=median).cdf
    h = review_hazards(np.array([median]), np.array([p90]))
    for age in (1, 2, 5):
        expected = (cdf(age + 1) - cdf(age)) / (1 - cdf(age))
        assert h[age, 0] == pytest.approx(expected, rel=1e-3), age
    # the queue built from these hazards decides about 90% of a cohort by the p90 month
    survive = np.cumprod(1 - h[:, 0])
    assert 1 - survive[3] == pytest.approx(cdf(4.0), rel=1e-3)


# ---- scenarios ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["history-2025", "april-2025", "october-2025-full",
                                  "us-embargo", "japan-2010", "quota-2010",
                                  "suspension-lapses-2026", "suspension-extended-2026"])
def test_policy_scenarios_run_and_report_licences(name):
    res = simulate(DATASET, load_scenario(name))
    summary = res.summary()
    for key in ("licences.applications", "licences.approved", "licences.denied",
                "licences.backlog", "licences.median_wait_days"):
        assert key in summary["series"]
    assert summary["checks"]["mass_balance_max_rel_error"] <= 1e-9
    assert summary["checks"]["min_stock_t"] >= -1e-6


def test_history_2025_opens_a_price_gap_between_markets():
    res = simulate(DATASET, load_scenario("history-2025"))
    s = res.series()
    months = [i for i, m in enumerate(res.months) if "2025-04" <= m <= "2025-12"]
    gap = s["price_usd_per_kg.Dy2O3.ex_china"][0][months] - s["price_usd_per_kg.Dy2O3.china"][0][
        months]
    assert gap.max() > 0
    assert s["licences.applications"][0][months].sum() > 0


def test_lapse_and_extension_differ_only_after_november_2026():
    lapse = simulate(DATASET, load_scenario("suspension-lapses-2026"))
    extend = simulate(DATASET, load_scenario("suspension-extended-2026"))
    before = [i for i, m in enumerate(lapse.months) if m < "2026-11"]
    a = lapse.data["trade"].isel(run=0, month=before).values
    b = extend.data["trade"].isel(run=0, month=before).values
    assert np.allclose(a, b)
    after = [i for i, m in enumerate(lapse.months) if "2026-11" <= m < "2027-11"]
    apps = lambda r: r.series()["licences.applications"][0][after].sum()  # noqa: E731
    assert apps(lapse) > apps(extend)


# ---- check ----------------------------------------------------------------------------------
def _ship(date, exporter, destination, items, end_use="civil"):
    return Shipment.model_validate({
        "date": date, "exporter": exporter, "destination": destination, "end_use": end_use,
        "items": [{"item": i, "origin": o, "value_share": v} for i, o, v in items]})


CASES = [
    # (shipment, licence_required, prohibited, rule expected among hits) worked out from the rules
    (_ship("2025-06-01", "CHN", "USA", [("Dy2O3", "CHN", 1.0)]), True, False, "CN-2025-18-MHREE"),
    (_ship("2025-03-01", "CHN", "USA", [("Dy2O3", "CHN", 1.0)]), True, False,
     "CN-2015-RE-EXPORT-LICENCE"),  # before No. 18: only the ordinary licence
    (_ship("2025-07-01", "CHN", "DEU", [("NdFeB_std", "CHN", 1.0)]), False, False, None),
    (_ship("2025-07-01", "CHN", "DEU", [("NdFeB_high_temp", "CHN", 1.0)]), True, False,
     "CN-2025-18-MHREE"),
    (_ship("2025-09-01", "CHN", "USA", [("SmCo", "CHN", 1.0)], "military"), True, True,
     "CN-2025-18-MHREE"),
    (_ship("2010-10-15", "CHN", "JPN", [("CeO2", "CHN", 1.0)]), True, True, "CN-2010-JAPAN-HALT"),
    (_ship("2010-12-15", "CHN", "JPN", [("CeO2", "CHN", 1.0)]), True, False,
     "CN-2010-RE-EXPORT-QUOTA"),  # halt over, quota remains
    (_ship("2026-12-01", "KOR", "USA", [("NdFeB_high_temp", "KOR", 0.98),
                                        ("Dy_metal", "CHN", 0.02)]), True, False,
     "CN-2025-61-L1-VALUE"),
    (_ship("2026-12-01", "KOR", "USA", [("NdFeB_high_temp", "KOR", 0.9991),
                                        ("Dy_metal", "CHN", 0.0009)]), False, False, None),
    (_ship("2026-06-01", "KOR", "USA", [("NdFeB_high_temp", "KOR", 0.98),
                                        ("Dy_metal", "CHN", 0.02)]), False, False, None),
    # ^ the value rule is suspended until 11 Nov 2026
]


@pytest.mark.parametrize(("shipment", "licence", "prohibited", "rule"), CASES)
def test_check_hand_worked_cases(shipment, licence, prohibited, rule):
    answer = check(shipment, DATASET)
    assert answer["licence_required"] is licence, answer["reasons"]
    assert answer["prohibited"] is prohibited, answer["reasons"]
    ids = [r["id"] for r in answer["rules"]]
    if rule:
        assert rule in ids
    if not licence:
        assert not [r for r in answer["rules"] if r["outcome"] != "none"]


def test_extraterritorial_threshold_switches_at_its_value():
    at = _ship("2026-12-01", "KOR", "USA", [("NdFeB_high_temp", "KOR", 0.999),
                                            ("Dy_metal", "CHN", 0.001)])
    below = _ship("2026-12-01", "KOR", "USA", [("NdFeB_high_temp", "KOR", 0.99901),
                                               ("Dy_metal", "CHN", 0.00099)])
    assert check(at, DATASET)["licence_required"] is True
    assert check(below, DATASET)["licence_required"] is False


def test_check_with_a_scenario_uses_its_dates():
    ship = _ship("2026-12-01", "KOR", "USA", [("NdFeB_high_temp", "KOR", 0.98),
                                              ("Dy_metal", "CHN", 0.02)])
    extended = check(ship, DATASET, load_scenario("suspension-extended-2026"))
    assert extended["licence_required"] is False
    assert any("suspended" in r for r in extended["reasons"])


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "shipments").glob("*.yaml")))
def test_cli_answers_the_example_shipments(path):
    result = CliRunner().invoke(app, ["check", str(path), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert {"licence_required", "prohibited", "rules", "reasons"} <= set(answer)
    assert answer["reasons"]


def test_cli_rejects_malformed_shipment_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("date: 2025-13-01\nexporter: CHN\ndestination: USA\nend_use: peaceful\n"
                   "items:\n  - item: Dy2O3\n    origin: CHN\n    value_share: 2\n")
    result = CliRunner().invoke(app, ["check", str(bad)])
    assert result.exit_code == 2
    for field in ("date", "end_use", "items[0].value_share"):
        assert field in result.stderr, result.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("date: 2025-06-01\nexporter: CHN\ndestination: XXX\n"
                       "items:\n  - item: Unobtainium\n    origin: CHN\n")
    result = CliRunner().invoke(app, ["check", str(unknown)])
    assert result.exit_code == 2
    assert "destination (value 'XXX')" in result.stderr
    assert "items[0].item (value 'Unobtainium')" in result.stderr
