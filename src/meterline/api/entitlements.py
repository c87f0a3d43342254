"""Entitlement checks and recorded alerts over HTTP (DESIGN §13).

`GET /v1/customers/{id}/entitlements/{feature}` and `.../entitlements` answer
with the JSON of `meterline entitlements --json`; `GET /v1/alerts` with that
of `meterline alerts list --json`. Admin scope, like the other billing reads.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import bad, blocking, json_response, path_param, text_param
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext
from meterline.domain.timestamps import from_datetime
from meterline.services import alerts, entitlements

_NUM = {"type": ["string", "null"], "description": "A decimal string."}
ANSWER: dict[str, Any] = {
    "type": "object",
    "required": ["feature", "has_access", "usage", "limit", "balance", "overage", "period"],
    "properties": {
        "customer_id": {"type": "string"},
        "feature": {"type": "string"},
        "meter": {"type": ["string", "null"]},
        "has_access": {"type": "boolean"},
        "usage": _NUM,
        "limit": _NUM,
        "balance": _NUM,
        "overage": _NUM,
        "enforcement": {"type": ["string", "null"], "enum": ["hard", "soft", None]},
        "reason": {"type": "string"},
        "period": {"type": "object"},
        "as_of_seq": {"type": "integer"},
    },
}
_LIST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "string"},
        "period": {"type": "object"},
        "as_of_seq": {"type": "integer"},
        "entitlements": {"type": "array", "items": ANSWER},
    },
}
_ALERTS: dict[str, Any] = {
    "type": "object",
    "properties": {"alerts": {"type": "array", "items": {"type": "object"}}},
}


def _id(request: Request, name: str) -> str:
    value = str(request.path_params[name])
    if "\x00" in value or len(value) > 256:
        raise bad(f"{name} cannot be stored (a NUL character or too long)", parameter=name)
    return value


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["entitlements"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]
    customer_param = path_param("customer_id", "Customer id.")

    @api.get(
        "/v1/customers/{customer_id}/entitlements/{feature}",
        operation_id="checkEntitlement",
        summary="May the customer use this feature now? (admin)",
        description="Same JSON as `meterline entitlements CUSTOMER FEATURE --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            "parameters": [customer_param, path_param("feature", "Feature code.")],
            **oa.SECURED,
        },
        responses={
            200: {"description": "The decision.", **oa.json_body(ANSWER)},
            **oa.errors(
                {
                    400: "An id that cannot be stored.",
                    404: "No such customer (UNKNOWN_CUSTOMER) or feature (UNKNOWN_FEATURE).",
                }
            ),
        },
    )
    async def one(request: Request) -> Response:
        customer = _id(request, "customer_id")
        feature = _id(request, "feature")

        def work() -> dict[str, Any]:
            now_us = from_datetime(ctx.clock.now())
            with ctx.handle.ready_store().read() as conn:
                return entitlements.check(conn, customer, feature, now_us)

        return json_response(await blocking(ctx, work))

    @api.get(
        "/v1/customers/{customer_id}/entitlements",
        operation_id="listEntitlements",
        summary="Every feature's entitlement for the customer (admin)",
        description="Same JSON as `meterline entitlements CUSTOMER --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={"parameters": [customer_param], **oa.SECURED},
        responses={
            200: {"description": "One answer per catalog feature.", **oa.json_body(_LIST)},
            **oa.errors(
                {400: "An id that cannot be stored.", 404: "No such customer (UNKNOWN_CUSTOMER)."}
            ),
        },
    )
    async def every(request: Request) -> Response:
        customer = _id(request, "customer_id")

        def work() -> dict[str, Any]:
            now_us = from_datetime(ctx.clock.now())
            with ctx.handle.ready_store().read() as conn:
                return entitlements.check_all(conn, customer, now_us)

        return json_response(await blocking(ctx, work))

    @api.get(
        "/v1/alerts",
        operation_id="listAlerts",
        summary="Recorded alerts, newest first (admin)",
        description="Same JSON as `meterline alerts list --json`; `customer` filters.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            "parameters": [
                {
                    "name": "customer",
                    "in": "query",
                    "required": False,
                    "description": "Only this customer's alerts.",
                    "schema": {"type": "string"},
                }
            ],
            **oa.SECURED,
        },
        responses={
            200: {"description": "The alerts.", **oa.json_body(_ALERTS)},
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def listing(request: Request) -> Response:
        customer = text_param(request, "customer")

        def work() -> dict[str, Any]:
            with ctx.handle.ready_store().read() as conn:
                return alerts.list_alerts(conn, customer)

        return json_response(await blocking(ctx, work))

    return api
