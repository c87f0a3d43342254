"""The webhook outbox: endpoints, messages, deliveries and the attempt log.

`emit` runs inside the transaction of the fact that causes the message, so the
message commits or rolls back with it. It fans out at once: one pending
delivery per enabled endpoint subscribed to the type (endpoints added later do
not receive older messages; `replay` sends one again). Dispatchers claim due
deliveries with a lease (`locked_until`): on PostgreSQL with FOR UPDATE SKIP
LOCKED, so concurrent dispatchers never claim the same row; on SQLite the
claim runs in a BEGIN IMMEDIATE transaction, one writer at a time. A
dispatcher that dies mid-delivery leaves a lease that expires, and the
delivery is claimed again: at least once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.domain.canonical import dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.domain.timestamps import format_us
from meterline.webhooks.events import EventType, Message

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
EXCERPT_CHARS = 512


@dataclass(frozen=True)
class Endpoint:
    id: int
    url: str
    secret: str
    event_types: tuple[str, ...]
    enabled: bool
    description: str
    created_at: int

    def subscribed(self, kind: str) -> bool:
        return not self.event_types or kind in self.event_types

    def to_dict(self, *, reveal_secret: bool = False) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "event_types": list(self.event_types),
            "enabled": self.enabled,
            "description": self.description,
            "created_at": format_us(self.created_at),
        } | ({"secret": self.secret} if reveal_secret else {})


_ENDPOINT_COLUMNS = "id, url, secret, event_types, enabled, description, created_at"


def _endpoint(r: Any) -> Endpoint:
    return Endpoint(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        tuple(decode_json(r[3])),
        bool(r[4]),
        str(r[5]),
        int(r[6]),
    )


def add_endpoint(
    conn: Connection,
    url: str,
    secret: str,
    event_types: list[EventType],
    description: str,
    now_us: int,
) -> Endpoint:
    new_id = conn.execute(
        text(
            "INSERT INTO webhook_endpoints (url, secret, event_types, enabled, description, "
            "created_at) VALUES (:u, :s, :t, :e, :d, :c) RETURNING id"
        ),
        {
            "u": url,
            "s": secret,
            "t": dumps([str(t) for t in event_types]).decode(),
            "e": True,
            "d": description,
            "c": now_us,
        },
    ).scalar_one()
    return get_endpoint(conn, int(new_id))


def get_endpoint(conn: Connection, endpoint_id: int) -> Endpoint:
    row = conn.execute(
        text(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = :i"),
        {"i": endpoint_id},
    ).first()
    if row is None:
        raise MeterlineError(ErrorCode.WEBHOOK_NOT_FOUND, f"no webhook endpoint {endpoint_id}")
    return _endpoint(row)


def endpoints(conn: Connection) -> list[Endpoint]:
    rows = conn.execute(text(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY id"))
    return [_endpoint(r) for r in rows]


def set_enabled(conn: Connection, endpoint_id: int, enabled: bool) -> Endpoint:
    get_endpoint(conn, endpoint_id)
    conn.execute(
        text("UPDATE webhook_endpoints SET enabled = :e WHERE id = :i"),
        {"e": enabled, "i": endpoint_id},
    )
    return get_endpoint(conn, endpoint_id)


def _deliver_to(conn: Connection, message_id: str, endpoint_id: int, now_us: int) -> int:
    return int(
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (message_id, endpoint_id, status, attempts, "
                "next_attempt_at, created_at) VALUES (:m, :e, 'pending', 0, :t, :t) RETURNING id"
            ),
            {"m": message_id, "e": endpoint_id, "t": now_us},
        ).scalar_one()
    )


def emit(conn: Connection, msg: Message) -> bool:
    """Record `msg` and its deliveries in the caller's transaction.

    Returns False (and records nothing) when a message with the same id, the
    same fact, is already recorded.
    """
    exists = conn.execute(
        text("SELECT 1 FROM webhook_messages WHERE id = :i"), {"i": msg.id}
    ).first()
    if exists is not None:
        return False
    conn.execute(
        text("INSERT INTO webhook_messages (id, type, body, created_at) VALUES (:i, :t, :b, :c)"),
        {"i": msg.id, "t": str(msg.type), "b": msg.body.decode(), "c": msg.created_at},
    )
    for ep in endpoints(conn):
        if ep.enabled and ep.subscribed(str(msg.type)):
            _deliver_to(conn, msg.id, ep.id, msg.created_at)
    return True


def emit_many(conn: Connection, msgs: list[Message]) -> int:
    """`emit` for many messages: one read of what is recorded and of the endpoints,
    one executemany per table. Returns how many were recorded."""
    if not msgs:
        return 0
    ids = [m.id for m in msgs]
    known = {
        str(r[0])
        for r in conn.execute(
            text("SELECT id FROM webhook_messages WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    }
    fresh: list[Message] = []
    for m in msgs:
        if m.id not in known:
            known.add(m.id)
            fresh.append(m)
    if not fresh:
        return 0
    conn.execute(
        text("INSERT INTO webhook_messages (id, type, body, created_at) VALUES (:i, :t, :b, :c)"),
        [{"i": m.id, "t": str(m.type), "b": m.body.decode(), "c": m.created_at} for m in fresh],
    )
    live = [ep for ep in endpoints(conn) if ep.enabled]
    deliveries = [
        {"m": m.id, "e": ep.id, "t": m.created_at}
        for m in fresh
        for ep in live
        if ep.subscribed(str(m.type))
    ]
    if deliveries:
        conn.execute(
            text(
                "INSERT INTO webhook_deliveries (message_id, endpoint_id, status, attempts, "
                "next_attempt_at, created_at) VALUES (:m, :e, 'pending', 0, :t, :t)"
            ),
            deliveries,
        )
    return len(fresh)


def replay(
    conn: Connection, message_id: str, now_us: int, endpoint_id: int | None = None
) -> list[int]:
    """New pending deliveries of a recorded message: to one endpoint, or to every
    enabled endpoint subscribed to its type now. Returns the delivery ids."""
    row = conn.execute(
        text("SELECT type FROM webhook_messages WHERE id = :i"), {"i": message_id}
    ).first()
    if row is None:
        raise MeterlineError(ErrorCode.WEBHOOK_NOT_FOUND, f"no webhook message {message_id!r}")
    if endpoint_id is not None:
        targets = [get_endpoint(conn, endpoint_id)]
    else:
        targets = [ep for ep in endpoints(conn) if ep.enabled and ep.subscribed(str(row[0]))]
    return [_deliver_to(conn, message_id, ep.id, now_us) for ep in targets]


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    message_id: str
    endpoint_id: int
    attempts: int
    first_attempt_at: int | None
    url: str
    secret: str
    body: bytes


_DUE = (
    "FROM webhook_deliveries d WHERE d.status = 'pending' "
    "AND d.next_attempt_at <= :now AND (d.locked_until IS NULL OR d.locked_until <= :now) "
    "AND d.endpoint_id IN (SELECT id FROM webhook_endpoints WHERE enabled)"
)


def any_due(conn: Connection, now_us: int) -> bool:
    """Whether a delivery is due: read first, so that an idle dispatcher does not
    take SQLite's write lock every second (an ingesting server's batches queued
    behind it, in SQLite's busy handler, which sleeps in growing steps)."""
    row = conn.execute(text(f"SELECT 1 {_DUE} LIMIT 1"), {"now": now_us}).first()
    return row is not None


def claim(
    conn: Connection, dispatcher: str, now_us: int, lease_us: int, limit: int
) -> list[Claimed]:
    """Lease up to `limit` due deliveries to `dispatcher` (commit before sending)."""
    skip_locked = " FOR UPDATE SKIP LOCKED" if conn.dialect.name == "postgresql" else ""
    ids = [
        int(r[0])
        for r in conn.execute(
            text(f"SELECT d.id {_DUE} ORDER BY d.next_attempt_at, d.id LIMIT :n{skip_locked}"),
            {"now": now_us, "n": limit},
        )
    ]
    claimed: list[Claimed] = []
    for delivery_id in ids:
        conn.execute(
            text("UPDATE webhook_deliveries SET locked_by = :w, locked_until = :u WHERE id = :i"),
            {"w": dispatcher, "u": now_us + lease_us, "i": delivery_id},
        )
        r = conn.execute(
            text(
                "SELECT d.id, d.message_id, d.endpoint_id, d.attempts, d.first_attempt_at, "
                "e.url, e.secret, m.body FROM webhook_deliveries d "
                "JOIN webhook_endpoints e ON e.id = d.endpoint_id "
                "JOIN webhook_messages m ON m.id = d.message_id WHERE d.id = :i"
            ),
            {"i": delivery_id},
        ).one()
        claimed.append(
            Claimed(
                int(r[0]),
                str(r[1]),
                int(r[2]),
                int(r[3]),
                None if r[4] is None else int(r[4]),
                str(r[5]),
                str(r[6]),
                str(r[7]).encode(),
            )
        )
    return claimed


def renew(conn: Connection, delivery_id: int, dispatcher: str, now_us: int, lease_us: int) -> bool:
    """Extend `dispatcher`'s lease; False when it no longer holds the delivery."""
    result = conn.execute(
        text(
            "UPDATE webhook_deliveries SET locked_until = :u WHERE id = :i AND locked_by = :w "
            "AND status = 'pending'"
        ),
        {"u": now_us + lease_us, "i": delivery_id, "w": dispatcher},
    )
    return result.rowcount == 1


@dataclass(frozen=True)
class Outcome:
    started_at: int
    latency_us: int
    status_code: int | None
    excerpt: str
    error: str | None

    @property
    def success(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def record_attempt(
    conn: Connection,
    c: Claimed,
    dispatcher: str,
    outcome: Outcome,
    next_attempt_at: int | None,
    now_us: int,
) -> str:
    """Log one attempt and move the delivery on: delivered, retried at
    `next_attempt_at`, or failed (`next_attempt_at` None). Returns the new status."""
    attempt = c.attempts + 1
    conn.execute(
        text(
            "INSERT INTO webhook_attempts (delivery_id, message_id, endpoint_id, attempt, "
            "started_at, latency_us, status_code, response_excerpt, error, outcome, dispatcher) "
            "VALUES (:d, :m, :e, :a, :s, :l, :c, :x, :err, :o, :w)"
        ),
        {
            "d": c.delivery_id,
            "m": c.message_id,
            "e": c.endpoint_id,
            "a": attempt,
            "s": outcome.started_at,
            "l": outcome.latency_us,
            "c": outcome.status_code,
            "x": outcome.excerpt[:EXCERPT_CHARS],
            "err": outcome.error,
            "o": "success" if outcome.success else "failure",
            "w": dispatcher,
        },
    )
    if outcome.success:
        status, due = DELIVERED, now_us
    elif next_attempt_at is None:
        status, due = FAILED, now_us
    else:
        status, due = PENDING, next_attempt_at
    # A delivery someone already finished (a lease that ran out while this
    # dispatcher was slow) stays finished: only pending rows move. A failure
    # moves the delivery only while this dispatcher still holds it; a success
    # always marks it delivered.
    conn.execute(
        text(
            "UPDATE webhook_deliveries SET status = :s, attempts = attempts + 1, "
            "next_attempt_at = :due, first_attempt_at = COALESCE(first_attempt_at, :first), "
            "locked_by = NULL, locked_until = NULL, finished_at = :fin "
            "WHERE id = :i AND status = 'pending' AND (:ok OR locked_by = :w)"
        ),
        {
            "s": status,
            "due": due,
            "first": outcome.started_at,
            "fin": None if status == PENDING else now_us,
            "i": c.delivery_id,
            "ok": outcome.success,
            "w": dispatcher,
        },
    )
    return status


def deliveries(
    conn: Connection,
    *,
    message_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    where: list[str] = []
    params: dict[str, Any] = {"n": limit}
    if message_id is not None:
        where.append("d.message_id = :m")
        params["m"] = message_id
    if status is not None:
        where.append("d.status = :s")
        params["s"] = status
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    rows = conn.execute(
        text(
            "SELECT d.id, d.message_id, m.type, d.endpoint_id, d.status, d.attempts, "
            "d.next_attempt_at, d.created_at, d.finished_at FROM webhook_deliveries d "
            f"JOIN webhook_messages m ON m.id = d.message_id {clause} ORDER BY d.id DESC LIMIT :n"
        ),
        params,
    ).all()
    return [
        {
            "id": int(r[0]),
            "message_id": str(r[1]),
            "type": str(r[2]),
            "endpoint_id": int(r[3]),
            "status": str(r[4]),
            "attempts": int(r[5]),
            "next_attempt_at": format_us(int(r[6])) if str(r[4]) == PENDING else None,
            "created_at": format_us(int(r[7])),
            "finished_at": None if r[8] is None else format_us(int(r[8])),
        }
        for r in rows
    ]


def attempts(conn: Connection, delivery_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        text(
            "SELECT attempt, started_at, latency_us, status_code, response_excerpt, error, "
            "outcome, dispatcher FROM webhook_attempts WHERE delivery_id = :d ORDER BY id"
        ),
        {"d": delivery_id},
    )
    return [
        {
            "attempt": int(r[0]),
            "started_at": format_us(int(r[1])),
            "latency_us": int(r[2]),
            "status_code": None if r[3] is None else int(r[3]),
            "response_excerpt": str(r[4]),
            "error": None if r[5] is None else str(r[5]),
            "outcome": str(r[6]),
            "dispatcher": str(r[7]),
        }
        for r in rows
    ]


def message_body(conn: Connection, message_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        text("SELECT body FROM webhook_messages WHERE id = :i"), {"i": message_id}
    ).first()
    return None if row is None else dict(decode_json(row[0]))
