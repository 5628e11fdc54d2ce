"""Export-control rules as data, and the scope logic that both the simulator and
``rareflow check`` use, so the two always agree.

A :class:`Rule` is one row of ``data/policies.csv`` (or an inline rule in a scenario). Its status on
a date follows the dates alone: in force from ``effective``; paused from ``suspended`` until
``suspended_until`` (when the rule applies again unless the scenario extends the suspension);
over from ``ended``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mechanism = Literal[
    "licence", "ban", "quota", "informal_halt", "technology_ban", "entity_listing", "suspension",
    "tariff", "other",
]
#: Mechanisms that act on flows of goods in the simulator.
FLOW_MECHANISMS = ("licence", "ban", "quota", "informal_halt")
#: Forms that make up the simulator's refined-element market (oxides and metals are one market).
REFINED_FORMS = ("oxide", "compound", "metal", "alloy")
#: Product forms of each simulated stage.
STAGE_FORMS = {
    "mining": {"concentrate"},
    "separation": {"oxide", "compound"},
    "metal": {"metal", "alloy"},
    "magnet": {"magnet"},
}


def parse_date(value: object) -> dt.date | None:
    """YYYY-MM-DD (or YYYY-MM, first day) -> date; empty -> None."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    text = str(value)
    if len(text) == 7:
        text += "-01"
    return dt.date.fromisoformat(text)


class Rule(BaseModel):
    """One export-control measure (or limb). Field meanings: docs/policy.md, schema/policies.csv."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str
    title: str = ""
    actor: str
    instrument: str = "announcement"
    mechanism: Mechanism
    in_model: bool = True
    elements: list[str] = Field(default_factory=list)
    commodities: list[str] = Field(default_factory=list)
    forms: list[str] = Field(default_factory=list)
    magnet_content: list[str] = Field(default_factory=list)
    destinations_mode: Literal["all", "include", "exclude"] = "all"
    destinations: list[str] = Field(default_factory=list)
    military_end_use: Literal["denied", "case_by_case", "not_stated"] = "not_stated"
    extraterritorial_threshold: float | None = Field(default=None, ge=0, le=1)
    announced: dt.date | None = None
    effective: dt.date
    suspended: dt.date | None = None
    suspended_until: dt.date | None = None
    ended: dt.date | None = None
    statutory_review_days: float | None = Field(default=None, ge=0)
    validity_months: float | None = Field(default=None, ge=0)
    quota_t: float | None = Field(default=None, ge=0)
    leakage: float | None = Field(default=None, ge=0, le=1)
    source_id: list[str] = Field(default_factory=list)
    confidence: str = "medium"
    note: str = ""

    @field_validator("announced", "effective", "suspended", "suspended_until", "ended",
                     mode="before")
    @classmethod
    def _date(cls, value: object) -> object:
        return parse_date(value)

    @field_validator("extraterritorial_threshold", "statutory_review_days", "validity_months",
                     "quota_t", "leakage", mode="before")
    @classmethod
    def _number(cls, value: object) -> object:
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            return None
        return value

    # ---- status ---------------------------------------------------------------------------------
    def active_on(self, day: dt.date) -> bool:
        """In force on ``day`` (effective, not ended, not in a running suspension)."""
        if day < self.effective or (self.ended is not None and day >= self.ended):
            return False
        if self.suspended is not None and day >= self.suspended:
            return self.suspended_until is not None and day >= self.suspended_until
        return True

    @property
    def acts_on_flows(self) -> bool:
        return self.in_model and self.mechanism in FLOW_MECHANISMS

    # ---- scope ----------------------------------------------------------------------------------
    def covers_destination(self, country: str) -> bool:
        if self.destinations_mode == "all":
            return True
        listed = country in self.destinations
        return listed if self.destinations_mode == "include" else not listed

    def covers_concentrate(self) -> bool:
        return "concentrate" in self.forms

    def covers_refined(self, element: str, form: str) -> bool:
        """An oxide, compound, metal or alloy of ``element``."""
        return form in self.forms and element in self.elements

    def covers_magnet(self, contained: set[str]) -> bool:
        """A magnet containing ``contained`` elements (any amount; no minimum is stated)."""
        if "magnet" not in self.forms:
            return False
        if not self.magnet_content:
            return True
        return bool(contained & set(self.magnet_content))

    def covers_item(self, stage: str, form: str, elements: set[str],
                    magnet_elements: set[str]) -> bool:
        """Whether an item of the dataset falls in scope (by stage, form and elements)."""
        if stage == "mining":
            return self.covers_concentrate()
        if stage == "magnet":
            return self.covers_magnet(magnet_elements)
        return any(self.covers_refined(e, form) for e in elements)


def rules_from_table(frame) -> list[Rule]:
    """Rules from the ``policies`` table (a typed DataFrame)."""
    fields = set(Rule.model_fields)
    out = []
    for record in frame.to_dict("records"):
        data = {k: v for k, v in record.items() if k in fields}
        for key in ("elements", "commodities", "forms", "magnet_content", "destinations",
                    "source_id"):
            data[key] = list(data.get(key) or [])
        for key in ("title", "note", "instrument", "confidence"):
            if data.get(key) is None or (isinstance(data.get(key), float)
                                         and math.isnan(data[key])):
                data.pop(key, None)
        data["in_model"] = bool(data.get("in_model"))
        out.append(Rule.model_validate(data))
    return out
