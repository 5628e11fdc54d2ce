"""In-use stock model (rareflow.sim.stocks): flodym agreement, hand cohorts, mass balance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rareflow.sim.stocks import (
    InUseStock,
    end_of_life_supply,
    survival_curve,
)


def simulate(stock: InUseStock, inflow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """inflow [T, R, P] -> (stock [T, R, P], outflow [T, R, P]) after each step."""
    stocks, outflows = [], []
    for month in inflow:
        outflows.append(stock.step(month))
        stocks.append(stock.stock)
    return np.array(stocks), np.array(outflows)


# ---------------------------------------------------------------------------------------------
# 1. Against flodym 1.1 (InflowDrivenDSM with its lifetime models)
# ---------------------------------------------------------------------------------------------

T = 72
MEAN = np.array([1.0, 2.5, 0.3])  # years
SD = np.array([0.5, 1.0, 0.2])  # years
SHAPE = np.array([1.5, 3.0, 0.8])
SCALE = np.array([1.0, 2.0, 0.5])  # years
INFLOW = np.random.default_rng(7).uniform(0.0, 10.0, (T, 3))  # t/month
CASES = {
    "fixed": ("FixedLifetime", {"mean": MEAN}),
    "normal": ("NormalLifetime", {"mean": MEAN, "sd": SD}),
    "foldednormal": ("FoldedNormalLifetime", {"mean": MEAN, "sd": SD}),
    "lognormal": ("LogNormalLifetime", {"mean": MEAN, "sd": SD}),
    "weibull": ("WeibullLifetime", {"shape": SHAPE, "scale": SCALE}),
}


def flodym_run(distribution: str, time_items: list, scale_to_time: float, inflow_rate: np.ndarray,
               inflow_at: str):
    """flodym stock and outflow for lifetime parameters given in years.

    ``scale_to_time`` converts years to the units of flodym's time items (12 for months, 1 for
    years); the inflow is a rate per time unit, as flodym expects.
    """
    fd = pytest.importorskip("flodym")
    dims = fd.DimensionSet(dim_list=[
        fd.Dimension(name="time", letter="t", items=time_items),
        fd.Dimension(name="product", letter="p", items=["ev", "wind", "phone"]),
    ])
    cls_name, params = CASES[distribution]
    names = {"mean": "mean", "sd": "std", "shape": "weibull_shape", "scale": "weibull_scale"}
    kwargs = {names[k]: (v if k == "shape" else v * scale_to_time)[None, :]
              for k, v in params.items()}
    model = getattr(fd, cls_name)(dims=dims, inflow_at=inflow_at, **kwargs)
    dsm = fd.InflowDrivenDSM(dims=dims, lifetime_model=model)
    dsm.inflow.values[...] = inflow_rate
    dsm.compute()
    return dsm.stock.values, dsm.outflow.values


def ours(distribution: str, inflow_at: str = "middle"):
    s = survival_curve(distribution, n_months=T, inflow_at=inflow_at, **CASES[distribution][1])
    # no truncation inside the window (tol 0, ages up to the horizon), as flodym keeps every
    # cohort, so the comparison is exact up to rounding
    stock = InUseStock.empty(s, runs=1, tol=0.0, max_age_months=T)
    stocks, outflows = simulate(stock, INFLOW[:, None, :])
    return stocks[:, 0], outflows[:, 0]


@pytest.mark.parametrize("inflow_at", ["middle", "start", "end"])
@pytest.mark.parametrize("distribution", list(CASES))
def test_matches_flodym_monthly_time_axis(distribution, inflow_at):
    # flodym time items are month numbers, so one period = one month and lifetimes are in months
    ref_stock, ref_out = flodym_run(distribution, list(range(T)), 12.0, INFLOW, inflow_at)
    stock, out = ours(distribution, inflow_at)
    np.testing.assert_allclose(stock, ref_stock, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-9)
    assert ref_out.sum() > 1.0  # the example does release end-of-life flows


@pytest.mark.parametrize("distribution", ["normal", "weibull", "lognormal"])
def test_matches_flodym_with_time_in_years(distribution):
    # flodym with time items in years (period 1/12): inflow and outflow are rates per year and
    # the stock is rate x period length, so ours (t/month) maps as rate = 12 x monthly amount.
    items = [m / 12.0 for m in range(T)]
    ref_stock, ref_out = flodym_run(distribution, items, 1.0, INFLOW * 12.0, "middle")
    stock, out = ours(distribution)
    np.testing.assert_allclose(stock, ref_stock, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out * 12.0, ref_out, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# 2. Hand-computed cohorts
# ---------------------------------------------------------------------------------------------


def test_fixed_two_month_lifetime_by_hand():
    # Lifetime exactly 2 months. Inflow enters mid-month, so at the end of its month of entry a
    # cohort is 0.5 months old, 1.5 at the end of the next month (both < 2: in use) and 2.5 at
    # the end of the month after (>= 2: gone). So a cohort leaves two months after entry:
    #   month 0: 10 in              -> stock 10, out 0
    #   month 1: nothing in         -> stock 10, out 0
    #   month 2: 5 in, the 10 leave -> stock 5,  out 10
    #   month 3: nothing            -> stock 5,  out 0
    #   month 4: the 5 leave        -> stock 0,  out 5
    s = survival_curve("fixed", mean=np.array([2.0 / 12.0]), n_months=12)
    np.testing.assert_array_equal(s[:4, 0], [1.0, 1.0, 0.0, 0.0])
    stock = InUseStock.empty(s, runs=1)
    stocks, out = simulate(stock, np.array([10.0, 0.0, 5.0, 0.0, 0.0]).reshape(5, 1, 1))
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 0.0, 10.0, 0.0, 5.0])
    np.testing.assert_allclose(stocks[:, 0, 0], [10.0, 10.0, 5.0, 5.0, 0.0])


def test_fixed_lifetime_inflow_at_start_leaves_one_month_earlier():
    # Entering at the start of the month, a cohort is 1 month old at the end of its month of
    # entry and 2 at the end of the next: 2 < 2 is false, so it leaves the month after entry.
    s = survival_curve("fixed", mean=np.array([2.0 / 12.0]), n_months=12, inflow_at="start")
    stock = InUseStock.empty(s, runs=1)
    _, out = simulate(stock, np.array([10.0, 0.0, 5.0, 0.0, 0.0]).reshape(5, 1, 1))
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 10.0, 0.0, 5.0, 0.0])


def test_weibull_shape_one_is_exponential_by_hand():
    # Weibull with shape 1 and scale 1 year is exponential: a share exp(-1/12) survives each
    # further month, and exp(-0.5/12) survives the first half month after mid-month entry.
    s = survival_curve("weibull", shape=np.array([1.0]), scale=np.array([1.0]), n_months=600)
    stock = InUseStock.empty(s, runs=1)
    stocks, out = simulate(stock, np.array([12.0, 0.0, 0.0]).reshape(3, 1, 1))
    first = 12.0 * np.exp(-0.5 / 12.0)
    assert stocks[0, 0, 0] == pytest.approx(first, rel=1e-12)
    assert out[0, 0, 0] == pytest.approx(12.0 - first, rel=1e-12)
    assert stocks[2, 0, 0] == pytest.approx(first * np.exp(-2.0 / 12.0), rel=1e-12)
    assert out[2, 0, 0] == pytest.approx(first * np.exp(-1 / 12) * (1 - np.exp(-1 / 12)),
                                         rel=1e-12)


def test_normal_mass_below_zero_leaves_in_month_of_entry():
    # flodym's NormalLifetime is not truncated: P(lifetime < 0.5 month) leaves at once.
    s = survival_curve("normal", mean=np.array([0.1]), sd=np.array([0.1]), n_months=60)
    z = (0.5 / 12.0 - 0.1) / 0.1
    from scipy.stats import norm

    assert 1.0 - s[0, 0] == pytest.approx(norm.cdf(z), rel=1e-12)


def test_steady_state_initial_stock():
    # Constant historical inflow I: cohort of age a holds I s_a, the stock is I sum(s), and with
    # the same inflow the outflow equals the inflow every month (steady state).
    s = survival_curve("normal", mean=np.array([12.0, 20.0]), sd=np.array([4.0, 5.0]),
                       n_months=1200)
    inflow = np.array([[3.0, 1.0], [6.0, 2.0]])  # [R=2, P=2] t/month
    stock = InUseStock.initial(s, runs=2, historical_inflow=inflow)
    # sum_a S((a + 1/2) month) is the midpoint rule for the integral of S, the mean of
    # max(L, 0) in months (negative normal lifetimes leave at once): E = mu Phi(mu/sd) +
    # sd phi(mu/sd), about 144 and 240 months of inflow for 12 +/- 4 and 20 +/- 5 years
    from scipy.stats import norm

    mu, sd = np.array([12.0, 20.0]), np.array([4.0, 5.0])
    months = 12.0 * (mu * norm.cdf(mu / sd) + sd * norm.pdf(mu / sd))
    np.testing.assert_allclose(stock.stock / inflow, np.stack([months, months]), rtol=1e-6)
    for _ in range(24):
        out = stock.step(inflow)
        np.testing.assert_allclose(out, inflow, rtol=1e-12)
    # starting from a given stock instead recovers the same historical inflow
    again = InUseStock.initial(s, runs=2, stock=stock.stock)
    np.testing.assert_allclose(again.step(inflow), inflow, rtol=1e-12)


def test_growing_history_has_outflow_below_inflow():
    # With sales growing 10 %/yr the retiring cohorts are older and smaller than today's sales.
    s = survival_curve("lognormal", mean=np.array([10.0]), sd=np.array([3.0]), n_months=1200)
    flat = InUseStock.initial(s, runs=1, historical_inflow=np.array([1.0]))
    grown = InUseStock.initial(s, runs=1, historical_inflow=np.array([1.0]), growth=0.10)
    assert grown.stock[0, 0] < flat.stock[0, 0]
    # cohort of age a entered a months before the last historical month: inflow 1.1^(-a/12)
    expected = (1.1 ** (-np.arange(grown.n_ages) / 12.0) * grown.survival[0, :, 0]).sum()
    assert grown.stock[0, 0] == pytest.approx(expected, rel=1e-12)
    out = grown.step(np.array([1.0]))
    assert 0.0 < out[0, 0] < 0.5


def test_truncation_releases_tail_and_keeps_balance():
    # Capping ages at 24 months for a 3-year lifetime: whatever is left at age 24 leaves then.
    s = survival_curve("fixed", mean=np.array([3.0]), n_months=60)
    stock = InUseStock.empty(s, runs=1, max_age_months=24)
    assert stock.n_ages == 24
    stocks, out = simulate(stock, np.array([7.0] + [0.0] * 30).reshape(31, 1, 1))
    assert out[24, 0, 0] == pytest.approx(7.0) and out.sum() == pytest.approx(7.0)
    # default: ages end once survival < 1e-9 everywhere
    s = survival_curve("normal", mean=np.array([1.0]), sd=np.array([0.25]), n_months=1200)
    auto = InUseStock.empty(s, runs=1)
    assert s[auto.n_ages - 1, 0] < 1e-9 <= s[auto.n_ages - 2, 0]


def test_end_of_life_supply():
    # 2 t of EV magnets and 1 t of wind magnets reach end of life; NdFeB is 0.3 Nd and 0.05 Dy
    # for EV, 0.28 Nd and 0.02 Dy for wind; 50 % / 80 % collected, 90 % / 95 % recovered.
    out = np.array([[2.0, 1.0], [0.0, 4.0]])
    content = np.array([[0.30, 0.05], [0.28, 0.02]])
    got = end_of_life_supply(out, content, np.array([0.5, 0.8]), np.array([0.9, 0.95]))
    nd_run0 = 2.0 * 0.5 * 0.9 * 0.30 + 1.0 * 0.8 * 0.95 * 0.28
    dy_run1 = 4.0 * 0.8 * 0.95 * 0.02
    assert got.shape == (2, 2)
    assert got[0, 0] == pytest.approx(nd_run0, rel=1e-12)
    assert got[1, 1] == pytest.approx(dy_run1, rel=1e-12)
    per_run = end_of_life_supply(out, content, np.array([[0.5, 0.8], [0.0, 0.0]]),
                                 np.array([0.9, 0.95]))
    np.testing.assert_allclose(per_run[1], 0.0)
    with pytest.raises(ValueError):
        end_of_life_supply(out, content, np.array([1.5, 0.8]), np.array([0.9, 0.95]))


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        survival_curve("gamma", mean=np.array([1.0]), n_months=12)
    with pytest.raises(ValueError):
        survival_curve("normal", mean=np.array([1.0]), sd=np.array([0.0]), n_months=12)
    s = survival_curve("fixed", mean=np.array([1.0]), n_months=24)
    with pytest.raises(ValueError):
        InUseStock.empty(s, runs=1).step(np.array([[-1.0]]))


# ---------------------------------------------------------------------------------------------
# 3. Mass balance and non-negativity (hypothesis)
# ---------------------------------------------------------------------------------------------

lifetimes = st.one_of(
    st.tuples(st.just("fixed"), st.fixed_dictionaries({"mean": st.floats(0.0, 5.0)})),
    *[st.tuples(st.just(d), st.fixed_dictionaries({"mean": st.floats(0.05, 5.0),
                                                  "sd": st.floats(0.01, 3.0)}))
      for d in ("normal", "foldednormal", "lognormal")],
    st.tuples(st.just("weibull"), st.fixed_dictionaries({"shape": st.floats(0.3, 6.0),
                                                        "scale": st.floats(0.05, 5.0)})),
)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifetime=lifetimes, seed=st.integers(0, 2**31 - 1), months=st.integers(1, 48),
       cap=st.one_of(st.none(), st.integers(1, 36)), start=st.floats(0.0, 50.0),
       growth=st.floats(-0.5, 0.5))
def test_mass_balance_and_non_negative(lifetime, seed, months, cap, start, growth):
    dist, params = lifetime
    rng = np.random.default_rng(seed)
    runs, prods = 3, 2
    # spiky inflows with exact zeros, so empty and large cohorts mix
    inflow = rng.exponential(10.0, (months, runs, prods)) * (rng.random((months, runs, prods))
                                                             < 0.7)
    s = survival_curve(dist, n_months=900, **{k: np.full(prods, v) for k, v in params.items()})
    stock = InUseStock.initial(s, runs, historical_inflow=start, growth=growth,
                               max_age_months=cap)
    before = stock.stock
    assert np.all(stock.cohorts >= 0)
    stocks, out = simulate(stock, inflow)
    prev = np.concatenate([before[None], stocks[:-1]])
    scale = 1.0 + prev + inflow
    np.testing.assert_array_less(np.abs(stocks - (prev + inflow - out)), 1e-12 * scale)
    assert np.all(out >= 0) and np.all(stocks >= 0) and np.all(stock.cohorts >= 0)
    # whole-horizon balance: what came in is in use or has left
    np.testing.assert_allclose(before + inflow.sum(0), stocks[-1] + out.sum(0),
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 4. Determinism and vectorisation over runs
# ---------------------------------------------------------------------------------------------


def test_runs_match_single_runs_and_repeat():
    rng = np.random.default_rng(3)
    runs, months = 4, 40
    mean = rng.uniform(0.5, 3.0, (runs, 3))  # per-run lifetimes, [R, P] -> survival [A, R, P]
    sd = rng.uniform(0.1, 1.0, (runs, 3))
    hist = rng.uniform(0.0, 5.0, (runs, 3))
    inflow = rng.uniform(0.0, 9.0, (months, runs, 3))
    s = survival_curve("lognormal", mean=mean, sd=sd, n_months=1200)
    assert s.shape == (1200, runs, 3)
    cap = 240

    batch = InUseStock.initial(s, runs, historical_inflow=hist, max_age_months=cap)
    b_stock, b_out = simulate(batch, inflow)
    for r in range(runs):
        single = InUseStock.initial(s[:, r], 1, historical_inflow=hist[r], max_age_months=cap)
        s_stock, s_out = simulate(single, inflow[:, r : r + 1])
        np.testing.assert_allclose(b_stock[:, r], s_stock[:, 0], rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(b_out[:, r], s_out[:, 0], rtol=1e-13, atol=1e-12)

    again = InUseStock.initial(s, runs, historical_inflow=hist, max_age_months=cap)
    a_stock, a_out = simulate(again, inflow)
    np.testing.assert_array_equal(a_stock, b_stock)
    np.testing.assert_array_equal(a_out, b_out)


def test_shared_survival_broadcasts_over_runs():
    s = survival_curve("weibull", shape=np.array([2.0, 1.2]), scale=np.array([1.0, 3.0]),
                       n_months=600)
    assert s.shape == (600, 2)
    inflow = np.random.default_rng(5).uniform(0, 3, (30, 3, 2))
    batch = InUseStock.empty(s, runs=3)
    assert batch.survival.shape[0] == 1
    b_stock, b_out = simulate(batch, inflow)
    for r in range(3):
        s_stock, s_out = simulate(InUseStock.empty(s, runs=1), inflow[:, r : r + 1])
        np.testing.assert_allclose(b_out[:, r], s_out[:, 0], rtol=1e-13, atol=1e-12)
        np.testing.assert_allclose(b_stock[:, r], s_stock[:, 0], rtol=1e-13, atol=1e-12)
