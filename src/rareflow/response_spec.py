"""The ``responses:`` block of a scenario: how markets and governments answer a shock.

A scenario without the block (or with ``enabled: false``) runs the kernel as the shock model of
issue 3: prices move with scarcity only, demand and capacity follow their exogenous paths. With
the block, :mod:`rareflow.sim.responses` adds price-driven demand responses, substitution,
recycling from in-use stocks, new capacity decided inside the model, producer shutdowns, price
floors, stockpiles and triggers. docs/model.md ("Responses") gives every equation and where each
parameter comes from; the defaults below are read from ``data/response_parameters.csv`` where it
has a row, so the scenario only names what it changes.

Errors name the field, the value and the rule (:func:`check_responses`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUILD_STAGES = ("mining", "separation", "magnet")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _month(value: str | None) -> str | None:
    if value is None:
        return value
    from rareflow.scenario import parse_month

    parse_month(value)
    return value


class StockpileSpec(_Strict):
    """A stockpile with purchase and release rules.

    ``item`` is a magnet item (``NdFeB_std`` ...) or a refined single-element item (``Dy2O3``
    ...). A release goes to the holder country's magnet users (magnets) or refined stock
    (oxides) when the named sectors of that country were short last month by more than
    ``release_when_shortfall_above`` of their need, at most ``max_release_t_per_month``.
    A refill buys up to ``refill_t_per_month`` while the ex-China price of the item is below
    ``refill_below_price_multiple`` times its base-year price and the level is below target.
    """

    holder: str = Field(description="Stockpile id, e.g. US_NDS_NDFEB; a holder_id of "
                        "data/stockpiles.csv supplies country, item and level not given here.")
    country: str | None = None
    item: str | None = None
    tonnes: float | None = Field(default=None, ge=0,
                                 description="Level at the start of the horizon [t].")
    days_of_cover: float | None = Field(
        default=None, ge=0, description="Level at the start as days of the holder country's "
        "base-year use of the item (instead of tonnes) [d].")
    target_tonnes: float | None = Field(
        default=None, ge=0, description="Level the refill rule aims at [t]; default: tonnes.")
    sectors: list[str] | Literal["all"] = Field(
        "all", description="Sectors whose shortfall triggers a release.")
    release_when_shortfall_above: float = Field(
        0.02, ge=0, le=1, description="Shortfall share of need that triggers a release [-].")
    max_release_t_per_month: float | None = Field(
        default=None, gt=0, description="Release cap [t/month]; default: the holder country's "
        "base-year monthly use of the item.")
    refill_t_per_month: float = Field(0.0, ge=0, description="Purchase cap [t/month].")
    refill_below_price_multiple: float = Field(
        1.0, gt=0, description="Buy only while price / base price is below this [-].")
    start: str | None = Field(default=None, description="First month the rules act, YYYY-MM.")

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        return _month(value)

    @model_validator(mode="after")
    def _level(self) -> StockpileSpec:
        if self.tonnes is not None and self.days_of_cover is not None:
            raise ValueError("give the starting level as tonnes or as days_of_cover, not both")
        return self


class PriceFloorSpec(_Strict):
    """A government guarantees a producer a minimum price (the July 2025 DoD-MP agreement).

    The government pays ``max(0, floor - ex-China price)`` per kg of the item the country
    separates; the producer's revenue price is the larger of the two, so the shutdown rule sees
    the floor. The payments are part of ``policy_cost_usd``.
    """

    item: str = Field("NdPr_oxide", description="Price item the floor is set on.")
    country: str = "USA"
    floor_usd_per_kg: float | None = Field(
        default=None, gt=0, description="Default: price_floor_ndpr_usd_per_kg of "
        "data/response_parameters.csv (US$110/kg, DoD-MP Materials, July 2025).")
    start: str = Field(description="First month, YYYY-MM.")
    months: int | None = Field(default=None, ge=1)

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        return _month(value)


class CapacitySpec(_Strict):
    """New capacity decided inside the model, and the policies that back it.

    Every January, for each stage and each country in ``build_in``, firms commit new capacity
    when the expected ex-China price of the stage's product exceeds ``hurdle`` times the cost
    of supply there, lowered by ``subsidy_share`` (an approximation: the data give no split of
    the cost of supply into capital and operating parts on one basis), sized to the ex-China gap
    of the
    last year net of capacity already committed; a ``target_share`` commits, regardless of
    price, what the build-in countries need to supply that share of ex-China use. Capacity
    arrives after the stage's permitting and construction time (data/lead_times.csv) and ramps
    up linearly.
    """

    build_in: list[str] = Field(default_factory=list,
                                description="Countries where new capacity may be built.")
    stages: list[Literal["mining", "separation", "magnet"]] = Field(
        default_factory=lambda: list(BUILD_STAGES))
    subsidy_share: float = Field(0.0, ge=0, le=1, description="Share of capital cost paid by "
                                 "governments [-]; the price test lowers the cost of supply "
                                 "by the same share (an approximation).")
    target_share: dict[Literal["mining", "separation", "magnet"], float] = Field(
        default_factory=dict, description="Stage -> share of ex-China use to be supplied by "
        "the build-in countries (a policy target, e.g. the EU CRMA 40% processing "
        "benchmark) [-].")
    lead_time_scale: float = Field(1.0, gt=0, description="Multiplier on lead times [-].")

    @field_validator("target_share")
    @classmethod
    def _shares(cls, value: dict) -> dict:
        for stage, share in value.items():
            if not 0 <= share <= 1:
                raise ValueError(f"{stage} (value {share}): a share must be between 0 and 1")
        return value


class Condition(_Strict):
    """What must hold for a trigger to fire; exactly one kind."""

    rule_in_force: str | None = Field(
        default=None, description="rule_id of data/policies.csv in force this month.")
    shortfall_share_above: float | None = Field(
        default=None, ge=0, le=1,
        description="Shortfall / need of ``sectors`` in ``country`` above this [-].")
    magnet_exports_below_t: float | None = Field(
        default=None, ge=0, description="Magnet trade ``exporter`` -> ``importer`` below this "
        "[t/month].")
    price_multiple_above: float | None = Field(
        default=None, gt=0, description="Price of ``item`` in ``market`` / base price above "
        "this [-].")
    fired: str | None = Field(default=None, description="Another trigger's id has fired.")
    country: str | None = None
    sectors: list[str] | Literal["all"] = "all"
    exporter: str | None = None
    importer: str | None = None
    item: str | None = None
    market: Literal["china", "ex_china"] = "ex_china"
    for_months: int = Field(1, ge=1, description="Months in a row the condition must hold.")
    watch_from: str | None = Field(
        default=None, description="First month the condition is watched, YYYY-MM (default: "
        "the start of the horizon).")

    @field_validator("watch_from")
    @classmethod
    def _watch(cls, value: str | None) -> str | None:
        return _month(value)

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        kinds = [k for k in ("rule_in_force", "shortfall_share_above", "magnet_exports_below_t",
                             "price_multiple_above", "fired") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one condition kind (got {kinds or 'none'}): "
                             "rule_in_force, shortfall_share_above, magnet_exports_below_t, "
                             "price_multiple_above or fired")
        need = {"shortfall_share_above": ("country",),
                "magnet_exports_below_t": ("exporter", "importer"),
                "price_multiple_above": ("item",)}.get(kinds[0], ())
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"{kinds[0]} needs {', '.join(missing)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("rule_in_force", "shortfall_share_above",
                                "magnet_exports_below_t", "price_multiple_above", "fired")
                    if getattr(self, k) is not None)


class Action(_Strict):
    """What a fired trigger does; ``delay_weeks`` after the month it fires."""

    type: Literal["trade_restriction", "stockpile_release"]
    delay_weeks: float = Field(0.0, ge=0)
    months: int | None = Field(default=None, ge=1, description="Duration; open-ended if "
                               "omitted.")
    exporter: str | None = None
    importers: list[str] | Literal["all"] = "all"
    items: list[str] | Literal["all"] = "all"
    fraction: float = Field(1.0, ge=0, le=1, description="Share of the flow blocked [-].")
    holder: str | None = Field(default=None, description="Stockpile holder to release.")

    @model_validator(mode="after")
    def _fields(self) -> Action:
        if self.type == "trade_restriction" and self.exporter is None:
            raise ValueError("a trade_restriction action needs exporter")
        if self.type == "stockpile_release" and self.holder is None:
            raise ValueError("a stockpile_release action needs holder")
        return self


class Trigger(_Strict):
    """Event-condition-action: when ``when`` first holds (for its months), do ``then``."""

    id: str
    description: str = ""
    when: Condition
    then: Action


class Responses(_Strict):
    """The switches and parameters of the responses model (docs/model.md, "Responses")."""

    enabled: bool = Field(True, description="Master switch for everything below.")
    prices: bool = Field(True, description="Inventory cover moves prices; prices may fall "
                         "below the base-year level (surplus).")
    demand: bool = Field(True, description="Long-run price response of demand, with its lag.")
    substitution: bool = Field(True, description="Substitution and thrifting options of "
                               "data/substitution_options.csv.")
    recycling: bool = Field(True, description="End-of-life recycling from in-use stocks.")
    shutdown: bool = Field(
        False, description="Producers outside China whose revenue price stays below their "
        "reported cash cost wind down. Off by default: MP Materials kept separating below its "
        "reported cost through 2024-2025, so the rule overstates exits (docs/model.md).")
    shutdown_from: str | None = Field(
        default=None, description="First month the shutdown rule acts, YYYY-MM (default: the "
        "start of the horizon).")
    substitution_triggers: dict[str, float] = Field(
        default_factory=dict, description="option_id -> price multiple that starts adoption, "
        "for options whose trigger data/substitution_options.csv leaves blank [-].")
    capacity: CapacitySpec | None = None
    stockpiles: list[StockpileSpec] = Field(default_factory=list)
    price_floors: list[PriceFloorSpec] = Field(default_factory=list)
    triggers: list[Trigger] = Field(default_factory=list)
    @field_validator("shutdown_from")
    @classmethod
    def _shutdown_from(cls, value: str | None) -> str | None:
        return _month(value)

    collection_boost: float = Field(
        0.0, ge=0, le=1, description="Policy addition to end-of-life collection rates [-] "
        "(e.g. take-back obligations).")


def resolve_stockpile(spec: StockpileSpec, dataset) -> StockpileSpec:
    """Fill what a stockpile spec leaves out from its row of data/stockpiles.csv (holder_id):
    country, item (or the oxide of its element), and the level as quantity_t or, failing that,
    target_days_of_cover."""
    table = dataset.tables.get("stockpiles")
    if table is None or spec.holder not in set(table["holder_id"]):
        return spec
    row = table[table["holder_id"] == spec.holder].iloc[0]
    update = {}
    if spec.country is None:
        update["country"] = row["country"]
    if spec.item is None:
        item = row["item"]
        if not isinstance(item, str) and isinstance(row["element"], str):
            items = dataset.items
            single = items[items["elements"].map(lambda els: list(els) == [row["element"]])
                           & (items["form"] == "oxide")]
            item = single["code"].iloc[0] if len(single) else None
        update["item"] = item if isinstance(item, str) else None
    if spec.tonnes is None and spec.days_of_cover is None:
        if row["quantity_t"] == row["quantity_t"]:  # not NaN
            update["tonnes"] = float(row["quantity_t"])
        elif row["target_days_of_cover"] == row["target_days_of_cover"]:
            update["days_of_cover"] = float(row["target_days_of_cover"])
    return spec.model_copy(update=update)


def check_responses(responses: Responses, scenario, dataset) -> list[str]:
    """Codes in the block must exist in the dataset; dates must lie in the horizon."""
    from rareflow.scenario import month_index, trade_code_errors, unknown_code

    errors: list[str] = []
    countries = set(dataset.countries["iso3"])
    items = dataset.items.set_index("code")
    sectors = set(dataset.sectors["code"])
    rules = set(dataset.policies["rule_id"]) if "policies" in dataset.tables else set()
    n_months = len(scenario.months)

    def need(field: str, value, allowed, what: str) -> None:
        errors.extend(unknown_code(field, value, allowed, what))

    def in_horizon(field: str, month: str | None) -> None:
        if month is not None and not 0 <= month_index(scenario.start, month) < n_months:
            errors.append(f"{field} (value {month!r}): outside the horizon "
                          f"{scenario.start}..{scenario.end}")

    def single_element_or_magnet(field: str, code: str) -> None:
        if code not in items.index:
            errors.append(f"{field} (value {code!r}): not an item code in the dataset")
            return
        row = items.loc[code]
        if row["form"] != "magnet" and len(row["elements"]) != 1:
            errors.append(f"{field} (value {code!r}): must be a magnet item or a "
                          "single-element refined item")

    base = "responses"
    if responses.capacity is not None:
        for j, code in enumerate(responses.capacity.build_in):
            need(f"{base}.capacity.build_in[{j}]", code, countries, "country code")
    option_ids = (set(dataset.substitution_options["option_id"])
                  if "substitution_options" in dataset.tables else set())
    options = (dataset.substitution_options.set_index("option_id")
               if "substitution_options" in dataset.tables else None)
    for code, value in responses.substitution_triggers.items():
        need(f"{base}.substitution_triggers", code, option_ids,
             "option_id of data/substitution_options.csv")
        if code in option_ids and options.loc[code, "reduction_share"] != options.loc[
                code, "reduction_share"]:  # NaN
            errors.append(f"{base}.substitution_triggers.{code} (value {value}): the option has "
                          "no reduction share in data/substitution_options.csv, so a trigger "
                          "would do nothing")
        if value <= 0:
            errors.append(f"{base}.substitution_triggers.{code} (value {value}): a price "
                          "multiple must be above 0")
    for j, s in enumerate(responses.stockpiles):
        where = f"{base}.stockpiles[{j}]"
        s = resolve_stockpile(s, dataset)
        missing = [f for f in ("country", "item") if getattr(s, f) is None]
        if s.tonnes is None and s.days_of_cover is None:
            missing.append("tonnes or days_of_cover")
        if missing:
            errors.append(f"{where} (holder {s.holder!r}): give {', '.join(missing)} (no "
                          "row of data/stockpiles.csv supplies them)")
            continue
        need(f"{where}.country", s.country, countries, "country code")
        single_element_or_magnet(f"{where}.item", s.item)
        if s.sectors != "all":
            for k, code in enumerate(s.sectors):
                need(f"{where}.sectors[{k}]", code, sectors, "sector code")
        in_horizon(f"{where}.start", s.start)
    in_horizon(f"{base}.shutdown_from", responses.shutdown_from)
    holders = [s.holder for s in responses.stockpiles]
    for holder in sorted({h for h in holders if holders.count(h) > 1}):
        errors.append(f"{base}.stockpiles (holder {holder!r}): holder ids must be unique")
    for j, f in enumerate(responses.price_floors):
        where = f"{base}.price_floors[{j}]"
        need(f"{where}.country", f.country, countries, "country code")
        need(f"{where}.item", f.item, set(items.index), "item code")
        if f.floor_usd_per_kg is None and f.item != "NdPr_oxide":
            errors.append(f"{where}.floor_usd_per_kg: required for item {f.item!r} (the default, "
                          "US$110/kg, is the DoD-MP floor on NdPr oxide)")
        in_horizon(f"{where}.start", f.start)
    ids = [t.id for t in responses.triggers]
    for tid in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"{base}.triggers (id {tid!r}): trigger ids must be unique")
    waits = {t.id: t.when.fired for t in responses.triggers if t.when.fired}
    for start in waits:
        seen, node = [], start
        while node in waits and node not in seen:
            seen.append(node)
            node = waits[node]
        if node == start and len(seen) > 1:
            errors.append(f"{base}.triggers (id {start!r}): waits in a cycle "
                          f"({' -> '.join([*seen, start])}); none of them can ever fire")
    for j, trig in enumerate(responses.triggers):
        where = f"{base}.triggers[{j}]"
        c, a = trig.when, trig.then
        if c.rule_in_force is not None:
            need(f"{where}.when.rule_in_force", c.rule_in_force, rules,
                 "rule_id of data/policies.csv")
        in_horizon(f"{where}.when.watch_from", c.watch_from)
        if c.fired is not None and c.fired == trig.id:
            errors.append(f"{where}.when.fired (value {c.fired!r}): a trigger cannot wait for "
                          "itself")
        if c.exporter is not None and c.exporter == c.importer:
            errors.append(f"{where}.when.importer (value {c.importer!r}): must differ from the "
                          "exporter")
        if (a.type == "trade_restriction" and a.importers != "all"
                and a.exporter in a.importers):
            errors.append(f"{where}.then.importers (value {a.exporter!r}): the exporter cannot "
                          "restrict its own market")
        if c.fired is not None and c.fired not in ids:
            errors.append(f"{where}.when.fired (value {c.fired!r}): not a trigger id of this "
                          "scenario")
        for field in ("country", "exporter", "importer"):
            if getattr(c, field) is not None:
                need(f"{where}.when.{field}", getattr(c, field), countries, "country code")
        if c.item is not None:
            need(f"{where}.when.item", c.item, set(items.index), "item code")
        if c.sectors != "all":
            for k, code in enumerate(c.sectors):
                need(f"{where}.when.sectors[{k}]", code, sectors, "sector code")
        if a.type == "trade_restriction":
            errors += trade_code_errors(f"{where}.then", a.exporter, a.importers, a.items,
                                        countries, set(items.index))
        if a.type == "stockpile_release" and a.holder not in holders:
            errors.append(f"{where}.then.holder (value {a.holder!r}): not a holder of "
                          f"{base}.stockpiles")
    return errors
