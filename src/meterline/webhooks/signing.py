"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; the signature
is base64(HMAC-SHA256(secret, content)) sent as ``v1,<signature>``. Secrets are
``whsec_`` followed by the base64 of 24 random bytes, as the spec suggests.
Implemented here with hmac/hashlib so the runtime needs no extra package; the
tests verify with the reference `standardwebhooks` package.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from meterline.domain.errors import ErrorCode, MeterlineError

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; a clear error for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, "a webhook secret must start with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT, "a webhook secret must be whsec_ followed by base64"
        ) from None
    if not 16 <= len(key) <= 64:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT, "a webhook secret must hold 16 to 64 bytes"
        )
    return key


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one send."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }
