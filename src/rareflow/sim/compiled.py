"""Optional compiled (Numba) twins of the kernel's passes over trade channels.

The kernel spends most of its time in passes over the [run, exporter, importer, product] arrays
(17 x 17 x 18 refined channels per run). In numpy each step is a dozen separate passes over
arrays too large for the cache; here each is a few loops per run that visit only the channels
that can be non-zero. Twins: the allocation of a market (:func:`allocate`, of
:func:`rareflow.sim.market.allocate`), the requests buyers would place without licences
(:func:`licence_requests`), the tonnes licences held back (:func:`held_back`), the most open
product of each route (:func:`route_open`), extraterritorial magnet licences
(:func:`magnet_licences`), the licence queue's month and allowed share (:data:`LICENCE_CORE`,
used by :class:`rareflow.policy.licences.LicenceQueue`), preference switching
(:func:`switch_preferences`), exporters' destination shares (:func:`shift_exporter_shares`),
concentrate shipments (:func:`ship_concentrate`) and grade ratios (:func:`grade_ratio`).

They compute the same numbers as the numpy versions, operation for operation and, except for the
licence queue's decisions by age (summed over its active channels in order) and the allocation's
requests summed by route when no array of requests is asked for (added up as they are made), in
the same order of summation (ascending index; numpy's pairwise summation where numpy reduces a
contiguous row, :func:`_pairwise_sum`): tests/test_compiled.py holds them, and the whole kernel,
to 1e-9 (for C-ordered arrays, which the kernel passes; numpy sums a Fortran-ordered array in
another order). Since the allocation counts tonnes from :data:`rareflow.sim.market.MASS_EPS_T`
(1 g) instead of 1e-12 t, a last-bit difference no longer turns into a different allocation
(tests/test_robustness.py), so the same order is a convenience for checking, not a condition for
agreeing to 1e-9. Shapes where numpy reduces a contiguous axis that the loops here would sum in
order (one product in an allocation, one channel in a licence queue) run in numpy when the
kernel calls these passes; the compiled whole month (:mod:`rareflow.sim.compiled_month`) calls
the loops whatever the shape, which differs from numpy in the last bit only. Numba is optional:
without it :data:`AVAILABLE` is False and the kernel uses numpy (``backend="numpy"``; ``"auto"``
picks this module when it can). The first use on a machine compiles the functions (about half a
minute, most of it for :mod:`rareflow.sim.compiled_month`); Numba caches them on disk.
"""

from __future__ import annotations

import numpy as np

from rareflow.sim import market

try:  # an optional dependency: pip install 'rareflow[fast]'
    from numba import njit
except ImportError:  # pragma: no cover - exercised on machines without numba
    njit = None

#: Whether the compiled backend can be used on this machine.
AVAILABLE = njit is not None
BACKENDS = ("auto", "numpy", "numba")
_EPS = 1e-12
_MASS_EPS = market.MASS_EPS_T  # the allocation's and switching's threshold for tonnes


def resolve(backend: str) -> str:
    """The backend a request names: ``"auto"`` is ``"numba"`` when Numba is installed."""
    if backend not in BACKENDS:
        raise ValueError(f"backend (value {backend!r}): must be one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "numba" if AVAILABLE else "numpy"
    if backend == "numba" and not AVAILABLE:
        raise ValueError("backend (value 'numba'): Numba is not installed; "
                         "pip install 'rareflow[fast]' or use backend 'numpy'")
    return backend


def _jit(fn):
    return fn if njit is None else njit(cache=True, nogil=True)(fn)


def _per_run(allowed: np.ndarray, runs: int) -> np.ndarray:
    """``allowed`` as a 4-D array with 1 (same for every run) or ``runs`` leading entries."""
    allowed = np.asarray(allowed, dtype=float)
    if allowed.ndim == 3:
        return np.ascontiguousarray(allowed[None])
    if allowed.shape[0] == 1 or (runs > 1 and allowed.strides[0] == 0):
        return np.ascontiguousarray(allowed[:1])
    return np.ascontiguousarray(allowed)


@_jit
def _suppliers(preference, r, suppliers, count):  # pragma: no cover
    """For each buyer c, the foreign suppliers x with a preference, in ascending order."""
    n = preference.shape[1]
    for c in range(n):
        m = 0
        for x in range(n):
            if x != c and preference[r, x, c] != 0.0:
                suppliers[c, m] = x
                m += 1
        count[c] = m


@_jit
def _allocate(supply, need, allowed, preference, home_first, all_open, asked):  # pragma: no cover
    # Loops visit only buyers with something to ask for and suppliers they prefer, and after
    # each round only the (buyer, product) pairs that placed requests (``placed``, ``again``):
    # every other channel's request and flow is zero in the numpy version too (0 * x), and
    # skipping a zero term leaves each sum unchanged. Sums run in the numpy version's order
    # (ascending index), except the requests' sums over products without ``asked``.
    # ``asked`` [R, X, C, K]: every run's requests, written out; or [0, X, C, K]: only their sums
    # over products are returned (summed as they are made).
    keep_asked = asked.shape[0] > 0
    runs, n, k_n = supply.shape
    flow = np.zeros((runs, n, n, k_n))
    by_seller = np.zeros((runs, n, k_n))
    by_buyer = np.zeros((runs, n, k_n))
    asked_route = np.zeros((runs, n, n))
    flow_route = np.zeros((runs, n, n))
    second = np.empty((n, n, k_n))  # read only where written (round 2, same condition)
    suppliers = np.zeros((n, n), dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    total = np.zeros((n, k_n))
    scale = np.zeros((n, k_n))
    home_fill = np.zeros((n, k_n))
    spare = np.zeros((n, k_n))
    lack = np.zeros((n, k_n))
    den = np.zeros((n, k_n))
    placed = np.zeros((n, k_n), dtype=np.bool_)  # requests in round 1
    again = np.zeros((n, k_n), dtype=np.bool_)  # requests in round 2
    for r in range(runs):
        a = allowed[r] if allowed.shape[0] > 1 else allowed[0]
        _suppliers(preference, r, suppliers, count)
        # round 1: the need home supply cannot cover, split over open foreign routes
        total[:] = 0.0
        placed[:] = False
        again[:] = False
        for c in range(n):
            for k in range(k_n):
                unmet = max(need[r, c, k] - supply[r, c, k], 0.0)
                if unmet == 0.0:
                    continue
                d = 0.0
                for j in range(count[c]):
                    x = suppliers[c, j]
                    if a[x, c, k] > _EPS:
                        d += preference[r, x, c]
                if not d > _EPS:
                    continue
                placed[c, k] = True
                for j in range(count[c]):
                    x = suppliers[c, j]
                    if a[x, c, k] > _EPS:
                        q = preference[r, x, c] / d * unmet
                        if keep_asked:
                            asked[r, x, c, k] = q
                        else:
                            asked_route[r, x, c] += q
                        f = q if all_open else q * a[x, c, k]
                        flow[r, x, c, k] = f
                        total[x, k] += f
        # each seller serves home and foreign requests (home first, or pro rata)
        for x in range(n):
            for k in range(k_n):
                home = need[r, x, k]
                s = supply[r, x, k]
                ft = total[x, k]
                wanted = home + ft
                ratio = min(1.0, s / wanted if wanted > _MASS_EPS else 0.0)
                if not wanted > _MASS_EPS:
                    ratio = 0.0
                if home_first[x]:
                    home_hf = min(home, s)
                    scale[x, k] = min(1.0, (s - home_hf) / ft if ft > _MASS_EPS else 0.0)
                    home_fill[x, k] = home_hf
                else:
                    scale[x, k] = ratio
                    home_fill[x, k] = home * ratio
        total[:] = 0.0
        lack[:] = 0.0  # first what arrived from all sellers
        for c in range(n):
            for k in range(k_n):
                if not placed[c, k]:
                    continue
                for j in range(count[c]):
                    x = suppliers[c, j]
                    f = flow[r, x, c, k] * scale[x, k]
                    flow[r, x, c, k] = f
                    total[x, k] += f
        for c in range(n):  # ascending x for each buyer, as flow.sum(axis=1)
            for k in range(k_n):
                if placed[c, k]:
                    for j in range(count[c]):
                        lack[c, k] += flow[r, suppliers[c, j], c, k]
        for x in range(n):
            for k in range(k_n):
                spare[x, k] = max(supply[r, x, k] - home_fill[x, k] - total[x, k], 0.0)
                lack[x, k] = max(need[r, x, k] - home_fill[x, k] - lack[x, k], 0.0)
        # round 2: what buyers still lack, from usual suppliers with supply left on open routes
        total[:] = 0.0
        for c in range(n):
            for k in range(k_n):
                den[c, k] = 0.0
                if lack[c, k] == 0.0:
                    continue
                d = 0.0
                for j in range(count[c]):
                    x = suppliers[c, j]
                    if spare[x, k] > _MASS_EPS and a[x, c, k] >= 1.0 - 1e-9:
                        d += preference[r, x, c]
                den[c, k] = d
                if not d > _EPS:
                    continue
                again[c, k] = True
                for j in range(count[c]):
                    x = suppliers[c, j]
                    q = 0.0
                    if spare[x, k] > _MASS_EPS and a[x, c, k] >= 1.0 - 1e-9:
                        q = preference[r, x, c] / d * lack[c, k]
                    second[x, c, k] = q
                    total[x, k] += q
        for x in range(n):
            for k in range(k_n):
                t = total[x, k]
                scale[x, k] = min(1.0, spare[x, k] / t if t > _MASS_EPS else 0.0)
        for c in range(n):
            for k in range(k_n):
                asked_again = again[c, k]
                if not (asked_again or placed[c, k]):
                    continue
                for j in range(count[c]):
                    x = suppliers[c, j]
                    f = flow[r, x, c, k]
                    if asked_again:
                        q = second[x, c, k]
                        f += q * scale[x, k]
                        if keep_asked:
                            asked[r, x, c, k] += q
                        else:
                            asked_route[r, x, c] += q
                    flow[r, x, c, k] = max(f, 0.0)  # a seller's stock may be -1e-20 (rounding)
        for x in range(n):
            for k in range(k_n):
                flow[r, x, x, k] = max(home_fill[x, k], 0.0)
        # totals by seller (over buyers, ascending) and by buyer (over sellers, ascending, home
        # in its place): the order of market.flow_totals (einsum over non-contiguous axes)
        for c in range(n):
            for k in range(k_n):
                if not (placed[c, k] or again[c, k]):  # only the home flow
                    f = flow[r, c, c, k]
                    by_seller[r, c, k] += f
                    by_buyer[r, c, k] = f
                    continue
                got = 0.0
                home_pending = True
                for j in range(count[c] + 1):
                    x = suppliers[c, j] if j < count[c] else n
                    if home_pending and x > c:
                        f = flow[r, c, c, k]
                        got += f
                        by_seller[r, c, k] += f
                        home_pending = False
                    if x < n:
                        f = flow[r, x, c, k]
                        got += f
                        by_seller[r, x, k] += f
                by_buyer[r, c, k] = got
        # sums over products of each route (rows contiguous: numpy's pairwise order); only
        # home and preferred routes carry anything, and only foreign routes are asked
        for c in range(n):
            flow_route[r, c, c] = _pairwise_sum(flow[r, c, c], k_n)
            asked_c = False
            for k in range(k_n):
                asked_c = asked_c or placed[c, k] or again[c, k]
            if not asked_c:
                continue  # no foreign flow, nothing asked
            for j in range(count[c]):
                x = suppliers[c, j]
                flow_route[r, x, c] = _pairwise_sum(flow[r, x, c], k_n)
                if keep_asked:
                    asked_route[r, x, c] = _pairwise_sum(asked[r, x, c], k_n)
    return flow, asked, by_seller, by_buyer, asked_route, flow_route


def allocate(supply: np.ndarray, need: np.ndarray, allowed: np.ndarray,
             preference: np.ndarray, home_first: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rareflow.sim.market.allocate`, compiled; same arguments, same results."""
    if supply.shape[2] == 1:
        return market.allocate(supply, need, allowed, preference, home_first)
    asked = np.zeros((supply.shape[0], *np.shape(allowed)[-3:]))
    return _compiled_allocate(supply, need, allowed, preference, home_first, asked)[:2]


def allocate_with_totals(supply: np.ndarray, need: np.ndarray, allowed: np.ndarray,
                         preference: np.ndarray, home_first: np.ndarray) -> tuple:
    """``kernel._allocate_with_totals``, compiled (the same numbers): the flows [R, X, C, K],
    the requests and the flows summed over products [R, X, C], and the flows' totals by seller
    [R, X, K] and by buyer [R, C, K]. The sums are taken while the flows are in the cache
    instead of in more passes over them, and the requests are never written out whole.

    With one product (K = 1) numpy sums over buyers along a contiguous axis, in an order
    (unrolled partial sums) the loops here do not follow: that case runs in numpy.
    """
    if supply.shape[2] == 1:
        flow, asked = market.allocate(supply, need, allowed, preference, home_first)
        return flow, *market.route_totals(asked, flow), *market.flow_totals(flow)
    asked = np.zeros((0, *np.shape(allowed)[-3:]))
    flow, _, by_seller, by_buyer, asked_route, flow_route = _compiled_allocate(
        supply, need, allowed, preference, home_first, asked)
    return flow, asked_route, flow_route, by_seller, by_buyer


def _compiled_allocate(supply, need, allowed, preference, home_first, asked) -> tuple:
    runs = supply.shape[0]
    allowed = _per_run(allowed, runs)
    all_open = allowed.shape[0] == 1 and bool((allowed >= 1.0 - 1e-9).all())
    return _allocate(np.ascontiguousarray(supply, dtype=float),
                     np.ascontiguousarray(need, dtype=float), allowed,
                     np.ascontiguousarray(preference, dtype=float),
                     np.ascontiguousarray(home_first, dtype=np.bool_), all_open, asked)


@_jit
def _licence_requests(need, supply, preference, allowed):  # pragma: no cover
    # only buyers with unmet need and the suppliers they prefer: every other request is 0 * x
    runs, n, k_n = need.shape
    out = np.zeros((runs, n, n, k_n))
    suppliers = np.zeros((n, n), dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    for r in range(runs):
        a = allowed[r] if allowed.shape[0] > 1 else allowed[0]
        _suppliers(preference, r, suppliers, count)
        for c in range(n):
            for k in range(k_n):
                unmet = max(need[r, c, k] - supply[r, c, k], 0.0)
                if unmet == 0.0:
                    continue
                d = 0.0
                for j in range(count[c]):
                    x = suppliers[c, j]
                    d += preference[r, x, c] * a[x, c, k]
                if not abs(d) > _EPS:
                    continue
                for j in range(count[c]):
                    x = suppliers[c, j]
                    out[r, x, c, k] = unmet * (preference[r, x, c] * a[x, c, k] / d)
    return out


def licence_requests(need: np.ndarray, supply: np.ndarray, preference: np.ndarray,
                     allowed: np.ndarray) -> np.ndarray:
    """``kernel._licence_requests``, compiled; same arguments, same results."""
    runs = need.shape[0]
    return _licence_requests(np.ascontiguousarray(need, dtype=float),
                             np.ascontiguousarray(supply, dtype=float),
                             np.ascontiguousarray(preference, dtype=float),
                             _per_run(allowed, runs))


@_jit
def _held_back(requested, flow, required, channels):  # pragma: no cover
    # only the channels a licence queue keeps (every required channel is kept); flat C order
    # is exporter-major, so each destination's sum runs over exporters in ascending order
    runs, n, _, k_n = requested.shape
    out = np.zeros((runs, n, k_n))
    m = len(channels)
    xs, cs, ks = np.empty(m, np.int64), np.empty(m, np.int64), np.empty(m, np.int64)
    for j in range(m):  # positions once, not once per run
        i = channels[j]
        xs[j], cs[j], ks[j] = i // (n * k_n), (i // k_n) % n, i % k_n
    for r in range(runs):
        q = required[r] if required.shape[0] > 1 else required[0]
        for j in range(m):
            x, c, k = xs[j], cs[j], ks[j]
            if c != x and q[x, c, k]:
                out[r, c, k] += max(requested[r, x, c, k] - flow[r, x, c, k], 0.0)
    return out


def held_back(requested: np.ndarray, flow: np.ndarray, required: np.ndarray,
              channels: np.ndarray) -> np.ndarray:
    """``kernel._held_back``, compiled, visiting only ``channels`` (flat positions in
    [X, C, K], a superset of the required ones: a licence queue's ``index``)."""
    required = np.asarray(required, dtype=np.bool_)
    required = required[None] if required.ndim == 3 else required
    if required.shape[0] > 1 and required.strides[0] == 0:
        required = required[:1]
    return _held_back(np.ascontiguousarray(requested, dtype=float),
                      np.ascontiguousarray(flow, dtype=float),
                      np.ascontiguousarray(required), np.asarray(channels, dtype=np.int64))


@_jit
def _route_open(allowed):  # pragma: no cover
    runs, n, _, k_n = allowed.shape
    out = np.zeros((runs, n, n))
    for r in range(runs):
        for x in range(n):
            for c in range(n):
                m = allowed[r, x, c, 0]
                for k in range(1, k_n):
                    m = max(m, allowed[r, x, c, k])
                out[r, x, c] = m
    return out


def route_open(allowed: np.ndarray) -> np.ndarray:
    """``allowed.max(axis=3)``: the most open product of each route [R, X, C]."""
    return _route_open(np.ascontiguousarray(allowed, dtype=float))


@_jit
def _magnet_licences(origin_share, threshold, actor, direct, values):  # pragma: no cover
    runs = origin_share.shape[0]
    n, _, g_n = direct.shape
    required = np.zeros((runs, n, n, g_n), dtype=np.bool_)
    # a channel's parameters depend on whether the rule names it, not on the run: once
    out = np.empty((values.shape[0], 1, n, n, g_n))
    for x in range(n):
        for c in range(n):
            for g in range(g_n):
                own = direct[x, c, g]
                for p in range(values.shape[0]):
                    out[p, 0, x, c, g] = values[p, x, c, g] if own else values[p, actor, c, g]
    for r in range(runs):
        for x in range(n):
            for c in range(n):
                for g in range(g_n):
                    th = threshold[c, g]
                    extra = (not np.isnan(th)) and origin_share[r, x] >= th and x != actor \
                        and x != c
                    required[r, x, c, g] = direct[x, c, g] or extra
    return required, out


def magnet_licences(origin_share: np.ndarray, threshold: np.ndarray, actor: int,
                    direct: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The extraterritorial case of ``kernel._magnet_licences``, compiled.

    origin_share [R, X] (the actor's share of each maker's inputs), threshold [C, G] (NaN: no
    reach), direct [X, C, G] (licence required by the rule itself), values [P, X, C, G] (licence
    parameters). Returns (required [R, X, C, G], parameters [P, 1, X, C, G]): a channel is
    required directly or by reach; reached channels take the actor's parameters. Parameters
    are the same in every run (a channel the rule does not name takes the actor's whether or
    not it is reached), so they are computed once.
    """
    return _magnet_licences(np.ascontiguousarray(origin_share, dtype=float),
                            np.ascontiguousarray(threshold, dtype=float), int(actor),
                            np.ascontiguousarray(direct, dtype=np.bool_),
                            np.ascontiguousarray(values, dtype=float))


@_jit
def _pairwise_sum(values, n):  # pragma: no cover
    """``values[:n].sum()`` as numpy computes it for a contiguous row (pairwise summation in
    blocks of 8, numpy/_core/src/umath/loops_utils.h.src), so that results match bit for bit."""
    if n < 8:
        total = 0.0
        for i in range(n):
            total += values[i]
        return total
    if n <= 128:
        # eight partial sums in locals (a scratch array would be allocated on every call)
        p0, p1, p2, p3 = values[0], values[1], values[2], values[3]
        p4, p5, p6, p7 = values[4], values[5], values[6], values[7]
        i = 8
        while i < n - (n % 8):
            p0 += values[i]
            p1 += values[i + 1]
            p2 += values[i + 2]
            p3 += values[i + 3]
            p4 += values[i + 4]
            p5 += values[i + 5]
            p6 += values[i + 6]
            p7 += values[i + 7]
            i += 8
        total = ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))
        while i < n:
            total += values[i]
            i += 1
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values, half) + _pairwise_sum(values[half:], n - half)


@_jit
def _licence_month(licensed, pending, backlog, index, requested, required, approval,
                   approval_scale, scaled, validity, hazards):  # pragma: no cover
    # ``pending`` is aged in place; decisions by age are summed over channels per run (for the
    # median wait) instead of kept. Loops run over channels innermost, so that the sums over
    # ages (in ascending order, as numpy's) proceed for many channels at once. The review loops
    # visit only channels with something in review or applied for (about one in ten in the
    # ensembles measured): pending volumes are never negative, so a backlog of 0 means nothing
    # pending at any age, and every number such a channel would get is 0 (0 * hazard).
    runs, ages, n = pending.shape
    applications = np.zeros((runs, n))
    approved = np.zeros((runs, n))
    denied = np.zeros((runs, n))
    in_review = np.zeros((runs, n))
    by_age = np.zeros((runs, ages))
    decided_now = np.empty((ages, n))  # by age and active channel (the first m columns)
    decided = np.zeros(n)
    held = np.zeros(n)
    active = np.zeros(n, dtype=np.int64)
    for r in range(runs):
        m = 0
        rq_r = r if required.shape[0] > 1 else 0
        ap_r = r if approval.shape[0] > 1 else 0
        va_r = r if validity.shape[0] > 1 else 0
        for j in range(n):
            i = index[j]
            required_now = required[rq_r, i]
            months = max(validity[va_r, i], 1.0)
            kept = licensed[r, j] * (1.0 - 1.0 / months) if required_now else 0.0
            held[j] = kept
            wanted = requested[r, i] if required_now else 0.0
            applied = max(wanted - kept - backlog[r, j], 0.0) * (1.0 if required_now else 0.0)
            applications[r, j] = applied
            pending[r, 0, j] += applied
            if applied != 0.0 or backlog[r, j] != 0.0:
                active[m] = j
                m += 1
        decided[:] = 0.0
        for a in range(ages):
            for jj in range(m):
                j = active[jj]
                d = pending[r, a, j] * hazards[a, j]
                decided_now[a, jj] = d
                decided[j] += d
        for a in range(ages - 1, 0, -1):  # age by one month (the oldest was all decided)
            for jj in range(m):
                j = active[jj]
                pending[r, a, j] = pending[r, a - 1, j] - decided_now[a - 1, jj]
        for jj in range(m):
            pending[r, 0, active[jj]] = 0.0
        for a in range(ages):
            for jj in range(m):
                j = active[jj]
                in_review[r, j] += pending[r, a, j]
        for j in range(n):
            i = index[j]
            share = approval[ap_r, i]
            if scaled:
                share = min(1.0, share * approval_scale[r])
            yes = decided[j] * share
            approved[r, j] = yes
            denied[r, j] = decided[j] - yes
            licensed[r, j] = held[j] + yes if required[rq_r, i] else 0.0
        for a in range(ages):  # decisions by age, over the active channels only
            total = 0.0
            for jj in range(m):
                total += decided_now[a, jj]
            by_age[r, a] = total
    return applications, approved, denied, by_age, in_review


@_jit
def _licence_share(licensed, index, requested, required, leakage, extra_leakage, extra,
                   allowed):  # pragma: no cover
    runs = requested.shape[0]
    out = np.empty((runs, allowed.shape[1]))
    for r in range(runs):
        al_r = r if allowed.shape[0] > 1 else 0
        rq_r = r if required.shape[0] > 1 else 0
        lk_r = r if leakage.shape[0] > 1 else 0
        out[r] = allowed[al_r]
        for j in range(index.shape[0]):
            i = index[j]
            if not required[rq_r, i]:
                continue  # share 1: allowed * 1.0
            leak = leakage[lk_r, i]
            if extra:
                leak = min(1.0, leak + extra_leakage[r])
            flow = requested[r, i]
            held = licensed[r, j]
            ship = min(held, flow) + leak * max(flow - held, 0.0)
            if flow > _EPS:
                share = ship / flow
            else:
                share = 1.0 if held > _EPS else leak
            out[r, i] = allowed[al_r, i] * min(max(share, 0.0), 1.0)
    return out


class _LicenceCore:
    """The licence queue's month (``LicenceQueue.step`` without a review capacity) and its
    allowed share times the route's allowed share, compiled; ``LicenceQueue.core``."""

    @staticmethod
    def month(licensed, pending, backlog, index, requested, required, approval,
              approval_scale, scaled, validity, hazards):
        return _licence_month(licensed, pending, backlog, index,
                              np.ascontiguousarray(requested, dtype=float),
                              np.ascontiguousarray(required, dtype=np.bool_),
                              np.ascontiguousarray(approval, dtype=float),
                              np.ascontiguousarray(approval_scale, dtype=float), scaled,
                              np.ascontiguousarray(validity, dtype=float),
                              np.ascontiguousarray(hazards, dtype=float))

    @staticmethod
    def share(licensed, index, requested, required, leakage, extra_leakage, extra, allowed):
        return _licence_share(licensed, index, np.ascontiguousarray(requested, dtype=float),
                              np.ascontiguousarray(required, dtype=np.bool_),
                              np.ascontiguousarray(leakage, dtype=float),
                              np.ascontiguousarray(extra_leakage, dtype=float), extra,
                              np.ascontiguousarray(allowed, dtype=float))


LICENCE_CORE = _LicenceCore()


@_jit
def _switch_preferences(preference, requested, received, spare, allowed, rate):  # pragma: no cover
    runs, n, _ = preference.shape
    out = np.empty_like(preference)
    failed = np.zeros((n, n))
    take = np.zeros((n, n))
    target = np.zeros((n, n))
    total = np.zeros(n)
    moved = np.zeros(n)
    for r in range(runs):
        a = allowed[r] if allowed.shape[0] > 1 else allowed[0]
        total[:] = 0.0
        for x in range(n):
            for c in range(n):
                q = requested[r, x, c]
                f = 1.0 - min(1.0, received[r, x, c] / q) if q > _MASS_EPS else 0.0
                f = max(f, 1.0 - a[x, c])
                failed[x, c] = f
                take[x, c] = rate[r] * preference[r, x, c] * f
                aim = max(spare[r, x], 0.0) * a[x, c] if x != c else 0.0
                aim = aim if f < 1.0 - 1e-9 else 0.0
                target[x, c] = aim
                total[c] += aim
        moved[:] = 0.0
        for x in range(n):
            for c in range(n):
                if not total[c] > _MASS_EPS:
                    take[x, c] = 0.0
                moved[c] += take[x, c]
        for x in range(n):
            for c in range(n):
                gain = (target[x, c] / total[c] if total[c] > _MASS_EPS else 0.0) * moved[c]
                out[r, x, c] = preference[r, x, c] - take[x, c] + gain
    return out


def switch_preferences(preference: np.ndarray, requested: np.ndarray, received: np.ndarray,
                       spare: np.ndarray, allowed: np.ndarray, rate) -> np.ndarray:
    """:func:`rareflow.sim.market.switch_preferences`, compiled; ``rate`` a float or [R|1,...]
    array of per-run rates."""
    runs = preference.shape[0]
    allowed = np.asarray(allowed, dtype=float)
    allowed = allowed[None] if allowed.ndim == 2 else allowed
    if allowed.shape[0] > 1 and allowed.strides[0] == 0:
        allowed = allowed[:1]
    rate = np.broadcast_to(np.asarray(rate, dtype=float).reshape(-1), (runs,))
    return _switch_preferences(np.ascontiguousarray(preference, dtype=float),
                               np.ascontiguousarray(requested, dtype=float),
                               np.ascontiguousarray(received, dtype=float),
                               np.ascontiguousarray(spare, dtype=float),
                               np.ascontiguousarray(allowed), np.ascontiguousarray(rate))


@_jit
def _ship_concentrate(offered, shares):  # pragma: no cover
    runs, n, e_n = offered.shape
    out = np.zeros((runs, n, e_n))
    for r in range(runs):
        for x in range(n):
            for c in range(n):
                s = shares[r, x, c]
                for e in range(e_n):
                    out[r, c, e] += offered[r, x, e] * s
    return out


def ship_concentrate(offered: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """``np.einsum("rxe,rxc->rce", offered, shares)``: concentrate arriving in each country
    [R, C, E] from what exporters offer [R, X, E] and their destination shares [R, X, C]."""
    return _ship_concentrate(np.ascontiguousarray(offered, dtype=float),
                             np.ascontiguousarray(shares, dtype=float))


@_jit
def _shift_exporter_shares(shares, base, allowed, spare, rate):  # pragma: no cover
    # row sums over destinations are numpy's pairwise sums (the rows are contiguous there)
    runs, n, _ = shares.shape
    out = np.empty_like(shares)
    row = np.zeros(n)
    open_row = np.zeros(n)
    spare_row = np.zeros(n)
    foreign_base = np.zeros(n)
    for x in range(n):
        for c in range(n):
            row[c] = base[x, c] * (1.0 if x != c else 0.0)
        foreign_base[x] = _pairwise_sum(row, n)
    for r in range(runs):
        a = allowed[r] if allowed.shape[0] > 1 else allowed[0]
        for x in range(n):
            for c in range(n):
                open_row[c] = base[x, c] * a[x, c]
                row[c] = open_row[c] * (1.0 if x != c else 0.0)
                spare_row[c] = spare[r, c] * a[x, c] * (1.0 if x != c else 0.0)
            foreign_open = _pairwise_sum(row, n)
            open_total = _pairwise_sum(open_row, n)
            spare_total = _pairwise_sum(spare_row, n)
            stranded = foreign_base[x] > _EPS and foreign_open <= _EPS
            for c in range(n):
                if stranded:
                    if spare_total > _EPS:
                        target = spare_row[c] / spare_total
                    else:
                        target = 1.0 if x == c else 0.0
                else:
                    target = open_row[c] / open_total if abs(open_total) > _EPS else 0.0
                out[r, x, c] = shares[r, x, c] + rate[r] * (target - shares[r, x, c])
    return out


def shift_exporter_shares(shares: np.ndarray, base: np.ndarray, allowed: np.ndarray,
                          spare: np.ndarray, rate) -> np.ndarray:
    """``kernel._shift_exporter_shares``, compiled; ``rate`` a float or per-run array."""
    runs = shares.shape[0]
    allowed = np.asarray(allowed, dtype=float)
    allowed = allowed[None] if allowed.ndim == 2 else allowed
    if allowed.shape[0] > 1 and allowed.strides[0] == 0:
        allowed = allowed[:1]
    rate = np.broadcast_to(np.asarray(rate, dtype=float).reshape(-1), (runs,))
    return _shift_exporter_shares(np.ascontiguousarray(shares, dtype=float),
                                  np.ascontiguousarray(base, dtype=float),
                                  np.ascontiguousarray(allowed),
                                  np.ascontiguousarray(spare, dtype=float),
                                  np.ascontiguousarray(rate))


@_jit
def _scarcest_share(received, need, uses):  # pragma: no cover
    """One maker's and grade's ``kernel._grade_ratio``: received over needed of the scarcest
    element the grade uses (``uses`` [E]), in [0, 1]; 1 where it uses no element needed."""
    low = np.inf
    for e in range(need.shape[0]):
        if uses[e]:
            d = need[e]
            low = min(low, received[e] / d if d > _EPS else 1.0)
    return 1.0 if np.isinf(low) else min(max(low, 0.0), 1.0)


@_jit
def _grade_ratio(received, need, uses):  # pragma: no cover
    runs, n, e_n = need.shape
    g_n = uses.shape[0]
    out = np.empty((runs, n, g_n))
    for r in range(runs):
        for x in range(n):
            for g in range(g_n):
                out[r, x, g] = _scarcest_share(received[r, x], need[r, x], uses[g])
    return out


def grade_ratio(received: np.ndarray, need: np.ndarray, uses: np.ndarray) -> np.ndarray:
    """``kernel._grade_ratio``, compiled."""
    return _grade_ratio(np.ascontiguousarray(received, dtype=float),
                        np.ascontiguousarray(need, dtype=float),
                        np.ascontiguousarray(uses, dtype=np.bool_))
