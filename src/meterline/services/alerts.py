"""Usage alerts and exhausted entitlements, evaluated when an ingest batch commits
(DESIGN §13, §14).

`on_ingest` is the one call from the ingest write transaction
(`Ingestor.store_batch`, shared by the serial, parallel and Kafka ingestors).
It looks only at the customers the batch touched that have something to
evaluate (a catalog-wide alert, an alert of their own, a metered
entitlement), and for each period the batch's events fall in, only at the
thresholds not yet recorded for that period. A threshold at or below the
period's value as known after the batch is recorded once, as a fact of table
`alerts` (seq-numbered, in the Merkle log), with its webhook message in the
same transaction: a rolled-back batch records and sends nothing, a retried
batch stores only duplicates and touches no one, and a later batch finds the
fact already there.

Spend is the period's subtotal (usage and fees, before tax and credits) rated
as known after the batch, exactly as an invoice preview would; only customers
with a spend alert pay for rating. A failure to rate (a price book gap) never
fails the ingest: the alert is left for a later batch and logged.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from meterline.billing.customers import Customer
from meterline.billing.entitlements import AlertRule, AlertScope, Entitlement, Feature, exhausted
from meterline.billing.invoice import assemble
from meterline.billing.periods import Period
from meterline.domain.decimals import fmt
from meterline.domain.errors import MeterlineError
from meterline.domain.events import Event
from meterline.metering import Meter
from meterline.services.entitlements import meter_quantity, period_at
from meterline.services.invoicing import gather
from meterline.store import alert_facts, entitlement_catalog, outbox, sequence
from meterline.store.alert_facts import (
    ENTITLEMENT_EXHAUSTED,
    THRESHOLD_CROSSED,
    AlertFact,
    AlertKey,
)
from meterline.store.customer_catalog import load_customers
from meterline.store.event_log import AppendResult
from meterline.store.meter_catalog import load_meters
from meterline.webhooks import events as webhook_events

log = logging.getLogger("meterline.alerts")


@dataclass(frozen=True)
class _Watch:
    """What one customer has to evaluate."""

    customer: Customer
    alerts: tuple[tuple[AlertScope, AlertRule], ...]
    metered: tuple[tuple[Entitlement, Feature], ...]


@dataclass(frozen=True)
class _Config:
    marker: tuple[int, int, int]
    watches: dict[str, _Watch]
    meters: dict[str, Meter]


_configs: weakref.WeakKeyDictionary[Engine, _Config] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _marker(conn: Connection) -> tuple[int, int, int]:
    row = conn.execute(
        text(
            "SELECT (SELECT COALESCE(MAX(seq), 0) FROM customers), "
            "(SELECT COALESCE(MAX(seq), 0) FROM entitlement_catalog), "
            "(SELECT COALESCE(MAX(seq), 0) FROM meters)"
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def _config(conn: Connection) -> _Config:
    """Who has something to evaluate; rebuilt only when customers, features,
    alerts or meters change (three max(seq) lookups per batch otherwise)."""
    marker = _marker(conn)
    with _lock:
        found = _configs.get(conn.engine)
    if found is not None and found.marker == marker:
        return found
    features = entitlement_catalog.load_features(conn)
    everyone = tuple(
        (AlertScope.CATALOG, a) for a in entitlement_catalog.load_alerts(conn) if a.enabled
    )
    watches: dict[str, _Watch] = {}
    for c in load_customers(conn):
        own = tuple((AlertScope.CUSTOMER, a) for a in c.alerts if a.enabled)
        metered = tuple(
            (e, features[e.feature])
            for e in c.entitlements
            if e.metered and e.feature in features and features[e.feature].meter is not None
        )
        if everyone or own or metered:
            watches[c.id] = _Watch(c, everyone + own, metered)
    config = _Config(marker, watches, {m.code: m for m in load_meters(conn)})
    with _lock:
        _configs[conn.engine] = config
    return config


def on_ingest(conn: Connection, result: AppendResult, now_us: int) -> int:
    """Evaluate alerts for the customers this batch touched; returns how many were recorded."""
    if not result.accepted:
        return 0
    config = _config(conn)
    if not config.watches:
        return 0
    touched: dict[str, list[Event]] = defaultdict(list)
    for _, ev in result.accepted:
        if ev.customer_id in config.watches:
            touched[ev.customer_id].append(ev)
    if not touched:
        return 0
    known_at = sequence.current(conn)
    recorded = 0
    for cid in sorted(touched):
        watch = config.watches[cid]
        evs = touched[cid]
        types = {e.event_type for e in evs}
        for period in _periods(watch.customer, evs):
            recorded += _evaluate(
                conn, config, watch, period, types, known_at, result.batch_id, now_us
            )
    return recorded


def _periods(customer: Customer, evs: list[Event]) -> list[Period]:
    """The billing periods the events fall in (computed once per period, not per event)."""
    found: list[Period] = []
    for e in evs:
        t = e.event_time
        if not any(p.start <= t < p.end for p in found):
            found.append(period_at(customer, t))
    return sorted(found, key=lambda p: p.start)


def _evaluate(
    conn: Connection,
    config: _Config,
    watch: _Watch,
    period: Period,
    types: set[str],
    known_at: int,
    batch_id: int | None,
    now_us: int,
) -> int:
    cid = watch.customer.id
    done = alert_facts.recorded(conn, cid, period.label)
    quantities: dict[str, Decimal] = {}

    def quantity(code: str) -> Decimal | None:
        meter = config.meters.get(code)
        if meter is None or meter.event_type not in types:
            return None  # this batch did not change it
        if code not in quantities:
            quantities[code] = meter_quantity(conn, cid, meter, period, known_at)
        return quantities[code]

    spend: list[Decimal | None] = []
    recorded = 0
    for scope, rule in watch.alerts:
        if (THRESHOLD_CROSSED, scope.value, rule.code) in done:
            continue
        if rule.meter is None:
            if not spend:
                spend.append(_spend(conn, watch.customer, period, known_at))
            value = spend[0]
        else:
            value = quantity(rule.meter)
        if value is None or value < rule.threshold:
            continue
        alert = {
            "code": rule.code,
            "scope": scope.value,
            "metric": rule.metric,
            "meter": rule.meter,
            "threshold": fmt(rule.threshold),
        }
        msg = webhook_events.threshold_crossed(
            cid, alert, period.to_dict(), fmt(value), batch_id, known_at, now_us
        )
        _record(
            conn, cid, THRESHOLD_CROSSED, scope.value, rule, period, value, batch_id, msg, now_us
        )
        recorded += 1
    for ent, feature in watch.metered:
        if (ENTITLEMENT_EXHAUSTED, AlertScope.CUSTOMER.value, ent.feature) in done:
            continue
        assert feature.meter is not None and ent.limit is not None
        used = quantity(feature.meter)
        if used is None or not exhausted(ent, used):
            continue
        msg = webhook_events.entitlement_exhausted(
            cid,
            ent.feature,
            feature.meter,
            fmt(ent.limit),
            ent.enforcement.value,
            fmt(used),
            period.to_dict(),
            batch_id,
            known_at,
            now_us,
        )
        rule = AlertRule(ent.feature, ent.limit, feature.meter)
        _record(
            conn,
            cid,
            ENTITLEMENT_EXHAUSTED,
            AlertScope.CUSTOMER.value,
            rule,
            period,
            used,
            batch_id,
            msg,
            now_us,
        )
        recorded += 1
    return recorded


def _record(
    conn: Connection,
    customer_id: str,
    kind: str,
    scope: str,
    rule: AlertRule,
    period: Period,
    observed: Decimal,
    batch_id: int | None,
    msg: webhook_events.Message,
    now_us: int,
) -> None:
    fact = AlertFact(
        AlertKey(customer_id, kind, scope, rule.code, period.label),
        period.start,
        period.end,
        rule.metric,
        rule.meter,
        fmt(rule.threshold),
        fmt(observed),
        batch_id,
        msg.id,
        now_us,
    )
    alert_facts.record(conn, fact)
    outbox.emit(conn, msg)


def _spend(conn: Connection, customer: Customer, period: Period, known_at: int) -> Decimal | None:
    """The period's subtotal rated as known at K; None without a subscription or
    when rating fails (logged, retried by the next batch)."""
    if not customer.subscriptions_in(period.start, period.end):
        return None
    try:
        b = gather(conn, customer.id, period.label, known_at)
        body = assemble(b.customer, b.period, b.subscriptions, known_at, ())
    except MeterlineError as exc:
        log.warning("spend alert for %s %s not evaluated: %s", customer.id, period.label, exc)
        return None
    return Decimal(body.text(body.subtotal))  # as the body writes it (minor digits)


def list_alerts(conn: Connection, customer_id: str | None = None) -> dict[str, Any]:
    return {"alerts": alert_facts.list_alerts(conn, customer_id)}
