"""The optimised licence queue and allocation (issue 6) against the dense originals.

``_DenseQueue``, ``_dense_review_hazards`` and ``_dense_allocate`` below are copies of the
implementations before the optimisation (every exporter x destination x product channel queued,
no caching, the original sequence of array operations). The tests run both versions, here and
through the kernel on policy scenarios, and compare them to 1e-9 relative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import rareflow.sim.kernel as kernel
from equivalence import assert_equivalent as _close
from rareflow import load_dataset, load_scenario
from rareflow.compile import compile_scenario
from rareflow.dims import DAYS_PER_MONTH
from rareflow.ensemble import run_parameters, sample
from rareflow.policy.licences import (
    MAX_AGE,
    LicenceQueue,
    _review_hazards,
    licence_channels,
    review_hazards,
)
from rareflow.sim.market import MASS_EPS_T, allocate

_EPS = 1e-12


# ---- reference copies of the dense implementations ------------------------------------------
# the uncached hazard function is the pre-issue-6 code unchanged; the cache wraps it
_dense_review_hazards = _review_hazards


def _dense_weighted_median_age(mass, ages):
    runs = mass.shape[0]
    by_age = mass.reshape(runs, MAX_AGE, -1).sum(axis=2)
    total = by_age.sum(axis=1, keepdims=True)
    cum = np.cumsum(by_age, axis=1)
    idx = (cum < 0.5 * total).sum(axis=1)
    out = np.minimum(idx, MAX_AGE - 1).astype(float) + 0.5
    return np.where(total[:, 0] > _EPS, out, np.nan)


@dataclass
class _DenseQueue:
    licensed: np.ndarray
    pending: np.ndarray
    index = None  # every channel is kept (the numpy kernel's held-back sum does not read it)

    @classmethod
    def empty(cls, runs, shape, **_ignored):
        return cls(np.zeros((runs, *shape)), np.zeros((runs, MAX_AGE, *shape)))

    # the run parameters arrive as keywords since issue 6's later passes (same arithmetic)
    def allowed_share(self, requested, required, leakage, extra_leakage=None, allowed=None):
        if extra_leakage is not None:
            leakage = np.minimum(1.0, leakage + np.reshape(extra_leakage, (-1, 1, 1, 1)))
        licensed = np.minimum(self.licensed, requested)
        ship = licensed + leakage * np.maximum(requested - self.licensed, 0.0)
        share = np.divide(ship, requested, out=np.ones_like(requested), where=requested > _EPS)
        share = np.where(requested > _EPS, share, np.where(self.licensed > _EPS, 1.0, leakage))
        share = np.where(required, np.clip(share, 0.0, 1.0), 1.0)
        return share if allowed is None else allowed * share

    def step(self, requested, required, approval, hazards, validity_months,
             capacity=np.inf, exporter_axis=1, approval_scale=None, full=True):
        if approval_scale is not None:
            approval = np.minimum(1.0, approval * np.reshape(approval_scale, (-1, 1, 1, 1)))
        validity = np.maximum(validity_months, 1.0)
        self.licensed = np.where(required, self.licensed * (1.0 - 1.0 / validity), 0.0)
        req = np.where(required, requested, 0.0)
        in_review = self.pending.sum(axis=1)
        applications = np.maximum(req - self.licensed - in_review, 0.0) * required
        self.pending[:, 0] += applications
        decided_by_age = self.pending * hazards[None]
        decided = decided_by_age.sum(axis=1)
        if np.isfinite(np.asarray(capacity)).any():
            axes = tuple(i for i in range(decided.ndim) if i not in (0, exporter_axis))
            total = decided.sum(axis=axes, keepdims=True)
            cap = np.reshape(capacity, (1, -1) + (1,) * (decided.ndim - 2))
            scale = np.minimum(1.0, np.divide(cap, total, out=np.ones_like(total),
                                              where=total > _EPS))
            decided_by_age = decided_by_age * scale[:, None]
            decided = decided * scale
        ages = np.arange(MAX_AGE).reshape((1, MAX_AGE) + (1,) * (decided.ndim - 1))
        wait_days = _dense_weighted_median_age(decided_by_age, ages) * DAYS_PER_MONTH
        self.pending -= decided_by_age
        self.pending[:, 1:] = self.pending[:, :-1].copy()
        self.pending[:, 0] = 0.0
        approved = decided * approval
        denied = decided - approved
        self.licensed = np.where(required, self.licensed + approved, 0.0)
        out = {"applications": applications, "approved": approved, "denied": denied,
               "backlog": self.pending.sum(axis=1), "median_wait_days": wait_days}
        # per-destination totals, which the kernel reads (the channel axes are [X, C, K])
        for key in ("applications", "approved", "denied", "backlog"):
            out[f"{key}_by_destination"] = out[key].sum(axis=(1, 3))
        return out


def _dense_safe_div(num, den, eps=MASS_EPS_T):
    # tonnes count from MASS_EPS_T (the model's rule since it replaced 1e-12 t); shares from _EPS
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > eps)


def _dense_foreign_requests(unmet, weights):
    share = _dense_safe_div(weights, weights.sum(axis=1, keepdims=True), eps=_EPS)
    return unmet[:, None, :, :] * share


def _dense_serve(supply, home, foreign, home_first):
    foreign_total = foreign.sum(axis=2)
    ratio = np.minimum(1.0, _dense_safe_div(supply, home + foreign_total))
    ratio = np.where(home + foreign_total > MASS_EPS_T, ratio, 0.0)
    home_pr = home * ratio
    foreign_pr = foreign * ratio[:, :, None, :]
    home_hf = np.minimum(home, supply)
    left = supply - home_hf
    ratio_f = np.minimum(1.0, _dense_safe_div(left, foreign_total))
    foreign_hf = foreign * ratio_f[:, :, None, :]
    hf = home_first[None, :, None]
    return np.where(hf, home_hf, home_pr), np.where(hf[..., None], foreign_hf, foreign_pr)


def _dense_allocate(supply, need, allowed, preference, home_first):
    n = supply.shape[1]
    eye = np.eye(n, dtype=bool)
    allowed = np.broadcast_to(allowed, (supply.shape[0], n, n, supply.shape[2]))
    open_route = (allowed > _EPS) & ~eye[None, :, :, None]
    weights = preference[..., None] * open_route
    flow = np.zeros((supply.shape[0], n, n, supply.shape[2]))
    idx = np.arange(n)
    unmet_if_home = np.maximum(need - supply, 0.0)
    asked = _dense_foreign_requests(unmet_if_home, weights)
    home_fill, foreign_fill = _dense_serve(supply, need, asked * allowed, home_first)
    flow += foreign_fill
    flow[:, idx, idx, :] += home_fill
    remaining_supply = supply - home_fill - foreign_fill.sum(axis=2)
    remaining_need = need - home_fill - foreign_fill.sum(axis=1)
    spare = np.maximum(remaining_supply, 0.0)
    lack = np.maximum(remaining_need, 0.0)
    fully_open = allowed >= 1.0 - 1e-9
    weights2 = weights * (spare[:, :, None, :] > MASS_EPS_T) * fully_open
    asked2 = _dense_foreign_requests(lack, weights2)
    ratio = np.minimum(1.0, _dense_safe_div(spare, asked2.sum(axis=2)))
    flow += asked2 * ratio[:, :, None, :]
    return np.maximum(flow, 0.0), asked + asked2


# ---- the queue alone, on random channels ----------------------------------------------------
@pytest.mark.parametrize("capacity", [np.inf, "finite"])
def test_channel_queue_matches_dense_queue(capacity):
    rng = np.random.default_rng(3)
    runs, shape = 4, (5, 5, 3)
    mask = np.zeros(shape, dtype=bool)
    mask[0] = True  # one exporter's channels, and a few scattered ones
    mask[rng.uniform(size=shape) < 0.1] = True
    cap = np.inf if capacity == np.inf else rng.uniform(50, 300, size=shape[0])
    fast = LicenceQueue.empty(runs, shape, channels=mask)
    dense = _DenseQueue.empty(runs, shape)
    for month in range(30):
        requested = rng.uniform(0, 100, size=(runs, *shape)) * (rng.uniform(size=shape) < 0.8)
        required = mask & (rng.uniform(size=shape) < (0.9 if month < 20 else 0.3))
        approval = rng.uniform(0.3, 1.0, size=(1, *shape))
        median = rng.choice([0.5, 1.5, 2.0], size=shape)
        hazards = review_hazards(median, median * 1.8)
        validity = rng.choice([1.0, 6.0], size=(1, *shape))
        leakage = rng.uniform(0, 0.2, size=(runs, *shape))
        s_fast = fast.step(requested, required, approval, hazards, validity, capacity=cap)
        s_dense = dense.step(requested, required, approval,
                             _dense_review_hazards(median, median * 1.8), validity,
                             capacity=cap)
        for key in s_dense:
            _close(s_fast[key], s_dense[key])
            if key != "median_wait_days" and not key.endswith("_by_destination"):
                _close(s_fast[f"{key}_by_destination"], s_dense[key].sum(axis=(1, 3)))
        _close(fast.allowed_share(requested, required, leakage),
               dense.allowed_share(requested, required, leakage))


def test_review_hazards_cache_returns_equal_values():
    median = np.array([[0.7, 1.5], [2.0, 3.0]])
    first = review_hazards(median, median * 2)
    again = review_hazards(median.copy(), median * 2)
    assert again is first and not first.flags.writeable
    np.testing.assert_array_equal(first, _dense_review_hazards(median, median * 2))
    other = review_hazards(median + 1, median * 2 + 1)
    np.testing.assert_array_equal(other, _dense_review_hazards(median + 1, median * 2 + 1))


@pytest.mark.parametrize("runs", [1, 6])
def test_allocate_matches_dense_allocate(runs):
    rng = np.random.default_rng(runs)
    n, k = 7, 4
    for trial in range(20):
        supply = rng.uniform(0, 100, size=(runs, n, k)) * (rng.uniform(size=(runs, n, k)) < 0.7)
        need = rng.uniform(0, 100, size=(runs, n, k))
        allowed = rng.choice([0.0, 0.3, 1.0], p=[0.2, 0.2, 0.6], size=(runs, n, n, k))
        allowed = allowed if trial % 2 else allowed[0]
        pref = rng.uniform(size=(runs, n, n)) * (rng.uniform(size=(runs, n, n)) < 0.6)
        pref[:, np.arange(n), np.arange(n)] = 0.0
        pref /= np.maximum(pref.sum(axis=1, keepdims=True), 1e-12)
        home_first = rng.uniform(size=n) < 0.5
        fast = allocate(supply, need, allowed, pref, home_first)
        dense = _dense_allocate(supply, need, allowed, pref, home_first)
        for a, e in zip(fast, dense, strict=True):
            _close(a, e)


# ---- the whole kernel on policy scenarios ---------------------------------------------------
DATASET = load_dataset()


@pytest.mark.parametrize("name", ["history-2025", "october-2025-full", "us-embargo",
                                  "quota-2010"])
def test_kernel_matches_dense_implementation(name, monkeypatch):
    scenario = load_scenario(name)
    network, controls = compile_scenario(DATASET, scenario)
    runs = 3
    params = None
    if scenario.uncertain.parameters:
        _, values = sample(scenario.uncertain, runs, seed=2)
        params = run_parameters(scenario.uncertain, values)
    fast = kernel.simulate_arrays(network, controls, runs=runs, params=params, backend="numpy")
    pol = controls.policy
    if pol is not None and pol.refined.required.any():  # the queue keeps few channels
        mask = licence_channels(pol, "refined", pol.refined.required.shape[1:])
        assert 0 < mask.sum() < mask.size / 4
    monkeypatch.setattr(kernel, "LicenceQueue", _DenseQueue)
    monkeypatch.setattr(kernel, "review_hazards", _dense_review_hazards)
    monkeypatch.setattr(kernel, "allocate", _dense_allocate)
    dense = kernel.simulate_arrays(network, controls, runs=runs, params=params, backend="numpy")
    assert fast.keys() == dense.keys()
    for key in dense:
        if key == "balance_error":  # rounding noise (~1e-16): both must stay negligible
            assert fast[key].max() <= 1e-9 and dense[key].max() <= 1e-9
        else:
            _close(fast[key], dense[key])
