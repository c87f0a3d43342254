"""The store read port: "facts as known at K" and "changes in (K1, K2]".

Every service that needs the store as it was known at a cutoff reads it here,
so the rule "seq <= K, and not retracted by a retraction with seq <= K" is
written once. One implementation per backend where the SQL differs (driver
parameter style for cursor reads; SQLite has no planner statistics, so a read
of a few new facts is steered onto the seq index by hand); the contract tests
(tests/test_facts_contract.py) run the same suite against both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.domain.events import Event, decode_json
from meterline.metering.bitemporal import Grain

if TYPE_CHECKING:
    from meterline.store.usage_index import Read

Row = tuple[str, str, str, int, str]
"""What measuring reads of an event: source, event_id, event_type, event_time, properties."""

# Up to this many facts learnt since K1, reading "what is new" walks the seq
# index (a few rows) rather than the customer's whole span.
SEQ_DRIVEN_MAX = 50_000

_LIVE = (
    "e.seq <= {k} AND NOT EXISTS (SELECT 1 FROM retractions r WHERE r.source = e.source "
    "AND r.event_id = e.event_id AND r.seq <= {k})"
)

_EVENT_COLUMNS = (
    "e.seq, e.source, e.event_id, e.customer_id, e.event_type, e.event_time, e.properties, "
    "e.content_hash"
)


@dataclass(frozen=True)
class Changes:
    """What was learnt about a customer's time range in (K1, K2]."""

    events: int = 0
    backfilled: int = 0
    retracted: int = 0
    price_versions: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    customer_versions: int = 0
    manual_marks: list[str] = field(default_factory=list)


class Facts:
    """Reads of one connection's snapshot. Use ``facts(conn)`` for the backend's port."""

    dialect = ""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # --- parameter style of cursor reads ----------------------------------

    def _p(self, name: str) -> str:
        return f":{name}"

    def seq_driven(self, k1: int, k2: int) -> bool:
        """Whether a read of facts in (K1, K2] should walk the seq index."""
        return False

    # --- events as known at K ----------------------------------------------

    def _measure_sql(self, types: int, by_seq: bool) -> str:
        p = self._p
        marks = ", ".join(p(f"t{i}") for i in range(types))
        cust = "+e.customer_id" if by_seq else "e.customer_id"
        return (
            "SELECT e.source, e.event_id, e.event_type, e.event_time, e.properties FROM events e "
            f"WHERE {cust} = {p('c')} AND e.event_type IN ({marks}) "
            f"AND e.event_time >= {p('lo')} AND e.event_time < {p('hi')} AND "
            + _LIVE.format(k=p("k"))
        )

    def measure_rows(
        self,
        customer: str,
        event_types: Sequence[str],
        lo: int,
        hi: int,
        known_at: int,
        after: int | None = None,
    ) -> list[Row]:
        """The customer's live events of these types in [lo, hi) as known at K
        (only seq > ``after`` if given), through the driver's cursor."""
        if not event_types:
            return []
        params: dict[str, Any] = {"c": customer, "lo": lo, "hi": hi, "k": known_at}
        params.update({f"t{i}": t for i, t in enumerate(sorted(event_types))})
        by_seq = after is not None and self.seq_driven(after, known_at)
        sql = self._measure_sql(len(event_types), by_seq)
        if after is not None:
            sql += f" AND e.seq > {self._p('k1')}"
            params["k1"] = after
        raw = self.conn.connection.driver_connection
        cur = raw.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(sql, params)
            return list(cur.fetchall())
        finally:
            cur.close()

    def events(
        self,
        known_at: int,
        *,
        customer: str | None = None,
        event_types: Sequence[str] | None = None,
        lo: int | None = None,
        hi: int | None = None,
        ordered: bool = False,
    ) -> Iterator[tuple[int, Event]]:
        """(seq, event) of the live events as known at K matching the filters."""
        clauses = [_LIVE.format(k=":k")]
        params: dict[str, Any] = {"k": known_at}
        if customer is not None:
            clauses.append("e.customer_id = :c")
            params["c"] = customer
        if event_types is not None:
            if not event_types:
                return
            clauses.append("e.event_type IN :types")
            params["types"] = sorted(event_types)
        if lo is not None:
            clauses.append("e.event_time >= :lo")
            params["lo"] = lo
        if hi is not None:
            clauses.append("e.event_time < :hi")
            params["hi"] = hi
        sql = f"SELECT {_EVENT_COLUMNS} FROM events e WHERE " + " AND ".join(clauses)
        if ordered:
            sql += " ORDER BY e.event_time, e.source, e.event_id"
        stmt = text(sql)
        if event_types is not None:
            stmt = stmt.bindparams(bindparam("types", expanding=True))
        for r in self.conn.execute(stmt, params):
            yield int(r[0]), Event(r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7])

    # --- the usage index as known at K ---------------------------------------

    def index(
        self,
        customer: str | None,
        meter_codes: Sequence[str],
        ranges: Sequence[tuple[Grain, int, int]],
        known_at: int | None,
    ) -> Read:
        from meterline.store import usage_index

        return usage_index.read(self.conn, customer, meter_codes, ranges, known_at)

    def index_many(
        self,
        customers: Sequence[str],
        meter_codes: Sequence[str],
        ranges: Sequence[tuple[Grain, int, int]],
        known_at: int,
        *,
        whole: bool = False,
        rollups: bool | Grain = False,
    ) -> dict[str, Read]:
        """``index`` for many customers with the same buckets, in one statement
        (``whole``: every row since the first, to cut back with ``Read.as_of``;
        ``rollups``: whole months from a month rollup pass, see ``usage_index.Read``)."""
        from meterline.store import usage_index

        return usage_index.read_many(
            self.conn, customers, meter_codes, ranges, known_at, whole=whole, rollups=rollups
        )

    # --- catalog versions as known at K ----------------------------------------

    def meter_definitions(self, known_at: int) -> list[str]:
        rows = self.conn.execute(
            text("SELECT definition FROM meters WHERE seq <= :k ORDER BY seq"), {"k": known_at}
        )
        return [str(r[0]) for r in rows]

    def price_book_header(self, code: str) -> tuple[str, str] | None:
        row = self.conn.execute(
            text("SELECT currency, rounding FROM price_books WHERE code = :c"), {"c": code}
        ).first()
        return None if row is None else (str(row[0]), str(row[1]))

    def price_version_hashes(self, code: str, known_at: int) -> list[tuple[int, str]]:
        rows = self.conn.execute(
            text(
                "SELECT seq, content_hash FROM price_versions WHERE book_code = :c AND seq <= :k "
                "ORDER BY seq"
            ),
            {"c": code, "k": known_at},
        )
        return [(int(q), str(h)) for q, h in rows]

    def catalog_changed(self, k1: int, k2: int) -> bool:
        """Whether a meter or price version was recorded in (K1, K2]: if not, the
        catalog as known at any K in [K1, K2] is the same (verify shares it)."""
        row = self.conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM meters WHERE seq > :a AND seq <= :b) OR "
                "EXISTS (SELECT 1 FROM price_versions WHERE seq > :a AND seq <= :b)"
            ),
            {"a": k1, "b": k2},
        ).scalar_one()
        return bool(row)

    def customer_versions(self, ids: Sequence[str], known_at: int) -> dict[str, tuple[int, str]]:
        """Each customer's latest definition as known at K, with its seq (one statement)."""
        if not ids:
            return {}
        rows = self.conn.execute(
            text(
                "SELECT c.customer_id, c.seq, c.definition FROM customers c WHERE "
                "c.customer_id IN :ids AND c.seq = (SELECT MAX(c2.seq) FROM customers c2 "
                "WHERE c2.customer_id = c.customer_id AND c2.seq <= :k)"
            ).bindparams(bindparam("ids", expanding=True)),
            {"ids": list(ids), "k": known_at},
        )
        return {str(c): (int(q), str(d)) for c, q, d in rows}

    # --- changes in (K1, K2] ------------------------------------------------

    def retracted_between(
        self, customer: str, k1: int, k2: int, lo: int | None = None, hi: int | None = None
    ) -> int:
        """How many of the customer's events (in [lo, hi) if given) were retracted in (K1, K2]."""
        sql = (
            "SELECT COUNT(*) FROM retractions r JOIN events e ON e.seq = r.event_seq "
            "WHERE e.customer_id = :c AND r.seq > :k1 AND r.seq <= :k2"
        )
        params: dict[str, Any] = {"c": customer, "k1": k1, "k2": k2}
        if lo is not None and hi is not None:
            sql += " AND e.event_time >= :lo AND e.event_time < :hi"
            params |= {"lo": lo, "hi": hi}
        return int(self.conn.execute(text(sql), params).scalar_one())

    def changes(self, customer: str, lo: int, hi: int, k1: int, k2: int) -> Changes:
        """Everything learnt in (K1, K2] that can change the customer's billing of [lo, hi)."""
        params = {"c": customer, "lo": lo, "hi": hi, "k1": k1, "k2": k2}
        plus = "+" if self.seq_driven(k1, k2) else ""
        late = self.conn.execute(
            text(
                "SELECT COUNT(*), SUM(CASE WHEN backfill THEN 1 ELSE 0 END) FROM events WHERE "
                f"{plus}customer_id = :c AND {plus}event_time >= :lo AND {plus}event_time < :hi "
                "AND seq > :k1 AND seq <= :k2"
            ),
            params,
        ).one()
        versions = [
            (str(book), str(label), decode_json(definition))
            for book, label, definition in self.conn.execute(
                text(
                    "SELECT book_code, label, definition FROM price_versions WHERE seq > :k1 "
                    "AND seq <= :k2 AND effective_from < :hi ORDER BY seq"
                ),
                params,
            )
        ]
        customer_versions = self.conn.execute(
            text(
                "SELECT COUNT(*) FROM customers WHERE customer_id = :c AND seq > :k1 AND seq <= :k2"
            ),
            params,
        ).scalar_one()
        manual = self.conn.execute(
            text(
                "SELECT reason FROM rerate_marks WHERE customer_id = :c AND kind = 'manual' "
                "AND from_us < :hi AND to_us > :lo AND seq > :k1 AND seq <= :k2 ORDER BY seq"
            ),
            params,
        )
        return Changes(
            events=int(late[0]),
            backfilled=int(late[1] or 0),
            retracted=self.retracted_between(customer, k1, k2, lo, hi),
            price_versions=versions,
            customer_versions=int(customer_versions),
            manual_marks=[str(r[0]) for r in manual],
        )

    def rating_basis(self, customer: str, known_at: int) -> tuple[int, ...]:
        """The newest seq <= K of each kind of fact that can change how the customer's
        usage rates: its usage-index rows (events, retractions and meter builds all
        append there with the seq of their cause), its own versions, the meters, the
        price books and their versions. Facts are append-only and seqs unique, so two
        cutoffs with equal bases see the same inputs: a rating made at one holds at
        the other, whatever other customers did in between."""
        row = self.conn.execute(
            text(
                "SELECT (SELECT MAX(seq) FROM usage_index WHERE customer_id = :c AND seq <= :k), "
                "(SELECT MAX(seq) FROM customers WHERE customer_id = :c AND seq <= :k), "
                "(SELECT MAX(seq) FROM meters WHERE seq <= :k), "
                "(SELECT MAX(seq) FROM price_books WHERE seq <= :k), "
                "(SELECT MAX(seq) FROM price_versions WHERE seq <= :k)"
            ),
            {"c": customer, "k": known_at},
        ).one()
        return tuple(-1 if v is None else int(v) for v in row)

    def rated_customers_changed(self, k1: int, k2: int) -> set[str] | None:
        """The customers whose rating basis may have moved in (K1, K2]: new index rows
        or versions of theirs; None when a meter, price book or price version was
        recorded (that can move everyone's)."""
        params = {"k1": k1, "k2": k2}
        catalog = self.conn.execute(
            text(
                "SELECT 1 FROM meters WHERE seq > :k1 AND seq <= :k2 UNION ALL "
                "SELECT 1 FROM price_books WHERE seq > :k1 AND seq <= :k2 UNION ALL "
                "SELECT 1 FROM price_versions WHERE seq > :k1 AND seq <= :k2"
            ),
            params,
        ).first()
        if catalog is not None:
            return None
        return {
            str(r[0])
            for r in self.conn.execute(
                text(
                    "SELECT DISTINCT customer_id FROM usage_index WHERE seq > :k1 AND seq <= :k2 "
                    "UNION SELECT customer_id FROM customers WHERE seq > :k1 AND seq <= :k2"
                ),
                params,
            )
        }

    def pending(self, customer: str, lo: int, hi: int, known_at: int) -> bool:
        """Whether a re-rating mark or a customer change was recorded after K for [lo, hi)."""
        row = self.conn.execute(
            text(
                "SELECT 1 FROM rerate_marks WHERE customer_id = :c AND from_us < :hi "
                "AND to_us > :lo AND seq > :k UNION ALL "
                "SELECT 1 FROM customers WHERE customer_id = :c AND seq > :k"
            ),
            {"c": customer, "lo": lo, "hi": hi, "k": known_at},
        ).first()
        return row is not None


class SqliteFacts(Facts):
    dialect = "sqlite"

    def seq_driven(self, k1: int, k2: int) -> bool:
        return k2 - k1 <= SEQ_DRIVEN_MAX


class PostgresFacts(Facts):
    dialect = "postgresql"

    def _p(self, name: str) -> str:
        return f"%({name})s"


def facts(conn: Connection) -> Facts:
    """The read port for this connection's backend."""
    if conn.dialect.name == "postgresql":
        return PostgresFacts(conn)
    return SqliteFacts(conn)
