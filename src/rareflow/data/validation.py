"""Row-level checks that the schema files define: types, required cells, allowed values,
references between tables, uniqueness and numeric bounds.

Cross-table arithmetic (totals that must reconcile, shares that must sum to one) lives in
``consistency.py``.
"""

from __future__ import annotations

import math

import pandas as pd

from rareflow.data.problems import Problem
from rareflow.data.schema import ColumnSpec, TableSchema

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _parse(spec: ColumnSpec, text: str) -> object:
    """Parse one cell; raise ValueError with a reason if it does not fit the type."""
    if spec.type == "str":
        return text
    if spec.type == "int":
        value = float(text.replace(",", "")) if text else math.nan
        if not value.is_integer():
            raise ValueError("expected a whole number")
        return int(value)
    if spec.type == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError("expected a number (no thousands separators or units)") from None
        if math.isnan(value) or math.isinf(value):
            raise ValueError("expected a finite number")
        return value
    if spec.type == "bool":
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true or false")
    if spec.type == "list":
        return [part.strip() for part in text.split(";") if part.strip()]
    raise ValueError(f"unknown schema type {spec.type}")


def is_blank(value: object) -> bool:
    """True for an empty cell of any type (None, NaN, NA or an empty string)."""
    if value is None or value is pd.NA or value == "":
        return True
    return isinstance(value, float) and math.isnan(value)


def _missing(spec: ColumnSpec) -> object:
    if spec.type == "float":
        return math.nan
    if spec.type == "list":
        return []
    return None


def coerce_table(
    table: str, frame: pd.DataFrame, schema: TableSchema
) -> tuple[pd.DataFrame, list[Problem]]:
    """Turn a frame of strings into typed columns, reporting cells that do not parse."""
    problems: list[Problem] = []
    out = {"_line": frame["_line"].tolist()}
    for spec in schema.columns:
        values = []
        for text, line in zip(frame[spec.column], frame["_line"], strict=True):
            if text == "":
                if spec.required:
                    problems.append(
                        Problem(table, line, spec.column, "", "required", "value is required")
                    )
                values.append(_missing(spec))
                continue
            try:
                values.append(_parse(spec, text))
            except ValueError as exc:
                problems.append(
                    Problem(table, line, spec.column, text, f"type:{spec.type}", str(exc))
                )
                values.append(_missing(spec))
        out[spec.column] = values
    typed = pd.DataFrame(out, columns=["_line", *schema.column_names])
    for spec in schema.columns:
        if spec.type == "float":
            typed[spec.column] = typed[spec.column].astype(float)
        elif spec.type == "int":
            typed[spec.column] = typed[spec.column].astype("Int64")
        elif spec.type == "bool":
            typed[spec.column] = typed[spec.column].astype("boolean")
    return typed.set_index("_line", drop=False), problems


def _reference_values(tables: dict[str, pd.DataFrame], refs: list[tuple[str, str]]) -> set[str]:
    values: set[str] = set()
    for table, column in refs:
        frame = tables.get(table)
        if frame is None or column not in frame.columns:
            continue
        for v in frame[column]:
            if isinstance(v, list):
                values.update(v)
            elif v is not None and not (isinstance(v, float) and math.isnan(v)):
                values.add(str(v))
    return values


def check_table_rows(
    table: str, tables: dict[str, pd.DataFrame], schema: TableSchema
) -> list[Problem]:
    """Check allowed values, references, uniqueness, bounds and the estimate-needs-method rule."""
    frame = tables[table]
    problems: list[Problem] = []
    for spec in schema.columns:
        column = frame[spec.column]
        refs = spec.refs
        literals = spec.literals
        accepted = _reference_values(tables, refs) | literals if (refs or literals) else None
        low, high = spec.bounds
        seen: dict[object, int] = {}
        for line, value in zip(frame["_line"], column, strict=True):
            if is_blank(value):
                continue
            if spec.unique:
                if value in seen:
                    problems.append(
                        Problem(
                            table, line, spec.column, str(value), "unique",
                            f"duplicate of line {seen[value]}",
                        )
                    )
                seen.setdefault(value, line)
            members = value if isinstance(value, list) else [value]
            if accepted is not None:
                for member in members:
                    if str(member) not in accepted:
                        problems.append(
                            Problem(
                                table, line, spec.column, str(member), _rule_name(refs),
                                _allowed_message(refs, literals, accepted),
                            )
                        )
            if low is not None and isinstance(value, int | float) and value < low:
                problems.append(
                    Problem(table, line, spec.column, str(value), "min", f"must be >= {low:g}")
                )
            if high is not None and isinstance(value, int | float) and value > high:
                problems.append(
                    Problem(table, line, spec.column, str(value), "max", f"must be <= {high:g}")
                )
    if "estimate" in schema.column_names and "note" in schema.column_names:
        for line, estimate, note in zip(
            frame["_line"], frame["estimate"], frame["note"], strict=True
        ):
            if estimate is not pd.NA and bool(estimate) and is_blank(note):
                problems.append(
                    Problem(
                        table, line, "note", "", "estimate-needs-method",
                        "row is marked estimate=true but its note does not say how it was derived",
                    )
                )
    return problems


def _rule_name(refs: list[tuple[str, str]]) -> str:
    return "ref:" + ",".join(f"{t}.{c}" for t, c in refs) if refs else "allowed"


def _allowed_message(
    refs: list[tuple[str, str]], literals: set[str], accepted: set[str]
) -> str:
    if refs:
        targets = " or ".join(f"{t}.{c}" for t, c in refs)
        extra = f" (or one of {', '.join(sorted(literals))})" if literals else ""
        return f"not found in {targets}{extra}"
    return "must be one of " + ", ".join(sorted(accepted))
