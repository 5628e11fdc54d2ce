"""Helpers shared by the dataset tests: the problems a (broken) copy of the data raises."""

from __future__ import annotations

from rareflow import check_dataset


def problems_of(path, severity="error"):
    """Problems of the dataset at ``path`` (None: the shipped data) of one severity."""
    _, problems = check_dataset(path)
    return [p for p in problems if p.severity == severity]


def only(problems, rule):
    """The problems raised by one rule."""
    return [p for p in problems if p.rule == rule]
