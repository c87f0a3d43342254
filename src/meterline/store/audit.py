"""The audit trail: who did what, when, written in the change's own transaction.

One row per state-changing command (per transaction: an ingest batch, a
catalog apply, an issued document, a status change, a retraction, a re-rating
mark), so the trail can never claim a change that rolled back, nor miss one
that committed. `at` is the injected clock, never the wall clock.

The actor is, in order: the one set with `acting_as` (the HTTP API sets
"api:<key-name>"), the METERLINE_ACTOR environment variable, the OS user.
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.canonical import dumps
from meterline.domain.events import decode_json
from meterline.store import sequence
from meterline.store.event_log import AppendResult, Retraction

_actor: ContextVar[str | None] = ContextVar("meterline_actor", default=None)

# Details are for people; a long list is cut so one row stays small.
MAX_LISTED = 50


def current_actor() -> str:
    explicit = _actor.get()
    if explicit:
        return explicit
    env = os.environ.get("METERLINE_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (e.g. a bare container)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


@contextlib.contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Attribute the changes made inside the block to `actor`."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def set_actor(actor: str) -> None:
    """Attribute the rest of the current context's changes to `actor` (an API request)."""
    _actor.set(actor)


def capped(items: list[str]) -> dict[str, Any]:
    return {"count": len(items), "items": items[:MAX_LISTED]}


def record(conn: Connection, action: str, details: dict[str, Any], at_us: int) -> None:
    """Append an audit row; `seq` is the knowledge seq the change left the store at."""
    conn.execute(
        text(
            "INSERT INTO audit_log (seq, at, actor, action, details) VALUES (:q, :t, :a, :ac, :d)"
        ),
        {
            "q": sequence.current(conn),
            "t": at_us,
            "a": current_actor()[:256],
            "ac": action,
            "d": dumps(details).decode(),
        },
    )


def record_many(conn: Connection, rows: list[tuple[int, str, dict[str, Any]]], at_us: int) -> None:
    """`record` for many changes at once: (seq the change left the store at, action, details)."""
    if not rows:
        return
    actor = current_actor()[:256]
    conn.execute(
        text(
            "INSERT INTO audit_log (seq, at, actor, action, details) VALUES (:q, :t, :a, :ac, :d)"
        ),
        [
            {"q": seq, "t": at_us, "a": actor, "ac": action, "d": dumps(details).decode()}
            for seq, action, details in rows
        ],
    )


def rows(
    conn: Connection, limit: int | None = None, action: str | None = None
) -> list[dict[str, Any]]:
    """The newest `limit` rows (all without a limit), oldest first."""
    params: dict[str, Any] = {"ac": action} if action else {}
    where = "WHERE action = :ac" if action else ""
    sql = f"SELECT id, seq, at, actor, action, details FROM audit_log {where} ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT :n"
        params["n"] = limit
    out = [
        {
            "id": int(r[0]),
            "seq": int(r[1]),
            "at": int(r[2]),
            "actor": str(r[3]),
            "action": str(r[4]),
            "details": decode_json(r[5]),
        }
        for r in conn.execute(text(sql), params)
    ]
    out.reverse()
    return out


def ingest_batch(
    conn: Connection, batch: AppendResult, rejected: int, origin: str, at_us: int
) -> None:
    """One row per ingest batch (stored atomically; see store/group_commit.py), never per event."""
    record(
        conn,
        "ingest",
        {
            "batch_id": batch.batch_id,
            "origin": origin,
            "accepted": len(batch.accepted),
            "duplicates": batch.duplicates,
            "rejected": rejected + len(batch.conflicts),
            "first_seq": batch.accepted[0][0] if batch.accepted else None,
            "last_seq": batch.accepted[-1][0] if batch.accepted else None,
        },
        at_us,
    )


def retraction(conn: Connection, r: Retraction, at_us: int) -> None:
    if not r.already:
        record(
            conn,
            "retract",
            {"source": r.source, "event_id": r.event_id, "reason": r.reason, "seq": r.seq},
            at_us,
        )


def catalog_apply(conn: Connection, report: Any, at_us: int) -> None:
    if report.added:
        record(
            conn,
            "catalog.apply",
            {"added": capped(list(report.added)), "unchanged": len(report.unchanged)},
            at_us,
        )
