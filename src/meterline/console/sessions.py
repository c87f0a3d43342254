"""Console sessions: opened by logging in with an admin API key, kept server-side.

The cookie holds only a random token; the server keeps the session (actor,
CSRF token, expiry) in memory, so logging out really ends it and nothing about
the key ever reaches the browser. Sessions expire after an idle period and at
an absolute limit, both measured on the injected clock. A restart of the
server ends every session (people log in again), which is the safe default.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from meterline.api.auth import KeyRing, Scope

COOKIE = "meterline_console"
IDLE_US = 30 * 60 * 1_000_000
ABSOLUTE_US = 8 * 3600 * 1_000_000
MAX_SESSIONS = 10_000


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


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Token -> Session, keyed by the token's hash (thread-safe)."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._lock = threading.Lock()
        self._by_hash: dict[str, Session] = {}

    def login(self, key: str, now_us: int) -> tuple[str, Session]:
        """A new session for an admin key; the token goes in the cookie."""
        found = self._keys.identify(key.strip().encode("utf-8")) if key.strip() else None
        if found is None or found[0] is not Scope.ADMIN:
            raise LoginRefused
        actor = "console:" + found[1].removeprefix("api:")
        token = secrets.token_urlsafe(32)
        session = Session(actor, secrets.token_urlsafe(32), now_us, now_us)
        with self._lock:
            if len(self._by_hash) >= MAX_SESSIONS:
                self._sweep(now_us)
            self._by_hash[_digest(token)] = session
        return token, session

    def get(self, token: str | None, now_us: int) -> Session | None:
        if not token:
            return None
        with self._lock:
            key = _digest(token)
            session = self._by_hash.get(key)
            if session is None:
                return None
            if session.expired(now_us):
                del self._by_hash[key]
                return None
            session.seen_us = max(session.seen_us, now_us)
            return session

    def logout(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._by_hash.pop(_digest(token), None)

    def _sweep(self, now_us: int) -> None:
        for key in [k for k, s in self._by_hash.items() if s.expired(now_us)]:
            del self._by_hash[key]


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
