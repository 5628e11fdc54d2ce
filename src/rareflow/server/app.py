"""The web app: a JSON API (OpenAPI at /docs) and a small dashboard, over one run store.

Safety: the CLI binds to loopback by default and refuses another address without a token; with
a token every request needs ``Authorization: Bearer <token>`` (or ``?token=`` for pages, which
then set a cookie). Request bodies, ensemble sizes and concurrent jobs are bounded; artifacts are
served by name from a fixed list, so no path can leave the store; CORS is off.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import secrets
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jinja2
import plotly.offline
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from rareflow import __version__
from rareflow.api import check, response_errors, run_design, simulate
from rareflow.data import TABLE_ORDER, Dataset, load_dataset, table_records
from rareflow.error_lines import error_line, field_path, validation_lines
from rareflow.report.compare import deltas
from rareflow.report.compare import render as render_compare
from rareflow.report.html import write_report
from rareflow.scenario import (
    Scenario,
    ScenarioError,
    builtin_names,
    check_scenario,
    load_scenario,
    scenario_from_dict,
)
from rareflow.store import Store

MAX_BODY_BYTES = 1_000_000
ARTIFACTS = {"report.html": "text/html", "summary.json": "application/json",
             "result.nc": "application/x-netcdf", "parquet.zip": "application/zip"}


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: str = Field(min_length=1, max_length=200,
                          description="Name of a built-in or saved scenario.")
    # strict: true or "4" is not a run count
    runs: int = Field(1, ge=1, strict=True, description="Ensemble size, at most the server's "
                      "limit (rareflow serve --max-runs, default 2000).")
    seed: int = Field(0, ge=0, le=2**31 - 1, strict=True)


class ExposureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bom: dict[str, Any] = Field(description="A bill of materials (docs/exposure.md).")
    scenario: str = Field("history-2025", min_length=1, max_length=200)
    runs: int = Field(1, ge=1, le=20, strict=True)
    seed: int = Field(0, ge=0, le=2**31 - 1, strict=True)


class Problems(BaseModel):
    errors: list[str] = Field(description="One 'field (value ...): rule' line per problem.")


class Refusal(BaseModel):
    """The body of every 422: the request was understood but cannot be run or saved."""

    detail: Problems


class ScenarioDoc(BaseModel):
    """A scenario document, as the YAML files of the scenario library (README, "Scenarios";
    src/rareflow/scenarios/*.yaml):
    ``name``, ``start``, ``end``, ``events``, ``policies``, ``settings``, ``responses`` and an
    ``uncertain`` block for ensembles (distributions, correlations, sampling, thresholds:
    docs/ensembles.md). The whole document is validated as a scenario; refusals come back as
    422 lines that name the field, the value and the rule."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "name": "my-ensemble", "start": "2024-01", "end": "2026-12",
        "policies": {"include": ["CN-2025-18-MHREE"]},
        "uncertain": {"sampling": "lhs", "parameters": [
            {"target": "approval_scale", "dist": "uniform", "low": 0.5, "high": 1.1},
            {"target": "demand_scale", "dist": "normal", "mean": 1.0, "sd": 0.05}],
            "correlation": [["approval_scale", "demand_scale", 0.3]],
            "thresholds": {"shortfall_total_t": [100000]}}}]})

    name: str = Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Cancelled(Exception):
    pass


class Jobs:
    """A bounded pool that runs simulations off the request path."""

    def __init__(self, store: Store, dataset: Dataset, workers: int, max_active: int):
        self.store = store
        self.dataset = dataset
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rareflow-run")
        self.max_active = max_active
        self.cancel: dict[str, threading.Event] = {}

    def submit(self, run_id: str, scenario: Scenario, runs: int, seed: int) -> None:
        self.cancel[run_id] = threading.Event()
        self.pool.submit(self._run, run_id, scenario, runs, seed)

    def _run(self, run_id: str, scenario: Scenario, runs: int, seed: int) -> None:
        store = self.store
        flag = self.cancel[run_id]
        store.update_run(run_id, status="running", started=_now())
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if flag.is_set():
                raise Cancelled
            share = done / max(total, 1)
            if share - last[0] >= 0.02 or done == total:
                last[0] = share
                store.update_run(run_id, progress=round(share * 0.9, 4))

        try:
            result = simulate(self.dataset, scenario, runs=runs, seed=seed, progress=progress)
            target = store.run_dir(run_id)
            result.write(target)
            if result.has_data:
                write_report(target, self.dataset)
            store.update_run(run_id, status="done", progress=1.0, finished=_now())
        except Cancelled:
            store.update_run(run_id, status="cancelled", finished=_now())
        except Exception as exc:  # a failed run is recorded, never left as running
            store.update_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}",
                             finished=_now())
        finally:
            self.cancel.pop(run_id, None)

    def shutdown(self) -> None:
        for flag in self.cancel.values():
            flag.set()
        self.pool.shutdown(wait=False, cancel_futures=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@cache
def _plotly_js() -> str:
    return plotly.offline.get_plotlyjs()


def create_app(store_dir: str | Path, token: str | None = None, max_runs: int = 2000,
               max_active: int = 4, workers: int = 2, data_dir: str | None = None) -> FastAPI:
    """The FastAPI application over the store in ``store_dir``."""
    dataset = load_dataset(data_dir)
    store = Store(store_dir)
    jobs = Jobs(store, dataset, workers, max_active)
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        yield
        jobs.shutdown()
        store.close()

    app = FastAPI(title="rareflow", version=__version__, lifespan=lifespan,
                  description="Rare-earth supply chain simulator: scenarios, runs, reports.",
                  responses={422: {"model": Refusal, "description": "Refused: one 'field "
                                   "(value ...): rule' line per problem."}})

    @app.exception_handler(RequestValidationError)
    async def refused(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """Requests that do not match their schema get the same 422 body as the server's own
        refusals (``{"detail": {"errors": [...]}}``), not FastAPI's list."""
        lines = []
        for item in exc.errors():
            loc = tuple(item["loc"])
            if item["type"] == "json_invalid":  # loc holds the character offset
                reason = (item.get("ctx") or {}).get("error", "")
                lines.append(f"(body): not valid JSON (at character {loc[-1]}: {reason})")
                continue
            if item["type"] == "missing":  # (its input is the enclosing value, or None)
                lines.append(f"{field_path(loc[1:]) or '(body)'}: required")
                continue
            lines.append(error_line(item, loc=loc[1:], whole="(body)"))
        return JSONResponse({"detail": {"errors": lines}}, status_code=422)
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("rareflow.server", "templates"),
        autoescape=jinja2.select_autoescape(["html"]))
    app.state.store, app.state.jobs = store, jobs

    @app.middleware("http")
    async def guard(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"},
                                status_code=413)
        if token is not None:
            given = None
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:]
            given = given or request.query_params.get("token") or request.cookies.get("token")
            if not given or not secrets.compare_digest(given, token):
                return JSONResponse({"detail": "a valid token is required"}, status_code=401)
            response = await call_next(request)
            if request.query_params.get("token"):
                response.set_cookie("token", token, httponly=True, samesite="strict")
            return response
        return await call_next(request)

    # ---- helpers --------------------------------------------------------------------------------
    def resolve(name: str) -> tuple[Scenario, str]:
        body = store.get_scenario(name)
        if body is not None:
            return scenario_from_dict(body, name), "saved"
        if name in builtin_names():
            return load_scenario(name), "built-in"
        raise HTTPException(404, f"no scenario named {name!r}")

    def validate_body(body: dict) -> Scenario:
        try:
            sc = scenario_from_dict(body, body.get("name", "(unnamed)"))
        except ScenarioError as exc:
            raise HTTPException(422, {"errors": exc.errors}) from None
        errors = check_scenario(sc, dataset)
        if not errors:
            errors = response_errors(dataset, sc)
        if not errors:  # the scenario as written (each uncertain parameter at its median)
            errors = run_design(dataset, sc, 1, 0)[0]
        if errors:
            raise HTTPException(422, {"errors": errors})
        return sc

    def run_or_404(run_id: str) -> dict:
        run = store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r}")
        return run

    # ---- data -----------------------------------------------------------------------------------
    @app.get("/api/health")
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get("/api/tables")
    def tables() -> dict:
        return {t: len(dataset.tables[t]) for t in TABLE_ORDER}

    @app.get("/api/tables/{table}")
    def table(table: str) -> list[dict]:
        if table not in TABLE_ORDER:
            raise HTTPException(404, f"no table {table!r}; tables: {', '.join(TABLE_ORDER)}")
        return table_records(dataset.tables[table])

    @app.get("/api/sources")
    def sources() -> list[dict]:
        return table_records(dataset.sources)

    # ---- scenarios ------------------------------------------------------------------------------
    @app.get("/api/scenarios")
    def scenarios() -> list[dict]:
        out = [{"name": n, "kind": "built-in"} for n in builtin_names()]
        out += [{"name": s["name"], "kind": "saved", "updated": s["updated"]}
                for s in store.list_scenarios()]
        return out

    @app.get("/api/scenarios/{name}")
    def scenario(name: str) -> dict:
        sc, kind = resolve(name)
        return {"kind": kind, "scenario": json.loads(sc.model_dump_json())}

    @app.post("/api/scenarios/validate")
    def validate(body: dict[str, Any]) -> dict:
        try:
            validate_body(body)
        except HTTPException as exc:
            return {"valid": False, "errors": exc.detail["errors"]}
        return {"valid": True, "errors": []}

    @app.post("/api/scenarios", status_code=201)
    def create_scenario(body: ScenarioDoc) -> dict:
        raw = body.model_dump()
        if raw["name"] in builtin_names():
            raise HTTPException(409, f"{raw['name']!r} is a built-in scenario; choose another "
                                     "name")
        sc = validate_body(raw)
        if not store.save_scenario(sc.name, json.loads(sc.model_dump_json()), create=True):
            raise HTTPException(409, f"a saved scenario named {sc.name!r} exists; use PUT")
        return {"name": sc.name}

    @app.put("/api/scenarios/{name}")
    def update_scenario(name: str, body: ScenarioDoc) -> dict:
        raw = body.model_dump()
        if raw["name"] != name:
            raise HTTPException(422, {"errors": [f"name (value {raw['name']!r}): must match "
                                                 f"the URL ({name!r})"]})
        sc = validate_body(raw)
        if not store.save_scenario(name, json.loads(sc.model_dump_json()), create=False):
            raise HTTPException(404, f"no saved scenario {name!r}")
        return {"name": name}

    @app.delete("/api/scenarios/{name}", status_code=204)
    def delete_scenario(name: str) -> Response:
        if name in builtin_names() and store.get_scenario(name) is None:
            raise HTTPException(403, "built-in scenarios cannot be deleted")
        if not store.delete_scenario(name):
            raise HTTPException(404, f"no saved scenario {name!r}")
        return Response(status_code=204)

    # ---- runs -----------------------------------------------------------------------------------
    @app.post("/api/runs", status_code=202)
    def submit(request: RunRequest) -> dict:
        if request.runs > max_runs:
            raise HTTPException(422, {"errors": [f"runs (value {request.runs}): at most "
                                                 f"{max_runs} on this server"]})
        sc, _ = resolve(request.scenario)
        errors = run_design(dataset, sc, request.runs, request.seed)[0]
        if errors:  # a run that would fail is refused here, not queued (nor told to retry)
            raise HTTPException(422, {"errors": errors})
        if store.count_active() >= max_active:
            raise HTTPException(429, f"{max_active} runs are already queued or running; try "
                                     "again when one finishes")
        run_id = store.create_run(sc.name, json.loads(sc.model_dump_json()), request.runs,
                                  request.seed)
        jobs.submit(run_id, sc, request.runs, request.seed)
        return {"id": run_id, "status": "queued"}

    @app.get("/api/runs")
    def runs() -> list[dict]:
        return [{k: v for k, v in r.items() if k != "body"} for r in store.list_runs()]

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> dict:
        return {k: v for k, v in run_or_404(run_id).items() if k != "body"}

    @app.post("/api/runs/{run_id}/cancel")
    def cancel(run_id: str) -> dict:
        run = run_or_404(run_id)
        flag = jobs.cancel.get(run_id)
        if run["status"] not in ("queued", "running") or flag is None:
            raise HTTPException(409, f"run {run_id} is {run['status']}; only queued or running "
                                     "runs can be cancelled")
        flag.set()
        return {"id": run_id, "status": "cancelling"}

    @app.get("/api/runs/{run_id}/summary")
    def summary(run_id: str) -> dict:
        run = run_or_404(run_id)
        path = store.run_dir(run_id) / "summary.json"
        if run["status"] != "done" or not path.is_file():
            raise HTTPException(409, f"run {run_id} is {run['status']}")
        return json.loads(path.read_text())

    @app.get("/api/runs/{run_id}/artifacts/{name}")
    def artifact(run_id: str, name: Literal["report.html", "summary.json", "result.nc",
                                            "parquet.zip"]):
        run = run_or_404(run_id)
        if run["status"] != "done":
            raise HTTPException(409, f"run {run_id} is {run['status']}")
        directory = store.run_dir(run_id)
        if name == "parquet.zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as zf:
                for f in sorted((directory / "parquet").glob("*.parquet")):
                    zf.write(f, f.name)
            return Response(buffer.getvalue(), media_type=ARTIFACTS[name])
        path = directory / name
        if not path.is_file():
            raise HTTPException(404, f"run {run_id} has no {name}")
        return FileResponse(path, media_type=ARTIFACTS[name])

    @app.get("/api/compare")
    def compare(a: str, b: str) -> list[dict]:
        return deltas(summary(a), summary(b))

    @app.post("/api/check")
    def check_shipment(body: dict[str, Any]) -> dict:
        from pydantic import ValidationError

        from rareflow.policy.check import Shipment

        try:
            shipment = Shipment.model_validate(body)
            return check(shipment, dataset)
        except ValidationError as exc:
            raise HTTPException(422, {"errors": validation_lines(exc)}) from None
        except ScenarioError as exc:
            raise HTTPException(422, {"errors": exc.errors}) from None

    @app.post("/api/exposure")
    def exposure(body: ExposureRequest) -> dict:
        """A company's BOM played through a scenario (synchronous; one run by default)."""
        from rareflow.exposure import BomError, analyse, load_bom_dict

        sc, _ = resolve(body.scenario)
        try:
            bom = load_bom_dict(body.bom, dataset)
        except BomError as exc:
            raise HTTPException(422, {"errors": exc.errors}) from None
        try:
            return analyse(bom, dataset, sc, runs=body.runs, seed=body.seed)
        except ScenarioError as exc:
            raise HTTPException(422, {"errors": exc.errors}) from None

    @app.post("/api/exposure/yaml", include_in_schema=False)
    def exposure_yaml(body: dict[str, Any]) -> dict:
        from rareflow.scenario import read_yaml

        try:
            raw = read_yaml(str(body.get("text", "")))
        except ValueError as exc:
            raise HTTPException(422, {"errors": [f"(bom): not valid YAML: {exc}"]}) from None
        if not isinstance(raw, dict):
            raise HTTPException(422, {"errors": [
                f"(bom) (value {type(raw).__name__}): must be a mapping with company and "
                f"products (docs/exposure.md)"]})
        from pydantic import ValidationError

        try:
            request = ExposureRequest(bom=raw, scenario=str(body.get("scenario", "history-2025")))
        except ValidationError as exc:
            raise HTTPException(422, {"errors": validation_lines(exc)}) from None
        return exposure(request)

    # ---- pages ----------------------------------------------------------------------------------
    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(_plotly_js(), media_type="text/javascript")

    def page(template: str, **context) -> HTMLResponse:
        return HTMLResponse(templates.get_template(template).render(version=__version__,
                                                                    **context))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        library = []
        for item in scenarios():
            sc, kind = resolve(item["name"])
            library.append({"name": sc.name, "kind": kind, "start": sc.start, "end": sc.end,
                            "description": " ".join(sc.description.split()),
                            "timeline": _timeline(sc, dataset)})
        return page("index.html", library=library,
                    runs=[{k: v for k, v in r.items() if k != "body"}
                          for r in store.list_runs()])

    @app.get("/scenarios/{name}", response_class=HTMLResponse, include_in_schema=False)
    def scenario_page(name: str) -> HTMLResponse:
        sc, kind = resolve(name)
        library = [{"rule_id": r["rule_id"], "title": r["title"], "mechanism": r["mechanism"],
                    "effective": r["effective"]}
                   for r in table_records(dataset.policies) if r["in_model"]]
        return page("scenario.html", name=name, kind=kind,
                    scenario=json.loads(sc.model_dump_json()), library=library,
                    timeline=_timeline(sc, dataset))

    @app.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def run_page(run_id: str) -> HTMLResponse:
        run = run_or_404(run_id)
        return page("run.html", run={k: v for k, v in run.items() if k != "body"},
                    others=[r for r in store.list_runs() if r["id"] != run_id
                            and r["status"] == "done"])

    @app.get("/exposure", response_class=HTMLResponse, include_in_schema=False)
    def exposure_page() -> HTMLResponse:
        example = (Path(__file__).resolve().parents[3] / "examples" / "bom" / "ev-maker.yaml")
        text = example.read_text() if example.is_file() else ""
        return page("exposure.html", example=text,
                    scenarios=[s["name"] for s in scenarios()])

    @app.get("/compare", response_class=HTMLResponse, include_in_schema=False)
    def compare_page(a: str, b: str) -> HTMLResponse:
        return HTMLResponse(render_compare(summary(a), summary(b)).replace(
            _plotly_js(), "").replace('<script type="text/javascript"></script>',
                                      '<script src="/static/plotly.min.js"></script>'))

    return app


def _timeline(sc: Scenario, dataset: Dataset) -> list[dict]:
    """Events and in-play rules as bars over the scenario's horizon (shares of its width)."""
    from rareflow.compile import resolve_rules

    months = sc.months
    n = len(months)
    out = []

    def bar(label: str, kind: str, start: str, end: str | None) -> None:
        first = months.index(start) if start in months else (0 if start < months[0] else None)
        if first is None:
            return
        last = months.index(end) if end and end in months else (
            n - 1 if not end or end > months[-1] else None)
        if last is None or last < first:
            return
        out.append({"label": label, "kind": kind, "left": 100 * first / n,
                    "width": max(100 * (last - first + 1) / n, 0.8), "start": start,
                    "end": end or months[-1]})

    for event in sc.events:
        end = None
        if event.months:
            y, m = int(event.start[:4]), int(event.start[5:7]) + event.months - 1
            y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
            end = f"{y:04d}-{m:02d}"
        bar(f"{event.type}", "event", event.start, end)
    try:
        rules = [r for r in resolve_rules(dataset, sc) if r.acts_on_flows]
    except Exception:
        rules = []
    for r in rules:
        start = r.effective.strftime("%Y-%m")
        stop = r.ended or r.suspended
        bar(r.rule_id, "rule", start, stop.strftime("%Y-%m") if stop else None)
        if r.suspended and r.suspended_until and (not r.ended or r.ended > r.suspended_until):
            bar(f"{r.rule_id} (after suspension)", "rule", r.suspended_until.strftime("%Y-%m"),
                r.ended.strftime("%Y-%m") if r.ended else None)
    return out
