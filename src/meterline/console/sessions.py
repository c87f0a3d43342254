"""Console sessions: opened by logging in with an admin API key, kept server-side.

The cookie holds only a random token; the server keeps the session (actor,
CSRF token, expiry) under the token's hash, so logging out really ends it and
nothing about the key ever reaches the browser. Sessions expire after an idle
period and at an absolute limit, both measured on the injected clock.

Where they are kept is a `Table`: in memory for one process (tests), or in the
store (`store/console_sessions.py`, what `serve` uses) so that every
`serve --workers N` process finds a session another one opened, and a logout in
one ends it in all. The idle clock is written at most once a minute per session
(`TOUCH_US`), not on every page.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Protocol

from meterline.api.auth import KeyRing, Scope
from meterline.store.console_sessions import Row

COOKIE = "meterline_console"
IDLE_US = 30 * 60 * 1_000_000
ABSOLUTE_US = 8 * 3600 * 1_000_000
TOUCH_US = 60 * 1_000_000
SWEEP_EVERY = 100


@dataclass
class Session:
    actor: str
    csrf: str
    created_us: int
    seen_us: int

    def expired(self, now_us: int) -> bool:
        return now_us - self.seen_us > IDLE_US or now_us - self.created_us > ABSOLUTE_US


class LoginRefused(Exception):
    """The key is unknown, or not an admin key."""


class Table(Protocol):
    """Where sessions are kept, by token hash."""

    def put(self, token_hash: str, row: Row) -> None: ...
    def fetch(self, token_hash: str) -> Row | None: ...
    def touch(self, token_hash: str, seen_us: int) -> None: ...
    def drop(self, token_hash: str) -> None: ...
    def sweep(self, idle_before_us: int, created_before_us: int) -> None: ...


class MemoryTable:
    """Sessions of one process (thread-safe); bounded by sweeping on login."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, Row] = {}

    def put(self, token_hash: str, row: Row) -> None:
        with self._lock:
            self._rows[token_hash] = row

    def fetch(self, token_hash: str) -> Row | None:
        with self._lock:
            return self._rows.get(token_hash)

    def touch(self, token_hash: str, seen_us: int) -> None:
        with self._lock:
            row = self._rows.get(token_hash)
            if row is not None and row[3] < seen_us:
                self._rows[token_hash] = (*row[:3], seen_us)

    def drop(self, token_hash: str) -> None:
        with self._lock:
            self._rows.pop(token_hash, None)

    def sweep(self, idle_before_us: int, created_before_us: int) -> None:
        with self._lock:
            for key in [
                k
                for k, (_, _, created, seen) in self._rows.items()
                if seen < idle_before_us or created < created_before_us
            ]:
                del self._rows[key]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Login, lookup and logout over a `Table` (in memory unless one is given)."""

    def __init__(self, keys: KeyRing, table: Table | None = None) -> None:
        self._keys = keys
        self._table: Table = table if table is not None else MemoryTable()
        self._logins = 0

    def login(self, key: str, now_us: int) -> tuple[str, Session]:
        """A new session for an admin key; the token goes in the cookie."""
        found = self._keys.identify(key.strip().encode("utf-8")) if key.strip() else None
        if found is None or found[0] is not Scope.ADMIN:
            raise LoginRefused
        actor = "console:" + found[1].removeprefix("api:")
        token = secrets.token_urlsafe(32)
        session = Session(actor, secrets.token_urlsafe(32), now_us, now_us)
        self._logins += 1
        if self._logins % SWEEP_EVERY == 1:  # expired sessions go, without a timer
            self._table.sweep(now_us - IDLE_US, now_us - ABSOLUTE_US)
        self._table.put(_digest(token), (actor, session.csrf, now_us, now_us))
        return token, session

    def get(self, token: str | None, now_us: int) -> Session | None:
        if not token:
            return None
        key = _digest(token)
        row = self._table.fetch(key)
        if row is None:
            return None
        session = Session(*row)
        if session.expired(now_us):
            self._table.drop(key)
            return None
        if now_us - session.seen_us >= TOUCH_US:
            self._table.touch(key, now_us)
            session.seen_us = now_us
        return session

    def logout(self, token: str | None) -> None:
        if token:
            self._table.drop(_digest(token))


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
