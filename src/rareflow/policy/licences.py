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

import math
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from rareflow.dims import DAYS_PER_MONTH

MAX_AGE = 12
_EPS = 1e-12
#: review_hazards' results by their inputs' bytes (oldest dropped first); a history scenario
#: cycles through a dozen or more distinct regimes per run, so the cache must hold them all or
#: every batch of an ensemble recomputes them. The lock serves the server's threads.
_HAZARD_CACHE: dict[tuple, np.ndarray] = {}
_HAZARD_CACHE_SIZE = 64
_HAZARD_LOCK = threading.Lock()


def review_hazards(median_months: np.ndarray, p90_months: np.ndarray) -> np.ndarray:
    """Decision hazard by age [MAX_AGE, *shape] for lognormal review times.

    The parameters rarely change from month to month, so results are kept and the same
    (read-only) array is returned again for equal inputs.
    """
    median_months = np.asarray(median_months, dtype=float)
    p90_months = np.asarray(p90_months, dtype=float)
    key = (median_months.shape, p90_months.shape, median_months.tobytes(),
           p90_months.tobytes())  # tobytes: C order, whatever the layout
    hazard = _HAZARD_CACHE.get(key)
    if hazard is None:
        hazard = _review_hazards(median_months, p90_months)
        hazard.setflags(write=False)
        with _HAZARD_LOCK:
            while len(_HAZARD_CACHE) >= _HAZARD_CACHE_SIZE:
                del _HAZARD_CACHE[next(iter(_HAZARD_CACHE))]
            _HAZARD_CACHE[key] = hazard
    return hazard


def _review_hazards(median_months: np.ndarray, p90_months: np.ndarray) -> np.ndarray:
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


def licence_channels(policy, stage: str, shape: tuple[int, ...]) -> np.ndarray:
    """Channels [X, C, K] that a rule of ``policy`` can put under licence in some month.

    ``stage`` is ``"refined"`` or ``"magnet"``. Magnet channels include the extraterritorial
    ones: a magnet made in a country other than the rule's actor, shipped abroad, of a grade and
    destination that a threshold names in some month (the kernel's ``_magnet_licences``).
    A superset is harmless (a channel never required stays empty); a missing channel is not.
    """
    if policy is None:
        return np.zeros(shape, dtype=bool)
    if stage == "refined":
        return np.asarray(policy.refined.required).any(axis=0)
    if stage != "magnet":
        raise ValueError(f"stage (value {stage!r}): must be 'refined' or 'magnet'")
    mask = np.asarray(policy.magnet.required).any(axis=0)
    named = (~np.isnan(policy.extraterritorial_threshold)).any(axis=0)  # [C, G]
    n = mask.shape[0]
    routes = (np.arange(n) != policy.extra_actor)[:, None] & ~np.eye(n, dtype=bool)  # [X, C]
    return mask | (routes[:, :, None] & named[None])


@dataclass
class LicenceQueue:
    """State of the licensed channels of one stage: licensed flow and pending volume by age.

    Only channels that have been required at least once carry state (a channel never required
    has nothing licensed or pending, and its allowed share is 1): ``licensed`` [R, N] and
    ``pending`` [R, MAX_AGE, N] hold these N channels, in C order of the full ``shape``, at the
    flat positions ``index``. Channels join when first required. ``candidates`` (flat positions,
    default all) bounds the channels that may ever be required (:func:`licence_channels` gives
    it from the policy tensors); requiring another is an error.

    Arguments of :meth:`step` and :meth:`allowed_share` and their results are full arrays
    [R, *shape]; the numbers equal those of a queue that keeps every channel.
    """

    licensed: np.ndarray  # [R, N]
    pending: np.ndarray  # [R, MAX_AGE, N]
    shape: tuple[int, ...] = ()
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    candidates: np.ndarray | None = None  # flat positions that may be required; None: all
    _hazard_key: object = field(default=None, repr=False)
    _hazard_kept: np.ndarray | None = field(default=None, repr=False)
    _backlog: np.ndarray | None = field(default=None, repr=False)  # pending.sum(axis=1)
    _spare: np.ndarray | None = field(default=None, repr=False)  # buffer for the next pending
    _admitted: object = field(default=None, repr=False)  # the last ``required`` admitted
    #: (index, channels not kept, channels outside the candidates) as masks of the flat shape
    _masks: tuple | None = field(default=None, repr=False)
    _dest_onehot: tuple | None = field(default=None, repr=False)  # (index, axis, [N, C] one-hot)
    #: compiled twins of the month's arithmetic (``rareflow.sim.compiled.LICENCE_CORE``: the
    #: same numbers), or None for numpy
    core: object = field(default=None, repr=False)

    @classmethod
    def empty(cls, runs: int, shape: tuple[int, ...], policy=None, stage: str | None = None,
              channels: np.ndarray | None = None, core: object = None) -> LicenceQueue:
        """A queue with nothing licensed or pending.

        ``channels`` (a mask of ``shape``), or ``policy`` and ``stage`` (see
        :func:`licence_channels`), name the channels that can ever need a licence; requiring
        any other channel is an error. ``core``: see the attribute.
        """
        shape = tuple(int(d) for d in shape)
        if channels is None and stage is not None:
            channels = licence_channels(policy, stage, shape)
        candidates = None
        if channels is not None:
            candidates = np.flatnonzero(np.broadcast_to(np.asarray(channels, dtype=bool), shape))
        return cls(np.zeros((runs, 0)), np.zeros((runs, MAX_AGE, 0)), shape,
                   candidates=candidates, core=core)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    # -- moving between full arrays [..., *shape] and kept channels [..., N] ---------------
    def _flat(self, values, lead: int) -> np.ndarray:
        """An array that broadcasts to [*lead dims, *shape], as [*lead dims, size]."""
        arr = np.asarray(values)
        nd = len(self.shape)
        lead_shape = arr.shape[:max(arr.ndim - nd, 0)]
        if len(lead_shape) < lead:
            lead_shape = (1,) * (lead - len(lead_shape)) + lead_shape
        if arr.ndim < nd or arr.shape[arr.ndim - nd:] != self.shape:
            arr = np.broadcast_to(arr, lead_shape + self.shape)
        return arr.reshape(lead_shape + (self.size,))

    def _compiled(self) -> bool:
        """Whether the compiled core computes this month. With one channel numpy sums over ages
        along a contiguous axis (pairwise), which the core's in-order sums do not follow."""
        return self.core is not None and len(self.index) > 1

    def _per_run(self, values, runs: int | None = None) -> np.ndarray:
        """``values`` as [1 | runs, size] for the compiled core, which indexes without bounds
        checks: a leading axis other than 1 or the queue's runs is broadcast to ``runs``
        (given for arrays that must be per run)."""
        flat = self._flat(values, 1)
        runs_here = self.licensed.shape[0]
        if (runs is not None and flat.shape[0] != runs) or flat.shape[0] not in (1, runs_here):
            flat = np.broadcast_to(flat, (runs or runs_here, flat.shape[1]))
        return flat

    def _keep(self, values, lead: int = 1) -> np.ndarray:
        """The kept channels [*lead dims, N] of an array that broadcasts to [*lead, *shape]."""
        return np.take(self._flat(values, lead), self.index, axis=-1)

    def _full(self, kept: np.ndarray, fill: float) -> np.ndarray:
        """Scatter kept channels [R, N] back to a full array [R, *shape] filled with ``fill``."""
        out = np.zeros((kept.shape[0], self.size)) if fill == 0.0 else np.full(
            (kept.shape[0], self.size), fill)
        out[:, self.index] = kept
        return out.reshape(kept.shape[:1] + self.shape)

    def _admit(self, required, after_step: bool = False) -> None:
        """Give state to channels required for the first time (rarely more than once a run).

        ``after_step``: :meth:`allowed_share` right after :meth:`step` with the same (unchanged)
        ``required`` array does not scan it again.
        """
        admitted, self._admitted = self._admitted, None
        if after_step and required is admitted:
            return
        if not after_step:
            self._admitted = required
        flat = self._flat(required, 1).astype(bool, copy=False)
        hit = flat.any(axis=0) if flat.shape[0] > 1 else flat[0]  # required in some run
        if self._masks is None or self._masks[0] is not self.index:
            kept = np.zeros(self.size, dtype=bool)
            kept[self.index] = True
            outside = None
            if self.candidates is not None:
                outside = np.ones(self.size, dtype=bool)
                outside[self.candidates] = False
            self._masks = (self.index, ~kept, outside)
        _, not_kept, outside = self._masks
        if outside is not None and np.logical_and(hit, outside).any():
            raise ValueError("a channel outside the queue's candidate channels is required")
        new_mask = np.logical_and(hit, not_kept)
        if not new_mask.any():
            return
        new = np.flatnonzero(new_mask)
        index = np.union1d(self.index, new)
        at = np.searchsorted(index, self.index)
        runs = self.licensed.shape[0]
        licensed = np.zeros((runs, len(index)))
        licensed[:, at] = self.licensed
        pending = np.zeros((runs, MAX_AGE, len(index)))
        pending[:, :, at] = self.pending
        if self._backlog is not None:
            backlog = np.zeros((runs, len(index)))
            backlog[:, at] = self._backlog
            self._backlog = backlog
        self.licensed, self.pending, self.index = licensed, pending, index
        self._spare = None
        self._hazard_key = self._hazard_kept = None

    def kept_state(self, required, hazards: np.ndarray) -> tuple:
        """The kept channels' state for a compiled month that advances it in place (the
        compiled whole month, ``rareflow.sim.compiled_month``), after admitting the channels
        ``required`` names: (licensed [R, N], pending [R, MAX_AGE, N], backlog [R, N], flat
        positions [N], their hazards [MAX_AGE, N], their positions in ``shape`` [ndim, N])."""
        self._admit(required)
        if self._backlog is None:
            self._backlog = self.pending.sum(axis=1)
        index = np.asarray(self.index, dtype=np.int64)
        positions = np.stack(np.unravel_index(index, self.shape)).astype(np.int64)
        return (self.licensed, self.pending, self._backlog, index,
                np.ascontiguousarray(self._hazards(hazards), dtype=float), positions)

    def _hazards(self, hazards: np.ndarray) -> np.ndarray:
        """Kept channels [MAX_AGE, N] of the hazards (cached for the same read-only array)."""
        if hazards is self._hazard_key:
            return self._hazard_kept
        kept = self._keep(hazards, 1)
        if isinstance(hazards, np.ndarray) and not hazards.flags.writeable:
            self._hazard_key, self._hazard_kept = hazards, kept  # review_hazards' cached arrays
        return kept

    def allowed_share(self, requested: np.ndarray, required: np.ndarray,
                      leakage: np.ndarray, extra_leakage: np.ndarray | None = None,
                      allowed: np.ndarray | None = None) -> np.ndarray:
        """Share of the requested flow that may ship this month (1 where no licence is needed).

        ``extra_leakage`` [R] (a run parameter) is added to ``leakage``, capped at 1. With
        ``allowed`` (broadcasting to [R, *shape]) the result is ``allowed`` times the share.
        """
        self._admit(required, after_step=True)
        runs = np.shape(requested)[0]
        if not len(self.index):
            ones = np.ones((runs, *self.shape))
            return ones if allowed is None else allowed * ones
        if self._compiled() and allowed is not None:
            runs = self.licensed.shape[0]
            extra = (np.zeros(runs) if extra_leakage is None
                     else np.broadcast_to(np.asarray(extra_leakage, float), (runs,)))
            out = self.core.share(self.licensed, self.index, self._per_run(requested, runs),
                                  self._per_run(required), self._per_run(leakage), extra,
                                  extra_leakage is not None, self._per_run(allowed))
            return out.reshape((runs, *self.shape))
        requested = self._keep(requested)
        required = self._keep(required)
        leakage = self._keep(leakage)
        if extra_leakage is not None:
            leakage = np.minimum(1.0, leakage + np.reshape(extra_leakage, (-1, 1)))
        licensed = np.minimum(self.licensed, requested)
        ship = licensed + leakage * np.maximum(requested - self.licensed, 0.0)
        share = np.divide(ship, requested, out=np.ones_like(requested), where=requested > _EPS)
        # nothing is licensed yet where nothing was requested: ship what the licences cover
        share = np.where(requested > _EPS, share, np.where(self.licensed > _EPS, 1.0, leakage))
        share = self._full(np.where(required, np.clip(share, 0.0, 1.0), 1.0), 1.0)
        return share if allowed is None else allowed * share

    def step(
        self,
        requested: np.ndarray,
        required: np.ndarray,
        approval: np.ndarray,
        hazards: np.ndarray,
        validity_months: np.ndarray,
        capacity: np.ndarray | float = np.inf,
        exporter_axis: int = 1,
        approval_scale: np.ndarray | None = None,
        full: bool = True,
    ) -> dict[str, np.ndarray]:
        """Advance one month, before this month's flows ship; return its statistics.

        Licences expire, unmet requested flow is applied for, reviews are decided, approvals add
        licensed flow that can ship this same month (a decision inside the month counts).
        ``requested`` [R, *shape]; ``required``, ``approval``, ``validity_months`` broadcast to
        it; ``hazards`` [MAX_AGE, *shape]; ``capacity`` per exporter (t/month of decisions).
        Statistics: ``applications``, ``approved``, ``denied``, ``backlog`` [R, *shape], the
        same summed over all axes but the destination's (the one after ``exporter_axis``) as
        ``<name>_by_destination`` [R, C], and ``median_wait_days`` [R]; with ``full=False`` only
        the last two (the kernel needs no more, and the full arrays cost a pass each).
        ``approval_scale`` [R] (a run parameter) multiplies ``approval``, capped at 1.
        """
        self._admit(required)
        runs = np.shape(requested)[0]
        if not len(self.index):
            n_dest = self.shape[exporter_axis % len(self.shape)]
            keys = ("applications", "approved", "denied", "backlog")
            return {**({k: np.zeros((runs, *self.shape)) for k in keys} if full else {}),
                    **{f"{k}_by_destination": np.zeros((runs, n_dest)) for k in keys},
                    "median_wait_days": np.full(runs, np.nan)}
        hazards = self._hazards(hazards)
        pending = self.pending
        if self._backlog is None:
            self._backlog = pending.sum(axis=1)
        if self._compiled() and not np.isfinite(np.asarray(capacity)).any():
            # compiled: the same arithmetic, channel by channel, gathered from the full arrays;
            # pending ages in place and decisions come back summed by age
            runs = pending.shape[0]
            scale = (np.ones(runs) if approval_scale is None
                     else np.broadcast_to(np.asarray(approval_scale, float), (runs,)))
            applications, approved, denied, by_age, self._backlog = self.core.month(
                self.licensed, pending, self._backlog, self.index,
                self._per_run(requested, runs), self._per_run(required),
                self._per_run(approval), scale, approval_scale is not None,
                self._per_run(validity_months), hazards)
            wait_days = _median_age(by_age) * DAYS_PER_MONTH
            return self._statistics(applications, approved, denied, wait_days, exporter_axis,
                                    full)
        requested = self._keep(requested)
        required = self._keep(required)
        approval = self._keep(approval)
        if approval_scale is not None:
            approval = np.minimum(1.0, approval * np.reshape(approval_scale, (-1, 1)))
        validity = np.maximum(self._keep(validity_months), 1.0)
        self.licensed = np.where(required, self.licensed * (1.0 - 1.0 / validity), 0.0)
        req = np.where(required, requested, 0.0)
        applications = np.maximum(req - self.licensed - self._backlog, 0.0) * required
        pending[:, 0] += applications
        decided_by_age = pending * hazards[None]
        decided = decided_by_age.sum(axis=1)
        if np.isfinite(np.asarray(capacity)).any():
            exporters = np.unravel_index(self.index, self.shape)[exporter_axis - 1]
            n_x = self.shape[exporter_axis - 1]
            onehot = np.zeros((len(self.index), n_x))
            onehot[np.arange(len(self.index)), exporters] = 1.0
            total = decided @ onehot  # [R, X]
            cap = np.broadcast_to(np.asarray(capacity, dtype=float), (n_x,))[None]
            scale = np.minimum(1.0, np.divide(cap, total, out=np.ones_like(total),
                                              where=total > _EPS))[:, exporters]
            decided_by_age *= scale[:, None]
            decided = decided * scale
        wait_days = _median_age(decided_by_age.sum(axis=2)) * DAYS_PER_MONTH
        # what stays in review, aged by one month (into the spare buffer, in one pass); the
        # oldest bucket was fully decided (hazard 1)
        aged = self._spare if self._spare is not None else np.empty_like(pending)
        np.subtract(pending[:, :-1], decided_by_age[:, :-1], out=aged[:, 1:])
        aged[:, 0] = 0.0
        self.pending, self._spare = aged, pending
        self._backlog = aged.sum(axis=1)
        approved = decided * approval
        denied = decided - approved
        self.licensed = np.where(required, self.licensed + approved, 0.0)
        return self._statistics(applications, approved, denied, wait_days, exporter_axis, full)

    def _statistics(self, applications, approved, denied, wait_days, exporter_axis, full):
        """The month's statistics from its kept channels (see :meth:`step`)."""
        out = {"applications": applications, "approved": approved, "denied": denied,
               "backlog": self._backlog}
        # per destination (summed over exporters and products), from the kept channels only
        dest_axis = exporter_axis % len(self.shape)  # the axis after the exporter's
        cached = self._dest_onehot
        if cached is None or cached[0] is not self.index or cached[1] != dest_axis:
            dest = np.unravel_index(self.index, self.shape)[dest_axis]
            onehot = np.zeros((len(self.index), self.shape[dest_axis]))
            onehot[np.arange(len(self.index)), dest] = 1.0
            self._dest_onehot = (self.index, dest_axis, onehot)
        onehot = self._dest_onehot[2]
        return {
            **({k: self._full(v, 0.0) for k, v in out.items()} if full else {}),
            **{f"{k}_by_destination": v @ onehot for k, v in out.items()},
            "median_wait_days": wait_days,
        }


def _median_age(by_age: np.ndarray) -> np.ndarray:
    """Median of decision ages (months, bucket midpoints) per run [R], from the volume
    decided at each age summed over channels, ``by_age`` [R, MAX_AGE]."""
    total = by_age.sum(axis=1, keepdims=True)
    cum = np.cumsum(by_age, axis=1)
    idx = (cum < 0.5 * total).sum(axis=1)
    out = np.minimum(idx, MAX_AGE - 1).astype(float) + 0.5
    return np.where(total[:, 0] > _EPS, out, np.nan)
