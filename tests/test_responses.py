"""The responses model on the two-country network: directions of effect and hand-worked cases.

Each test switches on one response with parameters chosen in the test, so the expected numbers
follow from the equations in rareflow.sim.responses (docs/model.md, "Responses").
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rareflow.policy.triggers import KINDS, NEVER, TriggerInputs
from rareflow.sim.kernel import simulate_arrays
from rareflow.sim.responses import ResponseInputs
from small_network import controls, two_country_network


def neutral(net, **changes) -> ResponseInputs:
    """Every response present but idle: no options, no costs, no holders, elasticity zero."""
    t, c = len(net.months), len(net.countries)
    s, e = len(net.sectors), len(net.elements)
    inp = ResponseInputs(
        prices=True, demand=True, substitution=True, recycling=True, shutdown=True,
        capacity=True, market_of_country=np.array([0 if x == "CHN" else 1
                                                   for x in net.countries]),
        element_base_price=np.array([60.0] * e), elasticity_long_run=0.0,
        adjustment_months=1.0, demand_floor=0.5,
        opt_sector=np.zeros(0, int), opt_element=np.zeros(0, int), opt_reduction=np.zeros(0),
        opt_max=np.zeros(0), opt_delay=np.zeros(0), opt_ramp=np.zeros(0),
        opt_trigger=np.zeros(0), opt_weight=np.zeros((2, 0)),
        survival=np.zeros((12, s)), historical_inflow=np.zeros(s), collection0=np.zeros(s),
        recovery=np.zeros(s), collection_elasticity=0.0, collection_boost=0.0,
        cash_cost=np.full((3, c), np.nan), shutdown_months=1.0, shutdown_start=0,
        build=np.zeros((3, c), bool), full_cost=np.full((3, c), np.nan),
        capex=np.full((3, c), np.nan), lead_months=np.zeros((3, c), int),
        ramp_months=np.ones(3, int), hurdle=1.0, subsidy_share=0.0,
        target_share=np.full(3, np.nan), decision_months=np.zeros(t, bool),
        stage_price_item=np.array([-1, 0, -1]), ndpr=np.array([True] * e),
        feed_ndpr_share=1.0,
        residue_t_per_t=np.zeros(c), thorium_kg_per_t=np.zeros(c),
        floor_item=np.zeros(0, int), floor_country=np.zeros(0, int), floor_value=np.zeros(0),
        floor_active=np.zeros((t, 0), bool), floor_elements=np.zeros((0, e), bool),
        sp_ids=(), sp_country=np.zeros(0, int), sp_magnet=np.zeros(0, bool),
        sp_index=np.zeros(0, int), sp_item=np.zeros(0, int), sp_initial=np.zeros(0),
        sp_target=np.zeros(0), sp_threshold=np.zeros(0), sp_sectors=np.zeros((0, s), bool),
        sp_max_release=np.zeros(0), sp_refill=np.zeros(0), sp_refill_below=np.zeros(0),
        sp_start=np.zeros(0, int),
    )
    return replace(inp, **changes) if changes else inp


def short_network(months: int = 12, **changes):
    """Only the USA makes magnets; its users need 200 t/month (60 t Nd) while the mines give
    40 t REO (36 t Nd once separated): the ex-China market is short and its price rises."""
    base = dict(mine_capacity=np.tile([40.0, 0.0], (months, 1)),
                magnet_capacity=np.tile([0.0, 1000.0], (months, 1)))
    base.update(changes)
    return two_country_network(months=months, need_b=200.0, **base)


def test_idle_responses_change_nothing():
    net = short_network()
    plain = simulate_arrays(net, controls(net))
    idle = simulate_arrays(net, controls(net), responses=neutral(net))
    for key in ("production", "shortfall", "price", "magnet_trade", "inventory"):
        np.testing.assert_allclose(idle[key], plain[key], rtol=0, atol=1e-12, err_msg=key)


def test_higher_price_lowers_demand_after_its_lag():
    net = short_network(months=24)
    base = simulate_arrays(net, controls(net), responses=neutral(net))
    assert base["price"][0, :, 0, 1].max() > 60.0  # the USA is short: ex-China price rises
    tau, eps = 6.0, 0.4
    out = simulate_arrays(net, controls(net), responses=neutral(
        net, elasticity_long_run=eps, adjustment_months=tau))
    factor = out["demand_factor"][0, :, 1]
    # month 0 uses the factor before any price was seen
    assert factor[0] == pytest.approx(1.0)
    # after month 0's price M0, the factor is 1 + (M0^-eps - 1) / tau (worked from the equation)
    m0 = out["price"][0, 0, 0, 1] / 60.0
    assert factor[1] == pytest.approx(1.0 + (max(m0 ** -eps, 0.5) - 1.0) / tau, rel=1e-12)
    assert factor[-1] < factor[1] < 1.0  # keeps falling towards the long-run level
    assert out["need"][0, -1, 1, 0] < base["need"][0, -1, 1, 0]
    # China saw no price rise: its demand is unchanged
    np.testing.assert_allclose(out["demand_factor"][0, :, 0], 1.0)


def test_floor_keeps_a_producer_running_when_the_price_falls_below_cost():
    # USA separates; its cash cost (80 US$/kg) is above the price (60): without a floor the
    # plant winds down at 1/shutdown_months a month; with a floor of 110 it keeps running.
    net = two_country_network(months=6, need_b=10.0)
    cash = np.full((3, 2), np.nan)
    cash[1, 1] = 80.0
    common = {"cash_cost": cash, "shutdown_months": 2.0}
    no_floor = simulate_arrays(net, controls(net), responses=neutral(net, **common))
    util = no_floor["capacity_run"][0, :, 1, 1] / net.sep_capacity[0, 1]
    # month 0 runs at 1; each month halves the gap to 0 (u <- u + (0 - u) / 2)
    np.testing.assert_allclose(util, [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125])
    floor = neutral(net, **common, floor_item=np.array([0]), floor_country=np.array([1]),
                    floor_value=np.array([110.0]), floor_active=np.ones((6, 1), bool),
                    floor_elements=np.ones((1, 1), bool))
    with_floor = simulate_arrays(net, controls(net), responses=floor)
    np.testing.assert_allclose(with_floor["capacity_run"][0, :, 1, 1], net.sep_capacity[0, 1])
    # the government pays (floor - price) on every kg the USA separates
    separated = with_floor["refined_output"][0, :, 1, 0]
    paid = (110.0 - with_floor["price"][0, :, 0, 1]) * separated * 1e3
    np.testing.assert_allclose(with_floor["policy_cost"][0, :, 0], paid, rtol=1e-12)
    assert with_floor["production"][0, -1, 1, 1] > no_floor["production"][0, -1, 1, 1]


def _trigger(net, **fields) -> TriggerInputs:
    t, c, e, g = len(net.months), 2, 1, 1
    base = dict(ids=("t0",), kind=np.array([KINDS.index("shortfall_share_above")]),
                threshold=np.array([0.05]), rule_active=np.zeros((t, 1), bool),
                country=np.array([1]), sector_mask=np.ones((1, 1), bool),
                exporter=np.array([-1]), importer=np.array([-1]), item=np.array([-1]),
                market=np.array([1]), other=np.array([-1]), for_months=np.array([1]),
                watch_from=np.array([0]),
                delay_months=np.array([1]), duration_months=np.array([NEVER]),
                restrict_conc=np.ones((1, c, c)), restrict_refined=np.ones((1, c, c, e)),
                restrict_magnet=np.ones((1, c, c, g)),
                release_holder=np.array([-1]))
    base.update(fields)
    return TriggerInputs(**base)


def test_trigger_fires_in_the_month_its_condition_first_holds_and_not_before():
    # USA need 10 t/month (fully served) until month 4, then 3,000 t/month (beyond magnet capacity)
    net = two_country_network(months=8, need_b=10.0)
    need = net.magnet_need.copy()
    need[4:, 1, 0] = 3000.0
    net = replace(net, magnet_need=need)
    out = simulate_arrays(net, controls(net), responses=neutral(net, triggers=_trigger(net)))
    share = out["shortfall"][0, :, 1, 0] / out["need"][0, :, 1, 0]
    first = int(np.argmax(share > 0.05))
    assert first == 4 and (share[:4] <= 0.05).all()
    assert out["trigger_fired_month"][0, 0] == first
    # for_months=2 fires one month later
    late = simulate_arrays(net, controls(net), responses=neutral(
        net, triggers=_trigger(net, for_months=np.array([2]))))
    assert late["trigger_fired_month"][0, 0] == first + 1


def test_fired_trigger_blocks_flows_from_its_delay_on():
    # a rule-in-force condition from month 2 fires then; its action (CHN blocks magnets to the
    # USA) applies from month 2 + delay 2 = 4
    net = two_country_network(months=8, need_b=10.0)
    active = np.zeros((8, 1), bool)
    active[2:] = True
    block = np.ones((1, 2, 2, 1))
    block[0, 0, 1, 0] = 0.0
    trig = _trigger(net, kind=np.array([KINDS.index("rule_in_force")]), rule_active=active,
                    delay_months=np.array([2]), restrict_magnet=block)
    out = simulate_arrays(net, controls(net), responses=neutral(net, triggers=trig))
    assert out["trigger_fired_month"][0, 0] == 2
    flows = out["magnet_trade"][0, :, 0, 1]
    assert (flows[:4] > 0).all() and (flows[4:] == 0).all()


def _holder(net, **fields) -> dict:
    base = dict(sp_ids=("US",), sp_country=np.array([1]), sp_magnet=np.array([True]),
                sp_index=np.array([0]), sp_item=np.array([-1]), sp_initial=np.array([30.0]),
                sp_target=np.array([30.0]), sp_threshold=np.array([0.01]),
                sp_sectors=np.ones((1, 1), bool), sp_max_release=np.array([8.0]),
                sp_refill=np.array([0.0]), sp_refill_below=np.array([1.0]),
                sp_start=np.array([0]))
    base.update(fields)
    return base


def test_stockpile_releases_within_its_rule_and_never_goes_negative():
    net = short_network(months=10)
    out = simulate_arrays(net, controls(net), responses=neutral(net, **_holder(net)))
    level = out["stockpile_level"][0, :, 0]
    released = -np.diff(np.concatenate([[30.0], level]))
    # short every month from month 1 on (month 0 has no shortfall observed yet): 8 t a month
    # until the 30 t are gone: 0, 8, 8, 8, 6, 0, ...
    np.testing.assert_allclose(released, [0, 8, 8, 8, 6, 0, 0, 0, 0, 0], atol=1e-12)
    assert (level >= 0).all()
    # the released magnets reach users: less shortfall than without the stockpile
    plain = simulate_arrays(net, controls(net), responses=neutral(net))
    assert out["shortfall"][0, 1:5, 1, 0].sum() == pytest.approx(
        plain["shortfall"][0, 1:5, 1, 0].sum() - 30.0, rel=1e-9)


def test_stockpile_refills_only_while_the_price_is_low():
    net = two_country_network(months=6, need_b=10.0)  # no shortage: price stays at base
    cheap = neutral(net, **_holder(net, sp_initial=np.array([0.0]), sp_target=np.array([20.0]),
                                   sp_refill=np.array([5.0]),
                                   sp_refill_below=np.array([1.01])))
    out = simulate_arrays(net, controls(net), responses=cheap)
    np.testing.assert_allclose(out["stockpile_level"][0, :, 0], [5, 10, 15, 20, 20, 20])
    assert (out["policy_cost"][0, :4, 1] > 0).all() and (out["policy_cost"][0, 4:, 1] == 0).all()
    dear = replace(cheap, sp_refill_below=np.array([0.99]))
    out = simulate_arrays(net, controls(net), responses=dear)
    np.testing.assert_allclose(out["stockpile_level"][0, :, 0], 0.0)


def test_new_capacity_arrives_after_its_lead_time_and_ramps_up():
    # the USA is short of magnets; the USA may build magnet plants (decided in month 1 on the
    # gap's 12-month average), lead 3 months, ramp 2 months
    net = short_network(months=12)
    build = np.zeros((3, 2), bool)
    build[2, 1] = True
    decide = np.zeros(12, bool)
    decide[1] = True
    capex = np.full((3, 2), np.nan)
    capex[2, 1] = 1000.0  # US$ per t/yr of magnet capacity
    inp = neutral(net, build=build, decision_months=decide, capex=capex, subsidy_share=0.25,
                  lead_months=np.full((3, 2), 3), ramp_months=np.array([1, 1, 2]))
    out = simulate_arrays(net, controls(net), responses=inp)
    new = out["capacity_new"][0, :, 2, 1]
    assert (new[:4] == 0).all()
    assert new[4] > 0 and new[5] == pytest.approx(2 * new[4]) and new[6] == pytest.approx(new[5])
    # sized to the 12-month average gap seen by month 1 (two months of the gap, each /12)
    gap = out["shortfall"][0, :2, 1, 0]
    first = gap[0] / 12.0
    second = first + (gap[1] - first) / 12.0
    assert new[5] == pytest.approx(second, rel=1e-9)
    # capital committed in the decision month: t/month x 12 x US$ per t/yr; a quarter subsidised
    assert out["investment"][0, 1] == pytest.approx(second * 12 * 1000.0, rel=1e-9)
    assert out["policy_cost"][0, 1, 2] == pytest.approx(0.25 * second * 12 * 1000.0, rel=1e-9)
    assert out["investment"][0, [0, *range(2, 12)]].sum() == 0


def test_substitution_starts_after_its_delay_and_cuts_need():
    net = short_network(months=12)
    inp = neutral(net, opt_sector=np.array([0]), opt_element=np.array([-1]),
                  opt_reduction=np.array([0.5]), opt_max=np.array([0.4]),
                  opt_delay=np.array([3.0]), opt_ramp=np.array([4.0]),
                  opt_trigger=np.array([1.05]), opt_weight=np.array([[0.0], [1.0]]))
    out = simulate_arrays(net, controls(net), responses=inp)
    adoption = out["adoption"][0, :, 1, 0]
    # the ex-China price is above 1.05 x base from month 0: launched at the end of month 2,
    # then +0.1 a month to the 0.4 cap
    np.testing.assert_allclose(adoption[:6], [0, 0, 0.1, 0.2, 0.3, 0.4])
    assert adoption[-1] == pytest.approx(0.4)
    need = out["need"][0, :, 1, 0]
    np.testing.assert_allclose(need[3:7], 200.0 * (1 - 0.5 * adoption[2:6]))


def test_recycling_adds_only_what_exceeds_the_base_year_rate():
    # steady state: a fixed 2-month life and a constant historical inflow of 10 t/month put
    # 10 t/month at end of life; collection 0.2 at base, boosted by 0.3; recovery 0.5;
    # content 0.3 t Nd/t magnet
    net = two_country_network(months=4, need_b=10.0)
    surv = np.zeros((4, 1))
    surv[:2] = 1.0
    inp = neutral(net, survival=surv, historical_inflow=np.array([10.0]),
                  collection0=np.array([0.2]), recovery=np.array([0.5]),
                  collection_boost=0.3)
    out = simulate_arrays(net, controls(net), responses=inp)
    np.testing.assert_allclose(out["recycled"][0, :, 0], 10 * 0.3 * 0.5 * 0.5)  # recovered
    np.testing.assert_allclose(out["recycled"][0, :, 1], 10 * 0.3 * 0.5 * 0.3)  # added
    assert out["balance_error"].max() < 1e-12


def test_pipeline_delay_and_completion_shift_project_capacity_per_run():
    # CHN mines 100 t/month; the USA gets a 40 t/month mine from month 2 (a project, so also
    # in pipeline_capacity). Run 0: on time and complete; run 1: 3 months late, 50% built.
    from rareflow.sim.network import RunParameters

    t = 8
    pipe = np.zeros((3, t, 2))
    pipe[0, 2:, 1] = 40.0
    mine = np.tile([100.0, 0.0], (t, 1)) + pipe[0]
    net = two_country_network(months=t, need_b=10.0, mine_capacity=mine,
                              pipeline_capacity=pipe)
    params = RunParameters(pipeline_delay_months=np.array([0.0, 3.0]),
                           pipeline_completion=np.array([1.0, 0.5]))
    out = simulate_arrays(net, controls(net), runs=2, params=params)
    usa = out["production"][:, :, 0, 1]
    np.testing.assert_allclose(usa[0], [0, 0, 40, 40, 40, 40, 40, 40])
    np.testing.assert_allclose(usa[1], [0, 0, 0, 0, 0, 20, 20, 20])
    np.testing.assert_allclose(out["production"][:, :, 0, 0], 100.0)  # China untouched


def test_content_reduction_adopted_in_both_markets_counts_each_user_once():
    # one sector holds all of grade G's use, half in each market: full adoption everywhere
    # halves Nd in the grade (0.3 -> 0.15), not more
    from rareflow.sim.responses import ResponseState

    net = two_country_network(months=2)
    inp = neutral(net, opt_sector=np.array([0]), opt_element=np.array([0]),
                  opt_reduction=np.array([0.5]), opt_max=np.array([1.0]),
                  opt_delay=np.array([1.0]), opt_ramp=np.array([1.0]),
                  opt_trigger=np.array([0.0]), opt_weight=np.array([[0.5], [0.5]]))
    state = ResponseState(inp, 1, 2, net.grade_content, net.sector_grade, 2, 1)
    state.adoption[:] = 1.0
    assert state.content()[0, 0, 0] == pytest.approx(0.15)


def _blocking_trigger(net, month: int):
    active = np.zeros((len(net.months), 1), bool)
    active[month:] = True
    block = np.ones((1, 2, 2, 1))
    block[0, 0, 1, 0] = 0.0  # CHN -> USA refined Nd
    return _trigger(net, kind=np.array([KINDS.index("rule_in_force")]), rule_active=active,
                    restrict_refined=block)


def test_held_back_material_lowers_the_home_price_only_with_the_prices_switch():
    # both countries make magnets; US makers need more Nd than the USA separates and ask China,
    # which has Nd to spare; a trigger blocks CHN -> USA refined Nd from month 2
    need = np.tile(np.array([[50.0], [300.0]]), (8, 1, 1))
    net = two_country_network(months=8, magnet_capacity=np.tile([1000.0, 1000.0], (8, 1)),
                              magnet_need=need)
    on = simulate_arrays(net, controls(net), responses=neutral(
        net, triggers=_blocking_trigger(net, 1)))
    off = simulate_arrays(net, controls(net), responses=neutral(
        net, prices=False, triggers=_blocking_trigger(net, 1)))
    china_on, china_off = on["price"][0, :, 0, 0], off["price"][0, :, 0, 0]
    assert china_on[-1] < 60.0  # surplus at home: below the base price
    assert (china_off >= 60.0 - 1e-9).all()  # without the switch prices never fall below base
    np.testing.assert_allclose(on["price"][0, :, 0, 1], off["price"][0, :, 0, 1])


def test_shutdown_applies_to_shifted_project_capacity_and_never_goes_negative():
    # USA separation: 60 t/month existing plus a 40 t/month project from month 2, 3 months late
    # and half built in this run; its cash cost (80) is above the price (60): u halves monthly
    from rareflow.sim.network import RunParameters

    t = 8
    pipe = np.zeros((3, t, 2))
    pipe[1, 2:, 1] = 40.0
    sep = np.tile([30.0, 60.0], (t, 1)) + pipe[1]
    net = two_country_network(months=t, need_b=10.0, sep_capacity=sep, pipeline_capacity=pipe)
    cash = np.full((3, 2), np.nan)
    cash[1, 1] = 80.0
    out = simulate_arrays(net, controls(net), params=RunParameters(
        pipeline_delay_months=np.array([3.0]), pipeline_completion=np.array([0.5])),
        responses=neutral(net, cash_cost=cash, shutdown_months=2.0))
    late = np.array([0, 0, 0, 0, 0, 20, 20, 20])  # half of 40, from month 2 + 3
    expected = (60.0 + late) * 0.5 ** np.arange(t)
    np.testing.assert_allclose(out["capacity_run"][0, :, 1, 1], expected)
    assert out["production"][0, :, 1, 1].min() >= 0.0


def test_price_driven_build_needs_the_expected_price_above_hurdle_times_cost():
    net = short_network(months=14)
    build = np.zeros((3, 2), bool)
    build[1, 1] = True  # separation in the USA
    decide = np.zeros(14, bool)
    decide[12] = True
    cost = np.full((3, 2), np.nan)
    common = dict(build=build, decision_months=decide, hurdle=1.5,
                  lead_months=np.ones((3, 2), int))
    cheap, dear = cost.copy(), cost.copy()
    cheap[1, 1], dear[1, 1] = 10.0, 1000.0  # US$/kg against a price above 60
    built = simulate_arrays(net, controls(net), responses=neutral(net, full_cost=cheap, **common))
    none = simulate_arrays(net, controls(net), responses=neutral(net, full_cost=dear, **common))
    assert built["capacity_new"][0, 13, 1, 1] > 0
    assert none["capacity_new"][0].max() == 0


def test_trigger_can_block_concentrate():
    # CHN ships half its 100 t/month of concentrate to the USA; a trigger firing in month 2
    # stops that from month 3 (the concentrate then stays in China)
    net = two_country_network(months=6, need_b=10.0)
    active = np.zeros((6, 1), bool)
    active[2:] = True
    block = np.ones((1, 2, 2))
    block[0, 0, 1] = 0.0
    trig = _trigger(net, kind=np.array([KINDS.index("rule_in_force")]), rule_active=active,
                    restrict_conc=block)
    out = simulate_arrays(net, controls(net), responses=neutral(net, triggers=trig))
    np.testing.assert_allclose(out["conc_trade"][0, :, 0, 1], [50, 50, 50, 0, 0, 0])
    assert out["balance_error"].max() < 1e-12


def test_one_option_over_several_sectors_cuts_its_grade_by_its_reduction_share():
    # two sectors share grade G, each a quarter of the world's use of G in each market; one
    # option (same data row) adopted by all of them cuts G's Nd by its 50%, not by
    # 1 - (1 - 0.25)^2 as two separate options would
    from rareflow.sim.responses import ResponseState

    net = two_country_network(months=2)
    inp = neutral(net, opt_sector=np.array([0, 1]), opt_element=np.array([0, 0]),
                  opt_reduction=np.array([0.5, 0.5]), opt_max=np.array([1.0, 1.0]),
                  opt_delay=np.array([1.0, 1.0]), opt_ramp=np.array([1.0, 1.0]),
                  opt_trigger=np.array([0.0, 0.0]), opt_weight=np.full((2, 2), 0.25),
                  opt_group=np.array([7, 7]))
    state = ResponseState(inp, 1, 2, net.grade_content, np.array([0, 0]), 2, 1)
    state.adoption[:] = 1.0
    assert state.content()[0, 0, 0] == pytest.approx(0.3 * (1 - 0.5))
    separate = replace(inp, opt_group=np.array([1, 2]))
    state = ResponseState(separate, 1, 2, net.grade_content, np.array([0, 0]), 2, 1)
    state.adoption[:] = 1.0
    assert state.content()[0, 0, 0] == pytest.approx(0.3 * (1 - 0.25) ** 2)
