"""Triggers: event-condition-action rules evaluated month by month, run by run.

A trigger watches one condition (a rule in force, a country's shortfall share, a bilateral
magnet flow, a price multiple, or another trigger having fired) from its ``watch_from`` month
on. It fires in the first month the condition has held for ``for_months`` months in a row, once
per run, and its action applies from ``delay`` months later (at the earliest the month after it
fired: this month's flows have shipped) for ``duration`` months. Pure array code over the
leading run axis; no I/O.

Notes
-----
With ``h_k(t)`` the condition of trigger ``k`` in month ``t`` and ``n_k(t)`` the months in a row
it has held, ``n_k(t) = (n_k(t-1) + 1) h_k(t)``; the trigger fires at
``f_k = min{t : n_k(t) >= N_k}`` and its action is active for
``f_k + max(1, d_k) <= t < f_k + max(1, d_k) + D_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("rule_in_force", "shortfall_share_above", "magnet_exports_below_t",
         "price_multiple_above", "fired")
NEVER = np.iinfo(np.int64).max // 4


@dataclass(frozen=True)
class TriggerInputs:
    """Compiled triggers (K of them); index arrays use -1 where a field does not apply."""

    ids: tuple[str, ...]
    kind: np.ndarray  # [K] int index into KINDS
    threshold: np.ndarray  # [K] value of the condition
    rule_active: np.ndarray  # [T, K] bool, for rule_in_force
    country: np.ndarray  # [K] shortfall country
    sector_mask: np.ndarray  # [K, S] sectors counted for the shortfall share
    exporter: np.ndarray  # [K]
    importer: np.ndarray  # [K]
    item: np.ndarray  # [K] price item
    market: np.ndarray  # [K] 0 china, 1 ex_china
    other: np.ndarray  # [K] trigger index for "fired"
    for_months: np.ndarray  # [K]
    watch_from: np.ndarray  # [K] first month index the condition is watched
    delay_months: np.ndarray  # [K] >= 1
    duration_months: np.ndarray  # [K] NEVER when open-ended
    restrict_conc: np.ndarray  # [K, X, C] share of the flow let through while active
    restrict_refined: np.ndarray  # [K, X, C, E]
    restrict_magnet: np.ndarray  # [K, X, C, G]
    release_holder: np.ndarray  # [K] stockpile index forced to release, -1 if none

    @property
    def count(self) -> int:
        return len(self.ids)


@dataclass
class TriggerState:
    """Per-run counters and firing months."""

    inputs: TriggerInputs
    held: np.ndarray  # [R, K] months in a row the condition has held
    fired_month: np.ndarray  # [R, K] month index it fired, NEVER if not

    @classmethod
    def start(cls, inputs: TriggerInputs, runs: int) -> TriggerState:
        k = inputs.count
        return cls(inputs, np.zeros((runs, k), dtype=np.int64),
                   np.full((runs, k), NEVER, dtype=np.int64))

    def active(self, t: int) -> np.ndarray:
        """[R, K] whether each trigger's action applies in month ``t``."""
        start = self.fired_month + self.inputs.delay_months[None]
        return (start <= t) & (t < start + self.inputs.duration_months[None])

    def observe(self, t: int, shortfall: np.ndarray, need: np.ndarray,
                magnet_trade: np.ndarray, price_multiple: np.ndarray) -> None:
        """Evaluate every condition at the end of month ``t``.

        shortfall, need [R, C, S]; magnet_trade [R, X, C] t/month; price_multiple [R, I, 2].
        Triggers are evaluated in order, so "fired" sees triggers listed before it that fired
        this month.
        """
        inp = self.inputs
        for k in range(inp.count):
            kind = KINDS[inp.kind[k]]
            if kind == "rule_in_force":
                holds = np.full(shortfall.shape[0], bool(inp.rule_active[t, k]))
            elif kind == "shortfall_share_above":
                mask = inp.sector_mask[k][None]
                short = (shortfall[:, inp.country[k]] * mask).sum(axis=1)
                total = (need[:, inp.country[k]] * mask).sum(axis=1)
                share = np.divide(short, total, out=np.zeros_like(short), where=total > 1e-12)
                holds = share > inp.threshold[k]
            elif kind == "magnet_exports_below_t":
                holds = magnet_trade[:, inp.exporter[k], inp.importer[k]] < inp.threshold[k]
            elif kind == "price_multiple_above":
                holds = price_multiple[:, inp.item[k], inp.market[k]] > inp.threshold[k]
            else:
                holds = self.fired_month[:, inp.other[k]] <= t
            holds = holds & (t >= inp.watch_from[k])
            self.held[:, k] = np.where(holds, self.held[:, k] + 1, 0)
            first = (self.fired_month[:, k] == NEVER) & (self.held[:, k] >= inp.for_months[k])
            self.fired_month[:, k] = np.where(first, t, self.fired_month[:, k])

    def conc_multiplier(self, t: int) -> np.ndarray | None:
        """[R, X, C] product of the active concentrate restrictions, or None."""
        return self._multiplier(t, self.inputs.restrict_conc)

    def refined_multiplier(self, t: int) -> np.ndarray | None:
        """[R, X, C, E] product of the active restrictions, or None when there are none."""
        return self._multiplier(t, self.inputs.restrict_refined)

    def magnet_multiplier(self, t: int) -> np.ndarray | None:
        return self._multiplier(t, self.inputs.restrict_magnet)

    def _multiplier(self, t: int, masks: np.ndarray) -> np.ndarray | None:
        active = self.active(t)
        restricting = [k for k in range(self.inputs.count) if (masks[k] < 1.0).any()]
        if not restricting or not active[:, restricting].any():
            return None
        out = np.ones((active.shape[0], *masks.shape[1:]))
        trailing = (1,) * (masks.ndim - 1)
        for k in restricting:
            out = out * np.where(active[:, k].reshape(-1, *trailing), masks[k][None], 1.0)
        return out

    def forced_release(self, t: int, holders: int) -> np.ndarray:
        """[R, H] bool: stockpiles a fired trigger orders to release this month."""
        active = self.active(t)
        out = np.zeros((active.shape[0], holders), dtype=bool)
        for k in range(self.inputs.count):
            h = self.inputs.release_holder[k]
            if h >= 0:
                out[:, h] |= active[:, k]
        return out
