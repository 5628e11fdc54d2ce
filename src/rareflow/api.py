"""The public Python API: compile a scenario, run the kernel, wrap the result."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

from rareflow import targets
from rareflow.compile import compile_scenario, resolve_rules
from rareflow.compile_responses import ResponseDataError, compile_responses
from rareflow.data import Dataset
from rareflow.ensemble import check_run_values, design, place
from rareflow.policy.check import ItemInfo, Shipment, check_shipment
from rareflow.policy.rules import rules_from_table
from rareflow.result import Result, to_dataset
from rareflow.scenario import Scenario, ScenarioError, check_scenario
from rareflow.sim.compiled import resolve as resolve_backend
from rareflow.sim.kernel import simulate_arrays

#: Ensembles up to this size keep their full dataset by default.
KEEP_RUNS = 256


#: Worker processes that ``workers=0`` starts at most: a batch of 64 runs x 144 months needs
#: about 0.65 GB in each (docs/performance.md).
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """One worker per CPU core this process may use (its affinity, not the machine's count),
    at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


def simulate(
    dataset: Dataset,
    scenario: Scenario,
    runs: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    detail: bool = False,
    batch_size: int = 64,
    keep: bool | None = None,
    parameter_values: np.ndarray | None = None,
    workers: int = 1,
    backend: str = "auto",
) -> Result:
    """Simulate ``scenario`` on ``dataset``.

    Parameters
    ----------
    dataset : Dataset
        From :func:`rareflow.load_dataset`.
    scenario : Scenario
        From :func:`rareflow.load_scenario`; its ``uncertain`` block says which parameters vary
        from run to run and how they are sampled.
    runs : int
        Ensemble size; the run axis leads every array. One run takes each uncertain parameter
        at its median (the scenario as written); more runs are sampled.
    seed : int
        Seed of the parameter sampling (0 or more; not used by one run); identical seeds give
        identical results, whatever the batch size.
    progress : callable(done, total), optional
        Called after each simulated month of each batch.
    detail : bool
        Also record per-route fill shares (for exposure analyses; large).
    batch_size : int
        Runs simulated together; bounds memory.
    keep : bool, optional
        Keep the full dataset (default: when ``runs <= 256``); otherwise only the summary
        series and headline numbers of every run are kept.
    parameter_values : ndarray [runs, d], optional
        Values of the scenario's uncertain parameters to use instead of sampling them (for
        designs such as Sobol/Saltelli and for distributed sweeps).
    workers : int
        Processes that simulate batches side by side (1: in this process; 0: one per core
        available to this process, at most :data:`MAX_DEFAULT_WORKERS`). Results are the same
        whatever the number; progress is then reported per batch.
    backend : {"auto", "numpy", "numba"}
        Implementation of the kernel's passes over trade channels (:mod:`rareflow.sim.compiled`
        gives the same numbers); ``"auto"`` uses Numba when it is installed.

    Raises
    ------
    ScenarioError
        If the scenario names codes the dataset lacks or dates outside its horizon.
    ValueError
        If ``backend`` is unknown, or is ``"numba"`` without Numba installed.
    """
    from rareflow.ensemble import evaluate

    backend = resolve_backend(backend)
    if workers < 0:
        raise ValueError(f"workers (value {workers}): must be 0 (one per core) or more")
    workers = workers or default_workers()

    errors = check_scenario(scenario, dataset)
    if errors:
        raise ScenarioError(scenario.name, errors)
    if batch_size < 1:
        raise ScenarioError(scenario.name, [f"batch_size (value {batch_size}): must be 1 or "
                                            "more"])
    keep = runs <= KEEP_RUNS if keep is None else keep
    per_run = None
    errors, values = run_design(dataset, scenario, runs, seed, parameter_values)
    if errors:
        raise ScenarioError(scenario.name, errors)
    parameter_values = values
    network, controls = compile_scenario(dataset, scenario)
    try:
        responses = compile_responses(dataset, scenario, network)
    except ResponseDataError as exc:
        raise ScenarioError(scenario.name, [str(exc)]) from None
    attrs = {"scenario": scenario.name, "seed": seed, "start": scenario.start,
             "end": scenario.end, "base_year": scenario.base_year,
             "description": " ".join(scenario.description.split()),
             "scenario_json": scenario.model_dump_json(),
             "sector_grade": json.dumps({
                 s: network.grades[g] for s, g in zip(network.sectors, network.sector_grade,
                                                      strict=True) if g >= 0}),
             "blocs": json.dumps(_blocs(dataset, network))}
    attrs["notes"] = json.dumps(network.notes)
    capacity = np.stack([network.mine_capacity, network.sep_capacity, network.magnet_capacity],
                        axis=1)
    n_months = len(network.months)
    total = n_months * runs
    done_before = [0]
    if targets.structural(scenario.uncertain):
        per_run = _PerRunCompile(dataset, scenario, network)
    context = (network, controls, responses, attrs, capacity, detail, keep, backend, per_run)

    def simulate_batch(params, n, values):
        tick = ((lambda done: progress(done_before[0] + done, total)) if progress else None)
        outcome = _batch(context, params, n, values, tick)
        done_before[0] += n_months * n
        return outcome

    def in_workers(_function, jobs):
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, initializer=_set_worker_context,
                                 initargs=(context,)) as pool:
            for (_, n, _), outcome in zip(jobs, pool.map(_worker_batch, jobs), strict=True):
                done_before[0] += n_months * n
                if progress:
                    progress(done_before[0], total)
                yield outcome

    if per_run is not None and workers > 1:
        # runs are compiled one by one here: smaller batches keep every worker busy (the
        # results do not depend on the batch size)
        batch_size = min(batch_size, max(1, -(-runs // (4 * workers))))
    labels, values, series, headline, kept = evaluate(
        simulate_batch, scenario.uncertain, runs, seed, batch_size, values=parameter_values,
        map_batches=in_workers if workers > 1 and runs > batch_size else None)
    _SPARE_RECORDS.pop("records", None)  # not held between calls (a server lives on)
    checks = {"mass_balance_max_rel_error": float(headline.pop("__balance").max()),
              "min_stock_t": float(headline.pop("__min_stock").min())}
    data = None
    if keep:
        import xarray as xr

        data = xr.concat(kept, dim="run", data_vars="all") if len(kept) > 1 else kept[0]
        data = data.assign_coords(run=np.arange(runs))
        for name in ("capacity", "grade_content", "mine_composition"):
            if name in data and "run" in data[name].dims:
                data[name] = data[name].isel(run=0, drop=True)
        if per_run is not None:  # runs compiled their own: describe the scenario as written
            for name in ("grade_content", "mine_composition"):
                data[name] = data[name].copy(data=getattr(network, name))
    return Result(data, series=series, headline=headline, checks=checks, attrs=attrs,
                  months=list(network.months), parameters=(labels, values),
                  thresholds=scenario.uncertain.thresholds)


def run_design(dataset: Dataset, scenario: Scenario, runs: int, seed: int,
               parameter_values: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """Every run's uncertain parameter values and the problems that stop the runs before any
    starts: (errors as 'field (value): rule' lines, values [runs, d]). One run is the scenario
    as written (each parameter's median); ensembles are sampled from ``seed``; given values
    must have the shape [runs, d]. Values are checked against the run parameters' ranges and
    the dataset cells' and scenario fields' rules (:mod:`rareflow.targets`)."""
    uncertain = scenario.uncertain
    d = len(uncertain.parameters)
    if runs < 1:
        return [f"runs (value {runs}): must be at least 1"], np.zeros((0, d))
    if seed < 0:
        return [f"seed (value {seed}): must be 0 or more"], np.zeros((0, d))
    if parameter_values is not None:
        values = np.asarray(parameter_values, dtype=float)
        if values.ndim == 1 and (d == 1 or runs == 1) and values.size == runs * d:
            values = values.reshape(runs, d)
        if values.shape != (runs, d):
            return [f"parameter_values (shape {values.shape}): needs ({runs}, {d}), runs x "
                    "uncertain parameters"], np.zeros((0, d))
    else:
        try:
            values = design(uncertain, runs, seed)
        except ValueError as exc:
            return [str(exc)], np.zeros((0, d))
    errors = check_run_values(uncertain, values)
    if not errors and targets.structural(uncertain):
        # the targets first (simulate has checked them with the scenario; other callers not)
        errors = (targets.check_targets(uncertain, scenario, dataset)
                  or targets.check_values(dataset, scenario, uncertain, values))
    return errors, values


def check_compiles(dataset: Dataset, scenario: Scenario, values: np.ndarray,
                   combinations: int = 16) -> list[str]:
    """Compile every distinct combination of the dataset cells' and scenario fields' values
    when there are at most ``combinations`` (as with ``choice`` distributions); return the
    refusals ('field (value): rule' lines). A sweep calls this before it writes anything: it
    saves batches as they finish, so a combination that only the compile refuses (a start year
    that drops a country from the model, say) would otherwise stop it half-way. Larger designs
    are not compiled here (each compile takes about a second); their refusals stop the sweep
    when their batch runs."""
    columns = [k for k, _ in targets.structural(scenario.uncertain)]
    if not columns or len(np.unique(values[:, columns], axis=0)) > combinations:
        return []
    try:
        network, _ = compile_scenario(dataset, scenario)
        _PerRunCompile(dataset, scenario, network).groups(values)
    except ScenarioError as exc:
        return list(exc.errors)
    return []


def _batch(context: tuple, params, n: int, values: np.ndarray,
           progress=None) -> tuple[dict, dict, object]:
    """Simulate one batch of ``n`` runs: (summary series, headline, dataset if kept).

    ``values`` [n, d]: every uncertain parameter's value in each run; where dataset cells or
    scenario fields vary, runs are simulated in groups that share their values, each group on
    its own compiled network. ``progress(run_months)`` counts run-months done in the batch.
    """
    network, controls, responses, attrs, capacity, detail, keep, backend, per_run = context
    if per_run is None:
        tick = None if progress is None else (lambda d, _t: progress(d * n))
        return _summarised(network, controls, responses, params, n, tick, context)
    series: dict[str, np.ndarray] = {}
    headline: dict[str, np.ndarray] = {}
    kept = []
    done = 0
    for runs_in_group, (net, ctl, resp) in per_run.groups(values):
        m = len(runs_in_group)
        tick = (None if progress is None
                else lambda d, _t, done=done, m=m: progress(done + d * m))
        s, h, data = _summarised(net, ctl, resp, params.take(runs_in_group), m, tick, context)
        place(series, s, runs_in_group, n)
        place(headline, h, runs_in_group, n)
        if keep:
            kept.append(data.assign_coords(run=runs_in_group))
        done += m * len(net.months)
    if not keep:
        return series, headline, None
    import xarray as xr

    data = (xr.concat(kept, dim="run", data_vars="all").sortby("run") if len(kept) > 1
            else kept[0])
    return series, headline, data


def _summarised(network, controls, responses, params, n: int, tick,
                context: tuple) -> tuple[dict, dict, object]:
    """Run the kernel for ``n`` runs of one compiled network; return (series, headline,
    dataset if kept)."""
    _, _, _, attrs, capacity, detail, keep, backend, _ = context
    # without kept datasets the records are written over the last batch's (popped: a thread
    # running another ensemble in this process takes its own), so every series is copied out
    raw = simulate_arrays(network, controls, runs=n, detail=detail, params=params,
                          responses=responses, progress=tick, backend=backend,
                          reuse=None if keep else _SPARE_RECORDS.pop("records", None))
    result = Result(to_dataset(network, raw, attrs, capacity, responses))
    extra = {"__balance": raw["balance_error"].max(axis=(1, 2)),
             "__min_stock": raw["min_stock"].min(axis=1)}
    series = {name: np.array(values) for name, values in result.series().items()}
    headline = {name: np.array(values) for name, values in {**result.headline(),
                                                             **extra}.items()}
    if keep:
        return series, headline, result.data
    _SPARE_RECORDS["records"] = raw
    return series, headline, None


#: The records of this process's last batch of an ensemble that keeps no datasets, which the
#: next batch writes over (``simulate_arrays(reuse=...)``): a batch of 64 runs x 144 months
#: records about 200 MB, and fresh pages cost more than writing over the old. :func:`simulate`
#: drops them when it returns; a worker process (or a sweep's Dask worker) keeps one batch's.
_SPARE_RECORDS: dict[str, dict] = {}


class _PerRunCompile:
    """The networks of runs that set dataset cells or scenario fields (:mod:`rareflow.targets`):
    one compile per distinct combination of their values, the last few kept in this process
    (so a ``choice`` distribution compiles each choice once per worker)."""

    KEEP = 8

    def __init__(self, dataset: Dataset, scenario: Scenario, nominal) -> None:
        self.dataset, self.scenario = dataset, scenario
        self.columns = [k for k, _ in targets.structural(scenario.uncertain)]
        self.coords = _network_coords(nominal)
        self._cache: dict[tuple, tuple] = {}

    def groups(self, values: np.ndarray) -> list[tuple[np.ndarray, tuple]]:
        """(runs, (network, controls, responses)) of each combination, in order of first run."""
        keys = [tuple(row) for row in values[:, self.columns]]
        first: dict[tuple, list[int]] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, []).append(i)
        return [(np.array(runs), self._compiled(key, values[runs[0]]))
                for key, runs in first.items()]

    def _compiled(self, key: tuple, row: np.ndarray) -> tuple:
        if key not in self._cache:
            name = self.scenario.name
            labels = ", ".join(f"{p.label} = {row[k]:g}" for k, p in enumerate(
                self.scenario.uncertain.parameters) if k in self.columns)
            try:
                dataset, scenario = targets.apply(self.dataset, self.scenario,
                                                  self.scenario.uncertain, row)
            except ValueError as exc:
                raise ScenarioError(name, [str(exc)]) from None
            try:
                network, controls = compile_scenario(dataset, scenario)
                responses = compile_responses(dataset, scenario, network)
            except ScenarioError as exc:
                raise ScenarioError(name, [f"with uncertain parameters {labels}: {e}"
                                           for e in exc.errors]) from None
            except (ValueError, KeyError, IndexError, ResponseDataError) as exc:
                raise ScenarioError(name, [f"with uncertain parameters {labels}: the compile "
                                           f"failed ({type(exc).__name__}: {exc})"]) from None
            coords = _network_coords(network)
            changed = [k for k in coords if coords[k] != self.coords[k]]
            if changed:
                raise ScenarioError(name, [
                    f"uncertain parameters ({labels}) change the model's {changed[0]} "
                    f"({len(self.coords[changed[0]])} -> {len(coords[changed[0]])}); every run "
                    "of an ensemble needs the same ones"])
            if len(self._cache) >= self.KEEP:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (network, controls, responses)
        return self._cache[key]


def _network_coords(network) -> dict[str, tuple]:
    return {k: tuple(getattr(network, k)) for k in
            ("countries", "elements", "grades", "sectors", "items", "months")}


_WORKER_CONTEXT: tuple | None = None


def _set_worker_context(context: tuple) -> None:
    """Process-pool initializer: the compiled scenario, sent once per worker."""
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = context


def _worker_batch(job: tuple) -> tuple[dict, dict, object]:
    params, n, values = job
    return _batch(_WORKER_CONTEXT, params, n, values)


#: Blocs whose self-sufficiency the summary reports (issue 5): bloc label -> countries.csv bloc
#: tag or country code.
SELF_SUFFICIENCY_BLOCS = {"US": "USA", "EU": "EU", "Japan": "JPN"}


def _blocs(dataset: Dataset, network) -> dict[str, list[str]]:
    """Members of each reported bloc among the network's countries (Japan is inside ROW when
    the base year's data do not model it separately: the bloc is then left out)."""
    out = {}
    for label, tag in SELF_SUFFICIENCY_BLOCS.items():
        members = [row["iso3"] for _, row in dataset.countries.iterrows()
                   if row["iso3"] == tag or tag in (row["blocs"] or [])]
        members = [c for c in members if c in network.countries]
        if members:
            out[label] = members
    return out


def response_errors(dataset: Dataset, scenario: Scenario) -> list[str]:
    """Problems only compiling the responses block reveals (countries inside ROW, items without
    a base-year price); empty when the scenario has no responses block."""
    if scenario.responses is None or not scenario.responses.enabled:
        return []
    try:
        compile_responses(dataset, scenario, compile_scenario(dataset, scenario)[0])
    except ResponseDataError as exc:
        return [str(exc)]
    return []


def check(shipment: Shipment, dataset: Dataset, scenario: Scenario | None = None) -> dict:
    """Which rules apply to ``shipment``: the real timeline, or the rules of ``scenario``.

    Raises
    ------
    ScenarioError
        If the shipment names items or countries the dataset lacks.
    """
    countries = set(dataset.countries["iso3"])
    errors = []
    for field in ("exporter", "destination"):
        if getattr(shipment, field) not in countries:
            errors.append(f"{field} (value {getattr(shipment, field)!r}): not a country code "
                          "in the dataset")
    known = set(dataset.items["code"])
    for j, item in enumerate(shipment.items):
        if item.item not in known:
            errors.append(f"items[{j}].item (value {item.item!r}): not an item code in the "
                          "dataset")
        if item.origin not in countries:
            errors.append(f"items[{j}].origin (value {item.origin!r}): not a country code in "
                          "the dataset")
    if errors:
        raise ScenarioError("shipment", errors)
    rules = (resolve_rules(dataset, scenario) if scenario is not None
             else rules_from_table(dataset.policies))
    grades = dataset.magnet_grades
    symbols = set(dataset.elements["symbol"])
    grade_elements = {
        g: {c for c in group["component"] if c in symbols}
        for g, group in grades[grades["mass_fraction"] > 0].groupby("grade")
    }
    infos = {}
    for row in dataset.items.to_dict("records"):
        grade = row.get("magnet_grade")
        infos[row["code"]] = ItemInfo(
            code=row["code"], stage=row["stage"], form=row["form"], elements=set(row["elements"]),
            magnet_elements=grade_elements.get(grade, set()) if isinstance(grade, str) else set(),
        )
    urls = dict(zip(dataset.sources["source_id"], dataset.sources["url"], strict=True))
    return check_shipment(shipment, rules, infos, urls)
