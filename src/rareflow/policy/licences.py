"""Licence queues as a fluid model, vectorised over runs and channels.

A channel is one (exporter, destination, product) flow that a rule puts under licence. All
quantities are flow rates in tonnes per month.

Notes
-----
For a channel with requested flow ``R_t`` (what buyers would take without the rule) and licensed
flow ``L_t`` (licences valid this month):

* shipped: ``S_t = min(R_t, L_t) + leak * max(R_t - L_t, 0)``;
* new applications: ``A_t = max(R_t - L_{t-1}(1 - 1/V) - P_t, 0)`` where ``P_t`` is the
  volume already in review, so unmet demand is applied for once and not again while it waits;
* reviews: the pending volume of age ``a`` months is decided this month with the hazard
  ``h(a) = (F(a+1) - F(a)) / (1 - F(a))`` of a lognormal review time with the regime's median and
  90th percentile (``sigma = ln(p90 / median) / 1.2816``); everything still pending after
  ``MAX_AGE`` months is decided. If the decided volume of an exporter exceeds its review capacity
  ``K`` (t/month), every decision is scaled down in proportion (a fluid stand-in for first in,
  first out);
* decisions: a share ``p`` (the regime's approval share for civil end use; 0 for the military
  share where the rule denies military end users) is approved, the rest denied: the buyer must
  look elsewhere and may apply again next month;
* licences: ``L_t = L_{t-1} (1 - 1/V) + approved_t`` with ``V`` the validity in months
  (exponential expiry; ``V = 1`` is the per-shipment practice of 2025). Decisions made within
  the month license flow that ships the same month, so approval 1 with no review time changes
  nothing.

Statistics per month: applications, approvals, denials, backlog (pending volume) and the median
wait of the decisions made (days).

References
----------
Regulations of the PRC on Export Control of Dual-use Items (2024), Art. 17: 45 working days.
Licensing practice 2025-2026: shared/reference export-controls.md, section 3 (CLEPA, EU Chamber,
Reuters, Teslam); see data/licence_regimes.csv for the per-period parameters and their sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from rareflow.dims import DAYS_PER_MONTH

MAX_AGE = 12
_EPS = 1e-12


def review_hazards(median_months: np.ndarray, p90_months: np.ndarray) -> np.ndarray:
    """Decision hazard by age [MAX_AGE, *shape] for lognormal review times."""
    median = np.maximum(median_months, 1e-3)
    sigma = np.maximum(np.log(np.maximum(p90_months, median * 1.0001) / median) / 1.2816, 1e-3)
    ages = np.arange(MAX_AGE + 1).reshape((-1,) + (1,) * median.ndim)
    with np.errstate(divide="ignore"):
        z = (np.log(np.maximum(ages, 1e-9)) - np.log(median)) / sigma
    cdf = np.where(ages == 0, 0.0, ndtr(z))
    survive = 1.0 - cdf[:-1]
    hazard = np.where(survive > _EPS, (cdf[1:] - cdf[:-1]) / np.maximum(survive, _EPS), 1.0)
    hazard[-1] = 1.0
    return np.clip(hazard, 0.0, 1.0)


@dataclass
class LicenceQueue:
    """State of every channel of one stage: licensed flow and pending volume by age."""

    licensed: np.ndarray  # [R, *shape]
    pending: np.ndarray  # [R, MAX_AGE, *shape]

    @classmethod
    def empty(cls, runs: int, shape: tuple[int, ...]) -> LicenceQueue:
        return cls(np.zeros((runs, *shape)), np.zeros((runs, MAX_AGE, *shape)))

    def allowed_share(self, requested: np.ndarray, required: np.ndarray,
                      leakage: np.ndarray) -> np.ndarray:
        """Share of the requested flow that may ship this month (1 where no licence is needed)."""
        licensed = np.minimum(self.licensed, requested)
        ship = licensed + leakage * np.maximum(requested - self.licensed, 0.0)
        share = np.divide(ship, requested, out=np.ones_like(requested), where=requested > _EPS)
        # nothing is licensed yet where nothing was requested: ship what the licences cover
        share = np.where(requested > _EPS, share, np.where(self.licensed > _EPS, 1.0, leakage))
        return np.where(required, np.clip(share, 0.0, 1.0), 1.0)

    def step(
        self,
        requested: np.ndarray,
        required: np.ndarray,
        approval: np.ndarray,
        hazards: np.ndarray,
        validity_months: np.ndarray,
        capacity: np.ndarray | float = np.inf,
        exporter_axis: int = 1,
    ) -> dict[str, np.ndarray]:
        """Advance one month, before this month's flows ship; return its statistics.

        Licences expire, unmet requested flow is applied for, reviews are decided, approvals add
        licensed flow that can ship this same month (a decision inside the month counts).
        ``requested`` [R, *shape]; ``required``, ``approval``, ``validity_months`` broadcast to
        it; ``hazards`` [MAX_AGE, *shape]; ``capacity`` per exporter (t/month of decisions).
        """
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
        wait_days = _weighted_median_age(decided_by_age, ages) * DAYS_PER_MONTH
        self.pending -= decided_by_age
        # age the pipeline by one month; the oldest bucket was fully decided (hazard 1)
        self.pending[:, 1:] = self.pending[:, :-1].copy()
        self.pending[:, 0] = 0.0
        approved = decided * approval
        denied = decided - approved
        self.licensed = np.where(required, self.licensed + approved, 0.0)
        return {
            "applications": applications, "approved": approved, "denied": denied,
            "backlog": self.pending.sum(axis=1), "median_wait_days": wait_days,
        }


def _weighted_median_age(mass: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """Median of decision ages (months, bucket midpoints), over all channels, per run [R]."""
    runs = mass.shape[0]
    by_age = mass.reshape(runs, MAX_AGE, -1).sum(axis=2)  # [R, MAX_AGE]
    total = by_age.sum(axis=1, keepdims=True)
    cum = np.cumsum(by_age, axis=1)
    idx = (cum < 0.5 * total).sum(axis=1)
    out = np.minimum(idx, MAX_AGE - 1).astype(float) + 0.5
    return np.where(total[:, 0] > _EPS, out, np.nan)
