"""Static charts (PNG or PDF) with matplotlib, for papers and slides: the same fan charts as the
HTML report, drawn from a run's summary."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rareflow.report.charts import top_sectors  # noqa: E402


def _fan(ax, summary: dict, names: list[str], labels: list[str]) -> None:
    months = summary["months"]
    x = range(len(months))
    for name, label in zip(names, labels, strict=True):
        bands = summary["series"].get(name)
        if bands is None:
            continue
        line, = ax.plot(x, bands["p50"], label=label, linewidth=1.6)
        ax.fill_between(x, bands["p5"], bands["p95"], color=line.get_color(), alpha=0.15)
    step = max(1, len(months) // 8)
    ax.set_xticks(list(x)[::step], months[::step], rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)


def write_static(run_dir: str | Path, out_dir: str | Path, fmt: str = "png") -> list[Path]:
    """Shortfall, price and export fan charts of ``run_dir`` as ``fmt`` files in ``out_dir``."""
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = []
    sectors = top_sectors(summary)
    specs.append(("shortfall", "Shortfall by sector (t per month)",
                  [f"shortfall_t.{s}" for s in sectors], sectors, False))
    names, labels = [], []
    for item in ("NdPr_oxide", "Dy2O3"):
        for market in ("china", "ex_china"):
            names.append(f"price_usd_per_kg.{item}.{market}")
            labels.append(f"{item} {market}")
    specs.append(("prices", "Prices (US$/kg, log scale)", names, labels, True))
    specs.append(("exports", "China's magnet exports (t per month)", ["china_magnet_exports_t"],
                  ["all destinations"], False))
    written = []
    for key, title, names, labels, log in specs:
        fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
        _fan(ax, summary, names, labels)
        ax.set_title(f"{summary['scenario']}: {title}", fontsize=11)
        if log:
            ax.set_yscale("log")
        fig.tight_layout()
        path = out / f"{key}.{fmt}"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
