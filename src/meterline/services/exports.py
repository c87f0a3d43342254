"""Exports for finance and warehouses (DESIGN §7): invoices, lines, journal, events.

Each export is a fixed list of columns (docs/EXPORTS.md; append-only: columns
are added at the end, never renamed or reordered) and a generator of rows read
through a streaming cursor, so an export of any size holds one chunk of rows in
memory, never the whole result. Money and quantities stay exact: the
documents' own decimal text, turned into Decimal here; the writers
(render/exports.py) print them as plain decimal strings (CSV) or store them as
Parquet decimals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing import body as typed
from meterline.billing.periods import parse_label
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency
from meterline.domain.timestamps import from_datetime, parse_rfc3339
from meterline.ledger.postings import from_minor
from meterline.store.database import Store

FETCH_ROWS = 2_000


class ColumnType(StrEnum):
    STRING = "string"
    INT = "int"
    DECIMAL = "decimal"
    TIMESTAMP = "timestamp"  # microseconds since the epoch, UTC
    BOOL = "bool"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False


S, N, D, T, B = (
    ColumnType.STRING,
    ColumnType.INT,
    ColumnType.DECIMAL,
    ColumnType.TIMESTAMP,
    ColumnType.BOOL,
)


def _cols(*spec: tuple[str, ColumnType] | tuple[str, ColumnType, bool]) -> tuple[Column, ...]:
    return tuple(Column(*s) for s in spec)


INVOICE_COLUMNS = _cols(
    ("number", S),
    ("kind", S),
    ("status", S),
    ("customer_id", S),
    ("customer_name", S),
    ("period", S),
    ("period_start", T),
    ("period_end", T),
    ("issued_at", T),
    ("currency", S),
    ("subtotal", D),
    ("tax_rate", D),
    ("tax", D),
    ("credits_applied", D),
    ("total", D),
    ("corrects", S, True),
    ("cutoff_seq", N),
    ("forced", B),
    ("document_hash", S),
)

LINE_COLUMNS = _cols(
    ("number", S),
    ("kind", S),
    ("customer_id", S),
    ("period", S),
    ("currency", S),
    ("line_no", N),
    ("charge", S),
    ("description", S),
    ("price_book", S, True),
    ("model", S, True),
    ("meter", S, True),
    ("dimensions", S),
    ("quantity", D, True),
    ("unit_price", D, True),
    ("amount", D),
)

JOURNAL_COLUMNS = _cols(
    ("entry_seq", N),
    ("posted_at", T),
    ("entry_kind", S),
    ("document", S),
    ("customer_id", S),
    ("memo", S),
    ("line_no", N),
    ("account", S),
    ("currency", S),
    ("debit", D),
    ("credit", D),
)

EVENT_COLUMNS = _cols(
    ("seq", N),
    ("source", S),
    ("event_id", S),
    ("customer_id", S),
    ("event_type", S),
    ("event_time", T),
    ("received_at", T),
    ("properties", S),
    ("content_hash", S),
    ("batch_id", N),
    ("backfill", B),
    ("retracted", B),
)


class Kind(StrEnum):
    INVOICES = "invoices"
    LINES = "lines"
    JOURNAL = "journal"
    EVENTS = "events"


COLUMNS: dict[Kind, tuple[Column, ...]] = {
    Kind.INVOICES: INVOICE_COLUMNS,
    Kind.LINES: LINE_COLUMNS,
    Kind.JOURNAL: JOURNAL_COLUMNS,
    Kind.EVENTS: EVENT_COLUMNS,
}

Row = tuple[Any, ...]


def parse_kind(name: str) -> Kind:
    try:
        return Kind(name)
    except ValueError:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown export {name!r}; use invoices, lines, journal or events",
        ) from None


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _stream(conn: Connection, sql: str, params: dict[str, Any]) -> Iterator[Any]:
    """Rows through a server-side cursor (PostgreSQL) or SQLite's lazy stepping."""
    return iter(conn.execution_options(yield_per=FETCH_ROWS).execute(text(sql), params))


def _statuses(conn: Connection, label: str) -> dict[str, str]:
    rows = conn.execute(
        text(
            "SELECT s.number, s.status FROM document_status s JOIN documents d "
            "ON d.number = s.number WHERE d.period_label = :p ORDER BY s.seq"
        ),
        {"p": label},
    )
    return {str(r[0]): str(r[1]) for r in rows}  # the last status wins


_DOCS = (
    "SELECT number, kind, body, issued_at, forced, document_hash FROM documents "
    "WHERE period_label = :p ORDER BY seq"
)


def invoice_rows(conn: Connection, label: str) -> Iterator[Row]:
    statuses = _statuses(conn, label)
    for number, kind, raw, issued_at, forced, doc_hash in _stream(conn, _DOCS, {"p": label}):
        b = typed.decode(raw.encode() if isinstance(raw, str) else bytes(raw))
        yield (
            str(number),
            str(kind),
            statuses.get(str(number), "issued"),
            b.customer_id,
            b.customer_name,
            b.period.label,
            parse_rfc3339(b.period.start),
            parse_rfc3339(b.period.end),
            int(issued_at),
            b.currency,
            b.subtotal,
            b.tax_rate,
            b.tax,
            b.credits_applied,
            b.total,
            b.corrects,
            b.cutoff_seq,
            bool(forced),
            str(doc_hash),
        )


# Dimension values are strings or null: msgspec's sorted encoding is then
# byte-identical to domain.canonical.dumps, without the generic walk.
_sorted_json = msgspec.json.Encoder(order="sorted")


def _dims(dims: dict[str, str | None] | None) -> str:
    return _sorted_json.encode(dims).decode() if dims else "{}"


class _Line(msgspec.Struct):
    charge: str
    amount: str
    description: str = ""
    price_book: str | None = None
    model: str | None = None
    meter: str | None = None
    dimensions: dict[str, str | None] | None = None
    quantity: str | None = None
    unit_price: str | None = None


class _PeriodLabel(msgspec.Struct):
    label: str


class _LinesOf(msgspec.Struct):
    """Only what the lines export reads: msgspec skips the rest of the body
    (explanations, provenance) without building it."""

    customer_id: str
    currency: str
    period: _PeriodLabel
    lines: list[_Line]


_lines_of = msgspec.json.Decoder(_LinesOf)


def line_rows(conn: Connection, label: str) -> Iterator[Row]:
    for number, kind, raw, *_ in _stream(conn, _DOCS, {"p": label}):
        b = _lines_of.decode(raw)
        head = (str(number), str(kind), b.customer_id, b.period.label, b.currency)
        for i, ln in enumerate(b.lines, start=1):
            yield (
                *head,
                i,
                ln.charge,
                ln.description,
                ln.price_book,
                ln.model,
                ln.meter,
                _dims(ln.dimensions),
                None if ln.quantity is None else Decimal(ln.quantity),
                None if ln.unit_price is None else Decimal(ln.unit_price),
                Decimal(ln.amount),
            )


def journal_rows(conn: Connection, label: str) -> Iterator[Row]:
    """Entries of the period's documents: their issue, payment and void postings."""
    sql = (
        "SELECT e.seq, e.posted_at, e.kind, e.document, e.customer_id, e.memo, l.line_no, "
        "l.account, l.currency, l.debit_minor, l.credit_minor FROM journal_entries e "
        "JOIN journal_lines l ON l.entry_seq = e.seq "
        "WHERE e.document IN (SELECT number FROM documents WHERE period_label = :p) "
        "ORDER BY e.seq, l.line_no"
    )
    currencies: dict[str, Currency] = {}
    for r in _stream(conn, sql, {"p": label}):
        code = str(r[8])
        cur = currencies.get(code) or currencies.setdefault(code, Currency(code))
        yield (
            int(r[0]),
            int(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            str(r[5]),
            int(r[6]),
            str(r[7]),
            code,
            from_minor(int(r[9]), cur),
            from_minor(int(r[10]), cur),
        )


def month_bounds(label: str) -> tuple[int, int]:
    """The UTC calendar month of a YYYY-MM label (the events export's period)."""
    year, month = parse_label(label)
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    lo = from_datetime(datetime(year, month, 1, tzinfo=UTC))
    return lo, from_datetime(datetime(nxt[0], nxt[1], 1, tzinfo=UTC))


def event_rows(conn: Connection, label: str) -> Iterator[Row]:
    """Events whose event_time is in the UTC month, as stored, with whether a
    retraction is known now."""
    lo, hi = month_bounds(label)
    sql = (
        "SELECT e.seq, e.source, e.event_id, e.customer_id, e.event_type, e.event_time, "
        "e.received_at, e.properties, e.content_hash, e.batch_id, e.backfill, "
        "EXISTS (SELECT 1 FROM retractions r WHERE r.source = e.source "
        "AND r.event_id = e.event_id) FROM events e "
        "WHERE e.event_time >= :lo AND e.event_time < :hi ORDER BY e.seq"
    )
    for r in _stream(conn, sql, {"lo": lo, "hi": hi}):
        yield (
            int(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            str(r[4]),
            int(r[5]),
            int(r[6]),
            str(r[7]),
            str(r[8]),
            int(r[9]),
            bool(r[10]),
            bool(r[11]),
        )


_ROWS = {
    Kind.INVOICES: invoice_rows,
    Kind.LINES: line_rows,
    Kind.JOURNAL: journal_rows,
    Kind.EVENTS: event_rows,
}


def rows(store: Store, kind: Kind, label: str) -> Iterator[Row]:
    """Every row of one export, read in one snapshot transaction held while
    the generator runs (close it to end the transaction early)."""
    parse_label(label)
    with store.read() as conn:
        yield from _ROWS[kind](conn, label)
