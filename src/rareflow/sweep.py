"""Distributed sweeps on Dask, persisted batch by batch so that an interrupted sweep resumes.

Layout of a sweep directory::

    sweep.json                 the scenario, runs, seed, batch size and a fingerprint of the
                               dataset (a resumed sweep must match)
    parameters.npy             every run's parameter values, sampled once from the seed
    batches/batch_00000.npz    per-run summary series and headline numbers of one batch
    summary.json               the summary contract, written when every batch is present

Each batch is written to a temporary name and renamed into place, so a batch file exists only
when it is complete; a resumed sweep runs exactly the missing batches, and no batch is lost or
counted twice. Batches are evaluated by ``dask.distributed`` workers: a local cluster by
default, or any scheduler by address.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from rareflow.data import Dataset
from rareflow.ensemble import batches, design
from rareflow.scenario import Scenario, ScenarioError, check_scenario

SWEEP_FILE = "sweep.json"


def _batch_path(directory: Path, index: int) -> Path:
    return directory / "batches" / f"batch_{index:05d}.npz"


def run_batch(scenario_json: str, values: np.ndarray, data_path: str | None,
              backend: str = "auto") -> dict:
    """Worker task: simulate one batch of runs with the given parameter values (``backend``:
    the kernel's implementation on the worker; ``"auto"`` is Numba where that worker has it)."""
    from rareflow.api import simulate
    from rareflow.data import load_dataset

    scenario = Scenario.model_validate_json(scenario_json)
    dataset = load_dataset(data_path)
    result = simulate(dataset, scenario, runs=len(values), keep=False, parameter_values=values,
                      batch_size=len(values), backend=backend)
    out = {f"series/{k}": v.astype(np.float32) for k, v in result.series().items()}
    out.update({f"headline/{k}": np.asarray(v, dtype=np.float64)
                for k, v in result.headline().items()})
    checks = result.checks()
    out["checks/balance"] = np.array([checks["mass_balance_max_rel_error"]])
    out["checks/min_stock"] = np.array([checks["min_stock_t"]])
    out["notes"] = np.array(result.attrs.get("notes", "{}"))  # where the compiler filled gaps
    return out


def _save(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **{k.replace("/", "|"): v for k, v in arrays.items()})
    os.replace(tmp, path)


def dataset_digest(dataset: Dataset) -> str:
    """A fingerprint of the dataset's tables: a sweep resumed on other data (another
    ``--data``, or edited tables) would mix batches of two models."""
    digest = hashlib.sha256()
    for name in sorted(dataset.table_names):
        digest.update(name.encode())
        digest.update(dataset[name].to_csv(index=False).encode())
    return digest.hexdigest()[:16]


def _spec(scenario: Scenario, runs: int, seed: int, batch_size: int, data: str) -> dict:
    return {"scenario": json.loads(scenario.model_dump_json()), "runs": runs, "seed": seed,
            "batch_size": batch_size, "dataset": data}


def _task_prefix(spec: dict) -> str:
    """The prefix of this sweep's Dask task keys. A scheduler treats tasks with equal keys as
    one task, so two sweeps sharing a scheduler must not share keys: the prefix is a hash of
    everything that decides a batch's result (scenario, runs, seed, batch size, dataset)."""
    text = json.dumps(spec, sort_keys=True)
    return "rareflow-batch-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_sweep(directory: Path, scenario: Scenario, runs: int, seed: int,
                     batch_size: int, data: str) -> None:
    """A directory that holds a sweep must hold this one (ValueError naming what differs).
    ``data``: the dataset's fingerprint (:func:`dataset_digest`)."""
    spec_path = directory / SWEEP_FILE
    if not spec_path.is_file():
        return
    spec = _spec(scenario, runs, seed, batch_size, data)
    existing = json.loads(spec_path.read_text())
    if "dataset" not in existing:
        raise ValueError(f"{directory} holds a sweep made by an earlier rareflow, which did not "
                         "record its dataset, so it cannot be resumed safely; use another "
                         "--out or delete it")
    if existing != spec:
        differ = [k for k in spec if existing.get(k) != spec[k]]
        shown = "; ".join(f"{k}: was {existing.get(k)!r}, now {spec[k]!r}"
                          if k not in ("scenario", "dataset") else f"{k}: changed"
                          for k in differ)
        raise ValueError(f"{directory} holds a different sweep ({shown}); use another "
                         "--out or delete it")


def prepare(directory: Path, scenario: Scenario, runs: int, seed: int,
            batch_size: int, data: str) -> tuple[np.ndarray, list[slice]]:
    """Create or check the sweep directory; return every run's parameters and the batches.
    ``data``: the dataset's fingerprint (:func:`dataset_digest`)."""
    check_same_sweep(directory, scenario, runs, seed, batch_size, data)
    directory.mkdir(parents=True, exist_ok=True)
    spec_path = directory / SWEEP_FILE
    if not spec_path.is_file():
        spec_path.write_text(json.dumps(_spec(scenario, runs, seed, batch_size, data)))
    values_path = directory / "parameters.npy"
    if values_path.is_file():
        values = np.load(values_path)
    else:
        values = design(scenario.uncertain, runs, seed)
        tmp = directory / ".parameters.tmp.npy"
        np.save(tmp, values)
        os.replace(tmp, values_path)
    return values, batches(runs, batch_size)


def _remove_leftovers(directory: Path) -> None:
    """Delete half-written files a killed sweep left behind (``.batch_*.tmp.npz``): each batch
    is written to a temporary name and renamed when complete, so these never count as done."""
    batch_dir = directory / "batches"
    if batch_dir.is_dir():
        for leftover in batch_dir.glob(".batch_*.tmp.npz"):
            leftover.unlink(missing_ok=True)


def _missing_directories(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove_new_sweep(directory: Path, saved: list[Path], had_values: bool,
                      made: list[Path]) -> None:
    """Delete what a call that began a sweep wrote: its batches, ``sweep.json``,
    ``parameters.npy`` unless it was there before, and the directories it made (deepest first,
    when left empty). Nothing else in the directory is touched."""
    for path in saved:
        path.unlink(missing_ok=True)
    (directory / SWEEP_FILE).unlink(missing_ok=True)
    if not had_values:
        (directory / "parameters.npy").unlink(missing_ok=True)
    for folder in made:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def missing_batches(directory: Path, parts: list[slice]) -> list[int]:
    return [i for i in range(len(parts)) if not _batch_path(directory, i).is_file()]


def run_sweep(
    directory: str | Path,
    scenario: Scenario,
    runs: int,
    seed: int = 0,
    batch_size: int = 256,
    scheduler: str | None = None,
    data_path: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_batches: int | None = None,
    backend: str = "auto",
) -> dict | None:
    """Run (or resume) a sweep; return the summary when every batch is done, else None.

    ``max_batches`` stops after that many new batches (for tests and time-boxed runs).
    ``backend`` picks the kernel's implementation on the workers (the results are the same, so
    a sweep may resume with another one).
    """
    from rareflow.api import resolve_backend

    if backend != "auto":
        resolve_backend(backend)  # fail here, not on every worker
    from dask.distributed import Client, LocalCluster, as_completed

    from rareflow.data import load_dataset

    directory = Path(directory)
    # the scenario and its sampled values are checked here, before anything is written or
    # submitted, not batch by batch on the workers
    from rareflow.api import check_compiles, run_design

    dataset = load_dataset(data_path)
    data = dataset_digest(dataset)
    check_same_sweep(directory, scenario, runs, seed, batch_size, data)
    errors = check_scenario(scenario, dataset)
    if not errors:  # the values a resumed sweep will use: those it stored
        stored = directory / "parameters.npy"
        errors, values = run_design(dataset, scenario, runs, seed,
                                    np.load(stored) if stored.is_file() else None)
    if not errors:
        errors = check_compiles(dataset, scenario, values)
    if errors:
        raise ScenarioError(scenario.name, errors)
    new_sweep = not (directory / SWEEP_FILE).is_file()
    had_values = (directory / "parameters.npy").is_file()
    made = _missing_directories(directory / "batches")
    values, parts = prepare(directory, scenario, runs, seed, batch_size, data)
    _remove_leftovers(directory)
    todo = missing_batches(directory, parts)
    if max_batches is not None:
        todo = todo[:max_batches]
    done = len(parts) - len(missing_batches(directory, parts))
    if progress is not None:
        progress(done, len(parts))
    if todo:
        cluster = None
        if scheduler is None:
            # (a refused batch is reported here, once, not also logged by the worker)
            cluster = LocalCluster(n_workers=min(2, os.cpu_count() or 1), threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   silence_logs=logging.CRITICAL)
            client = Client(cluster)
        else:
            client = Client(scheduler)
        try:
            scenario_json = scenario.model_dump_json()
            prefix = _task_prefix(_spec(scenario, runs, seed, batch_size, data))
            futures = {client.submit(run_batch, scenario_json, values[parts[i]], data_path,
                                     backend, key=f"{prefix}-{i}"): i
                       for i in todo}
            saved: list[Path] = []
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    _save(_batch_path(directory, index), future.result())
                    saved.append(_batch_path(directory, index))
                    done += 1
                    if progress is not None:
                        progress(done, len(parts))
            except ScenarioError as exc:
                # a run's values that only its compile refuses: this sweep can never finish
                # (and a corrected scenario is another sweep). A sweep this call began is
                # removed rather than left half-written; an earlier one is left as it was
                client.cancel(list(futures))
                if new_sweep:
                    _remove_new_sweep(directory, saved, had_values, made)
                    raise
                raise ScenarioError(exc.source, [*exc.errors, (
                    f"--out (value {str(directory)!r}): this sweep cannot finish with these "
                    f"values; its {len(parts) - len(missing_batches(directory, parts))} "
                    "batches are kept: delete the directory or use another --out")]) from None
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    if missing_batches(directory, parts):
        return None
    return combine(directory, scenario, parts, values, seed)


#: Summary series held in memory at once while a sweep is combined [bytes]: a million runs of
#: 144 months take 1.15 GB per series in float64, so series are read a few at a time.
COMBINE_MEMORY = 1 << 30


class _SeriesOnDisk(Mapping):
    """The per-run summary series of every batch file, read from disk a few names at a time
    (about ``memory`` bytes), so that combining a sweep needs memory for a few series, not for
    all of them (about 0.12 MB per run)."""

    def __init__(self, paths: list[Path], names: list[str], runs: int, months: int,
                 memory: int):
        self.paths, self.names = paths, names
        self.chunk = max(1, memory // max(1, runs * months * 8))

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __getitem__(self, name: str) -> np.ndarray:
        return self._read([name])[name]

    def items(self):
        for at in range(0, len(self.names), self.chunk):
            yield from self._read(self.names[at:at + self.chunk]).items()

    def _read(self, names: list[str]) -> dict[str, np.ndarray]:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for path in self.paths:
            with np.load(path) as data:
                for name in names:
                    key = f"series|{name}"
                    if key not in data.files:
                        raise ValueError(f"{path} (series {name}): missing; its batches come from "
                                         "different versions of rareflow; delete the sweep "
                                         "directory and run it again")
                    parts[name].append(data[key].astype(np.float64))
        return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def combine(directory: Path, scenario: Scenario, parts: list[slice], values: np.ndarray,
            seed: int, memory: int | None = None) -> dict:
    """Merge every batch (in batch order) into the summary contract; write summary.json.

    Headline numbers are read at once; series a few at a time (``memory`` bytes, default
    :data:`COMBINE_MEMORY`), since percentiles need every run's value.
    """
    from rareflow.result import Result

    paths = [_batch_path(directory, i) for i in range(len(parts))]
    headline: dict[str, list] = {}
    names: list[str] | None = None
    balance, min_stock = 0.0, np.inf
    notes = None
    for path in paths:
        with np.load(path) as data:
            keys = [k.replace("|", "/") for k in data.files]
            if names is None:
                names = [k.split("/", 1)[1] for k in keys if k.startswith("series/")]
            for key in keys:
                kind, _, name = key.partition("/")
                if kind == "headline":
                    headline.setdefault(name, []).append(data[key.replace("/", "|")])
            balance = max(balance, float(data["checks|balance"][0]))
            min_stock = min(min_stock, float(data["checks|min_stock"][0]))
            if notes is None and "notes" in data.files:
                notes = str(data["notes"])
    runs = int(parts[-1].stop)
    series = _SeriesOnDisk(paths, names or [], runs, len(scenario.months),
                           COMBINE_MEMORY if memory is None else memory)
    labels = [p.label for p in scenario.uncertain.parameters]
    result = Result(None, series=series,
                    headline={k: np.concatenate(v) for k, v in headline.items()},
                    checks={"mass_balance_max_rel_error": balance, "min_stock_t": min_stock},
                    attrs={"scenario": scenario.name, "seed": seed,
                           **({"notes": notes} if notes and notes != "{}" else {})},
                    months=scenario.months, parameters=(labels, values),
                    thresholds=scenario.uncertain.thresholds)
    summary = result.summary()
    tmp = directory / ".summary.tmp.json"
    tmp.write_text(json.dumps(summary))
    os.replace(tmp, directory / "summary.json")
    return summary
