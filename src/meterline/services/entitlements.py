"""Entitlement checks: may this customer still use this feature? (DESIGN §13)

Usage is the feature meter's quantity in the customer's open billing period
(the period of its billing cycle holding "now"), as known now, read from the
bitemporal usage index for that one customer and meter only
(`services/measuring.py`: day rollups for whole days, windows at the edges).
The decision itself is `billing.entitlements.decide`.

Also the catalog side: `apply_section` records the catalog's `features` and
catalog-wide `alerts` and checks the references of customers' entitlements
and alerts, inside `catalog apply`'s transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.customers import Customer, parse_customers
from meterline.billing.entitlements import (
    Answer,
    Entitlement,
    Feature,
    check_alert_meters,
    check_references,
    decide,
    parse_alerts,
    parse_features,
)
from meterline.billing.periods import Cycle, Period
from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.metering import Meter, empty, merge_all, parse_meters, result
from meterline.services import measuring
from meterline.store import entitlement_catalog, sequence
from meterline.store.customer_catalog import load_customer
from meterline.store.meter_catalog import load_meters


def apply_section(
    conn: Connection, doc: dict[str, Any], now_us: int, added: list[str], unchanged: list[str]
) -> None:
    """`features` and `alerts` of a catalog (after its meters, before its customers)."""
    meters = frozenset(m.code for m in load_meters(conn))
    for i, f in enumerate(parse_features(doc.get("features"))):
        if f.meter is not None and f.meter not in meters:
            raise MeterlineError(
                ErrorCode.INVALID_CATALOG,
                f"features[{i}].meter: no meter {f.meter!r}",
                path=f"features[{i}].meter",
            )
        recorded = entitlement_catalog.apply(conn, entitlement_catalog.FEATURE, f, now_us)
        (added if recorded else unchanged).append(f"feature {f.code}")
    alerts = parse_alerts(doc.get("alerts"), "alerts")
    check_alert_meters(meters, alerts, "alerts")
    for a in alerts:
        recorded = entitlement_catalog.apply(conn, entitlement_catalog.ALERT, a, now_us)
        (added if recorded else unchanged).append(f"alert {a.code}")
    if doc.get("customers"):
        features = entitlement_catalog.load_features(conn)
        for i, c in enumerate(parse_customers(doc.get("customers"))):
            check_references(features, meters, c.entitlements, c.alerts, f"customers[{i}]")


def cycle_at(customer: Customer, at_us: int) -> Cycle:
    """The billing cycle in force at an instant: that of the subscription active
    then (the first by start), else the customer's first cycle."""
    for sub, _ in customer.subscriptions_in(at_us, at_us + 1):
        return sub.cycle(customer.timezone)
    return customer.cycles()[0]


def period_at(customer: Customer, at_us: int) -> Period:
    return cycle_at(customer, at_us).period_of(at_us)


def meter_quantity(
    conn: Connection, customer_id: str, meter: Meter, period: Period, known_at: int
) -> Decimal:
    """The meter's quantity over the period as known at K, all dimension groups merged."""
    groups = measuring.measure(
        conn, customer_id, [meter], (period.start, period.end), [period.start], known_at
    )
    states = [s for g in groups.values() for s in g.states]
    total = merge_all(meter.aggregation, states) if states else empty(meter.aggregation)
    return result(total) or Decimal(0)


def _answer(
    feature: Feature,
    answer: Answer,
    period: Period,
    known_at: int,
) -> dict[str, Any]:
    def num(v: Decimal | None) -> str | None:
        return None if v is None else fmt(v)

    return {
        "feature": feature.code,
        "meter": feature.meter,
        "has_access": answer.has_access,
        "usage": num(answer.usage),
        "limit": num(answer.limit),
        "balance": num(answer.balance),
        "overage": num(answer.overage),
        "enforcement": None if answer.enforcement is None else answer.enforcement.value,
        "reason": answer.reason,
        "period": period.to_dict(),
        "as_of_seq": known_at,
    }


def _evaluate(
    conn: Connection,
    customer: Customer,
    features: Iterable[Feature],
    now_us: int,
    known_at: int,
) -> list[dict[str, Any]]:
    period = period_at(customer, now_us)
    granted: dict[str, Entitlement] = {e.feature: e for e in customer.entitlements}
    usage: dict[str, Decimal] = {}
    out = []
    for f in features:
        ent = granted.get(f.code)
        quantity: Decimal | None = None
        if ent is not None and f.meter is not None:
            if f.meter not in usage:
                meter = _meter(conn, f.meter, known_at)
                usage[f.meter] = meter_quantity(conn, customer.id, meter, period, known_at)
            quantity = usage[f.meter]
        out.append(_answer(f, decide(ent, quantity), period, known_at))
    return out


# Parsed meters by their stored text (facts never change; equal text, equal value).
_PARSED_SIZE = 10_000
_meters: dict[str, Meter] = {}


def _meter(conn: Connection, code: str, known_at: int) -> Meter:
    row = conn.execute(
        text("SELECT definition FROM meters WHERE code = :c AND seq <= :k"),
        {"c": code, "k": known_at},
    ).first()
    if row is None:
        raise MeterlineError(ErrorCode.UNKNOWN_METER, f"no meter {code!r}")
    found = _meters.get(row[0])
    if found is None:
        [found] = parse_meters([decode_json(row[0])])
        if len(_meters) >= _PARSED_SIZE:
            _meters.clear()
        _meters[row[0]] = found
    return found


def check(conn: Connection, customer_id: str, feature_code: str, now_us: int) -> dict[str, Any]:
    """One feature's entitlement for a customer, as known now."""
    k = sequence.current(conn)
    customer = load_customer(conn, customer_id, k)  # parsed once per version
    feature = _feature(conn, feature_code, k)
    return {"customer_id": customer.id} | _evaluate(conn, customer, [feature], now_us, k)[0]


def check_all(conn: Connection, customer_id: str, now_us: int) -> dict[str, Any]:
    """Every catalog feature for a customer (features it has no entitlement to say so)."""
    k = sequence.current(conn)
    customer = load_customer(conn, customer_id, k)  # parsed once per version
    features = entitlement_catalog.load_features(conn, k)
    answers = _evaluate(conn, customer, features.values(), now_us, k)
    return {
        "customer_id": customer.id,
        "period": period_at(customer, now_us).to_dict(),
        "as_of_seq": k,
        "entitlements": answers,
    }


def _feature(conn: Connection, code: str, known_at: int) -> Feature:
    feature = entitlement_catalog.load_feature(conn, code, known_at)
    if feature is None:
        known = ", ".join(sorted(entitlement_catalog.load_features(conn, known_at)))
        raise MeterlineError(
            ErrorCode.UNKNOWN_FEATURE, f"no feature {code!r} (features: {known or 'none defined'})"
        )
    return feature
