"""A problem found in a dataset, described so that a user can act on it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding of the validator.

    ``row`` is the line number in the CSV file (the header is line 1), so a user can open the file
    and go straight to it; it is ``None`` for table-wide findings.
    """

    table: str
    row: int | None
    column: str | None
    value: str | None
    rule: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.table
        if self.row is not None:
            where += f" line {self.row}"
        if self.column:
            where += f" column '{self.column}'"
        value = f" value {self.value!r}" if self.value is not None else ""
        return f"{self.severity}: {where}{value}: {self.message} [{self.rule}]"

    def to_dict(self) -> dict:
        return asdict(self)


class DatasetError(ValueError):
    """Raised by :func:`rareflow.load_dataset` when the dataset has errors."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        head = "\n".join(str(p) for p in errors[:20])
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"dataset has {len(errors)} error(s):\n{head}{more}")
