"""The data commands: exit codes, messages and JSON shapes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from rareflow import __version__
from rareflow.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, list(args))


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


def test_validate_shipped_data_exits_zero():
    result = run("data", "validate")
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout and "0 error(s)" in result.stdout


def test_validate_broken_copy_exits_two_listing_every_error(edit_table):
    def change(header, rows):
        rows[0]["country"] = "XXX"
        rows[1]["value"] = "-3"

    data = edit_table("mine_production", change)
    result = run("data", "validate", "--data", str(data))
    assert result.exit_code == 2
    assert "mine_production line 2 column 'country' value 'XXX'" in result.stdout
    assert "mine_production line 3 column 'value' value '-3.0'" in result.stdout
    assert "Traceback" not in result.output


def test_validate_json(edit_table):
    def change(header, rows):
        rows[0]["capacity_unit"] = "barrels"

    result = run("data", "validate", "--data", str(edit_table("facilities", change)), "--json")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["errors"][0]["value"] == "barrels"
    assert report["errors"][0]["table"] == "facilities"


def test_validate_missing_directory_exits_two(tmp_path):
    result = run("data", "validate", "--data", str(tmp_path / "nope"))
    assert result.exit_code == 2


def test_show_unknown_table_names_it():
    result = run("data", "show", "widgets")
    assert result.exit_code == 2
    assert "'widgets'" in result.stderr and "facilities" in result.stderr


def test_show_json_rows():
    result = run("data", "show", "elements", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert {r["symbol"] for r in rows} >= {"Nd", "Pr", "Dy", "Tb"}


def test_sources_json_has_at_least_forty_distinct_sources():
    result = run("data", "sources", "--json")
    assert result.exit_code == 0
    sources = json.loads(result.stdout)
    ids = {s["source_id"] for s in sources}
    assert len(ids) == len(sources) >= 40
    assert all(s["url"].startswith("http") for s in sources)
