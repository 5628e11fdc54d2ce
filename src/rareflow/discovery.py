"""Scenario discovery with PRIM (Patient Rule Induction Method): which parameter ranges lead to
an outcome of interest, with the EMA Workbench's implementation.

``ema_workbench.analysis.prim.Prim`` peels (removes the slice of a share ``peel_alpha`` of the
runs in the box, from the low or high side of one parameter, whose removal most improves the
LENIENT1 objective, the gain in density per run removed) while an improvement remains and the
box holds at least ``mass_min`` of the runs, then pastes (widens the box back where that raises
the density). Every box on this peeling trajectory trades *coverage* (the share of all runs of
interest inside the box) against *density* (the share of runs inside that are of interest).
The box reported is the one with the highest coverage among those with a density of at least
``threshold`` (the EMA Workbench's default 0.8, its test for a useful box), the densest of them
on a tie; when none reaches it, the densest box. A parameter is *restricted* where the box is
narrower than its sampled range.

References
----------
Friedman, J.H., Fisher, N.I. (1999), "Bump hunting in high-dimensional data", Statistics and
Computing 9, 123-143. Bryant, B.P., Lempert, R.J. (2010), "Thinking inside the box",
Technological Forecasting and Social Change 77, 34-49 (coverage and density). Kwakkel, J.H.
(2017), "The Exploratory Modeling Workbench", Environmental Modelling & Software 96, 239-250.
"""

from __future__ import annotations

import logging
import operator
import re
import warnings

import numpy as np
import pandas as pd

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(>=|<=|>|<)\s*(\S+)\s*$")


def parse_where(text: str) -> tuple[str, str, float]:
    """'units_not_built_total > 1e6' -> (name, op, value); ValueError naming the expected form."""
    match = _WHERE.match(text)
    number = None
    if match:
        try:
            number = float(match.group(3))
        except ValueError:
            number = None
    if number is None or not np.isfinite(number):
        raise ValueError(f"{text!r} is not of the form 'NAME > NUMBER' (operators > >= < <=; "
                         "a finite number)")
    return match.group(1), match.group(2), number


def condition(values: np.ndarray, op: str, threshold: float) -> np.ndarray:
    """Runs whose ``values`` meet ``op threshold`` (values without NaN: see
    :func:`rareflow.result.outcome_values`)."""
    return _OPS[op](np.asarray(values, dtype=float), threshold)


def prim(x: np.ndarray, y: np.ndarray, labels: list[str] | None = None,
         threshold: float = 0.8, peel_alpha: float = 0.05, paste_alpha: float = 0.05,
         mass_min: float = 0.05) -> dict:
    """PRIM with the EMA Workbench. ``x`` [n, d] parameter values, ``y`` [n] bool (runs of
    interest); at least one run must be of interest and one not.

    Returns ``{"low": [d], "high": [d], "restricted": [d] bool, "coverage", "density",
    "support", "index"}`` for the chosen box (``index`` on the trajectory) and
    ``"trajectory"``: coverage, density, support and number of restricted parameters of every
    box, from the whole sample to the smallest.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("PRIM needs runs of interest and runs that are not")
    labels = labels or [f"x{k}" for k in range(x.shape[1])]
    frame = pd.DataFrame(x, columns=labels)
    ema_logger = logging.getLogger("EMA")
    level = ema_logger.level
    ema_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optional EMA extras (ipyparallel) missing
            from ema_workbench.analysis import prim as ema_prim

            # EMA swaps a final box below its threshold for the whole sample; the choice among
            # the trajectory's boxes is made below, so its threshold is only what marks a run
            # of interest here (y = 1 >= 1e-9)
            box = ema_prim.Prim(frame, y.astype(int), threshold=1e-9,
                                peel_alpha=peel_alpha, paste_alpha=paste_alpha,
                                mass_min=mass_min).find_box()
    finally:
        ema_logger.setLevel(level)
    trajectory = box.peeling_trajectory
    good = trajectory[trajectory["density"] >= threshold]
    if len(good):  # highest coverage, then highest density
        index = int(good.sort_values(["coverage", "density"], ascending=False).index[0])
    else:
        index = int(trajectory["density"].idxmax())
    limits = box.box_lims[index]
    full = box.box_lims[0]
    restricted = [bool(limits[c].iloc[0] > full[c].iloc[0] or limits[c].iloc[1] < full[c].iloc[1])
                  for c in labels]
    row = trajectory.loc[index]
    return {"low": [float(limits[c].iloc[0]) for c in labels],
            "high": [float(limits[c].iloc[1]) for c in labels],
            "restricted": restricted, "index": index,
            "coverage": float(row["coverage"]), "density": float(row["density"]),
            "support": float(row["mass"]),
            "trajectory": [{"coverage": float(r["coverage"]), "density": float(r["density"]),
                            "support": float(r["mass"]), "restricted": int(r["res_dim"])}
                           for _, r in trajectory.iterrows()]}
