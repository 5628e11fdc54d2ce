"""The monthly kernel: mine -> separation -> refined elements -> magnets -> users.

Pure array code over a leading ``run`` axis; no I/O. One call simulates every month of a
:class:`~rareflow.sim.network.Network` under its :class:`~rareflow.sim.network.Controls` and
returns the trajectories as a dict of arrays. docs/model.md states each equation and where its
parameters come from.

Order of one month
------------------
1. Mines produce at capacity; concentrate ships along exporter shares (blocked shares stay home).
2. Separators take up to their capacity from their concentrate stock (heavy rare earths only where
   the country can separate them); recovery losses leave the system.
3. Magnet users request what they consume plus what restores their target stock; magnet makers'
   potential supply (stock plus capacity) is allocated to them (``market.allocate``).
4. Magnet makers need refined elements for what they must make; refined stocks are allocated to
   makers and to non-magnet users together.
5. Makers produce what their scarcest element allows (fixed recipe per grade); deliveries scale
   down accordingly; users consume from stock and receipts; what is missing is a shortfall.
6. Buyers shift preference away from suppliers that failed them; prices move with scarcity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from rareflow.policy.licences import MAX_AGE, LicenceQueue, review_hazards
from rareflow.policy.triggers import NEVER
from rareflow.sim import compiled, compiled_month
from rareflow.sim.market import allocate, flow_totals, route_totals, switch_preferences
from rareflow.sim.network import Controls, Network, RunParameters
from rareflow.sim.prices import PriceState
from rareflow.sim.responses import POLICY_COSTS, ResponseInputs, ResponseState

STAGES = ("mining", "separation", "metal", "magnet")
#: records the compiled settlement writes (compiled_month.settle), in its order
_SETTLED = ("production", "inventory", "need", "consumption", "shortfall", "oxide_shortfall")
LICENCE_STATS = ("applications", "approved", "denied", "backlog", "held_back")
INVENTORY_STAGES = ("concentrate", "refined", "magnet", "users", "stockpile_purchases")
_EPS = 1e-12


def _div(num: np.ndarray, den: np.ndarray, fill: float = 0.0) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, fill, dtype=float)
    return np.divide(num, den, out=out, where=np.abs(den) > _EPS)


def _shift_exporter_shares(
    shares: np.ndarray, base: np.ndarray, allowed: np.ndarray, spare: np.ndarray, rate: float
) -> np.ndarray:
    """Exporters' destination shares relax, at ``rate`` per month, toward an open target.

    shares [R,X,C] (rows sum to one), base [X,C] baseline shares, allowed [1|R,X,C], spare
    [R,C] spare separation capacity. The target is the baseline shares of the destinations
    still open; when every baseline foreign destination is closed, it is the open foreign
    destinations weighted by their spare capacity, or home if none has any. When a restriction
    ends the same rule brings the shares back to the baseline.
    """
    n = shares.shape[1]
    eye = np.eye(n, dtype=bool)
    open_base = base[None] * allowed  # [1|R,X,C]
    foreign_open = (open_base * ~eye).sum(axis=2)  # [1|R,X]
    foreign_base = (base * ~eye).sum(axis=1)  # [X]
    by_base = _div(open_base, open_base.sum(axis=2, keepdims=True))  # [1|R,X,C]
    by_spare = spare[:, None, :] * allowed * ~eye[None]
    spare_total = by_spare.sum(axis=2, keepdims=True)
    home = np.broadcast_to(eye[None].astype(float), by_spare.shape)
    by_spare = np.where(spare_total > _EPS, _div(by_spare, spare_total), home)
    stranded = (foreign_base[None] > _EPS) & (foreign_open <= _EPS)  # all foreign outlets closed
    target = np.where(stranded[:, :, None], by_spare, by_base)
    return shares + rate * (target - shares)


class _Passes(NamedTuple):
    """The kernel's passes over trade channels: numpy, or their compiled twins
    (:mod:`rareflow.sim.compiled`; the same numbers to 1e-9)."""

    allocate: Callable  # flows, and their sums per route, by seller and by buyer
    licence_requests: Callable
    held_back: Callable
    route_open: Callable
    magnet_reach: Callable | None  # extraterritorial licences; None: numpy in _magnet_licences
    licence_core: object | None  # LicenceQueue.core
    switch_preferences: Callable
    shift_exporter_shares: Callable
    ship_concentrate: Callable
    grade_ratio: Callable
    month_blocks: object | None  # compiled stretches of the month (plain kernel); None: numpy


def _passes(backend: str) -> _Passes:
    """The passes ``backend`` names (looked up at call time, so that tests can swap them)."""
    if compiled.resolve(backend) == "numba":
        c = compiled
        return _Passes(c.allocate_with_totals, c.licence_requests, c.held_back, c.route_open,
                       c.magnet_licences, c.LICENCE_CORE, c.switch_preferences,
                       c.shift_exporter_shares, c.ship_concentrate, c.grade_ratio,
                       compiled_month)
    return _Passes(_allocate_with_totals, _licence_requests, _held_back, _route_open, None, None,
                   switch_preferences, _shift_exporter_shares, _ship_concentrate, _grade_ratio,
                   None)


def simulate_arrays(
    network: Network,
    controls: Controls,
    runs: int = 1,
    progress: Callable[[int, int], None] | None = None,
    detail: bool = False,
    params: RunParameters | None = None,
    responses: ResponseInputs | None = None,
    backend: str = "auto",
    reuse: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Run every month for ``runs`` identical-parameter runs; return trajectories.

    ``progress(done, total)`` is called after each month (for progress bars). ``detail`` also
    records, per exporter, importer and product, the share of what buyers would have asked
    for with every route open that actually shipped (``magnet_fill``, ``refined_fill``; large:
    meant for single runs such as a company's exposure analysis). ``responses`` switches on the
    responses model (:mod:`rareflow.sim.responses`); without it capacities and demand follow the
    network's exogenous paths. ``backend`` picks the implementation of the passes over trade
    channels: ``"numpy"``, ``"numba"`` (:mod:`rareflow.sim.compiled`, the same numbers) or
    ``"auto"`` (Numba when it is installed). ``reuse``: arrays a previous call returned that
    the caller no longer needs; records of the same shape are written into them (each batch of
    an ensemble would otherwise fault in a few hundred megabytes of fresh pages).

    Returns
    -------
    dict of str to ndarray
        Arrays with leading axes ``[run, month]``; see :mod:`rareflow.result` for names and units.
    """
    net, ctl = network, controls
    r = runs
    ops = _passes(backend)
    params = params or RunParameters()

    def per_run(value, default):
        """[R,1,1] array of a run parameter (or the scenario's scalar)."""
        arr = np.full(r, default, dtype=float) if value is None else np.asarray(value, float)
        return arr.reshape(r, 1, 1)

    switching = per_run(params.switching_rate, ctl.switching_rate)
    demand_scale = per_run(params.demand_scale, 1.0)
    mine_scale = per_run(params.mine_scale, 1.0)
    magnet_scale = per_run(params.magnet_capacity_scale, 1.0)
    approval_scale = per_run(params.approval_scale, 1.0)[:, 0, 0]  # [R]
    extra_leak = per_run(params.leakage, 0.0)[:, 0, 0]
    pipeline_shift = (net.pipeline_capacity is not None and (
        params.pipeline_delay_months is not None or params.pipeline_completion is not None))
    if pipeline_shift:
        delay = np.round(per_run(params.pipeline_delay_months, 0.0)[:, 0, 0]).astype(int)
        completion = per_run(params.pipeline_completion, 1.0)[:, :, 0]  # [R,1]
    t_n, c_n, e_n, g_n, s_n, i_n = (net.shape[k] for k in
                                    ("month", "country", "element", "grade", "sector", "item"))
    idx = np.arange(c_n)
    eye = np.eye(c_n, dtype=bool)
    sector_onehot = np.zeros((s_n, g_n))
    magnet_sectors = net.sector_grade >= 0
    sector_onehot[np.where(magnet_sectors)[0], net.sector_grade[magnet_sectors]] = 1.0
    separable_mask = np.where(net.heavy[None, :], net.sep_heavy[:, None], True)  # [C,E]
    grade_uses = net.grade_content > 0  # [G,E]

    # state
    conc_stock = np.zeros((r, c_n, e_n))
    refined_stock = np.zeros((r, c_n, e_n))
    magnet_stock = np.zeros((r, c_n, g_n))
    user_stock = np.broadcast_to(
        net.magnet_need[0] * net.user_cover_months[None, :], (r, c_n, s_n)
    ).copy()
    conc_shares = np.broadcast_to(net.conc_shares, (r, c_n, c_n)).copy()
    refined_pref = np.broadcast_to(net.refined_preference, (r, c_n, c_n)).copy()
    magnet_pref = np.broadcast_to(net.magnet_preference, (r, c_n, c_n)).copy()
    prices = PriceState.start(net, r, params.price_elasticity)
    pol = ctl.policy
    mag_queue = LicenceQueue.empty(r, (c_n, c_n, g_n), policy=pol, stage="magnet",
                                   core=ops.licence_core)
    ref_queue = LicenceQueue.empty(r, (c_n, c_n, e_n), policy=pol, stage="refined",
                                   core=ops.licence_core)
    origin_share = np.zeros((r, c_n))  # share of each maker's refined receipts from the actor
    stockpile = np.zeros((r, c_n, g_n))  # magnets bought by governments in the simulation
    resp = (None if responses is None else ResponseState(
        responses, r, t_n, net.grade_content, net.sector_grade, c_n, i_n,
        long_run_elasticity=params.long_run_elasticity))
    china = np.array([c == "CHN" for c in net.countries])
    last_consumed = net.magnet_need[0][None] * demand_scale  # users' intake before the start

    # every record's shape; all start at 0 except these
    fills = {"licence_wait_days": np.nan, "magnet_fill": 1.0, "refined_fill": 1.0}
    shapes = {
        "production": (r, t_n, len(STAGES), c_n),
        "refined_output": (r, t_n, c_n, e_n),
        # concentrate, refined and magnet trade in one array (the result's ``trade`` variable,
        # without a copy); the three names below are views of it
        "trade": (r, t_n, 3, c_n, c_n),
        "inventory": (r, t_n, len(INVENTORY_STAGES), c_n),
        "need": (r, t_n, c_n, s_n),
        "consumption": (r, t_n, c_n, s_n),
        "shortfall": (r, t_n, c_n, s_n),
        "oxide_shortfall": (r, t_n, c_n, e_n),
        "price": (r, t_n, i_n, 2),
        "licences": (r, t_n, len(LICENCE_STATS), c_n),
        "licence_wait_days": (r, t_n),
        "held_back": (r, t_n, c_n, e_n + g_n),
        **({"magnet_fill": (r, t_n, c_n, c_n, g_n),
            "refined_fill": (r, t_n, c_n, c_n, e_n)} if detail else {}),
        **({"capacity_run": (r, t_n, 3, c_n),
            "capacity_new": (r, t_n, 3, c_n),
            "policy_cost": (r, t_n, len(POLICY_COSTS)),
            "recycled": (r, t_n, 2),
            "recycled_by_country": (r, t_n, c_n),
            "investment": (r, t_n),
            "stockpile_level": (r, t_n, responses.holders),
            "adoption": (r, t_n, 2, len(responses.opt_sector)),
            "demand_factor": (r, t_n, 2),
            "residue": (r, t_n, 2),
            } if responses is not None else {}),
        "balance_error": (r, t_n, 5),
        "min_stock": (r, t_n),
    }

    out = {name: _record(shape, fills.get(name, 0.0), None if reuse is None else reuse.get(name))
           for name, shape in shapes.items()}
    out["conc_trade"], out["refined_trade"], out["magnet_trade"] = (
        out["trade"][:, :, k] for k in range(3))
    # world stocks at the start of the month (then the end of the last month's)
    before = (conc_stock.sum(axis=(1, 2)), refined_stock.sum(axis=(1, 2)),
              magnet_stock.sum(axis=(1, 2)), user_stock.sum(axis=(1, 2)))
    # the compiled stretches of the month cover the plain kernel (no responses, no detail)
    fused = ops.month_blocks is not None and resp is None and not detail
    balance_start = np.stack(before, axis=1) if fused else None  # [R, 4], updated in place
    non_magnet_sectors = ops.month_blocks.sector_shares(net.element_to_sector) if fused else None
    upstream = np.zeros((r, 5))  # compiled: this month's world totals before step 3
    # the whole month compiled run by run (no review capacity; a month with export quotas
    # runs the month below, with the compiled blocks): each run's arrays stay in the cache
    whole = fused and (pol is None or not np.isfinite(
        np.asarray(pol.capacity_t_per_month, dtype=float)).any())
    if whole:
        whole_network = _whole_network(net, ctl, separable_mask, grade_uses, non_magnet_sectors,
                                       prices)
        whole_params = tuple(np.ascontiguousarray(np.reshape(v, r), dtype=float) for v in (
            mine_scale, demand_scale, magnet_scale, switching, prices.elasticity,
            approval_scale, extra_leak))
        whole_records = tuple(out[name] for name in _WHOLE_RECORDS)
    for t in range(t_n):

        # 0. this month's capacities: the network's, projects shifted per run, then (responses)
        # new capacity decided in the model and shutdowns
        mine_cap, sep_cap, mag_cap = (net.mine_capacity[t][None], net.sep_capacity[t][None],
                                      net.magnet_capacity[t][None])
        if pipeline_shift:
            # projects outside China come late (delay) and not all of them (completion)
            pipe = net.pipeline_capacity
            late = pipe[:, np.maximum(t - delay, 0)]  # [3, R, C]
            mine_cap, sep_cap, mag_cap = (
                cap + completion * late[s] - pipe[s, t][None]
                for s, cap in enumerate((mine_cap, sep_cap, mag_cap)))
        if whole and (pol is None or not np.isfinite(pol.quota_t_per_month[t]).any()):
            state = (conc_stock, refined_stock, magnet_stock, user_stock, stockpile,
                     conc_shares, magnet_pref, refined_pref, prices.signal, prices.multiple,
                     origin_share, balance_start)
            ops.month_blocks.whole_month(
                t, whole_network, _whole_controls(net, ctl, t, mine_cap, sep_cap, mag_cap),
                whole_params, state, *_whole_licences(pol, t, origin_share, ops,
                                                      (mag_queue, ref_queue)),
                whole_records)
            if progress is not None:
                progress(t + 1, t_n)
            continue
        if resp is not None:
            mine_cap, sep_cap, mag_cap = resp.capacity(t, (mine_cap, sep_cap, mag_cap))
            need_factor, oxide_factor = resp.need_factors()
            content = resp.content()
            rel_m, buy_m, rel_o, buy_o, sp_release, sp_buy = resp.stockpile_actions(
                t, prices.multiple, g_n, e_n)

        # 1. mining and concentrate shipments
        allowed_c = (ctl.allowed_conc[t] if pol is None
                     else ctl.allowed_conc[t] * pol.closed_conc[t])[None]  # [1|R,X,C]
        if resp is not None and resp.triggers is not None:
            trig_c = resp.triggers.conc_multiplier(t)
            allowed_c = allowed_c if trig_c is None else allowed_c * trig_c
        if fused:
            # steps 1-2 in one compiled loop over runs (the numpy code below, to 1e-9)
            spare_sep = np.empty((r, c_n))
            ops.month_blocks.mine_and_separate(
                t, mine_cap, sep_cap, net.mine_composition, mine_scale[:, 0, 0], allowed_c,
                conc_shares, conc_stock, separable_mask, net.sep_recovery,
                net.secondary_supply[t], refined_stock, out["production"],
                out["refined_output"], out["trade"], upstream, spare_sep)
        else:
            mined = mine_cap[:, :, None] * net.mine_composition[None] * mine_scale
            shares = conc_shares * allowed_c
            shares[:, idx, idx] += (conc_shares * (1.0 - allowed_c)).sum(axis=2)
            # Countries that cannot separate offer their held concentrate again with new output.
            no_separation = sep_cap <= _EPS  # [1|R, C]
            offered = mined + conc_stock * no_separation[:, :, None]
            conc_stock = conc_stock * ~no_separation[:, :, None]
            # shipments offered[x, e] * shares[x, c], summed without building the [R,X,C,E] array
            conc_stock += ops.ship_concentrate(offered, shares)
            conc_trade = offered.sum(axis=2)[:, :, None] * shares  # [R,X,C]

            # 2. separation
            separable = conc_stock * separable_mask[None]
            feed = separable.sum(axis=2)
            take_share = np.minimum(1.0, _div(sep_cap, feed))
            take = separable * take_share[..., None]
            conc_stock -= take
            separated = take * net.sep_recovery
            sep_loss = take - separated
            refined_in = separated + net.secondary_supply[t][None]
            if resp is not None:
                recycled, recovered = resp.recycle(last_consumed, prices.multiple, content)
                refined_in = refined_in + recycled + rel_o
            refined_stock += refined_in
            spare_sep = np.maximum(sep_cap - conc_stock.sum(axis=2), 0.0)
        conc_shares = ops.shift_exporter_shares(
            conc_shares, net.conc_shares, allowed_c, spare_sep, switching
        )

        # 3. magnet requests and the magnet market
        need_s = net.magnet_need[t][None] * demand_scale
        if resp is not None:
            need_s = need_s * need_factor
        target = need_s * net.user_cover_months[None, None, :]
        request_s = need_s + np.maximum(target - user_stock, 0.0)
        request_g = request_s @ sector_onehot  # [R,C,G]
        # Government purchases (negative stockpile actions) are extra requests on the market.
        purchase = np.maximum(-ctl.stockpile_to_users[t], 0.0)[None]  # [1,C,G]
        release = np.maximum(ctl.stockpile_to_users[t], 0.0)[None]
        if resp is not None:
            purchase, release = purchase + buy_m, release + rel_m
        request_g = request_g + purchase
        total_request = request_g.sum(axis=(1, 2))
        world_mix = _div(request_g.sum(axis=1), total_request[:, None])  # [R,G]
        capacity_g = mag_cap[:, :, None] * magnet_scale * world_mix[:, None, :]
        supply_g = magnet_stock + capacity_g
        allowed_m = ctl.allowed_magnet[t][None]  # [1|R,X,C,G]: per run once rules act
        if resp is not None and resp.triggers is not None:
            trig_m = resp.triggers.magnet_multiplier(t)
            allowed_m = allowed_m if trig_m is None else allowed_m * trig_m
        if pol is not None:
            allowed_m = allowed_m * pol.closed_magnet[t]
            mag_req_lic = ops.licence_requests(request_g, supply_g, magnet_pref, allowed_m)
            lic = _magnet_licences(pol, t, origin_share, ops.magnet_reach)
            mstats = mag_queue.step(
                mag_req_lic, lic[0], lic[1], review_hazards(lic[2][0], lic[3][0]), lic[5],
                capacity=pol.capacity_t_per_month, approval_scale=approval_scale, full=False)
            allowed_m = mag_queue.allowed_share(
                mag_req_lic, lic[0], lic[4], extra_leakage=extra_leak, allowed=allowed_m)
        plan, mag_asked, _, planned, _ = ops.allocate(  # planned [R,X,G]: by maker
            supply_g, request_g, allowed_m, magnet_pref, ctl.home_first
        )
        from_stock = np.minimum(magnet_stock, planned)
        to_make = planned - from_stock
        if resp is None:
            element_need = np.einsum("rxg,ge->rxe", to_make, net.grade_content)
        else:
            element_need = np.einsum("rxg,rge->rxe", to_make, content)

        # 4. refined elements for makers and for non-magnet users
        oxide_need = net.oxide_need[t][None] * demand_scale
        if resp is not None:
            oxide_need = oxide_need * oxide_factor
        refined_need = element_need + oxide_need
        if resp is not None:
            refined_need = refined_need + buy_o
        allowed_r = ctl.allowed_refined[t][None]  # [1|R,X,C,E]
        scenario_r = allowed_r  # before rules and triggers: what "held back" is measured from
        if resp is not None and resp.triggers is not None:
            trig_r = resp.triggers.refined_multiplier(t)
            allowed_r = allowed_r if trig_r is None else allowed_r * trig_r
        if pol is not None:
            allowed_r = allowed_r * pol.closed_refined[t]
            ref_req_lic = ops.licence_requests(refined_need, refined_stock, refined_pref, allowed_r)
            quota = pol.quota_t_per_month[t]
            if np.isfinite(quota).any():
                exports = (ref_req_lic * ~eye[None, :, :, None]).sum(axis=(2, 3))  # [R,X]
                factor = np.minimum(1.0, _div(quota[None], exports, fill=1.0))
                allowed_r = allowed_r * np.where(eye[None, :, :, None], 1.0,
                                                 factor[:, :, None, None])
            rl = pol.refined
            required_r = rl.required[t][None]
            rstats = ref_queue.step(
                ref_req_lic, required_r, rl.approval[t][None],
                review_hazards(rl.review_median_months[t], rl.review_p90_months[t]),
                rl.validity_months[t][None], capacity=pol.capacity_t_per_month,
                approval_scale=approval_scale, full=False)
            allowed_r = ref_queue.allowed_share(
                ref_req_lic, required_r, rl.leakage[t][None], extra_leakage=extra_leak,
                allowed=allowed_r)
        # rflow_out [R,X,E]: shipped by each exporter; received [R,C,E]
        rflow, ref_asked, rtrade, rflow_out, received = ops.allocate(
            refined_stock, refined_need, allowed_r, refined_pref, ctl.home_first
        )  # ref_asked, rtrade [R,X,C]: summed over elements
        if fused:
            # steps 5 and 6's bookkeeping in one compiled loop over runs (the numpy code
            # below, to 1e-9); it also writes this month's records and mass balance
            mflow, mtrade = np.empty_like(plan), np.empty((r, c_n, c_n))
            spare_mag, spare_ref = np.empty((r, c_n)), np.empty((r, c_n))
            ops.month_blocks.settle(
                t, received, rflow_out, element_need, refined_need, oxide_need, to_make,
                from_stock, planned, plan, net.grade_content, grade_uses, purchase, release,
                request_g, request_s, need_s, supply_g, capacity_g, net.sector_grade,
                net.sector_is_defense, ctl.defense_first, *non_magnet_sectors,
                net.oxide_to_metal, refined_stock, magnet_stock, user_stock, stockpile,
                conc_stock, mflow, mtrade, spare_mag, spare_ref,
                *(out[name] for name in _SETTLED), upstream, balance_start,
                out["balance_error"], out["min_stock"])
        else:
            refined_stock -= rflow_out
            to_makers = received * _div(element_need, refined_need)
            to_users = received - to_makers
            bought_o = np.zeros_like(to_users)
            if resp is not None:
                bought_o = to_users * _div(buy_o, oxide_need + buy_o)
                to_users = to_users - bought_o

            # 5. production limited by the scarcest element of each grade
            grade_ratio = ops.grade_ratio(to_makers, element_need, grade_uses)
            made = to_make * grade_ratio
            if resp is None:
                used = np.einsum("rxg,ge->rxe", made, net.grade_content)
            else:
                used = np.einsum("rxg,rge->rxe", made, content)
            refined_stock += to_makers - used
            magnet_stock -= from_stock
            delivered = from_stock + made
            deliver_ratio = np.where(planned > _EPS, _div(delivered, planned), 1.0)
            mflow = plan * deliver_ratio[:, :, None, :]

            # users: receipts (and stockpile releases) shared over sectors of each grade
            arrived = np.einsum("rxcg->rcg", mflow)
            mtrade = np.einsum("rxcg->rxc", mflow)
            bought = arrived * _div(purchase, request_g)  # purchases share receipts pro rata
            stockpile += bought
            if resp is not None:
                sp_got = resp.stockpile_bought(bought * _div(buy_m, purchase), bought_o, sp_buy)
            receipts = arrived - bought + release
            sector_request = request_s * magnet_sectors[None, None, :]
            alloc = _share_to_sectors(receipts, sector_request, sector_onehot,
                                      net.sector_is_defense, ctl.defense_first)
            user_stock += alloc
            consumed = np.minimum(need_s, user_stock)
            user_stock -= consumed
            shortfall = need_s - consumed
            oxide_short = np.maximum(oxide_need - to_users, 0.0)
            oxide_used = oxide_need - oxide_short
            surplus_to_users = to_users - oxide_used
            refined_stock += surplus_to_users  # anything beyond need stays in stock

            # 6. switching and prices
            # spare capacity that buyers can switch to: what the makers' scarcest elements let them
            # make this month, not their nameplate (a plant without Dy has no spare Dy grades)
            makeable = supply_g - capacity_g * (1.0 - grade_ratio)
            spare_mag = np.maximum(makeable.sum(axis=2) - delivered.sum(axis=2), 0.0)
            spare_ref = refined_stock.sum(axis=2)
        magnet_pref = ops.switch_preferences(
            magnet_pref, mag_asked, mtrade,
            spare_mag, ops.route_open(allowed_m), switching,
        )
        refined_pref = ops.switch_preferences(
            refined_pref, ref_asked, rtrade,
            spare_ref, ops.route_open(allowed_r), switching,
        )
        if fused:
            price = ops.month_blocks.update_prices(prices, refined_need, received)
        elif resp is None or not responses.prices:
            price = prices.update(refined_need, received)
        else:
            # refined material export rules and triggers kept at home: the requests buyers
            # would have made with only the scenario's own restrictions, times the share the
            # rules blocked. (Magnets held back are not added: their makers then make and buy
            # less, which the refined need already shows.)
            open_r = ops.licence_requests(refined_need, refined_stock + rflow_out,
                                       refined_pref, scenario_r)
            held_r = open_r * (1.0 - _div(allowed_r, scenario_r, fill=1.0))
            price = prices.update(refined_need, received,
                                  held_back=np.einsum("rxck->rxk", held_r))
        if pol is not None:
            stats = _licence_stats(pol, t, lic, mstats, rstats, mag_req_lic, ref_req_lic,
                                   mflow, rflow, ops.held_back, (mag_queue, ref_queue))
            out["licences"][:, t] = stats[0]
            out["licence_wait_days"][:, t] = stats[1]
            out["held_back"][:, t] = stats[2]
            from_actor = rtrade[:, pol.extra_actor]  # [R,C]
            origin_share = _div(from_actor, rtrade.sum(axis=1))

        # record
        out["refined_trade"][:, t] = rtrade
        out["magnet_trade"][:, t] = mtrade
        out["price"][:, t] = price
        if not fused:
            out["production"][:, t, 0] = mined.sum(axis=2)
            out["production"][:, t, 1] = separated.sum(axis=2)
            out["refined_output"][:, t] = separated
            out["conc_trade"][:, t] = conc_trade
            metal = (used * net.oxide_to_metal[None, None, :]).sum(axis=2)
            out["production"][:, t, 2] = metal
            out["production"][:, t, 3] = made.sum(axis=2)
            out["inventory"][:, t, 0] = conc_stock.sum(axis=2)
            out["inventory"][:, t, 1] = refined_stock.sum(axis=2)
            out["inventory"][:, t, 2] = magnet_stock.sum(axis=2)
            out["inventory"][:, t, 3] = user_stock.sum(axis=2)
            out["inventory"][:, t, 4] = stockpile.sum(axis=2)
            non_magnet_need = oxide_need @ net.element_to_sector
            non_magnet_short = oxide_short @ net.element_to_sector
            out["need"][:, t] = need_s + non_magnet_need
            out["consumption"][:, t] = consumed + (non_magnet_need - non_magnet_short)
            out["shortfall"][:, t] = shortfall + non_magnet_short
            out["oxide_shortfall"][:, t] = oxide_short
        if resp is not None:
            element_short = (element_need - to_makers) + oxide_short
            rec = resp.observe(
                t, prices.multiple, price, net.base_price, out["shortfall"][:, t],
                out["need"][:, t], shortfall, element_short, oxide_need, need_s, separated,
                [mine_cap, sep_cap, mag_cap], net.mine_composition, net.sep_recovery,
                mtrade)
            last_consumed = consumed
            new = resp.new_capacity(t)
            out["capacity_run"][:, t] = np.stack(np.broadcast_arrays(
                mine_cap, sep_cap, mag_cap), axis=1)
            out["capacity_new"][:, t] = new
            out["policy_cost"][:, t] = rec["policy_cost"]
            out["policy_cost"][:, t, 1] = (sp_got * _stockpile_price(
                resp, price, prices.multiple, net)).sum(axis=1) * 1e3
            out["recycled"][:, t, 0] = recovered.sum(axis=1)
            out["recycled_by_country"][:, t] = recovered
            out["investment"][:, t] = rec["investment"]
            out["recycled"][:, t, 1] = recycled.sum(axis=(1, 2))
            out["stockpile_level"][:, t] = resp.level
            out["adoption"][:, t] = resp.adoption
            for m, in_market in enumerate((china, ~china)):
                base_need = net.magnet_need[t][in_market]
                out["demand_factor"][:, t, m] = _div(
                    (need_factor[:, in_market] * base_need[None]).sum(axis=(1, 2)),
                    np.full(r, base_need.sum()), fill=1.0)
            # output of the new separation capacity, used after the existing capacity
            new_in_use = np.minimum(new[:, 1], sep_cap)
            new_feed = np.clip(take.sum(axis=2) - (sep_cap - new_in_use), 0.0, new_in_use)
            new_output = new_feed * net.sep_recovery  # [R, C] t REO
            inp = resp.inp
            out["residue"][:, t, 0] = new_output @ inp.residue_t_per_t
            out["residue"][:, t, 1] = new_output @ inp.thorium_kg_per_t
        if detail:
            # what buyers would have asked for with every route open (measured after this
            # month's switching, as the old preferences' requests are no longer observable)
            open_m = ops.licence_requests(request_g, supply_g, magnet_pref,
                                       np.ones_like(mflow))
            open_r = ops.licence_requests(refined_need, refined_stock + rflow_out,
                                       refined_pref, np.ones_like(rflow))
            out["magnet_fill"][:, t] = np.where(open_m > _EPS, np.minimum(
                1.0, _div(mflow, open_m)), 1.0)
            out["refined_fill"][:, t] = np.where(open_r > _EPS, np.minimum(
                1.0, _div(rflow, open_r)), 1.0)
            # home supply: the share of what makers planned that they could make (a domestic
            # supplier serves its contracted buyers; no export rule stands between them)
            out["magnet_fill"][:, t, idx, idx] = np.minimum(1.0, deliver_ratio)

        if not fused:
            # mass balance of each stage (world, all elements), as relative errors
            mined_t, take_t = mined.sum(axis=(1, 2)), take.sum(axis=(1, 2))
            made_t, delivered_t = made.sum(axis=(1, 2)), delivered.sum(axis=(1, 2))
            scale = np.maximum(mined_t, 1.0)
            after = (conc_stock.sum(axis=(1, 2)), refined_stock.sum(axis=(1, 2)),
                     magnet_stock.sum(axis=(1, 2)), user_stock.sum(axis=(1, 2)))
            out["balance_error"][:, t, 0] = np.abs(
                after[0] - before[0] - (mined_t - take_t)) / scale
            out["balance_error"][:, t, 1] = np.abs(
                take_t - separated.sum(axis=(1, 2)) - sep_loss.sum(axis=(1, 2))) / scale
            out["balance_error"][:, t, 2] = np.abs(
                after[1] - before[1] - (refined_in.sum(axis=(1, 2)) - used.sum(axis=(1, 2))
                                        - oxide_used.sum(axis=(1, 2))
                                        - bought_o.sum(axis=(1, 2)))) / scale
            mag_scale = np.maximum(made_t, 1.0)
            out["balance_error"][:, t, 3] = np.abs(
                after[2] - before[2] - (made_t - delivered_t)
                + (delivered_t - arrived.sum(axis=(1, 2)))) / mag_scale
            out["balance_error"][:, t, 4] = np.abs(
                after[3] - before[3] - (receipts.sum(axis=(1, 2)) - consumed.sum(axis=(1, 2))))
            out["balance_error"][:, t, 4] /= mag_scale
            before = after
            out["min_stock"][:, t] = np.minimum.reduce([
                conc_stock.min(axis=(1, 2)), refined_stock.min(axis=(1, 2)),
                magnet_stock.min(axis=(1, 2)), user_stock.min(axis=(1, 2)),
            ])
        if progress is not None:
            progress(t + 1, t_n)
    if resp is not None:
        out["capacity_committed"] = resp.committed.copy()
    if resp is not None and resp.triggers is not None:
        fired = resp.triggers.fired_month.astype(float)
        out["trigger_fired_month"] = np.where(fired >= NEVER, np.nan, fired)
    return out


#: records the compiled whole month writes (compiled_month.whole_month), in its order
_WHOLE_RECORDS = ("production", "refined_output", "trade", "inventory", "need", "consumption",
                  "shortfall", "oxide_shortfall", "price", "licences", "licence_wait_days",
                  "held_back", "balance_error", "min_stock")


def _record(shape: tuple, fill: float, buffer: np.ndarray | None) -> np.ndarray:
    """A record array of ``shape`` filled with ``fill``: ``buffer`` when it has the shape (an
    earlier call's, which its caller no longer needs), else a new one."""
    if buffer is not None and buffer.shape == shape and buffer.dtype == np.float64:
        buffer.fill(fill)
        return buffer
    return np.full(shape, fill) if fill else np.zeros(shape)


def _whole_network(net: Network, ctl: Controls, separable: np.ndarray, grade_uses: np.ndarray,
                   non_magnet_sectors: tuple, prices: PriceState) -> tuple:
    """The network's constant arrays in the order ``compiled_month.whole_month`` takes them."""
    def f(a):
        return np.ascontiguousarray(a, dtype=float)

    def b(a):
        return np.ascontiguousarray(a, dtype=np.bool_)

    return (f(net.mine_composition), b(separable), float(net.sep_recovery), f(net.conc_shares),
            f(net.user_cover_months), np.ascontiguousarray(net.sector_grade, dtype=np.int64),
            f(net.grade_content), b(grade_uses), b(net.sector_is_defense),
            b(ctl.defense_first), *non_magnet_sectors, f(net.oxide_to_metal),
            b(ctl.home_first), b(prices.markets), f(net.item_elements), f(net.base_price),
            float(net.price_smoothing))


def _whole_controls(net: Network, ctl: Controls, t: int, mine_cap: np.ndarray,
                    sep_cap: np.ndarray, mag_cap: np.ndarray) -> tuple:
    """Month ``t``'s capacities [1|R, C], exogenous flows and the routes' allowed shares
    before licences, for ``compiled_month.whole_month``."""
    pol = ctl.policy
    allowed_c = ctl.allowed_conc[t] if pol is None else ctl.allowed_conc[t] * pol.closed_conc[t]
    allowed_m = ctl.allowed_magnet[t] if pol is None else (
        ctl.allowed_magnet[t] * pol.closed_magnet[t])
    allowed_r = ctl.allowed_refined[t] if pol is None else (
        ctl.allowed_refined[t] * pol.closed_refined[t])
    # the allocation ships requests whole on routes all open (market.allocate), only for
    # allowed shares the same in every run, which licences make per run
    all_open = [pol is None and bool((a >= 1.0 - 1e-9).all()) for a in (allowed_m, allowed_r)]

    def f(a):
        return np.ascontiguousarray(a, dtype=float)

    return (f(mine_cap), f(sep_cap), f(mag_cap), f(net.secondary_supply[t]),
            f(net.magnet_need[t]), f(net.oxide_need[t]), f(allowed_c[None]),
            f(allowed_m[None]), f(allowed_r[None]), *all_open,
            f(np.maximum(-ctl.stockpile_to_users[t], 0.0)[None]),
            f(np.maximum(ctl.stockpile_to_users[t], 0.0)[None]))


def _whole_licences(pol, t: int, origin_share: np.ndarray, ops: _Passes,
                    queues: tuple) -> tuple:
    """(policy?, magnet queue, refined queue, licence parameters) for
    ``compiled_month.whole_month``: each queue's kept channels admitted for this month's
    required ones, with their state and review hazards; parameters flat [1|R, X*C*K]; the kept
    channels' positions [3, N] (exporter, destination, product)."""
    runs = origin_share.shape[0]
    if pol is None:
        empty = (np.zeros((runs, 0)), np.zeros((runs, MAX_AGE, 0)), np.zeros((runs, 0)),
                 np.zeros(0, dtype=np.int64), np.zeros((MAX_AGE, 0)))
        flat = np.zeros((1, 1))
        no = np.zeros((1, 1, 1, 1), dtype=np.bool_)
        at = np.zeros((3, 0), dtype=np.int64)
        return False, empty, empty, (no, flat, flat, flat, no, flat, flat, flat, at, at, 0)
    lic = _magnet_licences(pol, t, origin_share, ops.magnet_reach)
    rl = pol.refined
    required = (np.ascontiguousarray(lic[0], dtype=np.bool_),
                np.ascontiguousarray(rl.required[t][None], dtype=np.bool_))
    hazards = (review_hazards(lic[2][0], lic[3][0]),
               review_hazards(rl.review_median_months[t], rl.review_p90_months[t]))
    kept, positions = [], []
    for queue, req, hazard in zip(queues, required, hazards, strict=True):
        *state, at = queue.kept_state(req, hazard)
        kept.append(tuple(state))
        positions.append(at)  # exporter, destination, product

    def flat(a):
        a = np.ascontiguousarray(a, dtype=float)
        return a.reshape(a.shape[0], -1)

    parameters = (required[0], flat(lic[1]), flat(lic[5]), flat(lic[4]), required[1],
                  flat(rl.approval[t][None]), flat(rl.validity_months[t][None]),
                  flat(rl.leakage[t][None]), *positions, int(pol.extra_actor))
    return True, kept[0], kept[1], parameters


def _allocate_with_totals(supply: np.ndarray, need: np.ndarray, allowed: np.ndarray,
                          preference: np.ndarray, home_first: np.ndarray) -> tuple:
    """:func:`rareflow.sim.market.allocate`'s flows [R,X,C,K]; the requests and flows summed
    over products [R,X,C]; the flows' totals by seller [R,X,K] and by buyer [R,C,K]."""
    flow, asked = allocate(supply, need, allowed, preference, home_first)
    return flow, *route_totals(asked, flow), *flow_totals(flow)


def _stockpile_price(resp: ResponseState, price: np.ndarray, multiple: np.ndarray,
                     net: Network) -> np.ndarray:
    """US$/kg each stockpile pays [R, H]: the ex-China price of an oxide item; for magnets the
    ex-China value of their rare-earth content (magnet processing has no price in the model)."""
    inp = resp.inp
    out = np.zeros((price.shape[0], inp.holders))
    element_price = inp.element_base_price[None] * multiple[:, 1]  # [R, E]
    for k in range(inp.holders):
        if inp.sp_magnet[k]:
            out[:, k] = element_price @ net.grade_content[inp.sp_index[k]]
        else:
            out[:, k] = price[:, inp.sp_item[k], 1]
    return out


def _share_to_sectors(
    receipts: np.ndarray,
    request: np.ndarray,
    sector_onehot: np.ndarray,
    is_defense: np.ndarray,
    defense_first: np.ndarray,
) -> np.ndarray:
    """Split each country's magnet receipts of a grade over the sectors using that grade.

    receipts [R,C,G], request [R,C,S] -> allocation [R,C,S]. Pro rata to requests; in countries
    with ``defense_first`` the defense sector is served before the others. Receipts beyond all
    requests go pro rata too (they become stock).
    """
    req_g = request @ sector_onehot  # [R,C,G]
    per_sector_g = receipts @ sector_onehot.T  # receipts of the sector's grade, [R,C,S]
    total_g = req_g @ sector_onehot.T
    prorata = per_sector_g * _div(request, total_g)
    if not defense_first.any():
        return prorata
    defense_req = request * is_defense[None, None, :]
    defense_req_g = defense_req @ sector_onehot
    defense_fill = np.minimum(defense_req_g, receipts)
    rest_g = receipts - defense_fill
    rest_req = request * ~is_defense[None, None, :]
    rest_total = (rest_req @ sector_onehot) @ sector_onehot.T
    rest = (rest_g @ sector_onehot.T) * _div(rest_req, rest_total)
    defense_total = defense_req_g @ sector_onehot.T
    defense_share = (defense_fill @ sector_onehot.T) * _div(defense_req, defense_total)
    first = defense_share + rest
    return np.where(defense_first[None, :, None], first, prorata)


def _licence_requests(need: np.ndarray, supply: np.ndarray, preference: np.ndarray,
                      allowed: np.ndarray) -> np.ndarray:
    """What buyers would ask each foreign supplier for if licences were no obstacle.

    need, supply [R,C,K]; preference [R,X,C]; allowed [R,X,C,K] (bans and scenario limits only).
    """
    n = need.shape[1]
    eye = np.eye(n, dtype=bool)
    weights = preference[..., None] * allowed * ~eye[None, :, :, None]
    share = _div(weights, weights.sum(axis=1, keepdims=True))
    return np.maximum(need - supply, 0.0)[:, None] * share


def _magnet_licences(pol, t: int, origin_share: np.ndarray, compiled_reach=None) -> tuple:
    """Licence parameters of magnet channels this month, extraterritorial reach included.

    Returns (required, approval, median_months, p90_months, leakage, validity), each [R,X,C,G]
    ([1,X,C,G] in months without extraterritorial reach; the compiled twin returns the
    parameters, which are the same in every run, as [1,X,C,G] always).
    A magnet made outside the actor's country needs the actor's licence when the actor's share
    of its maker's rare-earth inputs (by mass, last month) is at least the rule's threshold.
    ``compiled_reach`` is :func:`rareflow.sim.compiled.magnet_licences` (the same numbers).
    """
    ml = pol.magnet
    a = pol.extra_actor
    threshold = pol.extraterritorial_threshold[t]  # [C,G]
    named = ~np.isnan(threshold)
    if not named.any():  # no extraterritorial reach this month: the same for every run
        direct = ml.required[t][None]
        extra = np.zeros_like(direct)
    elif compiled_reach is not None:
        params = (ml.approval, ml.review_median_months, ml.review_p90_months, ml.leakage,
                  ml.validity_months)
        required, values = compiled_reach(origin_share, threshold, a, ml.required[t],
                                          np.stack([p[t] for p in params]))
        return (required, values[0], values[1], values[2], values[3], values[4])
    else:
        extra = named[None, None] & (
            origin_share[:, :, None, None] >= np.nan_to_num(threshold, nan=np.inf)[None, None])
        n = origin_share.shape[1]
        not_actor = np.arange(n) != a
        extra = extra & not_actor[None, :, None, None] & ~np.eye(n, dtype=bool)[None, :, :, None]
        direct = np.broadcast_to(ml.required[t], extra.shape)
    required = direct | extra

    def pick(values: np.ndarray) -> np.ndarray:
        own = np.broadcast_to(values[t], extra.shape)
        actor = np.broadcast_to(values[t][a][None, None], extra.shape)
        return np.where(direct, own, actor)

    leakage = pick(ml.leakage)
    return (required, pick(ml.approval), pick(ml.review_median_months),
            pick(ml.review_p90_months), leakage, pick(ml.validity_months))


def _grade_ratio(received: np.ndarray, need: np.ndarray, uses: np.ndarray) -> np.ndarray:
    """Share of each grade's planned output that makers can make [R, X, G]: the smallest
    received / needed ratio over the elements the grade uses (``uses`` [G, E]), in [0, 1]; 1
    where a grade uses no element that is needed. received, need [R, X, E]."""
    element_ratio = np.where(need > _EPS, _div(received, need), 1.0)
    grade_ratio = np.where(uses[None, None, :, :], element_ratio[:, :, None, :], np.inf).min(axis=3)
    return np.clip(np.where(np.isinf(grade_ratio), 1.0, grade_ratio), 0.0, 1.0)


def _ship_concentrate(offered: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Concentrate arriving in each country [R, C, E]: what exporters offer [R, X, E] times
    their destination shares [R, X, C], summed over exporters."""
    return np.einsum("rxe,rxc->rce", offered, shares)


def _route_open(allowed: np.ndarray) -> np.ndarray:
    """The most open product of each route [R, X, C] of ``allowed`` [R, X, C, K]."""
    return allowed.max(axis=3)


def _held_back(requested: np.ndarray, flow: np.ndarray, required: np.ndarray,
               channels: np.ndarray | None = None) -> np.ndarray:
    """Tonnes requested from foreign suppliers under licence that did not ship [R, C, K].

    requested, flow [R,X,C,K]; required [1|R,X,C,K] (bool); ``channels`` (the compiled twin's
    shortcut to the licence queue's channels) is not needed here.
    """
    foreign = ~np.eye(requested.shape[1], dtype=bool)[None, :, :, None]
    return np.einsum("rxck->rck", np.maximum(requested - flow, 0.0) * required * foreign)


def _licence_stats(pol, t, lic, mstats, rstats, mag_req, ref_req, mflow, rflow, held_back,
                   queues):
    """This month's licence statistics: (stats [R, 5, C], median wait days [R], tonnes held back
    by destination and product [R, C, E + G]). ``held_back`` is :func:`_held_back` or its
    compiled twin; ``queues`` the (magnet, refined) licence queues."""
    stats = [mstats[f"{key}_by_destination"] + rstats[f"{key}_by_destination"]
             for key in ("applications", "approved", "denied", "backlog")]
    held_m_ck = held_back(mag_req, mflow, lic[0], queues[0].index)
    held_r_ck = held_back(ref_req, rflow, pol.refined.required[t][None], queues[1].index)
    stats.append(held_m_ck.sum(axis=2) + held_r_ck.sum(axis=2))
    wait = np.where(np.isnan(mstats["median_wait_days"]), rstats["median_wait_days"],
                    mstats["median_wait_days"])
    by_product = np.concatenate([held_r_ck, held_m_ck], axis=2)  # [R,C,E+G]
    return np.stack(stats, axis=1), wait, by_product
