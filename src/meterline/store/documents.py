"""Issued documents: append-only, numbered without gaps, chained by hash.

Numbers come from a per-kind counter row updated in the issuing transaction,
which also holds the knowledge-sequence lock: a rolled-back issue gives its
number back, so numbering has no gaps and no duplicates under concurrency.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.billing.body import Body, CreditApplied, credits_of, decode, encode_bytes
from meterline.billing.document import GENESIS, Issued, Kind, Status, chain_hash, number_text
from meterline.billing.periods import Period
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us, parse_rfc3339
from meterline.ledger.postings import issue_entry, status_entry
from meterline.store import audit, journal, sequence, webhook_facts

_COLUMNS = "seq, number, kind, body, content_hash, previous_hash, document_hash, issued_at, forced"


def _issued(row: Any, status: Status) -> Issued:
    return Issued(
        number=str(row[1]),
        kind=Kind(str(row[2])),
        body=decode(str(row[3]).encode()),
        content_hash=str(row[4]),
        previous_hash=str(row[5]),
        document_hash=str(row[6]),
        issued_at=format_us(int(row[7])),
        forced=bool(row[8]),
        status=status,
    )


def status_of(conn: Connection, number: str, known_at: int | None = None) -> Status:
    params: dict[str, Any] = {"n": number}
    known = ""
    if known_at is not None:
        known, params["k"] = " AND seq <= :k", known_at
    row = conn.execute(
        text(
            f"SELECT status FROM document_status WHERE number = :n{known} ORDER BY seq DESC LIMIT 1"
        ),
        params,
    ).first()
    return Status.ISSUED if row is None else Status(str(row[0]))


def get(conn: Connection, number: str) -> Issued:
    row = conn.execute(
        text(f"SELECT {_COLUMNS} FROM documents WHERE number = :n"), {"n": number}
    ).first()
    if row is None:
        raise MeterlineError(ErrorCode.DOCUMENT_NOT_FOUND, f"no issued document {number!r}")
    return _issued(row, status_of(conn, number))


def list_documents(conn: Connection, customer: str | None = None) -> list[Issued]:
    where, params = ("WHERE customer_id = :c", {"c": customer}) if customer else ("", {})
    rows = conn.execute(
        text(f"SELECT {_COLUMNS} FROM documents {where} ORDER BY seq"), params
    ).all()
    statuses = {
        str(r[0]): Status(str(r[1]))
        for r in conn.execute(
            text(
                "SELECT s.number, s.status FROM document_status s WHERE s.seq = "
                "(SELECT MAX(s2.seq) FROM document_status s2 WHERE s2.number = s.number)"
            )
        )
    }
    return [_issued(r, statuses.get(str(r[1]), Status.ISSUED)) for r in rows]


def read_all(
    conn: Connection, since: int = 0
) -> Iterator[tuple[int, str, str, Issued | Exception]]:
    """Every document (with seq > `since`) in seq order as (seq, number, document hash,
    the document or why it cannot be read), with one statement for the documents and
    one for statuses (verification reads them all; `get` per document costs two
    statements each)."""
    for seq, number, document_hash, got, _ in read_all_stored(conn, since):
        yield seq, number, document_hash, got


class Stored:
    """A documents row as stored, its body decoded only when asked for: verification
    checks most documents from their bytes and envelope alone (decoding a body's
    Decimals is most of what reading a document costs)."""

    __slots__ = ("content_hash", "data", "document_hash", "kind", "number", "row", "seq", "status")

    def __init__(self, row: Any, status: str | None) -> None:
        self.row = row
        self.status = status
        self.data = str(row[3]).encode()
        self.seq, self.number, self.kind = int(row[0]), str(row[1]), str(row[2])
        self.content_hash, self.document_hash = str(row[4]), str(row[6])

    def envelope(self) -> dict[str, Any]:
        """The fields the chain hash covers (`chain_hash`), as `Appender` wrote them;
        raises where a column or the status cannot be read, as `issued` would."""
        row = self.row
        Status(self.status or Status.ISSUED)
        return {
            "number": str(row[1]),
            "kind": str(Kind(str(row[2]))),
            "content_hash": str(row[4]),
            "previous_hash": str(row[5]),
            "issued_at": format_us(int(row[7])),
            "forced": bool(row[8]),
        }

    def issued(self) -> Issued:
        """The document, its body decoded (raises what a row that cannot be read raises)."""
        return _issued(self.row, Status(self.status or Status.ISSUED))


def read_rows(
    conn: Connection, since: int = 0, until: int | None = None, statuses: bool = True
) -> Iterator[Stored]:
    """The documents with seq in (since, until], in seq order, undecoded; one statement
    for the documents and one for statuses (none without ``statuses``: a verify
    worker reads bodies only, a task per seq range)."""
    status_of = (
        {
            str(n): str(st)
            for n, st in conn.execute(
                text("SELECT number, status FROM document_status ORDER BY seq")
            )
        }
        if statuses
        else {}
    )
    for row in conn.execute(
        text(f"SELECT {_COLUMNS} FROM documents WHERE seq > :s AND seq <= :u ORDER BY seq"),
        {"s": since, "u": 2**62 if until is None else until},
    ):
        yield Stored(row, status_of.get(str(row[1])))


def read_all_stored(
    conn: Connection, since: int = 0, until: int | None = None
) -> Iterator[tuple[int, str, str, Issued | Exception, bytes]]:
    """`read_all` (seq in (since, until]), each with the body bytes as stored
    (verification hashes them as they are before decoding them again)."""
    for stored in read_rows(conn, since, until):
        try:
            doc = stored.issued()
        except Exception as exc:  # a row that cannot be read: named by the caller
            yield stored.seq, stored.number, stored.document_hash, exc, stored.data
            continue
        yield stored.seq, doc.number, doc.document_hash, doc, stored.data


def invoice_for(conn: Connection, customer: str, label: str) -> str | None:
    row = conn.execute(
        text("SELECT number FROM documents WHERE invoice_key = :k"), {"k": f"{customer}|{label}"}
    ).first()
    return None if row is None else str(row[0])


def credits_spent(conn: Connection, customer: str, known_at: int) -> dict[str, Decimal]:
    """Credit used per grant by issued, non-void documents as known at K."""
    spent: dict[str, Decimal] = {}
    rows = conn.execute(
        text(
            "SELECT number, body FROM documents WHERE customer_id = :c AND seq <= :k ORDER BY seq"
        ),
        {"c": customer, "k": known_at},
    ).all()
    for number, body in rows:
        if status_of(conn, str(number), known_at) == Status.VOID:
            continue
        for c in credits_of(str(body).encode()):
            spent[c.grant] = spent.get(c.grant, Decimal(0)) + c.amount
    return spent


def invoices_for(conn: Connection, customers: list[str], label: str) -> dict[str, str]:
    """`invoice_for` of many customers: customer -> number of their invoice already issued."""
    if not customers:
        return {}
    rows = conn.execute(
        text("SELECT invoice_key, number FROM documents WHERE invoice_key IN :ks").bindparams(
            bindparam("ks", expanding=True)
        ),
        {"ks": [f"{c}|{label}" for c in customers]},
    )
    return {str(k).rpartition("|")[0]: str(n) for k, n in rows}


def credits_spent_many(
    conn: Connection, customers: list[str], known_at: int
) -> dict[str, dict[str, Decimal]]:
    """`credits_spent` of many customers at once (every customer asked for has an entry)."""
    out: dict[str, dict[str, Decimal]] = {c: {} for c in customers}
    if not customers:
        return out
    rows = conn.execute(
        text(
            "SELECT number, customer_id, body FROM documents WHERE customer_id IN :cs "
            "AND seq <= :k ORDER BY seq"
        ).bindparams(bindparam("cs", expanding=True)),
        {"cs": customers, "k": known_at},
    ).all()
    if not rows:
        return out
    status: dict[str, str] = {}
    for number, st in conn.execute(
        text(
            "SELECT number, status FROM document_status WHERE number IN :ns AND seq <= :k "
            "ORDER BY seq"
        ).bindparams(bindparam("ns", expanding=True)),
        {"ns": [str(r[0]) for r in rows], "k": known_at},
    ):
        status[str(number)] = str(st)
    for number, customer, body in rows:
        if status.get(str(number)) == Status.VOID:
            continue
        spent = out[str(customer)]
        for c in credits_of(str(body).encode()):
            spent[c.grant] = spent.get(c.grant, Decimal(0)) + c.amount
    return out


def credits_spent_at(
    conn: Connection, wanted: Sequence[tuple[str, int]]
) -> list[dict[str, Decimal] | MeterlineError]:
    """`credits_spent` of many (customer, K) pairs (verify: each invoice at its own
    cutoff) with two statements: the customers' documents and statuses up to the
    greatest K, cut back to each K here. Each entry is the spent map, or the error
    `credits_spent` raises for it (a stored body whose credits cannot be read)."""
    if not wanted:
        return []
    top = max(k for _, k in wanted)
    docs: dict[str, list[tuple[int, str, str]]] = {}
    for seq, number, customer, body in conn.execute(
        text(
            "SELECT seq, number, customer_id, body FROM documents WHERE customer_id IN :cs "
            "AND seq <= :k ORDER BY seq"
        ).bindparams(bindparam("cs", expanding=True)),
        {"cs": sorted({c for c, _ in wanted}), "k": top},
    ):
        docs.setdefault(str(customer), []).append((int(seq), str(number), str(body)))
    history: dict[str, list[tuple[int, str]]] = {}
    numbers = [n for rows in docs.values() for _, n, _ in rows]
    if numbers:
        for number, seq, st in conn.execute(
            text(
                "SELECT number, seq, status FROM document_status WHERE number IN :ns "
                "AND seq <= :k ORDER BY seq"
            ).bindparams(bindparam("ns", expanding=True)),
            {"ns": numbers, "k": top},
        ):
            history.setdefault(str(number), []).append((int(seq), str(st)))
    credits: dict[str, tuple[CreditApplied, ...] | MeterlineError] = {}
    out: list[dict[str, Decimal] | MeterlineError] = []
    for customer, k in wanted:
        spent: dict[str, Decimal] = {}
        failed: MeterlineError | None = None
        for seq, number, body in docs.get(customer, []):
            if seq > k:
                break
            status = Status.ISSUED
            for at, st in history.get(number, []):
                if at > k:
                    break
                status = Status(st)
            if status == Status.VOID:
                continue
            got = credits.get(number)
            if got is None:
                try:
                    got = credits[number] = credits_of(body.encode())
                except MeterlineError as exc:
                    got = credits[number] = exc
            if isinstance(got, MeterlineError):
                failed = got
                break
            for c in got:
                spent[c.grant] = spent.get(c.grant, Decimal(0)) + c.amount
        out.append(spent if failed is None else failed)
    return out


def last_hash(conn: Connection) -> str:
    row = conn.execute(
        text("SELECT document_hash FROM documents ORDER BY seq DESC LIMIT 1")
    ).first()
    return GENESIS if row is None else str(row[0])


def _invoice_key(kind: Kind, body: Body, period: Period) -> str | None:
    """One invoice per customer-period; an interim invoice (progressive billing) is
    keyed by its number within the period, so each is issued at most once too."""
    if kind != Kind.INVOICE:
        return None
    key = f"{body.customer_id}|{period.label}"
    return f"{key}|interim-{body.interim}" if body.role_of == "interim" else key


def _row(
    seq: int,
    number: str,
    kind: Kind,
    body: Body,
    body_digest: str,
    period: Period,
    envelope: dict[str, Any],
    document_hash: str,
    now_us: int,
) -> dict[str, Any]:
    """The parameters of `_INSERT` for one document (one at a time or a chunk's)."""
    return {
        "q": seq,
        "n": number,
        "k": str(kind),
        "c": body.customer_id,
        "pl": period.label,
        "ps": period.start,
        "pe": period.end,
        "ik": _invoice_key(kind, body, period),
        "co": body.corrects,
        "cut": body.cutoff_seq,
        "cur": body.currency,
        "tot": body.text(body.total),
        "b": encode_bytes(body).decode(),
        "h": body_digest,
        "ph": envelope["previous_hash"],
        "dh": document_hash,
        "f": envelope["forced"],
        "t": now_us,
    }


_INSERT = text(
    "INSERT INTO documents (seq, number, kind, customer_id, period_label, period_start, "
    "period_end, invoice_key, corrects, cutoff_seq, currency, total, body, content_hash, "
    "previous_hash, document_hash, forced, issued_at) VALUES (:q, :n, :k, :c, :pl, :ps, "
    ":pe, :ik, :co, :cut, :cur, :tot, :b, :h, :ph, :dh, :f, :t)"
)


def append(
    conn: Connection,
    kind: Kind,
    body: Body,
    body_digest: str,
    period: Period,
    now_us: int,
    forced: bool,
) -> Issued:
    """Record a document. The caller holds the sequence lock (sequence.lock)."""
    n = int(
        conn.execute(
            text("UPDATE document_numbers SET last = last + 1 WHERE kind = :k RETURNING last"),
            {"k": str(kind)},
        ).scalar_one()
    )
    number = number_text(kind, n)
    envelope = {
        "number": number,
        "kind": str(kind),
        "content_hash": body_digest,
        "previous_hash": last_hash(conn),
        "issued_at": format_us(now_us),
        "forced": forced,
    }
    document_hash = chain_hash(envelope)
    seq = sequence.take(conn)
    conn.execute(
        _INSERT,
        _row(seq, number, kind, body, body_digest, period, envelope, document_hash, now_us),
    )
    # The ledger and the audit trail, in the issuing transaction (DESIGN §9).
    journal.post(conn, seq, issue_entry(number, body), now_us)
    audit.record(
        conn,
        "issue" if kind == Kind.INVOICE else "rerate",
        {
            "number": number,
            "kind": str(kind),
            "customer_id": body.customer_id,
            "period": period.label,
            "total": body.text(body.total),
            "currency": body.currency,
            "corrects": body.corrects,
            "forced": forced,
        },
        now_us,
    )
    webhook_facts.document_issued(conn, number, body, document_hash, forced, now_us)
    return Issued(
        number,
        kind,
        body,
        body_digest,
        str(envelope["previous_hash"]),
        document_hash,
        str(envelope["issued_at"]),
        forced,
    )


class Appender:
    """Documents of one kind appended by one transaction holding the sequence lock,
    written at `flush` with one statement per table instead of several per document.

    Numbers, seqs and the chain are handed out in memory exactly as `append` would
    (the lock keeps every other writer out until commit), so the rows are the same
    as appending the documents one by one in the same order."""

    def __init__(self, conn: Connection, kind: Kind) -> None:
        self.conn = conn
        self.kind = kind
        self.seq = sequence.lock(conn)
        self.number = int(
            conn.execute(
                text("SELECT last FROM document_numbers WHERE kind = :k"), {"k": str(kind)}
            ).scalar_one()
        )
        self.previous = last_hash(conn)
        self.rows: list[dict[str, Any]] = []
        self.issued: list[Issued] = []
        self.periods: list[Period] = []
        self.now_us: int | None = None

    def add(
        self, body: Body, body_digest: str, period: Period, now_us: int, forced: bool
    ) -> tuple[Issued, tuple[Any, ...]]:
        """Hand out the next number and seq; returns the document and its row as the
        Merkle leaf commits to it (``merkle.FACT_KINDS`` documents columns)."""
        if self.now_us is not None and now_us != self.now_us:
            raise ValueError("one Appender appends at one instant")
        self.now_us = now_us
        self.number += 1
        self.seq += 1
        number = number_text(self.kind, self.number)
        envelope = {
            "number": number,
            "kind": str(self.kind),
            "content_hash": body_digest,
            "previous_hash": self.previous,
            "issued_at": format_us(now_us),
            "forced": forced,
        }
        document_hash = chain_hash(envelope)
        row = _row(
            self.seq, number, self.kind, body, body_digest, period, envelope, document_hash, now_us
        )
        self.rows.append(row)
        self.periods.append(period)
        doc = Issued(
            number,
            self.kind,
            body,
            body_digest,
            self.previous,
            document_hash,
            str(envelope["issued_at"]),
            forced,
        )
        self.issued.append(doc)
        self.previous = document_hash
        return doc, tuple(row[c] for c in _LEAF_COLUMNS)

    def flush(self) -> list[Issued]:
        """Write what was added: counter, knowledge seq, documents, journal, audit, webhooks."""
        if not self.rows:
            return []
        conn, now_us = self.conn, self.now_us
        assert now_us is not None
        conn.execute(
            text("UPDATE document_numbers SET last = :n WHERE kind = :k"),
            {"n": self.number, "k": str(self.kind)},
        )
        sequence.advance(conn, self.seq)
        conn.execute(_INSERT, self.rows)
        journal.post_many(
            conn,
            [
                (r["q"], issue_entry(d.number, d.body))
                for r, d in zip(self.rows, self.issued, strict=True)
            ],
            now_us,
        )
        audit.record_many(
            conn,
            [
                (r["q"], "issue" if self.kind == Kind.INVOICE else "rerate", _audit(d, p))
                for r, d, p in zip(self.rows, self.issued, self.periods, strict=True)
            ],
            now_us,
        )
        webhook_facts.documents_issued(
            conn, [(d.number, d.body, d.document_hash, d.forced) for d in self.issued], now_us
        )
        out, self.rows, self.issued, self.periods = self.issued, [], [], []
        return out


# The documents columns in ``merkle.FACT_KINDS`` order, as Appender's row keys.
_LEAF_COLUMNS = (
    "q", "n", "k", "c", "pl", "ps", "pe", "ik", "co", "cut", "cur", "tot", "b", "h", "ph", "dh",
    "f", "t",
)  # fmt: skip


def _audit(doc: Issued, period: Period) -> dict[str, Any]:
    return {
        "number": doc.number,
        "kind": str(doc.kind),
        "customer_id": doc.body.customer_id,
        "period": period.label,
        "total": doc.body.text(doc.body.total),
        "currency": doc.body.currency,
        "corrects": doc.body.corrects,
        "forced": doc.forced,
    }


_TRANSITIONS = {Status.ISSUED: {Status.PAID, Status.VOID}}


def set_status(conn: Connection, number: str, status: Status, reason: str, now_us: int) -> Status:
    """Move a document's status (a fact of its own; the document never changes)."""
    sequence.lock(conn)
    doc = get(conn, number)
    current = doc.status
    if status == current:
        return current
    if status not in _TRANSITIONS.get(current, set()):
        raise MeterlineError(
            ErrorCode.INVALID_STATUS_CHANGE, f"{number} is {current}; it cannot become {status}"
        )
    notes = _open_notes(conn, doc) if status == Status.VOID else []
    _record_status(conn, doc, status, reason, now_us)
    for note in notes:  # voiding an invoice voids its open corrections with it
        _record_status(conn, note, Status.VOID, f"{number} voided: {reason}", now_us)
    return status


def _open_notes(conn: Connection, doc: Issued) -> list[Issued]:
    """The credit and debit notes of an invoice that is being voided, all of them
    open (issued). A paid note means money already moved on the correction: the
    invoice cannot simply be voided then, so that is refused (SEMANTICS.md)."""
    if doc.kind != Kind.INVOICE:
        return []
    rows = conn.execute(
        text("SELECT number FROM documents WHERE corrects = :n ORDER BY seq"), {"n": doc.number}
    ).all()
    notes = [get(conn, str(r[0])) for r in rows]
    paid = [n.number for n in notes if n.status == Status.PAID]
    if paid:
        raise MeterlineError(
            ErrorCode.INVALID_STATUS_CHANGE,
            f"{doc.number} cannot be voided: its correction(s) {', '.join(paid)} are paid; "
            "refund or re-issue instead",
        )
    return [n for n in notes if n.status == Status.ISSUED]


def _record_status(conn: Connection, doc: Issued, status: Status, reason: str, now_us: int) -> None:
    number = doc.number
    seq = sequence.take(conn)
    conn.execute(
        text(
            "INSERT INTO document_status (seq, number, status, reason, at) VALUES (:q, :n, :s, :r, :t)"
        ),
        {"q": seq, "n": number, "s": str(status), "r": reason, "t": now_us},
    )
    # Payment or reversal, and the audit row, in the same transaction.
    entry = status_entry(number, str(status), doc.body)
    if entry is not None:
        journal.post(conn, seq, entry, now_us)
    audit.record(
        conn,
        "pay" if status == Status.PAID else str(status),
        {
            "number": number,
            "status": str(status),
            "reason": reason,
            "total": doc.body.text(doc.body.total),
        },
        now_us,
    )
    webhook_facts.status_changed(conn, number, doc.body, str(status), reason, seq, now_us)


def instant(text_: str) -> int:
    return parse_rfc3339(text_)
