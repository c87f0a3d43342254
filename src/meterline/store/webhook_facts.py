"""The facts that cause webhook messages, recorded in those facts' transactions.

Each function here is called once, inside the transaction that appends the
fact (a document, a status change, an ingest batch), so the message commits
or rolls back with it (DESIGN §14). They read what they need through the same
connection and never commit.
"""

from __future__ import annotations

import weakref

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from meterline.billing.body import Body
from meterline.store import outbox
from meterline.store.customer_catalog import load_customers
from meterline.store.event_log import AppendResult, BatchHeader, Reject
from meterline.store.meter_catalog import load_meters
from meterline.store.window_index import current_watermark
from meterline.webhooks import closing, events


def document_issued(
    conn: Connection,
    number: str,
    body: Body,
    document_hash: str,
    forced: bool,
    now_us: int,
) -> None:
    outbox.emit(conn, events.document_issued(number, body, document_hash, forced, now_us))


def documents_issued(
    conn: Connection,
    docs: list[tuple[str, Body, str, bool]],
    now_us: int,
) -> None:
    """`document_issued` for many documents (number, body, document hash, forced)."""
    outbox.emit_many(
        conn, [events.document_issued(n, b, h, forced, now_us) for n, b, h, forced in docs]
    )


def status_changed(
    conn: Connection,
    number: str,
    body: Body,
    status: str,
    reason: str,
    seq: int,
    now_us: int,
) -> None:
    msg = events.invoice_status(number, body, status, reason, seq, now_us)
    if msg is not None:
        outbox.emit(conn, msg)


def ingest_batch(
    conn: Connection,
    header: BatchHeader,
    result: AppendResult,
    rejects: list[Reject],
    now_us: int,
) -> None:
    """events.rejected for a batch with rejects, then period.closed for every
    customer-period the global watermark (as the batch left it) now closes."""
    every = sorted([*rejects, *result.conflicts], key=lambda r: r.position)
    if every:
        listed = [
            {"index": r.position, "source": r.source, "code": str(r.code), "message": r.message}
            for r in every[: events.MAX_LISTED_REJECTS]
        ]
        msg = events.events_rejected(
            result.batch_id,
            header.source,
            header.origin,
            len(result.accepted),
            result.duplicates,
            len(every),
            listed,
            now_us,
        )
        outbox.emit(conn, msg)
    watermark = current_watermark(conn, now_us)
    if watermark is not None:
        periods_closed(conn, watermark, now_us)


_ANY_DAY = text(
    'SELECT 1 FROM customers WHERE definition LIKE \'%"billing_cycle":"week"%\' '
    'OR definition LIKE \'%"anchor":"subscription"%\' LIMIT 1'
)


_LAST_CUSTOMER = text("SELECT seq, content_hash FROM customers ORDER BY seq DESC LIMIT 1")
# Per engine: (the last customer version's seq and hash, the answer for them). Customer versions
# are only appended, so the answer changes only when a new version is recorded; the
# scan runs once per catalog change, not on every watermark advance.
_any_day: weakref.WeakKeyDictionary[Engine, tuple[tuple[int, str], bool]]
_any_day = weakref.WeakKeyDictionary()


def _any_day_cycles(conn: Connection) -> bool:
    """Whether some customer version has a weekly or anniversary subscription (periods that
    can end on any day); a superset is fine, it only skips a cheap shortcut."""
    row = conn.execute(_LAST_CUSTOMER).first()
    last = (-1, "") if row is None else (int(row[0]), str(row[1]))
    known = _any_day.get(conn.engine)
    if known is not None and known[0] == last:
        return known[1]
    answer = conn.execute(_ANY_DAY).first() is not None
    _any_day[conn.engine] = (last, answer)
    return answer


def periods_closed(conn: Connection, watermark: int, now_us: int) -> int:
    """Emit period.closed for closings in (cursor, watermark]; advance the cursor."""
    row = conn.execute(text("SELECT closed_through FROM webhook_cursor WHERE id = 1")).first()
    if row is None:
        # A store emptied by hand: start from here, announcing nothing old.
        conn.execute(
            text("INSERT INTO webhook_cursor (id, closed_through) VALUES (1, :w)"),
            {"w": watermark},
        )
        return 0
    after = None if row[0] is None else int(row[0])
    if after is not None and watermark <= after:
        return 0
    meters = load_meters(conn)
    emitted = 0
    any_day = _any_day_cycles(conn)
    if after is None or closing.may_close(after, watermark, closing.max_extra_us(meters), any_day):
        for customer, period, closes_at in closing.due(
            load_customers(conn), meters, after, watermark
        ):
            msg = events.period_closed(customer.id, period.to_dict(), closes_at, watermark, now_us)
            done = conn.execute(
                text(
                    "SELECT 1 FROM webhook_period_closings WHERE customer_id = :c "
                    "AND period_label = :p"
                ),
                {"c": customer.id, "p": period.label},
            ).first()
            if done is not None:
                continue
            conn.execute(
                text(
                    "INSERT INTO webhook_period_closings (customer_id, period_label, message_id, "
                    "closes_at) VALUES (:c, :p, :m, :t)"
                ),
                {"c": customer.id, "p": period.label, "m": msg.id, "t": closes_at},
            )
            outbox.emit(conn, msg)
            emitted += 1
    conn.execute(
        text("UPDATE webhook_cursor SET closed_through = :w WHERE id = 1"), {"w": watermark}
    )
    return emitted
