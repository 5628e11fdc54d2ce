"""Compile the dataset and a scenario into the kernel's arrays (a calibrated base year).

Every number the kernel uses comes from a dataset table; where the model needs a rule to turn
the tables into arrays (which country processes an unassigned concentrate, how a sector's demand
splits over countries), the rule is stated here and in docs/model.md. Nothing here does I/O.

Base-year calibration
---------------------
* Mines produce the USGS output of each year the newest edition reports, then hold the last
  year's level, plus pipeline mines (construction/ramping, and planned ones if the scenario
  asks) from their start year, ramping linearly.
* Concentrate follows ``trade_links``; a country with no separation row sends what is left to the
  rest-of-world pool (``ROW``).
* Separation capacity is the reported output divided by the recovery rate. China's reported
  figure is its smelting quota, which excludes processing of imported feed (Metalnomist 2024:
  20-21 kt NdPr oxide from imported feed on top of the quota), so China's capacity is at least its
  base-year feed.
* Magnet consumption by country is apparent consumption: output + imports - exports (stage_output,
  trade_links); it is split over sectors by units x intensity, the unexplained remainder going to
  ``other_magnet_uses``.
* Where the mined and separated elements fall short of what the reported magnet output needs, the
  world deficit of each element in the base year is carried as ``secondary_supply`` in China:
  unrecorded mining and recycling (Argus: China recovered 34,147 t REO from NdFeB scrap in 2024).
  Where they exceed it, the surplus is the non-magnet demand for that element.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rareflow.data import Dataset
from rareflow.data.consistency import latest_edition
from rareflow.data.validation import is_blank
from rareflow.dims import CHINA, REST_OF_WORLD, WEEKS_PER_MONTH, WORLD
from rareflow.policy.compile import PolicyTensors, compile_rules, regimes_from_table
from rareflow.policy.rules import Rule, parse_date, rules_from_table
from rareflow.scenario import (
    DemandShock,
    FacilityOutage,
    Scenario,
    ScenarioError,
    StockpileAction,
    TradeRestriction,
    month_index,
)
from rareflow.sim.network import Controls, Network

OTHER = "other"
PIPELINE_STATUSES = ("construction", "ramping")
#: Ramp-up years where a facility does not state one. Observed: Lynas Kalgoorlie opened Nov 2024
#: and was still ramping in 2025-26; Neo Narva started May 2025 with ramp-up through 2026.
DEFAULT_RAMP_YEARS = 2.0
PRICE_SMOOTHING = 0.5
#: Aggregate refined trade rows count as foreign non-magnet demand only this many years before
#: the base year (the 2009 rows serve the 2010 base year, not 2024).
FOREIGN_DEMAND_WINDOW = 2


def _years(months: list[str]) -> np.ndarray:
    return np.array([int(m[:4]) for m in months])


def _ramp(months: list[str], start_year: int, ramp_years: float) -> np.ndarray:
    """Share of capacity available in each month: 0 before start, linear ramp to 1."""
    years = _years(months) + (np.array([int(m[5:7]) for m in months]) - 1) / 12.0
    if ramp_years <= 0:
        return (years >= start_year).astype(float)
    return np.clip((years - start_year) / ramp_years, 0.0, 1.0) * (years >= start_year)


class _Builder:
    def __init__(self, dataset: Dataset, scenario: Scenario):
        self.ds = dataset
        self.sc = scenario
        self.months = scenario.months
        self.base = scenario.base_year
        self.notes: dict[str, str] = {}
        self.uncertain_pipeline: dict[str, np.ndarray] = {}
        el = dataset.elements.sort_values("atomic_number")
        self.elements = [*el["symbol"].tolist(), OTHER]
        self.heavy = np.array([*(el["group"] == "heavy").tolist(), False])
        self.oxide_to_metal = np.array([*el["oxide_to_metal"].tolist(), 0.85])
        self.all_facilities = self._facilities(keep_within=True)
        self.facilities = self._facilities()
        self.countries = self._countries()
        self.e = {s: i for i, s in enumerate(self.elements)}
        self.c = {s: i for i, s in enumerate(self.countries)}

    # ---- coordinates -------------------------------------------------------------------------
    def _facilities(self, keep_within: bool = False) -> pd.DataFrame:
        fac = self.ds.facilities.copy()
        for ov in self.sc.overrides:
            row = fac["facility_id"] == ov.facility
            if ov.capacity is not None:
                fac.loc[row, "capacity"] = ov.capacity
            if ov.start_year is not None:
                fac.loc[row, "start_year"] = ov.start_year
            if ov.status is not None:
                fac.loc[row, "status"] = ov.status
        return fac if keep_within else fac[fac["within"].map(is_blank)]

    def _pipeline(self, stage: str) -> pd.DataFrame:
        fac = self.facilities
        # Operating plants that started after the base year are new capacity too (a 2010 base
        # year meets Lynas Malaysia, opened 2012, this way).
        statuses = ["operating", *PIPELINE_STATUSES] + (
            ["planned"] if self.sc.settings.include_planned else [])
        rows = fac[(fac["stage"] == stage) & fac["status"].isin(statuses)
                   & fac["capacity"].notna() & fac["start_year"].notna()]
        return rows[rows["start_year"] > self.base]

    def _countries(self) -> list[str]:
        ds = self.ds
        names: set[str] = set()
        mp = latest_edition(ds.mine_production, self.base)
        names |= set(mp.loc[mp["value"] > 0, "country"])
        so = ds.stage_output
        names |= set(so.loc[(so["year"] == self.base) & so["value"].notna(), "country"])
        tl = ds.trade_links
        tl = tl[tl["year"] == self.base]
        names |= set(tl["exporter"]) | set(tl["importer"])
        for stage in ("mining", "separation", "magnet"):
            names |= set(self._pipeline(stage)["country"])
        names.discard(WORLD)
        names.add(REST_OF_WORLD)
        ordered = sorted(names - {CHINA, REST_OF_WORLD})
        return [CHINA, *ordered, REST_OF_WORLD]

    # ---- supply ------------------------------------------------------------------------------
    def mine_capacity(self) -> np.ndarray:
        mp = self.ds.mine_production
        years = _years(self.months)
        cap = np.zeros((len(self.months), len(self.countries)))
        known = sorted(int(y) for y in mp["year"].dropna().unique() if y >= self.base)
        # each year's newest edition; a country missing from a later year keeps its last
        # reported value (DS140 gives only the US and world for 2011-2014, for example)
        by_year = {y: latest_edition(mp, y) for y in known}
        for ti, year in enumerate(years):
            latest: dict[str, float] = {}
            for y in [y for y in known if y <= year] or [self.base]:
                for _, row in by_year.get(y, latest_edition(mp, y)).iterrows():
                    latest[row["country"]] = row["value"]
            for country, value in latest.items():
                if country in self.c:
                    cap[ti, self.c[country]] += value / 12.0
                elif country != WORLD:
                    cap[ti, self.c[REST_OF_WORLD]] += value / 12.0
        self._add_pipeline(cap, "mining", ndpr=None, recovery=1.0)
        return cap

    def last_reported_year(self) -> int:
        years = self.ds.mine_production["year"].dropna()
        return int(years.max()) if len(years) else self.base

    def _ramp_years(self, facility: pd.Series) -> float:
        value = facility["ramp_years"]
        return DEFAULT_RAMP_YEARS if value is None or math.isnan(value) else float(value)

    def mine_composition(self) -> np.ndarray:
        comp = self.ds.deposit_composition
        by_deposit: dict[str, np.ndarray] = {}
        for deposit, group in comp.groupby("deposit_type"):
            vec = np.zeros(len(self.elements))
            for _, row in group.iterrows():
                vec[self.e[row["element"]]] += row["share"]
            vec[self.e[OTHER]] += max(0.0, 1.0 - vec.sum())
            by_deposit[deposit] = vec / vec.sum()
        out = np.zeros((len(self.countries), len(self.elements)))
        fac = self.facilities
        mines = fac[(fac["stage"] == "mining") & fac["deposit_type"].notna()
                    & fac["capacity_unit"].isin(["t REO/yr", "t NdPr oxide/yr"])]
        types = self.ds.deposit_types
        ndpr = [self.e["Nd"], self.e["Pr"]]
        for code, ci in self.c.items():
            here = mines[mines["country"] == code]
            weights: dict[str, float] = {}
            for _, m in here.iterrows():
                reo = m["capacity"]
                if m["capacity_unit"] == "t NdPr oxide/yr":
                    # a mine rated by its NdPr output (Mt Weld): its REO from the deposit's
                    # Nd + Pr share; left out where the deposit has no composition
                    share = by_deposit.get(m["deposit_type"], np.zeros(1))[ndpr].sum() \
                        if m["deposit_type"] in by_deposit else 0.0
                    if share <= 0:
                        continue
                    reo = m["capacity"] / share
                weights[m["deposit_type"]] = weights.get(m["deposit_type"], 0) + reo
            if not weights:
                listed = types[types["countries"].map(lambda cs, code=code: code in cs)]
                weights = {d: 1.0 for d in listed["code"]}
            vec = np.zeros(len(self.elements))
            for deposit, w in weights.items():
                vec += w * by_deposit.get(deposit, np.eye(len(self.elements))[self.e[OTHER]])
            if vec.sum() == 0:
                vec[self.e[OTHER]] = 1.0
            out[ci] = vec / vec.sum()
        return out

    def _stage_output(self, stage: str) -> dict[str, float]:
        so = self.ds.stage_output
        rows = so[(so["stage"] == stage) & (so["year"] == self.base) & so["value"].notna()
                  & (so["country"] != WORLD)]
        return {r["country"]: float(r["value"]) for _, r in rows.iterrows()}

    def conc_shares(self, separation: dict[str, float]) -> np.ndarray:
        tl = self.ds.trade_links
        tl = tl[(tl["stage"] == "mining") & (tl["year"] == self.base) & tl["value"].notna()]
        mp = latest_edition(self.ds.mine_production, self.base)
        production = {r["country"]: r["value"] for _, r in mp.iterrows()}
        n = len(self.countries)
        shares = np.zeros((n, n))
        for code, xi in self.c.items():
            made = production.get(code, 0.0)
            flows = tl[tl["exporter"] == code]
            for _, f in flows.iterrows():
                if f["importer"] in self.c and made > 0:
                    shares[xi, self.c[f["importer"]]] += min(1.0, f["value"] / made)
            shares[xi] = shares[xi] / max(1.0, shares[xi].sum())
            rest = 1.0 - shares[xi].sum()
            # Without base-year separation tonnages (2010) every country processes at home.
            home = xi if (code in separation or not separation) else self.c[REST_OF_WORLD]
            shares[xi, home] += rest
        self.notes["concentrate"] = (
            "countries without a separation row send unassigned concentrate to ROW"
        )
        return shares

    def sep_capacity(self, separation: dict[str, float], feed: np.ndarray,
                     recovery: float, ndpr: np.ndarray) -> np.ndarray:
        cap = np.zeros((len(self.months), len(self.countries)))
        for code, value in separation.items():
            cap[:, self.c[code]] = value / recovery / 12.0
        if not separation:
            # No separation tonnages for the base year (2010: shares only): every country
            # separates the feed it received in the base year.
            cap[:] = feed[None, :]
            self.notes["separation"] = "no base-year separation tonnages: capacity = base feed"
        china = self.c[CHINA]
        cap[:, china] = np.maximum(cap[:, china], feed[china])
        self._add_pipeline(cap, "separation", ndpr, recovery)
        return cap

    def ndpr_shares(self, composition: np.ndarray, feed: np.ndarray) -> np.ndarray:
        """NdPr share [-] of each country's feed, for capacities stated in t NdPr oxide/yr.

        A country whose own ores carry under 5 % NdPr (or none) is taken to process feed of
        the world's average NdPr share, weighted by base-year feed.
        """
        share = composition[:, [self.e["Nd"], self.e["Pr"]]].sum(axis=1)
        world = float(np.average(share, weights=np.maximum(feed, 1e-9)))
        return np.where(share >= 0.05, share, world)

    def _add_pipeline(self, cap: np.ndarray, stage: str, ndpr: np.ndarray | None,
                      recovery: float) -> None:
        """Add new facilities' capacity [unit of ``cap`` per month] along their ramp-up.

        The part from projects outside China that are not yet operating is also kept in
        ``self.uncertain_pipeline[stage]``, where per-run delays and completion shares act.
        """
        uncertain = np.zeros_like(cap)
        for _, f in self._pipeline(stage).iterrows():
            ci = self.c[f["country"]]
            annual = self._in_country_unit(f, stage, None if ndpr is None else ndpr[ci],
                                           recovery)
            if annual is None:
                continue
            ramp = _ramp(self.months, int(f["start_year"]), self._ramp_years(f))
            cap[:, ci] += annual / 12.0 * ramp
            if f["status"] != "operating" and f["country"] != CHINA:
                uncertain[:, ci] += annual / 12.0 * ramp
        self.uncertain_pipeline[stage] = uncertain

    def sep_heavy(self) -> np.ndarray:
        fac = self.facilities
        rows = fac[(fac["stage"] == "separation") & fac["heavy_ree"].fillna(False).astype(bool)
                   & (fac["status"] != "closed")]
        return np.array([c in set(rows["country"]) for c in self.countries])

    def magnet_capacity(self, base_output: dict[str, float],
                        growth: np.ndarray | None) -> np.ndarray:
        cap = np.zeros((len(self.months), len(self.countries)))
        for code, value in base_output.items():
            cap[:, self.c[code]] = value / 12.0
        # China's magnet industry has expanded with demand (JL Mag 35 kt -> 60 kt by 2027,
        # facilities.csv); the baseline keeps its capacity in step with world magnet demand.
        if growth is not None:
            cap[:, self.c[CHINA]] *= np.maximum(growth, 1.0)
        self._add_pipeline(cap, "magnet", ndpr=None, recovery=1.0)
        return cap

    def _outage_factor(self, stage: str, capacity: np.ndarray, ndpr: np.ndarray,
                       recovery: float) -> np.ndarray:
        """Capacity multipliers [T, C] for the scenario's facility outages at ``stage``.

        The facility's capacity (with the scenario's overrides) is converted to the unit of the
        country capacity (t REO of mine output, t REO of feed, t magnet); a facility in a
        country that is not modelled separately counts against ROW.
        """
        factor = np.ones_like(capacity)
        fac = self.all_facilities.set_index("facility_id")
        for event in self.sc.events:
            if not isinstance(event, FacilityOutage):
                continue
            f = fac.loc[event.facility]
            if f["stage"] != stage:
                continue
            ci = self.c.get(f["country"], self.c[REST_OF_WORLD])
            annual = self._in_country_unit(f, stage, ndpr[ci], recovery)
            t0 = month_index(self.sc.start, event.start)
            t1 = len(self.months) if event.months is None else t0 + event.months
            for t in range(max(t0, 0), min(t1, len(self.months))):
                country_cap = capacity[t, ci] * 12.0
                lost = event.fraction * (annual if annual is not None else country_cap)
                share = min(1.0, lost / country_cap) if country_cap > 0 else 0.0
                factor[t, ci] *= 1.0 - share
        return factor

    @staticmethod
    def _in_country_unit(f: pd.Series, stage: str, ndpr: float | None,
                         recovery: float) -> float | None:
        """A facility's annual capacity in the unit of its stage's country capacity.

        Mining: t REO of mine output; separation: t REO of feed (oxide out / recovery);
        magnet: t magnet. Capacities stated in t NdPr oxide/yr are divided by the NdPr share of
        the country's feed (``ndpr``). None where the unit does not convert.
        """
        capacity, unit = f["capacity"], f["capacity_unit"]
        if capacity is None or (isinstance(capacity, float) and math.isnan(capacity)):
            return None
        capacity = float(capacity)
        if stage == "magnet":
            return capacity if unit == "t magnet/yr" else None
        per_feed = 1.0 if stage == "mining" else recovery
        if unit == "t REO/yr":
            return capacity
        if unit == "t NdPr oxide/yr" and ndpr:
            return capacity / ndpr / per_feed
        if stage == "separation" and unit in ("t oxide/yr", "t HREO/yr"):
            return capacity / recovery
        return None

    # ---- demand ------------------------------------------------------------------------------
    def magnet_grades(self) -> tuple[list[str], np.ndarray]:
        mg = self.ds.magnet_grades
        grades = list(dict.fromkeys(mg["grade"]))
        content = np.zeros((len(grades), len(self.elements)))
        for _, row in mg.iterrows():
            if row["component"] in self.e:
                ei = self.e[row["component"]]
                content[grades.index(row["grade"]), ei] += (
                    row["mass_fraction"] / self.oxide_to_metal[ei]
                )
        return grades, content

    def apparent_consumption(self, magnet_output: dict[str, float]) -> dict[str, float]:
        tl = self.ds.trade_links
        tl = tl[(tl["stage"] == "magnet") & (tl["year"] == self.base) & tl["value"].notna()]
        consumption = {c: 0.0 for c in self.countries}
        for code, value in magnet_output.items():
            consumption[code] += value
        for _, f in tl.iterrows():
            if f["importer"] == WORLD:
                continue
            consumption[f["exporter"]] -= f["value"]
            consumption[f["importer"]] += f["value"]
        return {c: v for c, v in consumption.items() if v > 0}

    def magnet_demand(self, consumption: dict[str, float], sectors: list[str],
                      grades: list[str]) -> dict[str, np.ndarray]:
        ds = self.ds
        basis = ds.intensities[ds.intensities["demand_basis"].fillna(False).astype(bool)]
        basis = basis.set_index("sector")
        demand = ds.demand[ds.demand["year"] == self.base]
        world_total = sum(consumption.values())
        n_s = len(sectors)
        need = np.zeros((len(self.countries), n_s))
        itemised = [s for s in sectors if s in basis.index and s != "other_magnet_uses"]
        world_rows = demand[demand["country"] == WORLD].set_index("sector")
        for code, total in consumption.items():
            ci = self.c[code]
            share = total / world_total
            for s in itemised:
                kg = basis.loc[s, "kg_per_unit"]
                rows = demand[(demand["sector"] == s) & (demand["country"] == code)]
                if len(rows):
                    units = float(rows["units"].sum())
                elif s in world_rows.index:
                    units = float(world_rows.loc[s, "units"]) * share
                else:
                    units = 0.0
                need[ci, sectors.index(s)] = units * kg / 1000.0
            listed = need[ci].sum()
            if listed > total:
                need[ci] *= total / listed
            need[ci, sectors.index("other_magnet_uses")] = max(0.0, total - need[ci].sum())
        sector_grade = np.full(n_s, -1)
        for s in sectors:
            if s in basis.index and basis.loc[s, "material"] == "magnet":
                sector_grade[sectors.index(s)] = grades.index(basis.loc[s, "grade_or_element"])
        kg = np.array([basis.loc[s, "kg_per_unit"] if s in basis.index else np.nan
                       for s in sectors])
        return {"need": need, "sector_grade": sector_grade, "kg_per_unit": kg}

    def growth_index(self, sectors: list[str]) -> np.ndarray:
        """[T, C, S] demand multiplier relative to the base year, from demand growth paths."""
        demand = self.ds.demand
        # Demand stays at the base-year rate through the base year (the calibration); from
        # then on each year's average lies on the growth path: exponent (Y - base) on average.
        years = _years(self.months)
        exponent = (years - self.base) + (np.array([int(m[5:7]) for m in self.months])
                                          - 0.5) / 12 - 0.5
        exponent = np.where(years > self.base, exponent, 0.0)
        index = np.ones((len(self.months), len(self.countries), len(sectors)))
        for s in sectors:
            rows = demand[(demand["sector"] == s) & demand["growth_rate"].notna()
                          & (demand["year"] == self.base)]
            world = rows[rows["country"] == WORLD]
            for code, ci in self.c.items():
                own = rows[rows["country"] == code]
                row = own.iloc[0] if len(own) else (world.iloc[0] if len(world) else None)
                if row is None:
                    continue
                until = row["growth_until"] if not pd.isna(row["growth_until"]) else years.max()
                span = np.clip(exponent, 0.0, until - self.base + 0.5)
                index[:, ci, sectors.index(s)] = (1.0 + row["growth_rate"]) ** span
        return index

    def element_to_sector(self, sectors: list[str]) -> np.ndarray:
        nm = self.ds.non_magnet_demand
        nm = nm[(nm["scope"] == WORLD) & nm["share"].notna() & (nm["year"] <= self.base)]
        out = np.zeros((len(self.elements), len(sectors)))
        latest = nm.sort_values("year").groupby("use").tail(1)
        for _, row in latest.iterrows():
            if row["use"] not in sectors:
                continue
            for el in row["elements"]:
                if el in self.e:
                    out[self.e[el], sectors.index(row["use"])] += row["share"]
        fallback = sectors.index("other")
        for ei in range(len(self.elements)):
            total = out[ei].sum()
            if total > 0:
                out[ei] /= total
            else:
                out[ei, fallback] = 1.0
        return out

    def cover_months(self, sectors: list[str]) -> np.ndarray:
        inv = self.ds.inventories
        inv = inv[(inv["kind"] == "industry") & inv["weeks_of_cover"].notna()]
        by_holder = inv.groupby("holder")["weeks_of_cover"].median()
        vehicles = by_holder.get("conventional_vehicles", 0.0)
        weeks = np.array([by_holder.get(s, vehicles) for s in sectors], dtype=float)
        self.notes["user_cover"] = (
            f"sectors without their own figure use the automotive median ({vehicles:g} weeks)"
        )
        return weeks / WEEKS_PER_MONTH

    def prices(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        items = self.ds.items
        prices = self.ds.prices
        base = _base_prices(prices[prices["market"] == "fob_china"], self.base)
        codes, weights, values = [], [], []
        nd, pr = self.e["Nd"], self.e["Pr"]
        for _, item in items[items["form"] == "oxide"].iterrows():
            rows = base[base["item"] == item["code"]]
            if rows.empty:
                continue
            vec = np.zeros(len(self.elements))
            if set(item["elements"]) == {"Nd", "Pr"}:
                vec[nd], vec[pr] = 0.75, 0.25
            else:
                for el in item["elements"]:
                    vec[self.e[el]] = 1.0 / len(item["elements"])
            codes.append(item["code"])
            weights.append(vec)
            values.append(float(rows["usd_per_kg"].iloc[0]))
        return codes, np.array(weights), np.array(values)


def _foreign_non_magnet(b: _Builder, need: np.ndarray) -> np.ndarray:
    """Move non-magnet demand abroad along aggregate refined trade (``item`` MREC rows).

    For each exporter, the newest ``trade_links`` year at or before the base year is used; the
    tonnes become non-magnet need in the importing country, with the exporter's mix of surplus
    elements, and leave the exporter's own need (never below zero).
    """
    tl = b.ds.trade_links
    tl = tl[tl["stage"].isin(["separation", "metal"]) & (tl["item"] == "MREC")
            & tl["value"].notna() & (tl["year"] <= b.base)
            & (tl["year"] >= b.base - FOREIGN_DEMAND_WINDOW) & (tl["importer"] != WORLD)]
    out = need.copy()
    for exporter, rows in tl.groupby("exporter"):
        if exporter not in b.c:
            continue
        rows = rows[rows["year"] == rows["year"].max()]
        xi = b.c[exporter]
        mix = need[xi] / need[xi].sum() if need[xi].sum() > 0 else None
        if mix is None:
            continue
        for _, row in rows.iterrows():
            ci = b.c.get(row["importer"], b.c[REST_OF_WORLD])
            moved = np.minimum(row["value"] / 12.0 * mix, out[xi])
            out[xi] -= moved
            out[ci] += moved
    return out


def _static_separated(b: _Builder, mine_cap: np.ndarray, conc: np.ndarray,
                      composition: np.ndarray, sep_cap: np.ndarray, sep_heavy: np.ndarray,
                      recovery: float) -> np.ndarray:
    """Separated output [T, C, E] if every month ran at steady state (no stocks)."""
    feed = np.einsum("tx,xc,xe->tce", mine_cap, conc, composition)
    separable = feed * np.where(b.heavy[None, :], sep_heavy[:, None], True)[None]
    total = np.maximum(separable.sum(axis=2), 1e-12)
    return separable * np.minimum(1.0, sep_cap / total)[..., None] * recovery


def _china_swing(b: _Builder, mine_cap: np.ndarray, conc: np.ndarray, composition: np.ndarray,
                 sep_cap: np.ndarray, sep_heavy: np.ndarray, recovery: float,
                 secondary: np.ndarray, element_need: np.ndarray) -> np.ndarray:
    """China's quota multipliers [T] for mining and separation: the baseline's closure rule.

    MIIT sets the quota; the baseline assumes China raises it, from the last reported level,
    just enough that the magnet element in shortest supply covers world need (the other elements
    then accumulate: the balance problem). Never below 1. Mining follows from the year after the
    last USGS year (mine_production.csv); separation output is read for the base year only
    (stage_output.csv), so its capacity follows from the year after the base year.
    """
    years = _years(b.months)
    late_mine = years > b.last_reported_year()
    late_sep = years > b.base
    lift = np.ones(len(b.months))
    china = b.c[CHINA]
    used = element_need.sum(axis=0) > 0
    for _ in range(6):
        cap = mine_cap.copy()
        cap[:, china] *= np.where(late_mine, lift, 1.0)
        sep = sep_cap.copy()
        sep[:, china] *= lift
        separated = _static_separated(b, cap, conc, composition, sep, sep_heavy, recovery)
        china_supply = (separated[:, china]
                        + secondary[china][None] * np.where(late_mine, lift, 1.0)[:, None])
        other_supply = separated.sum(axis=1) - separated[:, china]
        required = np.divide(element_need - other_supply, china_supply,
                             out=np.ones_like(element_need), where=china_supply > 1e-9)
        factor = np.maximum(required[:, used].max(axis=1), 1.0)
        lift = np.where(late_sep, np.maximum(lift * factor, 1.0), 1.0)
    return np.where(late_mine, lift, 1.0), lift


def _preference(flows: dict[tuple[str, str], float], countries: list[str],
                fallback: np.ndarray) -> np.ndarray:
    """Import preferences [X, C]: observed import shares, else shares of world output."""
    n = len(countries)
    pref = np.zeros((n, n))
    for (x, c), value in flows.items():
        if x in countries and c in countries and x != c:
            pref[countries.index(x), countries.index(c)] += value
    for ci in range(n):
        col = pref[:, ci]
        if col.sum() <= 0:
            col = fallback.copy()
            col[ci] = 0.0
        pref[:, ci] = col / col.sum() if col.sum() > 0 else 0.0
    return pref


def _check_base_year(dataset: Dataset, scenario: Scenario) -> None:
    """The calibration needs mine production and magnet output in the base year."""
    so = dataset.stage_output
    years = set(so.loc[(so["stage"] == "magnet") & so["value"].notna(), "year"].astype(int))
    years &= set(dataset.mine_production["year"].dropna().astype(int))
    if scenario.base_year not in years:
        raise ScenarioError(scenario.name, [
            f"base_year (value {scenario.base_year}): the calibration needs mine production and "
            f"magnet output in that year (mine_production.csv, stage_output.csv); years with "
            f"both: {', '.join(map(str, sorted(years))) or 'none'}"])


def compile_scenario(dataset: Dataset, scenario: Scenario) -> tuple[Network, Controls]:
    """Build the kernel inputs for one scenario."""
    _check_base_year(dataset, scenario)
    b = _Builder(dataset, scenario)
    months = scenario.months
    n_t, n_c, n_e = len(months), len(b.countries), len(b.elements)
    recovery = float(dataset.yields.query(
        "from_stage == 'mining' and to_stage == 'separation' and parameter == 'recovery'"
    )["value"].iloc[0])

    mine_cap = b.mine_capacity()
    composition = b.mine_composition()
    separation = b._stage_output("separation")
    conc = b.conc_shares(separation)
    base_feed = (mine_cap[0][:, None] * conc).sum(axis=0)
    ndpr = b.ndpr_shares(composition, base_feed)
    sep_cap = b.sep_capacity(separation, base_feed, recovery, ndpr)
    sep_heavy = b.sep_heavy()

    sectors = dataset.sectors["code"].tolist()
    grades, content = b.magnet_grades()
    magnet_output = b._stage_output("magnet")
    consumption = b.apparent_consumption(magnet_output)
    dem = b.magnet_demand(consumption, sectors, grades)
    growth = b.growth_index(sectors)
    magnet_need = dem["need"][None] / 12.0 * growth
    world_growth = magnet_need.sum(axis=(1, 2)) / max(magnet_need[0].sum(), 1e-9)
    follows = scenario.settings.china_quota_follows_demand
    mag_cap = b.magnet_capacity(magnet_output, world_growth if follows else None)

    # Base-year element balance (month 0): separated supply vs magnet element need.
    feed = (mine_cap[0][:, None, None] * conc[:, :, None] * composition[:, None, :]).sum(axis=0)
    separable = feed * np.where(b.heavy[None, :], sep_heavy[:, None], True)
    take = separable * np.minimum(1.0, sep_cap[0] / np.maximum(separable.sum(axis=1), 1e-12))[
        :, None]
    separated = take * recovery
    sector_grade = dem["sector_grade"]
    onehot = np.zeros((len(sectors), len(grades)))
    onehot[np.where(sector_grade >= 0)[0], sector_grade[sector_grade >= 0]] = 1
    magnet_elements = (magnet_need[0] @ onehot) @ content  # [C,E] at users' countries
    world_supply = separated.sum(axis=0)
    world_magnet = magnet_elements.sum(axis=0)
    secondary = np.zeros((n_c, n_e))
    secondary[b.c[CHINA]] = np.maximum(world_magnet - world_supply, 0.0)
    lift = np.ones(len(months))
    # The closure serves need plus enough to rebuild users' target stocks within a year.
    cover = b.cover_months(sectors)
    headroom = 1.0 + float(np.average(cover, weights=magnet_need[0].sum(axis=0) + 1e-12)) / 12.0
    if scenario.settings.china_quota_follows_demand:
        element_need = (magnet_need.sum(axis=1) @ onehot) @ content * headroom  # [T,E]
        lift, sep_lift = _china_swing(
            b, mine_cap, conc, composition, sep_cap, sep_heavy, recovery, secondary, element_need
        )
        mine_cap[:, b.c[CHINA]] *= lift
        sep_cap[:, b.c[CHINA]] *= sep_lift
    # Unrecorded output and recycling in China move with its quota (same lift).
    secondary_t = secondary[None] * lift[:, None, None]
    china = b.c[CHINA]
    if follows:
        # China's magnet makers keep pace with the world need others cannot meet, with the
        # same margin for users' stocks. The dataset's China figure is output used as a
        # capacity proxy (facilities.csv chn_magnet, estimate), and capacity exceeds output
        # (JL Mag alone 35 kt/yr in 2025 against 29.3 kt made in 2024), so this applies from the
        # base year on: buyers rebuilding stocks are not refused for want of capacity.
        others = mag_cap.sum(axis=1) - mag_cap[:, china]
        mag_cap[:, china] = np.maximum(mag_cap[:, china],
                                       magnet_need.sum(axis=(1, 2)) * headroom - others)
    # Outages last: the closure rules do not make up for them.
    mine_cap = mine_cap * b._outage_factor("mining", mine_cap, ndpr, recovery)
    sep_cap = sep_cap * b._outage_factor("separation", sep_cap, ndpr, recovery)
    mag_cap = mag_cap * b._outage_factor("magnet", mag_cap, ndpr, recovery)
    surplus = np.maximum(world_supply - world_magnet, 0.0)
    supply_share = separated / np.maximum(world_supply[None, :], 1e-12)
    base_oxide_need = surplus[None, :] * supply_share  # [C,E] where separated
    base_oxide_need = _foreign_non_magnet(b, base_oxide_need)
    oxide_need = np.broadcast_to(base_oxide_need[None], (n_t, n_c, n_e)).copy()

    refined_out = separated.sum(axis=1) + secondary.sum(axis=1)
    tl = dataset.trade_links
    tl = tl[(tl["year"] == scenario.base_year) & tl["value"].notna()]
    ref_flows = {(r["exporter"], r["importer"]): r["value"]
                 for _, r in tl[tl["stage"] == "separation"].iterrows()}
    mag_flows = {(r["exporter"], r["importer"]): r["value"]
                 for _, r in tl[tl["stage"] == "magnet"].iterrows()}
    refined_pref = _preference(ref_flows, b.countries, refined_out)
    magnet_pref = _preference(mag_flows, b.countries, mag_cap[0])

    element_to_sector = b.element_to_sector(sectors)
    _apply_demand_shocks(b, scenario, sectors, element_to_sector, magnet_need, oxide_need)
    item_codes, item_weights, base_price = b.prices()
    is_defense = np.array(
        [c == "military" for c in dataset.sectors["end_use_class"]], dtype=bool
    )
    unit_value = dataset.sectors["unit_value_usd"].to_numpy(dtype=float)

    network = Network(
        countries=tuple(b.countries), elements=tuple(b.elements), grades=tuple(grades),
        sectors=tuple(sectors), months=tuple(months), items=tuple(item_codes),
        mine_capacity=mine_cap, mine_composition=composition, conc_shares=conc,
        sep_capacity=sep_cap, sep_heavy=sep_heavy, heavy=b.heavy, sep_recovery=recovery,
        secondary_supply=secondary_t, refined_preference=refined_pref,
        magnet_capacity=mag_cap, grade_content=content, oxide_to_metal=b.oxide_to_metal,
        magnet_preference=magnet_pref, magnet_need=magnet_need, oxide_need=oxide_need,
        sector_grade=sector_grade, sector_is_defense=is_defense,
        user_cover_months=cover,
        element_to_sector=element_to_sector, kg_per_unit=dem["kg_per_unit"],
        unit_value_usd=unit_value, item_elements=item_weights, base_price=base_price,
        price_elasticity=scenario.settings.price_elasticity, price_smoothing=PRICE_SMOOTHING,
        notes=b.notes,
        pipeline_capacity=np.stack([
            np.minimum(b.uncertain_pipeline[stage], cap) for stage, cap in
            (("mining", mine_cap), ("separation", sep_cap), ("magnet", mag_cap))]),
    )
    return network, _controls(b, network, scenario)


def _base_prices(prices: pd.DataFrame, base_year: int) -> pd.DataFrame:
    """Base-year prices: the annual average of the base year, else its earliest monthly or
    quarterly quote, else the latest earlier annual average; one row per item."""
    rows = []
    for _, group in prices.groupby("item"):
        periods = group["period"].astype(str)
        annual = group[periods == str(base_year)]
        within = group[periods.str.startswith(f"{base_year}-")].sort_values("period")
        earlier = group[periods.str.fullmatch(r"\d{4}") & (periods < str(base_year))]
        for candidate in (annual, within, earlier.sort_values("period", ascending=False)):
            if len(candidate):
                rows.append(candidate.iloc[0])
                break
    return pd.DataFrame(rows)


def _window(scenario: Scenario, event, n_months: int) -> slice:
    """Months an event covers, clipped to the horizon."""
    t0 = month_index(scenario.start, event.start)
    t1 = n_months if event.months is None else min(n_months, t0 + event.months)
    return slice(max(t0, 0), max(t1, 0))


def _apply_demand_shocks(b: _Builder, scenario: Scenario, sectors: list[str],
                         element_to_sector: np.ndarray, magnet_need: np.ndarray,
                         oxide_need: np.ndarray) -> None:
    """Multiply demand in place for every DemandShock event."""
    n_t, n_c = magnet_need.shape[:2]
    for event in scenario.events:
        if not isinstance(event, DemandShock):
            continue
        when = _window(scenario, event, n_t)
        si = sectors.index(event.sector)
        cis = range(n_c) if event.country == WORLD else (
            [b.c[event.country]] if event.country in b.c else [])
        for ci in cis:
            magnet_need[when, ci, si] *= event.factor
            oxide_need[when, ci, :] *= 1.0 + (event.factor - 1.0) * element_to_sector[:, si]


def resolve_rules(dataset: Dataset, scenario: Scenario) -> list[Rule]:
    """The rules a scenario puts in play: library rules with its date changes, plus new ones."""
    pol = scenario.policies
    table = dataset.tables.get("policies")
    library = {r.rule_id: r for r in rules_from_table(table)} if table is not None else {}
    if pol.timeline:
        chosen = [rid for rid, r in library.items() if r.acts_on_flows]
    else:
        chosen = []
    chosen += [rid for rid in pol.include if rid not in chosen]
    chosen = [rid for rid in chosen if rid not in pol.exclude]
    rules = [library[rid] for rid in chosen]
    changes = {c.id: c for c in pol.changes}
    out = []
    for rule in rules:
        change = changes.get(rule.rule_id)
        if change is not None:
            update = {}
            for field in ("effective", "suspended", "suspended_until", "ended"):
                value = getattr(change, field)
                if value is not None:
                    update[field] = None if value == "none" else parse_date(value)
            rule = rule.model_copy(update=update)
        out.append(rule)
    out += [Rule.model_validate(raw) for raw in pol.rules]
    return out


def _policy_tensors(b: _Builder, net: Network, scenario: Scenario) -> PolicyTensors | None:
    rules = resolve_rules(b.ds, scenario)
    if not any(r.acts_on_flows for r in rules):
        return None
    pol = scenario.policies
    regimes = regimes_from_table(b.ds.licence_regimes) if pol.regimes == "library" else []
    regimes = [r for r in regimes if r.regime_id not in pol.regime_exclude
               and (pol.general_licences or r.state != "general_licence")]
    if pol.extra_regimes:
        extra = pd.DataFrame(pol.extra_regimes)
        for column, empty in (("destinations", None), ("end", None), ("review_days_p90", None)):
            if column not in extra:
                extra[column] = empty
        extra["destinations"] = extra["destinations"].map(
            lambda v: list(v) if isinstance(v, list) else [])
        extra["review_days_p90"] = extra["review_days_p90"].astype(float)
        regimes += regimes_from_table(extra)
    defaults = {k: v for k, v in {
        "approval": pol.approval_share, "median": pol.review_days_median,
        "p90": pol.review_days_p90, "validity": pol.validity_months, "leakage": pol.leakage,
        "friction": pol.friction,
    }.items() if v is not None}
    grade_elements = [
        {net.elements[e] for e in np.where(net.grade_content[g] > 0)[0]}
        for g in range(len(net.grades))
    ]
    onehot = np.zeros((len(net.sectors), len(net.grades)))
    mask = net.sector_grade >= 0
    onehot[np.where(mask)[0], net.sector_grade[mask]] = 1.0
    by_grade = net.magnet_need @ onehot  # [T,C,G]
    defense = (net.magnet_need * net.sector_is_defense[None, None, :]) @ onehot
    military = np.divide(defense, by_grade, out=np.zeros_like(by_grade), where=by_grade > 0)
    return compile_rules(
        rules, regimes, list(net.months), list(net.countries), list(net.elements),
        grade_elements, military, defaults, pol.review_capacity_t_per_month,
    )


def restrict_routes(items: pd.DataFrame, net: Network, exporter: int, importers: list[int],
                    codes: list[str] | str, keep: float, conc: np.ndarray, refined: np.ndarray,
                    magnet: np.ndarray) -> None:
    """Cap, in place, the share that may pass from ``exporter`` to each of ``importers`` at
    ``keep`` for the items named (``"all"``: every item), by the stage each item belongs to.

    ``conc`` [..., X, C], ``refined`` [..., X, C, E], ``magnet`` [..., X, C, G]; the leading
    axes (a month window, a trigger) are the caller's. Scenario events and trigger actions both
    restrict trade this way.
    """
    names = items.index.tolist() if codes == "all" else codes
    for code in names:
        item = items.loc[code]
        for c in importers:
            if item["stage"] == "mining":
                conc[..., exporter, c] = np.minimum(conc[..., exporter, c], keep)
            elif item["stage"] in ("separation", "metal"):
                for el in item["elements"]:
                    if el in net.elements:
                        e = net.elements.index(el)
                        refined[..., exporter, c, e] = np.minimum(
                            refined[..., exporter, c, e], keep)
            elif item["stage"] == "magnet" and not is_blank(item["magnet_grade"]):
                g = net.grades.index(item["magnet_grade"])
                magnet[..., exporter, c, g] = np.minimum(magnet[..., exporter, c, g], keep)


def _controls(b: _Builder, net: Network, scenario: Scenario) -> Controls:
    n_t, n_c = len(net.months), len(net.countries)
    n_e, n_g = len(net.elements), len(net.grades)
    allowed_conc = np.ones((n_t, n_c, n_c))
    allowed_ref = np.ones((n_t, n_c, n_c, n_e))
    allowed_mag = np.ones((n_t, n_c, n_c, n_g))
    stockpile = np.zeros((n_t, n_c, n_g))
    items = b.ds.items.set_index("code")

    for event in scenario.events:
        when = _window(scenario, event, n_t)
        if isinstance(event, TradeRestriction):
            if event.exporter not in b.c:
                continue
            xi = b.c[event.exporter]
            targets = (
                [i for i in range(n_c) if i != xi] if event.importers == "all"
                else [b.c[c] for c in event.importers if c in b.c and c != event.exporter]
            )
            restrict_routes(items, net, xi, targets, event.items, 1.0 - event.fraction,
                            allowed_conc[when], allowed_ref[when], allowed_mag[when])
        elif isinstance(event, StockpileAction):
            if event.country not in b.c:
                continue
            grade = items.loc[event.item, "magnet_grade"]
            gi = net.grades.index(grade)
            span = max(1, when.stop - when.start)
            sign = 1.0 if event.type == "stockpile_release" else -1.0
            stockpile[when, b.c[event.country], gi] += sign * event.tonnes / span
    home_first = np.array([c in scenario.settings.domestic_priority for c in net.countries])
    defense_first = np.array([c in scenario.settings.defense_priority for c in net.countries])
    return Controls(
        allowed_conc=allowed_conc, allowed_refined=allowed_ref, allowed_magnet=allowed_mag,
        stockpile_to_users=stockpile, home_first=home_first, defense_first=defense_first,
        switching_rate=scenario.settings.switching_rate,
        policy=_policy_tensors(b, net, scenario),
    )
