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
    settings: Settings = Field(default_factory=Settings)

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
        self.errors = errors
        super().__init__(f"scenario {source}:\n" + "\n".join(f"  {e}" for e in errors))


_EVENT_TAGS = {"facility_outage", "trade_restriction", "demand_shock", "stockpile_release",
               "stockpile_purchase"}


def _location(loc: tuple) -> str:
    out = ""
    previous = None
    for part in loc:
        if isinstance(previous, int) and part in _EVENT_TAGS:
            previous = part
            continue  # pydantic names the union member; the user wrote only the index
        previous = part
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def scenario_from_dict(raw: object, source: str = "<dict>") -> Scenario:
    """Build a scenario, turning pydantic's errors into 'field: value: rule' lines."""
    if not isinstance(raw, dict):
        raise ScenarioError(source, ["(top level): expected a mapping of keys to values"])
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for item in exc.errors():
            loc = tuple(p for p in item["loc"] if not str(p).startswith(("function-", "literal")))
            value = item.get("input")
            shown = "" if isinstance(value, dict | list) else f" (value {value!r})"
            errors.append(f"{_location(loc)}{shown}: {item['msg']}")
        raise ScenarioError(source, errors) from None


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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), [f"(file): not valid YAML: {exc}"]) from None
    return scenario_from_dict(raw, str(path))


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
        if value not in allowed:
            errors.append(f"{field} (value {value!r}): not a {what} in the dataset")

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
            need(f"{where}.exporter", event.exporter, countries, "country code")
            if event.importers != "all":
                for j, code in enumerate(event.importers):
                    need(f"{where}.importers[{j}]", code, countries, "country code")
            if event.items != "all":
                for j, code in enumerate(event.items):
                    need(f"{where}.items[{j}]", code, items, "item code")
        elif isinstance(event, DemandShock):
            need(f"{where}.sector", event.sector, sectors, "sector code")
            need(f"{where}.country", event.country, countries, "country code")
        elif isinstance(event, StockpileAction):
            need(f"{where}.country", event.country, countries, "country code")
            need(f"{where}.item", event.item, magnets, "magnet item code")
    for field in ("domestic_priority", "defense_priority"):
        for j, code in enumerate(getattr(scenario.settings, field)):
            need(f"settings.{field}[{j}]", code, countries, "country code")
    return errors


__all__ = [
    "DemandShock",
    "Event",
    "FacilityOutage",
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
