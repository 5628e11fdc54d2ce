"""Allocation of a product among buyers when sellers are in several countries.

Pure array functions, vectorised over a leading ``run`` axis. Axes are named in the docstrings:
``R`` runs, ``X`` exporting country, ``C`` importing country (the same country list as ``X``),
``K`` product (a grade of magnet, or an element of refined oxide).

The rules, in words (docs/model.md gives the equations):

1. Buyers first look to their own country's supply; only what it cannot cover is requested from
   abroad, split over foreign suppliers by the buyer's *import preferences* (baseline trade shares,
   adapted by switching) times what export controls allow.
2. A supplier short of supply either serves its own buyers first (``home_first``) or shares pro
   rata between home and foreign requests.
3. A second round offers what suppliers have left to what buyers still lack.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12  # preferences and allowed shares [-]: a share below this is none

#: Tonnes below which a quantity of material counts as none in the allocation and in
#: switching [t] (1 g). Stocks and flows of thousands of tonnes carry rounding residues of about
#: 1e-12 to 1e-10 t after flows are subtracted from them; a threshold at that level (it was
#: 1e-12 t) let such residues decide whether a seller has spare supply or a buyer still lacks
#: something, and so changed later months by hundreds of tonnes when a sum was merely taken in
#: another order (tests/test_robustness.py). One gram is far above that noise and far below any
#: flow the model reports.
MASS_EPS_T = 1e-6


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` of tonnes, 0 where ``den`` is below :data:`MASS_EPS_T`."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape),
                     where=den > MASS_EPS_T)


def _sum_buyers(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=2)`` of an [R,X,C,K] array (einsum is several times faster here)."""
    return np.einsum("rxck->rxk", a)


def _nonzero_den(den: np.ndarray) -> np.ndarray:
    """``den`` (preference weights [-]) with its values at or below ``_EPS`` replaced by
    infinity: ``x / _nonzero_den(d)`` is 0 there for finite ``x`` (x / inf is zero), without a
    masked division over the large array.
    """
    return np.where(den > _EPS, den, np.inf)


def _foreign_requests(
    unmet: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Split each buyer's unmet need over suppliers.

    unmet [R,C,K]; weights [R,X,C,K] (zero on the diagonal) -> requests [R,X,C,K] (written to
    ``out`` if given, which may be ``weights``).
    """
    share = np.divide(weights, _nonzero_den(weights.sum(axis=1, keepdims=True)), out=out)
    share *= unmet[:, None, :, :]
    return share


def _serve(
    supply: np.ndarray, home: np.ndarray, foreign: np.ndarray, home_first: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fill home [R,X,K] and foreign [R,X,C,K] requests from supply [R,X,K].

    Returns (home_filled [R,X,K], foreign_filled [R,X,C,K]). ``foreign`` may be overwritten.
    """
    foreign_total = _sum_buyers(foreign)
    # pro-rata: one ratio for everyone
    asked = home + foreign_total
    ratio = np.minimum(1.0, _safe_div(supply, asked))
    ratio = np.where(asked > MASS_EPS_T, ratio, 0.0)
    # home first: home takes what it can, foreign shares the rest
    home_hf = np.minimum(home, supply)
    left = supply - home_hf
    ratio_f = np.minimum(1.0, _safe_div(left, foreign_total))
    hf = home_first[None, :, None]
    # choose each seller's ratio on the small [R,X,K] arrays, then scale the requests once
    foreign *= np.where(hf, ratio_f, ratio)[:, :, None, :]
    return np.where(hf, home_hf, home * ratio), foreign


def _run_invariant(allowed: np.ndarray) -> np.ndarray | None:
    """The [X,C,K] array behind ``allowed`` when it is the same for every run, else None."""
    if allowed.ndim == 3:
        return allowed
    if allowed.strides[0] == 0 or allowed.shape[0] == 1:
        return allowed[0]
    return None


def allocate(
    supply: np.ndarray,
    need: np.ndarray,
    allowed: np.ndarray,
    preference: np.ndarray,
    home_first: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Flows from sellers to buyers.

    Parameters
    ----------
    supply : ndarray [R, X, K]
        What each country can deliver this month [t].
    need : ndarray [R, C, K]
        What buyers in each country want this month [t].
    allowed : ndarray [X, C, K] or [R, X, C, K]
        Share of a flow that export controls let through [-]; the diagonal (home trade) is 1.
        A closed route (0) sends its buyers' requests to their other suppliers; on a partly open
        route the buyer asks as usual and only the allowed share may ship (the rest is held back).
    preference : ndarray [R, X, C]
        Buyer c's weight on foreign supplier x [-] (diagonal ignored).
    home_first : ndarray [X] of bool
        Sellers that serve their own country's buyers first when short.

    Returns
    -------
    flow : ndarray [R, X, C, K]
        Tonnes shipped from x to c, home deliveries on the diagonal. Never exceeds supply or need.
    requested : ndarray [R, X, C, K]
        Foreign requests placed (both rounds), before export controls, for the switching rule.

    Notes
    -----
    Written for speed over the large [R, X, C, K] arrays (few passes, in-place updates, masks
    built once per month where ``allowed`` is the same for every run); it computes the same
    numbers, operation for operation, as the plain formulation in docs/model.md.
    """
    r, n, k = supply.shape
    eye = np.eye(n, dtype=bool)
    allowed = np.asarray(allowed)
    base = _run_invariant(allowed)
    if base is not None:  # masks once for all runs
        open_route = (base > _EPS)[None]
        fully_open = (base >= 1.0 - 1e-9)[None]
        all_open = bool(fully_open.all())
        allowed = base[None]
    else:
        open_route = allowed > _EPS
        fully_open = allowed >= 1.0 - 1e-9
        all_open = False
    pref = preference * ~eye[None]  # the diagonal is never a foreign supplier
    weights = np.repeat(pref[..., None], k, axis=3)
    weights *= open_route
    # Round 1: foreign requests only for what home supply cannot cover at all; only the allowed
    # share of each request may ship.
    unmet_if_home = np.maximum(need - supply, 0.0)
    asked = _foreign_requests(unmet_if_home, weights)
    home_fill, flow = _serve(supply, need, asked.copy() if all_open else asked * allowed,
                             home_first)
    remaining_supply = supply - home_fill - _sum_buyers(flow)
    remaining_need = need - home_fill - flow.sum(axis=1)
    # Round 2: what buyers still lack, from their usual foreign suppliers that have supply left
    # on fully open routes. New suppliers are reached only through switch_preferences.
    spare = np.maximum(remaining_supply, 0.0)
    lack = np.maximum(remaining_need, 0.0)
    usable = (spare[:, :, None, :] > MASS_EPS_T) & fully_open
    weights *= usable
    asked2 = _foreign_requests(lack, weights, out=weights)
    ratio = np.minimum(1.0, _safe_div(spare, _sum_buyers(asked2)))
    flow += asked2 * ratio[:, :, None, :]
    idx = np.arange(n)
    flow[:, idx, idx, :] += home_fill  # no foreign flow on the diagonal
    np.maximum(flow, 0.0, out=flow)
    asked += asked2
    return flow, asked


def switch_preferences(
    preference: np.ndarray,
    requested: np.ndarray,
    received: np.ndarray,
    spare: np.ndarray,
    allowed: np.ndarray,
    rate: float,
) -> np.ndarray:
    """Buyers move part of the preference they placed on suppliers that failed them.

    Parameters
    ----------
    preference : ndarray [R, X, C]
        Current import preferences; for each importer they sum to one over foreign suppliers.
    requested, received : ndarray [R, X, C]
        Foreign requests and deliveries this month, summed over products [t] (``received``
        on the diagonal is not read: nothing is requested from home).
    spare : ndarray [R, X]
        Supply each country had left after allocation [t].
    allowed : ndarray [R, X, C]
        Whether any product may flow from x to c (0..1).
    rate : float
        Share of the failed preference moved each month [-] (scenario ``switching_rate``).

    Notes
    -----
    With ``u = 1 - received / requested`` the failed share of supplier x (1 where export
    controls close the route),
    ``moved[c] = rate * sum_x p[x,c] u[x,c]`` is taken away proportionally and given to the other
    suppliers in proportion to ``spare[x'] * allowed[x', c]``. Preferences keep summing to one;
    nothing moves when no supplier has spare supply, and nothing changes in a month where every
    request is met (so a quiet baseline stays put).
    """
    n = preference.shape[1]
    eye = np.eye(n, dtype=bool)
    failed = np.where(requested > MASS_EPS_T,
                      1.0 - np.minimum(1.0, _safe_div(received, requested)), 0.0)
    failed = np.maximum(failed, 1.0 - allowed)  # a closed supplier fails its buyers entirely
    take = rate * preference * failed
    target = np.maximum(spare, 0.0)[:, :, None] * allowed * ~eye[None]
    target = target * (failed < 1.0 - 1e-9)  # do not move toward a supplier that failed entirely
    total = target.sum(axis=1, keepdims=True)
    has_target = total[:, 0, :] > MASS_EPS_T
    take = np.where(has_target[:, None, :], take, 0.0)
    moved = take.sum(axis=1)
    gain = _safe_div(target, total) * moved[:, None, :]
    return preference - take + gain


def flow_totals(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Totals of allocated flows [R, X, C, K]: by seller [R, X, K] and by buyer [R, C, K].

    einsum sums these non-contiguous axes in ascending order; the compiled allocation
    (:func:`rareflow.sim.compiled.allocate_with_totals`) sums in the same order, so both give
    the same numbers.
    """
    return np.einsum("rxck->rxk", flow), np.einsum("rxck->rck", flow)


def route_totals(asked: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Requests and flows [R, X, C, K] summed over products, per route [R, X, C].

    Plain ``sum`` over the contiguous product axis (numpy's pairwise summation), which the
    compiled allocation reproduces; einsum's unrolled sums over that axis depend on the
    processor's vector width.
    """
    return asked.sum(axis=3), flow.sum(axis=3)
