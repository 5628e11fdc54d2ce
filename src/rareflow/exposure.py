"""Company exposure: a bill of materials mapped onto a simulated world.

A procurement team asks "when does *our* line stop, how many units do we lose, and what would
have prevented it". The simulated world answers, per supplier, the share of what buyers in the
company's country asked that supplier for that actually shipped each month (``magnet_fill``,
``refined_fill`` of a ``detail`` run). The company's own stock then runs down month by month:

    inventory_t = inventory_{t-1} + need · Σ_s share_s · a_s(t − lead_s) − need

with ``a_s`` the supplier's availability and ``lead_s`` its lead time in months; a negative
inventory is a shortfall that month (no backlog), and units built are limited by the scarcest
component. Military end use is refused by every rule in force that denies military end users and
covers the supplier's country, the company's country and the magnet (the same rules as
``rareflow check``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rareflow.api import simulate
from rareflow.compile import resolve_rules
from rareflow.data import Dataset
from rareflow.dims import WEEKS_PER_MONTH
from rareflow.error_lines import validation_lines
from rareflow.scenario import Scenario, ScenarioError, read_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Supplier(_Strict):
    name: str
    country: str = Field(description="ISO3 of the supplier's plant.")
    stage: Literal["magnet", "metal", "oxide"] = "magnet"
    share: float = Field(ge=0, le=1, description="Share of the component bought here [-].")
    lead_time_weeks: float = Field(0.0, ge=0, description="Order to arrival [weeks].")


class Alternative(_Strict):
    name: str
    country: str
    stage: Literal["magnet", "metal", "oxide"] = "magnet"
    qualification_months: float = Field(6.0, ge=0, description="Months to qualify [months].")
    max_share: float = Field(1.0, ge=0, le=1, description="Largest share it can take [-].")


class Component(_Strict):
    name: str
    magnet_kg: float = Field(gt=0, description="Magnet mass per unit of product [kg].")
    grade: str = Field(description="Magnet grade of the dataset, e.g. NdFeB_high_temp.")
    suppliers: list[Supplier] = Field(min_length=1)
    inventory_weeks: float = Field(0.0, ge=0, description="On hand and in transit [weeks].")
    alternatives: list[Alternative] = Field(default_factory=list)

    @field_validator("suppliers")
    @classmethod
    def _shares(cls, suppliers: list[Supplier]) -> list[Supplier]:
        total = sum(s.share for s in suppliers)
        if abs(total - 1.0) > 0.01:
            raise ValueError(f"supplier shares sum to {total:.3f}; they must sum to 1")
        return suppliers


class Product(_Strict):
    name: str
    units_per_month: float = Field(gt=0)
    value_per_unit_usd: float = Field(ge=0)
    end_use: Literal["civil", "military"] = "civil"
    export_destinations: list[str] = Field(default_factory=list)
    components: list[Component] = Field(min_length=1)


class Bom(_Strict):
    """A company's products, their magnet components and suppliers."""

    company: str
    country: str = Field(description="ISO3 of the plant that builds the products.")
    products: list[Product] = Field(min_length=1)


class BomError(ValueError):
    def __init__(self, source: str, errors: list[str]):
        self.errors = errors
        super().__init__(f"bill of materials {source}:\n" + "\n".join(errors))


CSV_COLUMNS = ("company", "country", "product", "units_per_month", "value_per_unit_usd",
               "end_use", "export_destinations", "component", "magnet_kg", "grade",
               "inventory_weeks", "supplier", "supplier_country", "stage", "share",
               "lead_time_weeks")


def _from_csv(text: str) -> dict:
    """Flat CSV, one row per product x component x supplier (columns: CSV_COLUMNS)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return {}
    missing = [c for c in CSV_COLUMNS if c not in rows[0]]
    if missing:
        raise BomError("(csv)", [f"(header): missing columns {', '.join(missing)}"])
    products: dict[str, dict] = {}
    for row in rows:
        p = products.setdefault(row["product"], {
            "name": row["product"], "units_per_month": row["units_per_month"],
            "value_per_unit_usd": row["value_per_unit_usd"], "end_use": row["end_use"] or "civil",
            "export_destinations": [d for d in row["export_destinations"].split(";") if d],
            "components": {}})
        c = p["components"].setdefault(row["component"], {
            "name": row["component"], "magnet_kg": row["magnet_kg"], "grade": row["grade"],
            "inventory_weeks": row["inventory_weeks"] or 0, "suppliers": []})
        c["suppliers"].append({"name": row["supplier"], "country": row["supplier_country"],
                               "stage": row["stage"] or "magnet", "share": row["share"],
                               "lead_time_weeks": row["lead_time_weeks"] or 0})
    for p in products.values():
        p["components"] = list(p["components"].values())
    return {"company": rows[0]["company"], "country": rows[0]["country"],
            "products": list(products.values())}


def load_bom_dict(raw: object, dataset: Dataset, source: str = "(request)") -> Bom:
    """A bill of materials from parsed YAML/JSON, checked against the dataset."""
    if not isinstance(raw, dict):
        raise BomError(source, ["(top level): expected a mapping"])
    try:
        bom = Bom.model_validate(raw)
    except ValidationError as exc:
        raise BomError(source, validation_lines(exc)) from None
    errors = _check_codes(bom, dataset)
    if errors:
        raise BomError(source, errors)
    return bom


def load_bom(path: str | Path, dataset: Dataset) -> Bom:
    """Read a YAML or CSV bill of materials and check its codes against the dataset."""
    path = Path(path)
    if not path.is_file():
        raise BomError(str(path), ["(file): no such file"])
    text = path.read_text(encoding="utf-8")
    try:
        raw = _from_csv(text) if path.suffix.lower() == ".csv" else read_yaml(text)
    except ValueError as exc:
        raise BomError(str(path), [f"(file): cannot be read: {exc}"]) from None
    return load_bom_dict(raw, dataset, str(path))


def _check_codes(bom: Bom, dataset: Dataset) -> list[str]:
    countries = set(dataset.countries["iso3"])
    grades = set(dataset.magnet_grades["grade"])
    errors = []
    if bom.country not in countries:
        errors.append(f"country (value {bom.country!r}): not a country code in the dataset")
    for i, p in enumerate(bom.products):
        for j, d in enumerate(p.export_destinations):
            if d not in countries:
                errors.append(f"products[{i}].export_destinations[{j}] (value {d!r}): not a "
                              "country code in the dataset")
        for k, comp in enumerate(p.components):
            where = f"products[{i}].components[{k}]"
            if comp.grade not in grades:
                errors.append(f"{where}.grade (value {comp.grade!r}): not a magnet grade; "
                              f"choose one of {', '.join(sorted(grades))}")
            for kind, entries in (("suppliers", comp.suppliers),
                                  ("alternatives", comp.alternatives)):
                for m, s in enumerate(entries):
                    if s.country not in countries:
                        errors.append(f"{where}.{kind}[{m}].country (value {s.country!r}): "
                                      "not a country code in the dataset")
    return errors


def months_to_stockout(inventory: np.ndarray, start: int) -> float:
    """First month (counted from ``start``) with a shortfall; inf if none."""
    short = inventory[start:] < -1e-9
    return float(np.argmax(short)) if short.any() else math.inf


def run_component(need: float, arrivals: np.ndarray, inventory_weeks: float) -> np.ndarray:
    """Inventory path (negative = shortfall that month) of one component.

    ``arrivals`` [month] in the same unit as ``need`` (per month). No backlog: a month short
    starts the next month from zero stock.
    """
    stock = inventory_weeks / WEEKS_PER_MONTH * need
    path = np.zeros(len(arrivals))
    for t, a in enumerate(arrivals):
        stock = stock + a - need
        path[t] = stock
        stock = max(stock, 0.0)
    return path


def stock_to_ride_out(need: float, arrivals: np.ndarray) -> float:
    """Smallest starting stock (weeks of need) that never runs out given ``arrivals``."""
    deficit = np.cumsum(need - arrivals)
    worst = max(0.0, float(deficit.max()))
    return worst / need * WEEKS_PER_MONTH


class _World:
    """Supplier availability from a detail run (median over runs is not taken: per run)."""

    def __init__(self, result, dataset: Dataset, scenario: Scenario, reference=None):
        self.data = result.data
        # Fills are shares of what buyers asked for, and buyers also ask for stock they are
        # rebuilding, so routes fill below 1 even in the baseline. Availability is therefore
        # measured against the undisrupted fill on the same route, month and run.
        self.reference = reference.data if reference is not None else None
        self.countries = [str(c) for c in self.data["country"].values]
        self.months = [str(m) for m in self.data["month"].values]
        self.rules = [r for r in resolve_rules(dataset, scenario) if r.acts_on_flows]
        grades = dataset.magnet_grades
        symbols = set(dataset.elements["symbol"])
        self.grade_elements = {
            g: {c for c in group["component"] if c in symbols}
            for g, group in grades[grades["mass_fraction"] > 0].groupby("grade")}

    def node(self, code: str) -> str:
        return code if code in self.countries else "ROW"

    def availability(self, supplier, company_country: str, grade: str,
                     military: bool) -> np.ndarray:
        """[run, month] share of the supplier's usual volume that arrives."""
        x, c = self.node(supplier.country), self.node(company_country)
        if supplier.stage == "magnet":
            a = self.data["magnet_fill"].sel(exporter=x, importer=c, grade=grade).values
        else:
            elements = [e for e in self.grade_elements.get(grade, set())
                        if e in self.data["element"].values]
            fills = self.data["refined_fill"].sel(exporter=x, importer=c, element=elements)
            a = fills.min("element").values
        a = np.array(a, dtype=float)
        if self.reference is not None:
            if supplier.stage == "magnet":
                ref = self.reference["magnet_fill"].sel(exporter=x, importer=c, grade=grade)
            else:
                ref = self.reference["refined_fill"].sel(
                    exporter=x, importer=c, element=elements).min("element")
            ref = np.asarray(ref.values, dtype=float)
            a = np.minimum(1.0, np.divide(a, ref, out=np.ones_like(a), where=ref > 1e-9))
        if military:
            for t, m in enumerate(self.months):
                day = dt.date(int(m[:4]), int(m[5:7]), 15)
                if self.denies_military(supplier.country, company_country, grade, day):
                    a[:, t] = 0.0
        return a

    def covering_rules(self, exporter: str, destination: str, grade: str, day: dt.date):
        contained = self.grade_elements.get(grade, set())
        return [r for r in self.rules if r.actor == exporter and r.active_on(day)
                and r.covers_destination(destination)
                and (r.covers_magnet(contained) or any(e in r.elements for e in contained))]

    def denies_military(self, exporter, destination, grade, day) -> bool:
        return any(r.military_end_use == "denied" or r.mechanism in ("ban", "informal_halt")
                   for r in self.covering_rules(exporter, destination, grade, day))


def _shift(a: np.ndarray, months: int) -> np.ndarray:
    """Arrivals at t reflect availability at t - lead; before the start: normal (1)."""
    if months <= 0:
        return a
    out = np.ones_like(a)
    out[:, months:] = a[:, :-months]
    return out


def _component_arrivals(world: _World, bom: Bom, product: Product, comp: Component,
                        need: float, grade: str | None = None,
                        swap_china_for: str | None = None) -> np.ndarray:
    grade = grade or comp.grade
    total = None
    for s in comp.suppliers:
        supplier = s
        if swap_china_for and s.country == "CHN":
            supplier = s.model_copy(update={"country": swap_china_for})
        a = world.availability(supplier, bom.country, grade, product.end_use == "military")
        lead = int(round(supplier.lead_time_weeks / WEEKS_PER_MONTH))
        part = _shift(a, lead) * s.share
        total = part if total is None else total + part
    arrivals = need * total
    # Alternatives fill the remaining gap in the order listed, so two of them never both count
    # the same missing share.
    gap = np.clip(1.0 - total, 0.0, None)
    first = np.argmax(total < 0.999, axis=1)
    disrupted = (total < 0.999).any(axis=1)
    months = np.arange(total.shape[1])[None, :]
    for alt in comp.alternatives:
        avail = world.availability(alt, bom.country, grade, product.end_use == "military")
        ready = disrupted[:, None] & (months >= first[:, None] + alt.qualification_months)
        taken = np.minimum(gap, alt.max_share) * avail * ready
        arrivals = arrivals + need * taken
        gap = gap - taken
    return arrivals


def _product_outcome(world: _World, bom: Bom, product: Product, start: int,
                     grade_override: str | None = None,
                     swap_china_for: str | None = None) -> dict:
    runs, n = world.data.sizes["run"], len(world.months)
    producible = np.full((runs, n), product.units_per_month)
    stockouts = np.full(runs, math.inf)
    per_component = {}
    for comp in product.components:
        need = product.units_per_month * comp.magnet_kg
        grade = grade_override if (grade_override and comp.grade == "NdFeB_high_temp") else None
        arrivals = _component_arrivals(world, bom, product, comp, need, grade, swap_china_for)
        lost_units = np.zeros((runs, n))
        for r in range(runs):
            path = run_component(need, arrivals[r], comp.inventory_weeks)
            stockouts[r] = min(stockouts[r], months_to_stockout(path, start))
            short = np.maximum(-path, 0.0)
            lost_units[r] = short / comp.magnet_kg
            producible[r] = np.minimum(producible[r], product.units_per_month - lost_units[r])
        per_component[comp.name] = {"arrivals": arrivals, "need": need,
                                    "lost_units": lost_units.sum(axis=1)}
    units_lost = (product.units_per_month - producible).sum(axis=1)
    return {"stockout": stockouts, "units": units_lost,
            "value": units_lost * product.value_per_unit_usd, "components": per_component}


def _bands(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if finite.size < values.size / 2:
        return {"p5": None, "p50": None, "p95": None, "never_share": float(
            np.mean(~np.isfinite(values)))}
    pct = np.percentile(np.where(np.isfinite(values), values, np.inf), [5, 50, 95])
    return {f"p{p}": (None if not math.isfinite(v) else round(float(v), 2))
            for p, v in zip((5, 50, 95), pct, strict=True)}


def _reference_run(dataset: Dataset, scenario: Scenario, result):
    """The scenario without its events, export controls and triggers, run for run with the same
    sampled parameters: the volumes each route would usually carry."""
    from rareflow import targets
    from rareflow.scenario import Policies

    update = {"events": [], "policies": Policies()}
    if scenario.responses is not None:
        update["responses"] = scenario.responses.model_copy(update={"triggers": []})
    # uncertain fields inside what is removed go too (their values do not matter here), and so
    # do thresholds (the reference run reports no exceedance)
    labels, values = result.parameters
    kept = [k for k, p in enumerate(scenario.uncertain.parameters)
            if not (isinstance(t := targets.parse(p.target), targets.ScenarioField)
                    and t.path[0] in ("events", "policies", "responses"))]
    update["uncertain"] = scenario.uncertain.model_copy(update={
        "parameters": [scenario.uncertain.parameters[k] for k in kept], "thresholds": {},
        "correlation": [c for c in scenario.uncertain.correlation
                        if {c[0], c[1]} <= {scenario.uncertain.parameters[k].label
                                            for k in kept}]})
    undisrupted = scenario.model_copy(update=update)
    return simulate(dataset, undisrupted, runs=result.runs, detail=True, keep=True,
                    parameter_values=values[:, kept] if kept else None)


def analyse(bom: Bom, dataset: Dataset, scenario: Scenario, runs: int = 1,
            seed: int = 0) -> dict:
    """Per product: months to stock-out, units and value at risk, the binding constraint, and
    a mitigation table (docs/exposure.md)."""
    result = simulate(dataset, scenario, runs=runs, seed=seed, detail=True, keep=True)
    world = _World(result, dataset, scenario, _reference_run(dataset, scenario, result))
    starts = [e.start for e in scenario.events if e.start in world.months]
    starts += [r.effective.strftime("%Y-%m") for r in world.rules
               if r.effective.strftime("%Y-%m") in world.months]
    start = world.months.index(min(starts)) if starts else 0
    non_china = _least_disrupted(world, bom)
    products = []
    for product in bom.products:
        base = _product_outcome(world, bom, product, start)
        binding = _binding(world, bom, product, base, start)
        mitigations = []
        for comp in product.components:
            info = base["components"][comp.name]
            weeks = [stock_to_ride_out(info["need"], info["arrivals"][r]) for r in range(runs)]
            mitigations.append({"action": f"hold stock of '{comp.name}'",
                                "weeks_needed_p90": round(float(np.percentile(weeks, 90)), 1),
                                "weeks_held": comp.inventory_weeks})
        if any(s.country == "CHN" for c in product.components for s in c.suppliers):
            alt = _product_outcome(world, bom, product, start, swap_china_for=non_china)
            mitigations.append({"action": f"qualify a supplier in {non_china} for the Chinese "
                                          "share", "units_at_risk_p50": float(
                                              np.median(alt["units"]))})
        if any(c.grade == "NdFeB_high_temp" for c in product.components):
            low = _product_outcome(world, bom, product, start, grade_override="NdFeB_std")
            mitigations.append({"action": "switch to a grade without Dy/Tb (NdFeB_std, e.g. "
                                          "grain-boundary diffusion designs)",
                                "units_at_risk_p50": float(np.median(low["units"]))})
        products.append({
            "product": product.name,
            "months_to_stockout": _bands(base["stockout"]),
            "units_at_risk": _bands(base["units"]),
            "value_at_risk_usd": _bands(base["value"]),
            "binding": binding,
            "export_rules": _export_rules(world, bom, product),
            "mitigations": mitigations,
        })
    return {"company": bom.company, "scenario": scenario.name, "runs": runs,
            "disruption_month": world.months[start], "products": products}


def _least_disrupted(world: _World, bom: Bom) -> str:
    fill = world.data["magnet_fill"].sel(importer=world.node(bom.country)).mean(
        ("run", "month", "grade"))
    candidates = {str(c): float(v) for c, v in zip(fill["exporter"].values, fill.values,
                                                    strict=True)
                  if str(c) not in ("CHN", world.node(bom.country))
                  and float(world.data["production"].sel(stage="magnet", country=c).sum()) > 0}
    return max(candidates, key=candidates.get) if candidates else "ROW"


def _binding(world: _World, bom: Bom, product: Product, outcome: dict, start: int) -> dict:
    worst = max(product.components,
                key=lambda c: float(np.median(outcome["components"][c.name]["lost_units"])))
    info = outcome["components"][worst.name]
    if float(np.median(info["lost_units"])) <= 0:
        return {"component": None, "supplier": None, "rule": None, "element": None}
    military = product.end_use == "military"
    supplier = max(worst.suppliers, key=lambda s: s.share * (1.0 - float(np.mean(
        world.availability(s, bom.country, worst.grade, military)[:, start:]))))
    month = world.months[min(start + int(np.nan_to_num(np.median(outcome["stockout"]),
                                                        posinf=0)), len(world.months) - 1)]
    day = dt.date(int(month[:4]), int(month[5:7]), 15)
    rules = world.covering_rules(supplier.country, bom.country, worst.grade, day)
    contained = world.grade_elements.get(worst.grade, set())
    elements = sorted({e for r in rules for e in (r.magnet_content or r.elements)
                       if e in contained})
    return {"component": worst.name, "supplier": f"{supplier.name} ({supplier.country})",
            "rule": rules[0].rule_id if rules else None,
            "element": ", ".join(elements) or None}


def _export_rules(world: _World, bom: Bom, product: Product) -> list[dict]:
    """Rules that reach the company's own exports of the product (extraterritorial reach)."""
    out = []
    for destination in product.export_destinations:
        for comp in product.components:
            china_share = sum(s.share for s in comp.suppliers if s.country == "CHN")
            contained = world.grade_elements.get(comp.grade, set())
            for rule in world.rules:
                if rule.extraterritorial_threshold is None or rule.actor == bom.country:
                    continue
                if not rule.covers_destination(destination) or not rule.covers_magnet(contained):
                    continue
                active = [m for m in world.months
                          if rule.active_on(dt.date(int(m[:4]), int(m[5:7]), 15))]
                if active and china_share > 0:
                    out.append({"destination": destination, "component": comp.name,
                                "rule": rule.rule_id, "months_in_force": len(active),
                                "note": "magnets with Chinese content re-exported in the "
                                        "product may need a Chinese licence when that content "
                                        f"is at least {rule.extraterritorial_threshold:.1%} of "
                                        "the product's value"})
    return out


__all__ = ["Bom", "BomError", "ScenarioError", "analyse", "load_bom", "months_to_stockout",
           "run_component", "stock_to_ride_out"]
