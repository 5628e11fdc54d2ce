"""``rareflow check``: which export-control rules apply to one shipment, and why.

Uses the same :class:`~rareflow.policy.rules.Rule` objects and scope methods as the simulator's
rule compiler, so a shipment the simulator would hold back is one ``check`` flags, and the other
way round.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rareflow.policy.rules import REFINED_FORMS, Rule, parse_date


class ShipmentItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(description="Item code of the dataset, e.g. Dy2O3, NdFeB_high_temp.")
    origin: str = Field(description="Country where the item was made (ISO3).")
    value_share: float = Field(1.0, ge=0, le=1, description="Share of the shipment's value.")


class Shipment(BaseModel):
    """One shipment or product, as a customer or exporter describes it."""

    model_config = ConfigDict(extra="forbid")

    date: dt.date
    exporter: str
    destination: str
    end_use: Literal["civil", "military", "unknown"] = "unknown"
    end_user: str | None = None
    items: list[ShipmentItem] = Field(min_length=1)

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: object) -> object:
        try:
            return parse_date(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date YYYY-MM-DD") from None


class ItemInfo(BaseModel):
    """What the checker needs to know of a dataset item."""

    code: str
    stage: str
    form: str
    elements: set[str]
    magnet_elements: set[str] = Field(default_factory=set)


def _in_scope(rule: Rule, info: ItemInfo) -> bool:
    return rule.covers_item(info.stage, info.form, info.elements, info.magnet_elements)


def _controlled_content(rule: Rule, info: ItemInfo) -> bool:
    """Whether an input counts as controlled content for a value rule: it contains one of the
    rule's elements (any product form)."""
    return bool((info.elements | info.magnet_elements) & set(rule.elements))


def _scope_words(rule: Rule) -> str:
    parts = []
    if rule.elements:
        parts.append("elements " + ", ".join(rule.elements))
    if rule.magnet_content:
        parts.append("magnets containing " + ", ".join(rule.magnet_content))
    if rule.forms:
        parts.append("forms " + ", ".join(rule.forms))
    return "; ".join(parts)


def check_shipment(
    shipment: Shipment,
    rules: list[Rule],
    items: dict[str, ItemInfo],
    source_urls: dict[str, str],
) -> dict:
    """Evaluate a shipment against rules.

    Returns ``{"licence_required", "prohibited", "rules": [{id, title, source, outcome}],
    "reasons": [...]}``: every rule in force that reaches the shipment, the strictest outcome, and
    the chain of reasons (in force? item in scope? destination? extraterritorial share? end use?).
    """
    day = shipment.date
    reasons: list[str] = []
    hits: list[dict] = []
    licence = prohibited = False
    for rule in rules:
        if rule.mechanism in ("technology_ban", "entity_listing", "suspension", "tariff",
                              "other"):
            continue
        if not rule.active_on(day):
            if rule.effective <= day and rule.suspended is not None and day >= rule.suspended:
                if any(_in_scope(rule, items[i.item]) for i in shipment.items):
                    until = rule.suspended_until.isoformat() if rule.suspended_until else "open"
                    reasons.append(f"{rule.rule_id} would cover this shipment but is suspended "
                                   f"since {rule.suspended.isoformat()} (until {until})")
            continue
        if not rule.covers_destination(shipment.destination):
            continue
        direct = [i for i in shipment.items if rule.actor == shipment.exporter
                  and _in_scope(rule, items[i.item])]
        outcome = None
        why = []
        if direct:
            codes = ", ".join(i.item for i in direct)
            why.append(f"{rule.rule_id} ({rule.title or rule.mechanism}) is in force on "
                       f"{day.isoformat()}: export from {rule.actor} of {codes} is in its scope "
                       f"({_scope_words(rule)}) for destination {shipment.destination}")
            outcome = rule.mechanism
        elif rule.extraterritorial_threshold is not None and shipment.exporter != rule.actor:
            # goods made abroad (in the rule's form scope) with content of the actor's origin
            # made of the controlled elements, as a share of the shipment's value
            controlled = sum(i.value_share for i in shipment.items
                             if i.origin == rule.actor and _controlled_content(rule, items[i.item]))
            foreign_goods = [i for i in shipment.items if i.origin != rule.actor
                             and _in_scope(rule, items[i.item])]
            if foreign_goods and controlled >= rule.extraterritorial_threshold:
                why.append(
                    f"{rule.rule_id} reaches goods made outside {rule.actor}: content of "
                    f"{rule.actor} origin in scope is {controlled:.2%} of value, at or above the "
                    f"{rule.extraterritorial_threshold:.2%} threshold"
                )
                outcome = "licence"
            elif controlled > 0:
                reasons.append(
                    f"{rule.rule_id}: {rule.actor}-origin content {controlled:.3%} of value is "
                    f"below the {rule.extraterritorial_threshold:.2%} threshold"
                )
        if outcome is None:
            continue
        if shipment.end_use == "military" and rule.military_end_use == "denied":
            why.append(f"{rule.rule_id} denies military end users and end uses: refused")
            outcome = "ban"
        if outcome in ("ban", "informal_halt"):
            prohibited = True
        if outcome in ("licence", "quota"):
            licence = True
            if outcome == "quota" and rule.quota_t:
                why.append(f"exports fall under the annual quota of {rule.quota_t:,.0f} t")
        source = next((source_urls[s] for s in rule.source_id if s in source_urls), None)
        hits.append({"id": rule.rule_id, "title": rule.title, "source": source,
                     "outcome": {"ban": "prohibited", "informal_halt": "prohibited",
                                 "licence": "licence_required",
                                 "quota": "licence_required"}[outcome]})
        reasons.extend(why)
    if not hits:
        reasons.append(f"no rule in force on {day.isoformat()} reaches this shipment")
    if shipment.end_user:
        reasons.append(f"end user {shipment.end_user!r}: the dataset holds no list of named end "
                       "users, so no listing was checked")
    return {"licence_required": licence or prohibited, "prohibited": prohibited,
            "rules": hits, "reasons": reasons}


__all__ = ["REFINED_FORMS", "ItemInfo", "Shipment", "ShipmentItem", "check_shipment"]
