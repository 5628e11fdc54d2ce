"""Responses over time: how demand, supply and governments answer a shock, month by month.

The kernel (:mod:`rareflow.sim.kernel`) plays out flows under given capacities and demand. This
module holds the state that makes those capacities and demands move: long-run demand responses,
substitution, recycling from in-use stocks, producer shutdowns and new capacity, price floors and
stockpiles. Pure array code over the leading run axis R; no I/O. docs/model.md ("Responses")
states every equation with its source; here they are in short.

Notes
-----
Price multiples ``M[r, m, e] = p / p0`` per market m (China, ex-China) and element e come from
:class:`rareflow.sim.prices.PriceState`. A magnet grade's material multiple is
``M_g = sum_e k_ge p0_e M_e / sum_e k_ge p0_e`` (k: grade content, p0: base prices).

* **Demand**: ``f* = clip(M^-eps_L, f_min, 1/f_min)``, ``f_t = f_{t-1} + (f* - f_{t-1}) / tau``
  per market and sector (magnets: M of the sector's grade; other uses: M of the element).
* **Substitution**: option o starts once its price signal has stayed at or above its trigger
  multiple for its adoption delay; adoption then rises by ``a_max / ramp`` a month to ``a_max``
  and stays (a redesign is not undone). Magnet replacement multiplies the sector's magnet need
  by ``1 - r a``; content reduction cuts the element's content of the sector's grade in
  proportion to the sector's share of that grade's use in the market.
* **Recycling**: in-use stocks by sector (:class:`rareflow.sim.stocks.InUseStock`); collection
  ``gamma = clip(gamma0 M_g^eta + boost, 0, 1)``; recovered oxide goes to users' countries'
  refined stocks. Only the part above the base-year rate is added: the base year's recycling is
  already inside the calibrated supply.
* **Shutdown**: utilisation ``u += (1[p_rev >= c_cash] - u) / tau_s`` for producers with a cash
  cost in data/supply_costs.csv; ``p_rev = max(p, floor)``.
* **New capacity**: each January, stage s in country c commits
  ``max(0, w_c gap_s - pending_sc)`` when the expected ex-China price
  (12-month exponential average) is at least ``hurdle x cost_sc (1 - subsidy)``; a target share
  commits ``target x use_s - capacity_sc - pending_sc`` whatever the price. Capacity arrives
  after the lead time and ramps up linearly.
* **Stockpiles**: release ``min(level, cap)`` while the named sectors' shortfall share exceeds
  the threshold (or a trigger orders it); buy ``min(rate, target - level)`` while the price
  multiple is below the refill level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rareflow.policy.triggers import TriggerInputs, TriggerState
from rareflow.sim.stocks import InUseStock

N_BUILD = 3  # mining, separation, magnet
POLICY_COSTS = ("price_floor", "stockpile_purchases", "capital_subsidy")
_EPS = 1e-12


def _div(num, den, fill=0.0):
    num, den = np.asarray(num, float), np.asarray(den, float)
    out = np.full(np.broadcast(num, den).shape, fill)
    return np.divide(num, den, out=out, where=np.abs(den) > _EPS)


@dataclass(frozen=True)
class ResponseInputs:
    """Compiled parameters of the responses (built by :mod:`rareflow.compile_responses`)."""

    prices: bool
    demand: bool
    substitution: bool
    recycling: bool
    shutdown: bool
    capacity: bool

    market_of_country: np.ndarray  # [C] 0 China, 1 ex-China
    element_base_price: np.ndarray  # [E] US$/kg, 0 where no price
    # demand
    elasticity_long_run: float  # [-]
    adjustment_months: float  # [month]
    demand_floor: float  # [-] lowest demand factor
    # substitution (O options)
    opt_sector: np.ndarray  # [O] sector index
    opt_element: np.ndarray  # [O] element index, -1 for magnet replacement
    opt_reduction: np.ndarray  # [O]
    opt_max: np.ndarray  # [O]
    opt_delay: np.ndarray  # [O] months
    opt_ramp: np.ndarray  # [O] months
    opt_trigger: np.ndarray  # [O] price multiple
    opt_weight: np.ndarray  # [2, O] sector share of the world's use of its grade, by market
    # recycling (S sectors; zeros for non-magnet sectors)
    survival: np.ndarray  # [A, S]
    historical_inflow: np.ndarray  # [S] t magnet / month before the start
    collection0: np.ndarray  # [S]
    recovery: np.ndarray  # [S]
    collection_elasticity: float
    collection_boost: float
    # shutdown and capacity (stages mining, separation, magnet)
    cash_cost: np.ndarray  # [3, C] US$/kg, NaN where none (no shutdown rule)
    shutdown_months: float
    shutdown_start: int  # first month the shutdown rule acts
    build: np.ndarray  # [3, C] bool
    full_cost: np.ndarray  # [3, C] US$/kg, NaN where unknown (no price-driven build)
    capex: np.ndarray  # [3, C] US$ per t/yr of capacity, NaN where unknown
    lead_months: np.ndarray  # [3, C] int
    ramp_months: np.ndarray  # [3] int
    hurdle: float
    subsidy_share: float
    target_share: np.ndarray  # [3] NaN where no target
    decision_months: np.ndarray  # [T] bool
    stage_price_item: np.ndarray  # [3] item index of the stage's product price, -1 if none
    ndpr: np.ndarray  # [E] bool: Nd and Pr
    feed_ndpr_share: float  # [-] Nd + Pr share of the REO mined outside China (base month)
    residue_t_per_t: np.ndarray  # [C] t residue per t REO separated
    thorium_kg_per_t: np.ndarray  # [C]
    # price floors (F)
    floor_item: np.ndarray  # [F]
    floor_country: np.ndarray  # [F]
    floor_value: np.ndarray  # [F] US$/kg
    floor_active: np.ndarray  # [T, F] bool
    floor_elements: np.ndarray  # [F, E] bool: elements whose separated output is paid
    # stockpiles (H)
    sp_ids: tuple[str, ...]
    sp_country: np.ndarray  # [H]
    sp_magnet: np.ndarray  # [H] bool: magnet grade (True) or element (False)
    sp_index: np.ndarray  # [H] grade or element index
    sp_item: np.ndarray  # [H] price item index (-1 for magnets: grade multiple)
    sp_initial: np.ndarray  # [H] t
    sp_target: np.ndarray  # [H] t
    sp_threshold: np.ndarray  # [H]
    sp_sectors: np.ndarray  # [H, S] bool
    sp_max_release: np.ndarray  # [H] t/month
    sp_refill: np.ndarray  # [H] t/month
    sp_refill_below: np.ndarray  # [H]
    sp_start: np.ndarray  # [H] month index
    triggers: TriggerInputs | None = None
    #: [O] the data row each (option, sector) pair comes from: a content cut is summed over
    #: the sectors of one option before it multiplies the grade (cuts of different options
    #: compound). None: every pair is its own option.
    opt_group: np.ndarray | None = None

    @property
    def holders(self) -> int:
        return len(self.sp_ids)


class ResponseState:
    """The state of every response for R runs, advanced once a month by the kernel."""

    def __init__(self, inp: ResponseInputs, runs: int, n_months: int, grade_content: np.ndarray,
                 sector_grade: np.ndarray, n_countries: int, n_items: int,
                 long_run_elasticity: np.ndarray | None = None):
        r, c = runs, n_countries
        self.inp = inp
        self.r = r
        s = len(sector_grade)
        e = grade_content.shape[1]
        self.grade_content = grade_content
        self.sector_grade = sector_grade
        self.magnet_sector = sector_grade >= 0
        self.china = inp.market_of_country == 0
        self.demand_factor = np.ones((r, 2, s))
        self.oxide_factor = np.ones((r, 2, e))
        o = len(inp.opt_sector)
        self.signal_months = np.zeros((r, 2, o))
        self.launched = np.zeros((r, 2, o), dtype=bool)
        self.adoption = np.zeros((r, 2, o))
        self.stocks = InUseStock.initial(inp.survival, r, historical_inflow=inp.historical_inflow)
        self.utilisation = np.ones((r, N_BUILD, c))
        self.added = np.zeros((r, N_BUILD, n_months + 1, c))  # capacity committed, by month
        self.committed = np.zeros((r, N_BUILD, c))  # t/month committed so far
        self.expected_price = None  # [R, 3, C] set in the first month
        self.gap = np.zeros((r, N_BUILD))  # 12-month average ex-China gap, capacity units
        self.use = np.zeros((r, N_BUILD))  # 12-month average ex-China use, capacity units
        self.level = np.broadcast_to(inp.sp_initial, (r, inp.holders)).astype(float).copy()
        self.last_release = np.zeros((r, inp.holders))
        self.last_short = np.zeros((r, c, s))  # last month's shortfall and need [R, C, S]
        self.last_need = np.zeros((r, c, s))
        self.triggers = (TriggerState.start(inp.triggers, r) if inp.triggers is not None
                         and inp.triggers.count else None)
        self.n_items = n_items
        self.eps_long = (np.full((r, 1, 1), inp.elasticity_long_run)
                         if long_run_elasticity is None
                         else np.asarray(long_run_elasticity, float).reshape(r, 1, 1))

    # ---- prices ---------------------------------------------------------------------------
    def grade_multiple(self, multiple: np.ndarray) -> np.ndarray:
        """[R, 2, G] material price multiple of each grade from element multiples [R, 2, E]."""
        weights = self.grade_content * self.inp.element_base_price[None]
        total = weights.sum(axis=1)
        return _div(np.einsum("ge,rme->rmg", weights, multiple), total[None, None], fill=1.0)

    # ---- demand and substitution ----------------------------------------------------------
    def need_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """Multipliers on magnet need [R, C, S] and on non-magnet oxide need [R, C, E]."""
        m = self.inp.market_of_country
        magnet = self.demand_factor[:, m, :]  # fancy indexing: a copy
        oxide = self.oxide_factor[:, m, :]
        inp = self.inp
        if inp.substitution and len(inp.opt_sector):
            for k in np.where(inp.opt_element < 0)[0]:
                cut = 1.0 - inp.opt_reduction[k] * self.adoption[:, :, k]  # [R, 2]
                magnet[:, :, inp.opt_sector[k]] *= cut[:, m]
        return magnet, oxide

    def content(self) -> np.ndarray:
        """Grade content [R, G, E] after content-reduction options."""
        inp = self.inp
        out = np.broadcast_to(self.grade_content, (self.r, *self.grade_content.shape)).copy()
        if not (inp.substitution and len(inp.opt_sector)):
            return out
        groups = (np.arange(len(inp.opt_sector)) if inp.opt_group is None else inp.opt_group)
        cuts: dict[tuple[int, int, int], np.ndarray] = {}
        for k in np.where(inp.opt_element >= 0)[0]:
            g = self.sector_grade[inp.opt_sector[k]]
            if g < 0:
                continue
            cut = inp.opt_reduction[k] * (self.adoption[:, :, k] * inp.opt_weight[None, :, k]
                                          ).sum(axis=1)
            key = (int(groups[k]), int(g), int(inp.opt_element[k]))
            cuts[key] = cuts.get(key, 0.0) + cut
        for (_, g, e), cut in cuts.items():
            out[:, g, e] *= np.clip(1.0 - cut, 0.0, 1.0)
        return out

    # ---- capacity -------------------------------------------------------------------------
    def capacity(self, t: int, base: tuple[np.ndarray, np.ndarray, np.ndarray]
                 ) -> list[np.ndarray]:
        """This month's capacity [R, C] per stage: base [1|R, C] plus new, times utilisation."""
        out = []
        for s, cap in enumerate(base):
            total = cap + self.added[:, s, t]
            if self.inp.shutdown:
                total = total * self.utilisation[:, s]
            out.append(total)
        return out

    def new_capacity(self, t: int) -> np.ndarray:
        """[R, 3, C] capacity from in-model decisions available in month ``t``."""
        return self.added[:, :, t]

    # ---- stockpiles -----------------------------------------------------------------------
    def stockpile_actions(self, t: int, multiple: np.ndarray, n_grades: int, n_elements: int):
        """Releases and purchase requests this month.

        Returns (release_magnet [R,C,G], buy_magnet [R,C,G], release_oxide [R,C,E],
        buy_oxide [R,C,E], release [R,H], buy [R,H]).
        """
        inp = self.inp
        r, h = self.r, inp.holders
        c = len(inp.market_of_country)
        rel_m, buy_m = np.zeros((r, c, n_grades)), np.zeros((r, c, n_grades))
        rel_o, buy_o = np.zeros((r, c, n_elements)), np.zeros((r, c, n_elements))
        if h == 0:
            return rel_m, buy_m, rel_o, buy_o, np.zeros((r, 0)), np.zeros((r, 0))
        on = t >= inp.sp_start  # [H]
        # shortfall share of the named sectors together (as trigger conditions measure it)
        short = _div((self.last_short[:, inp.sp_country, :] * inp.sp_sectors[None]).sum(axis=2),
                     (self.last_need[:, inp.sp_country, :] * inp.sp_sectors[None]).sum(axis=2))
        grade_mult = self.grade_multiple(multiple)[:, 1]  # ex-China [R, G]
        price_mult = np.where(inp.sp_magnet[None], grade_mult[:, np.where(
            inp.sp_magnet, inp.sp_index, 0)], multiple[:, 1, np.where(inp.sp_magnet, 0,
                                                                       inp.sp_index)])
        cheap = price_mult < inp.sp_refill_below[None]
        # a release starts when the sectors run short and goes on while the item stays scarce
        # (its price above the refill level), so that a release which covers this month's
        # shortfall does not stop the next one
        release_due = (short > inp.sp_threshold[None]) | (
            (self.last_release > 0) & (price_mult > inp.sp_refill_below[None]))
        if self.triggers is not None:
            release_due |= self.triggers.forced_release(t, h)
        release = np.where(release_due & on[None],
                           np.minimum(self.level, inp.sp_max_release[None]), 0.0)
        self.last_release = release
        buy = np.where(cheap & ~release_due & on[None],
                       np.minimum(inp.sp_refill[None],
                                  np.maximum(inp.sp_target[None] - self.level, 0.0)), 0.0)
        for k in range(h):
            target_rel = rel_m if inp.sp_magnet[k] else rel_o
            target_buy = buy_m if inp.sp_magnet[k] else buy_o
            target_rel[:, inp.sp_country[k], inp.sp_index[k]] += release[:, k]
            target_buy[:, inp.sp_country[k], inp.sp_index[k]] += buy[:, k]
        self.level -= release
        return rel_m, buy_m, rel_o, buy_o, release, buy

    def stockpile_bought(self, bought_magnet: np.ndarray, bought_oxide: np.ndarray,
                         buy: np.ndarray) -> np.ndarray:
        """Credit what the purchases obtained [R,C,G] / [R,C,E] to the holders; return [R,H]."""
        inp = self.inp
        got = np.zeros_like(buy)
        for k in range(inp.holders):
            source = bought_magnet if inp.sp_magnet[k] else bought_oxide
            wanted = np.zeros_like(buy[:, 0])
            same = [j for j in range(inp.holders) if inp.sp_magnet[j] == inp.sp_magnet[k]
                    and inp.sp_country[j] == inp.sp_country[k]
                    and inp.sp_index[j] == inp.sp_index[k]]
            for j in same:
                wanted = wanted + buy[:, j]
            got[:, k] = source[:, inp.sp_country[k], inp.sp_index[k]] * _div(buy[:, k], wanted)
        self.level += got
        return got

    # ---- recycling ------------------------------------------------------------------------
    def recycle(self, consumed: np.ndarray, multiple: np.ndarray, content: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Age the in-use stocks by a month with this month's use [R, C, S] (t magnet).

        Returns (added supply [R, C, E] beyond the base-year rate, recovered [R, C] by the
        country whose users' magnets reached end of life).
        """
        inp = self.inp
        if not inp.recycling:
            return (np.zeros((self.r, consumed.shape[1], content.shape[2])),
                    np.zeros((self.r, consumed.shape[1])))
        inflow = consumed.sum(axis=1) * self.magnet_sector[None]
        outflow = self.stocks.step(inflow)  # [R, S]
        g = np.maximum(self.sector_grade, 0)
        grade_mult = self.grade_multiple(multiple)[:, 1][:, g]  # [R, S] ex-China
        collection = np.clip(inp.collection0[None] * grade_mult ** inp.collection_elasticity
                             + inp.collection_boost, 0.0, 1.0)
        sector_content = content[:, g, :] * self.magnet_sector[None, :, None]  # [R, S, E]
        per_sector = outflow[..., None] * sector_content * inp.recovery[None, :, None]
        extra = per_sector * np.maximum(collection - inp.collection0[None], 0.0)[..., None]
        where = _div(consumed, consumed.sum(axis=1, keepdims=True))  # [R, C, S]
        recovered = np.einsum("rcs,rs->rc", where, (per_sector * collection[..., None]).sum(
            axis=2))
        return np.einsum("rcs,rse->rce", where, extra), recovered

    # ---- end of month ---------------------------------------------------------------------
    def observe(self, t: int, multiple: np.ndarray, price: np.ndarray, base_price: np.ndarray,
                shortfall: np.ndarray, need: np.ndarray, magnet_short: np.ndarray,
                element_short: np.ndarray, oxide_need: np.ndarray, magnet_need: np.ndarray,
                separated: np.ndarray, capacities: list[np.ndarray], composition: np.ndarray,
                recovery: float, magnet_trade: np.ndarray) -> dict[str, np.ndarray]:
        """Update every response from this month's outcome; return this month's records.

        multiple [R,2,E] element price multiples; price [R,I,2] US$/kg; shortfall, need [R,C,S];
        magnet_short [R,C,S] t magnet; element_short [R,C,E] t REO (makers and other users);
        oxide_need [R,C,E] non-magnet uses; magnet_need [R,C,S] t magnet; separated [R,C,E] t REO
        this month;
        capacities [mine, sep, magnet] [R,C]; composition [C,E]; magnet_trade [R,X,C].
        """
        inp = self.inp
        self.last_short, self.last_need = shortfall, need
        grade_mult = self.grade_multiple(multiple)  # [R,2,G]
        g = np.maximum(self.sector_grade, 0)
        sector_mult = np.where(self.magnet_sector[None, None], grade_mult[:, :, g], 1.0)
        if inp.demand:
            eps = self.eps_long  # [R,1,1]
            lo, hi = inp.demand_floor, 1.0 / inp.demand_floor
            target = np.clip(sector_mult ** -eps, lo, hi)
            self.demand_factor += (target - self.demand_factor) / inp.adjustment_months
            target_o = np.clip(np.where(inp.element_base_price[None, None] > 0,
                                        multiple, 1.0) ** -eps, lo, hi)
            self.oxide_factor += (target_o - self.oxide_factor) / inp.adjustment_months
        if inp.substitution and len(inp.opt_sector):
            signal = np.where(inp.opt_element[None, None] >= 0,
                              multiple[:, :, np.maximum(inp.opt_element, 0)],
                              sector_mult[:, :, inp.opt_sector])
            above = signal >= inp.opt_trigger[None, None]
            self.signal_months = np.where(above, self.signal_months + 1, 0)
            self.launched |= self.signal_months >= np.maximum(inp.opt_delay, 1)[None, None]
            step = inp.opt_max / np.maximum(inp.opt_ramp, 1)
            self.adoption = np.where(self.launched,
                                     np.minimum(self.adoption + step[None, None], inp.opt_max),
                                     self.adoption)
        records: dict[str, np.ndarray] = {}
        cost = np.zeros((self.r, len(POLICY_COSTS)))
        # stage revenue prices ex-China [R, 3, C] (US$/kg), floors included for separation
        revenue = self._revenue(multiple, price, composition)
        floor_paid = np.zeros(self.r)
        for f in range(len(inp.floor_item)):
            if not inp.floor_active[t, f]:
                continue
            market_price = price[:, inp.floor_item[f], 1]
            gap = np.maximum(inp.floor_value[f] - market_price, 0.0)
            volume_kg = separated[:, inp.floor_country[f], inp.floor_elements[f]].sum(axis=1) * 1e3
            floor_paid += gap * volume_kg
            if inp.floor_item[f] == inp.stage_price_item[1]:  # separators are priced on NdPr
                revenue[:, 1, inp.floor_country[f]] = np.maximum(
                    revenue[:, 1, inp.floor_country[f]], inp.floor_value[f])
        cost[:, 0] = floor_paid
        if inp.shutdown and t >= inp.shutdown_start:
            has_cost = ~np.isnan(inp.cash_cost)
            running = revenue >= np.nan_to_num(inp.cash_cost)[None]
            target = np.where(has_cost[None], running.astype(float), 1.0)
            self.utilisation += (target - self.utilisation) / max(inp.shutdown_months, 1.0)
        # capacity decisions
        ex = ~self.china
        magnet_gap = (magnet_short[:, ex] * self.magnet_sector[None, None]).sum(axis=(1, 2))
        ndpr_gap = element_short[:, ex][:, :, inp.ndpr].sum(axis=(1, 2))
        ndpr_share = inp.feed_ndpr_share
        feed_gap = _div(ndpr_gap, max(ndpr_share, _EPS) * recovery)
        # use outside China: magnets its users need, and the Nd and Pr in them and in other uses
        use_magnet = (magnet_need[:, ex] * self.magnet_sector[None, None]).sum(axis=(1, 2))
        g = np.maximum(self.sector_grade, 0)
        ndpr_per_t = self.grade_content[g][:, inp.ndpr].sum(axis=1) * self.magnet_sector  # [S]
        use_ndpr = (magnet_need[:, ex] @ ndpr_per_t).sum(axis=1) + oxide_need[:, ex][
            :, :, inp.ndpr].sum(axis=(1, 2))
        use_feed = _div(use_ndpr, max(ndpr_share, _EPS) * recovery)
        now_gap = np.stack([feed_gap, feed_gap, magnet_gap], axis=1)
        now_use = np.stack([use_feed, use_feed, use_magnet], axis=1)
        self.gap += (now_gap - self.gap) / 12.0
        self.use += (now_use - self.use) / 12.0
        if self.expected_price is None:
            self.expected_price = revenue.copy()
        self.expected_price += (revenue - self.expected_price) / 12.0
        subsidy_paid, invested = np.zeros(self.r), np.zeros(self.r)
        if inp.capacity and inp.decision_months[t]:
            subsidy_paid, invested = self._decide(t, capacities)
        cost[:, 2] = subsidy_paid
        records["policy_cost"] = cost
        records["investment"] = invested
        if self.triggers is not None:
            self.triggers.observe(t, shortfall, need, magnet_trade,
                                  _div(price, base_price[None, :, None], fill=1.0))
        return records

    def _revenue(self, multiple, price, composition) -> np.ndarray:
        """Ex-China price [R, 3, C] each stage's producers get: mines the value of their REO
        basket (US$/kg REO), separators the NdPr oxide price (the basis of every separation
        cost used), magnet makers none (NaN: no magnet price in the model)."""
        inp = self.inp
        r, c = self.r, composition.shape[0]
        out = np.full((r, N_BUILD, c), np.nan)
        basket = composition * inp.element_base_price[None]  # [C, E] US$/kg REO at base
        out[:, 0] = np.einsum("ce,re->rc", basket, multiple[:, 1])
        item = inp.stage_price_item[1]
        if item >= 0:
            out[:, 1] = price[:, item, 1][:, None]
        return out

    def _decide(self, t: int, capacities: list[np.ndarray]) -> np.ndarray:
        """January decisions: commit new capacity; return (capital subsidy paid, capital cost
        committed) [R] US$ (capacity without a capital cost in data counts zero in both).

        The gap and the target are the build-in countries' together, shared equally among
        those whose cost test passes (the gap) or among all of them (the target).
        """
        inp = self.inp
        n_t = self.added.shape[2] - 1
        invested = np.zeros(self.r)
        now = min(t, n_t)
        for s in range(N_BUILD):
            builders = np.where(inp.build[s])[0]
            if builders.size == 0:
                continue
            pending = self.committed[:, s, builders] - self.added[:, s, now, builders]  # [R,B]
            cost = inp.full_cost[s, builders] * (1.0 - inp.subsidy_share)  # [B]
            if s == 2:
                pays = np.ones((self.r, builders.size), dtype=bool)  # no magnet price
            else:
                expected = self.expected_price[:, s, builders]
                pays = ~np.isnan(cost)[None] & (np.nan_to_num(expected, nan=-np.inf)
                                                >= inp.hurdle * np.nan_to_num(cost)[None])
            n_pay = pays.sum(axis=1, keepdims=True)
            gap_left = np.maximum(self.gap[:, s] - (pending * pays).sum(axis=1), 0.0)
            want = np.where(pays, _div(gap_left[:, None], n_pay), 0.0)  # [R,B]
            if not np.isnan(inp.target_share[s]):
                have = (capacities[s][:, builders] + pending).sum(axis=1)
                short = np.maximum(inp.target_share[s] * self.use[:, s] - have, 0.0)
                want = np.maximum(want, short[:, None] / builders.size)
            for j, c in enumerate(builders):
                amount = want[:, j]
                if not amount.any():
                    continue
                start = t + int(inp.lead_months[s, c])
                ramp = max(int(inp.ramp_months[s]), 1)
                if start < n_t:
                    months = np.arange(start, n_t)
                    level = np.minimum((months - start + 1) / ramp, 1.0)
                    self.added[:, s, start:n_t, c] += amount[:, None] * level[None]
                self.committed[:, s, c] += amount
                if not np.isnan(inp.capex[s, c]):
                    invested += amount * 12.0 * inp.capex[s, c]
        return inp.subsidy_share * invested, invested
