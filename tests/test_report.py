"""The HTML report: every section and chart, and it opens in Chromium without console errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rareflow import load_dataset, load_scenario, simulate
from rareflow.cli import app
from rareflow.report.html import SECTIONS, write_report

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "history"
    sc = load_scenario("history-2025").model_copy(update={"end": "2025-12"})
    simulate(load_dataset(), sc).write(path)
    return path


@pytest.fixture(scope="module")
def report(run_dir):
    return write_report(run_dir, load_dataset())


def test_report_has_every_section_and_chart(report):
    html = report.read_text()
    for section_id, _ in SECTIONS:
        assert f'id="{section_id}"' in html, section_id
    for chart in ("shortfall", "units", "prices", "exports", "licences", "stocks", "capacity",
                  "flows", "map", "criticality"):
        assert f'id="chart-{chart}"' in html, chart
    assert "CN-2025-18-MHREE" in html  # the rules in play, with their sources
    assert "usgs_mcs2026_ree" in html  # provenance
    assert "https://cdn.plot.ly" not in html.split("</script>", 1)[1]  # nothing fetched


def test_report_is_self_contained(report):
    html = report.read_text()
    assert "<script src=" not in html
    assert "plotly" in html.split("</script>", 1)[0].lower()


def test_cli_report_and_errors(run_dir, tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0 and out.stat().st_size > 1_000_000
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "summary.json" in missing.stderr


def test_static_charts(run_dir, tmp_path):
    result = CliRunner().invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "r.html"),
                                      "--static", str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert pngs == ["exports.png", "prices.png", "shortfall.png"]
    assert (tmp_path / "png" / "prices.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_compare(run_dir, tmp_path):
    other = tmp_path / "base"
    sc = load_scenario("baseline").model_copy(update={"end": "2025-12"})
    simulate(load_dataset(), sc).write(other)
    out = tmp_path / "cmp.html"
    result = CliRunner().invoke(app, ["compare", str(other), str(run_dir), "--out", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["measure"]: r for r in json.loads(result.stdout)}
    assert rows["shortfall_total_t"]["b"] > rows["shortfall_total_t"]["a"]
    assert out.is_file()


def test_criticality_cli_json_contract():
    result = CliRunner().invoke(app, ["criticality", "--year", "2024", "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["year"] == 2024 and body["method"] == "EU"
    assert set(body["groups"]) == {"LREE", "HREE"}
    assert {"SR", "EI"} <= set(body["groups"]["HREE"])
    assert "Dy" in body["elements"] and "supply_risk" in body["usgs"]["Nd"]
    # China separates about 9 tenths of the world's rare earths: HREE supply risk is high
    assert body["groups"]["HREE"]["SR"] > 3.0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_opens_in_chromium_without_console_errors(report):
    executable = _chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs it)")
        pytest.skip("no system Chromium here")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.resolve().as_uri())
        page.wait_for_selector("#chart-prices .plot-container", timeout=30_000)
        assert page.locator(".js-plotly-plot").count() >= 10
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
