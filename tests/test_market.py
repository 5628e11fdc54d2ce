"""The allocation rules, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rareflow.sim.market import allocate, switch_preferences


def _one(*values):
    return np.array(values, dtype=float)


@pytest.mark.parametrize(("home_first", "home", "foreign"), [
    # X has 60; home buyers want 60, the importer wants 40 (and has nothing at home).
    (False, 36.0, 24.0),  # pro rata: 60 / 100 of each request
    (True, 60.0, 0.0),  # home buyers first, exports get what is left
])
def test_shortage_between_home_and_foreign_buyers(home_first, home, foreign):
    supply = _one(60, 0).reshape(1, 2, 1)
    need = _one(60, 40).reshape(1, 2, 1)
    pref = np.array([[[0.0, 1.0], [1.0, 0.0]]])
    flow, _ = allocate(supply, need, np.ones((2, 2, 1)), pref, np.array([home_first, False]))
    assert flow[0, 0, 0, 0] == pytest.approx(home)
    assert flow[0, 0, 1, 0] == pytest.approx(foreign)


def test_blocked_supplier_is_not_asked():
    supply = _one(100, 100, 0).reshape(1, 3, 1)
    need = _one(0, 0, 50).reshape(1, 3, 1)
    pref = np.zeros((1, 3, 3))
    pref[0, 0, 2], pref[0, 1, 2] = 0.8, 0.2
    allowed = np.ones((3, 3, 1))
    allowed[0, 2] = 0.0
    flow, requested = allocate(supply, need, allowed, pref, np.zeros(3, dtype=bool))
    assert flow[0, 0, 2, 0] == 0.0
    assert flow[0, 1, 2, 0] == pytest.approx(50.0)  # all weight moves to the open supplier
    assert requested[0, 0, 2, 0] == 0.0


def test_allocation_never_exceeds_supply_or_need():
    rng = np.random.default_rng(3)
    supply = rng.uniform(0, 10, (4, 5, 3))
    need = rng.uniform(0, 10, (4, 5, 3))
    pref = rng.uniform(0, 1, (4, 5, 5))
    allowed = rng.uniform(0, 1, (5, 5, 3))
    flow, _ = allocate(supply, need, allowed, pref, rng.uniform(size=5) > 0.5)
    assert (flow >= 0).all()
    assert (flow.sum(axis=2) <= supply + 1e-9).all()
    assert (flow.sum(axis=1) <= need + 1e-9).all()


def test_switching_moves_failed_preference_to_supplier_with_spare():
    # Importer 2 prefers supplier 0 fully; 0 delivered half of 40 -> failed share 0.5;
    # rate 0.2 moves 0.2 * 1.0 * 0.5 = 0.1 of the preference to supplier 1 (the only spare one).
    pref = np.zeros((1, 3, 3))
    pref[0, 0, 2] = 1.0
    requested = np.zeros((1, 3, 3))
    received = np.zeros((1, 3, 3))
    requested[0, 0, 2], received[0, 0, 2] = 40.0, 20.0
    spare = np.array([[0.0, 30.0, 0.0]])
    new = switch_preferences(pref, requested, received, spare, np.ones((1, 3, 3)), 0.2)
    assert new[0, 0, 2] == pytest.approx(0.9)
    assert new[0, 1, 2] == pytest.approx(0.1)
    assert new[0, :, 2].sum() == pytest.approx(1.0)


def test_switching_is_still_when_everyone_is_served():
    pref = np.array([[[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]]])
    flows = np.ones((1, 3, 3))
    new = switch_preferences(pref, flows, flows, np.ones((1, 3)), np.ones((1, 3, 3)), 0.5)
    assert np.array_equal(new, pref)
