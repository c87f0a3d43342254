"""Shared plumbing of the billing endpoints: parameters, bodies, blocking calls.

The billing routes are thin adapters over the service functions the CLI uses,
so they share one way of reading query parameters (declared by hand in the
OpenAPI document, parsed here, errors in the envelope with 400), of reading a
small JSON body (bounded, decoded with msgspec into a strict Struct), and of
running store work off the event loop (a bounded thread pool of its own, so a
burst of invoice renders can neither starve ingestion nor drain the
connection pool).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import msgspec
from fastapi import Request
from fastapi.responses import Response

from meterline.api.body import media_type, read_body, unsupported
from meterline.api.context import AppContext
from meterline.api.errors import ApiError
from meterline.billing.periods import label_year
from meterline.domain.errors import ErrorCode
from meterline.domain.json_errors import describe_decode_error, describe_validation_error
from meterline.domain.timestamps import InvalidTimestamp, format_us, parse_rfc3339

T = TypeVar("T")

INVALID = str(ErrorCode.INVALID_ARGUMENT)
MAX_TEXT = 256
# Instants the store can represent and print: billing before 1970 or after
# 9998 is a typo, and the extremes overflow date arithmetic.
MIN_INSTANT = parse_rfc3339("1970-01-01T00:00:00Z")
MAX_INSTANT = parse_rfc3339("9999-01-01T00:00:00Z")
MIN_YEAR, MAX_YEAR = 1970, 9998


def bad(message: str, **details: Any) -> ApiError:
    return ApiError(400, INVALID, message, details or None)


@dataclass(frozen=True)
class Param:
    """A query parameter: its OpenAPI declaration (parsed by the helpers below)."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False

    def openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": "query",
            "required": self.required,
            "description": self.description,
            "schema": self.schema,
        }


def parameters(*params: Param | dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` declaring these parameters (dicts are taken as they are)."""
    return {"parameters": [p.openapi() if isinstance(p, Param) else p for p in params]}


def path_param(name: str, description: str) -> dict[str, Any]:
    """A path parameter, declared by hand: routes read it from `request.path_params`,
    so FastAPI adds no (never used) 422 validation response for it."""
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def text_param(request: Request, name: str, *, required: bool = False) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise bad(f"the query parameter {name!r} is required", parameter=name)
        return None
    if len(value) > MAX_TEXT:
        raise bad(f"{name} must be at most {MAX_TEXT} characters", parameter=name)
    return value


def required_text(request: Request, name: str) -> str:
    value = text_param(request, name, required=True)
    assert value is not None
    return value


def int_param(request: Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise bad(f"{name} must be an integer from {low} to {high}", parameter=name)
    return value


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def bool_param(request: Request, name: str, default: bool = False) -> bool:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    flag = text.lower()
    if flag not in _TRUE + _FALSE:
        raise bad(f"{name} must be true or false", parameter=name)
    return flag in _TRUE


def instant(name: str, text: str) -> int:
    try:
        value = parse_rfc3339(text)
    except InvalidTimestamp as exc:
        raise bad(f"{name}: {exc}", parameter=name) from None
    if not MIN_INSTANT <= value < MAX_INSTANT:
        raise bad(
            f"{name} must be between {format_us(MIN_INSTANT)} and {format_us(MAX_INSTANT)}",
            parameter=name,
        )
    return value


def period(name: str, label: str) -> str:
    """A billing period label (2024-01, 2024-Q1, 2024, 2024-W03, 2024-01-15); the service
    checks it against the customer's billing cycles."""
    year = label_year(label)  # INVALID_ARGUMENT (400) when malformed
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise bad(f"{name} must be a month from {MIN_YEAR}-01 to {MAX_YEAR}-12", parameter=name)
    return label


# Cursors are opaque to clients: today the offset of the next page.
def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        kind, _, number = text.partition(":")
        offset = int(number)
        if kind != "o" or offset < 0 or not number.isdigit():
            raise ValueError(cursor)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad("cursor is not one this server returned", parameter="cursor") from None
    return offset


async def json_body(request: Request, ctx: AppContext, kind: type[T], *, optional: bool) -> T:
    """A small JSON body decoded strictly into `kind` (unknown fields refused)."""
    raw = await read_body(request, ctx.max_body_bytes)
    if not raw.strip():
        if optional:
            return msgspec.json.decode(b"{}", type=kind)
        raise bad("a JSON body is required")
    got = media_type(request)
    if got not in ("application/json", ""):
        raise unsupported(got, ("application/json",))
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise bad(f"invalid body: {describe_validation_error(exc)}") from None
    except msgspec.DecodeError as exc:
        raise ApiError(
            400, str(ErrorCode.INVALID_JSON), f"the body is {describe_decode_error(exc)}"
        ) from None


def json_response(value: Any, status: int = 200) -> Response:
    """Encoded exactly as the CLI's --json (msgspec: Decimals as strings)."""
    return Response(msgspec.json.encode(value), status, media_type="application/json")


async def blocking(ctx: AppContext, work: Callable[[], T]) -> T:
    """Run store work in the billing thread pool."""
    return await anyio.to_thread.run_sync(work, limiter=ctx.admin_limiter)
