"""Random scenarios (hypothesis): stocks, flows and prices never go negative; mass balances."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rareflow import load_dataset, simulate
from rareflow.scenario import scenario_from_dict

DATASET = load_dataset()
COUNTRIES = ["CHN", "USA", "MMR", "AUS", "MYS", "DEU", "ROW"]
ITEMS = ["conc_ionic_clay", "conc_bastnaesite", "Dy2O3", "NdPr_oxide", "Nd2O3", "NdFeB_std",
         "NdFeB_high_temp"]
SECTORS = ["ev_traction", "wind_turbines", "other_magnet_uses", "catalysts"]
MONTHS = [f"2024-{m:02d}" for m in range(1, 13)] + [f"2025-{m:02d}" for m in range(1, 7)]
FACILITIES = ["mp_mountain_pass_mine", "chn_mining_hard_rock", "chn_separation",
              "lynas_malaysia_lamp", "chn_magnet"]

restriction = st.fixed_dictionaries({
    "type": st.just("trade_restriction"),
    "exporter": st.sampled_from(COUNTRIES),
    "items": st.lists(st.sampled_from(ITEMS), min_size=1, max_size=3, unique=True),
    "start": st.sampled_from(MONTHS),
    "months": st.integers(1, 12),
    "fraction": st.floats(0, 1),
})
outage = st.fixed_dictionaries({
    "type": st.just("facility_outage"), "facility": st.sampled_from(FACILITIES),
    "start": st.sampled_from(MONTHS), "months": st.integers(1, 12), "fraction": st.floats(0, 1),
})
shock = st.fixed_dictionaries({
    "type": st.just("demand_shock"), "sector": st.sampled_from(SECTORS),
    "country": st.sampled_from(["WLD", "CHN", "USA", "ROW"]), "start": st.sampled_from(MONTHS),
    "months": st.integers(1, 12), "factor": st.floats(0, 3),
})
release = st.fixed_dictionaries({
    "type": st.just("stockpile_release"), "holder": st.just("US_NDS"), "country": st.just("USA"),
    "item": st.just("NdFeB_std"), "start": st.sampled_from(MONTHS), "months": st.integers(1, 6),
    "tonnes": st.floats(1, 500),
})


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(st.one_of(restriction, outage, shock, release), max_size=4),
       switching=st.floats(0, 1), home_first=st.booleans())
def test_random_scenarios_keep_invariants(events, switching, home_first):
    sc = scenario_from_dict({
        "name": "random", "start": "2024-01", "end": "2025-06", "events": events,
        "settings": {"switching_rate": switching,
                     "domestic_priority": ["CHN"] if home_first else []},
    })
    result = simulate(DATASET, sc)
    checks = result.checks()
    assert checks["mass_balance_max_rel_error"] <= 1e-9
    assert checks["min_stock_t"] >= -1e-6
    for var in ("production", "trade", "inventory", "consumption", "shortfall", "price",
                "units_not_built"):
        assert float(result.data[var].min()) >= -1e-6, var
    # shortfall never exceeds need
    assert float((result.data["shortfall"] - result.data["need"]).max()) <= 1e-6
