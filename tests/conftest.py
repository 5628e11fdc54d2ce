"""Shared fixtures: editable copies of the packaged dataset."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import pytest

from rareflow.data import TABLE_ORDER


def packaged_dir() -> Path:
    return Path(str(resources.files("rareflow.data")))


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def data_copy(tmp_path: Path) -> Path:
    """A full copy of the packaged tables in a temporary directory."""
    target = tmp_path / "data"
    target.mkdir()
    for table in TABLE_ORDER:
        shutil.copy(packaged_dir() / f"{table}.csv", target / f"{table}.csv")
    return target


@pytest.fixture
def edit_table(data_copy: Path) -> Callable[[str, Callable[[list[str], list[dict]], None]], Path]:
    """Apply ``change(header, rows)`` in place to one table of the copy; return the copy's dir."""

    def _edit(table: str, change: Callable[[list[str], list[dict]], None]) -> Path:
        path = data_copy / f"{table}.csv"
        header, rows = read_rows(path)
        change(header, rows)
        write_rows(path, header, rows)
        return data_copy

    return _edit
