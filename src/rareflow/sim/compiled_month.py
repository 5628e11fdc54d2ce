"""Compiled (Numba) months of the kernel, for the plain kernel.

:mod:`rareflow.sim.compiled` compiles the passes over trade channels one by one; between them
the numpy kernel makes about a hundred numpy calls a month on [run, country, product] arrays,
each a pass over every run with its own temporaries.

:func:`whole_month` is the whole month in one compiled call: a loop over runs that takes each
run through every step of ``kernel.simulate_arrays`` (mining to prices, the licence queues
and their statistics, the month's records and mass balance) while that run's arrays (a few
hundred kilobytes) stay in the cache. It calls the compiled passes, and the blocks below, on
one run's slices. What is the same for every run stays in Python, once a month: admitting
licence channels required for the first time, review hazards, extraterritorial licence
parameters (``kernel._whole_licences``).

The blocks cover months the whole month leaves to them (export quotas, a finite review
capacity): :func:`mine_and_separate` is steps 1 and 2 (mining, concentrate shipments and
separation); :func:`settle` is step 5 and the bookkeeping of step 6 (from the refined
allocation to production, deliveries, users' stocks and shortfalls, the month's records and
the mass balance); :func:`update_prices` is step 6's price update.

All of it covers runs without the responses model and without ``detail`` (the kernel runs its
numpy code otherwise). It performs the same arithmetic as the numpy code, though not always in
the same order of summation: results agree to 1e-9 (tests/test_compiled.py), which since the
allocation counts tonnes from 1 g no longer depends on the last bit
(tests/test_robustness.py).
"""

from __future__ import annotations

import numpy as np

from rareflow.dims import DAYS_PER_MONTH
from rareflow.sim.compiled import (
    AVAILABLE,
    _allocate,
    _jit,
    _licence_month,
    _licence_share,
    _route_open,
    _scarcest_share,
    _shift_exporter_shares,
    _switch_preferences,
)
from rareflow.sim.prices import MAX_MULTIPLE

_EPS = 1e-12  # kernel._EPS: the kernel's divisions treat smaller denominators as zero


@_jit
def _ratio(num, den):  # pragma: no cover
    """``kernel._div`` of two numbers: 0 where ``|den|`` is at most ``_EPS``."""
    return num / den if abs(den) > _EPS else 0.0


@_jit
def _mine_and_separate(t, mine_cap, sep_cap, composition, mine_scale, allowed, conc_shares,
                       conc_stock, separable, recovery, secondary, refined_stock, production,
                       refined_output, trade, upstream, spare_sep):  # pragma: no cover
    runs, n, e_n = conc_stock.shape
    offered = np.empty((n, e_n))
    shares = np.empty((n, n))
    for r in range(runs):
        rc = r if mine_cap.shape[0] > 1 else 0
        rs = r if sep_cap.shape[0] > 1 else 0
        a = allowed[r] if allowed.shape[0] > 1 else allowed[0]
        mined_t = take_t = sep_t = loss_t = refined_in_t = 0.0
        # 1. mining; exporters' shares, what export rules block staying home; countries that
        # cannot separate offer their held concentrate again with new output
        for x in range(n):
            kept = 0.0
            for c in range(n):
                shares[x, c] = conc_shares[r, x, c] * a[x, c]
                kept += conc_shares[r, x, c] * (1.0 - a[x, c])
            shares[x, x] += kept
            mined_x = 0.0
            offered_x = 0.0
            for e in range(e_n):
                mined = mine_cap[rc, x] * composition[x, e] * mine_scale[r]
                mined_x += mined
                held = 0.0
                if sep_cap[rs, x] <= _EPS:
                    held = conc_stock[r, x, e]
                    conc_stock[r, x, e] = 0.0
                offered[x, e] = mined + held
                offered_x += offered[x, e]
            production[r, t, 0, x] = mined_x
            mined_t += mined_x
            for c in range(n):
                trade[r, t, 0, x, c] = offered_x * shares[x, c]
        for x in range(n):  # shipments offered[x, e] * shares[x, c], arriving in c
            for c in range(n):
                s = shares[x, c]
                if s != 0.0:
                    for e in range(e_n):
                        conc_stock[r, c, e] += offered[x, e] * s
        # 2. separation up to capacity from the separable stock; recovery losses leave
        for c in range(n):
            feed = 0.0
            for e in range(e_n):
                if separable[c, e]:
                    feed += conc_stock[r, c, e]
            cap = sep_cap[rs, c]
            take_share = min(1.0, _ratio(cap, feed))
            separated_c = 0.0
            left = 0.0
            for e in range(e_n):
                take = conc_stock[r, c, e] * take_share if separable[c, e] else 0.0
                conc_stock[r, c, e] -= take
                left += conc_stock[r, c, e]
                out = take * recovery
                refined_output[r, t, c, e] = out
                refined_in = out + secondary[c, e]
                refined_stock[r, c, e] += refined_in
                take_t += take
                loss_t += take - out
                separated_c += out
                refined_in_t += refined_in
            production[r, t, 1, c] = separated_c
            sep_t += separated_c
            spare_sep[r, c] = max(cap - left, 0.0)
        upstream[r, 0] = mined_t
        upstream[r, 1] = take_t
        upstream[r, 2] = sep_t
        upstream[r, 3] = loss_t
        upstream[r, 4] = refined_in_t


def mine_and_separate(*arrays) -> None:
    """Steps 1-2 of the plain kernel's month in place (see :func:`_mine_and_separate`)."""
    _mine_and_separate(*arrays)


@_jit
def _settle(t, received, rflow_out, element_need, refined_need, oxide_need, to_make, from_stock,
            planned, plan, grade_content, grade_uses, purchase, release, request_g, request_s,
            need_s, supply_g, capacity_g, sector_grade, is_defense, defense_first, e2s_start,
            e2s_sector, e2s_share, oxide_to_metal, refined_stock, magnet_stock, user_stock,
            stockpile, conc_stock, mflow, mtrade, spare_mag, spare_ref, rec_production,
            rec_inventory, rec_need, rec_consumption, rec_shortfall, rec_oxide_short,
            upstream, before, balance, min_stock):  # pragma: no cover
    runs, n, e_n = received.shape
    g_n = grade_content.shape[0]
    s_n = request_s.shape[2]
    to_makers = np.empty((n, e_n))
    to_users = np.empty((n, e_n))
    ratio = np.empty((n, g_n))
    made = np.empty((n, g_n))
    delivered = np.empty((n, g_n))
    arrived = np.empty((n, g_n))
    receipts = np.empty((n, g_n))
    req_g = np.empty(g_n)
    defense_g = np.empty(g_n)
    rest_g = np.empty(g_n)
    for r in range(runs):
        rp = r if purchase.shape[0] > 1 else 0
        used_t = 0.0
        oxide_used_t = 0.0
        made_t = 0.0
        delivered_t = 0.0
        arrived_t = 0.0
        receipts_t = 0.0
        consumed_t = 0.0
        # refined receipts: makers' share (their need over all need) and users' share
        for c in range(n):
            for e in range(e_n):
                refined_stock[r, c, e] -= rflow_out[r, c, e]
                got = received[r, c, e]
                tm = got * _ratio(element_need[r, c, e], refined_need[r, c, e])
                to_makers[c, e] = tm
                to_users[c, e] = got - tm
        # production: each grade limited by its scarcest element (kernel._grade_ratio)
        for x in range(n):
            for g in range(g_n):
                ratio[x, g] = _scarcest_share(to_makers[x], element_need[r, x], grade_uses[g])
                made[x, g] = to_make[r, x, g] * ratio[x, g]
                made_t += made[x, g]
            metal = 0.0
            for e in range(e_n):
                used = 0.0
                for g in range(g_n):
                    used += made[x, g] * grade_content[g, e]
                used_t += used
                metal += used * oxide_to_metal[e]
                refined_stock[r, x, e] += to_makers[x, e] - used
            rec_production[r, t, 2, x] = metal
            made_here = 0.0
            for g in range(g_n):
                made_here += made[x, g]
                magnet_stock[r, x, g] -= from_stock[r, x, g]
                delivered[x, g] = from_stock[r, x, g] + made[x, g]
                delivered_t += delivered[x, g]
            rec_production[r, t, 3, x] = made_here
        # deliveries scale each maker's plan; receipts by buyer and grade
        arrived[:, :] = 0.0
        for x in range(n):
            for g in range(g_n):
                p = planned[r, x, g]
                dr = _ratio(delivered[x, g], p) if p > _EPS else 1.0
                for c in range(n):
                    f = plan[r, x, c, g] * dr
                    mflow[r, x, c, g] = f
                    arrived[c, g] += f
            for c in range(n):
                total = 0.0
                for g in range(g_n):
                    total += mflow[r, x, c, g]
                mtrade[r, x, c] = total
        for c in range(n):
            for g in range(g_n):
                got = arrived[c, g]
                arrived_t += got
                bought = got * _ratio(purchase[rp, c, g], request_g[r, c, g])
                stockpile[r, c, g] += bought
                receipts[c, g] = got - bought + release[rp, c, g]
                receipts_t += receipts[c, g]
        # users: receipts shared over the sectors of each grade (kernel._share_to_sectors)
        for c in range(n):
            req_g[:] = 0.0
            defense_g[:] = 0.0
            rest_g[:] = 0.0
            for s in range(s_n):
                g = sector_grade[s]
                if g >= 0:
                    req_g[g] += request_s[r, c, s]
                    if is_defense[s]:
                        defense_g[g] += request_s[r, c, s]
                    else:
                        rest_g[g] += request_s[r, c, s]
            for s in range(s_n):
                g = sector_grade[s]
                alloc = 0.0
                if g >= 0:
                    req = request_s[r, c, s]
                    if defense_first[c]:
                        fill = min(defense_g[g], receipts[c, g])
                        if is_defense[s]:
                            alloc = fill * _ratio(req, defense_g[g])
                        else:
                            alloc = (receipts[c, g] - fill) * _ratio(req, rest_g[g])
                    else:
                        alloc = receipts[c, g] * _ratio(req, req_g[g])
                stock = user_stock[r, c, s] + alloc
                need = need_s[r, c, s]
                consumed = min(need, stock)
                consumed_t += consumed
                user_stock[r, c, s] = stock - consumed
                rec_need[r, t, c, s] = need
                rec_consumption[r, t, c, s] = consumed
                rec_shortfall[r, t, c, s] = need - consumed
        # non-magnet users take refined oxide; what is beyond their need stays in stock
        for c in range(n):
            for e in range(e_n):
                want = oxide_need[r, c, e]
                short = max(want - to_users[c, e], 0.0)
                used = want - short
                oxide_used_t += used
                refined_stock[r, c, e] += to_users[c, e] - used
                rec_oxide_short[r, t, c, e] = short
                for j in range(e2s_start[e], e2s_start[e + 1]):
                    s = e2s_sector[j]
                    share = e2s_share[j]
                    rec_need[r, t, c, s] += want * share
                    rec_consumption[r, t, c, s] += used * share
                    rec_shortfall[r, t, c, s] += short * share
        # spare supply buyers can switch to; stocks by stage
        world_conc = world_refined = world_magnet = world_users = 0.0
        low_stock = np.inf
        for x in range(n):
            makeable = 0.0
            sent = 0.0
            for g in range(g_n):
                makeable += supply_g[r, x, g] - capacity_g[r, x, g] * (1.0 - ratio[x, g])
                sent += delivered[x, g]
            spare_mag[r, x] = max(makeable - sent, 0.0)
            conc = refined = magnets = users = held = 0.0
            for e in range(e_n):
                conc += conc_stock[r, x, e]
                refined += refined_stock[r, x, e]
                low_stock = min(low_stock, conc_stock[r, x, e], refined_stock[r, x, e])
            for g in range(g_n):
                magnets += magnet_stock[r, x, g]
                held += stockpile[r, x, g]
                low_stock = min(low_stock, magnet_stock[r, x, g])
            for s in range(s_n):
                users += user_stock[r, x, s]
                low_stock = min(low_stock, user_stock[r, x, s])
            spare_ref[r, x] = refined
            rec_inventory[r, t, 0, x] = conc
            rec_inventory[r, t, 1, x] = refined
            rec_inventory[r, t, 2, x] = magnets
            rec_inventory[r, t, 3, x] = users
            rec_inventory[r, t, 4, x] = held
            world_conc += conc
            world_refined += refined
            world_magnet += magnets
            world_users += users
        # mass balance of each stage (world, all elements), as relative errors; ``upstream``
        # [R, 5]: mined, taken into separation, separated, lost, entering refined stocks
        mined_t, take_t, sep_t, loss_t, refined_in_t = (upstream[r, 0], upstream[r, 1],
                                                        upstream[r, 2], upstream[r, 3],
                                                        upstream[r, 4])
        scale = max(mined_t, 1.0)
        balance[r, t, 0] = abs(world_conc - before[r, 0] - (mined_t - take_t)) / scale
        balance[r, t, 1] = abs(take_t - sep_t - loss_t) / scale
        balance[r, t, 2] = abs(world_refined - before[r, 1]
                            - (refined_in_t - used_t - oxide_used_t)) / scale
        mag_scale = max(made_t, 1.0)
        balance[r, t, 3] = abs(world_magnet - before[r, 2] - (made_t - delivered_t)
                            + (delivered_t - arrived_t)) / mag_scale
        balance[r, t, 4] = abs(world_users - before[r, 3] - (receipts_t - consumed_t)) / mag_scale
        before[r, 0] = world_conc
        before[r, 1] = world_refined
        before[r, 2] = world_magnet
        before[r, 3] = world_users
        min_stock[r, t] = low_stock


def sector_shares(element_to_sector: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero entries of ``element_to_sector`` [E, S] by element (compressed rows):
    (start [E + 1], sector [N], share [N]); element e's are ``start[e]:start[e + 1]``."""
    rows, cols = np.nonzero(element_to_sector)
    start = np.searchsorted(rows, np.arange(element_to_sector.shape[0] + 1))
    return start.astype(np.int64), cols.astype(np.int64), element_to_sector[rows, cols]


@_jit
def _prices(need, received, markets, signal, multiple, elasticity, smoothing, item_elements,
            base_price, max_multiple, price):  # pragma: no cover
    runs, n, e_n = need.shape
    m_n = markets.shape[0]
    i_n = item_elements.shape[0]
    for r in range(runs):
        for m in range(m_n):
            for e in range(e_n):
                want = 0.0
                got = 0.0
                for c in range(n):
                    if markets[m, c]:
                        want += need[r, c, e]
                        got += received[r, c, e]
                ratio = 1.0
                if want > _EPS:
                    ratio = want / max(got, want / max_multiple)
                z = (1.0 - smoothing) * signal[r, m, e] + smoothing * np.log(max(ratio, 1.0))
                signal[r, m, e] = z
                multiple[r, m, e] = min(max(np.exp(z / elasticity[r]), 1.0), max_multiple)
            for i in range(i_n):
                weighted = 0.0
                for e in range(e_n):
                    weighted += item_elements[i, e] * multiple[r, m, e]
                price[r, i, m] = base_price[i] * weighted


def update_prices(state, need: np.ndarray, received: np.ndarray) -> np.ndarray:
    """``PriceState.update`` without held-back material (the plain kernel), compiled: the same
    state change and prices [R, I, 2] to 1e-9 (Numba's ``exp``/``log`` and numpy's differ in
    the last bit)."""
    net = state.network
    runs = need.shape[0]
    price = np.empty((runs, len(net.base_price), state.markets.shape[0]))
    _prices(need, received, state.markets, state.signal, state.multiple,
            np.ascontiguousarray(state.elasticity[:, 0, 0]), float(net.price_smoothing),
            net.item_elements, net.base_price, MAX_MULTIPLE, price)
    return price


def settle(*arrays) -> None:
    """Steps 5-6 of the plain kernel's month in place (see :func:`_settle` for the arrays;
    ``element_to_sector`` is given as :func:`sector_shares`)."""
    _settle(*arrays)


@_jit
def _median_wait_days(by_age):  # pragma: no cover
    """``licences._median_age`` of one run's decisions by age [MAX_AGE], in days; NaN when
    nothing was decided."""
    total = 0.0
    for a in range(by_age.shape[0]):
        total += by_age[a]
    if not total > _EPS:
        return np.nan
    cum = 0.0
    below = 0
    for a in range(by_age.shape[0]):
        cum += by_age[a]
        if cum < 0.5 * total:
            below += 1
    return (min(below, by_age.shape[0] - 1) + 0.5) * DAYS_PER_MONTH


@_jit
def _queue_month(r, queue, requested, required, approval, validity, leakage, approval_scale,
                 extra_leakage, allowed, shape, stats, dest):  # pragma: no cover
    """One run's month of a licence queue (``LicenceQueue.step`` then ``allowed_share``): the
    allowed share of every channel [1, X, C, K] and the median wait (days, NaN without
    decisions); its applications, approvals, denials and backlog by destination are added to
    ``stats`` [4, C]. ``queue`` = (licensed [R, N], pending [R, A, N], backlog [R, N], index [N],
    hazards [A, N]) of its kept channels."""
    licensed, pending, backlog, index, hazards = queue
    size = requested.size
    if index.shape[0] == 0:
        return allowed, np.nan
    flat = requested.reshape((1, size))
    rq = r if required.shape[0] > 1 else 0
    req_flat = required[rq:rq + 1].reshape((1, size))
    ap = r if approval.shape[0] > 1 else 0
    va = r if validity.shape[0] > 1 else 0
    lk = r if leakage.shape[0] > 1 else 0
    applied, approved, denied, by_age, in_review = _licence_month(
        licensed[r:r + 1], pending[r:r + 1], backlog[r:r + 1], index, flat, req_flat,
        approval[ap:ap + 1], approval_scale[r:r + 1], True, validity[va:va + 1], hazards)
    for j in range(index.shape[0]):
        backlog[r, j] = in_review[0, j]
        c = dest[j]
        stats[0, c] += applied[0, j]
        stats[1, c] += approved[0, j]
        stats[2, c] += denied[0, j]
        stats[3, c] += in_review[0, j]
    share = _licence_share(licensed[r:r + 1], index, flat, req_flat, leakage[lk:lk + 1],
                           extra_leakage[r:r + 1], True, allowed.reshape((1, size)))
    return share.reshape(shape), _median_wait_days(by_age[0])


@_jit
def _requests_at(need, supply, preference, allowed, index, at, out):  # pragma: no cover
    """``compiled._licence_requests`` of one run on a queue's kept channels only: what buyers
    would ask each foreign supplier for without licences, written at the flat positions
    ``index`` (decoded in ``at`` [3, N]: exporter, destination, product) of ``out``; need,
    supply [C, K], preference [X, C], allowed [X, C, K]. Nothing else reads the requests."""
    n = need.shape[0]
    for j in range(index.shape[0]):
        x, c, k = at[0, j], at[1, j], at[2, j]
        asked = 0.0
        unmet = max(need[c, k] - supply[c, k], 0.0)
        if x != c and preference[x, c] != 0.0 and unmet != 0.0:
            d = 0.0  # over the buyer's foreign suppliers, in ascending order
            for s in range(n):
                if s != c and preference[s, c] != 0.0:
                    d += preference[s, c] * allowed[s, c, k]
            if abs(d) > _EPS:
                asked = unmet * (preference[x, c] * allowed[x, c, k] / d)
        out[index[j]] = asked


@_jit
def _add_held_back(by_product, total, requested, flow, required, at, offset):  # pragma: no cover
    """Add one run's tonnes held back on a queue's kept channels (positions ``at`` [3, N]:
    exporter, destination, product) to ``by_product`` [C, E + G] at ``offset`` and to
    ``total`` [C]; exporter-major, so each (destination, product) sums exporters in order."""
    for j in range(at.shape[1]):
        x, c, k = at[0, j], at[1, j], at[2, j]
        if c != x and required[x, c, k]:
            held = max(requested[x, c, k] - flow[x, c, k], 0.0)
            by_product[c, offset + k] += held
            total[c] += held


@_jit
def _whole_month(t, network, month, params, state, policy, magnet_queue, refined_queue,
                 licence_parameters, records):  # pragma: no cover
    # The tuples, in the order unpacked below, come from kernel._whole_network (constant),
    # _whole_controls (this month's, [1|R, ...]), the run parameters [R], the state [R, ...]
    # (updated in place), kernel._whole_licences (queues: their kept channels; parameters flat
    # [1|R, X*C*K]) and the records [R, T, ...] (written at month t).
    (composition, separable, recovery, conc_base, user_cover, sector_grade, grade_content,
     grade_uses, is_defense, defense_first, e2s_start, e2s_sector, e2s_share, oxide_to_metal,
     home_first, markets, item_elements, base_price, smoothing) = network
    (mine_cap, sep_cap, mag_cap, secondary, magnet_need, oxide_need_t, allowed_c, allowed_m,
     allowed_r, all_open_m, all_open_r, purchase, release) = month
    mine_scale, demand_scale, magnet_scale, switching, elasticity, approval_scale, extra_leak = (
        params)
    (conc_stock, refined_stock, magnet_stock, user_stock, stockpile, conc_shares, magnet_pref,
     refined_pref, signal, multiple, origin_share, before) = state
    (m_required, m_approval, m_validity, m_leakage, r_required, r_approval, r_validity,
     r_leakage, m_at, r_at, actor) = licence_parameters
    (production, refined_output, trade, inventory, rec_need, consumption, shortfall,
     oxide_shortfall, price, licences, wait_days, held_back, balance, min_stock) = records
    runs, n, e_n = conc_stock.shape
    g_n = grade_content.shape[0]
    s_n = user_stock.shape[2]
    m_shape = (1, n, n, g_n)
    r_shape = (1, n, n, e_n)
    upstream = np.zeros((1, 5))
    spare_sep = np.empty((1, n))
    need_s = np.empty((1, n, s_n))
    request_s = np.empty((1, n, s_n))
    request_g = np.empty((1, n, g_n))
    capacity_g = np.empty((1, n, g_n))
    supply_g = np.empty((1, n, g_n))
    world_mix = np.empty(g_n)
    from_stock = np.empty((1, n, g_n))
    to_make = np.empty((1, n, g_n))
    element_need = np.empty((1, n, e_n))
    oxide_need = np.empty((1, n, e_n))
    refined_need = np.empty((1, n, e_n))
    mflow = np.empty((1, n, n, g_n))
    mtrade = np.empty((1, n, n))
    spare_mag = np.empty((1, n))
    spare_ref = np.empty((1, n))
    stats = np.empty((4, n))
    # this run's licence requests (with a policy), written on the kept channels only
    m_requests = np.zeros(n * n * g_n).reshape(m_shape)
    r_requests = np.zeros(n * n * e_n).reshape(r_shape)
    no_asked_m = np.empty((0, n, n, g_n))  # the allocation sums requests by route only
    no_asked_r = np.empty((0, n, n, e_n))
    for r in range(runs):
        # 1-2. mining, concentrate shipments, separation; exporters' shares move
        rc = r if mine_cap.shape[0] > 1 else 0
        rs = r if sep_cap.shape[0] > 1 else 0
        rm = r if mag_cap.shape[0] > 1 else 0
        ra = r if allowed_c.shape[0] > 1 else 0
        _mine_and_separate(t, mine_cap[rc:rc + 1], sep_cap[rs:rs + 1], composition,
                           mine_scale[r:r + 1], allowed_c[ra:ra + 1], conc_shares[r:r + 1],
                           conc_stock[r:r + 1], separable, recovery, secondary,
                           refined_stock[r:r + 1], production[r:r + 1],
                           refined_output[r:r + 1], trade[r:r + 1], upstream, spare_sep)
        conc_shares[r] = _shift_exporter_shares(conc_shares[r:r + 1], conc_base,
                                                allowed_c[ra:ra + 1], spare_sep,
                                                switching[r:r + 1])[0]
        # 3. users' requests (need plus restocking, plus government purchases) by grade;
        # makers' supply: stock plus capacity split by the world's mix of grades
        request_g[:] = 0.0
        for c in range(n):
            for s in range(s_n):
                wanted = magnet_need[c, s] * demand_scale[r]
                need_s[0, c, s] = wanted
                asked = wanted + max(wanted * user_cover[s] - user_stock[r, c, s], 0.0)
                request_s[0, c, s] = asked
                if sector_grade[s] >= 0:
                    request_g[0, c, sector_grade[s]] += asked
        total_request = 0.0
        world_mix[:] = 0.0
        for c in range(n):
            for g in range(g_n):
                request_g[0, c, g] += purchase[0, c, g]
                world_mix[g] += request_g[0, c, g]
                total_request += request_g[0, c, g]
        for g in range(g_n):
            world_mix[g] = _ratio(world_mix[g], total_request)
        for c in range(n):
            for g in range(g_n):
                capacity_g[0, c, g] = mag_cap[rm, c] * magnet_scale[r] * world_mix[g]
                supply_g[0, c, g] = magnet_stock[r, c, g] + capacity_g[0, c, g]
        stats[:] = 0.0
        m_wait = r_wait = np.nan
        allowed_m_run = allowed_m
        if policy:
            _requests_at(request_g[0], supply_g[0], magnet_pref[r], allowed_m[0],
                         magnet_queue[3], m_at, m_requests.reshape(m_requests.size))
            allowed_m_run, m_wait = _queue_month(
                r, magnet_queue, m_requests, m_required, m_approval, m_validity, m_leakage,
                approval_scale, extra_leak, allowed_m, m_shape, stats, m_at[1])
        plan, _, planned, _, m_asked, _ = _allocate(
            supply_g, request_g, allowed_m_run, magnet_pref[r:r + 1], home_first, all_open_m,
            no_asked_m)
        for x in range(n):
            for g in range(g_n):
                taken = min(magnet_stock[r, x, g], planned[0, x, g])
                from_stock[0, x, g] = taken
                to_make[0, x, g] = planned[0, x, g] - taken
            for e in range(e_n):
                wanted = 0.0
                for g in range(g_n):
                    wanted += to_make[0, x, g] * grade_content[g, e]
                element_need[0, x, e] = wanted
                oxide_need[0, x, e] = oxide_need_t[x, e] * demand_scale[r]
                refined_need[0, x, e] = wanted + oxide_need[0, x, e]
        # 4. refined elements for makers and for non-magnet users
        allowed_r_run = allowed_r
        if policy:
            _requests_at(refined_need[0], refined_stock[r], refined_pref[r], allowed_r[0],
                         refined_queue[3], r_at, r_requests.reshape(r_requests.size))
            allowed_r_run, r_wait = _queue_month(
                r, refined_queue, r_requests, r_required, r_approval, r_validity, r_leakage,
                approval_scale, extra_leak, allowed_r, r_shape, stats, r_at[1])
        rflow, _, rflow_out, received, r_asked, rtrade = _allocate(
            refined_stock[r:r + 1], refined_need, allowed_r_run, refined_pref[r:r + 1],
            home_first, all_open_r, no_asked_r)
        # 5-6. production, deliveries, users, records and mass balance
        _settle(t, received, rflow_out, element_need, refined_need, oxide_need, to_make,
                from_stock, planned, plan, grade_content, grade_uses, purchase, release,
                request_g, request_s, need_s, supply_g, capacity_g, sector_grade, is_defense,
                defense_first, e2s_start, e2s_sector, e2s_share, oxide_to_metal,
                refined_stock[r:r + 1], magnet_stock[r:r + 1], user_stock[r:r + 1],
                stockpile[r:r + 1], conc_stock[r:r + 1], mflow, mtrade, spare_mag, spare_ref,
                production[r:r + 1], inventory[r:r + 1], rec_need[r:r + 1],
                consumption[r:r + 1], shortfall[r:r + 1], oxide_shortfall[r:r + 1], upstream,
                before[r:r + 1], balance[r:r + 1], min_stock[r:r + 1])
        # 6. switching and prices
        magnet_pref[r] = _switch_preferences(magnet_pref[r:r + 1], m_asked, mtrade, spare_mag,
                                             _route_open(allowed_m_run), switching[r:r + 1])[0]
        refined_pref[r] = _switch_preferences(refined_pref[r:r + 1], r_asked, rtrade,
                                              spare_ref, _route_open(allowed_r_run),
                                              switching[r:r + 1])[0]
        _prices(refined_need, received, markets, signal[r:r + 1], multiple[r:r + 1],
                elasticity[r:r + 1], smoothing, item_elements, base_price, MAX_MULTIPLE,
                price[r, t:t + 1])
        if policy:
            # licence statistics, tonnes held back (requested from foreign suppliers under
            # licence and not shipped: kernel._held_back), the actor's share of makers' inputs
            rq = r if m_required.shape[0] > 1 else 0
            for c in range(n):
                for k in range(4):
                    licences[r, t, k, c] = stats[k, c]
                licences[r, t, 4, c] = 0.0
            _add_held_back(held_back[r, t], licences[r, t, 4], r_requests[0], rflow[0],
                           r_required[0], r_at, 0)
            _add_held_back(held_back[r, t], licences[r, t, 4], m_requests[0], mflow[0],
                           m_required[rq], m_at, e_n)
            for c in range(n):
                into_c = 0.0
                for x in range(n):
                    into_c += rtrade[0, x, c]
                origin_share[r, c] = _ratio(rtrade[0, actor, c], into_c)
            wait_days[r, t] = r_wait if np.isnan(m_wait) else m_wait
        for x in range(n):
            for c in range(n):
                trade[r, t, 1, x, c] = rtrade[0, x, c]
                trade[r, t, 2, x, c] = mtrade[0, x, c]


def whole_month(t, network, month, params, state, policy, magnet_queue, refined_queue,
                licence_parameters, records) -> None:
    """The plain kernel's whole month, run by run, in place (see :func:`_whole_month`; the
    kernel's ``_whole_*`` helpers give the tuples)."""
    _whole_month(t, network, month, params, state, policy, magnet_queue, refined_queue,
                 licence_parameters, records)


__all__ = ["AVAILABLE", "mine_and_separate", "settle", "update_prices", "whole_month"]
