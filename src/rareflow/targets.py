"""Uncertain targets beyond the kernel's run parameters: dataset cells and scenario fields.

The kernel varies its run parameters (:data:`rareflow.sim.network.RUN_PARAMETERS`) along the run
axis in one pass. A dataset value (a facility's capacity or start year, an inventory's weeks of
cover) or a scenario field (the share of a plant an outage stops, an override's capacity)
changes the compiled network itself, so a run that differs in one is compiled on its own, and
runs that share every such value share one compile. Syntax of ``uncertain.parameters[].target``:

``dataset:TABLE.COLUMN[KEY=VALUE,...]``
    The numeric ``COLUMN`` of the rows of ``TABLE`` whose ``KEY`` columns equal ``VALUE`` (every
    row without a selector), e.g. ``dataset:facilities.start_year[facility_id=vulcan_benson]``.
``scenario:PATH``
    A number in the scenario, by dotted path with list positions, e.g.
    ``scenario:events.0.fraction``.

``how: set`` (the default) puts the sampled value in place; ``how: scale`` multiplies the
value there. Integer columns and fields take the nearest integer (halves round up). Values are
checked against the table's schema bounds (``data/schema``), the scenario model's validation
and :func:`rareflow.scenario.check_scenario` before any run (docs/ensembles.md).
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rareflow.data import Dataset
from rareflow.data.schema import load_schema

if TYPE_CHECKING:  # the scenario module imports this one
    from rareflow.ensemble import Uncertainties
    from rareflow.scenario import Scenario

_DATASET = re.compile(r"dataset:(?P<table>\w+)\.(?P<column>\w+)(?:\[(?P<where>[^\]]*)\])?")
_SCENARIO = re.compile(r"scenario:(?P<path>\w+(?:\.\w+)*)")


@dataclass(frozen=True)
class DatasetCell:
    """The cells of ``column`` in the rows of ``table`` that match every (key, value) pair."""

    table: str
    column: str
    where: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ScenarioField:
    """A number in the scenario, by path (field names and list positions)."""

    path: tuple[str | int, ...]


Target = DatasetCell | ScenarioField


def parse(target: str) -> Target | None:
    """The dataset cell or scenario field ``target`` names; None for a kernel run parameter.

    Raises
    ------
    ValueError
        If ``target`` starts with ``dataset:`` or ``scenario:`` but does not follow the syntax.
    """
    if not target.startswith(("dataset:", "scenario:")):
        return None
    if target.startswith("dataset:"):
        match = _DATASET.fullmatch(target)
        if match is None:
            raise ValueError("must read dataset:TABLE.COLUMN or "
                             "dataset:TABLE.COLUMN[KEY=VALUE,...]")
        where = []
        for part in filter(None, (p.strip() for p in (match["where"] or "").split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip().isidentifier():
                raise ValueError(f"selector {part!r} must read KEY=VALUE")
            where.append((key.strip(), value.strip()))
        return DatasetCell(match["table"], match["column"], tuple(where))
    match = _SCENARIO.fullmatch(target)
    if match is None:
        raise ValueError("must read scenario:FIELD.FIELD... (list positions as numbers)")
    path = tuple(int(p) if p.isdigit() else p for p in match["path"].split("."))
    if path[0] == "uncertain":
        raise ValueError("the uncertain block itself cannot be uncertain")
    return ScenarioField(path)


def structural(uncertainties: Uncertainties) -> list[tuple[int, Target]]:
    """(position, target) of the parameters that are dataset cells or scenario fields."""
    out = []
    for k, p in enumerate(uncertainties.parameters):
        target = parse(p.target)
        if target is not None:
            out.append((k, target))
    return out


def _matches(cell: object, wanted: str) -> bool:
    """Whether a table cell equals a selector's text: a list cell when it holds the value, a
    boolean regardless of case, a number by value (2024 matches 2024.0)."""
    if isinstance(cell, list | tuple):
        return any(_matches(c, wanted) for c in cell)
    if isinstance(cell, bool | np.bool_):
        return str(bool(cell)).lower() == wanted.lower()
    if isinstance(cell, int | float | np.integer | np.floating):
        try:
            return float(cell) == float(wanted)
        except ValueError:
            return False
    return str(cell) == wanted


def _rows(frame: pd.DataFrame, cell: DatasetCell) -> np.ndarray:
    """Boolean mask of the rows a dataset target selects."""
    mask = np.ones(len(frame), dtype=bool)
    for key, value in cell.where:
        mask &= np.array([_matches(v, value) for v in frame[key]], dtype=bool)
    return mask


def _lookup(data: object, path: tuple[str | int, ...]) -> object:
    """The value at ``path`` in a dumped scenario; KeyError with a message otherwise."""
    for depth, step in enumerate(path):
        if isinstance(step, int) and isinstance(data, list) and step < len(data):
            data = data[step]
        elif isinstance(step, str) and isinstance(data, dict) and step in data:
            data = data[step]
        else:
            above = ".".join(str(s) for s in path[:depth])
            if data is None:
                raise KeyError(f"{above} is empty")
            kind = "list" if isinstance(data, list) else "field"
            place = f" in {above}" if above else ""
            raise KeyError(f"the scenario has no {kind} entry {step!r}{place}")
    return data


def _declares_int(scenario: Scenario, path: tuple[str | int, ...]) -> bool:
    """Whether the scenario model declares the field at ``path`` an integer (free-form mappings,
    such as rules written inline, hold floats)."""
    from pydantic import BaseModel

    parent: object = scenario
    for step in path[:-1]:
        parent = parent[step] if isinstance(step, int) or isinstance(parent, dict) \
            else getattr(parent, step)
    if not isinstance(parent, BaseModel):
        return False
    annotation = type(parent).model_fields[path[-1]].annotation
    args = typing.get_args(annotation)
    return annotation is int or (int in args and float not in args)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_targets(uncertainties: Uncertainties, scenario: Scenario,
                  dataset: Dataset) -> list[str]:
    """Every dataset cell and scenario field named by an uncertain parameter must exist and
    hold a number (a cell to scale must not be empty); 'field (value): rule' strings."""
    errors = []
    dumped = None
    for k, p in enumerate(uncertainties.parameters):
        where = f"uncertain.parameters[{k}].target (value {p.target!r})"
        try:
            target = parse(p.target)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if target is None:
            if p.how != "set":
                errors.append(f"uncertain.parameters[{k}].how (value {p.how!r}): target "
                              f"{p.target!r} is a run parameter, set per run; 'scale' is for "
                              "dataset: and scenario: targets")
            continue
        if isinstance(target, ScenarioField):
            dumped = scenario.model_dump(mode="json") if dumped is None else dumped
            try:
                value = _lookup(dumped, target.path)
            except KeyError as exc:
                errors.append(f"{where}: {exc.args[0]}")
                continue
            if value is None and p.how == "scale":
                errors.append(f"{where}: the field is empty; 'scale' needs a value to scale")
            elif value is not None and not _is_number(value):
                errors.append(f"{where}: holds {value!r}, not a number")
            continue
        if target.table not in dataset.tables:
            errors.append(f"{where}: no dataset table {target.table!r}")
            continue
        schema = load_schema(target.table)
        if target.column not in schema.column_names:
            errors.append(f"{where}: table {target.table} has no column {target.column!r}")
            continue
        if schema.spec(target.column).type not in ("int", "float"):
            errors.append(f"{where}: column {target.table}.{target.column} is "
                          f"{schema.spec(target.column).type}, not a number")
            continue
        unknown = [key for key, _ in target.where if key not in schema.column_names]
        if unknown:
            errors.append(f"{where}: table {target.table} has no column {unknown[0]!r} to "
                          "select rows by")
            continue
        frame = dataset.tables[target.table]
        rows = _rows(frame, target)
        if not rows.any():
            errors.append(f"{where}: no row of {target.table} matches")
        elif p.how == "scale" and frame.loc[rows, target.column].isna().any():
            errors.append(f"{where}: a selected cell is empty; 'scale' needs a value to scale")
        elif (target.table == "facilities" and target.column in _PIPELINE_ONLY
              and _only_unbuilt(frame.loc[rows], scenario)):
            errors.append(f"{where}: selects only planned facilities, which this scenario "
                          f"does not build (settings.include_planned is false), so their "
                          f"{target.column} could not change any run; set include_planned: "
                          "true")
    return errors


#: Facility columns read only where a facility is built (compile.py, ``_pipeline``): a
#: planned facility's capacity counts elsewhere too (the mix of a country's mined elements,
#: outages), so only these are refused for facilities a scenario does not build.
_PIPELINE_ONLY = ("start_year", "ramp_years")


def _only_unbuilt(facilities, scenario: Scenario) -> bool:
    """Whether every one of these facility rows is 'planned' (after the scenario's overrides)
    in a scenario that builds no planned facility."""
    if scenario.settings.include_planned:
        return False
    status = facilities["status"].copy()
    for override in scenario.overrides:
        if override.status is not None:
            status[facilities["facility_id"] == override.facility] = override.status
    return bool((status == "planned").all())


def _new_value(old: object, sampled: float, how: str, integer: bool) -> float | int:
    value = sampled * float(old) if how == "scale" else sampled
    return math.floor(value + 0.5) if integer else float(value)  # halves round up


def _describe(uncertainties: Uncertainties, row: np.ndarray, k: int) -> str:
    p = uncertainties.parameters[k]
    return f"uncertain.parameters[{k}] ({p.label}, value {float(row[k]):g})"


def apply(dataset: Dataset, scenario: Scenario, uncertainties: Uncertainties,
          row: np.ndarray, positions: list[int] | None = None) -> tuple[Dataset, Scenario]:
    """The dataset and scenario of one run: ``row`` holds the run's value of every uncertain
    parameter; the dataset cells and scenario fields among them (only those at ``positions``,
    if given) are applied in their listed order. Run parameters are the kernel's business. A
    changed scenario passes the scenario model's validation and :func:`check_scenario`.

    Raises
    ------
    ValueError
        If a value breaks a schema bound or the scenario's checks; the message names the
        parameter, the value and the rule.
    """
    from pydantic import ValidationError

    from rareflow.scenario import Scenario, check_scenario

    tables = dict(dataset.tables)
    dumped = None
    fields: list[tuple[int, ScenarioField]] = []
    for k, target in structural(uncertainties):
        if positions is not None and k not in positions:
            continue
        p = uncertainties.parameters[k]
        sampled = float(row[k])
        where = _describe(uncertainties, row, k)
        if not math.isfinite(sampled):
            raise ValueError(f"{where}: {p.target} needs a finite number")
        if isinstance(target, ScenarioField):
            dumped = scenario.model_dump(mode="json") if dumped is None else dumped
            parent = _lookup(dumped, target.path[:-1])
            parent[target.path[-1]] = _new_value(parent[target.path[-1]], sampled, p.how,
                                                 _declares_int(scenario, target.path))
            fields.append((k, target))
            continue
        spec = load_schema(target.table).spec(target.column)
        frame = tables[target.table] = tables[target.table].copy()
        rows = np.flatnonzero(_rows(frame, target))
        low, high = spec.bounds
        at = frame.columns.get_loc(target.column)
        for i in rows:
            value = _new_value(frame.iat[i, at], sampled, p.how, spec.type == "int")
            if (low is not None and value < low) or (high is not None and value > high) \
                    or not math.isfinite(value):
                bound = (f"in [{low:g}, {high:g}]" if high is not None
                         else f">= {low:g}" if low is not None else "finite")
                raise ValueError(f"{where}: {target.table}.{target.column} would be {value:g}; "
                                 f"the schema wants it {bound}")
            frame.iat[i, at] = value
    changed = Dataset(tables=tables, origin=dataset.origin)
    if dumped is None:
        return changed, scenario

    def blame(loc: tuple) -> str:
        """The parameters behind a problem at ``loc`` (pydantic adds union tags to paths)."""
        named = [k for k, t in fields if _within(t.path, loc)]
        return "; ".join(f"{_describe(uncertainties, row, k)}: "
                         f"{uncertainties.parameters[k].target}" for k in named or
                         [k for k, _ in fields])

    try:
        scenario = Scenario.model_validate(dumped)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{blame(tuple(first['loc']))}: {first['msg']}") from None
    errors = check_scenario(scenario, changed)
    if errors:
        raise ValueError(f"{blame(())}: {errors[0]}")
    return changed, scenario


def _within(path: tuple, loc: tuple) -> bool:
    """Whether ``path`` appears in order inside pydantic's error location ``loc``."""
    steps = iter(loc)
    return bool(loc) and all(any(step == s for s in steps) for step in path)


def check_values(dataset: Dataset, scenario: Scenario, uncertainties: Uncertainties,
                 values: np.ndarray, combinations: int = 16) -> list[str]:
    """Check sampled values before any run, so that most bad values stop an ensemble at the
    start with a message, not half-way: each dataset cell's and scenario field's smallest and
    largest value alone (setting and scaling are monotone, so these break a bound if any
    does), and every combination of them when there are at most ``combinations`` (as with
    ``choice`` distributions). Values that fail only together in a larger design, or that the
    compile refuses (a changed set of countries, say), stop the ensemble when their run is
    compiled, with the same kind of message."""
    columns = [k for k, _ in structural(uncertainties)]
    if not columns:
        return []
    errors: list[str] = []

    def attempt(row: np.ndarray, positions: list[int] | None) -> None:
        try:
            apply(dataset, scenario, uncertainties, row, positions=positions)
        except ValueError as exc:
            if str(exc) not in errors:
                errors.append(str(exc))

    for k in columns:
        for value in (np.nanmin(values[:, k]), np.nanmax(values[:, k])):
            row = np.array(values[0], dtype=float)
            row[k] = value
            attempt(row, [k])
        if np.isnan(values[:, k]).any():
            row = np.array(values[0], dtype=float)
            row[k] = np.nan
            attempt(row, [k])
    distinct = np.unique(values[:, columns], axis=0)
    if not errors and len(columns) > 1 and len(distinct) <= combinations:
        for combo in distinct:
            row = np.array(values[0], dtype=float)
            row[columns] = combo
            attempt(row, None)
    return errors
