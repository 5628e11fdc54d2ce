"""Dataset + a scenario's ``responses:`` block -> the arrays of :mod:`rareflow.sim.responses`.

Every parameter comes from a dataset table (response_parameters, supply_costs, lead_times,
residues, substitution_options, product_lifetimes; each row cited or marked an estimate) or from
the scenario; docs/model.md ("Responses") lists them. Where a table has no row for a country, the
average of the rows outside China stands in and ``notes`` says so.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from rareflow.compile import restrict_routes
from rareflow.data import Dataset
from rareflow.dims import CHINA
from rareflow.policy.rules import rules_from_table
from rareflow.policy.triggers import KINDS, NEVER, TriggerInputs
from rareflow.response_spec import BUILD_STAGES, Responses, resolve_stockpile
from rareflow.scenario import Scenario, month_index
from rareflow.sim.network import Network
from rareflow.sim.responses import ResponseInputs
from rareflow.sim.stocks import survival_curve

#: Horizon of the lifetime curves [months]: long enough for every product's tail (60 years).
LIFETIME_HORIZON_MONTHS = 720
#: Lowest (and, inverted, highest) demand factor from price alone [-]. An assumption: no source
#: bounds the long-run response; it keeps the constant-elasticity curve from driving demand to
#: nothing under a fifty-fold price spike (docs/model.md).
DEMAND_FLOOR = 0.5
#: Months over which producers losing money wind down (and restart), an assumption: MP
#: Materials kept separating at a loss through 2024 (reference facts-supply-chain.md).
SHUTDOWN_MONTHS = 12.0


class ResponseDataError(ValueError):
    """The dataset lacks a row the responses model needs; the message names table and key."""


def _modelled(code: str, field: str, net: Network) -> int:
    """Index of a country the network models separately; a country inside ROW is refused (a
    floor or stockpile there would act on the whole rest of the world)."""
    if code in net.countries:
        return list(net.countries).index(code)
    listed = ", ".join(c for c in net.countries if c != "ROW")
    raise ResponseDataError(f"{field} (value {code!r}): not modelled separately in this base "
                            f"year (it is part of ROW); use one of {listed}")


def parameter(dataset: Dataset, name: str) -> float:
    """A value of data/response_parameters.csv by name."""
    table = dataset.tables.get("response_parameters")
    if table is None:
        raise ResponseDataError("table response_parameters is missing from the dataset")
    rows = table[table["parameter"] == name]
    if rows.empty or pd.isna(rows["value"].iloc[0]):
        raise ResponseDataError(f"response_parameters.csv: no value for parameter {name!r}")
    return float(rows["value"].iloc[0])


def _table(dataset: Dataset, name: str) -> pd.DataFrame:
    table = dataset.tables.get(name)
    if table is None:
        raise ResponseDataError(f"table {name} is missing from the dataset")
    return table


def _by_stage_country(frame: pd.DataFrame, column: str, countries: list[str],
                      notes: dict[str, str], label: str, fallback: bool = True) -> np.ndarray:
    """[3, C] values of ``column`` per stage and country. With ``fallback`` other countries
    outside China take the generic row (country ``*``) or else the mean of the rows outside
    China (noted); China keeps NaN unless it has a row."""
    out = np.full((len(BUILD_STAGES), len(countries)), np.nan)
    for s, stage in enumerate(BUILD_STAGES):
        rows = frame[(frame["stage"] == stage) & frame[column].notna()]
        if rows.empty:
            continue
        own = rows.groupby("country")[column].mean()
        outside = rows[~rows["country"].isin([CHINA, "*"])][column]
        generic = rows[rows["country"] == "*"][column]
        fallback_value = (generic.mean() if len(generic) else
                          outside.mean() if len(outside) else np.nan)
        filled = []
        for c, code in enumerate(countries):
            if code in own.index:
                out[s, c] = own[code]
            elif fallback and code != CHINA and not np.isnan(fallback_value):
                out[s, c] = fallback_value
                filled.append(code)
        if filled:
            notes[f"{label}.{stage}"] = (f"no own row for {', '.join(filled)}: the generic row "
                                         f"or the mean outside China ({fallback_value:.4g}) "
                                         "stands in")
    return out


def _element_base_price(net: Network) -> np.ndarray:
    """Base price of each element [US$/kg] from single-element items (0 where none)."""
    out = np.zeros(len(net.elements))
    for i in range(len(net.items)):
        weights = net.item_elements[i]
        if np.count_nonzero(weights) == 1:
            out[int(np.argmax(weights))] = net.base_price[i]
    if "NdPr_oxide" in net.items:
        i = net.items.index("NdPr_oxide")
        for el in ("Nd", "Pr"):
            e = net.elements.index(el)
            if out[e] == 0:
                out[e] = net.base_price[i]
    return out


def compile_responses(dataset: Dataset, scenario: Scenario, net: Network,
                      notes: dict[str, str] | None = None) -> ResponseInputs | None:
    """The responses model's inputs, or None when the scenario does not switch it on."""
    spec: Responses | None = scenario.responses
    if spec is None or not spec.enabled:
        return None
    notes = net.notes if notes is None else notes
    countries, sectors, elements = list(net.countries), list(net.sectors), list(net.elements)
    n_t, n_c, n_s = len(net.months), len(countries), len(sectors)
    market = np.array([0 if c == CHINA else 1 for c in countries])
    base_need = net.magnet_need[0]  # [C, S]

    # substitution options, one per (option, sector)
    options = _table(dataset, "substitution_options")
    opt = {k: [] for k in ("sector", "element", "reduction", "max", "delay", "ramp",
                           "trigger", "group")}
    magnet_sectors = [s for s, g in zip(sectors, net.sector_grade, strict=True) if g >= 0]
    triggers_set = spec.substitution_triggers
    inactive = []
    for _, row in options.iterrows():
        trigger = triggers_set.get(row["option_id"], row["trigger_price_multiple"])
        if pd.isna(row["reduction_share"]) or pd.isna(trigger):
            inactive.append(row["option_id"])
            continue
        targets = magnet_sectors if row["sector"] == "*" else [row["sector"]]
        for sector in targets:
            if sector not in magnet_sectors:
                continue
            element = -1 if row["target"] == "magnet" else (
                elements.index(row["target"]) if row["target"] in elements else None)
            if element is None:
                continue
            opt["sector"].append(sectors.index(sector))
            opt["group"].append(int(row["_line"]) if "_line" in row else len(opt["group"]))
            opt["element"].append(element)
            opt["reduction"].append(float(row["reduction_share"]))
            # no published cap: the whole sector may adopt
            opt["max"].append(float(np.nan_to_num(row["max_adoption_share"], nan=1.0)))
            opt["delay"].append(float(np.nan_to_num(row["adoption_delay_months"])))
            # no published pace: the 2010-11 rate, substitution of up to 10% of demand a year
            years = row["adoption_years"]
            if pd.isna(years):
                years = opt["max"][-1] / parameter(dataset, "substitution_max_share_of_demand"
                                                   "_per_year")
            opt["ramp"].append(12.0 * float(years))
            opt["trigger"].append(float(trigger))
    if inactive:
        notes["substitution"] = ("options without a reduction share or a trigger price in data "
                                 "(set responses.substitution_triggers to use them): "
                                 + ", ".join(inactive))
    opt_arr = {k: np.array(v, dtype=int if k in ("sector", "element", "group") else float)
               for k, v in opt.items()}
    # the sector's share, in each market, of the world's use of its grade: adoption in both
    # markets by every user of the grade cuts the grade's content by r at most
    weight = np.zeros((2, len(opt["sector"])))
    for k, s in enumerate(opt["sector"]):
        world = base_need[:, net.sector_grade == net.sector_grade[s]].sum()
        for m in (0, 1):
            weight[m, k] = base_need[market == m, s].sum() / world if world > 0 else 0.0

    # recycling: lifetimes, collection and recovery by sector
    lifetimes = _table(dataset, "product_lifetimes")
    curves = np.zeros((LIFETIME_HORIZON_MONTHS, n_s))
    collection0, recovery = np.zeros(n_s), np.zeros(n_s)
    no_life, fixed = [], []
    for _, row in lifetimes.iterrows():
        if row["sector"] not in sectors or net.sector_grade[sectors.index(row["sector"])] < 0:
            continue
        s = sectors.index(row["sector"])
        dist = row["distribution"]
        if dist == "weibull" and (pd.isna(row["shape"]) or pd.isna(row["mean_years"])):
            no_life.append(row["sector"])
            continue
        if dist in ("normal", "lognormal", "foldednormal") and pd.isna(row["sd_years"]):
            dist = "fixed"  # no published spread: every unit lives the mean lifetime
            fixed.append(row["sector"])
        kwargs = ({"shape": row["shape"], "scale": row["mean_years"]} if dist == "weibull"
                  else {"mean": row["mean_years"], "sd": row.get("sd_years")}
                  if dist != "fixed" else {"mean": row["mean_years"]})
        kwargs = {k: float(v) for k, v in kwargs.items() if v is not None and not pd.isna(v)}
        curves[:, s] = survival_curve(dist, n_months=LIFETIME_HORIZON_MONTHS, **kwargs)
        collection0[s] = float(np.nan_to_num(row["collection_rate"]))
        recovery[s] = float(np.nan_to_num(row["recovery_rate"]))
    historical = base_need.sum(axis=0) * (curves[0] > 0)
    if fixed:
        notes["lifetimes_fixed"] = ("no lifetime spread in data, fixed at the mean: "
                                    + ", ".join(fixed))
    if no_life:
        notes["lifetimes_missing"] = "no lifetime in data, not recycled: " + ", ".join(no_life)

    # costs, lead times, residues
    costs = _table(dataset, "supply_costs")
    actual = costs[(costs["cost_basis"] == "opex") & (costs["cost_kind"] == "actual")]
    ndpr_basis = actual[actual["product_basis"] == "NdPr oxide"]
    # shutdown: only producers with their own reported cash cost per kg of NdPr oxide, against
    # the NdPr price. Costs per kg of light REO (Lynas) are left out: no quoted price is on
    # the same basis, and the value of a basket of quoted oxides is not what Lynas realises.
    cash = _by_stage_country(ndpr_basis, "cost_usd_per_kg", countries, notes, "cash_cost",
                             fallback=False)
    cash[:, market == 0] = np.nan  # China's output follows its state quota, not a cost test
    # price-driven build: NdPr-basis cash cost times the hurdle (= the incentive price)
    full = _by_stage_country(ndpr_basis, "cost_usd_per_kg", countries, notes, "build_cost")
    full[:, market == 0] = np.nan
    # capital cost per t/yr of the stage's capacity unit: t REO (mines, separation feed), t
    # magnet; rows on another basis (t NdPr oxide, t heavy feed) are left out
    capex = np.full((3, n_c), np.nan)
    for s, basis in enumerate(("REO", "REO", "magnet")):
        same = costs[costs["product_basis"] == basis]
        capex[s] = _by_stage_country(same, "capex_usd_per_annual_t", countries, notes,
                                     "capex")[s]
    leads = _table(dataset, "lead_times").copy()
    # decision to output: permitting plus construction (midpoints); where only a total is
    # published (mines: discovery to production), the total
    building = leads[["construction_years_low", "construction_years_high"]].mean(axis=1)
    leads["months"] = 12.0 * np.where(
        building.notna(),
        leads[["permitting_years_low", "permitting_years_high"]].mean(axis=1).fillna(0.0)
        + building, leads["total_years_mean"])
    lead = _by_stage_country(leads, "months", countries, notes, "lead_months")
    cap_spec = spec.capacity
    scale = cap_spec.lead_time_scale if cap_spec is not None else 1.0
    lead_months = np.maximum(1, np.round(np.nan_to_num(lead, nan=float(np.nanmax(lead)))
                                         * scale)).astype(int)
    ramp = np.array([parameter(dataset, f"capacity_rampup_months_{s}") for s in BUILD_STAGES])
    build = np.zeros((3, n_c), dtype=bool)
    target = np.full(3, np.nan)
    if cap_spec is not None:
        for j, code in enumerate(cap_spec.build_in):
            _modelled(code, f"responses.capacity.build_in[{j}]", net)
        for s, stage in enumerate(BUILD_STAGES):
            if stage in cap_spec.stages:
                build[s] = [c in cap_spec.build_in for c in countries]
        for stage, share in cap_spec.target_share.items():
            target[BUILD_STAGES.index(stage)] = share
    residues = _table(dataset, "residues")
    res_mean = residues[["residue_t_per_t_reo", "thorium_kg_per_t_reo"]].mean()
    deposit = _country_deposit(dataset, countries)
    residue = np.zeros((2, n_c))
    by_type = residues.set_index("deposit_type")
    for c, code in enumerate(countries):
        row = by_type.loc[deposit[code]] if deposit.get(code) in by_type.index else res_mean
        for k, column in enumerate(("residue_t_per_t_reo", "thorium_kg_per_t_reo")):
            value = row[column]
            residue[k, c] = float(res_mean[column] if pd.isna(value) else value)

    # price floors
    floors = spec.price_floors
    for f, fl in enumerate(floors):
        if fl.item not in net.items:
            raise ResponseDataError(f"responses.price_floors[{f}].item (value {fl.item!r}): has "
                                    "no base-year price in prices.csv (a floor needs a market "
                                    "price)")
    floor_active = np.zeros((n_t, len(floors)), dtype=bool)
    for f, fl in enumerate(floors):
        t0 = month_index(scenario.start, fl.start)
        t1 = n_t if fl.months is None else min(n_t, t0 + fl.months)
        floor_active[max(t0, 0):max(t1, 0), f] = True
    item_el = {code: set(row["elements"]) for code, row in
               dataset.items.set_index("code").iterrows()}
    floor_value = [fl.floor_usd_per_kg if fl.floor_usd_per_kg is not None
                   else parameter(dataset, "price_floor_ndpr_usd_per_kg") for fl in floors]

    # stockpiles
    items = dataset.items.set_index("code")
    sp = [resolve_stockpile(s, dataset) for s in spec.stockpiles]
    sp_magnet = np.array([items.loc[s.item, "form"] == "magnet" for s in sp], dtype=bool)
    sp_index = np.array([
        list(net.grades).index(items.loc[s.item, "magnet_grade"]) if m
        else elements.index(next(iter(item_el[s.item]))) for s, m in zip(sp, sp_magnet,
                                                                          strict=True)], int)
    sp_item = np.array([list(net.items).index(s.item) if s.item in net.items else -1
                        for s in sp], int)
    for k, s in enumerate(sp):
        if not sp_magnet[k] and sp_item[k] < 0:
            raise ResponseDataError(f"responses.stockpiles[{k}].item (value {s.item!r}): has no "
                                    "base-year price in prices.csv")
    sp_sectors = np.array([[s.sectors == "all" or code in s.sectors for code in sectors]
                           for s in sp], dtype=bool).reshape(len(sp), n_s)

    initial = np.array([_stockpile_tonnes(net, s, bool(m), int(i)) for s, m, i in
                        zip(sp, sp_magnet, sp_index, strict=True)], float)
    ndpr = np.array([e in ("Nd", "Pr") for e in elements])
    return ResponseInputs(
        prices=spec.prices, demand=spec.demand, substitution=spec.substitution,
        recycling=spec.recycling, capacity=cap_spec is not None,
        market_of_country=market, element_base_price=_element_base_price(net),
        elasticity_long_run=parameter(dataset, "price_elasticity_long_run"),
        adjustment_months=max(parameter(dataset, "demand_adjustment_months"), 1.0),
        demand_floor=DEMAND_FLOOR,
        opt_sector=opt_arr["sector"], opt_element=opt_arr["element"],
        opt_reduction=opt_arr["reduction"], opt_max=opt_arr["max"],
        opt_delay=opt_arr["delay"], opt_ramp=opt_arr["ramp"], opt_trigger=opt_arr["trigger"],
        opt_weight=weight, opt_group=opt_arr["group"],
        survival=curves, historical_inflow=historical, collection0=collection0,
        recovery=recovery,
        collection_elasticity=parameter(dataset, "recycling_collection_price_elasticity"),
        collection_boost=spec.collection_boost,
        shutdown=spec.shutdown,
        cash_cost=cash, shutdown_months=SHUTDOWN_MONTHS, build=build, full_cost=full,
        shutdown_start=(0 if spec.shutdown_from is None
                        else month_index(scenario.start, spec.shutdown_from)),
        capex=capex, lead_months=lead_months, ramp_months=np.round(ramp).astype(int),
        hurdle=parameter(dataset, "capacity_investment_price_ratio"),
        subsidy_share=cap_spec.subsidy_share if cap_spec is not None else 0.0,
        target_share=target,
        decision_months=np.array([m.endswith("-01") for m in net.months]),
        stage_price_item=np.array([-1, list(net.items).index("NdPr_oxide")
                                   if "NdPr_oxide" in net.items else -1, -1]),
        ndpr=ndpr, feed_ndpr_share=_feed_ndpr_share(net, ndpr, market),
        residue_t_per_t=residue[0], thorium_kg_per_t=residue[1],

        floor_item=np.array([list(net.items).index(fl.item) for fl in floors], int),
        floor_country=np.array([_modelled(fl.country, f"responses.price_floors[{f}].country",
                                          net) for f, fl in enumerate(floors)], int),
        floor_value=np.array(floor_value, float), floor_active=floor_active,
        floor_elements=np.array([[e in item_el[fl.item] for e in elements] for fl in floors],
                                dtype=bool).reshape(len(floors), len(elements)),
        sp_ids=tuple(s.holder for s in sp),
        sp_country=np.array([_modelled(s.country, f"responses.stockpiles[{k}].country", net)
                             for k, s in enumerate(sp)], int),
        sp_magnet=sp_magnet, sp_index=sp_index, sp_item=sp_item,
        sp_initial=initial,
        sp_target=np.array([initial[k] if s.target_tonnes is None else s.target_tonnes
                            for k, s in enumerate(sp)], float),
        sp_threshold=np.array([s.release_when_shortfall_above for s in sp], float),
        sp_sectors=sp_sectors,
        sp_max_release=np.array([
            s.max_release_t_per_month if s.max_release_t_per_month is not None
            else _monthly_use(net, s, bool(m), int(i))
            for s, m, i in zip(sp, sp_magnet, sp_index, strict=True)], float),
        sp_refill=np.array([s.refill_t_per_month for s in sp], float),
        sp_refill_below=np.array([s.refill_below_price_multiple for s in sp], float),
        sp_start=np.array([0 if s.start is None else month_index(scenario.start, s.start)
                           for s in sp], int),
        triggers=_triggers(dataset, scenario, net, [s.holder for s in sp]),
    )


def _feed_ndpr_share(net: Network, ndpr: np.ndarray, market: np.ndarray) -> float:
    """Nd + Pr share of the REO mined outside China in the first month (weighted by output)."""
    mined = net.mine_capacity[0][market == 1][:, None] * net.mine_composition[market == 1]
    total = mined.sum()
    return float(mined[:, ndpr].sum() / total) if total > 0 else 0.0


def _monthly_use(net: Network, spec, magnet: bool, index: int) -> float:
    """The holder country's base-year use of a stockpile's item [t/month]: magnets of the grade
    by its sectors, or the element in magnets and other uses."""
    countries = list(net.countries)
    c = countries.index(spec.country) if spec.country in countries else -1
    if c < 0:
        return 0.0
    need = net.magnet_need[0, c]  # [S] t magnet / month
    if magnet:
        return float(need[net.sector_grade == index].sum())
    grades = np.zeros(len(net.grades))
    np.add.at(grades, net.sector_grade[net.sector_grade >= 0], need[net.sector_grade >= 0])
    return float(grades @ net.grade_content[:, index] + net.oxide_need[0, c, index])


def _stockpile_tonnes(net: Network, spec, magnet: bool, index: int) -> float:
    """Starting level [t]: as given, or days of the holder country's base-year use."""
    if spec.tonnes is not None:
        return float(spec.tonnes)
    return _monthly_use(net, spec, magnet, index) * 12.0 / 365.25 * spec.days_of_cover


def _country_deposit(dataset: Dataset, countries: list[str]) -> dict[str, str]:
    """Each country's main deposit type: that of its largest mine in facilities.csv."""
    fac = dataset.facilities
    mines = fac[(fac["stage"] == "mining") & fac["deposit_type"].notna()
                & fac["capacity"].notna()]
    out = {}
    for code in countries:
        rows = mines[mines["country"] == code]
        if len(rows):
            out[code] = rows.sort_values("capacity", ascending=False)["deposit_type"].iloc[0]
    return out


def _triggers(dataset: Dataset, scenario: Scenario, net: Network,
              holders: list[str]) -> TriggerInputs | None:
    triggers = scenario.responses.triggers
    if not triggers:
        return None
    countries, sectors = list(net.countries), list(net.sectors)
    n_t, n_c, k_n = len(net.months), len(countries), len(triggers)
    n_e, n_g = len(net.elements), len(net.grades)
    library = {r.rule_id: r for r in rules_from_table(dataset.policies)}
    items = dataset.items.set_index("code")
    ids = [t.id for t in triggers]
    for k, trig in enumerate(triggers):
        if trig.when.item is not None and trig.when.item not in net.items:
            raise ResponseDataError(
                f"responses.triggers[{k}].when.item (value {trig.when.item!r}): has no "
                f"base-year price in prices.csv")

    def country(code: str | None, field: str) -> int:
        return -1 if code is None else _modelled(code, field, net)

    rule_active = np.zeros((n_t, k_n), dtype=bool)
    conc = np.ones((k_n, n_c, n_c))
    refined = np.ones((k_n, n_c, n_c, n_e))
    magnet = np.ones((k_n, n_c, n_c, n_g))
    for k, trig in enumerate(triggers):
        cond, act = trig.when, trig.then
        if cond.rule_in_force is not None:
            rule = library[cond.rule_in_force]
            for t, label in enumerate(net.months):
                day = dt.date(int(label[:4]), int(label[5:7]), 15)
                rule_active[t, k] = rule.active_on(day)
        if act.type == "trade_restriction":
            where = f"responses.triggers[{k}].then"
            x = country(act.exporter, f"{where}.exporter")
            dests = ([c for c in range(n_c) if c != x] if act.importers == "all"
                     else [country(c, f"{where}.importers[{j}]")
                           for j, c in enumerate(act.importers)])
            restrict_routes(items, net, x, dests, act.items, 1.0 - act.fraction,
                            conc[k], refined[k], magnet[k])
    delay = np.array([max(1, int(np.ceil(t.then.delay_weeks / (52.0 / 12.0) - 1e-9)))
                      for t in triggers])
    return TriggerInputs(
        ids=tuple(ids),
        kind=np.array([KINDS.index(t.when.kind) for t in triggers]),
        threshold=np.array([float(getattr(t.when, t.when.kind)) if t.when.kind not in (
            "rule_in_force", "fired") else 0.0 for t in triggers]),
        rule_active=rule_active,
        country=np.array([country(t.when.country, f"responses.triggers[{k}].when.country")
                          for k, t in enumerate(triggers)]),
        sector_mask=np.array([[t.when.sectors == "all" or s in t.when.sectors for s in sectors]
                              for t in triggers], dtype=bool),
        exporter=np.array([country(t.when.exporter, f"responses.triggers[{k}].when.exporter")
                           for k, t in enumerate(triggers)]),
        importer=np.array([country(t.when.importer, f"responses.triggers[{k}].when.importer")
                           for k, t in enumerate(triggers)]),
        item=np.array([list(net.items).index(t.when.item) if t.when.item in net.items else -1
                       for t in triggers]),
        market=np.array([0 if t.when.market == "china" else 1 for t in triggers]),
        other=np.array([ids.index(t.when.fired) if t.when.fired else -1 for t in triggers]),
        for_months=np.array([t.when.for_months for t in triggers]),
        watch_from=np.array([0 if t.when.watch_from is None
                             else month_index(scenario.start, t.when.watch_from)
                             for t in triggers]),
        delay_months=delay,
        duration_months=np.array([NEVER if t.then.months is None else t.then.months
                                  for t in triggers]),
        restrict_conc=conc, restrict_refined=refined, restrict_magnet=magnet,
        release_holder=np.array([holders.index(t.then.holder) if t.then.holder else -1
                                 for t in triggers]),
    )
