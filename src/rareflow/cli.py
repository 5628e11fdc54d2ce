"""The ``rareflow`` command line. Thin: parses, calls the API, prints with Rich.

Exit codes: 0 success, 2 user error (bad input, invalid data), with a message that names the
field, the value and the rule, and no traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rareflow import __version__
from rareflow.api import check, resolve_backend, simulate
from rareflow.data import TABLE_ORDER, Dataset, check_dataset, load_schema, table_records
from rareflow.error_lines import validation_lines
from rareflow.overview import supply_overview
from rareflow.scenario import (
    ScenarioError,
    builtin_dir,
    builtin_names,
    load_scenario,
    parse_month,
    read_yaml,
)

app = typer.Typer(
    help="Simulate the global rare earth supply chain under export controls and shocks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate the dataset.", no_args_is_help=True)
app.add_typer(data_app, name="data")
scenarios_app = typer.Typer(help="The built-in scenario library.", no_args_is_help=True)
app.add_typer(scenarios_app, name="scenarios")

out = Console()
# messages are not wrapped at the console width: piped or logged, a message stays one line
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Directory of CSV tables that replace the built-in ones of the same name.",
        file_okay=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
Workers = Annotated[int, typer.Option(
    min=0, max=256, help="Processes simulating batches side by side; 0: one per available "
    "CPU core, at most 8 (used only when there is more than one batch). Results do not "
    "depend on it.")]


@contextmanager
def _progress(label: str, hidden: bool = False) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, for long work; yields its ``update(done, total)``. Hidden with
    ``hidden`` (--json) and where stderr is not a terminal (a log gets no bar lines)."""
    from rich.progress import Progress

    with Progress(console=err, transient=True,
                  disable=hidden or not err.is_terminal) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _fail(message: str) -> typer.Exit:
    # the message quotes user values and hints such as 'rareflow[fast]': not Rich markup
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=2)


def _problems(exc: ValueError, summary: str) -> typer.Exit:
    """Print every "field (value): rule" line of ``exc.errors`` (scenario, BOM), then the
    one-line summary; exit 2."""
    for line in exc.errors:
        err.print(line, highlight=False, markup=False, style="red")
    return _fail(summary)


def _scenario_or_exit(name: str):
    try:
        return load_scenario(name)
    except ScenarioError as exc:
        raise _problems(exc, f"scenario {name!r} is not valid") from None


def entry_point() -> None:
    """Console entry point: problems the commands did not anticipate still end with exit code 2
    and a one-line message naming them, not a traceback (set RAREFLOW_DEBUG=1 to see it)."""
    import os
    import sys

    try:
        app()
    except (ValueError, KeyError, OSError) as exc:
        if os.environ.get("RAREFLOW_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}", highlight=False,
                  markup=True)
        sys.exit(2)


def _version(value: bool) -> None:
    if value:
        out.print(f"rareflow {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """rareflow command line."""


def _load_or_exit(data: Path | None) -> Dataset:
    dataset, problems = check_dataset(data)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        for problem in errors:
            err.print(str(problem), highlight=False, markup=False)
        raise _fail(f"the dataset has {len(errors)} error(s); run `rareflow data validate`")
    return dataset


@data_app.command("validate")
def data_validate(data: DataDir = None, as_json: JsonFlag = False) -> None:
    """Check every table against its schema and the cross-table rules; exit 2 on any error."""
    dataset, problems = check_dataset(data)
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity == "warning"]
    if as_json:
        print(json.dumps({
            "valid": not errors,
            "errors": [p.to_dict() for p in errors],
            "warnings": [p.to_dict() for p in warnings],
            "tables": {t: len(dataset.tables[t]) for t in TABLE_ORDER},
        }, indent=2))
    else:
        for problem in [*errors, *warnings]:
            style = "red" if problem.severity == "error" else "yellow"
            out.print(f"[{style}]{problem}[/]", highlight=False)
        custom = sorted(t for t, o in dataset.origin.items() if o != "built-in")
        rows = sum(len(f) for f in dataset.tables.values())
        where = f"; from {data}: {', '.join(custom) or 'none'}" if data else ""
        summary = (
            f"{len(TABLE_ORDER)} tables, {rows} rows{where}: "
            f"{len(errors)} error(s), {len(warnings)} warning(s)"
        )
        if errors:
            err.print(f"[bold red]invalid:[/] {summary}", highlight=False)
        else:
            out.print(f"[bold green]valid:[/] {summary}", highlight=False)
    if errors:
        raise typer.Exit(code=2)


@data_app.command("show")
def data_show(
    table: Annotated[str, typer.Argument(help="Table name, e.g. facilities.")],
    data: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Print one table."""
    if table not in TABLE_ORDER:
        choices = ", ".join(TABLE_ORDER)
        raise _fail(f"TABLE {table!r} is not a dataset table; choose one of {choices}")
    frame = _load_or_exit(data).tables[table]
    if as_json:
        print(json.dumps(table_records(frame), indent=2))
        return
    schema = load_schema(table)
    view = Table(title=f"{table} ({len(frame)} rows)", show_lines=False)
    for spec in schema.columns:
        view.add_column(spec.column + (f" [{spec.unit}]" if spec.unit else ""), overflow="fold")
    for record in table_records(frame):
        view.add_row(*[
            ";".join(v) if isinstance(v, list) else ("" if v is None else str(v))
            for v in record.values()
        ])
    out.print(view)


@data_app.command("sources")
def data_sources(data: DataDir = None, as_json: JsonFlag = False) -> None:
    """List where every figure comes from, with how many rows cite each source."""
    dataset = _load_or_exit(data)
    counts: dict[str, int] = {}
    for name, frame in dataset.tables.items():
        if name != "sources" and "source_id" in frame.columns:
            for ids in frame["source_id"]:
                for sid in ids:
                    counts[sid] = counts.get(sid, 0) + 1
    records = table_records(dataset.sources)
    for record in records:
        record["cited_by_rows"] = counts.get(record["source_id"], 0)
    if as_json:
        print(json.dumps(records, indent=2))
        return
    view = Table(title=f"{len(records)} sources")
    for column in ("source_id", "publisher", "year", "title", "url", "cited_by_rows"):
        view.add_column(column, overflow="fold")
    for record in records:
        view.add_row(*[str(record.get(c) or "") for c in
                       ("source_id", "publisher", "year", "title", "url", "cited_by_rows")])
    out.print(view)


@app.command("overview")
def overview(
    year: Annotated[int, typer.Option(help="Year to report.")] = 2024,
    data: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """World output, top-3 countries, China's share and HHI at each stage, from the tables."""
    result = supply_overview(_load_or_exit(data), year)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    view = Table(title=f"Rare earth supply chain, {year}")
    for column in ("stage", "data year", "world output", "China", "top 3", "HHI"):
        view.add_column(column)
    for stage, row in result["stages"].items():
        if not row["shares"]:
            view.add_row(stage, "-", "no data", "-", "-", "-")
            continue
        top3 = ", ".join(f"{c} {s:.0%}" for c, s in row["top3"])
        world = "shares only" if row["world_t"] is None else f"{row['world_t']:,.0f} {row['unit']}"
        view.add_row(
            stage, str(row["year"]), world,
            f"{row['china_share']:.0%}", top3, f"{row['hhi']:,.0f}",
        )
    out.print(view)
    out.print("HHI on the 0-10,000 scale (DOJ/FTC); shares over the sum of country rows.")


@scenarios_app.command("list")
def scenarios_list(as_json: JsonFlag = False) -> None:
    """List the built-in scenarios."""
    rows = []
    for name in builtin_names():
        sc = load_scenario(name)
        rows.append({"name": sc.name, "start": sc.start, "end": sc.end,
                     "events": len(sc.events), "description": " ".join(sc.description.split())})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    view = Table(title="Built-in scenarios")
    for column in ("name", "start", "end", "events", "description"):
        view.add_column(column, overflow="fold")
    for row in rows:
        view.add_row(*[str(row[c]) for c in ("name", "start", "end", "events", "description")])
    out.print(view)


@scenarios_app.command("show")
def scenarios_show(name: Annotated[str, typer.Argument(help="Built-in scenario name.")]) -> None:
    """Print a built-in scenario's YAML."""
    if name not in builtin_names():
        choices = ", ".join(builtin_names())
        raise _fail(f"SCENARIO {name!r} is not built in; choose one of {choices}")
    print((builtin_dir() / f"{name}.yaml").read_text(encoding="utf-8"), end="")


def _month_option(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        parse_month(value)
    except ValueError as exc:
        raise _fail(f"{option}: {exc}") from None
    return value


#: Reports read every run's monthly arrays; beyond this the memory use stops being modest.
REPORT_MAX_RUNS = 1000


@app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="Built-in scenario name or a YAML file.")],
    runs: Annotated[int, typer.Option(min=1, max=1_000_000, help="Ensemble size.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    start: Annotated[str | None, typer.Option(help="First month, YYYY-MM.")] = None,
    end: Annotated[str | None, typer.Option(help="Last month, YYYY-MM.")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Write summary.json, result.nc and parquet/ here (atomic)."),
    ] = None,
    data: DataDir = None,
    as_json: JsonFlag = False,
    report: Annotated[
        bool, typer.Option("--report", help="Also write report.html (needs --out, or writes "
                                             "to runs/SCENARIO).")
    ] = False,
    workers: Workers = 0,
    backend: Annotated[str, typer.Option(
        help="Kernel implementation: auto (Numba when installed), numpy or numba; results "
        "are the same.")] = "auto",
) -> None:
    """Simulate a scenario and print its summary."""
    try:
        resolve_backend(backend)
    except ValueError as exc:
        raise _fail(f"--backend: {exc}") from None
    start = _month_option(start, "--start")
    end = _month_option(end, "--end")
    dataset = _load_or_exit(data)
    try:
        sc = load_scenario(scenario)
        if start or end:
            sc = sc.model_copy(update={k: v for k, v in (("start", start), ("end", end)) if v})
        if report and runs > REPORT_MAX_RUNS:
            raise _fail(f"--runs (value {runs}): --report keeps every run's monthly arrays; "
                        f"use at most {REPORT_MAX_RUNS} runs, or drop --report")
        keep = True if report else None
        with _progress(f"simulating {sc.name}", hidden=as_json) as update:
            result = simulate(dataset, sc, runs=runs, seed=seed, keep=keep, workers=workers,
                              backend=backend, progress=update)
    except ScenarioError as exc:
        raise _problems(
            exc, f"scenario {scenario!r} is not valid ({len(exc.errors)} problem(s))") from None
    if report and out_dir is None:
        out_dir = Path("runs") / sc.name
    if out_dir is not None:
        result.write(out_dir)
    if report:
        from rareflow.report.html import write_report

        report_path = write_report(out_dir, dataset)
    summary = result.summary()
    if as_json:
        print(json.dumps(summary))
        return
    _print_summary(summary)
    if out_dir is not None:
        out.print(f"result written to {out_dir}")
    if report:
        out.print(f"[bold]report:[/] {report_path.resolve()}", highlight=False)


def _print_summary(summary: dict) -> None:
    months = summary["months"]
    head = summary["headline"]
    first = head["first_shortfall_month"]["p50"]
    out.print(f"[bold]{summary['scenario']}[/]: {months[0]}..{months[-1]}, "
              f"{summary['runs']} run(s), seed {summary['seed']}")
    view = Table(title="Headline (median over runs)")
    view.add_column("measure")
    view.add_column("value", justify="right")
    view.add_row("units not built", f"{head['units_not_built_total']['p50']:,.0f}")
    view.add_row("value at risk (US$)", f"{head['value_at_risk_usd']['p50']:,.0f}")
    view.add_row("total shortfall (t)", f"{head['shortfall_total_t']['p50']:,.0f}")
    view.add_row("first shortfall month", "none" if first is None else months[first])
    recover = head.get("time_to_recover_months", {}).get("p50")
    if recover is not None and first is not None:
        censored = recover >= len(months) - first
        view.add_row("time to recover (months)",
                     f"{recover:,.0f}+ (still short at the end)" if censored
                     else f"{recover:,.0f}")
    for key, label in (("policy_cost_usd_total", "government spending (US$)"),
                       ("investment_usd_total", "capital committed (US$)"),
                       ("recycled_t_total", "recycled (t REO)"),
                       ("residue_t_total", "residue of new separation (t)")):
        if key in head and head[key]["p50"] is not None:
            view.add_row(label, f"{head[key]['p50']:,.0f}")
    for key, bands in head.items():
        if key.startswith("new_capacity_t_per_year.") and (bands["p50"] or 0) > 0:
            view.add_row(f"new {key.split('.', 1)[1]} capacity in place (t/yr)",
                         f"{bands['p50']:,.0f}")
        if key.startswith("committed_capacity_t_per_year.") and (bands["p50"] or 0) > 0:
            view.add_row(f"{key.split('.', 1)[1]} capacity committed (t/yr)",
                         f"{bands['p50']:,.0f}")
        if key.startswith("trigger_fired_month."):
            month = bands["p50"]
            view.add_row(f"trigger {key.split('.', 1)[1]}",
                         "not fired" if month is None else f"fired {months[int(month)]}")
    out.print(view)
    series = summary["series"]
    years = sorted({m[:4] for m in months})
    # from the summary's monthly bands: with several runs these are sums of monthly medians,
    # not the median of each run's annual total (the per-run series are not in the summary)
    title = "By year" if summary["runs"] == 1 else "By year (sums of monthly medians)"
    table = Table(title=title)
    for column in ("year", "China magnet exports t", "world shortfall t",
                   "NdPr oxide US$/kg CN / ex-CN", "Dy oxide US$/kg CN / ex-CN"):
        table.add_column(column, justify="right")
    shortfall_keys = [k for k in series if k.startswith("shortfall_t.")]
    for year in years:
        idx = [i for i, m in enumerate(months) if m.startswith(year)]
        exports = sum(series["china_magnet_exports_t"]["p50"][i] for i in idx)
        short = sum(series[k]["p50"][i] for k in shortfall_keys for i in idx)

        def price(item: str, idx: list[int] = idx) -> str:
            cn = series.get(f"price_usd_per_kg.{item}.china", {}).get("p50")
            ex = series.get(f"price_usd_per_kg.{item}.ex_china", {}).get("p50")
            if not cn:
                return "-"
            return f"{cn[idx[-1]]:,.0f} / {ex[idx[-1]]:,.0f}"

        table.add_row(year, f"{exports:,.0f}", f"{short:,.0f}", price("NdPr_oxide"),
                      price("Dy2O3"))
    out.print(table)
    checks = {k: ("n/a (not a number)" if v is None else f"{v:.1e}")
              for k, v in summary["checks"].items()}
    out.print(f"mass balance max rel. error {checks['mass_balance_max_rel_error']}, "
              f"min stock {checks['min_stock_t']} t")


@app.command("check")
def check_command(
    shipment: Annotated[Path, typer.Argument(help="Shipment YAML file (see examples/).")],
    scenario: Annotated[
        str | None, typer.Option(help="Use this scenario's rules instead of the real timeline.")
    ] = None,
    data: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Which export-control rules apply to one shipment, whether a licence is needed, and why."""
    import yaml
    from pydantic import ValidationError

    from rareflow.policy.check import Shipment

    if not shipment.is_file():
        raise _fail(f"SHIPMENT {str(shipment)!r}: no such file")
    try:
        raw = read_yaml(shipment.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:
        raise _fail(f"SHIPMENT {str(shipment)!r} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise _fail(f"SHIPMENT {str(shipment)!r}: expected a mapping of fields")
    try:
        parsed = Shipment.model_validate(raw)
    except ValidationError as exc:
        for line in validation_lines(exc):
            err.print(line, highlight=False, markup=False)
        raise _fail(f"shipment {str(shipment)!r} is not valid") from None
    dataset = _load_or_exit(data)
    try:
        sc = load_scenario(scenario) if scenario else None
        answer = check(parsed, dataset, sc)
    except ScenarioError as exc:
        raise _problems(exc, f"{len(exc.errors)} problem(s) in the shipment or scenario") from None
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    if answer["prohibited"]:
        verdict = "[bold red]prohibited[/]"
    elif answer["licence_required"]:
        verdict = "[bold yellow]licence required[/]"
    else:
        verdict = "[bold green]no licence required[/]"
    out.print(f"{parsed.exporter} -> {parsed.destination}, {parsed.date}: {verdict}")
    for rule in answer["rules"]:
        out.print(f"  rule {rule['id']}: {rule['outcome']} ({rule['source'] or 'no source url'})",
                  highlight=False)
    for reason in answer["reasons"]:
        out.print(f"  - {reason}", highlight=False)


@app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by rareflow run --out.")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
    static: Annotated[
        Path | None, typer.Option("--static", help="Also write PNG charts (matplotlib) here.")
    ] = None,
    pdf: Annotated[bool, typer.Option("--pdf", help="With --static: PDF instead of PNG.")] = False,
    data: DataDir = None,
) -> None:
    """Write one self-contained HTML report of a run (works offline)."""
    from rareflow.report.html import write_report
    from rareflow.report.static import write_static

    if not (run_dir / "summary.json").is_file() or not (run_dir / "result.nc").is_file():
        raise _fail(f"RUN_DIR {str(run_dir)!r}: expected summary.json and result.nc from "
                    "`rareflow run ... --out DIR`")
    path = write_report(run_dir, _load_or_exit(data), out_file)
    out.print(f"report written to {path}")
    if static is not None:
        files = write_static(run_dir, static, "pdf" if pdf else "png")
        out.print(f"static charts written: {', '.join(str(f) for f in files)}")


@app.command("compare")
def compare_command(
    run_a: Annotated[Path, typer.Argument(help="First run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Second run directory.")],
    out_file: Annotated[
        Path, typer.Option("--out", help="Comparison report (HTML).")
    ] = Path("comparison.html"),
    as_json: JsonFlag = False,
) -> None:
    """Delta table of two runs' headline numbers, and a comparison report."""
    from rareflow.report.compare import write_comparison

    for run_dir in (run_a, run_b):
        if not (run_dir / "summary.json").is_file():
            raise _fail(f"RUN {str(run_dir)!r}: no summary.json (write one with "
                        "`rareflow run ... --out DIR`)")
    path, rows = write_comparison(run_a, run_b, out_file)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    view = Table(title=f"{run_a} (A) vs {run_b} (B), medians")
    for column in ("measure", "A", "B", "B - A", "B / A"):
        view.add_column(column, justify="right" if column != "measure" else "left")
    for row in rows:
        cells = ["-" if row[k] is None else f"{row[k]:,.2f}" for k in ("a", "b", "delta", "ratio")]
        view.add_row(row["measure"], *cells)
    out.print(view)
    out.print(f"comparison report written to {path}")


@app.command("criticality")
def criticality_command(
    scenario: Annotated[str, typer.Option(help="Scenario to simulate.")] = "baseline",
    year: Annotated[int | None, typer.Option(help="Simulated year (default: the first).")] = None,
    data: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """EU and USGS-style criticality computed in a simulated year, beside published values."""
    from rareflow.criticality import criticality

    dataset = _load_or_exit(data)
    sc = _scenario_or_exit(scenario)
    years = sorted({int(m[:4]) for m in sc.months})
    year = year or years[0]
    if year not in years:
        raise _fail(f"--year {year}: outside the scenario's years {years[0]}-{years[-1]}")
    try:
        result = simulate(dataset, sc)
    except ScenarioError as exc:
        raise _problems(exc, f"scenario {scenario!r} cannot be run") from None
    answer = criticality(result.data, dataset, year)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    view = Table(title=f"EU supply risk (SR) in {year}, scenario {sc.name}")
    for column in ("subject", "SR (simulated)", "SR published", "EI published"):
        view.add_column(column)
    for subject, row in {**answer["groups"], **answer["elements"]}.items():
        pub = answer["published"].get(subject, {})
        view.add_row(subject, "-" if row["SR"] is None else f"{row['SR']:.2f}",
                     str(pub.get("SR", "-")), str(pub.get("EI", "-")))
    out.print(view)
    out.print("EI is the published EU 2023 value; see docs/insight.md for the method and gaps.")


@app.command("exposure")
def exposure_command(
    bom: Annotated[Path, typer.Argument(help="Bill of materials (YAML or CSV), see examples/bom.")],
    scenario: Annotated[str, typer.Option(help="Scenario to play.")] = "history-2025",
    runs: Annotated[int, typer.Option(min=1, max=1000, help="Ensemble size.")] = 1,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="Write the scenario run, exposure.json and report.html here."),
    ] = None,
    data: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """When each product line runs out under a scenario, units at risk, and what would help."""
    from rareflow.exposure import BomError, analyse, load_bom

    dataset = _load_or_exit(data)
    try:
        parsed = load_bom(bom, dataset)
        sc = load_scenario(scenario)
    except (BomError, ScenarioError) as exc:
        raise _problems(exc, f"{len(exc.errors)} problem(s); nothing was analysed") from None
    try:
        answer = analyse(parsed, dataset, sc, runs=runs, seed=seed)
    except ScenarioError as exc:
        raise _problems(exc, f"scenario {scenario!r} cannot be run") from None
    if out_dir is not None:
        from rareflow.report.html import write_report

        simulate(dataset, sc, runs=runs, seed=seed).write(out_dir)
        (out_dir / "exposure.json").write_text(json.dumps(answer, indent=1))
        write_report(out_dir, dataset)
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    view = Table(title=f"{answer['company']} under {answer['scenario']} "
                       f"(disruption from {answer['disruption_month']})")
    for column in ("product", "months to stock-out", "units at risk", "value at risk US$",
                   "binding: component / supplier / rule / element"):
        view.add_column(column, overflow="fold")
    for p in answer["products"]:
        m = p["months_to_stockout"]["p50"]
        b = p["binding"]
        view.add_row(p["product"], "never" if m is None else f"{m:.0f}",
                     f"{p['units_at_risk']['p50']:,.0f}", f"{p['value_at_risk_usd']['p50']:,.0f}",
                     " / ".join(str(b[k] or "-") for k in ("component", "supplier", "rule",
                                                            "element")))
    out.print(view)
    for p in answer["products"]:
        table = Table(title=f"Mitigations: {p['product']}")
        table.add_column("action")
        table.add_column("result", justify="right")
        for m in p["mitigations"]:
            if "weeks_needed_p90" in m:
                result = f"{m['weeks_needed_p90']:.1f} weeks needed (held {m['weeks_held']:g})"
            else:
                result = f"{m['units_at_risk_p50']:,.0f} units at risk"
            table.add_row(m["action"], result)
        out.print(table)
    if out_dir is not None:
        out.print(f"report: {(out_dir / 'report.html').resolve()}", highlight=False)


@app.command("sensitivity")
def sensitivity_command(
    scenario: Annotated[str, typer.Argument(help="Scenario with an 'uncertain' block.")],
    output: Annotated[str, typer.Option(help="Headline to explain.")] = "shortfall_total_t",
    samples: Annotated[int, typer.Option(help="Saltelli base samples (a power of two).")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    data: DataDir = None,
    as_json: JsonFlag = False,
    workers: Workers = 0,
) -> None:
    """Sobol indices (SALib) of a headline outcome for each uncertain parameter."""
    from rareflow.sensitivity import sobol_indices

    if samples < 2 or samples & (samples - 1):
        raise _fail(f"--samples (value {samples}): must be a power of two, at least 2 (Sobol "
                    "sequence)")
    dataset = _load_or_exit(data)
    sc = _scenario_or_exit(scenario)
    try:
        with _progress(f"sensitivity of {output}", hidden=as_json) as update:
            answer = sobol_indices(dataset, sc, output, samples, seed, progress=update,
                                   workers=workers)
    except ScenarioError as exc:
        raise _problems(exc, "no indices computed") from None
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    if answer["correlation_ignored"]:
        err.print("note: the indices treat the parameters as independent; the scenario's "
                  "uncertain.correlation is not used here")
    view = Table(title=f"Sobol indices of {output} ({answer['runs']} runs)")
    for column in ("parameter", "S1", "S1 ±", "ST", "ST ±"):
        view.add_column(column, justify="right" if column != "parameter" else "left")
    for name, row in sorted(answer["parameters"].items(), key=lambda kv: -kv[1]["ST"]):
        view.add_row(escape(name), *(f"{row[k]:.3f}" for k in ("S1", "S1_conf", "ST",
                                                                "ST_conf")))
    out.print(view)


@app.command("discover")
def discover_command(
    scenario: Annotated[str, typer.Argument(help="Scenario with an 'uncertain' block.")],
    where: Annotated[
        str, typer.Option(help="Outcome of interest, e.g. 'shortfall_total_t > 5000'.")
    ],
    runs: Annotated[int, typer.Option(min=10, max=100_000, help="Ensemble size.")] = 500,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    data: DataDir = None,
    as_json: JsonFlag = False,
    workers: Workers = 0,
) -> None:
    """Which parameter ranges lead to an outcome (PRIM scenario discovery)."""
    from rareflow.discovery import condition, parse_where, prim
    from rareflow.result import headline_names, outcome_values

    try:
        name, op, threshold = parse_where(where)
    except ValueError as exc:
        raise _fail(f"--where: {exc}") from None
    dataset = _load_or_exit(data)
    sc = _scenario_or_exit(scenario)
    if not sc.uncertain.parameters:
        raise _fail(f"scenario {scenario!r} has no uncertain parameters to discover over")
    known = headline_names(sc)
    if name not in known:  # before any run
        raise _fail(f"--where: {name!r} is not a headline; choose one of {', '.join(known)}")
    try:
        with _progress(f"discovering {name}", hidden=as_json) as update:
            result = simulate(dataset, sc, runs=runs, seed=seed, keep=False, workers=workers,
                              progress=update)
        outcome = outcome_values(result.headline(), name, len(sc.months))
    except ScenarioError as exc:
        raise _problems(exc, "no discovery run") from None
    except ValueError as exc:
        raise _fail(f"--where: {exc}") from None
    labels, values = result.parameters
    interest = condition(outcome, op, threshold)
    answer = {"where": where, "output": name, "operator": op, "threshold": threshold,
              "runs": runs, "seed": seed, "runs_of_interest": int(interest.sum()),
              "share_of_interest": float(interest.mean()), "box": None}
    if 0 < interest.sum() < runs:
        box = prim(values, interest, labels)
        answer.update(
            box={label: {"low": box["low"][k], "high": box["high"][k],
                         "restricted": box["restricted"][k]}
                 for k, label in enumerate(labels)},
            coverage=box["coverage"], density=box["density"], support=box["support"],
            trajectory=box["trajectory"], chosen=box["index"])
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    share = f"{answer['runs_of_interest']} of {runs} runs meet '{where}'"
    if answer["box"] is None:
        out.print(f"{share}: no box to find (PRIM needs runs that meet it and runs that do "
                  "not).", highlight=False)
        return
    out.print(f"{share}. Box: coverage {answer['coverage']:.0%}, density "
              f"{answer['density']:.0%}, support {answer['support']:.0%} (box "
              f"{answer['chosen'] + 1} of {len(answer['trajectory'])} on the peeling "
              "trajectory)",
              highlight=False)
    view = Table(title="Restricted parameters of the box (others span their sampled range)")
    for column in ("parameter", "low", "high"):
        view.add_column(column)
    for label, lim in answer["box"].items():
        if lim["restricted"]:
            view.add_row(escape(label), f"{lim['low']:.4g}", f"{lim['high']:.4g}")
    out.print(view)


@app.command("sweep")
def sweep_command(
    scenario: Annotated[str, typer.Argument(help="Built-in scenario name or a YAML file.")],
    runs: Annotated[int, typer.Option(min=1, help="Ensemble size.")] = 1000,
    out_dir: Annotated[Path, typer.Option("--out", help="Sweep directory (resumable).")] = Path(
        "runs/sweep"),
    batch_size: Annotated[int, typer.Option(min=1, help="Runs per batch (one Dask task).")] = 64,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address, e.g. tcp://host:8786 (default: "
                                      "a local cluster).")
    ] = None,
    max_batches: Annotated[
        int | None, typer.Option(min=0, help="Stop after this many new batches (resume "
                                             "later).")
    ] = None,
    data: DataDir = None,
    as_json: JsonFlag = False,
    backend: Annotated[str, typer.Option(
        help="Kernel implementation on the workers: auto (Numba where installed), numpy or "
        "numba; results are the same.")] = "auto",
) -> None:
    """Run an ensemble as Dask batches, persisting each; rerun the same command to resume."""
    from rareflow.sweep import run_sweep

    try:
        resolve_backend(backend)
    except ValueError as exc:
        raise _fail(f"--backend: {exc}") from None
    _load_or_exit(data)
    sc = _scenario_or_exit(scenario)
    batches = [0, 0]  # done, total

    def counted(update: Callable[[int, int], None]) -> Callable[[int, int], None]:
        def both(done: int, total: int) -> None:
            batches[:] = [done, total]
            update(done, total)
        return both

    try:
        with _progress(f"sweep {sc.name}", hidden=as_json) as update:
            summary = run_sweep(out_dir, sc, runs, seed, batch_size, scheduler,
                                str(data) if data else None, progress=counted(update),
                                max_batches=max_batches, backend=backend)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if summary is None:
        if as_json:  # a script reads where the sweep stands, not an empty stdout
            print(json.dumps({"complete": False, "out": str(out_dir),
                              "batches_done": batches[0], "batches": batches[1]}))
        err.print(f"sweep paused with {batches[1] - batches[0]} of {batches[1]} batches still "
                  f"to run; rerun the same command to resume ({out_dir})")
        raise typer.Exit(code=0)
    if as_json:
        print(json.dumps(summary))
        return
    _print_summary(summary)
    out.print(f"sweep complete: {out_dir / 'summary.json'}")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    store: Annotated[Path, typer.Option(help="Run store directory (DuckDB + artifacts).")] = Path(
        "runs/store"),
    token: Annotated[
        str | None, typer.Option(envvar="RAREFLOW_TOKEN", help="Access token (required when "
                                                                "not bound to loopback).")
    ] = None,
    max_runs: Annotated[int, typer.Option(help="Largest ensemble a request may ask for.")] = 2000,
    data: DataDir = None,
) -> None:
    """The API (OpenAPI docs at /docs) and the dashboard, on one run store."""
    import ipaddress

    import uvicorn

    from rareflow.server.app import create_app

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not token:
        raise _fail(f"--host {host!r} is not a loopback address: set --token (or RAREFLOW_TOKEN) "
                    "so that only people with the token can use the server")
    app_ = create_app(store, token=token, max_runs=max_runs, data_dir=str(data) if data else None)
    out.print(f"rareflow serving on http://{host}:{port}/ (store: {store})")
    uvicorn.run(app_, host=host, port=port, log_level="warning")
