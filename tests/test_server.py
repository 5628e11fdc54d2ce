"""The web app: API, run store, safety limits, schemathesis, and the browser journey."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rareflow.server.app import create_app
from rareflow.store import Store

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def _wait(client, run_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.get(f"/api/runs/{run_id}").json()
        if run["status"] in ("done", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


@pytest.fixture
def client(tmp_path):
    app = create_app(tmp_path / "store", max_runs=50, max_active=2)
    with TestClient(app) as c:
        yield c


def _copy_of(client, name: str, new: str) -> dict:
    body = client.get(f"/api/scenarios/{name}").json()["scenario"]
    body["name"] = new
    return body


def test_health_tables_sources(client):
    assert client.get("/api/health").json()["status"] == "ok"
    assert client.get("/api/tables").json()["policies"] > 50
    assert client.get("/api/tables/nope").status_code == 404
    assert len(client.get("/api/sources").json()) >= 40


def test_scenario_crud_and_validation(client):
    names = {s["name"] for s in client.get("/api/scenarios").json()}
    assert {"baseline", "history-2025"} <= names
    body = _copy_of(client, "myanmar-halt", "halt-6")
    body["events"][0]["months"] = 6
    assert client.post("/api/scenarios", json=body).status_code == 201
    assert client.post("/api/scenarios", json=body).status_code == 409
    bad = dict(body, events=[{"type": "facility_outage", "facility": "nope", "start": "2025-01"}])
    res = client.put("/api/scenarios/halt-6", json=bad)
    assert res.status_code == 422
    assert "events[0].facility (value 'nope')" in res.json()["detail"]["errors"][0]
    assert client.get("/api/scenarios/halt-6").json()["scenario"]["events"][0]["months"] == 6
    assert client.delete("/api/scenarios/baseline").status_code == 403
    assert client.delete("/api/scenarios/halt-6").status_code == 204
    assert client.get("/api/scenarios/halt-6").status_code == 404
    # a responses block is compiled before it is accepted: a floor in a country inside ROW
    floor = {"name": "floor-jpn", "responses": {"price_floors": [
        {"item": "NdPr_oxide", "country": "JPN", "start": "2025-01"}]}}
    res = client.post("/api/scenarios/validate", json=floor).json()
    assert not res["valid"]
    assert "responses.price_floors[0].country (value 'JPN')" in res["errors"][0]
    assert client.post("/api/scenarios", json=floor).status_code == 422


def test_run_lifecycle_and_artifacts(client):
    res = client.post("/api/runs", json={"scenario": "myanmar-halt", "runs": 1})
    assert res.status_code == 202
    run = _wait(client, res.json()["id"])
    assert run["status"] == "done" and run["progress"] == 1.0
    summary = client.get(f"/api/runs/{run['id']}/summary").json()
    assert summary["scenario"] == "myanmar-halt" and "series" in summary
    for name in ("report.html", "summary.json", "result.nc", "parquet.zip"):
        assert client.get(f"/api/runs/{run['id']}/artifacts/{name}").status_code == 200, name
    assert client.get(f"/api/runs/{run['id']}/artifacts/..%2F..%2Frareflow.duckdb"
                      ).status_code in (404, 422)
    assert client.get(f"/api/compare?a={run['id']}&b={run['id']}").status_code == 200


def test_runs_that_would_fail_are_refused_not_queued(client):
    # sampled values outside a run parameter's range (mine output cannot be negative)
    body = {"name": "tails", "end": "2024-06", "uncertain": {"sampling": "mc", "parameters": [
        {"target": "mine_scale", "dist": "normal", "mean": 1.0, "sd": 0.6}]}}
    assert client.post("/api/scenarios", json=body).status_code in (200, 201)
    res = client.post("/api/runs", json={"scenario": "tails", "runs": 40})
    assert res.status_code == 422
    assert "mine_scale must lie in [0, 1000]" in res.json()["detail"]["errors"][0]
    sobol = {"name": "sobol3", "end": "2024-06", "uncertain": {"sampling": "sobol", "parameters": [
        {"target": "demand_scale", "dist": "uniform", "low": 0.9, "high": 1.1}]}}
    assert client.post("/api/scenarios", json=sobol).status_code in (200, 201)
    res = client.post("/api/runs", json={"scenario": "sobol3", "runs": 3})
    assert res.status_code == 422 and "power of two" in res.json()["detail"]["errors"][0]
    assert client.get("/api/runs").json() == []  # nothing queued


def test_limits(client):
    assert client.post("/api/runs", json={"scenario": "baseline", "runs": 51}).status_code == 422
    assert client.post("/api/runs", json={"scenario": "nope"}).status_code == 404
    big = {"name": "x", "description": "y" * 1_100_000}
    assert client.post("/api/scenarios", json=big).status_code == 413
    ids = [client.post("/api/runs", json={"scenario": "baseline", "runs": 3}).json()["id"]
           for _ in range(2)]
    assert client.post("/api/runs", json={"scenario": "baseline"}).status_code == 429
    for run_id in ids:
        _wait(client, run_id, timeout=300)
    # a finished run cannot be cancelled
    assert client.post(f"/api/runs/{ids[0]}/cancel").status_code == 409


def test_cancelling_a_queued_run(tmp_path):
    # one worker: the second run waits in the queue behind a first run of several seconds, so
    # the cancel reaches it before it starts, and it ends as cancelled without a result
    app = create_app(tmp_path / "store", max_runs=50, max_active=2, workers=1)
    with TestClient(app) as c:
        first = c.post("/api/runs", json={"scenario": "history-2025", "runs": 20}).json()["id"]
        second = c.post("/api/runs", json={"scenario": "baseline", "runs": 1}).json()["id"]
        assert c.post(f"/api/runs/{second}/cancel").status_code == 200
        assert _wait(c, second, timeout=300)["status"] == "cancelled"
        assert c.get(f"/api/runs/{second}/summary").status_code == 409  # no result
        assert _wait(c, first, timeout=300)["status"] == "done"


def test_token_required_when_set(tmp_path):
    app = create_app(tmp_path / "s", token="s3cret")
    with TestClient(app) as c:
        assert c.get("/api/health").status_code == 401
        assert c.get("/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/health?token=wrong").status_code == 401


def test_interrupted_runs_are_marked_failed_on_restart(tmp_path):
    store = Store(tmp_path / "s")
    run_id = store.create_run("baseline", {}, 1, 0)
    store.update_run(run_id, status="running")
    store.close()
    reopened = Store(tmp_path / "s")
    run = reopened.get_run(run_id)
    assert run["status"] == "failed" and "restart" in run["error"]


def test_every_refusal_has_one_shape_and_the_schema_says_so(client):
    # FastAPI's own validation errors and the server's refusals share one body:
    # {"detail": {"errors": ["field (value ...): rule", ...]}}
    for body, start in [({"scenario": "baseline", "runs": 0}, "runs (value 0): "),
                        ({"scenario": "baseline", "runs": True}, "runs (value True): "),
                        ({"scenario": "baseline", "runs": "4"}, "runs (value '4'): "),
                        ({"scenario": "baseline", "seed": -1}, "seed (value -1): "),
                        ({"scenario": "baseline", "runs": 51}, "runs (value 51): at most 50")]:
        res = client.post("/api/runs", json=body)
        assert res.status_code == 422, body
        assert res.json()["detail"]["errors"][0].startswith(start), res.json()
    schema = client.get("/openapi.json").json()
    refusal = schema["paths"]["/api/runs"]["post"]["responses"]["422"]
    assert refusal["content"]["application/json"]["schema"]["$ref"].endswith("/Refusal")
    assert client.get("/api/runs").json() == []


def test_malformed_requests_get_messages_a_person_can_act_on(client):
    res = client.post("/api/runs", content=b'{"scenario": "baseline", runs: 2}',
                      headers={"content-type": "application/json"})
    assert res.status_code == 422
    assert res.json()["detail"]["errors"] == [
        "(body): not valid JSON (at character 25: Expecting property name enclosed in double "
        "quotes)"]
    res = client.get("/api/compare")
    assert res.json()["detail"]["errors"] == ["a: required", "b: required"]


def test_a_scenario_that_cannot_run_even_once_is_not_saved(client):
    # its uncertain parameter's median is outside the range: every run, even one, would be
    # refused, so validation and saving refuse it too
    body = {"name": "never", "end": "2024-06", "uncertain": {"parameters": [
        {"target": "demand_scale", "dist": "normal", "mean": -1.0, "sd": 0.05}]}}
    answer = client.post("/api/scenarios/validate", json=body).json()
    assert not answer["valid"] and "demand_scale must lie in [0, 1000]" in answer["errors"][0]
    assert client.post("/api/scenarios", json=body).status_code == 422


def test_no_server_error_on_generated_input(tmp_path):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    app = create_app(tmp_path / "fuzz", max_runs=2, max_active=1)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.method, case.formatted_path, response.status_code))

        check()
    assert failures == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(store: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "rareflow.cli_main", "serve", "--port",
                             str(port), "--store", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("server did not start")


def test_browser_journey(tmp_path):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (.ci/run installs it)")
        pytest.skip("no system Chromium here")
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    store, port = tmp_path / "store", _free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(store, port)
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            expect(page.locator("#library")).to_contain_text("myanmar-halt")
            page.screenshot(path=str(ARTIFACTS / "web-1-library.png"))
            # the original runs too, for the comparison
            original = page.request.post(base + "/api/runs",
                                         data=json.dumps({"scenario": "myanmar-halt"}),
                                         headers={"Content-Type": "application/json"}).json()
            # create a scenario from the built-in one and change a rule and an event
            page.click("text=myanmar-halt")
            page.fill("#name", "myanmar-halt-short")
            page.locator("#events tr").nth(1).locator(".months").fill("3")
            page.locator('#rules tr[data-rule="CN-2025-18-MHREE"] .use').check()
            page.locator("#events tr").nth(1).locator(".start").fill("2099-01")
            page.click("#validate")
            expect(page.locator("#errors")).to_contain_text("events[0].start")
            expect(page.locator("#events tr").nth(1).locator(".start")).to_have_class("start bad")
            page.locator("#events tr").nth(1).locator(".start").fill("2024-07")
            page.screenshot(path=str(ARTIFACTS / "web-2-editor.png"))
            page.click("#save-run")
            page.wait_for_url("**/runs/*", timeout=30_000)
            expect(page.locator("#status")).to_have_text("done", timeout=180_000)
            assert page.locator("#bar").evaluate("b => b.value") == 1
            frame = page.frame_locator("#report")
            expect(frame.locator("#chart-prices .plot-container")).to_be_visible(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "web-3-run.png"))
            # compare with the original
            deadline = time.time() + 180
            while page.request.get(base + f"/api/runs/{original['id']}").json()[
                    "status"] != "done" and time.time() < deadline:
                time.sleep(0.5)
            page.reload()
            page.select_option("#compare-with", original["id"])
            page.click("#compare")
            expect(page.locator("table")).to_contain_text("shortfall_total_t")
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "web-4-compare.png"), full_page=True)
            # the exposure page analyses its YAML example as it stands (it once posted YAML as
            # text/plain, which the API refused every time)
            page.goto(base + "/exposure")
            page.click("#analyse")
            expect(page.locator("#products")).to_contain_text("months to stock-out",
                                                              timeout=120_000)
            expect(page.locator("#errors")).to_be_empty()
            page.screenshot(path=str(ARTIFACTS / "web-6-exposure.png"), full_page=True)
            browser.close()
        # restart the server: both runs are still listed
        server.terminate()
        server.wait(timeout=20)
        server = _serve(store, port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base + "/")
            expect(page.locator(".run-row")).to_have_count(2)
            expect(page.locator("#runs")).to_contain_text("myanmar-halt-short")
            page.screenshot(path=str(ARTIFACTS / "web-5-after-restart.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    assert errors == []


def test_exposure_endpoint(client):
    from rareflow.scenario import read_yaml

    bom = read_yaml((ROOT / "examples/bom/ev-maker.yaml").read_text())
    res = client.post("/api/exposure", json={"bom": bom, "scenario": "history-2025"})
    assert res.status_code == 200
    assert res.json()["products"][0]["binding"]["rule"] == "CN-2025-18-MHREE"
    bad = client.post("/api/exposure", json={"bom": {"company": "x"}})
    assert bad.status_code == 422 and bad.json()["detail"]["errors"]
    assert client.get("/exposure").status_code == 200
    listed = client.post("/api/exposure/yaml", json={"text": "- a\n- b\n"})
    assert listed.status_code == 422 and "must be a mapping" in listed.json()["detail"]["errors"][0]
    wrong = client.post("/api/exposure/yaml", json={"text": "company: x\n", "scenario": "nope"})
    assert wrong.status_code == 404


def test_check_errors_name_field_and_value(client):
    res = client.post("/api/check", json={
        "date": "2025-06-01", "exporter": "CHN", "destination": "USA",
        "items": [{"item": "Dy2O3", "origin": "CHN", "value_share": 1.7}]})
    assert res.status_code == 422
    errors = res.json()["detail"]["errors"]
    assert any("items[0].value_share" in e and "1.7" in e for e in errors), errors
