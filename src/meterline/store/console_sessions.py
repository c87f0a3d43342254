"""Console sessions kept in the store (operational state, not facts): what
`console.sessions.Sessions` reads and writes when several server processes
must share them. No seq, no Merkle leaf: a session is deleted at logout."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, insert, select, update

from meterline.store.database import Store
from meterline.store.schema import console_sessions as t

Row = tuple[str, str, int, int]
"""actor, csrf, created_us, seen_us"""


class StoredSessions:
    """The session table of the store `open_store()` returns (opened lazily,
    like the rest of the app's store access)."""

    def __init__(self, open_store: Callable[[], Store]) -> None:
        self._open = open_store

    def put(self, token_hash: str, row: Row) -> None:
        actor, csrf, created, seen = row
        with self._open().write() as conn:
            conn.execute(
                insert(t).values(
                    token_hash=token_hash, actor=actor, csrf=csrf, created_us=created, seen_us=seen
                )
            )

    def fetch(self, token_hash: str) -> Row | None:
        with self._open().read() as conn:
            found = conn.execute(
                select(t.c.actor, t.c.csrf, t.c.created_us, t.c.seen_us).where(
                    t.c.token_hash == token_hash
                )
            ).first()
        return None if found is None else (str(found[0]), str(found[1]), found[2], found[3])

    def touch(self, token_hash: str, seen_us: int) -> None:
        with self._open().write() as conn:
            conn.execute(
                update(t)
                .where(t.c.token_hash == token_hash, t.c.seen_us < seen_us)
                .values(seen_us=seen_us)
            )

    def drop(self, token_hash: str) -> None:
        with self._open().write() as conn:
            conn.execute(delete(t).where(t.c.token_hash == token_hash))

    def sweep(self, idle_before_us: int, created_before_us: int) -> None:
        """Delete every session idle since before, or opened before, those instants."""
        with self._open().write() as conn:
            conn.execute(
                delete(t).where(
                    (t.c.seen_us < idle_before_us) | (t.c.created_us < created_before_us)
                )
            )
