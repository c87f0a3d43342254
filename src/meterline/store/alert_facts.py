"""Recorded alerts: one seq-numbered fact per threshold (or exhausted entitlement)
per customer per period (DESIGN §13), with the webhook message it caused.

`record` is called inside the ingest transaction that crossed the threshold,
after the batch took the sequence lock, so the check-then-insert cannot race
another writer; the unique constraint `uq_alerts_once` backs it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.timestamps import format_us
from meterline.store import sequence

THRESHOLD_CROSSED = "threshold_crossed"
ENTITLEMENT_EXHAUSTED = "entitlement_exhausted"

_COLUMNS = (
    "seq, customer_id, kind, scope, code, period_label, period_start, period_end, metric, "
    "meter_code, threshold, observed, batch_id, message_id, recorded_at"
)


@dataclass(frozen=True)
class AlertKey:
    customer_id: str
    kind: str
    scope: str
    code: str
    period_label: str


@dataclass(frozen=True)
class AlertFact:
    key: AlertKey
    period_start: int
    period_end: int
    metric: str
    meter_code: str | None
    threshold: str
    observed: str
    batch_id: int | None
    message_id: str
    recorded_at: int


def recorded(conn: Connection, customer_id: str, period_label: str) -> set[tuple[str, str, str]]:
    """(kind, scope, code) already recorded for a customer-period."""
    rows = conn.execute(
        text("SELECT kind, scope, code FROM alerts WHERE customer_id = :c AND period_label = :p"),
        {"c": customer_id, "p": period_label},
    )
    return {(str(r[0]), str(r[1]), str(r[2])) for r in rows}


def record(conn: Connection, fact: AlertFact) -> int:
    """Append the fact at the next seq (the caller holds the sequence lock)."""
    seq = sequence.take(conn)
    k = fact.key
    conn.execute(
        text(
            f"INSERT INTO alerts ({_COLUMNS}) VALUES (:q, :c, :kind, :scope, :code, :p, :ps, "
            ":pe, :metric, :meter, :th, :obs, :b, :m, :t)"
        ),
        {
            "q": seq,
            "c": k.customer_id,
            "kind": k.kind,
            "scope": k.scope,
            "code": k.code,
            "p": k.period_label,
            "ps": fact.period_start,
            "pe": fact.period_end,
            "metric": fact.metric,
            "meter": fact.meter_code,
            "th": fact.threshold,
            "obs": fact.observed,
            "b": fact.batch_id,
            "m": fact.message_id,
            "t": fact.recorded_at,
        },
    )
    return seq


def list_alerts(
    conn: Connection, customer_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Recorded alerts, newest first."""
    sql = f"SELECT {_COLUMNS} FROM alerts"
    params: dict[str, Any] = {"n": limit}
    if customer_id is not None:
        sql += " WHERE customer_id = :c"
        params["c"] = customer_id
    sql += " ORDER BY seq DESC LIMIT :n"
    out = []
    for r in conn.execute(text(sql), params):
        out.append(
            {
                "seq": int(r[0]),
                "customer_id": str(r[1]),
                "kind": str(r[2]),
                "scope": str(r[3]),
                "code": str(r[4]),
                "period": {
                    "label": str(r[5]),
                    "start": format_us(int(r[6])),
                    "end": format_us(int(r[7])),
                },
                "metric": str(r[8]),
                "meter": None if r[9] is None else str(r[9]),
                "threshold": str(r[10]),
                "observed": str(r[11]),
                "batch_id": None if r[12] is None else int(r[12]),
                "message_id": str(r[13]),
                "recorded_at": format_us(int(r[14])),
            }
        )
    return out
