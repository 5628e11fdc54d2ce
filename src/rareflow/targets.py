"""Uncertain targets beyond the kernel's run parameters: dataset cells and scenario fields.

The kernel varies its run parameters (:data:`rareflow.sim.network.RUN_PARAMETERS`) along the run
axis in one pass. A dataset value (a facility's capacity or start year, an inventory's weeks of
cover) or a scenario field (an event's magnitude, an override's capacity) changes the compiled
network itself, so a run that differs in one is compiled on its own, and runs that share every
such value share one compile. Syntax of ``uncertain.parameters[].target``:

``dataset:TABLE.COLUMN[KEY=VALUE,...]``
    The numeric ``COLUMN`` of the rows of ``TABLE`` whose ``KEY`` columns equal ``VALUE`` (every
    row without a selector), e.g. ``dataset:facilities.start_year[facility_id=lynas_texas]``.
``scenario:PATH``
    A number in the scenario, by dotted path with list positions, e.g.
    ``scenario:events.0.magnitude``.

``how: set`` (the default) puts the sampled value in place; ``how: scale`` multiplies the
value there. Integer columns and fields take the nearest integer (halves round up). Values are
checked against
the table's schema bounds (``data/schema``) and the scenario's own validation before any run.
"""

from __future__ import annotations

import math
import re
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


def _rows(frame: pd.DataFrame, cell: DatasetCell) -> np.ndarray:
    """Boolean mask of the rows a dataset target selects."""
    mask = np.ones(len(frame), dtype=bool)
    for key, value in cell.where:
        column = frame[key]
        mask &= np.array([str(v) == value for v in column], dtype=bool)
    return mask


def _lookup(data: object, path: tuple[str | int, ...]) -> object:
    for step in path:
        if isinstance(step, int) and isinstance(data, list) and step < len(data):
            data = data[step]
        elif isinstance(step, str) and isinstance(data, dict) and step in data:
            data = data[step]
        else:
            raise KeyError(step)
    return data


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
                errors.append(f"{where}: the scenario has no {exc.args[0]!r} at this place")
                continue
            if not _is_number(value):
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
    return errors


def _new_value(old: object, sampled: float, how: str, integer: bool) -> float | int:
    value = sampled * float(old) if how == "scale" else sampled
    return math.floor(value + 0.5) if integer else float(value)  # halves round up


def apply(dataset: Dataset, scenario: Scenario, uncertainties: Uncertainties,
          row: np.ndarray, positions: list[int] | None = None) -> tuple[Dataset, Scenario]:
    """The dataset and scenario of one run: ``row`` holds the run's value of every uncertain
    parameter; the dataset cells and scenario fields among them (only those at ``positions``,
    if given) are applied in their listed order. Run parameters are the kernel's business.

    Raises
    ------
    ValueError
        If a value breaks a schema bound or the scenario's validation; the message names the
        parameter, the value and the rule.
    """
    from rareflow.scenario import Scenario

    tables = dict(dataset.tables)
    dumped = None
    for k, target in structural(uncertainties):
        if positions is not None and k not in positions:
            continue
        p = uncertainties.parameters[k]
        sampled = float(row[k])
        where = f"uncertain.parameters[{k}] ({p.label}, value {sampled:g})"
        if isinstance(target, ScenarioField):
            dumped = scenario.model_dump(mode="json") if dumped is None else dumped
            parent = _lookup(dumped, target.path[:-1])
            old = parent[target.path[-1]]
            parent[target.path[-1]] = _new_value(old, sampled, p.how, isinstance(old, int))
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
    if dumped is not None:
        from pydantic import ValidationError

        try:
            scenario = Scenario.model_validate(dumped)
        except ValidationError as exc:
            first = exc.errors()[0]
            place = ".".join(str(s) for s in first["loc"])
            raise ValueError(f"scenario fields set from uncertain parameters ({place}, "
                             f"value {first.get('input')!r}): {first['msg']}") from None
    return Dataset(tables=tables, origin=dataset.origin), scenario


def check_values(dataset: Dataset, scenario: Scenario, uncertainties: Uncertainties,
                 values: np.ndarray) -> list[str]:
    """Check each dataset cell's and scenario field's smallest and largest sampled value
    before any run, so that a value out of bounds stops an ensemble at the start, with a
    message, not half-way. (Setting and scaling are monotone, so the extremes are the values
    that can break a bound.)"""
    errors = []
    for k, _ in structural(uncertainties):
        for value in (values[:, k].min(), values[:, k].max()):
            row = np.array(values[0], dtype=float)
            row[k] = value
            try:
                apply(dataset, scenario, uncertainties, row, positions=[k])
            except ValueError as exc:
                errors.append(str(exc))
                break
    return errors
