"""`GET /v1/quarantine` (admin): the rejected inputs, oldest first, exactly as sent.

Operators page through it to fix and replay what producers got wrong. The
payload is returned as text when it is UTF-8 and always as base64, so even a
binary or truncated input can be recovered byte for byte.
"""

from __future__ import annotations

from typing import Any

import anyio
import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext, StoreHandle
from meterline.api.errors import ApiError
from meterline.domain.errors import ErrorCode
from meterline.services import quarantine as quarantine_service

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_PARAMETERS = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": "Entries per page.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    },
    {
        "name": "after",
        "in": "query",
        "required": False,
        "description": "Return entries with an id greater than this (from `next_after`).",
        "schema": {"type": "integer", "minimum": 0, "default": 0},
    },
]


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400,
            str(ErrorCode.INVALID_ARGUMENT),
            f"{name} must be an integer from {low} to {high}",
        )
    return value


def read_page(handle: StoreHandle, after: int, limit: int) -> dict[str, Any]:
    return quarantine_service.read_page(handle.ready_store(), after, limit)


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get(
        "/v1/quarantine",
        operation_id="listQuarantine",
        summary="List quarantined (rejected) inputs (admin)",
        dependencies=[Depends(require(Scope.ADMIN, ctx.keys))],
        response_class=Response,
        openapi_extra={"parameters": _PARAMETERS, **oa.SECURED},
        responses={
            200: {
                "description": "One page, oldest first.",
                **oa.json_body(oa.ref("QuarantinePage")),
            },
            **oa.errors({400: "An invalid query parameter."}),
        },
    )
    async def list_quarantine(request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        after = _int_param(request, "after", 0, 0, 2**63 - 1)
        page = await anyio.to_thread.run_sync(read_page, ctx.handle, after, limit)
        return Response(msgspec.json.encode(page), media_type="application/json")

    return api
