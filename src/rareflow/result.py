"""Simulation results: an ``xarray.Dataset`` with named dimensions, and the summary contract.

The summary (``Result.summary()``, ``rareflow run --json``) is the stable contract that the report,
the API and the dashboard read; docs/results.md documents it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
import xarray as xr

from rareflow.dims import CHINA
from rareflow.sim.kernel import INVENTORY_STAGES, LICENCE_STATS, STAGES
from rareflow.sim.network import Network

PERCENTILES = (5, 50, 95)
#: The netCDF/HDF5 C library is not thread-safe: two runs writing result.nc from the web
#: server's worker threads at once crashed the process (segmentation fault). Every read and
#: write of a netCDF file in rareflow holds this lock.
NETCDF_LOCK = threading.Lock()
MARKETS = ("china", "ex_china")
TRADE_STAGES = ("concentrate", "refined", "magnet")
#: A month counts as short when the world shortfall exceeds this share of need (numerical noise
#: of the allocation is far below it).
SHORTFALL_THRESHOLD = 1e-4


def to_dataset(network: Network, raw: dict[str, np.ndarray], attrs: dict,
               capacity: np.ndarray | None = None, responses=None) -> xr.Dataset:
    """Wrap the kernel's arrays with coordinates and units.

    ``responses`` (a :class:`rareflow.sim.responses.ResponseInputs`) names the stockpile
    holders, substitution options and triggers of the responses model's variables.
    """
    net = network
    runs = raw["production"].shape[0]
    coords = {
        "run": np.arange(runs), "month": list(net.months), "stage": list(STAGES),
        "country": list(net.countries), "exporter": list(net.countries),
        "importer": list(net.countries), "trade_stage": list(TRADE_STAGES),
        "inventory_stage": list(INVENTORY_STAGES), "sector": list(net.sectors),
        "element": list(net.elements), "item": list(net.items), "market": list(MARKETS),
        "product": [*net.elements, *net.grades], "grade": list(net.grades),
    }
    kg = net.kg_per_unit
    units = raw["shortfall"] * 1000.0 / np.where(np.isnan(kg), np.inf, kg)[None, None, None, :]
    value = units * np.nan_to_num(net.unit_value_usd)[None, None, None, :]
    trade = raw["trade"]  # [R, T, 3, X, C]: concentrate, refined, magnet
    data = {
        "production": (("run", "month", "stage", "country"), raw["production"],
                       {"units": "t per month: REO (mining, separation), metal, magnet"}),
        "refined_output": (("run", "month", "country", "element"), raw["refined_output"],
                           {"units": "t REO per month"}),
        "trade": (("run", "month", "trade_stage", "exporter", "importer"), trade,
                  {"units": "t per month: REO (concentrate, refined), magnet (magnet)"}),
        "inventory": (("run", "month", "inventory_stage", "country"), raw["inventory"],
                      {"units": "t at month end: REO (concentrate, refined), magnet"}),
        "need": (("run", "month", "country", "sector"), raw["need"],
                 {"units": "t per month: magnet (magnet sectors), REO (other sectors)"}),
        "consumption": (("run", "month", "country", "sector"), raw["consumption"],
                        {"units": "t per month, as need"}),
        "shortfall": (("run", "month", "country", "sector"), raw["shortfall"],
                      {"units": "t per month, as need"}),
        "oxide_shortfall": (("run", "month", "country", "element"), raw["oxide_shortfall"],
                            {"units": "t REO per month, non-magnet uses"}),
        "units_not_built": (("run", "month", "country", "sector"), units,
                            {"units": "units of the sector's product (see sectors.csv)"}),
        "value_at_risk_usd": (("run", "month", "country", "sector"), value, {"units": "US$"}),
        "price": (("run", "month", "item", "market"), raw["price"], {"units": "US$/kg"}),
        "licences": (("run", "month", "licence_stat", "country"), raw["licences"],
                     {"units": "t per month of licensed product (refined t REO + magnet t), "
                               "by destination; backlog in t per month of flow awaiting review"}),
        "licence_wait_days": (("run", "month"), raw["licence_wait_days"],
                              {"units": "days: median wait of the decisions made that month"}),
        "held_back": (("run", "month", "country", "product"), raw["held_back"],
                      {"units": "t per month held back by licences or bans, by destination; "
                                "refined elements in t REO, magnet grades in t magnet"}),
        "mine_composition": (("country", "element"), net.mine_composition,
                             {"units": "share of each element in mined REO"}),
        "grade_content": (("grade", "element"), net.grade_content,
                          {"units": "t oxide (REO basis) per t of magnet"}),
        "balance_error": (("run", "month", "balance"), raw["balance_error"],
                          {"units": "relative error of each stage's mass balance"}),
        "min_stock": (("run", "month"), raw["min_stock"], {"units": "t"}),
    }
    if "magnet_fill" in raw:
        data["magnet_fill"] = (("run", "month", "exporter", "importer", "grade"),
                               raw["magnet_fill"], {"units": "share of open-route requests "
                                                             "that shipped"})
        data["refined_fill"] = (("run", "month", "exporter", "importer", "element"),
                                raw["refined_fill"], {"units": "share of open-route requests "
                                                               "that shipped"})
    if capacity is not None:
        data["capacity"] = (("month", "capacity_stage", "country"), capacity,
                            {"units": "t per month: REO feed (mining, separation), magnet"})
        coords["capacity_stage"] = ["mining", "separation", "magnet"]
    if "capacity_run" in raw:
        data.update(_response_variables(network, raw, responses, coords))
    coords["balance"] = ["concentrate", "separation", "refined", "magnet", "users"]
    coords["licence_stat"] = list(LICENCE_STATS)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _response_variables(net: Network, raw: dict, responses, coords: dict) -> dict:
    """The responses model's variables (see docs/results.md)."""
    from rareflow.sim.responses import POLICY_COSTS

    coords["capacity_stage"] = ["mining", "separation", "magnet"]
    coords["policy_cost_kind"] = list(POLICY_COSTS)
    coords["recycling"] = ["recovered", "added_supply"]
    coords["holder"] = list(responses.sp_ids)
    coords["residue_kind"] = ["residue_t", "thorium_kg"]
    coords["option"] = [f"{net.sectors[s]}:{'magnet' if e < 0 else net.elements[e]}:{k}"
                        for k, (s, e) in enumerate(zip(responses.opt_sector,
                                                       responses.opt_element, strict=True))]
    out = {
        "capacity_run": (("run", "month", "capacity_stage", "country"), raw["capacity_run"],
                         {"units": "t per month in use (new capacity and shutdowns "
                                   "included): REO (mining, separation feed), magnet"}),
        "capacity_new": (("run", "month", "capacity_stage", "country"), raw["capacity_new"],
                         {"units": "t per month of capacity decided inside the model, in "
                                   "place (ramping) that month"}),
        "capacity_committed": (("run", "capacity_stage", "country"), raw["capacity_committed"],
                               {"units": "t per month of capacity committed over the horizon, "
                                         "arrived or not"}),
        "policy_cost": (("run", "month", "policy_cost_kind"), raw["policy_cost"],
                        {"units": "US$ per month paid by governments"}),
        "recycled": (("run", "month", "recycling"), raw["recycled"],
                     {"units": "t REO per month from end-of-life magnets"}),
        "recycled_by_country": (("run", "month", "country"), raw["recycled_by_country"],
                                {"units": "t REO per month recovered from the country's "
                                          "end-of-life magnets"}),
        "investment": (("run", "month"), raw["investment"],
                       {"units": "US$ of capital committed to new capacity that month"}),
        "stockpile_level": (("run", "month", "holder"), raw["stockpile_level"],
                            {"units": "t (magnet or oxide, as the holder's item)"}),
        "adoption": (("run", "month", "market", "option"), raw["adoption"],
                     {"units": "share of the sector that adopted the option"}),
        "demand_factor": (("run", "month", "market"), raw["demand_factor"],
                          {"units": "magnet need after price response / before [-]"}),
        "residue": (("run", "month", "residue_kind"), raw["residue"],
                    {"units": "per month, from new separation capacity: t solid residue, "
                              "kg thorium"}),
    }
    if "trigger_fired_month" in raw:
        coords["trigger"] = list(responses.triggers.ids)
        out["trigger_fired_month"] = (("run", "trigger"), raw["trigger_fired_month"],
                                      {"units": "month index the trigger fired (NaN: never)"})
    return out


def _time_to_recover(short: np.ndarray, need: np.ndarray, first: float) -> float:
    """Months from the first short month to the end of the last short spell (0 if never
    short); a run still short at the end is censored at the horizon (months left)."""
    from rareflow.metrics import time_to_recover

    if np.isnan(first):
        return 0.0
    start = int(first)
    months = time_to_recover(short, need, start, threshold=SHORTFALL_THRESHOLD)
    return float(len(short) - start) if np.isinf(months) else months


def _response_series(d: xr.Dataset, attrs: dict) -> dict[str, np.ndarray]:
    """Series of the responses model (docs/results.md)."""
    out: dict[str, np.ndarray] = {}
    cost = d["policy_cost"]
    out["policy_cost_usd"] = cost.sum("policy_cost_kind").values
    for kind in cost["policy_cost_kind"].values:
        out[f"policy_cost_usd.{kind}"] = cost.sel(policy_cost_kind=kind).values
        out[f"policy_cost_usd_cumulative.{kind}"] = np.cumsum(
            out[f"policy_cost_usd.{kind}"], axis=1)
    out["recycled_t"] = d["recycled"].sel(recycling="recovered").values
    out["residue_t"] = d["residue"].sel(residue_kind="residue_t").values
    for holder in d["holder"].values:
        out[f"stockpile_t.{holder}"] = d["stockpile_level"].sel(holder=holder).values
    for market in MARKETS:
        out[f"demand_factor.{market}"] = d["demand_factor"].sel(market=market).values
    cap = d["capacity_run"]
    outside = [c for c in cap["country"].values if c != CHINA]
    for stage in cap["capacity_stage"].values:
        out[f"capacity_t.{stage}.outside_china"] = cap.sel(
            capacity_stage=stage, country=outside).sum("country").values
        for code in cap["country"].values:  # every country, so that batches agree on names
            out[f"capacity_t.{stage}.{code}"] = cap.sel(capacity_stage=stage, country=code).values
    blocs = json.loads(attrs.get("blocs", "{}"))
    sector_grade = json.loads(attrs.get("sector_grade", "{}"))
    reo_per_t = d["grade_content"].sum("element")
    need = d["need"]
    magnet_sectors = [s for s in need["sector"].values if s in sector_grade]
    other_sectors = [s for s in need["sector"].values if s not in sector_grade]
    for bloc, members in blocs.items():
        members = [c for c in members if c in need["country"].values]
        if not members:
            continue
        bloc_need = need.sel(country=members).sum("country")
        magnet_need = bloc_need.sel(sector=magnet_sectors)
        reo_need = sum(magnet_need.sel(sector=s).values * float(
            reo_per_t.sel(grade=sector_grade[s])) for s in magnet_sectors)
        reo_need = reo_need + bloc_need.sel(sector=other_sectors).sum("sector").values
        made = d["production"].sel(country=members).sum("country")
        for stage, demand in (("mining", reo_need), ("separation", reo_need),
                              ("magnet", magnet_need.sum("sector").values)):
            supply = made.sel(stage=stage).values
            out[f"self_sufficiency.{bloc}.{stage}"] = np.divide(
                supply, demand, out=np.zeros_like(supply), where=demand > 0)
        if bloc == "EU":
            trade = d["trade"].sel(trade_stage="refined", importer=members).sum("importer")
            outside = [c for c in trade["exporter"].values if c not in members]
            imports = trade.sel(exporter=outside)
            total = imports.sum("exporter").values
            largest = imports.max("exporter").values
            out["crma.largest_supplier_share.refined"] = np.divide(
                largest, total, out=np.zeros_like(total), where=total > 0)
            recycled = d["recycled_by_country"].sel(country=members).sum("country").values
            out["crma.recycling_share"] = np.divide(
                recycled, reo_need, out=np.zeros_like(recycled), where=reo_need > 0)
    return out


def _json_number(value: float) -> float | None:
    """A number for JSON: rounded, None where not finite (JSON has no NaN)."""
    return round(float(value), 4) if np.isfinite(value) else None


def _bands(values: np.ndarray) -> dict[str, list[float | None]]:
    """values [R, T] -> percentiles over runs, rounded for JSON."""
    pct = np.percentile(values, PERCENTILES, axis=0)
    return {f"p{p}": [_json_number(v) for v in row] for p, row in zip(PERCENTILES, pct,
                                                                    strict=True)}


def _series_bands(series: dict[str, np.ndarray]) -> dict[str, dict]:
    """:func:`_bands` of every series. Percentiles over 10,000 runs take a second or two for a
    hundred series, and numpy's partition releases the GIL: two threads halve that."""
    names = list(series)
    if len(names) < 2 or next(iter(series.values())).shape[0] < 1000:
        return {name: _bands(series[name]) for name in names}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(names), os.cpu_count() or 1, 4)) as pool:
        return dict(zip(names, pool.map(lambda name: _bands(series[name]), names),
                        strict=True))


def is_event_month(name: str) -> bool:
    """Whether headline ``name`` is the month an event happened, NaN where it did not happen
    within the horizon (``first_shortfall_month``, ``trigger_fired_month.*``)."""
    return name == "first_shortfall_month" or name.startswith("trigger_fired_month.")


def _scalar_bands(values: np.ndarray, never_is_late: bool = False,
                  method: str = "linear") -> dict[str, float | None]:
    """Percentiles over runs. NaN runs are left out, except where NaN means that an event never
    happened (``never_is_late``): those count as later than any month, and a percentile that
    falls among them is None ("not within the horizon"). ``method`` is numpy's percentile
    method (``"inverted_cdf"``: always a value some run has)."""
    if never_is_late:
        values = np.where(np.isnan(values), np.inf, values)
        with np.errstate(invalid="ignore"):
            pct = np.percentile(values, PERCENTILES, method="lower")
        return {f"p{p}": _json_number(v) for p, v in zip(PERCENTILES, pct, strict=True)}
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return {f"p{p}": None for p in PERCENTILES}
    pct = np.percentile(finite, PERCENTILES, method=method)
    return {f"p{p}": round(float(v), 4) for p, v in zip(PERCENTILES, pct, strict=True)}


#: Headline numbers of every run (the responses model adds :func:`headline_names`' others).
BASE_HEADLINES = ("units_not_built_total", "value_at_risk_usd", "first_shortfall_month",
                  "shortfall_total_t", "time_to_recover_months")
_RESPONSE_HEADLINES = ("policy_cost_usd_total", "investment_usd_total", "recycled_t_total",
                       "residue_t_total", "thorium_kg_total")
_CAPACITY_STAGES = ("mining", "separation", "magnet")


def headline_names(scenario) -> list[str]:
    """The names :meth:`Result.headline` will give for ``scenario``, known before it runs (so
    that a misspelt output, condition or threshold is refused before any run)."""
    names = list(BASE_HEADLINES)
    if scenario.responses is not None and scenario.responses.enabled:
        names += list(_RESPONSE_HEADLINES)
        names += [f"{kind}_capacity_t_per_year.{stage}" for stage in _CAPACITY_STAGES
                  for kind in ("new", "committed")]
        names += [f"trigger_fired_month.{t.id}" for t in scenario.responses.triggers]
    return names


def outcome_values(headline: dict[str, np.ndarray], name: str, months: int) -> np.ndarray:
    """Headline ``name`` as one number per run for analyses (PRIM, Sobol indices): a month an
    event never happened in takes the horizon's length ``months`` (censored: after the last
    month). Other NaN values raise ValueError, as no analysis can use them."""
    values = np.asarray(headline[name], dtype=float)
    if is_event_month(name):
        return np.where(np.isnan(values), float(months), values)
    if np.isnan(values).any():
        raise ValueError(f"{name}: {int(np.isnan(values).sum())} of {len(values)} runs have no "
                         "value")
    return values


class Result:
    """What ``rareflow.simulate`` returns: the dataset plus the summary contract.

    Large ensembles keep only the per-run summary series and headline numbers (``data`` is then
    None); smaller ones keep the full ``xarray.Dataset`` too.
    """

    def __init__(self, dataset: xr.Dataset | None, *, series: dict | None = None,
                 headline: dict | None = None, checks: dict | None = None,
                 attrs: dict | None = None, months: list[str] | None = None,
                 parameters: tuple[list[str], np.ndarray] | None = None,
                 thresholds: dict | None = None):
        self._data = dataset
        self._series = series
        self._headline = headline
        self._checks = checks
        self.attrs = dict(attrs if attrs is not None else (dataset.attrs if dataset is not None
                                                           else {}))
        self._months = months
        self.parameters = parameters or ([], np.zeros((self.runs, 0)))
        self.thresholds = thresholds or {}

    @property
    def data(self) -> xr.Dataset:
        if self._data is None:
            raise ValueError("this ensemble kept only its summary; run with keep=True (or fewer "
                             "runs) for the full dataset")
        return self._data

    @property
    def has_data(self) -> bool:
        return self._data is not None

    @property
    def runs(self) -> int:
        if self._data is not None:
            return int(self._data.sizes["run"])
        return len(next(iter(self._headline.values())))

    @property
    def months(self) -> list[str]:
        if self._months is not None:
            return self._months
        return [str(m) for m in self.data["month"].values]

    def series(self) -> dict[str, np.ndarray]:
        """Every summary series as [run, month] arrays."""
        if self._series is not None:
            return self._series
        d = self.data
        out: dict[str, np.ndarray] = {}
        # numpy on the variables' arrays, by position: xarray's label selection costs more
        # than the sums here in an ensemble's batches (the same selections and sums)
        at = {dim: {str(label): i for i, label in enumerate(d[dim].values)}
              for dim in ("trade_stage", "exporter", "importer", "country", "sector", "item",
                          "market", "inventory_stage", "licence_stat", "stage")}

        def pick(name: str, **where: str) -> tuple[np.ndarray, tuple[str, ...]]:
            """Variable ``name`` with one label taken on each dimension in ``where`` (a view),
            and its remaining dimensions."""
            var = d[name]
            index = tuple(at[dim][where[dim]] if dim in where else slice(None)
                          for dim in var.dims)
            return var.values[index], tuple(dim for dim in var.dims if dim not in where)

        def total(name: str, over: str, **where: str) -> tuple[np.ndarray, tuple[str, ...]]:
            values, dims = pick(name, **where)
            return values.sum(axis=dims.index(over)), tuple(x for x in dims if x != over)

        magnets, _ = pick("trade", trade_stage="magnet", exporter=CHINA)  # [run, month, importer]
        foreign = [c for c in d["importer"].values if c != CHINA]
        out["china_magnet_exports_t"] = magnets[..., [at["importer"][c] for c in foreign]].sum(
            axis=-1)
        for code in foreign:
            out[f"china_magnet_exports_to_{code}_t"] = magnets[..., at["importer"][code]]
        short, dims = total("shortfall", "country")
        units, _ = total("units_not_built", "country")
        need, _ = total("need", "country")
        sector_axis = dims.index("sector")
        for sector in d["sector"].values:
            k = at["sector"][str(sector)]
            out[f"shortfall_t.{sector}"] = np.take(short, k, axis=sector_axis)
            out[f"units_not_built.{sector}"] = np.take(units, k, axis=sector_axis)
        for item in d["item"].values:
            for market in MARKETS:
                out[f"price_usd_per_kg.{item}.{market}"] = pick("price", item=str(item),
                                                                market=market)[0]
        users, _ = total("inventory", "country", inventory_stage="users")
        weekly = need.sum(axis=sector_axis) * 12.0 / 52.0
        out["inventory_weeks.all_magnet_users"] = np.divide(
            users, weekly, out=np.zeros_like(users), where=weekly > 0)
        for stat in ("applications", "approved", "denied", "backlog"):
            out[f"licences.{stat}"] = total("licences", "country", licence_stat=stat)[0]
        out["licences.median_wait_days"] = np.nan_to_num(d["licence_wait_days"].values)
        for code in d["country"].values:
            if code != CHINA:
                out[f"licences.held_back_t.{code}"] = pick(
                    "licences", licence_stat="held_back", country=str(code))[0]
        for stage in STAGES:
            world = total("production", "country", stage=stage)[0]
            china = pick("production", stage=stage, country=CHINA)[0]
            out[f"production_t.{stage}"] = world
            out[f"china_share.{stage}"] = np.divide(
                china, world, out=np.zeros_like(world), where=world > 0)
        if "capacity_run" in d:
            out.update(_response_series(d, self.attrs))
        return out

    def headline(self) -> dict[str, np.ndarray]:
        """Per-run scalars."""
        if self._headline is not None:
            return self._headline
        d = self.data
        units = d["units_not_built"].sum(("month", "country", "sector"), skipna=False).values
        value = d["value_at_risk_usd"].sum(("month", "country", "sector"), skipna=False).values
        short = d["shortfall"].sum(("country", "sector"), skipna=False).values
        need = d["need"].sum(("country", "sector"), skipna=False).values
        is_short = short > SHORTFALL_THRESHOLD * np.maximum(need, 1e-9)
        first = np.where(is_short.any(axis=1), is_short.argmax(axis=1).astype(float), np.nan)
        recover = np.array([_time_to_recover(short[r], need[r], first[r])
                            for r in range(short.shape[0])])
        out = {
            "units_not_built_total": units,
            "value_at_risk_usd": value,
            "first_shortfall_month": first,
            "shortfall_total_t": short.sum(axis=1),
            "time_to_recover_months": recover,
        }
        if "capacity_run" in d:
            out["policy_cost_usd_total"] = d["policy_cost"].sum(
                ("month", "policy_cost_kind")).values
            out["investment_usd_total"] = d["investment"].sum("month", skipna=False).values
            out["recycled_t_total"] = d["recycled"].sel(recycling="recovered").sum(
                "month").values
            out["residue_t_total"] = d["residue"].sel(residue_kind="residue_t").sum(
                "month").values
            out["thorium_kg_total"] = d["residue"].sel(residue_kind="thorium_kg").sum(
                "month").values
            for stage in d["capacity_stage"].values:
                out[f"new_capacity_t_per_year.{stage}"] = 12.0 * d["capacity_new"].sel(
                    capacity_stage=stage).isel(month=-1).sum("country", skipna=False).values
                out[f"committed_capacity_t_per_year.{stage}"] = 12.0 * d[
                    "capacity_committed"].sel(capacity_stage=stage).sum(
                    "country", skipna=False).values
            if "trigger_fired_month" in d:
                for trig in d["trigger"].values:
                    out[f"trigger_fired_month.{trig}"] = d["trigger_fired_month"].sel(
                        trigger=trig).values
        return out

    def checks(self) -> dict[str, float]:
        if self._checks is not None:
            return self._checks
        return {
            "mass_balance_max_rel_error": float(self.data["balance_error"].max()),
            "min_stock_t": float(self.data["min_stock"].min()),
        }

    def summary(self) -> dict:
        """The summary contract (docs/results.md)."""
        attrs = self.attrs
        headline = {}
        for name, values in self.headline().items():
            bands = _scalar_bands(values, never_is_late=is_event_month(name))
            if name == "first_shortfall_month":
                bands = {k: (None if v is None else int(round(v))) for k, v in bands.items()}
            headline[name] = bands
        from rareflow.ensemble import exceedance

        labels, values = self.parameters
        out = {
            "scenario": attrs.get("scenario"),
            "runs": self.runs,
            "seed": attrs.get("seed"),
            "months": self.months,
            "series": _series_bands(self.series()),
            "headline": headline,
            # (not finite: None, as JSON has no NaN)
            "checks": {k: (float(v) if np.isfinite(v) else None)
                       for k, v in self.checks().items()},
        }
        if attrs.get("notes"):
            out["notes"] = json.loads(attrs["notes"])
        if labels:  # values some run used: a choice's p50 is one of its values
            out["parameters"] = {label: _scalar_bands(values[:, k], method="inverted_cdf")
                                 for k, label in enumerate(labels)}
        if self.thresholds:
            out["exceedance"] = exceedance(self.headline(), self.thresholds)
        return out

    # ---- persistence ---------------------------------------------------------------------------
    def to_netcdf(self, path: str | Path) -> None:
        with NETCDF_LOCK:
            self.data.to_netcdf(path)

    def to_parquet(self, directory: str | Path) -> None:
        """One Parquet file per variable, in long (tidy) form."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, var in self.data.data_vars.items():
            var.to_dataframe(name=name).reset_index().to_parquet(directory / f"{name}.parquet")

    def write(self, out_dir: str | Path) -> Path:
        """Write summary.json, result.nc and parquet/ atomically: all of it or nothing.

        Everything is written into a temporary directory beside ``out_dir`` and renamed into
        place at the end, so an interrupted run never leaves a half-written result.
        """
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        try:
            (tmp / "summary.json").write_text(json.dumps(self.summary(), indent=1))
            if "scenario_json" in self.attrs:
                (tmp / "scenario.json").write_text(self.attrs["scenario_json"])
            labels, values = self.parameters
            if labels:
                import pandas as pd

                pd.DataFrame(values, columns=labels).rename_axis("run").reset_index().to_parquet(
                    tmp / "parameters.parquet")
            if self.has_data:
                self.to_netcdf(tmp / "result.nc")
                self.to_parquet(tmp / "parquet")
            if out_dir.exists():
                old = out_dir.with_name(f".{out_dir.name}.old")
                os.replace(out_dir, old)
                os.replace(tmp, out_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out_dir
