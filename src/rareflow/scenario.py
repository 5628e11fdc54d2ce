"""Scenarios: what the user asks the simulator to play out.

A scenario is data: a horizon, dataset overrides, dated events and settings. It is a pydantic
model read from YAML; unknown keys and wrong types are refused, and :func:`check_scenario` checks
every code against the dataset so that an error names the field, the value and the rule.

Events form a list discriminated by ``type`` so that later kinds (export-control rules, triggers)
slot in beside the ones here.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rareflow.data import Dataset
from rareflow.dims import WORLD
from rareflow.ensemble import Uncertainties
from rareflow.error_lines import validation_lines
from rareflow.response_spec import Responses, check_responses

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def parse_month(text: str) -> tuple[int, int]:
    """'2025-04' -> (2025, 4); raises ValueError naming the expected form."""
    match = _MONTH.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a month in the form YYYY-MM")
    return int(match.group(1)), int(match.group(2))


def month_index(start: str, month: str) -> int:
    """Months from ``start`` to ``month`` (0 for the first month)."""
    y0, m0 = parse_month(start)
    y, m = parse_month(month)
    return (y - y0) * 12 + (m - m0)


def month_labels(start: str, end: str) -> list[str]:
    """Every month from ``start`` to ``end`` inclusive, as YYYY-MM."""
    y, m = parse_month(start)
    n = month_index(start, end) + 1
    out = []
    for _ in range(n):
        out.append(f"{y:04d}-{m:02d}")
        m += 1
        if m == 13:
            y, m = y + 1, 1
    return out


Month = Annotated[str, Field(description="A month, YYYY-MM.")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Dated(_Strict):
    start: Month
    months: int | None = Field(
        default=None, ge=1, description="Duration in months; open-ended when omitted."
    )

    @field_validator("start")
    @classmethod
    def _month(cls, value: str) -> str:
        parse_month(value)
        return value


class FacilityOutage(_Dated):
    """A facility produces only ``1 - fraction`` of its capacity for ``months``."""

    type: Literal["facility_outage"]
    facility: str = Field(description="facility_id from facilities.csv")
    fraction: float = Field(1.0, ge=0, le=1, description="Share of capacity lost [-]")


class TradeRestriction(_Dated):
    """Flows of ``items`` from ``exporter`` to ``importers`` are cut by ``fraction``."""

    type: Literal["trade_restriction"]
    exporter: str
    importers: list[str] | Literal["all"] = "all"
    items: list[str] | Literal["all"] = "all"
    fraction: float = Field(1.0, ge=0, le=1, description="Share of the flow blocked [-]")


class DemandShock(_Dated):
    """Demand of a sector in a country (or the world, WLD) is multiplied by ``factor``."""

    type: Literal["demand_shock"]
    sector: str
    country: str = WORLD
    factor: float = Field(ge=0, description="Multiplier on demand [-]")


class StockpileAction(_Dated):
    """A government releases (or buys) tonnes of magnets to (or from) its country's users."""

    type: Literal["stockpile_release", "stockpile_purchase"]
    holder: str = Field(description="Stockpile programme, e.g. US_NDS")
    country: str
    item: str = Field(description="Magnet item code, e.g. NdFeB_std")
    tonnes: float = Field(gt=0, description="Total tonnes over the action's months [t]")


Event = Annotated[
    FacilityOutage | TradeRestriction | DemandShock | StockpileAction,
    Field(discriminator="type"),
]


class FacilityOverride(_Strict):
    """Change a facility's capacity, start year or status."""

    facility: str
    capacity: float | None = Field(default=None, ge=0)
    start_year: int | None = None
    status: str | None = None


class RuleChange(_Strict):
    """Change the dates of a library rule in this scenario ('none' clears a date)."""

    id: str
    effective: str | None = None
    suspended: str | None = None
    suspended_until: str | None = None
    ended: str | None = None

    @field_validator("effective", "suspended", "suspended_until", "ended", mode="before")
    @classmethod
    def _day(cls, value: object) -> str | None:
        if value is None or value == "none":
            return value
        import datetime as _dt

        try:
            _dt.date.fromisoformat(str(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a date YYYY-MM-DD (or 'none')") from None
        return str(value)


class Policies(_Strict):
    """Which export-control rules are in play, and how licences behave where no regime says."""

    timeline: bool = Field(
        False, description="Every library rule that acts on flows, with its real dates."
    )
    include: list[str] = Field(default_factory=list, description="Library rule ids to add.")
    exclude: list[str] = Field(default_factory=list, description="Library rule ids to drop.")
    changes: list[RuleChange] = Field(default_factory=list)
    rules: list[dict] = Field(
        default_factory=list,
        description="New rules, with the columns of data/policies.csv (docs/policy.md).",
    )
    regimes: Literal["library", "none"] = Field(
        "library", description="Use the licensing practice of data/licence_regimes.csv, or none "
        "(defaults below everywhere).",
    )
    regime_exclude: list[str] = Field(
        default_factory=list, description="regime_ids of the library to leave out."
    )
    extra_regimes: list[dict] = Field(
        default_factory=list,
        description="More regimes, with the columns of data/licence_regimes.csv.",
    )
    general_licences: bool = Field(
        False, description="Apply general-licence regimes to every buyer. Off by default: they "
        "went to named customers only and the share of trade they covered is not reported.",
    )
    approval_share: float | None = Field(default=None, ge=0, le=1)
    review_days_median: float | None = Field(default=None, ge=0)
    review_days_p90: float | None = Field(default=None, ge=0)
    validity_months: float | None = Field(default=None, ge=1)
    leakage: float = Field(0.0, ge=0, le=1, description="Share of blocked flow that leaks [-].")
    friction: float = Field(
        0.0, ge=0, le=1, description="Share of uncontrolled goods of the same forms that "
        "exporters hold back while a licence rule is in force (administrative friction) [-]; "
        "no source gives a value, so the default is zero.",
    )
    review_capacity_t_per_month: dict[str, float] = Field(
        default_factory=dict,
        description="Exporter -> tonnes per month of applications it can decide (default "
        "unbounded).",
    )


class Settings(_Strict):
    """Behaviour of buyers and sellers; defaults documented in docs/model.md."""

    domestic_priority: list[str] = Field(
        default_factory=list,
        description="Exporters that serve their own buyers first when short.",
    )
    defense_priority: list[str] = Field(
        default_factory=list,
        description="Countries whose defense sector is served first when short.",
    )
    switching_rate: float = Field(
        0.1, ge=0, le=1,
        description="Share of an unfilled request moved to other suppliers each month [-]",
    )
    china_quota_follows_demand: bool = Field(
        True, description="After the last year USGS reports, China's mine output grows with "
        "world magnet demand, as MIIT raised the quota in 2023 (+21.4%) and 2024 (+5.9%); "
        "false freezes it at the last reported level.",
    )
    include_planned: bool = Field(
        False, description="Also build facilities whose status is 'planned' (not only "
        "those under construction or ramping up).",
    )
    price_elasticity: float = Field(
        0.3, gt=0, le=5,
        description="Short-run price elasticity of demand, absolute value [-] (an assumption; "
        "see docs/model.md).",
    )


class Scenario(_Strict):
    """A scenario: horizon, overrides, events and settings."""

    name: str
    description: str = ""
    sources: list[str] = Field(default_factory=list, description="source_ids or URLs")
    start: Month = "2024-01"
    end: Month = "2035-12"
    base_year: int = 2024
    overrides: list[FacilityOverride] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    policies: Policies = Field(default_factory=Policies)
    settings: Settings = Field(default_factory=Settings)
    uncertain: Uncertainties = Field(default_factory=Uncertainties)
    responses: Responses | None = Field(
        default=None, description="Market and policy responses (docs/model.md, Responses); "
        "without the block the kernel runs the shock alone.")

    @field_validator("start", "end")
    @classmethod
    def _month(cls, value: str) -> str:
        parse_month(value)
        return value

    @property
    def months(self) -> list[str]:
        return month_labels(self.start, self.end)


class ScenarioError(ValueError):
    """A scenario that cannot be run; ``errors`` lists 'field: message' strings."""

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"scenario {source}:\n" + "\n".join(f"  {e}" for e in errors))

    def __reduce__(self):
        # raised in worker processes too: pickle it by its arguments, not its message
        return (ScenarioError, (self.source, self.errors))


_EVENT_TAGS = {"facility_outage", "trade_restriction", "demand_shock", "stockpile_release",
               "stockpile_purchase"}


def scenario_from_dict(raw: object, source: str = "<dict>") -> Scenario:
    """Build a scenario, turning pydantic's errors into 'field: value: rule' lines."""
    if not isinstance(raw, dict):
        raise ScenarioError(source, ["(top level): expected a mapping of keys to values"])
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(source, validation_lines(exc, skip_tags=_EVENT_TAGS)) from None


class _TextDatesLoader(yaml.SafeLoader):
    """YAML loader that leaves dates as text, so a bad date is reported by the field's own
    validator (with the field's name) rather than by the YAML parser."""


_TextDatesLoader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str) -> object:
    """Parse YAML with dates kept as strings."""
    return yaml.load(text, Loader=_TextDatesLoader)  # noqa: S506 - a SafeLoader subclass


def builtin_dir() -> Path:
    return Path(str(resources.files("rareflow").joinpath("scenarios")))


def builtin_names() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and str(name_or_path) in builtin_names():
        path = builtin_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ScenarioError(
            str(name_or_path),
            [f"no built-in scenario or file named {str(name_or_path)!r}; built-ins: "
             + ", ".join(builtin_names())],
        )
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as exc:
        raise ScenarioError(str(path), [f"(file): not valid YAML: {exc}"]) from None
    return scenario_from_dict(raw, str(path))


def unknown_code(field: str, value: object, allowed, what: str) -> list[str]:
    """No error when ``value`` is in ``allowed``; else one naming the field, the value and what
    it should have been."""
    if value in allowed:
        return []
    article = "an" if what[0] in "aeiou" else "a"
    return [f"{field} (value {value!r}): not {article} {what} in the dataset"]


def trade_code_errors(where: str, exporter: str, importers, items, countries,
                      item_codes) -> list[str]:
    """Codes of a trade restriction (a scenario event or a trigger's action)."""
    errors = unknown_code(f"{where}.exporter", exporter, countries, "country code")
    if importers != "all":
        for j, code in enumerate(importers):
            errors += unknown_code(f"{where}.importers[{j}]", code, countries, "country code")
    if items != "all":
        for j, code in enumerate(items):
            errors += unknown_code(f"{where}.items[{j}]", code, item_codes, "item code")
    return errors


def check_scenario(scenario: Scenario, dataset: Dataset) -> list[str]:
    """Every code in the scenario must exist in the dataset and every date in the horizon."""
    errors: list[str] = []
    countries = set(dataset.countries["iso3"])
    items = set(dataset.items["code"])
    sectors = set(dataset.sectors["code"])
    facilities = set(dataset.facilities["facility_id"])
    magnets = set(dataset.items.loc[dataset.items["form"] == "magnet", "code"])
    n_months = len(scenario.months)
    if n_months < 1:
        errors.append(f"end (value {scenario.end!r}): must not be before start {scenario.start}")

    def need(field: str, value: str, allowed: set[str], what: str) -> None:
        errors.extend(unknown_code(field, value, allowed, what))

    for i, override in enumerate(scenario.overrides):
        need(f"overrides[{i}].facility", override.facility, facilities, "facility_id")
    for i, event in enumerate(scenario.events):
        where = f"events[{i}]"
        at = month_index(scenario.start, event.start)
        if not 0 <= at < n_months:
            errors.append(
                f"{where}.start (value {event.start!r}): outside the horizon "
                f"{scenario.start}..{scenario.end}"
            )
        if isinstance(event, FacilityOutage):
            need(f"{where}.facility", event.facility, facilities, "facility_id")
        elif isinstance(event, TradeRestriction):
            errors += trade_code_errors(where, event.exporter, event.importers, event.items,
                                        countries, items)
        elif isinstance(event, DemandShock):
            need(f"{where}.sector", event.sector, sectors, "sector code")
            need(f"{where}.country", event.country, countries, "country code")
        elif isinstance(event, StockpileAction):
            need(f"{where}.country", event.country, countries, "country code")
            need(f"{where}.item", event.item, magnets, "magnet item code")
    errors += _check_policies(scenario, dataset)
    from rareflow.result import headline_names
    from rareflow.targets import check_targets

    errors += check_targets(scenario.uncertain, scenario, dataset)
    known = headline_names(scenario)
    for name in scenario.uncertain.thresholds:
        if name not in known:
            errors.append(f"uncertain.thresholds (value {name!r}): not a headline; choose one "
                          f"of {', '.join(known)}")
    if scenario.responses is not None:
        errors += check_responses(scenario.responses, scenario, dataset)
    known_sources = set(dataset.sources["source_id"])
    for j, source in enumerate(scenario.sources):
        if not source.startswith(("http://", "https://")) and source not in known_sources:
            errors.append(f"sources[{j}] (value {source!r}): neither a URL nor a source_id of "
                          "data/sources.csv")
    for field in ("domestic_priority", "defense_priority"):
        for j, code in enumerate(getattr(scenario.settings, field)):
            need(f"settings.{field}[{j}]", code, countries, "country code")
    return errors


def _check_policies(scenario: Scenario, dataset: Dataset) -> list[str]:
    from rareflow.policy.rules import Rule

    errors: list[str] = []
    library = set(dataset.policies["rule_id"]) if "policies" in dataset.tables else set()
    pol = scenario.policies
    for field in ("include", "exclude"):
        for j, rule_id in enumerate(getattr(pol, field)):
            if rule_id not in library:
                errors.append(f"policies.{field}[{j}] (value {rule_id!r}): not a rule_id in "
                              "data/policies.csv")
    regime_ids = (set(dataset.licence_regimes["regime_id"])
                  if "licence_regimes" in dataset.tables else set())
    for j, regime_id in enumerate(pol.regime_exclude):
        if regime_id not in regime_ids:
            errors.append(f"policies.regime_exclude[{j}] (value {regime_id!r}): not a regime_id "
                          "in data/licence_regimes.csv")
    rule_ids = library | {r.get("rule_id") for r in pol.rules if isinstance(r, dict)}
    required = ("regime_id", "rule_id", "start", "state", "approval_share",
                "review_days_median")
    for j, raw in enumerate(pol.extra_regimes):
        for key in required:
            if key not in raw:
                errors.append(f"policies.extra_regimes[{j}].{key}: required")
        if raw.get("rule_id") is not None and raw.get("rule_id") not in rule_ids:
            errors.append(f"policies.extra_regimes[{j}].rule_id (value {raw.get('rule_id')!r}): "
                          "not a rule of the library or of this scenario")
        share = raw.get("approval_share")
        if share is not None and not (isinstance(share, int | float) and 0 <= share <= 1):
            errors.append(f"policies.extra_regimes[{j}].approval_share (value {share!r}): must "
                          "be a number between 0 and 1")
    for j, change in enumerate(pol.changes):
        if change.id not in library:
            errors.append(f"policies.changes[{j}].id (value {change.id!r}): not a rule_id in "
                          "data/policies.csv")
    countries = set(dataset.countries["iso3"])
    elements = set(dataset.elements["symbol"])
    for j, raw in enumerate(pol.rules):
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as exc:
            errors += validation_lines(exc, prefix=f"policies.rules[{j}]")
            continue
        for field in ("actor",):
            if getattr(rule, field) not in countries:
                errors.append(f"policies.rules[{j}].{field} (value {getattr(rule, field)!r}): "
                              "not a country code in the dataset")
        for field in ("destinations",):
            for k, code in enumerate(getattr(rule, field)):
                if code not in countries:
                    errors.append(f"policies.rules[{j}].{field}[{k}] (value {code!r}): not a "
                                  "country code in the dataset")
        for field in ("elements", "magnet_content"):
            for k, code in enumerate(getattr(rule, field)):
                if code not in elements:
                    errors.append(f"policies.rules[{j}].{field}[{k}] (value {code!r}): not an "
                                  "element symbol")
    for code in pol.review_capacity_t_per_month:
        if code not in countries:
            errors.append(f"policies.review_capacity_t_per_month (value {code!r}): not a "
                          "country code in the dataset")
    return errors


__all__ = [
    "DemandShock",
    "Event",
    "FacilityOutage",
    "Policies",
    "RuleChange",
    "Scenario",
    "ScenarioError",
    "Settings",
    "StockpileAction",
    "TradeRestriction",
    "builtin_names",
    "check_scenario",
    "load_scenario",
    "month_index",
    "month_labels",
    "scenario_from_dict",
]
