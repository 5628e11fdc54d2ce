"""In-use stocks of magnets in products, by age cohort, and the end-of-life flows they release.

Magnets sold into products (EV motors, wind turbines, electronics) stay in use for years before
they reach end of life and can be collected and recycled. This module keeps the in-use stock by
monthly age cohort so that recycling supply follows past sales with the right delay, vectorised
over a leading run axis R and products (sectors) P. All masses are tonnes of magnet [t]; flows
are tonnes per time step [t/step], one step being ``step_months`` months (1 in the kernel).

Notes
-----
**Survival curve.** For a lifetime distribution with survival function ``S(x)`` (share of a
cohort whose lifetime exceeds ``x`` years) the share of the inflow of step ``c`` still in use at
the end of step ``c + a`` (age ``a`` steps, ``a = 0`` being the step of entry) is

.. math:: s_a = S\\big((a + \\delta)\\,\\Delta / 12\\big), \\qquad
          \\Delta = \\text{step\\_months},

with ``delta = 1/2`` when the inflow enters in the middle of its step (default), ``1`` at its
start and ``0`` at its end. This is exactly flodym's ``LifetimeModel.compute_survival_factor``
with ``n_pts_per_interval = 1`` on an evenly spaced time dimension: the period bounds are the
midpoints between time items, the inflow time is ``bounds[c]`` (start), the period midpoint
(middle) or ``bounds[c+1]`` (end), and survival is evaluated at the end of each later period,
``bounds[t+1]``, so ``sf[t, c] = S(bounds[t+1] - t_in(c))``.

Distributions (parameters in years, one value per product, or any array that broadcasts):

* ``fixed`` (``mean``): ``S(x) = 1[x < mean]`` (flodym ``FixedLifetime``);
* ``normal`` (``mean``, ``sd``): ``S(x) = 1 - Phi((x - mean)/sd)`` without truncation, as flodym
  ``NormalLifetime``: the probability mass at negative lifetimes is not renormalised but leaves
  in the step of entry (``1 - s_0`` of the inflow), which keeps the mass balance;
* ``foldednormal`` (``mean``, ``sd`` of the normal before folding): lifetime ``|X|``,
  ``S(x) = Phi((mean - x)/sd) + Phi((-mean - x)/sd)`` (flodym ``FoldedNormalLifetime``);
* ``lognormal`` (``mean``, ``sd`` of the lifetime itself, not of its logarithm):
  ``sigma^2 = ln(1 + sd^2/mean^2)``, ``mu = ln(mean) - sigma^2/2``,
  ``S(x) = 1 - Phi((ln x - mu)/sigma)`` (flodym ``LogNormalLifetime``);
* ``weibull`` (``shape`` k, ``scale`` lambda in years): ``S(x) = exp(-(x/lambda)^k)``
  (flodym ``WeibullLifetime``).

To mix distributions across products, compute one curve per group and concatenate along P.

**Cohort update.** The state ``c[r, a, p]`` is the magnet mass of age ``a`` still in use at the
end of the last step, for ages ``a = 0..A-1``. With conditional survival
``q_0 = s_0`` and ``q_a = s_a / s_{a-1}`` (0 where ``s_{a-1} = 0``), a step with inflow ``I`` is

.. math:: c'_0 = q_0 I, \\qquad c'_a = q_a c_{a-1} \\; (1 \\le a < A), \\qquad
          O = (1 - q_0) I + \\sum_{a=1}^{A-1} (1 - q_a) c_{a-1} + c_{A-1},

so ``sum(c') = sum(c) + I - O`` (the stock balance, exact up to rounding), and
``c'_a = I_{t-a} s_a`` as in flodym's ``stock_by_cohort = inflow * sf``. Truncation: each
(run, product) curve is used as ``s_a = 0`` after its own first age ``a*`` with ``s_{a*} < tol``
(1e-9), so the part of a cohort still in use at ``a*`` (below ``tol`` of its inflow) leaves at
age ``a* + 1``; the array keeps ``A = max a* + 1`` ages, capped at ``max_age_months`` (100 years
by default), and whatever reaches age ``A`` leaves at that step (all of it when the cap bites).
Truncation therefore never breaks the mass balance; it only moves a tail of each cohort
(``< tol`` of its inflow unless the cap bites) to end of life early, and a run's result does not
depend on the other runs in its batch.

**Initial stock.** A simulation starting in 2024 needs the products sold before 2024 in use, or
it would see no end-of-life flow for years. ``InUseStock.initial`` fills every age with the
cohort that an inflow history ``I_{-1-a} = I_{-1} (1 + g)^{-a \\Delta / 12}`` leaves
(``c_a = I_{-1-a} s_a``): with growth ``g = 0`` this is the steady state of a constant
historical inflow, where the outflow equals the inflow and the stock is ``I sum_a s_a``
(about inflow x mean lifetime). The assumption is that sales grew at a constant rate ``g`` per
year (0: were constant) for longer than the oldest surviving cohort and that lifetimes were the
same as now.

Memory: the cohort array has ``R x A x P`` entries; a normal lifetime of 15 +/- 5 years reaches
``tol = 1e-9`` after about 45 years (540 months).

References
----------
Dürrwächter, J. et al., flodym (Flexible Open Dynamic Material Systems Model), Journal of
Open Source Software, doi:10.21105/joss.10105; code github.com/pik-piam/flodym,
version 1.1.0 (``flodym/lifetime_models.py``, ``flodym/stocks.py``: ``InflowDrivenDSM``).
Pauliuk, S. and Heeren, N. (2020), ODYM - An open software framework for studying dynamic
material systems: Principles, implementation, and data structures, Journal of Industrial
Ecology 25(2), 446-458, doi:10.1111/jiec.13011.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr

MONTHS_PER_YEAR = 12.0
#: Hard cap on cohort ages [months] when no ``max_age_months`` is given (100 years).
MAX_AGE_MONTHS = 1200
DISTRIBUTIONS = ("fixed", "normal", "foldednormal", "lognormal", "weibull")
_OFFSET = {"start": 1.0, "middle": 0.5, "end": 0.0}

InflowAt = Literal["start", "middle", "end"]


def _positive(name: str, value: np.ndarray | float | None, strict: bool = True) -> np.ndarray:
    if value is None:
        raise ValueError(f"lifetime parameter '{name}' is required for this distribution")
    arr = np.asarray(value, dtype=float)
    bad = ~(arr > 0) if strict else ~(arr >= 0)
    if np.any(bad):
        raise ValueError(f"lifetime parameter '{name}' must be {'> 0' if strict else '>= 0'}")
    return arr


def lifetime_sf(distribution: str, ages_years: np.ndarray, *, mean=None, sd=None, shape=None,
                scale=None) -> np.ndarray:
    """Survival function ``S(x)`` [1] at ages [years], broadcasting ages against the parameters.

    Parameters are in years: ``mean``/``sd`` for fixed (mean only), normal, foldednormal and
    lognormal; ``shape`` (dimensionless) and ``scale`` [years] for weibull. See the module Notes
    for the formulas, which are those of flodym's lifetime models.
    """
    x = np.asarray(ages_years, dtype=float)
    if distribution == "fixed":
        return (x < _positive("mean", mean, strict=False)).astype(float)
    if distribution in ("normal", "foldednormal"):
        mu = _positive("mean", mean, strict=False)
        sigma = _positive("sd", sd)
        if distribution == "normal":
            return ndtr((mu - x) / sigma)
        return ndtr((mu - x) / sigma) + ndtr((-mu - x) / sigma)
    if distribution == "lognormal":
        m = _positive("mean", mean)
        v = _positive("sd", sd) ** 2
        sigma2 = np.log1p(v / (m * m))
        mu = np.log(m) - 0.5 * sigma2
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - mu) / np.sqrt(sigma2)
        return ndtr(-z)
    if distribution == "weibull":
        k = _positive("shape", shape)
        lam = _positive("scale", scale)
        return np.exp(-((np.maximum(x, 0.0) / lam) ** k))
    raise ValueError(f"unknown lifetime distribution '{distribution}'; use one of {DISTRIBUTIONS}")


def survival_curve(distribution: str, *, mean=None, sd=None, shape=None, scale=None,
                   n_months: float, step_months: float = 1.0,
                   inflow_at: InflowAt = "middle") -> np.ndarray:
    """Share [1] of an inflow cohort still in use at the end of each age step, ``[n_ages, *S]``.

    Why: this is the only place the lifetime distribution enters the stock model; everything
    else follows from the mass balance (as in flodym and ODYM).

    Parameters
    ----------
    distribution : one of ``fixed``, ``normal``, ``foldednormal``, ``lognormal``, ``weibull``.
    mean, sd : lifetime mean and standard deviation [years], shape ``S`` (usually ``[P]``).
    shape, scale : Weibull shape [1] and scale [years].
    n_months : horizon [months]; ``n_ages = ceil(n_months / step_months)``.
    step_months : length of one time step [months].
    inflow_at : when inflow enters within its step (flodym's ``inflow_at``; default middle).

    Returns
    -------
    s : ``s[a] = S((a + delta) * step_months / 12)`` with ``delta`` 1/2 (middle), 1 (start) or
        0 (end), non-increasing in ``a`` and in [0, 1].
    """
    if inflow_at not in _OFFSET:
        raise ValueError(f"inflow_at must be one of {tuple(_OFFSET)}")
    if step_months <= 0:
        raise ValueError("step_months must be > 0")
    n_ages = int(np.ceil(n_months / step_months - 1e-9))
    given = [np.asarray(v, float) for v in (mean, sd, shape, scale) if v is not None]
    if not given:
        raise ValueError("give the lifetime parameters (mean, sd or shape, scale)")
    params = np.broadcast(*given)
    ages = (np.arange(n_ages) + _OFFSET[inflow_at]) * step_months / MONTHS_PER_YEAR
    ages = ages.reshape((n_ages,) + (1,) * params.nd)
    s = lifetime_sf(distribution, ages, mean=mean, sd=sd, shape=shape, scale=scale)
    s = np.broadcast_to(s, (n_ages, *params.shape))
    # guard against rounding so that conditional survival stays in [0, 1]
    return np.minimum.accumulate(np.clip(s, 0.0, 1.0), axis=0)


def _cohort_axis_first(survival: np.ndarray) -> np.ndarray:
    """``[A, P]`` or ``[A, R, P]`` (survival_curve layout) -> ``[1|R, A, P]``."""
    s = np.asarray(survival, dtype=float)
    if s.ndim == 2:
        return s[None]
    if s.ndim == 3:
        return np.moveaxis(s, 0, 1)
    raise ValueError("survival must be [A, P] or [A, R, P]")


def truncate(survival: np.ndarray, tol: float = 1e-9, max_age_months: int | None = None,
             step_months: float = 1.0) -> np.ndarray:
    """Survival ``[1|R, A, P]`` cut where it falls below ``tol``, and at ``max_age_months``.

    Each (run, product) curve is set to 0 after its own first age below ``tol``, so a run's
    result does not depend on which other runs share the batch; the array keeps the ages up to
    the longest such curve, and at most ``max_age_months`` [months] (default 100 years).
    """
    s = _cohort_axis_first(survival).copy()
    cap = int(np.ceil((MAX_AGE_MONTHS if max_age_months is None else max_age_months)
                      / step_months - 1e-9))
    below = s < tol
    # index of the first age below tol (n_ages if none): the curve is kept up to and including it
    first_below = np.where(below.any(axis=1), below.argmax(axis=1), s.shape[1])  # [1|R, P]
    ages = np.arange(s.shape[1]).reshape(1, -1, 1)
    s[ages > first_below[:, None, :]] = 0.0
    n_ages = max(1, min(int(first_below.max()) + 1, cap, s.shape[1]))
    return s[:, :n_ages]


@dataclass
class InUseStock:
    """Magnet mass in use by run, age cohort and product, with its lifetime survival curve.

    Attributes
    ----------
    cohorts : ``[R, A, P]`` mass [t] of age ``a`` steps still in use after the last step.
    survival : ``[1|R, A, P]`` survival curve ``s_a`` (see module Notes), truncated to ``A``.
    step_months : length of one step [months].
    """

    cohorts: np.ndarray
    survival: np.ndarray
    step_months: float = 1.0

    def __post_init__(self) -> None:
        self.cohorts = np.array(self.cohorts, dtype=float)
        self.survival = np.asarray(self.survival, dtype=float)
        if self.cohorts.ndim != 3 or self.survival.ndim != 3:
            raise ValueError("cohorts must be [R, A, P] and survival [1|R, A, P]")
        if self.survival.shape[1:] != self.cohorts.shape[1:] or \
                self.survival.shape[0] not in (1, self.cohorts.shape[0]):
            raise ValueError(f"survival {self.survival.shape} does not fit cohorts "
                             f"{self.cohorts.shape}")
        s = self.survival
        prev = np.concatenate([np.ones_like(s[:, :1]), s[:, :-1]], axis=1)
        # q_a = s_a / s_{a-1}: share of last step's survivors still in use after this step
        self._q = np.clip(np.divide(s, prev, out=np.zeros_like(s), where=prev > 0), 0.0, 1.0)

    @classmethod
    def initial(cls, survival: np.ndarray, runs: int, historical_inflow=None, stock=None,
                growth: float | np.ndarray = 0.0, tol: float = 1e-9,
                max_age_months: int | None = None, step_months: float = 1.0) -> InUseStock:
        """Stock left by a past inflow history, so end-of-life flows start at once.

        Parameters
        ----------
        survival : ``[A0, P]`` or ``[A0, R, P]`` from :func:`survival_curve`, with ``A0`` steps at
            least as long as the longest lifetime of interest.
        runs : number of runs R.
        historical_inflow : ``[P]`` or ``[R, P]`` inflow [t/step] in the last step before the
            start; give this or ``stock`` (0 for both gives an empty stock).
        stock : ``[P]`` or ``[R, P]`` in-use stock [t] at the start; the historical inflow is
            solved from it (``I = stock / sum_a (1+g)^(-a step/12) s_a``).
        growth : yearly growth rate of past inflow [1/yr], scalar, ``[P]`` or ``[R, P]``;
            0 gives the steady state of a constant inflow.
        tol, max_age_months : truncation (see module Notes).

        Notes
        -----
        ``c_a = I (1 + g)^{-a step/12} s_a``; see the module Notes for the assumption.
        """
        s = truncate(survival, tol, max_age_months, step_months)
        n_prod = s.shape[2]
        ages = np.arange(s.shape[1]).reshape(1, -1, 1)
        g = np.broadcast_to(np.asarray(growth, float), (runs, n_prod))[:, None, :]
        if np.any(g <= -1):
            raise ValueError("growth must be > -1")
        history = (1.0 + g) ** (-ages * step_months / MONTHS_PER_YEAR)  # [R, A, P]
        if (historical_inflow is None) == (stock is None):
            if historical_inflow is None:
                historical_inflow = 0.0
            else:
                raise ValueError("give historical_inflow or stock, not both")
        if stock is not None:
            target = np.broadcast_to(np.asarray(stock, float), (runs, n_prod))
            per_unit = (history * s).sum(axis=1)
            last = np.divide(target, per_unit, out=np.zeros_like(target), where=per_unit > 0)
        else:
            last = np.broadcast_to(np.asarray(historical_inflow, float), (runs, n_prod))
        if np.any(last < 0):
            raise ValueError("historical inflow and stock must be >= 0")
        return cls(last[:, None, :] * history * s, s, step_months)

    @classmethod
    def empty(cls, survival: np.ndarray, runs: int, tol: float = 1e-9,
              max_age_months: int | None = None, step_months: float = 1.0) -> InUseStock:
        """No products in use at the start (a new technology)."""
        return cls.initial(survival, runs, historical_inflow=0.0, tol=tol,
                           max_age_months=max_age_months, step_months=step_months)

    @property
    def stock(self) -> np.ndarray:
        """In-use stock [t] by run and product, ``[R, P]``."""
        return self.cohorts.sum(axis=1)

    @property
    def n_ages(self) -> int:
        return self.cohorts.shape[1]

    def step(self, inflow: np.ndarray) -> np.ndarray:
        """Add this step's inflow ``[R, P]`` (or ``[P]``) [t/step]; return end-of-life outflow.

        Returns ``[R, P]`` [t/step], non-negative; ``stock`` after the step equals ``stock``
        before plus inflow minus outflow (see module Notes).
        """
        runs, _, n_prod = self.cohorts.shape
        inflow = np.broadcast_to(np.asarray(inflow, float), (runs, n_prod))
        if np.any(inflow < 0) or not np.all(np.isfinite(inflow)):
            raise ValueError("inflow must be finite and >= 0")
        c = self.cohorts
        outflow = c[:, -1, :].copy()  # reaching age A: everything left goes
        c[:, 1:, :] = c[:, :-1, :]  # age by one step (numpy copies overlapping slices safely)
        c[:, 0, :] = inflow
        kept = c * self._q
        outflow += (c - kept).sum(axis=1)
        self.cohorts = kept
        return outflow


def end_of_life_supply(outflow: np.ndarray, content: np.ndarray, collection: np.ndarray,
                       recovery: np.ndarray) -> np.ndarray:
    """Element recovered from end-of-life products [t element/step], ``[R, E]``.

    Why: this is the secondary supply that recycling adds to the refined market.

    Parameters
    ----------
    outflow : ``[R, P]`` end-of-life outflow [t magnet/step] from :meth:`InUseStock.step`.
    content : ``[P, E]`` element content [t element / t magnet].
    collection : ``[R, P]`` or ``[P]`` share [1] of end-of-life magnets collected.
    recovery : ``[P]`` (or ``[R, P]``) share [1] of the collected element recovered.

    Notes
    -----
    .. math:: Y_{r,e} = \\sum_p O_{r,p}\\, k_{p,e}\\, \\gamma_{r,p}\\, \\rho_{p}
    """
    outflow = np.asarray(outflow, float)
    content = np.asarray(content, float)
    collection = np.asarray(collection, float)
    recovery = np.asarray(recovery, float)
    for name, arr in (("content", content), ("collection", collection),
                      ("recovery", recovery)):
        if np.any((arr < 0) | (arr > 1)):
            raise ValueError(f"{name} must lie in [0, 1]")
    if np.any(outflow < 0):
        raise ValueError("outflow must be >= 0")
    recovered = outflow * collection * recovery  # [R, P] t magnet whose content is recovered
    return np.einsum("rp,pe->re", recovered, content)
