"""API keys with scopes, sent as `Authorization: Bearer KEY`.

Keys come from configuration (`METERLINE_API_KEYS="KEY:ingest,KEY2:admin"`).
`ingest` is for producers; `admin` can do everything. Comparison is constant
time, and neither keys nor the Authorization header are ever logged or echoed.
With no keys configured the API is open, which is only allowed on loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum

from fastapi import Request

from meterline.api.errors import FORBIDDEN, UNAUTHORIZED, ApiError
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.store.audit import set_actor

ENV_VAR = "METERLINE_API_KEYS"


class Scope(StrEnum):
    INGEST = "ingest"
    ADMIN = "admin"

    def allows(self, needed: Scope) -> bool:
        return self is Scope.ADMIN or self is needed


class KeyRing:
    """The configured keys. Its repr never shows a key."""

    def __init__(self, keys: Mapping[str, Scope] | None = None) -> None:
        self._keys: list[tuple[bytes, Scope]] = [
            (key.encode("utf-8"), scope) for key, scope in (keys or {}).items()
        ]

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    def __bool__(self) -> bool:
        return bool(self._keys)

    @classmethod
    def parse(cls, text: str, origin: str = ENV_VAR) -> KeyRing:
        """Parse "KEY:scope,KEY2:scope". Errors name the entry's position, never the key."""
        keys: dict[str, Scope] = {}
        for position, entry in enumerate(text.split(","), start=1):
            entry = entry.strip()
            if not entry:
                continue
            key, sep, scope_name = entry.rpartition(":")
            key, scope_name = key.strip(), scope_name.strip().lower()
            if not sep or not key:
                raise _config_error(origin, position, "expected KEY:SCOPE")
            try:
                scope = Scope(scope_name)
            except ValueError:
                raise _config_error(
                    origin, position, f"unknown scope {scope_name!r} (use ingest or admin)"
                ) from None
            if keys.get(key, scope) is not scope:
                raise _config_error(origin, position, "the same key is listed with two scopes")
            keys[key] = scope
        return cls(keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        return cls.parse((environ if environ is not None else os.environ).get(ENV_VAR, ""))

    def scope_of(self, token: bytes) -> Scope | None:
        """The scope of `token`, comparing against every key in constant time each."""
        found = self.identify(token)
        return None if found is None else found[0]

    def identify(self, token: bytes) -> tuple[Scope, str] | None:
        """The scope of `token` and a name for the audit trail that never reveals the key:
        its scope and position in the configuration ("api:admin#2")."""
        found: tuple[Scope, str] | None = None
        for position, (key, scope) in enumerate(self._keys, start=1):
            if hmac.compare_digest(key, token):
                found = (scope, f"api:{scope.value}#{position}")
        return found


def _config_error(origin: str, position: int, what: str) -> MeterlineError:
    return MeterlineError(ErrorCode.INVALID_ARGUMENT, f"{origin}: entry {position}: {what}")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyRing) -> None:
    """Refuse to expose an unauthenticated API beyond this machine."""
    if not keys and not is_loopback(host):
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"refusing to serve on {host} without API keys; set {ENV_VAR}=KEY:admin "
            "or bind to 127.0.0.1",
        )


def _bearer_token(request: Request) -> bytes | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    kind, _, token = header.strip().partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return None
    # Starlette decodes headers as latin-1; this recovers the bytes as sent.
    return token.strip().encode("latin-1")


_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="meterline"'}


def require(needed: Scope, keys: KeyRing) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency admitting requests whose key has scope `needed`."""

    async def dependency(request: Request) -> None:
        if not keys:
            set_actor("api:open")
            return  # open mode: allowed only on loopback (check_bind), warned at startup
        token = _bearer_token(request)
        if token is None:
            raise ApiError(
                401,
                UNAUTHORIZED,
                "missing API key: send Authorization: Bearer KEY",
                None,
                _CHALLENGE,
            )
        identified = keys.identify(token)
        if identified is None:
            raise ApiError(401, UNAUTHORIZED, "invalid API key", None, _CHALLENGE)
        scope, actor = identified
        if not scope.allows(needed):
            raise ApiError(
                403,
                FORBIDDEN,
                f"this API key lacks the {needed.value!r} scope",
                {"needed": needed.value},
            )
        # Awaited in the request's own context, so the store work that follows (in a
        # worker thread, which copies the context) is attributed to this key.
        set_actor(actor)

    return dependency
