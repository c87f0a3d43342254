"""Webhook event types and their payloads: ``{"type", "timestamp", "data"}``.

Each message has a natural key (the fact that caused it: a document number, a
batch id, a customer-period...) from which its id is derived, so recording the
same fact twice can never produce two messages. Payloads are canonical JSON,
the exact bytes that are signed and sent. docs/WEBHOOKS.md documents each type.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from meterline.billing.body import Body
from meterline.domain.canonical import dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us

# How many rejects an events.rejected message lists (the counts are complete).
MAX_LISTED_REJECTS = 10


class EventType(StrEnum):
    INVOICE_ISSUED = "invoice.issued"
    INVOICE_PAID = "invoice.paid"
    INVOICE_VOIDED = "invoice.voided"
    CREDIT_NOTE_ISSUED = "credit_note.issued"
    DEBIT_NOTE_ISSUED = "debit_note.issued"
    EVENTS_REJECTED = "events.rejected"
    RECONCILE_FAILED = "reconcile.failed"
    PERIOD_CLOSED = "period.closed"
    # Alerts and entitlements (DESIGN §13; services/alerts.py).
    USAGE_THRESHOLD_CROSSED = "usage.threshold_crossed"
    ENTITLEMENT_EXHAUSTED = "entitlement.exhausted"


EMITTED_TODAY = frozenset(EventType)


@dataclass(frozen=True)
class Message:
    id: str
    type: EventType
    body: bytes
    created_at: int


def message(kind: EventType, key: str, data: dict[str, Any], now_us: int) -> Message:
    digest = hashlib.sha256(f"{kind}|{key}".encode()).hexdigest()[:32]
    body = dumps({"type": str(kind), "timestamp": format_us(now_us), "data": data})
    return Message(f"msg_{digest}", kind, body, now_us)


_ISSUED = {
    "invoice": EventType.INVOICE_ISSUED,
    "credit_note": EventType.CREDIT_NOTE_ISSUED,
    "debit_note": EventType.DEBIT_NOTE_ISSUED,
}


def document_data(number: str, body: Body, status: str) -> dict[str, Any]:
    """What a subscriber needs to act on a document without fetching it."""
    p = body.period
    return {
        "number": number,
        "kind": body.kind,
        "status": status,
        "customer_id": body.customer_id,
        "period": {"start": p.start, "end": p.end, "label": p.label},
        "currency": body.currency,
        "subtotal": body.text(body.subtotal),
        "tax": body.text(body.tax),
        "total": body.text(body.total),
        "corrects": body.corrects,
        "cutoff_seq": body.cutoff_seq,
    }


def document_issued(
    number: str,
    body: Body,
    document_hash: str,
    forced: bool,
    issued_at_us: int,
) -> Message:
    data = document_data(number, body, "issued") | {
        "issued_at": format_us(issued_at_us),
        "forced": forced,
        "document_hash": document_hash,
    }
    return message(_ISSUED[body.kind], number, data, issued_at_us)


def invoice_status(
    number: str, body: Body, status: str, reason: str, seq: int, now_us: int
) -> Message | None:
    """invoice.paid / invoice.voided; status changes of notes have no type (yet)."""
    if body.kind != "invoice" or status not in ("paid", "void"):
        return None
    kind = EventType.INVOICE_PAID if status == "paid" else EventType.INVOICE_VOIDED
    data = document_data(number, body, status) | {
        "reason": reason,
        "status_seq": seq,
        "at": format_us(now_us),
    }
    return message(kind, number, data, now_us)


def events_rejected(
    batch_id: int,
    source: str,
    origin: str,
    accepted: int,
    duplicates: int,
    rejected: int,
    rejects: list[dict[str, Any]],
    now_us: int,
) -> Message:
    """`rejected` counts every reject of the batch; `rejects` lists the first ones."""
    data = {
        "batch_id": batch_id,
        "source": source,
        "origin": origin,
        "received_at": format_us(now_us),
        "accepted": accepted,
        "duplicates": duplicates,
        "rejected": rejected,
        "rejects": rejects[:MAX_LISTED_REJECTS],
    }
    return message(EventType.EVENTS_REJECTED, str(batch_id), data, now_us)


def period_closed(
    customer_id: str,
    period: dict[str, str],
    closes_at_us: int,
    watermark_us: int,
    now_us: int,
) -> Message:
    data = {
        "customer_id": customer_id,
        "period": period,
        "closed_at": format_us(closes_at_us),
        "watermark": format_us(watermark_us),
    }
    return message(EventType.PERIOD_CLOSED, f"{customer_id}|{period['label']}", data, now_us)


def threshold_crossed(
    customer_id: str,
    alert: dict[str, Any],
    period: dict[str, str],
    observed: str,
    batch_id: int | None,
    as_of_seq: int,
    now_us: int,
) -> Message:
    """`alert`: {code, scope, metric, meter, threshold}; keyed by customer, alert and period."""
    data = {
        "customer_id": customer_id,
        "alert": alert,
        "period": period,
        "observed": observed,
        "batch_id": batch_id,
        "as_of_seq": as_of_seq,
        "at": format_us(now_us),
    }
    key = f"{customer_id}|{alert['scope']}|{alert['code']}|{period['label']}"
    return message(EventType.USAGE_THRESHOLD_CROSSED, key, data, now_us)


def entitlement_exhausted(
    customer_id: str,
    feature: str,
    meter: str,
    limit: str,
    enforcement: str,
    usage: str,
    period: dict[str, str],
    batch_id: int | None,
    as_of_seq: int,
    now_us: int,
) -> Message:
    data = {
        "customer_id": customer_id,
        "feature": feature,
        "meter": meter,
        "limit": limit,
        "enforcement": enforcement,
        "usage": usage,
        "has_access": enforcement != "hard",
        "period": period,
        "batch_id": batch_id,
        "as_of_seq": as_of_seq,
        "at": format_us(now_us),
    }
    key = f"{customer_id}|{feature}|{period['label']}"
    return message(EventType.ENTITLEMENT_EXHAUSTED, key, data, now_us)


def reconcile_failed(cutoff_seq: int, failed: list[dict[str, Any]], now_us: int) -> Message:
    data = {"cutoff_seq": cutoff_seq, "at": format_us(now_us), "failed_checks": failed}
    return message(EventType.RECONCILE_FAILED, f"{cutoff_seq}|{now_us}", data, now_us)


def parse_types(names: list[str]) -> list[EventType]:
    """Event type names as given by an operator; a clear error for unknown ones."""
    out: list[EventType] = []
    for name in names:
        try:
            out.append(EventType(name.strip()))
        except ValueError:
            known = ", ".join(sorted(t.value for t in EventType))
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT, f"unknown webhook event type {name!r}; known: {known}"
            ) from None
    return sorted(set(out))
