"""Read the dataset tables, coerce them to their schema types and run every check.

The packaged dataset lives next to this module. A user can point ``path`` at a directory of their
own CSV files (for example licensed market data): each file found there replaces the packaged table
of the same name, the rest come from the package, and the same validation runs on the mix.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from rareflow.data.consistency import cross_table_checks
from rareflow.data.problems import DatasetError, Problem
from rareflow.data.schema import TABLE_ORDER, TableSchema, load_schema
from rareflow.data.validation import check_table_rows, coerce_table

PACKAGED = "built-in"


@dataclass
class Dataset:
    """The typed dataset tables.

    Attributes
    ----------
    tables : dict of str to pandas.DataFrame
        One frame per table, columns typed per the schema (``list`` columns hold Python lists,
        missing numbers are NaN).
    origin : dict of str to str
        Where each table was read from: ``"built-in"`` or the path of the user's file.
    """

    tables: dict[str, pd.DataFrame]
    origin: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    @property
    def table_names(self) -> list[str]:
        return list(self.tables)


def _read_text(table: str, directory: Path | None) -> tuple[str, str]:
    """Return the CSV text of ``table`` and where it came from."""
    if directory is not None:
        candidate = directory / f"{table}.csv"
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8"), str(candidate)
    text = resources.files("rareflow.data").joinpath(f"{table}.csv").read_text(encoding="utf-8")
    return text, PACKAGED


def _parse_csv(table: str, text: str, schema: TableSchema) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse raw CSV text into a frame of strings, checking the header against the schema."""
    problems: list[Problem] = []
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return pd.DataFrame(columns=schema.column_names), [
            Problem(table, None, None, None, "header", "file is empty: expected a header row")
        ]
    header = [h.strip() for h in header]
    known = set(schema.column_names)
    for name in header:
        if name not in known:
            problems.append(
                Problem(
                    table, 1, name, None, "unknown-column",
                    f"column is not in schema/{table}.csv; known columns: "
                    + ", ".join(schema.column_names),
                )
            )
    for spec in schema.columns:
        if spec.required and spec.column not in header:
            problems.append(
                Problem(table, 1, spec.column, None, "missing-column", "required column is missing")
            )
    rows = []
    for line_no, raw in enumerate(reader, start=2):
        if not any(cell.strip() for cell in raw):
            continue
        if len(raw) != len(header):
            problems.append(
                Problem(
                    table, line_no, None, None, "field-count",
                    f"row has {len(raw)} fields but the header has {len(header)}",
                )
            )
            raw = (raw + [""] * len(header))[: len(header)]
        record = {name: cell.strip() for name, cell in zip(header, raw, strict=True)}
        record["_line"] = line_no
        rows.append(record)
    frame = pd.DataFrame(rows, columns=[*header, "_line"])
    for name in schema.column_names:
        if name not in frame.columns:
            frame[name] = ""
    return frame[[*schema.column_names, "_line"]], problems


def check_dataset(path: str | Path | None = None) -> tuple[Dataset, list[Problem]]:
    """Load the dataset and return it with every problem found (errors and warnings).

    Never raises for data problems: the CLI uses this to list all of them at once.
    """
    directory = Path(path) if path is not None else None
    problems: list[Problem] = []
    if directory is not None and not directory.is_dir():
        problems.append(
            Problem("(data)", None, None, str(directory), "data-dir", "directory does not exist")
        )
        directory = None
    if directory is not None:
        known = set(TABLE_ORDER)
        for extra in sorted(directory.glob("*.csv")):
            if extra.stem not in known:
                problems.append(
                    Problem(
                        extra.stem, None, None, extra.name, "unknown-table",
                        "file is not a rareflow table and is ignored; tables are: "
                        + ", ".join(TABLE_ORDER),
                        severity="warning",
                    )
                )
    raw: dict[str, pd.DataFrame] = {}
    origin: dict[str, str] = {}
    for table in TABLE_ORDER:
        schema = load_schema(table)
        text, origin[table] = _read_text(table, directory)
        frame, found = _parse_csv(table, text, schema)
        problems.extend(found)
        raw[table] = frame
    # Row checks need every table's keys (for references), so coerce after all are read.
    typed: dict[str, pd.DataFrame] = {}
    for table in TABLE_ORDER:
        frame, found = coerce_table(table, raw[table], load_schema(table))
        typed[table] = frame
        problems.extend(found)
    for table in TABLE_ORDER:
        problems.extend(check_table_rows(table, typed, load_schema(table)))
    problems.extend(cross_table_checks(typed))
    return Dataset(tables=typed, origin=origin), problems


def load_dataset(path: str | Path | None = None) -> Dataset:
    """Load the packaged dataset, or a user's copy in ``path``, and validate it.

    Parameters
    ----------
    path : str or Path, optional
        Directory with CSV tables that replace the packaged tables of the same name.

    Raises
    ------
    DatasetError
        If any check fails; ``err.problems`` lists every finding.
    """
    dataset, problems = check_dataset(path)
    if any(p.severity == "error" for p in problems):
        raise DatasetError(problems)
    return dataset


def _jsonable(value: object) -> object:
    """A cell as JSON: NaN and pandas' NA become null, numpy scalars plain Python."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA:
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def table_records(frame: pd.DataFrame) -> list[dict]:
    """A dataset table as JSON-ready records (without the loader's ``_line`` bookkeeping), as
    both the CLI (``data show --json``) and the API (``/api/tables``) serve it."""
    columns = [c for c in frame.columns if c != "_line"]
    return [
        {c: _jsonable(v) for c, v in zip(columns, row, strict=True)}
        for row in frame[columns].itertuples(index=False, name=None)
    ]
