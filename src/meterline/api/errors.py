"""Error responses: one envelope everywhere, and never a traceback.

Every error is `{"error": {"code", "message", "details"}}`. Under `/api/`
(the OpenMeter-compatible surface) the same body is also an RFC 7807 problem
document (`application/problem+json` with type/title/status/detail), because
OpenMeter clients parse problem details; RFC 7807 allows the extra member.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import msgspec
import psycopg
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterline.domain.errors import ErrorCode, MeterlineError

log = logging.getLogger("meterline.api")

# HTTP-level codes that are not domain codes (ErrorCode holds those).
UNAUTHORIZED = "UNAUTHORIZED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
PAYLOAD_TOO_LARGE = str(ErrorCode.PAYLOAD_TOO_LARGE)
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
EVENTS_REJECTED = "EVENTS_REJECTED"
INTERNAL = "INTERNAL"

PROBLEM_JSON = "application/problem+json"

# Domain codes whose HTTP status is not 400 (bad input is 400, the default).
_STATUS_OF_CODE: dict[str, int] = {
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.STORE_NOT_INITIALISED: 503,
    # the thing named does not exist
    ErrorCode.EVENT_NOT_FOUND: 404,
    ErrorCode.DOCUMENT_NOT_FOUND: 404,
    ErrorCode.UNKNOWN_CUSTOMER: 404,
    ErrorCode.UNKNOWN_FEATURE: 404,
    ErrorCode.UNKNOWN_METER: 404,
    ErrorCode.WEBHOOK_NOT_FOUND: 404,
    ErrorCode.CREDIT_GRANT_NOT_FOUND: 404,
    ErrorCode.CREDIT_GRANT_EXISTS: 409,
    ErrorCode.CREDIT_GRANT_VOID: 409,
    # the request is valid but conflicts with the state of the books
    ErrorCode.PERIOD_NOT_CLOSED: 409,
    ErrorCode.INVALID_STATUS_CHANGE: 409,
    ErrorCode.PRICE_VERSION_IMMUTABLE: 409,
    ErrorCode.RETROACTIVE_VERSION_REQUIRED: 409,
    ErrorCode.EVENT_AFTER_CUTOFF: 409,
    ErrorCode.NO_TREE_HEAD: 409,
    # well-formed, but the content cannot be billed as it stands
    ErrorCode.INVALID_CATALOG: 422,
    ErrorCode.NO_SUBSCRIPTION: 422,
    ErrorCode.NO_PRICE_FOR_DATE: 422,
    ErrorCode.INVOICE_FAILED: 422,
    ErrorCode.INVALID_DOCUMENT: 422,
    ErrorCode.INVOICE_RUN_INCOMPLETE: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
}


def status_of(code: str) -> int:
    """The HTTP status a domain error code is answered with."""
    return _STATUS_OF_CODE.get(code, 400)


class ApiError(Exception):
    """An error answered with `status` and the envelope; raised by routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers


def is_openmeter_path(path: str) -> bool:
    return path.startswith("/api/")


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def problem(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An RFC 7807 document that also carries the meterline envelope."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": message,
    }
    body.update(extra or {})
    body.update(envelope(code, message, details))
    return body


def error_response(
    path: str,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    if is_openmeter_path(path):
        body = problem(status, code, message, details)
        media_type = PROBLEM_JSON
    else:
        body = envelope(code, message, details)
        media_type = "application/json"
    return Response(msgspec.json.encode(body), status, headers=headers, media_type=media_type)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        request.url.path, exc.status, exc.code, exc.message, exc.details, exc.headers
    )


async def _meterline_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MeterlineError)
    status = status_of(exc.code)
    if status == 503:
        # The message may name the database host; operators get it in the log.
        log.warning("store not ready: %s", exc)
        message = "the store is unavailable or not initialised; try again later"
        return error_response(request.url.path, status, str(exc.code), message)
    message = exc.message
    if exc.code == ErrorCode.PERIOD_NOT_CLOSED:
        message += '; send "force": true in the request body to issue anyway (marked forced)'
    return error_response(request.url.path, status, str(exc.code), message, exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: NOT_FOUND, 405: METHOD_NOT_ALLOWED}.get(exc.status_code, "HTTP_ERROR")
    message = HTTPStatus(exc.status_code).phrase
    return error_response(request.url.path, exc.status_code, code, message, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "message": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    return error_response(
        request.url.path,
        400,
        str(ErrorCode.INVALID_ARGUMENT),
        "invalid request parameters",
        {"errors": problems},
    )


async def _refused_value(request: Request, exc: Exception) -> Response:
    # The database refused a value that passed validation (PostgreSQL text
    # cannot hold NUL). A client error, but the batch holding it was not stored.
    log.warning("store refused a value: %s", type(exc).__name__)
    return error_response(
        request.url.path,
        400,
        str(ErrorCode.INVALID_FIELD),
        "the store refused a value in this request (e.g. a NUL character in an identifier); "
        "the batch containing it was not stored: fix it and resend the request "
        "(events already stored are reported as duplicates)",
    )


async def _database_error(request: Request, exc: Exception) -> Response:
    # Lost connections and SQLite lock timeouts are transient: say "retry", not "bug".
    log.warning("database unavailable: %s", type(exc).__name__)
    return error_response(
        request.url.path,
        503,
        str(ErrorCode.STORE_UNAVAILABLE),
        "the store is temporarily unavailable; retry the request",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(MeterlineError, _meterline_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sqlalchemy.exc.OperationalError, _database_error)
    app.add_exception_handler(sqlalchemy.exc.DataError, _refused_value)
    app.add_exception_handler(psycopg.DataError, _refused_value)
    app.add_middleware(CatchAll)


class CatchAll:
    """Last line of defence: any unexpected exception is logged here, once, and
    the client gets a 500 envelope with no internals in it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a clean answer; the server drops the connection
                raise
            response = error_response(
                str(scope.get("path", "")), 500, INTERNAL, "internal server error"
            )
            await response(scope, receive, send)
