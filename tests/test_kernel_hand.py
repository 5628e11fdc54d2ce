"""Small cases of the kernel, worked out by hand in each test's comments."""

from __future__ import annotations

import numpy as np
import pytest

from rareflow.sim.kernel import simulate_arrays
from small_network import controls, two_country_network


def test_month_one_flows_by_hand():
    net = two_country_network(need_b=50.0)
    out = simulate_arrays(net, controls(net))
    # Mining: CHN 100 t; shipped 50 to each country.
    assert out["production"][0, 0, 0].tolist() == [100.0, 0.0]
    assert out["conc_trade"][0, 0].tolist() == [[50.0, 50.0], [0.0, 0.0]]
    # Separation: CHN takes min(30, 50) = 30 -> 27 t; USA takes 50 -> 45 t.
    assert out["production"][0, 0, 1] == pytest.approx([27.0, 45.0])
    # Magnets: USA users need 50 t -> CHN makes 50 t, needing 0.3 * 50 = 15 t of oxide,
    # taken from its own 27 t. Metal = 15 t oxide * 0.857.
    assert out["production"][0, 0, 3] == pytest.approx([50.0, 0.0])
    assert out["production"][0, 0, 2] == pytest.approx([15.0 * 0.857, 0.0])
    assert out["magnet_trade"][0, 0, 0, 1] == pytest.approx(50.0)
    # Nobody short; stocks: CHN concentrate 50 - 30 = 20, refined CHN 27 - 15 = 12, USA 45.
    assert out["shortfall"][0, 0].sum() == pytest.approx(0.0)
    assert out["inventory"][0, 0, 0] == pytest.approx([20.0, 0.0])
    assert out["inventory"][0, 0, 1] == pytest.approx([12.0, 45.0])


def test_month_two_carries_stocks_by_hand():
    net = two_country_network(need_b=50.0)
    out = simulate_arrays(net, controls(net))
    # CHN concentrate: 20 + 50 = 70, takes 30 -> stock 40; refined 12 + 27 - 15 = 24.
    assert out["inventory"][0, 1, 0] == pytest.approx([40.0, 0.0])
    assert out["inventory"][0, 1, 1] == pytest.approx([24.0, 90.0])


def test_element_shortage_becomes_user_shortfall_by_hand():
    # USA users need 300 t of magnet -> 90 t of oxide. CHN has 27 t at home and asks USA
    # (its only foreign supplier) for the other 63; USA has 45 and no home need, so CHN gets
    # 27 + 45 = 72 t -> makes 72 / 0.3 = 240 t. USA consumes 240, short 60 t = 30,000 units
    # of 2 kg.
    net = two_country_network(need_b=300.0)
    out = simulate_arrays(net, controls(net))
    assert out["refined_trade"][0, 0, 1, 0] == pytest.approx(45.0)
    assert out["production"][0, 0, 3, 0] == pytest.approx(240.0)
    assert out["consumption"][0, 0, 1, 0] == pytest.approx(240.0)
    assert out["shortfall"][0, 0, 1, 0] == pytest.approx(60.0)


def test_ban_on_concentrate_keeps_it_home_by_hand():
    # With CHN -> USA concentrate blocked, all 100 t stay in CHN: it separates 30 (-> 27),
    # USA separates nothing.
    net = two_country_network()
    ctl = controls(net, allowed_conc=np.tile(np.array([[1.0, 0.0], [1.0, 1.0]]), (2, 1, 1)))
    out = simulate_arrays(net, ctl)
    assert out["conc_trade"][0, 0, 0].tolist() == [100.0, 0.0]
    assert out["production"][0, 0, 1] == pytest.approx([27.0, 0.0])


def test_magnet_ban_cuts_the_flow_to_zero():
    net = two_country_network()
    ctl = controls(net, allowed_magnet=np.tile(np.array([[[1.0], [0.0]], [[1.0], [1.0]]]),
                                               (2, 1, 1, 1)))
    out = simulate_arrays(net, ctl)
    assert out["magnet_trade"][0, :, 0, 1].tolist() == [0.0, 0.0]
    assert out["shortfall"][0, :, 1, 0] == pytest.approx([50.0, 50.0])


def test_price_rises_with_scarcity_by_hand():
    # need 90 t, received 72 t -> q = 1.25; smoothing 1, elasticity 0.5 -> x 1.25^2 = 1.5625
    net = two_country_network(need_b=300.0)
    out = simulate_arrays(net, controls(net))
    assert out["price"][0, 0, 0, 0] == pytest.approx(60.0 * 1.25 ** 2)
    assert out["price"][0, 0, 0, 1] == pytest.approx(60.0)  # no refined need outside China


def test_runs_axis_gives_identical_runs():
    net = two_country_network(need_b=300.0)
    out = simulate_arrays(net, controls(net), runs=3)
    for name, values in out.items():
        assert np.array_equal(values[0], values[2], equal_nan=True), name


def test_defense_first_serves_defense_before_other_sectors_by_hand():
    """One country, one grade, 50 t received; defense asks 30 t, EVs 70 t.

    Pro rata (50/100 of each): defense 15, EVs 35. Defense first: defense 30, EVs the other 20.
    """
    from rareflow.sim.kernel import _share_to_sectors

    receipts = np.array([[[50.0]]])  # [R, C, G]
    request = np.array([[[30.0, 70.0]]])  # [R, C, S]: defense, ev
    onehot = np.array([[1.0], [1.0]])  # both sectors use grade 0
    is_defense = np.array([True, False])
    prorata = _share_to_sectors(receipts, request, onehot, is_defense, np.array([False]))
    first = _share_to_sectors(receipts, request, onehot, is_defense, np.array([True]))
    np.testing.assert_allclose(prorata[0, 0], [15.0, 35.0])
    np.testing.assert_allclose(first[0, 0], [30.0, 20.0])
