"""Results do not hinge on rounding.

Stocks of thousands of tonnes carry rounding residues of about 1e-12 to 1e-10 t once flows are
subtracted from them. While the allocation and switching counted anything above 1e-12 t as
material, such residues decided whether a seller had spare supply or a buyer still lacked
something, and a change in the last bit of one input (or a sum taken in another order) moved
later months by hundreds of tonnes. They now count tonnes from
:data:`rareflow.sim.market.MASS_EPS_T` (1 g), far above that noise.
"""

from __future__ import annotations

import numpy as np
import pytest

from rareflow import load_dataset, load_scenario
from rareflow.compile import compile_scenario
from rareflow.compile_responses import compile_responses
from rareflow.sim import market
from rareflow.sim.kernel import simulate_arrays
from rareflow.sim.network import RunParameters


def _twin_runs(name: str, backend: str = "numpy") -> dict[str, np.ndarray]:
    """Two runs of ``name`` whose demand differs in the last bit only."""
    dataset, scenario = load_dataset(), load_scenario(name)
    network, controls = compile_scenario(dataset, scenario)
    demand = np.array([1.0, np.nextafter(1.0, 2.0)])
    return simulate_arrays(network, controls, runs=2, params=RunParameters(demand_scale=demand),
                           responses=compile_responses(dataset, scenario, network),
                           backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "auto"])
@pytest.mark.parametrize("name", ["history-2025", "october-2025-full", "baseline",
                                  "escalation-ladder"])
def test_a_last_bit_change_in_demand_changes_results_by_rounding_only(name, backend):
    out = _twin_runs(name, backend)
    for key in ("trade", "shortfall", "inventory", "production", "held_back", "price"):
        a, b = out[key][0], out[key][1]
        scale = max(float(np.abs(a).max()), 1.0)
        assert np.abs(a - b).max() <= 1e-9 * scale, key


def test_the_old_threshold_let_rounding_residues_steer_the_allocation(monkeypatch):
    """The check above fails with the old threshold (so it can fail at all)."""
    monkeypatch.setattr(market, "MASS_EPS_T", 1e-12)
    out = _twin_runs("history-2025")
    a, b = out["trade"][0], out["trade"][1]
    assert np.abs(a - b).max() > 1e-6 * np.abs(a).max()
