"""Scenario discovery with PRIM (Patient Rule Induction Method): which parameter ranges lead to
an outcome of interest.

Peeling, as published: starting from the box that holds all runs, repeatedly remove the slice
(a share ``alpha`` of the runs in the box, from the low or the high side of one parameter) whose
removal raises the share of runs of interest (the box's *density*) the most, until the box
holds fewer than ``min_support`` of all runs. The box reported is the densest box on that
peeling trajectory with at least ``min_support``, with its *coverage* (share of all runs of
interest it holds) and density.

References
----------
Friedman, J.H., Fisher, N.I. (1999), "Bump hunting in high-dimensional data", Statistics and
Computing 9, 123-143. Bryant, B.P., Lempert, R.J. (2010), "Thinking inside the box",
Technological Forecasting and Social Change 77, 34-49 (coverage and density).
"""

from __future__ import annotations

import operator
import re

import numpy as np

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


def parse_where(text: str) -> tuple[str, str, float]:
    """'units_not_built_total > 1e6' -> (name, op, value); ValueError naming the expected form."""
    match = _WHERE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not of the form 'NAME > NUMBER' (operators > >= < <=)")
    return match.group(1), match.group(2), float(match.group(3))


def condition(values: np.ndarray, op: str, threshold: float) -> np.ndarray:
    return _OPS[op](np.nan_to_num(values, nan=-np.inf), threshold)


def prim(x: np.ndarray, y: np.ndarray, alpha: float = 0.05, min_support: float = 0.05) -> dict:
    """PRIM peeling. ``x`` [n, d] parameter values, ``y`` [n] bool (run of interest).

    Returns ``{"low": [d], "high": [d], "coverage", "density", "support", "trajectory"}``.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=bool)
    n, d = x.shape
    inside = np.ones(n, dtype=bool)
    low, high = x.min(axis=0).copy(), x.max(axis=0).copy()
    total_interest = max(int(y.sum()), 1)
    trajectory = [(low.copy(), high.copy(), float(y.mean()), 1.0, float(y.sum() / total_interest))]
    while inside.sum() > min_support * n:
        best = None
        for j in range(d):
            xs = x[inside, j]
            for side in ("low", "high"):
                if side == "low":
                    cut = np.quantile(xs, alpha)
                    keep = inside & (x[:, j] > cut) if np.any(xs > cut) else None
                else:
                    cut = np.quantile(xs, 1 - alpha)
                    keep = inside & (x[:, j] < cut) if np.any(xs < cut) else None
                if keep is None or keep.sum() < min_support * n or keep.sum() == inside.sum():
                    continue
                density = y[keep].mean()
                if best is None or density > best[0]:
                    best = (density, j, side, cut, keep)
        if best is None:
            break
        density, j, side, cut, keep = best
        inside = keep
        if side == "low":
            low[j] = x[inside, j].min()
        else:
            high[j] = x[inside, j].max()
        trajectory.append((low.copy(), high.copy(), float(density), float(inside.mean()),
                           float(y[inside].sum() / total_interest)))
    densest = max(trajectory, key=lambda t: (t[2], t[3]))
    return {"low": densest[0].tolist(), "high": densest[1].tolist(),
            "density": densest[2], "support": densest[3], "coverage": densest[4],
            "trajectory": [{"density": t[2], "support": t[3], "coverage": t[4]}
                           for t in trajectory]}
