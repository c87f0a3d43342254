"""Features, entitlements and usage alerts, parsed from the catalog (DESIGN §13).

Pure: parsing with the one catalog vocabulary (domain/catalog_input.py, errors
named by path) and the arithmetic of an entitlement answer. Reading usage and
recording alerts are the adapters' business (services/entitlements.py,
services/alerts.py).

- A feature is a catalog-wide code, optionally measured by a meter.
- An entitlement (in a customer's catalog entry) is boolean (`has_access`) or
  metered (`limit` per billing period of the customer's cycle, `enforcement`
  `hard` (default: no access once usage reaches the limit) or `soft` (access
  stays, the excess is reported as overage)).
- An alert is a threshold on a meter's quantity (`meter` + `threshold`) or on
  the open period's rated spend (`spend`, in the customer's currency), either
  catalog-wide (every customer) or in one customer's entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterline.domain import catalog_input as ci
from meterline.domain.canonical import content_hash
from meterline.domain.decimals import fmt

_CODE_MAX = 64


class Enforcement(StrEnum):
    HARD = "hard"
    SOFT = "soft"


class AlertScope(StrEnum):
    CATALOG = "catalog"  # the catalog's `alerts` section: every customer
    CUSTOMER = "customer"  # one customer's `alerts`


@dataclass(frozen=True)
class Feature:
    code: str
    name: str
    meter: str | None = None

    def definition(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "meter": self.meter}

    @property
    def content_hash(self) -> str:
        return content_hash(self.definition())


@dataclass(frozen=True)
class Entitlement:
    """Boolean when `limit` is None (then `has_access` says it), metered otherwise."""

    feature: str
    has_access: bool = True
    limit: Decimal | None = None
    enforcement: Enforcement = Enforcement.HARD

    @property
    def metered(self) -> bool:
        return self.limit is not None

    def definition(self) -> dict[str, Any]:
        if self.limit is None:
            return {"feature": self.feature, "has_access": self.has_access}
        return {
            "feature": self.feature,
            "limit": fmt(self.limit),
            "enforcement": self.enforcement.value,
        }


@dataclass(frozen=True)
class AlertRule:
    """A quantity threshold (`meter` set) or a spend threshold (`meter` None)."""

    code: str
    threshold: Decimal
    meter: str | None = None
    enabled: bool = True

    @property
    def metric(self) -> str:
        return "spend" if self.meter is None else "quantity"

    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code}
        if self.meter is None:
            out["spend"] = fmt(self.threshold)
        else:
            out |= {"meter": self.meter, "threshold": fmt(self.threshold)}
        if not self.enabled:
            out["enabled"] = False
        return out

    @property
    def content_hash(self) -> str:
        return content_hash(self.definition())


def _code(raw: object, path: str) -> str:
    return ci.text(raw, path, _CODE_MAX)


def parse_feature(raw: object, path: str) -> Feature:
    data = ci.fields(raw, path, {"code", "name"}, {"meter"})
    meter = data.get("meter")
    return Feature(
        _code(data["code"], f"{path}.code"),
        ci.text(data["name"], f"{path}.name"),
        None if meter is None else _code(meter, f"{path}.meter"),
    )


def parse_features(raw: object) -> list[Feature]:
    if raw is None:
        return []
    out = [parse_feature(f, f"features[{i}]") for i, f in enumerate(ci.items(raw, "features"))]
    _unique([f.code for f in out], "features", "code", "feature")
    return out


def parse_entitlement(raw: object, path: str) -> Entitlement:
    data = ci.fields(raw, path, {"feature"}, {"has_access", "limit", "enforcement"})
    feature = _code(data["feature"], f"{path}.feature")
    if "limit" not in data:
        if "enforcement" in data:
            ci.fail(f"{path}.enforcement", "only a metered entitlement (with a limit) has one")
        if "has_access" not in data:
            ci.fail(path, "missing field 'has_access' (boolean) or 'limit' (metered)")
        return Entitlement(feature, ci.boolean(data["has_access"], f"{path}.has_access"))
    if "has_access" in data:
        ci.fail(
            f"{path}.has_access",
            "a metered entitlement has a limit, not has_access (access follows the limit)",
        )
    limit = ci.decimal(data["limit"], f"{path}.limit")
    if limit < 0:
        ci.fail(f"{path}.limit", f"{fmt(limit)} must not be negative")
    options = [e.value for e in Enforcement]
    enforcement = ci.choice(
        data.get("enforcement", "hard"), f"{path}.enforcement", options, "enforcement"
    )
    return Entitlement(feature, True, limit, Enforcement(enforcement))


def parse_entitlements(raw: object, path: str) -> tuple[Entitlement, ...]:
    if raw is None:
        return ()
    out = [parse_entitlement(e, f"{path}[{i}]") for i, e in enumerate(ci.items(raw, path))]
    _unique([e.feature for e in out], path, "feature", "entitlement for feature")
    return tuple(out)


def parse_alert(raw: object, path: str) -> AlertRule:
    data = ci.fields(raw, path, {"code"}, {"meter", "threshold", "spend", "enabled"})
    code = _code(data["code"], f"{path}.code")
    enabled = ci.boolean(data.get("enabled", True), f"{path}.enabled")
    if "spend" in data:
        for other in ("meter", "threshold"):
            if other in data:
                ci.fail(
                    f"{path}.{other}",
                    "an alert is on spend or on a meter's quantity (meter + threshold), not both",
                )
        return AlertRule(code, ci.positive(data["spend"], f"{path}.spend"), None, enabled)
    if "meter" not in data:
        ci.fail(path, "missing field 'meter' (with 'threshold') or 'spend'")
    if "threshold" not in data:
        ci.fail(path, "missing field 'threshold'")
    return AlertRule(
        code,
        ci.positive(data["threshold"], f"{path}.threshold"),
        _code(data["meter"], f"{path}.meter"),
        enabled,
    )


def parse_alerts(raw: object, path: str) -> tuple[AlertRule, ...]:
    if raw is None:
        return ()
    out = [parse_alert(a, f"{path}[{i}]") for i, a in enumerate(ci.items(raw, path))]
    _unique([a.code for a in out], path, "code", "alert")
    return tuple(out)


def _unique(values: list[str], path: str, field_: str, what: str) -> None:
    seen: set[str] = set()
    for i, v in enumerate(values):
        if v in seen:
            ci.fail(f"{path}[{i}].{field_}", f"duplicate {what} {v!r}")
        seen.add(v)


def check_references(
    features: Mapping[str, Feature],
    meters: frozenset[str],
    entitlements: tuple[Entitlement, ...],
    alerts: tuple[AlertRule, ...],
    path: str,
) -> None:
    """A customer's entitlements name known features (a metered one a feature with
    a meter) and its alerts known meters."""
    for i, e in enumerate(entitlements):
        p = f"{path}.entitlements[{i}]"
        feature = features.get(e.feature)
        if feature is None:
            known = ", ".join(sorted(features)) or "none defined"
            ci.fail(f"{p}.feature", f"no feature {e.feature!r} (features: {known})")
        if e.metered and feature.meter is None:
            ci.fail(
                f"{p}.limit",
                f"feature {e.feature!r} has no meter, so it cannot have a limit; "
                "give it a meter or use has_access",
            )
    check_alert_meters(meters, alerts, f"{path}.alerts")


def check_alert_meters(meters: frozenset[str], alerts: tuple[AlertRule, ...], path: str) -> None:
    for i, a in enumerate(alerts):
        if a.meter is not None and a.meter not in meters:
            ci.fail(f"{path}[{i}].meter", f"no meter {a.meter!r}")


@dataclass(frozen=True)
class Answer:
    """An entitlement decision: what `GET .../entitlements/{feature}` reports."""

    has_access: bool
    usage: Decimal | None
    limit: Decimal | None
    balance: Decimal | None
    overage: Decimal | None
    enforcement: Enforcement | None
    reason: str


def decide(entitlement: Entitlement | None, usage: Decimal | None) -> Answer:
    """Access, balance and overage of one entitlement given the period's usage so far.

    Hard: access while usage < limit (reaching the limit exhausts it). Soft:
    access always; the usage beyond the limit is overage. Balance is what is
    left before the limit, never negative."""
    if entitlement is None:
        return Answer(False, usage, None, None, None, None, "no entitlement")
    if entitlement.limit is None:
        reason = "granted" if entitlement.has_access else "denied"
        return Answer(entitlement.has_access, usage, None, None, None, None, reason)
    used = usage if usage is not None else Decimal(0)
    limit = entitlement.limit
    balance = max(limit - used, Decimal(0))
    overage = max(used - limit, Decimal(0))
    if entitlement.enforcement is Enforcement.HARD:
        access = used < limit
        reason = "within limit" if access else "limit reached"
    else:
        access = True
        reason = "within limit" if used <= limit else "over soft limit"
    return Answer(access, used, limit, balance, overage, entitlement.enforcement, reason)


def exhausted(entitlement: Entitlement, usage: Decimal) -> bool:
    """A metered entitlement's limit is reached (entitlement.exhausted fires)."""
    return entitlement.limit is not None and usage >= entitlement.limit
