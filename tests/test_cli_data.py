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


def test_base_year_without_calibration_data_is_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nbase_year: 2015\nstart: 2015-01\nend: 2015-12\n")
    result = run("run", str(path))
    assert result.exit_code == 2
    assert "base_year (value 2015)" in result.output and "2024" in result.output


def test_report_refuses_ensembles_too_large_to_keep(tmp_path):
    result = run("run", "baseline", "--runs", "5000", "--report", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert "--runs (value 5000)" in result.output
    assert not (tmp_path / "r").exists()


def test_unanticipated_errors_exit_two_without_traceback(tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = subprocess.run(
        [sys.executable, "-m", "rareflow.cli_main", "run", "baseline", "--start", "2024-01",
         "--end", "2024-02", "--out", str(blocker / "inside")],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
