"""The Merkle log in the store (DESIGN §2): leaves, stored nodes, tree heads, proofs.

Every fact that takes a seq is one leaf, in seq order (leaf index = seq - 1).
`FACT_KINDS` says which tables hold such facts and what each fact's canonical
content hash is, computed from the row alone, so the auditor can recompute
every leaf from the facts themselves:

    events            the event's content hash (domain/events.py content_hash_of),
                      recomputed from source, ids, type, time and properties
    every other kind  sha256 of canonical JSON {"fact": <table>, "row": {column: value}}
                      over every column but seq (ints as ints, booleans as
                      true/false, text as text)

Nodes are stored for every perfect subtree, leaves included, as (level, index,
hash), the moment they are complete; a stored node never changes. The tree
head at any size K is then the fold of at most log2(K) stored nodes.

Appending happens once per write transaction, at its end (`seal`, called by
Store.write) while the knowledge-sequence lock is still held: the leaves for
seqs (tree size, counter] are computed (ingestion hands over the content
hashes it already has) and all completed nodes are written with one
executemany. Because the lock serialises writers and is held to commit, the
tree grows in seq order with no holes, exactly like the facts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Boolean, Integer, Table, bindparam, inspect, text
from sqlalchemy.engine import Connection

from meterline.domain import merkle
from meterline.domain.canonical import dumps
from meterline.domain.events import content_hash_of
from meterline.store import schema, sequence
from meterline.store.driver import raw_rows

# conn.info keys: set by sequence.lock and event ingestion, consumed by seal.
LOCKED = sequence.LOCKED
PENDING = "meterline_merkle_pending"

# The content hash committed for a seq that holds no known fact (a fact kind
# this module does not know yet): the tree stays total, and reconcile names it.
NO_FACT = hashlib.sha256(b"meterline:no-fact").digest()


@dataclass(frozen=True)
class FactKind:
    """One table of seq-numbered facts and the rows of it that are facts."""

    table: Table
    # The columns the leaf commits to, frozen here (never "all columns"): a column
    # added to the table later must not change the leaves of facts already stored.
    committed: tuple[str, ...]
    where: str = ""  # extra SQL condition, e.g. only manual re-rating marks

    @property
    def name(self) -> str:
        return str(self.table.name)

    def columns(self) -> list[str]:
        return ["seq", *self.committed]


_EVENT = ("source", "event_id", "customer_id", "event_type", "event_time", "properties")

FACT_KINDS: list[FactKind] = [
    FactKind(schema.events, _EVENT),
    FactKind(schema.retractions, ("source", "event_id", "event_seq", "reason", "retracted_at")),
    FactKind(schema.meters, ("code", "event_type", "definition", "content_hash", "recorded_at")),
    FactKind(schema.price_books, ("code", "currency", "rounding", "recorded_at")),
    FactKind(
        schema.price_versions,
        ("book_code", "label", "effective_from", "definition", "content_hash", "recorded_at"),
    ),
    FactKind(schema.customers, ("customer_id", "definition", "content_hash", "recorded_at")),
    FactKind(schema.seller_versions, ("definition", "content_hash", "recorded_at")),
    FactKind(
        schema.documents,
        (
            "number",
            "kind",
            "customer_id",
            "period_label",
            "period_start",
            "period_end",
            "invoice_key",
            "corrects",
            "cutoff_seq",
            "currency",
            "total",
            "body",
            "content_hash",
            "previous_hash",
            "document_hash",
            "forced",
            "issued_at",
        ),
    ),
    FactKind(schema.document_status, ("number", "status", "reason", "at")),
    # Late, backfill, retraction and price marks reuse their cause's seq; only an
    # operator's manual mark is a fact of its own.
    FactKind(
        schema.rerate_marks,
        ("customer_id", "from_us", "to_us", "kind", "reason", "events", "created_at"),
        "kind = 'manual'",
    ),
    FactKind(
        schema.credit_facts,
        (
            "grant_id",
            "customer_id",
            "action",
            "amount",
            "definition",
            "content_hash",
            "recorded_at",
        ),
    ),
    FactKind(
        schema.entitlement_catalog, ("kind", "code", "definition", "content_hash", "recorded_at")
    ),
    FactKind(
        schema.alerts,
        (
            "customer_id",
            "kind",
            "scope",
            "code",
            "period_label",
            "period_start",
            "period_end",
            "metric",
            "meter_code",
            "threshold",
            "observed",
            "batch_id",
            "message_id",
            "recorded_at",
        ),
    ),
]


class RowError(Exception):
    """A fact row the auditor cannot even read (named, never a crash)."""


def _plain(kind: FactKind, row: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(kind.columns(), row, strict=True):
        if name == "seq":
            continue
        col = kind.table.columns[name]
        if value is None:
            out[col.name] = None
        elif isinstance(col.type, Boolean):
            out[col.name] = bool(value)
        elif isinstance(col.type, Integer):  # BigInteger is an Integer
            if isinstance(value, bool) or not isinstance(value, int):
                raise RowError(f"column {col.name} holds {value!r}, not an integer")
            out[col.name] = value
        elif isinstance(value, bytes):
            out[col.name] = value.hex()
        else:
            out[col.name] = str(value)
    return out


def fact_hash(kind: FactKind, row: Sequence[Any]) -> bytes:
    """The canonical content hash (32 bytes) of one fact row, as the leaf commits to it."""
    if kind.table is schema.events:
        cols = dict(zip(kind.columns(), row, strict=True))
        if not isinstance(cols["event_time"], int) or isinstance(cols["event_time"], bool):
            raise RowError(f"column event_time holds {cols['event_time']!r}, not an integer")
        return bytes.fromhex(
            content_hash_of(
                str(cols["source"]),
                str(cols["event_id"]),
                str(cols["customer_id"]),
                str(cols["event_type"]),
                cols["event_time"],
                str(cols["properties"]),
            )
        )
    return hashlib.sha256(dumps({"fact": kind.name, "row": _plain(kind, row)})).digest()


@dataclass
class Facts:
    """The facts of a seq range: content hash per seq, and what is wrong with them."""

    hashes: dict[int, bytes]
    problems: list[str]
    counts: dict[str, int]
    kinds: dict[int, str] = field(default_factory=dict)  # seq -> table, to name rows


def facts_in(conn: Connection, lo: int, hi: int, kinds: Sequence[FactKind] | None = None) -> Facts:
    """Every fact with lo < seq <= hi, hashed from its row."""
    out = Facts({}, [], {})
    for kind in FACT_KINDS if kinds is None else kinds:
        cond = f" AND {kind.where}" if kind.where else ""
        rows = raw_rows(
            conn,
            f"SELECT {', '.join(kind.columns())} FROM {kind.name} WHERE seq > ? AND seq <= ?{cond}",
            (lo, hi),
        )
        seq_at = kind.columns().index("seq")
        n = 0
        events = kind.table is schema.events
        name = kind.name
        for row in rows:
            n += 1
            seq = int(row[seq_at])
            if events and type(row[5]) is int and type(row[6]) is str and seq not in out.hashes:
                # The common case without the per-row checks of `fact_hash` (same hash).
                out.hashes[seq] = bytes.fromhex(
                    content_hash_of(
                        str(row[1]), str(row[2]), str(row[3]), str(row[4]), row[5], row[6]
                    )
                )
                out.kinds[seq] = name
                continue
            try:
                h = fact_hash(kind, row)
            except (RowError, ValueError, TypeError, UnicodeError) as exc:
                out.problems.append(f"{kind.name} seq {seq}: unreadable row ({exc})")
                h = hashlib.sha256(b"meterline:unreadable").digest()
            if seq in out.hashes:
                out.problems.append(f"seq {seq} is held by more than one fact ({kind.name})")
                h = hashlib.sha256(out.hashes[seq] + h).digest()
            out.hashes[seq] = h
            out.kinds[seq] = kind.name
        out.counts[kind.name] = n
    return out


def fact_count(conn: Connection, upto: int) -> int:
    """How many facts have seq <= upto (an index-only count per kind)."""
    total = 0
    for kind in FACT_KINDS:
        cond = f" AND {kind.where}" if kind.where else ""
        total += int(
            conn.execute(
                text(f"SELECT COUNT(*) FROM {kind.name} WHERE seq <= :k{cond}"), {"k": upto}
            ).scalar_one()
        )
    return total


def facts_beyond(conn: Connection, k: int) -> int:
    """Fact rows with a seq the knowledge counter never handed out."""
    return fact_count_above(conn, k)


def fact_count_above(conn: Connection, k: int) -> int:
    total = 0
    for kind in FACT_KINDS:
        cond = f" AND {kind.where}" if kind.where else ""
        total += int(
            conn.execute(
                text(f"SELECT COUNT(*) FROM {kind.name} WHERE seq > :k{cond}"), {"k": k}
            ).scalar_one()
        )
    return total


# Nodes --------------------------------------------------------------------------


def size(conn: Connection) -> int:
    """How many leaves the stored tree has."""
    top = conn.execute(text("SELECT MAX(idx) FROM merkle_nodes WHERE level = 0")).scalar()
    return 0 if top is None else int(top) + 1


class Nodes:
    """Reads stored nodes by id, one query per level, with a cache (nodes never change)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.cache: dict[merkle.NodeId, bytes] = {}

    def __call__(self, ids: Sequence[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        want = [i for i in ids if i not in self.cache]
        by_level: dict[int, list[int]] = {}
        for level, idx in want:
            by_level.setdefault(level, []).append(idx)
        for level, idxs in by_level.items():
            rows = self.conn.execute(
                text(
                    "SELECT idx, hash FROM merkle_nodes WHERE level = :l AND idx IN :ix"
                ).bindparams(bindparam("ix", expanding=True)),
                {"l": level, "ix": idxs},
            )
            for idx, h in rows:
                self.cache[(level, int(idx))] = bytes(h)
        missing = [i for i in ids if i not in self.cache]
        if missing:
            raise MissingNodes(missing)
        return {i: self.cache[i] for i in ids}


class MissingNodes(Exception):
    def __init__(self, ids: list[merkle.NodeId]) -> None:
        self.ids = ids
        super().__init__(
            "stored Merkle nodes missing: "
            + ", ".join(f"(level {lv}, index {ix})" for lv, ix in ids[:5])
        )


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "root": self.root.hex()}


def head(conn: Connection, k: int, nodes: Nodes | None = None) -> TreeHead:
    """The tree head at size k (the store as known at k), from O(log k) stored nodes.

    A writer holding the sequence lock may ask for the head of facts it has just
    appended (a re-rating mark, then its correction): the tree is grown to k first."""
    grower: Grower | None = conn.info.get(GROWER)
    if grower is not None and grower.size == k:
        return grower.head()
    if conn.info.get(LOCKED) and size(conn) < k:
        pending = conn.info.pop(PENDING, None) or {}
        extend(conn, k, pending)
    return TreeHead(k, merkle.root_at(k, nodes or Nodes(conn)))


def write_nodes(conn: Connection, rows: Iterable[tuple[int, int, bytes]]) -> None:
    """Insert nodes set-based: sqlite3 executemany, or binary COPY on PostgreSQL."""
    batch = list(rows)
    if not batch:
        return
    if conn.dialect.name == "postgresql":
        pg = conn.connection.driver_connection
        assert isinstance(pg, psycopg.Connection)
        with (
            pg.cursor() as cur,
            cur.copy("COPY merkle_nodes (level, idx, hash) FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.set_types(["int2", "int8", "bytea"])
            for r in batch:
                cp.write_row(r)
    else:
        raw = conn.connection.driver_connection
        cur = raw.cursor()  # type: ignore[union-attr]
        cur.executemany("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)", batch)
        cur.close()


def extend(
    conn: Connection,
    upto: int,
    known: dict[int, bytes] | None = None,
    kinds: Sequence[FactKind] | None = None,
) -> int:
    """Append leaves for seqs (stored size, upto]; `known` gives content hashes the
    caller already has (ingestion), the rest are read from the fact rows."""
    start = size(conn)
    if upto <= start:
        return 0
    hashes = dict(known or {})
    missing = [s for s in range(start + 1, upto + 1) if s not in hashes]
    if missing:
        found = facts_in(conn, missing[0] - 1, missing[-1], kinds)
        for s in missing:
            hashes[s] = found.hashes.get(s, NO_FACT)
    nodes = Nodes(conn)
    frontier = nodes(merkle.perfect_ranges(0, start)) if start else {}
    growth = merkle.append_leaves(
        start, frontier, (merkle.leaf_hash(hashes[s]) for s in range(start + 1, upto + 1))
    )
    write_nodes(conn, growth.nodes)
    return upto - start


DOCUMENTS = next(k for k in FACT_KINDS if k.table is schema.documents)


class Grower:
    """The tree grown in memory past its stored size, inside one write transaction
    holding the sequence lock: an invoice run's chunk records the tree head at each
    document's cutoff without writing nodes per document. While registered on the
    connection (`grow_in_memory`), `head` at its size answers from it. The leaves
    are computed from the rows the caller is about to write; `check` then grows the
    stored tree from the written rows and compares roots, so a leaf computed
    differently here can never be recorded silently. Nothing is read until a head
    is asked for."""

    def __init__(self, conn: Connection, k: int) -> None:
        self.conn = conn
        self.start = k
        self.size = k
        self.frontier: dict[merkle.NodeId, bytes] | None = None
        self.waiting: list[bytes] = []

    def head(self) -> TreeHead:
        if self.frontier is None:
            conn, self.size = self.conn, self.start
            conn.info.pop(GROWER, None)
            try:
                head(conn, self.start)  # the stored tree reaches the start (extended if behind)
            finally:
                conn.info[GROWER] = self
            ids = merkle.perfect_ranges(0, self.start)
            self.frontier = Nodes(conn)(ids) if self.start else {}
            waiting, self.waiting = self.waiting, []
            for leaf in waiting:
                self._grow(leaf)
        frontier = self.frontier
        return TreeHead(self.size, merkle.root_at(self.size, lambda ids: frontier))

    def append(self, kind: FactKind, row: Sequence[Any]) -> None:
        leaf = merkle.leaf_hash(fact_hash(kind, row))
        if self.frontier is None:
            self.waiting.append(leaf)
            self.size += 1
        else:
            self._grow(leaf)

    def _grow(self, leaf: bytes) -> None:
        assert self.frontier is not None
        growth = merkle.append_leaves(self.size, self.frontier, [leaf])
        table = dict(self.frontier)
        table.update({(lv, ix): h for lv, ix, h in growth.nodes})
        self.size += 1
        self.frontier = {i: table[i] for i in merkle.perfect_ranges(0, self.size)}

    def check(self) -> None:
        """Grow the stored tree to this size from the fact rows; its root must be ours
        (only if a head was given out: otherwise nothing was recorded from it)."""
        if self.frontier is None:
            return
        conn = self.conn
        extend(conn, self.size, conn.info.pop(PENDING, None) or {})
        if head(conn, self.size, Nodes(conn)).root != self.head().root:
            raise RuntimeError(
                f"tree head at {self.size} computed in memory differs from the stored tree's"
            )


GROWER = "meterline_merkle_grower"


@contextmanager
def grow_in_memory(conn: Connection, k: int) -> Iterator[Grower]:
    """Register a `Grower` from size k on the connection for the block."""
    grower = Grower(conn, k)
    conn.info[GROWER] = grower
    try:
        yield grower
    finally:
        conn.info.pop(GROWER, None)


def seal(conn: Connection) -> None:
    """End of a write transaction that took the sequence lock: grow the tree to the
    counter (still locked, so no other writer can interleave)."""
    pending: dict[int, bytes] = conn.info.pop(PENDING, None) or {}
    extend(conn, sequence.current(conn), pending)


def remember(conn: Connection, seq_hashes: Iterable[tuple[int, str]]) -> None:
    """Ingestion: hand over the content hashes of the events it just stored."""
    pending = conn.info.setdefault(PENDING, {})
    for seq, h in seq_hashes:
        pending[seq] = bytes.fromhex(h)


def build(conn: Connection, upto: int, chunk: int = 100_000) -> None:
    """Build (or finish) the tree of an existing store, chunk by chunk (migration).

    Only fact tables that exist are read: a migration that runs before the one that
    creates a later fact kind's table has no such facts yet."""
    present = set(inspect(conn).get_table_names())
    kinds = [k for k in FACT_KINDS if k.name in present]
    at = size(conn)
    while at < upto:
        nxt = min(upto, at + chunk)
        extend(conn, nxt, None, kinds)
        at = nxt


# Proofs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Proof:
    leaf_index: int
    content_hash: bytes
    leaf_hash: bytes
    path: list[bytes]
    tree_size: int
    root: bytes


def prove(conn: Connection, seq: int, tree_size: int, content: bytes) -> Proof:
    """The audit path of the fact with `seq` in the tree of `tree_size` leaves."""
    nodes = Nodes(conn)
    index = seq - 1
    return Proof(
        index,
        content,
        merkle.leaf_hash(content),
        merkle.audit_path(index, tree_size, nodes),
        tree_size,
        merkle.root_at(tree_size, nodes),
    )


# Auditing --------------------------------------------------------------------------


@dataclass
class TreeAudit:
    problems: list[str]
    leaves_checked: int = 0
    facts: int = 0


def stored_level_range(
    conn: Connection, level: int, lo: int, hi: int
) -> Iterator[tuple[int, bytes]]:
    rows = raw_rows(
        conn,
        "SELECT idx, hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
        (level, lo, hi),
    )
    for idx, h in rows:
        yield int(idx), bytes(h)


def audit_range(
    conn: Connection,
    start: int,
    end: int,
    chunk: int = 200_000,
    tick: Callable[[int], None] | None = None,
    last: bool = True,
) -> TreeAudit:
    """Recompute leaves (start, end] from the fact rows, grow the tree from the stored
    frontier at `start`, and compare every node that growth completes with the
    stored one; with `last` (end is the counter), report stored leaves beyond it."""
    out = TreeAudit([])
    nodes = Nodes(conn)
    try:
        frontier = nodes(merkle.perfect_ranges(0, start)) if start else {}
    except MissingNodes as exc:
        out.problems.append(f"tree at the checkpoint ({start} leaves): {exc}")
        return out
    at = start
    while at < end:
        nxt = min(end, at + chunk)
        facts = facts_in(conn, at, nxt)
        out.problems.extend(facts.problems)
        out.facts += sum(facts.counts.values())
        for s in range(at + 1, nxt + 1):
            if s not in facts.hashes:
                out.problems.append(f"seq {s}: no fact holds it (deleted, or an unknown kind)")
        sha = hashlib.sha256
        leaves = [
            sha(merkle.LEAF_PREFIX + facts.hashes.get(s, NO_FACT)).digest()
            for s in range(at + 1, nxt + 1)
        ]
        levels = merkle.grow_levels(at, frontier, leaves)
        if not _levels_stored(conn, levels):  # some node differs: name each one
            _compare_growth(conn, merkle.append_leaves(at, frontier, leaves), facts, out)
        frontier = merkle.frontier_after(at, frontier, levels)
        out.leaves_checked += nxt - at
        if tick:
            tick(nxt)
        at = nxt
    if not last:
        return out
    extra = conn.execute(
        text("SELECT COUNT(*) FROM merkle_nodes WHERE level = 0 AND idx >= :n"), {"n": end}
    ).scalar_one()
    if int(extra):
        out.problems.append(f"{int(extra)} stored leaves beyond the knowledge counter {end}")
    return out


def _levels_stored(conn: Connection, levels: list[tuple[int, list[bytes]]]) -> bool:
    """Every computed level equals the stored nodes of its index range (one read per
    level, compared as whole lists)."""
    for lv, (lo, hashes) in enumerate(levels):
        if not hashes:
            continue
        rows = raw_rows(
            conn,
            "SELECT hash FROM merkle_nodes WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (lv, lo, lo + len(hashes)),
        )
        if len(rows) != len(hashes) or [bytes(r[0]) for r in rows] != hashes:
            return False
    return True


def _compare_growth(conn: Connection, growth: merkle.Growth, facts: Facts, out: TreeAudit) -> None:
    """Name every completed node that is missing or differs from the stored one."""
    computed: dict[int, dict[int, bytes]] = {}
    for lv, ix, h in growth.nodes:
        computed.setdefault(lv, {})[ix] = h
    for lv, level_nodes in computed.items():
        lo, hi = min(level_nodes), max(level_nodes) + 1
        stored = dict(stored_level_range(conn, lv, lo, hi))
        for ix, h in level_nodes.items():
            got = stored.get(ix)
            if got is None:
                out.problems.append(f"node (level {lv}, index {ix}) is missing")
            elif got != h:
                what = (
                    f"{facts.kinds.get(ix + 1, 'no fact')} seq {ix + 1} (leaf {ix})"
                    if lv == 0
                    else f"node (level {lv}, {ix})"
                )
                out.problems.append(
                    f"{what}: stored {got.hex()[:16]}... but the facts give {h.hex()[:16]}..."
                )


def audit_small_kinds(conn: Connection, upto: int, batch: int = 5_000) -> TreeAudit:
    """Every non-event fact with seq <= upto, recomputed from its row and compared
    with its stored leaf. There are few of them (catalog, documents, status facts,
    retractions), so an incremental run re-checks them all."""
    out = TreeAudit([])
    for kind in FACT_KINDS[1:]:
        cond = f" AND {kind.where}" if kind.where else ""
        rows = raw_rows(  # the driver's cursor, as `facts_in` (same values per column type)
            conn,
            f"SELECT {', '.join(kind.columns())} FROM {kind.name} WHERE seq <= ?{cond} "
            "ORDER BY seq",
            (upto,),
        )
        for i in range(0, len(rows), batch):
            part = rows[i : i + batch]
            idxs = [int(r[0]) - 1 for r in part]
            stored = {
                int(ix): bytes(h)
                for ix, h in conn.execute(
                    text(
                        "SELECT idx, hash FROM merkle_nodes WHERE level = 0 AND idx IN :ix"
                    ).bindparams(bindparam("ix", expanding=True)),
                    {"ix": idxs},
                )
            }
            for row in part:
                seq = int(row[0])
                try:
                    leaf = merkle.leaf_hash(fact_hash(kind, row))
                except (RowError, ValueError, TypeError, UnicodeError) as exc:
                    out.problems.append(f"{kind.name} seq {seq}: unreadable row ({exc})")
                    continue
                got = stored.get(seq - 1)
                if got is None:
                    out.problems.append(f"{kind.name} seq {seq}: its leaf is missing")
                elif got != leaf:
                    out.problems.append(
                        f"{kind.name} seq {seq}: the row and its stored leaf differ "
                        "(one was altered behind the system's back)"
                    )
                out.leaves_checked += 1
    return out
