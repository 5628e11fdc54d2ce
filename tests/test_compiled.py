"""The optional compiled backend (rareflow.sim.compiled) against the numpy kernel.

Numba is optional: without it the comparisons are skipped and only the backend selection is
tested. The compiled passes are written to perform the numpy versions' operations in the same
order, so on these cases they agree bit for bit; the tests require 1e-9 (the issue's contract),
which also holds where a platform rounds differently in the last bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import rareflow.sim.compiled as compiled
from equivalence import assert_equivalent as _close
from rareflow import load_dataset, load_scenario, simulate
from rareflow.compile import compile_scenario
from rareflow.compile_responses import compile_responses
from rareflow.ensemble import run_parameters, sample
from rareflow.sim import kernel
from rareflow.sim.market import allocate, switch_preferences

needs_numba = pytest.mark.skipif(not compiled.AVAILABLE, reason="numba is not installed")
def _market(rng, runs, n, k, allowed_kind):
    """Random sellers' stocks (some zero, a few -1e-20 from rounding), needs, sparse
    preferences and export rules."""
    supply = rng.uniform(0, 100, size=(runs, n, k)) * (rng.uniform(size=(runs, n, k)) < 0.6)
    supply[rng.uniform(size=supply.shape) < 0.05] = -1e-20
    need = rng.uniform(0, 100, size=(runs, n, k)) * (rng.uniform(size=(runs, n, k)) < 0.5)
    allowed = rng.choice([0.0, 0.3, 1.0], p=[0.2, 0.2, 0.6], size=(runs, n, n, k))
    if allowed_kind == "shared":
        allowed = allowed[0]
    elif allowed_kind == "open":
        allowed = np.ones((n, n, k))
    elif allowed_kind == "broadcast":
        allowed = np.broadcast_to(allowed[0], (runs, n, n, k))
    pref = rng.uniform(size=(runs, n, n)) * (rng.uniform(size=(runs, n, n)) < 0.4)
    pref[:, np.arange(n), np.arange(n)] = 0.0
    pref /= np.maximum(pref.sum(axis=1, keepdims=True), 1e-12)
    home_first = rng.uniform(size=n) < 0.5
    return supply, need, allowed, pref, home_first


@needs_numba
@pytest.mark.parametrize("allowed_kind", ["per_run", "shared", "open", "broadcast"])
@pytest.mark.parametrize("runs", [1, 5])
def test_compiled_channel_passes_match_numpy(runs, allowed_kind):
    rng = np.random.default_rng(runs * 7 + len(allowed_kind))
    n, k = 7, 4
    for _ in range(15):
        supply, need, allowed, pref, home_first = _market(rng, runs, n, k, allowed_kind)
        for fast, slow in zip(compiled.allocate(supply, need, allowed, pref, home_first),
                              allocate(supply, need, allowed, pref, home_first), strict=True):
            _close(fast, slow)
        # with the flows' totals by seller and by buyer, summed inside the compiled loops
        for fast, slow in zip(
                compiled.allocate_with_totals(supply, need, allowed, pref, home_first),
                kernel._allocate_with_totals(supply, need, allowed, pref, home_first),
                strict=True):
            _close(fast, slow)
        full = np.broadcast_to(allowed, (runs, n, n, k))
        _close(compiled.licence_requests(need, supply, pref, full),
               kernel._licence_requests(need, supply, pref, full))
        _close(compiled.route_open(full), kernel._route_open(full))
        flow = allocate(supply, need, allowed, pref, home_first)[0]
        requested = kernel._licence_requests(need, supply, pref, full)
        required = rng.uniform(size=(1, n, n, k)) < 0.5
        channels = np.flatnonzero(required[0] | (rng.uniform(size=(n, n, k)) < 0.2))
        _close(compiled.held_back(requested, flow, required, channels),
               kernel._held_back(requested, flow, required))
        # preferences, exporters' destination shares and concentrate shipments
        route = np.broadcast_to(allowed, (runs, n, n, k)).max(axis=3)
        received = flow.sum(axis=3) * ~np.eye(n, dtype=bool)
        spare = np.maximum(supply.sum(axis=2), 0.0)
        rate = rng.uniform(0.05, 0.3, size=(runs, 1, 1))
        _close(compiled.switch_preferences(pref, requested.sum(axis=3), received, spare, route,
                                           rate),
               switch_preferences(pref, requested.sum(axis=3), received, spare, route, rate))
        base = pref[0].T / np.maximum(pref[0].T.sum(axis=1, keepdims=True), 1e-12)
        _close(compiled.shift_exporter_shares(pref, base, route, spare, rate),
               kernel._shift_exporter_shares(pref, base, route, spare, rate))
        _close(compiled.ship_concentrate(supply, pref), kernel._ship_concentrate(supply, pref))
        uses = rng.uniform(size=(3, k)) < 0.5
        uses[0] = False  # a grade that uses no element: ratio 1
        _close(compiled.grade_ratio(flow.sum(axis=2), need, uses),
               kernel._grade_ratio(flow.sum(axis=2), need, uses))


@needs_numba
def test_compiled_allocation_conserves_supply_and_need():
    """Independently of numpy: no seller ships more than it has, no buyer gets more than it
    needs, and nothing flows on a closed route."""
    rng = np.random.default_rng(11)
    supply, need, allowed, pref, home_first = _market(rng, 4, 6, 3, "per_run")
    flow, asked = compiled.allocate(supply, need, allowed, pref, home_first)
    assert (flow >= 0).all() and (asked >= 0).all()
    assert (flow.sum(axis=2) <= np.maximum(supply, 0) + 1e-9).all()
    assert (flow.sum(axis=1) <= need + 1e-9).all()
    foreign = ~np.eye(6, dtype=bool)[None, :, :, None]
    assert (flow[(allowed == 0) & foreign] == 0).all()


DATASET = load_dataset()


@needs_numba
@pytest.mark.parametrize("name", ["history-2025", "us-embargo", "escalation-ladder",
                                  "allied-buildout-2030"])
def test_compiled_kernel_matches_numpy_kernel(name):
    scenario = load_scenario(name)
    network, controls = compile_scenario(DATASET, scenario)
    responses = compile_responses(DATASET, scenario, network)
    params = None
    if scenario.uncertain.parameters:
        _, values = sample(scenario.uncertain, 3, seed=5)
        params = run_parameters(scenario.uncertain, values)
    outputs = [kernel.simulate_arrays(network, controls, runs=3, params=params,
                                      responses=responses, backend=backend)
               for backend in ("numba", "numpy")]
    _assert_kernels_agree(*outputs)


@needs_numba
@pytest.mark.parametrize("change", ["none", "quota months", "review capacity"])
def test_compiled_whole_month_and_the_months_it_leaves_match_numpy(change, monkeypatch):
    """The compiled whole month runs every month of a plain policy scenario (history-2025 to
    2025-12) and leaves to the compiled blocks the months with export quotas (quota-2010 without
    its responses block from 2009-07: six months without quotas, 60 with, six without) and
    every month with a finite review capacity (history-2025 with one for China)."""
    from rareflow.sim import compiled_month

    if change == "quota months":
        scenario = load_scenario("quota-2010").model_copy(update={
            "responses": None, "start": "2009-07", "end": "2015-06"})
    else:
        scenario = load_scenario("history-2025").model_copy(update={"end": "2025-12"})
    if change == "review capacity":
        policies = scenario.policies.model_copy(
            update={"review_capacity_t_per_month": {"CHN": 50.0}})
        scenario = scenario.model_copy(update={"policies": policies})
    network, controls = compile_scenario(DATASET, scenario)
    pol = controls.policy
    quota_months = np.isfinite(pol.quota_t_per_month).any(axis=1)
    months = {"none": len(network.months), "quota months": int((~quota_months).sum()),
              "review capacity": 0}[change]
    if change == "quota months":
        assert not quota_months[:6].any() and quota_months[6:66].all()
        assert not quota_months[66:].any()
    calls = []
    whole_month = compiled_month.whole_month
    monkeypatch.setattr(compiled_month, "whole_month",
                        lambda t, *rest: calls.append(t) or whole_month(t, *rest))
    outputs = [kernel.simulate_arrays(network, controls, runs=2, backend=backend)
               for backend in ("numba", "numpy")]
    assert len(calls) == months
    assert outputs[1]["shortfall"].sum() > 100.0  # shortfalls to compare, not rounding noise
    _assert_kernels_agree(*outputs)


@needs_numba
def test_records_written_over_earlier_arrays_are_the_same():
    """``simulate_arrays(reuse=...)`` writes into an earlier call's arrays: the results equal
    a fresh call's, whatever the earlier arrays held (here other runs' results, and NaN)."""
    scenario = load_scenario("history-2025").model_copy(update={"end": "2025-06"})
    network, controls = compile_scenario(DATASET, scenario)
    _, values = sample(scenario.uncertain, 4, seed=2)
    params = run_parameters(scenario.uncertain, values)
    fresh = kernel.simulate_arrays(network, controls, runs=2, params=params.take(slice(0, 2)))
    earlier = kernel.simulate_arrays(network, controls, runs=2, params=params.take(slice(2, 4)))
    earlier["held_back"].fill(np.nan)
    kept = {name: earlier[name] for name in ("trade", "shortfall", "held_back")}
    again = kernel.simulate_arrays(network, controls, runs=2, params=params.take(slice(0, 2)),
                                   reuse=earlier)
    for name, values in fresh.items():
        np.testing.assert_array_equal(again[name], values, err_msg=name)
    for name, array in kept.items():
        assert again[name] is array, name  # written over, not allocated again
    other_shape = kernel.simulate_arrays(network, controls, runs=1,
                                         params=params.take(slice(0, 1)), reuse=again)
    assert other_shape["trade"] is not again["trade"]


#: the kernel's checks: the relative mass-balance error of each stage and the smallest stock
_ROUNDING_CHECKS = ("balance_error", "min_stock")


def _assert_kernels_agree(fast: dict, slow: dict) -> None:
    """Every output to 1e-9, except the kernel's own rounding checks: those are rounding noise
    (about 1e-16 relative, 1e-13 t), and noise summed in another order is other noise, so in
    both kernels they must be small (mass balanced to 1e-9, no stock below -1e-9 t)."""
    assert fast.keys() == slow.keys()
    for key in slow:
        if key in _ROUNDING_CHECKS:
            for out in (fast, slow):
                assert np.nanmax(np.abs(out[key]) if key == "balance_error"
                                 else -np.minimum(out[key], 0.0)) <= 1e-9, key
        else:
            _close(fast[key], slow[key])


@needs_numba
def test_compiled_settlement_matches_numpy_with_defense_priority_and_stockpiles():
    """The branches of the compiled month blocks (compiled_month) no built-in plain scenario
    takes: defense users served first, government releases and purchases, and capacities
    that differ by run (projects delayed and not all completed)."""
    from rareflow.scenario import scenario_from_dict

    shock = {"type": "trade_restriction", "exporter": "CHN", "importers": ["USA", "JPN"],
             "items": ["NdFeB_std", "NdFeB_high_temp"], "start": "2024-04", "months": 6}
    release = {"type": "stockpile_release", "holder": "US_NDS", "country": "USA",
               "item": "NdFeB_std", "tonnes": 450, "start": "2024-04", "months": 6}
    purchase = dict(release, type="stockpile_purchase", start="2024-01", months=3)
    scenario = scenario_from_dict({"name": "t", "end": "2025-06",
                                   "events": [shock, release, purchase],
                                   "settings": {"defense_priority": ["USA", "JPN"]}})
    network, controls = compile_scenario(DATASET, scenario)
    assert controls.defense_first.any() and (controls.stockpile_to_users != 0).any()
    params = kernel.RunParameters(demand_scale=np.array([0.9, 1.0, 1.1]),
                                  pipeline_delay_months=np.array([0.0, 12.0, 30.0]),
                                  pipeline_completion=np.array([1.0, 0.7, 0.5]))
    assert network.pipeline_capacity is not None and network.pipeline_capacity.any()
    outputs = [kernel.simulate_arrays(network, controls, runs=3, params=params,
                                      backend=backend) for backend in ("numba", "numpy")]
    assert outputs[0]["shortfall"].sum() > 0  # the shock bites, so the branches matter
    _assert_kernels_agree(*outputs)


@needs_numba
def test_backend_choice_does_not_change_an_ensemble():
    scenario = load_scenario("history-2025").model_copy(update={"end": "2026-06"})
    heads = [simulate(DATASET, scenario, runs=6, seed=4, keep=False, batch_size=4,
                      backend=backend).summary()["headline"] for backend in ("numba", "numpy")]
    for key, value in heads[1].items():
        if isinstance(value, dict):
            for q in value:
                _close(heads[0][key][q], value[q])


def test_backend_names_are_checked(monkeypatch):
    with pytest.raises(ValueError, match=r"backend \(value 'fortran'\): must be one of"):
        compiled.resolve("fortran")
    assert compiled.resolve("numpy") == "numpy"
    monkeypatch.setattr(compiled, "AVAILABLE", False)
    assert compiled.resolve("auto") == "numpy"
    with pytest.raises(ValueError, match="Numba is not installed"):
        compiled.resolve("numba")
    monkeypatch.setattr(compiled, "AVAILABLE", True)
    assert compiled.resolve("auto") == "numba"


@needs_numba
@pytest.mark.parametrize("scaled", [False, True])
def test_compiled_licence_queue_matches_numpy_queue(scaled):
    from rareflow.policy.licences import LicenceQueue, review_hazards

    rng = np.random.default_rng(8 + scaled)
    runs, shape = 4, (5, 5, 3)
    mask = rng.uniform(size=shape) < 0.4
    queues = [LicenceQueue.empty(runs, shape, channels=mask, core=core)
              for core in (compiled.LICENCE_CORE, None)]
    scale = rng.uniform(0.5, 1.5, size=runs) if scaled else None
    extra = rng.uniform(0, 0.1, size=runs) if scaled else None
    mixed = 0  # months in which some kept channels are idle (nothing in review) and some not
    for month in range(50):
        # some channels request nothing in some runs, so runs differ in which channels are idle
        requested = rng.uniform(0, 100, size=(runs, *shape)) * (
            rng.uniform(size=(runs, *shape)) < 0.8)
        # busy, then thinner, then nothing required (reviews drain within MAX_AGE months, so
        # channels fall idle), then busy again
        share = 0.9 if month < 20 else 0.3 if month < 25 else 0.0 if month < 40 else 0.6
        required = mask & (rng.uniform(size=shape) < share)
        approval = rng.uniform(0.3, 1.0, size=(1, *shape))
        median = rng.choice([0.5, 1.5, 2.0], size=shape)
        validity = rng.choice([1.0, 6.0], size=(1, *shape))
        leakage = rng.uniform(0, 0.2, size=(runs, *shape))
        allowed = rng.choice([0.0, 0.5, 1.0], size=(1, *shape))
        stats = [q.step(requested, required, approval, review_hazards(median, median * 1.8),
                        validity, approval_scale=scale, full=False) for q in queues]
        for key in stats[1]:
            _close(stats[0][key], stats[1][key])
        shares = [q.allowed_share(requested, required, leakage, extra_leakage=extra,
                                  allowed=allowed) for q in queues]
        _close(shares[0], shares[1])
        _close(queues[0].pending, queues[1].pending)
        backlog = queues[1].pending.sum(axis=1)
        mixed += bool((backlog == 0).any() and (backlog > 0).any())
    assert mixed >= 5


def test_cli_backend_option():
    from typer.testing import CliRunner

    from rareflow.cli import app

    bad = CliRunner().invoke(app, ["run", "baseline", "--backend", "gpu", "--json"])
    assert bad.exit_code == 2
    assert ("--backend: backend (value 'gpu'): must be one of auto, numpy, numba"
            in " ".join(bad.output.split()))
    res = CliRunner().invoke(app, ["run", "baseline", "--end", "2024-06", "--backend", "numpy",
                                   "--json"])
    assert res.exit_code == 0, res.output
    assert '"scenario": "baseline"' in res.output


def test_cli_names_the_extra_when_numba_is_missing(monkeypatch):
    from typer.testing import CliRunner

    from rareflow.cli import app

    monkeypatch.setattr(compiled, "AVAILABLE", False)
    res = CliRunner().invoke(app, ["run", "baseline", "--backend", "numba", "--json"])
    assert res.exit_code == 2
    assert "Numba is not installed; pip install 'rareflow[fast]'" in " ".join(res.output.split())


@needs_numba
def test_shapes_numpy_sums_along_a_contiguous_axis_match_exactly():
    """One product in an allocation, one channel in a licence queue: numpy sums along a
    contiguous axis there (unrolled or pairwise), so these shapes run in numpy and agree bit for
    bit (a review found the in-order loops 2.9 t apart after 17 months with one channel)."""
    from rareflow.policy.licences import LicenceQueue, review_hazards

    rng = np.random.default_rng(21)
    for _ in range(30):
        supply, need, allowed, pref, home_first = _market(rng, 3, 17, 1, "per_run")
        for fast, slow in zip(compiled.allocate(supply, need, allowed, pref, home_first),
                              allocate(supply, need, allowed, pref, home_first), strict=True):
            np.testing.assert_array_equal(fast, slow)
    queues = [LicenceQueue.empty(1, (1, 1, 1), core=core)
              for core in (compiled.LICENCE_CORE, None)]
    hazards = review_hazards(np.full((1, 1, 1), 4.0), np.full((1, 1, 1), 7.2))
    required = np.ones((1, 1, 1, 1), dtype=bool)
    for month in range(14):
        requested = np.full((1, 1, 1, 1), 100 + 7.3 * month)
        stats = [q.step(requested, required, np.full((1, 1, 1, 1), 0.7), hazards,
                        np.full((1, 1, 1, 1), 6.0), full=False) for q in queues]
        np.testing.assert_array_equal(stats[0]["backlog_by_destination"],
                                      stats[1]["backlog_by_destination"])
        np.testing.assert_array_equal(queues[0].licensed, queues[1].licensed)


def test_workers_zero_means_one_per_available_core():
    from rareflow.api import MAX_DEFAULT_WORKERS, default_workers

    assert 1 <= default_workers() <= MAX_DEFAULT_WORKERS
    scenario = load_scenario("baseline").model_copy(update={"end": "2024-03"})
    with pytest.raises(ValueError, match=r"workers \(value -1\): must be 0 \(one per core\)"):
        simulate(DATASET, scenario, workers=-1)


def test_sweep_backend_option(tmp_path, monkeypatch):
    """``rareflow sweep --backend`` is checked before any batch runs, and reaches the workers."""
    from typer.testing import CliRunner

    from rareflow import sweep
    from rareflow.cli import app

    out = tmp_path / "s"
    bad = CliRunner().invoke(app, ["sweep", "baseline", "--runs", "2", "--backend", "gpu",
                                   "--out", str(out), "--json"])
    assert bad.exit_code == 2
    assert ("--backend: backend (value 'gpu'): must be one of auto, numpy, numba"
            in " ".join(bad.output.split()))
    assert not out.exists()  # nothing half-written
    seen = []

    def fake_run_sweep(*args, backend="auto", **kwargs):
        seen.append(backend)
        return None

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    res = CliRunner().invoke(app, ["sweep", "baseline", "--runs", "2", "--backend", "numpy",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert seen == ["numpy"]
    # and the worker task hands it to the kernel (which refuses Numba where it is missing)
    monkeypatch.setattr(compiled, "AVAILABLE", False)
    scenario = load_scenario("baseline").model_copy(update={"end": "2024-02"})
    with pytest.raises(ValueError, match="Numba is not installed"):
        sweep.run_batch(scenario.model_dump_json(), np.ones((1, 0)), None, backend="numba")


@needs_numba
def test_sweep_batches_are_the_same_with_either_backend():
    from rareflow import sweep

    scenario = load_scenario("history-2025").model_copy(update={"end": "2025-09"})
    _, values = sample(scenario.uncertain, 3, seed=4)
    batches = [sweep.run_batch(scenario.model_dump_json(), values, None, backend=backend)
               for backend in ("numba", "numpy")]
    assert batches[0].keys() == batches[1].keys()
    for key in batches[0]:
        if key == "notes":  # text: the compiler's notes
            assert str(batches[0][key]) == str(batches[1][key])
        elif key.startswith("checks/"):  # rounding noise: small in both, not equal
            for batch in batches:
                assert np.abs(batch[key]).max() <= 1e-9 if key == "checks/balance" else (
                    batch[key].min() >= -1e-9), key
        else:
            _close(batches[0][key], batches[1][key])
