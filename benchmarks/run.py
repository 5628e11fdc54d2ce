"""Benchmarks: `python benchmarks/run.py [--quick]` (or `make bench`); writes docs/performance.md.

Timings are ratios against a baseline measured in the same run, because the machines are shared
and noisy: the vectorised ensemble against the same runs evaluated one by one in a loop (what a
user of a generic exploratory-modelling tool would do with a per-run model function).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

import rareflow
from rareflow.compile import compile_scenario
from rareflow.ensemble import sample
from rareflow.sim.kernel import simulate_arrays

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller ensembles")
    args = parser.parse_args()
    ds = rareflow.load_dataset()
    base = rareflow.load_scenario("baseline")
    hist = rareflow.load_scenario("history-2025")
    hist144 = hist.model_copy(update={"end": "2035-12"})
    rows = []

    net, ctl = compile_scenario(ds, base)
    kernel_1 = _time(lambda: simulate_arrays(net, ctl, runs=1))
    full_1 = _time(lambda: rareflow.simulate(ds, base), repeat=3)
    rows.append(("single baseline run, 2024-2035 (kernel only)", f"{kernel_1 * 1e3:.0f} ms"))
    rows.append(("single baseline run, compile + kernel + result", f"{full_1 * 1e3:.0f} ms"))

    n_loop = 20 if args.quick else 50
    _, values = sample(hist144.uncertain, n_loop, seed=1)
    t = time.perf_counter()
    for k in range(n_loop):
        rareflow.simulate(ds, hist144, runs=1, keep=False, parameter_values=values[k:k + 1])
    loop = (time.perf_counter() - t) / n_loop
    t = time.perf_counter()
    rareflow.simulate(ds, hist144, runs=n_loop, keep=False, parameter_values=values,
                      batch_size=n_loop)
    vec = (time.perf_counter() - t) / n_loop
    rows.append((f"history-2025 to 2035 (144 months), {n_loop} runs one by one, per run",
                 f"{loop * 1e3:.0f} ms"))
    rows.append((f"the same {n_loop} runs vectorised, per run", f"{vec * 1e3:.0f} ms"))
    rows.append(("speed-up of the vectorised ensemble over the loop", f"{loop / vec:.1f}x"))

    n = 200 if args.quick else 1000
    t = time.perf_counter()
    res = rareflow.simulate(ds, hist144, runs=n, seed=1, keep=False, batch_size=100)
    ens = time.perf_counter() - t
    rows.append((f"ensemble of {n} runs x 144 months (batches of 100)", f"{ens:.1f} s"))
    rows.append(("extrapolated: 10,000 runs x 144 months", f"{ens * 10_000 / n / 60:.1f} min"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak resident memory of this process", f"{peak:,.0f} MB"))
    p50 = res.summary()["headline"]["shortfall_total_t"]

    lines = [
        "# Performance",
        "",
        "Measured by `python benchmarks/run.py` (`make bench`); numbers from one run on the",
        f"machine below. Machine: {os.cpu_count()} cores, {_cpu()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}.",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
        f"Ensemble check: shortfall_total_t p5/p50/p95 = {p50['p5']:,.0f} / {p50['p50']:,.0f} / "
        f"{p50['p95']:,.0f} t.",
        "",
        "## Targets (issue 6) and where the time goes",
        "",
        "| target | status |",
        "|---|---|",
        "| single run <= 50 ms | not met: the kernel alone takes about twice that |",
        "| 10,000 runs x 144 months <= 60 s | not met (extrapolated row) |",
        "| vectorised >= 50x faster per run than the loop | not met (speed-up row) |",
        "| peak memory <= 4 GB for 10,000 runs | not verified: batch arrays are bounded by the "
        "batch size, but every run's summary series are kept (about 0.25 MB per run of float64 "
        "series at 144 months), about 2.5 GB more for 10,000 runs; a sweep keeps them on disk |",
        "",
        "Profile (cProfile, 200 runs of history-2025): about half the time is the licence queue "
        "(`policy/licences.py`: the pending volume by age for every exporter x destination x "
        "product, dense although only China's channels need licences), a quarter the market "
        "allocation over dense exporter x importer x product arrays, the rest numpy reductions. "
        "The next step is to keep licence and trade channels sparse (only routes with flow or "
        "rules) and use float32; a compiled backend (Numba) behind the same API is not built.",
    ]
    (ROOT / "docs" / "performance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
