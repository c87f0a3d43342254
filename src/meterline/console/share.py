"""Signed, expiring, read-only links to one invoice's explanation.

The link carries the document number and an expiry instant, signed with
HMAC-SHA256 under the server's console secret (METERLINE_CONSOLE_SECRET). Any
change to the number, the expiry or the signature, or a link past its expiry,
is refused. Without a configured secret a random one is made per process, so
links stop working when the server restarts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

SECRET_ENV = "METERLINE_CONSOLE_SECRET"
MIN_SECRET_BYTES = 16


def secret_from_env(environ: dict[str, str] | None = None) -> tuple[bytes, bool]:
    """The configured secret and True, or a fresh random one and False."""
    value = (environ if environ is not None else dict(os.environ)).get(SECRET_ENV, "")
    if len(value.encode()) >= MIN_SECRET_BYTES:
        return value.encode(), True
    return secrets.token_bytes(32), False


def _mac(secret: bytes, number: str, expires_us: int) -> str:
    message = f"share\x1f{number}\x1f{expires_us}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(secret: bytes, number: str, expires_us: int) -> str:
    return _mac(secret, number, expires_us)


def valid(secret: bytes, number: str, expires_text: str, signature: str, now_us: int) -> bool:
    """Whether the link is genuine and not expired (constant-time comparison)."""
    if not expires_text.isdigit() or len(expires_text) > 19:
        return False
    expires_us = int(expires_text)
    expected = _mac(secret, number, expires_us)
    genuine = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
    return genuine and now_us < expires_us
