"""Compile export-control rules and licensing regimes into per-month arrays for the kernel.

The kernel applies these arrays and knows nothing else about policy. A rule is taken to apply in a
month when it is in force on the 15th of that month.

Several rules on one channel combine to the strictest outcome (export-controls reference, C.4):
a ban or informal halt closes the channel (less leakage); licences take the lowest approval share,
the longest review and the shortest validity among them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from rareflow.dims import DAYS_PER_MONTH
from rareflow.policy.rules import REFINED_FORMS, Rule, parse_date

#: Licensing practice where no regime row applies: the "normal phase" prior of the reference
#: (export-controls.md, C.5): decisions mostly within the 45-working-day limit (triangular 5-30-45
#: working days: median about 27 working days = 38 calendar days, 90% within 45 = 63 days),
#: P(approve | decided) 0.8-0.95 (midpoint 0.9).
DEFAULT_APPROVAL = 0.9
DEFAULT_REVIEW_MEDIAN_DAYS = 38.0
DEFAULT_REVIEW_P90_DAYS = 63.0
#: 2025 practice was "one batch, one licence" (per shipment).
DEFAULT_VALIDITY_MONTHS = 1.0


@dataclass
class Regime:
    """Licensing practice for one rule, destination group and period."""

    regime_id: str
    rule_id: str
    destinations: list[str]
    start: dt.date
    end: dt.date | None
    state: str
    approval_share: float
    review_days_median: float
    review_days_p90: float | None


def regimes_from_table(frame) -> list[Regime]:
    out = []
    for r in frame.to_dict("records"):
        p90 = r.get("review_days_p90")
        out.append(Regime(
            regime_id=r["regime_id"], rule_id=r["rule_id"], destinations=list(r["destinations"]),
            start=parse_date(r["start"]), end=parse_date(r.get("end")), state=r["state"],
            approval_share=float(r["approval_share"]),
            review_days_median=float(r["review_days_median"]),
            review_days_p90=None if p90 is None or np.isnan(p90) else float(p90),
        ))
    return out


@dataclass
class StageLicences:
    """Per-month licence parameters of one stage's channels [T, X, C, K]."""

    required: np.ndarray  # bool
    approval: np.ndarray
    review_median_months: np.ndarray
    review_p90_months: np.ndarray
    validity_months: np.ndarray
    leakage: np.ndarray


@dataclass
class PolicyTensors:
    """Everything rules do to the kernel, month by month."""

    conc: StageLicences  # K = 1
    refined: StageLicences  # K = elements
    magnet: StageLicences  # K = grades
    closed_conc: np.ndarray  # [T,X,C] share of the flow a ban/halt lets through (1 = open)
    closed_refined: np.ndarray  # [T,X,C,E]
    closed_magnet: np.ndarray  # [T,X,C,G]
    quota_t_per_month: np.ndarray  # [T,X] inf where no quota
    extraterritorial_threshold: np.ndarray  # [T,C,G] NaN where none (actor: extra_actor)
    extra_actor: int
    capacity_t_per_month: np.ndarray  # [X] inf = unbounded review capacity
    active_rules: list[list[str]]  # per month, ids of rules in force that act on flows

    @property
    def any_licence(self) -> bool:
        return bool(self.conc.required.any() or self.refined.required.any()
                    or self.magnet.required.any())


def _stage(shape: tuple[int, ...], defaults: dict) -> StageLicences:
    return StageLicences(
        required=np.zeros(shape, dtype=bool),
        approval=np.ones(shape),
        review_median_months=np.full(shape, defaults["median"] / DAYS_PER_MONTH),
        review_p90_months=np.full(shape, defaults["p90"] / DAYS_PER_MONTH),
        validity_months=np.full(shape, defaults["validity"]),
        leakage=np.zeros(shape),
    )


def compile_rules(
    rules: list[Rule],
    regimes: list[Regime],
    months: list[str],
    countries: list[str],
    elements: list[str],
    grade_elements: list[set[str]],
    military_share: np.ndarray,
    defaults: dict | None = None,
    capacity: dict[str, float] | None = None,
) -> PolicyTensors:
    """Arrays for the kernel from the rules in play.

    ``military_share`` [T, C, G] is the military share of magnet need, which rules that deny
    military end users refuse whatever their regime.
    """
    d = {"approval": DEFAULT_APPROVAL, "median": DEFAULT_REVIEW_MEDIAN_DAYS,
         "p90": DEFAULT_REVIEW_P90_DAYS, "validity": DEFAULT_VALIDITY_MONTHS, "leakage": 0.0,
         "friction": 0.0}
    d.update(defaults or {})
    n_t, n_c, n_e, n_g = len(months), len(countries), len(elements), len(grade_elements)
    conc = _stage((n_t, n_c, n_c, 1), d)
    refined = _stage((n_t, n_c, n_c, n_e), d)
    magnet = _stage((n_t, n_c, n_c, n_g), d)
    closed_conc = np.ones((n_t, n_c, n_c))
    closed_refined = np.ones((n_t, n_c, n_c, n_e))
    closed_magnet = np.ones((n_t, n_c, n_c, n_g))
    quota = np.full((n_t, n_c), np.inf)
    extra = np.full((n_t, n_c, n_g), np.nan)
    extra_actor = countries.index("CHN") if "CHN" in countries else 0
    cidx = {c: i for i, c in enumerate(countries)}
    days = [dt.date(int(m[:4]), int(m[5:7]), 15) for m in months]
    active: list[list[str]] = [[] for _ in months]
    by_rule: dict[str, list[Regime]] = {}
    for regime in regimes:
        by_rule.setdefault(regime.rule_id, []).append(regime)

    for rule in rules:
        if not rule.acts_on_flows or rule.actor not in cidx:
            continue
        x = cidx[rule.actor]
        dests = [i for c, i in cidx.items() if i != x and rule.covers_destination(c)]
        ref_mask = np.array([any(rule.covers_refined(e, f) for f in REFINED_FORMS)
                             for e in elements])
        mag_mask = np.array([rule.covers_magnet(ge) for ge in grade_elements])
        conc_on = rule.covers_concentrate()
        leak = rule.leakage if rule.leakage is not None else d["leakage"]
        for t, day in enumerate(days):
            if not rule.active_on(day):
                continue
            active[t].append(rule.rule_id)
            if rule.mechanism in ("ban", "informal_halt"):
                for c in dests:
                    keep = leak
                    if conc_on:
                        closed_conc[t, x, c] = min(closed_conc[t, x, c], keep)
                    closed_refined[t, x, c, ref_mask] = np.minimum(
                        closed_refined[t, x, c, ref_mask], keep)
                    closed_magnet[t, x, c, mag_mask] = np.minimum(
                        closed_magnet[t, x, c, mag_mask], keep)
            elif rule.mechanism == "quota" and rule.quota_t is not None:
                quota[t, x] = min(quota[t, x], rule.quota_t / 12.0)
            elif rule.mechanism == "licence":
                for c in dests:
                    code = countries[c]
                    regime = _regime_for(by_rule.get(rule.rule_id, []), code, day)
                    if regime is None:
                        p, median, p90 = d["approval"], d["median"], d["p90"]
                    else:
                        p, median = regime.approval_share, regime.review_days_median
                        p90 = regime.review_days_p90 or 1.5 * median
                    validity = rule.validity_months or d["validity"]
                    targets = []
                    if conc_on:
                        targets.append((conc, (t, x, c, slice(None)), None))
                    targets.append((refined, (t, x, c, ref_mask), None))
                    military = (military_share[t, c] if rule.military_end_use == "denied"
                                else np.zeros(n_g))
                    targets.append((magnet, (t, x, c, mag_mask), military[mag_mask]))
                    for stage, where, mil in targets:
                        p_eff = p if mil is None else p * (1.0 - mil)
                        _tighten(stage, where, p_eff, median, p90, validity, leak)
                    if d["friction"] > 0:
                        # exporters hold back uncontrolled goods of the same forms too
                        keep = 1.0 - d["friction"]
                        if "magnet" in rule.forms:
                            closed_magnet[t, x, c, ~mag_mask] = np.minimum(
                                closed_magnet[t, x, c, ~mag_mask], keep)
                        if any(f in rule.forms for f in REFINED_FORMS):
                            closed_refined[t, x, c, ~ref_mask] = np.minimum(
                                closed_refined[t, x, c, ~ref_mask], keep)
                if rule.extraterritorial_threshold is not None:
                    for c in range(n_c):
                        if rule.covers_destination(countries[c]):
                            cur = extra[t, c, mag_mask]
                            extra[t, c, mag_mask] = np.where(
                                np.isnan(cur), rule.extraterritorial_threshold,
                                np.minimum(cur, rule.extraterritorial_threshold))
    cap = np.full(n_c, np.inf)
    for code, value in (capacity or {}).items():
        if code in cidx:
            cap[cidx[code]] = value
    return PolicyTensors(conc, refined, magnet, closed_conc, closed_refined, closed_magnet,
                         quota, extra, extra_actor, cap, active)


def _tighten(stage: StageLicences, where: tuple, approval, median_days: float,
             p90_days: float, validity: float, leakage: float) -> None:
    """Combine a licence rule into a channel: strictest parameters win."""
    was = stage.required[where].copy()
    stage.required[where] = True
    stage.approval[where] = np.where(was, np.minimum(stage.approval[where], approval), approval)
    m, p = median_days / DAYS_PER_MONTH, p90_days / DAYS_PER_MONTH
    stage.review_median_months[where] = np.where(
        was, np.maximum(stage.review_median_months[where], m), m)
    stage.review_p90_months[where] = np.where(
        was, np.maximum(stage.review_p90_months[where], p), p)
    stage.validity_months[where] = np.where(
        was, np.minimum(stage.validity_months[where], validity), validity)
    stage.leakage[where] = np.where(was, np.minimum(stage.leakage[where], leakage), leakage)


def _regime_for(regimes: list[Regime], country: str, day: dt.date) -> Regime | None:
    """The latest-starting regime of a rule that covers ``country`` on ``day``."""
    best = None
    for r in regimes:
        if r.destinations and country not in r.destinations:
            continue
        if r.start <= day and (r.end is None or day <= r.end):
            if best is None or r.start >= best.start:
                best = r
    return best
