"""Credit grants and balances (admin): `meterline credits` and `meterline balance`
over HTTP (DESIGN §13). Each route calls the service its CLI command calls and
answers the same JSON as the command's `--json`."""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import blocking, json_body, json_response, parameters, path_param
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext
from meterline.domain.timestamps import from_datetime
from meterline.services import credits

_MONEY = {"type": "string", "description": "Decimal string, the currency's minor digits."}
_NMONEY = {"type": ["string", "null"]}
_INSTANT = {"type": "string", "format": "date-time"}
_NINSTANT = {"type": ["string", "null"], "format": "date-time"}

_GRANT: oa.Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "customer_id": {"type": "string"},
        "source": {"type": "string", "enum": ["grant", "catalog"]},
        "seq": {"type": ["integer", "null"]},
        "kind": {"type": "string", "enum": ["paid", "promotional"]},
        "currency": {"type": "string"},
        "amount": _MONEY,
        "priority": {"type": "integer"},
        "effective_at": _INSTANT,
        "expires_at": _NINSTANT,
        "rollover": _NMONEY,
        "used": _MONEY,
        "expired": _MONEY,
        "voided": _MONEY,
        "available": _MONEY,
        "status": {"type": "string", "enum": ["active", "used", "expired", "void", "scheduled"]},
        "void_reason": {"type": ["string", "null"]},
    },
}
_BALANCE: oa.Schema = {
    "type": "object",
    "properties": {
        "customer_id": {"type": "string"},
        "currency": {"type": "string"},
        "as_of_seq": {"type": "integer"},
        "at": _INSTANT,
        "granted": _MONEY,
        "used": _MONEY,
        "expired": _MONEY,
        "voided": _MONEY,
        "available": _MONEY,
        "projected": {
            **_MONEY,
            "description": "available minus the open period's amount due, rated as known "
            "now (negative: the credit will not cover it)",
        },
        "open_period": {"type": ["object", "null"]},
        "grants": {"type": "array", "items": _GRANT},
    },
}


class GrantRequest(msgspec.Struct, forbid_unknown_fields=True):
    amount: str
    id: str | None = None
    priority: int | None = None
    expires_at: str | None = None
    effective_at: str | None = None
    rollover: str | None = None
    kind: str = "paid"


class VoidRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: str


def _body(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": required,
                    "properties": properties,
                    "additionalProperties": False,
                }
            }
        },
    }


_GRANT_BODY = _body(
    ["amount"],
    {
        "amount": {**_MONEY, "example": "100.00"},
        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,31}$"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "expires_at": _INSTANT,
        "effective_at": _INSTANT,
        "rollover": _MONEY,
        "kind": {"type": "string", "enum": ["paid", "promotional"], "default": "paid"},
    },
)
_VOID_BODY = _body(["reason"], {"reason": {"type": "string", "minLength": 1}})
_CUSTOMER = path_param("customer_id", "The customer's id.")
_GRANT_ID = path_param("grant_id", "The credit grant's id.")
_WRITE_ERRORS = {
    400: "An invalid body (INVALID_ARGUMENT, INVALID_JSON).",
    413: "The body exceeds the configured limit.",
    415: "Unsupported Content-Type.",
}


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["credits"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    def now_us() -> int:
        return from_datetime(ctx.clock.now())

    def store() -> Any:
        return ctx.handle.ready_store()

    @api.get(
        "/v1/customers/{customer_id}/balance",
        operation_id="creditBalance",
        summary="A customer's credit balance (admin)",
        description="Same as `meterline balance CUSTOMER --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={**parameters(_CUSTOMER), **oa.SECURED},
        responses={
            200: {"description": "The balance.", **oa.json_body(_BALANCE)},
            **oa.errors({404: "No such customer (UNKNOWN_CUSTOMER)."}),
        },
    )
    async def balance(request: Request) -> Response:
        customer = request.path_params["customer_id"]
        return json_response(
            await blocking(ctx, lambda: credits.balance(store(), customer, now_us()))
        )

    @api.get(
        "/v1/customers/{customer_id}/credits",
        operation_id="listCredits",
        summary="A customer's credit grants, in consumption order (admin)",
        description="Same as `meterline credits list CUSTOMER --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={**parameters(_CUSTOMER), **oa.SECURED},
        responses={
            200: {
                "description": "The grants.",
                **oa.json_body({"type": "array", "items": _GRANT}),
            },
            **oa.errors({404: "No such customer (UNKNOWN_CUSTOMER)."}),
        },
    )
    async def list_credits(request: Request) -> Response:
        customer = request.path_params["customer_id"]
        return json_response(
            await blocking(ctx, lambda: credits.list_grants(store(), customer, now_us()))
        )

    @api.post(
        "/v1/customers/{customer_id}/credits",
        operation_id="grantCredit",
        summary="Grant credit to a customer (admin)",
        description="Same as `meterline credits grant CUSTOMER --json`; answers 201 and the grant.",
        dependencies=admin,
        response_class=Response,
        status_code=201,
        openapi_extra={"requestBody": _GRANT_BODY, **parameters(_CUSTOMER), **oa.SECURED},
        responses={
            201: {"description": "The grant.", **oa.json_body(_GRANT)},
            **oa.errors(
                {
                    **_WRITE_ERRORS,
                    404: "No such customer (UNKNOWN_CUSTOMER).",
                    409: "A grant with that id exists (CREDIT_GRANT_EXISTS).",
                }
            ),
        },
    )
    async def grant(request: Request) -> Response:
        customer = request.path_params["customer_id"]
        body = await json_body(request, ctx, GrantRequest, optional=False)

        def work() -> dict[str, Any]:
            return credits.grant(
                store(),
                customer,
                body.amount,
                now_us(),
                priority=body.priority,
                expires_at=body.expires_at,
                rollover=body.rollover,
                kind=body.kind,
                effective_at=body.effective_at,
                grant_id=body.id,
            )

        return json_response(await blocking(ctx, work), 201)

    @api.post(
        "/v1/credits/{grant_id}/void",
        operation_id="voidCredit",
        summary="Void a credit grant (admin)",
        description="Same as `meterline credits void GRANT_ID --reason ... --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={"requestBody": _VOID_BODY, **parameters(_GRANT_ID), **oa.SECURED},
        responses={
            200: {"description": "The grant, now void.", **oa.json_body(_GRANT)},
            **oa.errors(
                {
                    **_WRITE_ERRORS,
                    404: "No such grant (CREDIT_GRANT_NOT_FOUND).",
                    409: "Already void (CREDIT_GRANT_VOID).",
                }
            ),
        },
    )
    async def void(request: Request) -> Response:
        grant_id = request.path_params["grant_id"]
        body = await json_body(request, ctx, VoidRequest, optional=False)
        return json_response(
            await blocking(ctx, lambda: credits.void(store(), grant_id, body.reason, now_us()))
        )

    return api
