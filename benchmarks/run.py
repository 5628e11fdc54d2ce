"""Benchmarks: `python benchmarks/run.py [--quick]` (or `make bench`); writes docs/performance.md.

Timings are ratios against a baseline measured in the same run, because the machines are shared
and noisy: the vectorised ensemble against the same runs evaluated one by one in a loop (what a
user of a generic exploratory-modelling tool would do with a per-run model function), and the
kernel against itself with the dense licence queue and allocation it had before issue 6. The
prose of docs/performance.md after the tables is kept in benchmarks/notes.md.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import rareflow
import rareflow.sim.kernel as kernel_module
from rareflow.compile import compile_scenario
from rareflow.ensemble import run_parameters, sample
from rareflow.sim.kernel import simulate_arrays

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def dense_reference():
    """The kernel with the pre-issue-6 licence queue and allocation (copies kept in
    tests/test_perf_equivalence.py), for before/after ratios measured in the same run."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import test_perf_equivalence as ref
    finally:
        sys.path.pop(0)
    saved = (kernel_module.LicenceQueue, kernel_module.review_hazards, kernel_module.allocate)
    kernel_module.LicenceQueue = ref._DenseQueue
    kernel_module.review_hazards = ref._dense_review_hazards
    kernel_module.allocate = ref._dense_allocate
    try:
        yield
    finally:
        (kernel_module.LicenceQueue, kernel_module.review_hazards,
         kernel_module.allocate) = saved


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


def _profile(fn) -> list[tuple[str, float]]:
    """Share of the time in the main parts of the kernel (cProfile, cumulative)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO()).stats
    total = max(v[3] for v in stats.values())
    parts = {"licence queue (LicenceQueue.step, allowed_share)": ("licences.py", ("step",
             "allowed_share")),
             "allocation (market.allocate)": ("market.py", ("allocate",)),
             "preference switching (market.switch_preferences)": ("market.py",
                                                                  ("switch_preferences",)),
             "licence statistics (kernel._licence_stats)": ("kernel.py", ("_licence_stats",)),
             "licence requests (kernel._licence_requests)": ("kernel.py",
                                                             ("_licence_requests",)),
             "magnet licence parameters (kernel._magnet_licences)": ("kernel.py",
                                                                     ("_magnet_licences",))}
    out = []
    for label, (file, names) in parts.items():
        cum = sum(v[3] for (f, _, name), v in stats.items() if f.endswith(file) and name in names)
        out.append((label, cum / total))
    out.append(("the rest of the kernel's month loop (array arithmetic and reductions)",
                1.0 - sum(x for _, x in out)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller ensembles")
    args = parser.parse_args()
    ds = rareflow.load_dataset()
    base = rareflow.load_scenario("baseline")
    hist = rareflow.load_scenario("history-2025")
    hist144 = hist.model_copy(update={"end": "2035-12"})
    rows = []

    # 1. single runs, kernel only, against the dense reference in the same process
    net, ctl = compile_scenario(ds, base)
    hnet, hctl = compile_scenario(ds, hist144)
    kernel_1 = _time(lambda: simulate_arrays(net, ctl, runs=1))
    hist_1 = _time(lambda: simulate_arrays(hnet, hctl, runs=1), repeat=3)
    with dense_reference():
        kernel_1_ref = _time(lambda: simulate_arrays(net, ctl, runs=1))
        hist_1_ref = _time(lambda: simulate_arrays(hnet, hctl, runs=1), repeat=3)
    full_1 = _time(lambda: rareflow.simulate(ds, base), repeat=3)
    rows.append(("single baseline run, 2024-2035 (kernel only)",
                 f"{kernel_1 * 1e3:.0f} ms", f"{kernel_1_ref * 1e3:.0f} ms",
                 f"{kernel_1_ref / kernel_1:.2f}x"))
    rows.append(("single history-2025 run to 2035, 144 months (kernel only)",
                 f"{hist_1 * 1e3:.0f} ms", f"{hist_1_ref * 1e3:.0f} ms",
                 f"{hist_1_ref / hist_1:.2f}x"))
    rows.append(("single baseline run, compile + kernel + result", f"{full_1 * 1e3:.0f} ms",
                 "", ""))

    # 2. a vectorised batch of 100 runs, kernel only, against the dense reference
    _, v100 = sample(hist144.uncertain, 100, seed=1)
    p100 = run_parameters(hist144.uncertain, v100)
    vec_k = _time(lambda: simulate_arrays(hnet, hctl, runs=100, params=p100), repeat=2) / 100
    with dense_reference():
        vec_k_ref = _time(lambda: simulate_arrays(hnet, hctl, runs=100, params=p100),
                          repeat=2) / 100
    rows.append(("history-2025 to 2035, 100 runs vectorised (kernel only), per run",
                 f"{vec_k * 1e3:.1f} ms", f"{vec_k_ref * 1e3:.1f} ms",
                 f"{vec_k_ref / vec_k:.2f}x"))

    # 3. the loop of one-run simulations against the vectorised ensemble (full API)
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
                 f"{loop * 1e3:.0f} ms", "", ""))
    rows.append((f"the same {n_loop} runs vectorised, per run", f"{vec * 1e3:.0f} ms", "", ""))
    rows.append(("speed-up of the vectorised ensemble over the loop", f"{loop / vec:.1f}x",
                 "", ""))

    # 4. an ensemble through the public API, two seeds
    n = 200 if args.quick else 1000
    heads = []
    ens_times = []
    for seed in (1, 2):
        t = time.perf_counter()
        res = rareflow.simulate(ds, hist144, runs=n, seed=seed, keep=False, batch_size=100)
        ens_times.append(time.perf_counter() - t)
        heads.append(res.summary()["headline"]["shortfall_total_t"])
    ens = statistics.mean(ens_times)
    # the same seed-1 ensemble in worker processes, one per core (results must not change)
    workers = os.cpu_count() or 1
    t = time.perf_counter()
    par = rareflow.simulate(ds, hist144, runs=n, seed=1, keep=False, batch_size=100,
                            workers=workers)
    ens_par = time.perf_counter() - t
    same = par.summary()["headline"]["shortfall_total_t"] == heads[0]
    series_mb = sum(a.nbytes for a in res.series().values()) / n / 1e6
    rows.append((f"ensemble of {n} runs x 144 months (batches of 100), mean of 2 seeds",
                 f"{ens:.1f} s", "", ""))
    rows.append(("extrapolated: 10,000 runs x 144 months", f"{ens * 10_000 / n / 60:.1f} min",
                 "", ""))
    rows.append((f"the seed-1 ensemble in {workers} worker processes "
                 f"({'identical' if same else 'DIFFERENT'} percentiles)", f"{ens_par:.1f} s",
                 f"{ens_times[0]:.1f} s", f"{ens_times[0] / ens_par:.2f}x"))
    rows.append((f"extrapolated: 10,000 runs x 144 months, {workers} workers",
                 f"{ens_par * 10_000 / n / 60:.1f} min", "", ""))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak resident memory of this process", f"{peak:,.0f} MB", "", ""))
    rows.append(("summary series kept per run (float64)", f"{series_mb:.3f} MB", "", ""))
    mem_10k = peak + series_mb * (10_000 - n)
    profile = _profile(lambda: simulate_arrays(hnet, hctl, runs=100, params=p100))

    def pct(h):
        return f"{h['p5']:,.0f} / {h['p50']:,.0f} / {h['p95']:,.0f}"

    spread = max(abs(heads[0][q] - heads[1][q]) / abs(heads[1][q]) for q in ("p5", "p50", "p95"))
    met = {
        "single": kernel_1 <= 0.050,
        "ensemble": min(ens, ens_par) * 10_000 / n <= 60,
        "speedup": loop / vec >= 50,
        "memory": mem_10k <= 4000,
    }

    def status(ok: bool) -> str:
        return "met" if ok else "not met"

    lines = [
        "# Performance",
        "",
        "Measured by `python benchmarks/run.py` (`make bench`); numbers from one run on the",
        f"machine below. Machine: {os.cpu_count()} cores, {_cpu()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}.",
        "",
        "\"before\" is the same kernel with the dense licence queue and allocation that issue 6",
        "replaced (reference copies in `tests/test_perf_equivalence.py`, which also checks that",
        "both give the same results to 1e-9), timed in the same process; the machine is shared",
        "and noisy, so compare the ratios rather than the absolute times between runs.",
        "",
        "| measure | now | before | speed-up |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        f"Ensemble check, shortfall_total_t p5 / p50 / p95: seed 1 {pct(heads[0])} t; seed 2 "
        f"{pct(heads[1])} t (largest relative difference between the seeds {spread:.1%}).",
        "",
        "## Targets (issue 6)",
        "",
        "| target | status |",
        "|---|---|",
        f"| single run <= 50 ms | {status(met['single'])} ({kernel_1 * 1e3:.0f} ms, kernel "
        "only) |",
        f"| 10,000 runs x 144 months <= 60 s | {status(met['ensemble'])} (extrapolated: "
        f"{ens * 10_000 / n / 60:.1f} min in one process, "
        f"{ens_par * 10_000 / n / 60:.1f} min in {workers}) |",
        f"| vectorised >= 50x faster per run than the loop | {status(met['speedup'])} "
        f"({loop / vec:.1f}x) |",
        f"| peak memory <= 4 GB for 10,000 runs | {status(met['memory'])} (estimated "
        f"{mem_10k / 1000:.1f} GB: this process's peak plus the summary series of the other "
        f"{10_000 - n:,} runs; batch arrays are bounded by the batch size and the series are "
        "written into arrays preallocated for all runs) |",
        "",
        "## Where the time goes",
        "",
        "cProfile of 100 vectorised runs of history-2025 to 2035 (kernel only), share of the "
        "time (cumulative):",
        "",
        "| part | share |",
        "|---|---|",
        *[f"| {label} | {share:.0%} |" for label, share in profile],
        "",
    ]
    notes = (ROOT / "benchmarks" / "notes.md")
    if notes.exists():
        lines += notes.read_text().rstrip().splitlines() + [""]
    (ROOT / "docs" / "performance.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
