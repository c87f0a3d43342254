"""The journal table: appending entries and reading balances (DESIGN §9).

Entries are appended by the transaction that records their fact (see
store/documents.py), never updated or deleted; balances are projections,
summed by the database over integer minor units.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.money import Currency
from meterline.ledger.postings import Entry, EntryKind, Line, from_minor, to_minor


def post(conn: Connection, seq: int, entry: Entry, now_us: int) -> None:
    """Append one entry (already balanced by construction) under the fact's seq."""
    currency = Currency(entry.currency)
    conn.execute(
        text(
            "INSERT INTO journal_entries (seq, kind, document, customer_id, currency, memo, "
            "posted_at) VALUES (:q, :k, :d, :c, :cur, :m, :t)"
        ),
        {
            "q": seq,
            "k": str(entry.kind),
            "d": entry.document,
            "c": entry.customer_id,
            "cur": entry.currency,
            "m": entry.memo,
            "t": now_us,
        },
    )
    if entry.lines:
        conn.execute(
            text(
                "INSERT INTO journal_lines (entry_seq, line_no, account, currency, debit_minor, "
                "credit_minor) VALUES (:q, :n, :a, :cur, :d, :c)"
            ),
            [
                {
                    "q": seq,
                    "n": i,
                    "a": ln.account,
                    "cur": entry.currency,
                    "d": to_minor(ln.debit, currency),
                    "c": to_minor(ln.credit, currency),
                }
                for i, ln in enumerate(entry.lines, start=1)
            ],
        )


def post_many(conn: Connection, entries: list[tuple[int, Entry]], now_us: int) -> None:
    """`post` for many facts' entries: one executemany per table (an invoice run's chunk)."""
    if not entries:
        return
    conn.execute(
        text(
            "INSERT INTO journal_entries (seq, kind, document, customer_id, currency, memo, "
            "posted_at) VALUES (:q, :k, :d, :c, :cur, :m, :t)"
        ),
        [
            {
                "q": seq,
                "k": str(e.kind),
                "d": e.document,
                "c": e.customer_id,
                "cur": e.currency,
                "m": e.memo,
                "t": now_us,
            }
            for seq, e in entries
        ],
    )
    lines: list[dict[str, Any]] = []
    for seq, e in entries:
        currency = Currency(e.currency)
        lines.extend(
            {
                "q": seq,
                "n": i,
                "a": ln.account,
                "cur": e.currency,
                "d": to_minor(ln.debit, currency),
                "c": to_minor(ln.credit, currency),
            }
            for i, ln in enumerate(e.lines, start=1)
        )
    if lines:
        conn.execute(
            text(
                "INSERT INTO journal_lines (entry_seq, line_no, account, currency, debit_minor, "
                "credit_minor) VALUES (:q, :n, :a, :cur, :d, :c)"
            ),
            lines,
        )


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    entry: Entry
    posted_at: int


def entries(
    conn: Connection, limit: int | None = None, customer: str | None = None
) -> Iterator[StoredEntry]:
    """Stored entries in seq order (the last `limit` of them when given)."""
    where, params = ("WHERE customer_id = :c", {"c": customer}) if customer else ("", {})
    sql = f"SELECT seq FROM journal_entries {where} ORDER BY seq DESC"
    lo = 0
    if limit is not None:
        seqs = [int(r[0]) for r in conn.execute(text(sql + " LIMIT :n"), params | {"n": limit})]
        if not seqs:
            return
        lo = min(seqs)
    rows = conn.execute(
        text(
            "SELECT e.seq, e.kind, e.document, e.customer_id, e.currency, e.memo, e.posted_at, "
            "l.account, l.debit_minor, l.credit_minor FROM journal_entries e "
            "LEFT JOIN journal_lines l ON l.entry_seq = e.seq WHERE e.seq >= :lo"
            + (" AND e.customer_id = :c" if customer else "")
            + " ORDER BY e.seq, l.line_no"
        ),
        params | {"lo": lo},
    )
    current: list[Any] | None = None
    lines: list[Line] = []
    for r in rows:
        if current is None or int(r[0]) != current[0]:
            if current is not None:
                yield _stored(current, lines)
            current, lines = [int(r[0]), *r[1:7]], []
        if r[7] is not None:
            cur = Currency(str(r[4]))
            lines.append(Line(str(r[7]), from_minor(int(r[8]), cur), from_minor(int(r[9]), cur)))
    if current is not None:
        yield _stored(current, lines)


def _stored(head: list[Any], lines: list[Line]) -> StoredEntry:
    seq, kind, document, customer, currency, memo, posted_at = head
    return StoredEntry(
        seq,
        Entry(
            EntryKind(str(kind)),
            str(document),
            str(customer),
            str(currency),
            tuple(lines),
            str(memo),
        ),
        int(posted_at),
    )


def balances(conn: Connection, customer: str | None = None) -> list[tuple[str, str, int, int]]:
    """(account, currency, debit minor units, credit minor units), by account.

    With `customer`, only entries of that customer's documents: their
    receivable and credit plus the revenue, tax and cash they moved.
    """
    where, params = ("WHERE e.customer_id = :c", {"c": customer}) if customer else ("", {})
    rows = conn.execute(
        text(
            "SELECT l.account, l.currency, SUM(l.debit_minor), SUM(l.credit_minor) "
            "FROM journal_lines l JOIN journal_entries e ON e.seq = l.entry_seq "
            f"{where} GROUP BY l.account, l.currency ORDER BY l.account, l.currency"
        ),
        params,
    )
    return [(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]
