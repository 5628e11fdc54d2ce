"""Table schemas described as data.

Each dataset table ``T`` has a schema file ``schema/T.csv`` with one row per column:
``column, type, unit, required, allowed, description`` (the way PyPSA describes component
attributes). The loader, the validator and ``docs/data-tables.md`` are all driven by these files, so
they cannot drift apart.

The ``allowed`` field is a ``|``-separated list of tokens:

* ``unique`` — no two rows share the value;
* ``ref:TABLE.COLUMN`` — the value (each value, for lists) must exist in that column of that table;
* ``min:X`` — numeric value >= X;
* ``range:A:B`` — numeric value in [A, B];
* any other token — an allowed literal value (the union with ``ref:`` targets, if any).
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources
from typing import Literal

from pydantic import BaseModel, field_validator

ColumnType = Literal["str", "int", "float", "bool", "list"]

#: Input tables of the responses model (docs/model.md, section 9).
RESPONSE_TABLES: tuple[str, ...] = (
    "response_parameters",
    "supply_costs",
    "lead_times",
    "residues",
    "stockpiles",
    "substitution_options",
    "product_lifetimes",
)

#: Tables in the order they are loaded and documented (referenced tables first).
TABLE_ORDER: tuple[str, ...] = (
    "sources",
    "elements",
    "countries",
    "deposit_types",
    "magnet_grades",
    "items",
    "mine_production",
    "reserves",
    "deposit_composition",
    "facilities",
    "stage_output",
    "trade_links",
    "yields",
    "sectors",
    "intensities",
    "demand",
    "non_magnet_demand",
    "prices",
    "inventories",
    "policies",
    "licence_regimes",
    "governance",
    "criticality_parameters",
    "criticality_published",
    *RESPONSE_TABLES,
)


class ColumnSpec(BaseModel):
    """One column of a table, as its schema file describes it."""

    column: str
    type: ColumnType
    unit: str = ""
    required: bool
    allowed: str = ""
    description: str

    @field_validator("required", mode="before")
    @classmethod
    def _parse_bool(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() == "true"
        return value

    @property
    def unique(self) -> bool:
        return "unique" in self._tokens()

    @property
    def refs(self) -> list[tuple[str, str]]:
        """(table, column) pairs the value must be found in."""
        out = []
        for token in self._tokens():
            if token.startswith("ref:"):
                table, column = token[4:].split(".", 1)
                out.append((table, column))
        return out

    @property
    def literals(self) -> set[str]:
        """Explicitly allowed literal values (empty set = no literal restriction)."""
        return {
            t
            for t in self._tokens()
            if t != "unique" and not t.startswith(("ref:", "min:", "range:"))
        }

    @property
    def bounds(self) -> tuple[float | None, float | None]:
        """Inclusive numeric (low, high) bounds; None where open."""
        for token in self._tokens():
            if token.startswith("min:"):
                return float(token[4:]), None
            if token.startswith("range:"):
                _, low, high = token.split(":")
                return float(low), float(high)
        return None, None

    def _tokens(self) -> list[str]:
        return [t.strip() for t in self.allowed.split("|") if t.strip()]


class TableSchema(BaseModel):
    """The columns of one table."""

    name: str
    columns: list[ColumnSpec]

    @property
    def column_names(self) -> list[str]:
        return [c.column for c in self.columns]

    def spec(self, column: str) -> ColumnSpec:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)


@cache
def load_schema(table: str) -> TableSchema:
    """Read ``schema/<table>.csv`` from the installed package."""
    path = resources.files("rareflow.data").joinpath("schema", f"{table}.csv")
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return TableSchema(name=table, columns=[ColumnSpec(**row) for row in rows])


def all_schemas() -> dict[str, TableSchema]:
    """Every table's schema, in load order."""
    return {name: load_schema(name) for name in TABLE_ORDER}
