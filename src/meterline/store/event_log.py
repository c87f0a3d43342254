"""Appending events and retractions; reading the log as known at a seq.

The bulk paths bypass SQLAlchemy's statement layer: sqlite3 `executemany` and
psycopg binary COPY are several times faster, and ingestion is the hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event
from meterline.store import merkle, sequence


@dataclass(frozen=True, slots=True)
class Candidate:
    position: int
    event: Event
    raw: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    position: int
    source: str | None
    code: ErrorCode
    message: str
    raw: bytes


@dataclass
class BatchHeader:
    received_at: int
    origin: str
    source: str
    backfill: bool


@dataclass
class AppendResult:
    batch_id: int
    accepted: list[tuple[int, Event]] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[Reject] = field(default_factory=list)
    # Keys of the batch already in the store: their (content_hash, seq).
    kept: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)


def _conflict(c: Candidate, kept_seq: int) -> Reject:
    return Reject(
        c.position,
        c.event.source,
        ErrorCode.EVENT_ID_CONFLICT,
        f"event ({c.event.source}, {c.event.event_id}) was already stored with different "
        f"content; the event stored at seq {kept_seq} is kept. To amend an event, retract it "
        "and send a new event_id",
        c.raw,
    )


def storable_text(value: str) -> str:
    """Text both stores can hold (no NUL, valid UTF-8), for messages that may
    echo what a client sent."""
    if value.isascii() and "\x00" not in value:
        return value
    return value.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


def append_batch(
    conn: Connection,
    header: BatchHeader,
    candidates: list[Candidate],
    rejects: list[Reject],
    duplicates_in_batch: int,
    repeats: Sequence[Candidate] = (),
) -> AppendResult:
    """Store one batch atomically: new events, quarantine, and the batch record.

    `candidates` have unique keys: the first occurrence of each key in the
    batch. `repeats` are the later occurrences. Whether an occurrence is a
    duplicate or a conflict is decided by content against the event that is
    kept for its key (the stored one, else the batch's first occurrence), so
    the outcome never depends on how input was cut into batches.
    """
    batch_id = int(
        conn.execute(
            text(
                "INSERT INTO ingest_batches (received_at, origin, source, backfill, accepted, "
                "duplicates, rejected) VALUES (:r, :o, :s, :b, 0, 0, 0) RETURNING id"
            ),
            {"r": header.received_at, "o": header.origin, "s": header.source, "b": header.backfill},
        ).scalar_one()
    )
    result = AppendResult(batch_id=batch_id)
    if conn.dialect.name == "postgresql":
        _append_postgres(conn, header, batch_id, candidates, result)
    else:
        _append_sqlite(conn, header, batch_id, candidates, result)
    result.duplicates += duplicates_in_batch
    if repeats:
        _classify_repeats(candidates, repeats, result)
    all_rejects = sorted([*rejects, *result.conflicts], key=lambda r: r.position)
    if all_rejects:
        conn.execute(
            text(
                "INSERT INTO quarantine (batch_id, position, source, code, message, raw, received_at) "
                "VALUES (:b, :p, :s, :c, :m, :raw, :t)"
            ),
            [
                {
                    "b": batch_id,
                    "p": r.position,
                    "s": None if r.source is None else storable_text(r.source),
                    "c": str(r.code),
                    "m": storable_text(r.message),
                    "raw": r.raw,
                    "t": header.received_at,
                }
                for r in all_rejects
            ],
        )
    first = result.accepted[0][0] if result.accepted else None
    last = result.accepted[-1][0] if result.accepted else None
    conn.execute(
        text(
            "UPDATE ingest_batches SET accepted = :a, duplicates = :d, rejected = :r, "
            "first_seq = :f, last_seq = :l WHERE id = :id"
        ),
        {
            "a": len(result.accepted),
            "d": result.duplicates,
            "r": len(all_rejects),
            "f": first,
            "l": last,
            "id": batch_id,
        },
    )
    return result


def _classify(
    candidates: list[Candidate], existing: dict[int, tuple[str, int]], result: AppendResult
) -> list[Candidate]:
    fresh = []
    for c in candidates:
        known = existing.get(c.position)
        if known is None:
            fresh.append(c)
        else:
            content_hash, seq = known
            result.kept[c.event.key()] = known
            if content_hash == c.event.content_hash:
                result.duplicates += 1
            else:
                result.conflicts.append(_conflict(c, seq))
    return fresh


def _classify_repeats(
    candidates: list[Candidate], repeats: Sequence[Candidate], result: AppendResult
) -> None:
    """Later occurrences of a key in the batch, against the event kept for it."""
    kept = dict(result.kept)
    for seq, event in result.accepted:
        kept[event.key()] = (event.content_hash, seq)
    for r in repeats:
        content_hash, seq = kept[r.event.key()]
        if content_hash == r.event.content_hash:
            result.duplicates += 1
        else:
            result.conflicts.append(_conflict(r, seq))


def _append_sqlite(
    conn: Connection,
    header: BatchHeader,
    batch_id: int,
    candidates: list[Candidate],
    result: AppendResult,
) -> None:
    raw = conn.connection.driver_connection
    cur = raw.cursor()  # type: ignore[union-attr]
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage_keys "
        "(pos INTEGER PRIMARY KEY, source TEXT NOT NULL, event_id TEXT NOT NULL)"
    )
    cur.execute("DELETE FROM stage_keys")
    cur.executemany(
        "INSERT INTO stage_keys VALUES (?, ?, ?)",
        [(c.position, c.event.source, c.event.event_id) for c in candidates],
    )
    existing = {
        int(pos): (str(h), int(seq))
        for pos, h, seq in cur.execute(
            "SELECT s.pos, e.content_hash, e.seq FROM stage_keys s JOIN events e "
            "ON e.source = s.source AND e.event_id = s.event_id"
        ).fetchall()
    }
    fresh = _classify(candidates, existing, result)
    base = sequence.lock(conn)
    recv, backfill = header.received_at, header.backfill
    rows = []
    accepted = result.accepted
    for i, c in enumerate(fresh, start=base + 1):
        e = c.event
        rows.append(
            (
                i,
                e.source,
                e.event_id,
                e.customer_id,
                e.event_type,
                e.event_time,
                e.properties,
                e.content_hash,
                recv,
                batch_id,
                backfill,
            )
        )
        accepted.append((i, e))
    cur.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
    cur.close()
    merkle.remember(conn, ((r[0], r[7]) for r in rows))
    if fresh:
        sequence.advance(conn, base + len(fresh))


_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_events (pos int4 NOT NULL, source text NOT NULL, "
    "event_id text NOT NULL, customer_id text NOT NULL, event_type text NOT NULL, "
    "event_time int8 NOT NULL, properties text NOT NULL, content_hash text NOT NULL) "
    "ON COMMIT DELETE ROWS"
)
_STAGE_TYPES = ["int4", "text", "text", "text", "text", "int8", "text", "text"]


def _append_postgres(
    conn: Connection,
    header: BatchHeader,
    batch_id: int,
    candidates: list[Candidate],
    result: AppendResult,
) -> None:
    pg = conn.connection.driver_connection
    assert isinstance(pg, psycopg.Connection)
    with pg.cursor() as cur:
        cur.execute(_STAGE_DDL)
        # Empty at the start of a transaction; a group commit writes several batches.
        cur.execute("DELETE FROM stage_events")
        with cur.copy("COPY stage_events FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(_STAGE_TYPES)
            for c in candidates:
                e = c.event
                cp.write_row(
                    (
                        c.position,
                        e.source,
                        e.event_id,
                        e.customer_id,
                        e.event_type,
                        e.event_time,
                        e.properties,
                        e.content_hash,
                    )
                )
        # Lock the counter only now, as late as possible, and keep it to commit.
        # Dedup runs under the lock, so a concurrent writer's keys are visible.
        base = sequence.lock(conn)
        cur.execute(
            "SELECT s.pos, k.content_hash, k.seq FROM stage_events s "
            "JOIN event_keys k ON k.source = s.source AND k.event_id = s.event_id"
        )
        existing = {int(p): (str(h), int(q)) for p, h, q in cur.fetchall()}
        fresh = _classify(candidates, existing, result)
        if existing:
            cur.execute("DELETE FROM stage_events WHERE pos = ANY(%s)", (list(existing),))
        if fresh:
            cur.execute(
                "INSERT INTO events (seq, source, event_id, customer_id, event_type, event_time, "
                "properties, content_hash, received_at, batch_id, backfill) "
                "SELECT %s + row_number() OVER (ORDER BY pos), source, event_id, customer_id, "
                "event_type, event_time, properties, content_hash, %s, %s, %s FROM stage_events",
                (base, header.received_at, batch_id, header.backfill),
            )
            cur.execute(
                "INSERT INTO event_keys (source, event_id, seq, content_hash) "
                "SELECT source, event_id, %s + row_number() OVER (ORDER BY pos), content_hash "
                "FROM stage_events",
                (base,),
            )
    result.accepted.extend((base + i, c.event) for i, c in enumerate(fresh, start=1))
    merkle.remember(conn, ((base + i, c.event.content_hash) for i, c in enumerate(fresh, start=1)))
    if fresh:
        sequence.advance(conn, base + len(fresh))


@dataclass(frozen=True)
class Retraction:
    seq: int
    source: str
    event_id: str
    event_seq: int
    reason: str
    retracted_at: int
    already: bool = False


def retract(conn: Connection, source: str, event_id: str, reason: str, now_us: int) -> Retraction:
    """Retract an event by key. Idempotent: retracting twice keeps the first record."""
    if not reason.strip():
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, "a retraction needs a reason")
    last = sequence.lock(conn)
    row = conn.execute(
        text("SELECT seq FROM events WHERE source = :s AND event_id = :e"),
        {"s": source, "e": event_id},
    ).first()
    if row is None:
        raise MeterlineError(
            ErrorCode.EVENT_NOT_FOUND, f"no event with source {source!r} and event_id {event_id!r}"
        )
    prior = conn.execute(
        text(
            "SELECT seq, event_seq, reason, retracted_at FROM retractions "
            "WHERE source = :s AND event_id = :e"
        ),
        {"s": source, "e": event_id},
    ).first()
    if prior is not None:
        return Retraction(
            int(prior[0]),
            source,
            event_id,
            int(prior[1]),
            str(prior[2]),
            int(prior[3]),
            already=True,
        )
    seq = last + 1
    conn.execute(
        text(
            "INSERT INTO retractions (seq, source, event_id, event_seq, reason, retracted_at) "
            "VALUES (:q, :s, :e, :es, :r, :t)"
        ),
        {"q": seq, "s": source, "e": event_id, "es": int(row[0]), "r": reason, "t": now_us},
    )
    sequence.advance(conn, seq)
    return Retraction(seq, source, event_id, int(row[0]), reason, now_us)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    event: Event
    backfill: bool
    received_at: int


def iter_events(conn: Connection, as_of: int | None = None) -> Iterator[StoredEvent]:
    """Every stored event not retracted, as known at `as_of`, in seq order."""
    k = sequence.current(conn) if as_of is None else as_of
    rows = conn.execute(
        text(
            "SELECT e.seq, e.source, e.event_id, e.customer_id, e.event_type, e.event_time, "
            "e.properties, e.content_hash, e.backfill, e.received_at FROM events e "
            "WHERE e.seq <= :k AND NOT EXISTS (SELECT 1 FROM retractions r WHERE "
            "r.source = e.source AND r.event_id = e.event_id AND r.seq <= :k) ORDER BY e.seq"
        ),
        {"k": k},
    )
    for r in rows:
        yield StoredEvent(
            int(r[0]), Event(r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7]), bool(r[8]), int(r[9])
        )
