"""A two-country, one-element network whose month-one numbers are worked out by hand in tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rareflow.sim.network import Controls, Network, free_controls


def two_country_network(months: int = 2, need_b: float = 50.0, **changes) -> Network:
    """CHN mines 100 t/month of pure Nd oxide-equivalent and sends half to USA.

    Separation: CHN 30 t/month of feed, USA 100; recovery 0.9. Magnets: only CHN makes them
    (1,000 t/month), 0.3 t of Nd oxide per t of magnet; USA users need ``need_b`` t/month, hold no
    stock. No secondary supply, no non-magnet demand.
    """
    t = months
    net = Network(
        countries=("CHN", "USA"), elements=("Nd",), grades=("G",), sectors=("motors",),
        months=tuple(f"2024-{m + 1:02d}" for m in range(t)), items=("Nd2O3",),
        mine_capacity=np.tile([100.0, 0.0], (t, 1)),
        mine_composition=np.array([[1.0], [1.0]]),
        conc_shares=np.array([[0.5, 0.5], [0.0, 1.0]]),
        sep_capacity=np.tile([30.0, 100.0], (t, 1)),
        sep_heavy=np.array([True, True]), heavy=np.array([False]), sep_recovery=0.9,
        secondary_supply=np.zeros((t, 2, 1)),
        refined_preference=np.array([[0.0, 1.0], [1.0, 0.0]]),
        magnet_capacity=np.tile([1000.0, 0.0], (t, 1)),
        grade_content=np.array([[0.3]]), oxide_to_metal=np.array([0.857]),
        magnet_preference=np.array([[0.0, 1.0], [1.0, 0.0]]),
        magnet_need=np.tile(np.array([[0.0], [need_b]]), (t, 1, 1)),
        oxide_need=np.zeros((t, 2, 1)),
        sector_grade=np.array([0]), sector_is_defense=np.array([False]),
        user_cover_months=np.array([0.0]), element_to_sector=np.array([[1.0]]),
        kg_per_unit=np.array([2.0]), unit_value_usd=np.array([50_000.0]),
        item_elements=np.array([[1.0]]), base_price=np.array([60.0]),
        price_elasticity=0.5, price_smoothing=1.0,
    )
    return replace(net, **changes) if changes else net


def controls(net: Network, **changes) -> Controls:
    ctl = free_controls(net)
    return replace(ctl, **changes) if changes else ctl
