"""Ensembles: uncertain parameters, their sampling, and batched evaluation along the run axis.

The model (the kernel), the uncertainties (``Uncertainty`` below), the levers (scenario
settings and rules) and the outcomes (summary series and headline) are kept apart, as the EMA
Workbench does. Parameters are sampled once for all runs from one seed and then cut into
batches, so a run's result does not depend on the batch size or on which worker ran it.

Sampling uses ``scipy.stats.qmc`` (Latin hypercube, scrambled Sobol) or plain Monte Carlo; a
rank correlation between parameters is imposed with a Gaussian copula; each uniform margin is
turned into its distribution with ``scipy.stats`` quantile functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import stats
from scipy.stats import qmc

from rareflow.sim.network import RUN_PARAMETER_BOUNDS, RUN_PARAMETERS, RunParameters

Distribution = Literal["uniform", "triangular", "normal", "lognormal", "beta", "choice"]
#: The numbers a distribution may be given (each distribution uses some of them).
_NUMBERS = ("low", "high", "mode", "mean", "sd", "a", "b")


class Uncertain(BaseModel):
    """One uncertain parameter and its distribution."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="A run parameter of the kernel, a dataset cell "
                        "(dataset:TABLE.COLUMN[KEY=VALUE]) or a scenario field "
                        "(scenario:PATH); see rareflow.targets.")
    how: Literal["set", "scale"] = Field(
        default="set", description="set: the sampled value replaces a dataset cell or scenario "
        "field; scale: it multiplies it (run parameters are always set).")
    name: str | None = None
    dist: Distribution
    low: float | None = None
    high: float | None = None
    mode: float | None = None
    mean: float | None = None
    sd: float | None = Field(default=None, gt=0)
    a: float | None = Field(default=None, gt=0)
    b: float | None = Field(default=None, gt=0)
    values: list[float] | None = None
    weights: list[float] | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        from rareflow.targets import parse

        if value not in RUN_PARAMETERS and parse(value) is None:
            raise ValueError(f"target {value!r} is neither a run parameter "
                             f"({', '.join(RUN_PARAMETERS)}) nor dataset:TABLE.COLUMN[KEY=VALUE] "
                             "nor scenario:PATH")
        return value

    @model_validator(mode="after")
    def _arguments(self) -> Uncertain:
        need = {"uniform": ("low", "high"), "triangular": ("low", "mode", "high"),
                "normal": ("mean", "sd"), "lognormal": ("mean", "sd"),
                "beta": ("a", "b", "low", "high"), "choice": ("values",)}[self.dist]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"a {self.dist} distribution needs {', '.join(missing)}")
        takes = need + (("weights",) if self.dist == "choice" else ())
        for key in (*_NUMBERS, "values", "weights"):
            if key not in takes and getattr(self, key) is not None:
                hint = (" (it is not truncated: bounds need a uniform, triangular or beta "
                        "distribution)" if key in ("low", "high") else "")
                raise ValueError(f"{key} (value {getattr(self, key)}): a {self.dist} "
                                 f"distribution takes only {', '.join(takes)}{hint}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.dist == "triangular" and not (self.low <= self.mode <= self.high):
            raise ValueError(f"mode {self.mode} is outside [{self.low}, {self.high}]")
        if self.weights is not None and (self.values is None
                                         or len(self.weights) != len(self.values)):
            raise ValueError(f"weights ({len(self.weights)} given): need one weight per value "
                             f"({len(self.values or [])} values)")
        if self.dist == "choice" and not self.values:
            raise ValueError("values (value []): a choice needs at least one value")
        if self.weights is not None and (
                not all(math.isfinite(w) and w >= 0 for w in self.weights)
                or sum(self.weights) <= 0):
            raise ValueError(f"weights (value {self.weights}): must be finite, >= 0 and have "
                             "a positive sum")
        numbers = {k: getattr(self, k) for k in _NUMBERS}
        numbers.update({f"values[{i}]": v for i, v in enumerate(self.values or [])})
        for key, number in numbers.items():
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{key} (value {number}): must be a finite number")
        if self.dist != "choice":
            with np.errstate(over="ignore"):
                try:
                    tails = self.quantile(np.array([0.0, 1.0]))
                except OverflowError:
                    tails = np.array([np.inf])
            if not np.isfinite(tails).all():
                given = ", ".join(f"{k} {v:g}" for k, v in numbers.items() if v is not None)
                raise ValueError(f"a {self.dist} distribution ({given}): its draws overflow "
                                 "(are not finite numbers); for lognormal, mean and sd are "
                                 "those of the value's logarithm")
        return self

    @property
    def label(self) -> str:
        return self.name or self.target

    def median(self) -> float:
        """The value half the draws fall below: the scenario as written, for a single run (a
        ``choice`` takes the lower weighted median of its values in order)."""
        if self.dist != "choice":
            return float(self.quantile(np.array([0.5]))[0])
        order = np.argsort(self.values, kind="stable")
        weights = np.array(self.weights or [1.0] * len(self.values), dtype=float)[order]
        cumulative = np.cumsum(weights) / weights.sum()
        return float(np.array(self.values, dtype=float)[order][
            np.searchsorted(cumulative, 0.5 - 1e-12)])

    def quantile(self, u: np.ndarray) -> np.ndarray:
        """Map uniform draws in (0, 1) to this distribution."""
        u = np.clip(u, 1e-12, 1 - 1e-12)
        if self.dist in ("uniform", "triangular", "beta") and self.high == self.low:
            return np.full(np.shape(u), float(self.low))  # a fixed value (scipy gives NaN)
        if self.dist == "uniform":
            return stats.uniform(self.low, self.high - self.low).ppf(u)
        if self.dist == "triangular":
            width = self.high - self.low
            c = (self.mode - self.low) / width if width > 0 else 0.5
            return stats.triang(c, loc=self.low, scale=width).ppf(u)
        if self.dist == "normal":
            return stats.norm(self.mean, self.sd).ppf(u)
        if self.dist == "lognormal":  # mean and sd of the variable's logarithm
            return stats.lognorm(self.sd, scale=math.exp(self.mean)).ppf(u)
        if self.dist == "beta":
            return stats.beta(self.a, self.b, loc=self.low, scale=self.high - self.low).ppf(u)
        # values in ascending order (with their weights), so that a higher draw never gives a
        # lower value: rank correlations imposed on the draws then hold for the values too
        order = np.argsort(self.values, kind="stable")
        values = np.array(self.values, dtype=float)[order]
        weights = np.array(self.weights or [1.0] * len(self.values), dtype=float)[order]
        edges = np.cumsum(weights / weights.sum())
        return values[np.searchsorted(edges, u, side="right").clip(0, len(values) - 1)]


class Uncertainties(BaseModel):
    """The ``uncertain:`` block of a scenario."""

    model_config = ConfigDict(extra="forbid")

    sampling: Literal["lhs", "sobol", "mc"] = "lhs"
    parameters: list[Uncertain] = Field(default_factory=list)
    correlation: list[tuple[str, str, float]] = Field(
        default_factory=list, description="(label, label, rank correlation) pairs.")
    thresholds: dict[str, list[float]] = Field(
        default_factory=dict, description="Headline -> thresholds for exceedance probabilities.")

    @model_validator(mode="after")
    def _labels(self) -> Uncertainties:
        labels = [p.label for p in self.parameters]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"parameters (labels {', '.join(repeated)}): labels must be unique "
                             "(give 'name' to repeats)")
        for i, (a, b, rho) in enumerate(self.correlation):
            for label in (a, b):
                if label not in labels:
                    raise ValueError(f"correlation[{i}] (value {label!r}): not a parameter "
                                     f"label; labels: {', '.join(labels)}")
            if not -1 < rho < 1:
                raise ValueError(f"correlation[{i}] ({a}, {b}, value {rho}): must lie in (-1, 1)")
            if a == b:
                raise ValueError(f"correlation[{i}] ({a}, {b}): a parameter with itself")
        pairs = [frozenset((a, b)) for a, b, _ in self.correlation]
        for i, pair in enumerate(pairs):
            if pair in pairs[:i]:
                raise ValueError(f"correlation[{i}] ({', '.join(sorted(pair))}): the pair is "
                                 f"given twice (correlation[{pairs.index(pair)}])")
        if self.correlation:
            try:
                np.linalg.cholesky(_copula_matrix(self))
            except np.linalg.LinAlgError:
                raise ValueError("correlation (values "
                                 f"{[list(c) for c in self.correlation]}): these rank "
                                 "correlations cannot hold together (the matrix is not positive "
                                 "definite)") from None
        return self


def design(uncertainties: Uncertainties, runs: int, seed: int) -> np.ndarray:
    """Every run's parameter values [runs, d]: one run is the scenario as written (each
    parameter at its median); more runs are sampled (:func:`sample`)."""
    if runs == 1:
        return np.array([[p.median() for p in uncertainties.parameters]]).reshape(1, -1)
    return sample(uncertainties, runs, seed)[1]


def sample(uncertainties: Uncertainties, runs: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Parameter values [runs, d] for all runs, reproducible from ``seed``."""
    params = uncertainties.parameters
    d = len(params)
    if d == 0:
        return [], np.zeros((runs, 0))
    if uncertainties.sampling == "sobol" and runs & (runs - 1):
        raise ValueError(f"runs (value {runs}): uncertain.sampling 'sobol' needs a power of two "
                         f"(the sequence is balanced only then), e.g. {1 << runs.bit_length()}; "
                         "or use sampling lhs")
    if uncertainties.sampling == "lhs":
        u = qmc.LatinHypercube(d=d, seed=seed).random(runs)
    elif uncertainties.sampling == "sobol":
        u = qmc.Sobol(d=d, scramble=True, seed=seed).random(runs)
    else:
        u = np.random.default_rng(seed).random((runs, d))
    if uncertainties.correlation:
        # Gaussian copula, imposed by reordering (Iman and Conover 1982): each column keeps its
        # own draws, so its Latin hypercube strata (or one-dimensional Sobol balance) survive,
        # and takes the ranks of correlated normal scores
        corr = _copula_matrix(uncertainties)
        z = stats.norm.ppf(np.clip(u, 1e-12, 1 - 1e-12)) @ np.linalg.cholesky(corr).T
        ranks = np.argsort(np.argsort(z, axis=0), axis=0)
        u = np.take_along_axis(np.sort(u, axis=0), ranks, axis=0)
    values = np.column_stack([p.quantile(u[:, k]) for k, p in enumerate(params)])
    return [p.label for p in params], values


def _copula_matrix(uncertainties: Uncertainties) -> np.ndarray:
    """Pearson correlations of the Gaussian copula from the rank (Spearman) correlations:
    r = 2 sin(pi rho / 6) (Pearson 1907; Iman and Conover 1982)."""
    labels = [p.label for p in uncertainties.parameters]
    corr = np.eye(len(labels))
    for a, b, rho in uncertainties.correlation:
        i, j = labels.index(a), labels.index(b)
        corr[i, j] = corr[j, i] = 2 * math.sin(math.pi * rho / 6)
    return corr


def run_parameters(uncertainties: Uncertainties, values: np.ndarray) -> RunParameters:
    """Turn sampled values into the kernel's per-run arrays (a target named twice multiplies).
    Dataset cells and scenario fields are not the kernel's: :mod:`rareflow.targets` applies
    them before compiling."""
    fields: dict[str, np.ndarray] = {}
    for k, p in enumerate(uncertainties.parameters):
        if p.target not in RUN_PARAMETERS:
            continue
        column = values[:, k]
        fields[p.target] = fields[p.target] * column if p.target in fields else column
    return RunParameters(**fields)


def check_run_values(uncertainties: Uncertainties, values: np.ndarray) -> list[str]:
    """Sampled (or given) values of the kernel's run parameters must be finite and inside
    their ranges (:data:`rareflow.sim.network.RUN_PARAMETER_BOUNDS`); checked before any run,
    so that the tail of a normal distribution cannot, say, make mine output negative."""
    errors = []
    combined = run_parameters(uncertainties, values)  # two parameters on one target multiply
    for target in RUN_PARAMETERS:
        column = getattr(combined, target)
        if column is None:
            continue
        ks = [k for k, p in enumerate(uncertainties.parameters) if p.target == target]
        low, high = RUN_PARAMETER_BOUNDS[target]
        bad = ~np.isfinite(column) | (column < low) | (column > high)
        if bad.any():
            run = int(np.flatnonzero(bad)[0])
            named = ", ".join(f"uncertain.parameters[{k}] ({uncertainties.parameters[k].label}"
                              f", value {values[run, k]:g})" for k in ks)
            product = f"; together {column[run]:g}" if len(ks) > 1 else ""
            errors.append(f"{named} in run {run}{product}: {target} must lie in "
                          f"[{low:g}, {high:g}] ({int(bad.sum())} of {len(column)} runs "
                          "outside)")
    return errors


def batches(runs: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, runs)) for i in range(0, runs, batch_size)]


def exceedance(headline: dict[str, np.ndarray], thresholds: dict[str, list[float]]) -> dict:
    """P(headline > threshold) over runs, for each threshold given in the scenario. A run
    without a value counts as not exceeding, except for the month of an event that never
    happened, which is later than any month (``rareflow.result.is_event_month``)."""
    from rareflow.result import is_event_month

    out = {}
    for name, levels in thresholds.items():
        if name in headline:
            never = np.inf if is_event_month(name) else -np.inf
            values = np.nan_to_num(headline[name], nan=never, posinf=np.inf)
            out[name] = {str(level): float(np.mean(values > level)) for level in levels}
    return out


def place(store: dict[str, np.ndarray], new: dict, where, runs: int) -> None:
    """Write some runs' arrays (``new``, a batch's or a group's) at ``where`` in arrays for all
    ``runs``, allocated from the first shapes seen (NaN until written), so that memory holds
    each array once, not once in pieces and again concatenated."""
    for k, v in new.items():
        v = np.asarray(v, dtype=np.float64)
        if k not in store:
            store[k] = np.full((runs, *v.shape[1:]), np.nan)
        store[k][where] = v


def evaluate(
    simulate_batch: Callable[[RunParameters, int, np.ndarray], tuple[dict, dict, object]],
    uncertainties: Uncertainties,
    runs: int,
    seed: int,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
    values: np.ndarray | None = None,
    map_batches: Callable | None = None,
) -> tuple[list[str], np.ndarray, dict, dict, list]:
    """Run all batches; return labels, parameter values, series, headline, datasets.

    ``simulate_batch(params, n, values)`` runs ``n`` runs (kernel parameters ``params``, every
    parameter's values [n, d] for the dataset cells and scenario fields among them) and returns
    (series {name: [n, T]}, headline {name: [n]}, dataset or None).
    ``map_batches(function, [(params, n, values), ...])``, if
    given, evaluates the batches (for example in worker processes) and yields their results in
    order; the runs' results do not depend on it, since parameters are sampled beforehand.
    """
    if values is None:
        labels, values = sample(uncertainties, runs, seed)
    else:
        labels = [p.label for p in uncertainties.parameters]
        values = np.asarray(values, dtype=float).reshape(runs, len(labels))
    params = run_parameters(uncertainties, values)
    series: dict[str, np.ndarray] = {}
    headline: dict[str, np.ndarray] = {}
    kept = []
    done = 0
    parts = batches(runs, batch_size)
    jobs = [(params.take(part), part.stop - part.start, values[part]) for part in parts]
    if map_batches is None:
        outcomes = (simulate_batch(*job) for job in jobs)
    else:
        outcomes = map_batches(simulate_batch, jobs)
    for part, (s, h, data) in zip(parts, outcomes, strict=True):
        place(series, s, part, runs)
        place(headline, h, part, runs)
        if data is not None:
            kept.append(data)
        done = part.stop
        if progress is not None:
            progress(done, runs)
    return labels, values, series, headline, kept
