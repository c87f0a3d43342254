"""Catalog and customers (admin): apply a catalog, read what is in force.

`POST /v1/catalog` is `meterline catalog apply` over HTTP: the body is the
same YAML or JSON document, applied in one transaction by the same service
function, answered with the same report. Reading returns the catalog as the
store knows it now, in catalog form (meters and customers as they would be
applied; price books with every recorded version and the seq it was learnt at).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import blocking, json_response, path_param
from meterline.api.auth import Scope, require
from meterline.api.body import media_type, read_body, unsupported
from meterline.api.context import AppContext, StoreHandle
from meterline.api.errors import ApiError
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.domain.timestamps import from_datetime
from meterline.services.catalog import _DecimalSafeLoader, apply_catalog, validate_shape
from meterline.store.customer_catalog import load_customer, load_customers
from meterline.store.entitlement_catalog import entitlement_sections
from meterline.store.meter_catalog import load_meters
from meterline.store.price_catalog import load_price_book, price_book_codes

log = logging.getLogger("meterline.api")

JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
CATALOG_TYPES = JSON_TYPES + YAML_TYPES

_CATALOG_BODY = {
    "required": True,
    "description": "A catalog (DESIGN §12), as JSON or YAML.",
    "content": {
        "application/json": {"schema": oa.ref("Catalog")},
        **{kind: {"schema": {"type": "string"}} for kind in YAML_TYPES},
    },
}


_SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "required": ["price_book", "start", "end"],
    "properties": {
        "price_book": {"type": "string"},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": ["string", "null"], "format": "date-time"},
        "billing_cycle": {"type": "string", "description": "Only when not `month`."},
        "anchor": {"type": "string", "description": "Only when not `calendar`."},
        "trial_days": {"type": "integer"},
        "trial_usage": {"type": "string"},
        "threshold": {"type": "string", "description": "Progressive billing, a decimal."},
    },
}
_PLAN_CHANGE: dict[str, Any] = {
    "type": "object",
    "required": ["customer_id", "ended", "started", "recorded"],
    "additionalProperties": False,
    "properties": {
        "customer_id": {"type": "string"},
        "ended": _SUBSCRIPTION,
        "started": _SUBSCRIPTION,
        "recorded": {
            "type": "boolean",
            "description": "False when the same change was already recorded (a retry).",
        },
    },
}


def parse_catalog(raw: bytes, kind: str) -> dict[str, Any]:
    """Decode a catalog body as `catalog apply` reads a file: numbers stay exact."""
    try:
        doc = decode_json(raw) if kind in JSON_TYPES else yaml.load(raw, Loader=_DecimalSafeLoader)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = "JSON" if kind in JSON_TYPES else "YAML"
        raise ApiError(
            400, str(ErrorCode.INVALID_INPUT), f"the body is not valid {what}: {first}"
        ) from None
    return validate_shape(doc)


def _apply(ctx: AppContext, doc: dict[str, Any]) -> dict[str, Any]:
    store = ctx.handle.ready_store()
    try:
        report = apply_catalog(store, doc, from_datetime(ctx.clock.now()))
    except (ValueError, TypeError, KeyError) as exc:
        # The catalog parsers signal bad input with MeterlineError; anything
        # else escaping them is a gap in their validation, still bad input.
        log.warning("catalog validation gap: %s: %s", type(exc).__name__, exc)
        raise MeterlineError(ErrorCode.INVALID_CATALOG, f"invalid catalog: {exc}") from None
    return report.to_dict()


def read_catalog(handle: StoreHandle) -> dict[str, Any]:
    store = handle.ready_store()
    with store.read() as conn:
        meters = [m.to_catalog() for m in load_meters(conn)]
        books = [_book(load_price_book(conn, code)) for code in price_book_codes(conn)]
        customers = [c.definition() for c in load_customers(conn)]
        extra = entitlement_sections(conn)
    return {"meters": meters, "price_books": books, "customers": customers, **extra}


def _book(book: Any) -> dict[str, Any]:
    return {
        "code": book.code,
        "currency": book.currency.code,
        "rounding": str(book.rounding),
        "versions": [{**v.definition(), "recorded_seq": v.recorded_seq} for v in book.versions],
    }


def list_customers(handle: StoreHandle) -> list[dict[str, Any]]:
    with handle.ready_store().read() as conn:
        return [c.definition() for c in load_customers(conn)]


def show_customer(handle: StoreHandle, customer_id: str) -> dict[str, Any]:
    with handle.ready_store().read() as conn:
        return load_customer(conn, customer_id).definition()


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["catalog"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    @api.post(
        "/v1/catalog",
        operation_id="applyCatalog",
        summary="Apply a catalog: meters, price books, customers (admin)",
        description=(
            "Same as `meterline catalog apply`: one transaction, idempotent; an existing "
            "price version is never changed (409 PRICE_VERSION_IMMUTABLE)."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={"requestBody": _CATALOG_BODY, **oa.SECURED},
        responses={
            200: {
                "description": "What was added and what was already there.",
                **oa.json_body(oa.ref("ApplyReport")),
            },
            **oa.errors(
                {
                    400: "The body is not valid JSON/YAML.",
                    409: "A recorded price version or book would change, or a version "
                    "falls in an invoiced period without `retroactive: true`.",
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                    422: "The catalog is invalid (INVALID_CATALOG, with the path at fault).",
                }
            ),
        },
    )
    async def apply(request: Request) -> Response:
        kind = media_type(request)
        if kind not in CATALOG_TYPES:
            raise unsupported(kind, CATALOG_TYPES)
        raw = await read_body(request, ctx.max_body_bytes)
        return json_response(await blocking(ctx, lambda: _apply(ctx, parse_catalog(raw, kind))))

    @api.get(
        "/v1/catalog",
        operation_id="getCatalog",
        summary="The catalog in force: meters, price books with versions, customers (admin)",
        dependencies=admin,
        response_class=Response,
        openapi_extra=oa.SECURED,
        responses={
            200: {
                "description": "The catalog as known now.",
                **oa.json_body(oa.ref("CatalogView")),
            },
            **oa.errors({}),
        },
    )
    async def get_catalog() -> Response:
        return json_response(await blocking(ctx, lambda: read_catalog(ctx.handle)))

    @api.get(
        "/v1/customers",
        operation_id="listCustomers",
        summary="Customers, latest version of each, by id (admin)",
        dependencies=admin,
        response_class=Response,
        openapi_extra=oa.SECURED,
        responses={
            200: {
                "description": "Every customer.",
                **oa.json_body({"type": "array", "items": oa.ref("Customer")}),
            },
            **oa.errors({}),
        },
    )
    async def customers() -> Response:
        return json_response(await blocking(ctx, lambda: list_customers(ctx.handle)))

    @api.get(
        "/v1/customers/{customer_id}",
        operation_id="getCustomer",
        summary="One customer, latest version (admin)",
        dependencies=admin,
        response_class=Response,
        openapi_extra={"parameters": [path_param("customer_id", "Customer id.")], **oa.SECURED},
        responses={
            200: {"description": "The customer.", **oa.json_body(oa.ref("Customer"))},
            **oa.errors(
                {
                    400: "The id cannot be stored (e.g. a NUL character).",
                    404: "No such customer (UNKNOWN_CUSTOMER).",
                }
            ),
        },
    )
    async def customer(request: Request) -> Response:
        customer_id = request.path_params["customer_id"]
        return json_response(await blocking(ctx, lambda: show_customer(ctx.handle, customer_id)))

    @api.post(
        "/v1/customers/{customer_id}/plan-change",
        operation_id="changePlan",
        summary="End the subscription in effect at `at` and start one on `to` (admin)",
        description=(
            "Same as `meterline subscription change CUSTOMER --to BOOK --at TIME --json`: a "
            "new customer version; the unused part of an in-advance fee is credited on the "
            "next invoice. Repeating the same change is a no-op (`recorded`: false)."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            "parameters": [path_param("customer_id", "Customer id.")],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["to", "at"],
                            "additionalProperties": False,
                            "properties": {
                                "to": {"type": "string", "description": "Price book code."},
                                "at": {"type": "string", "format": "date-time"},
                            },
                        }
                    }
                },
            },
            **oa.SECURED,
        },
        responses={
            200: {
                "description": "The ended and the started subscription.",
                **oa.json_body(_PLAN_CHANGE),
            },
            **oa.errors(
                {
                    400: "An invalid body or instant.",
                    404: "No such customer (UNKNOWN_CUSTOMER).",
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                    422: "No subscription at `at` (NO_SUBSCRIPTION), an unknown price book or "
                    "another currency (INVALID_CATALOG).",
                }
            ),
        },
    )
    async def plan_change(request: Request) -> Response:
        from meterline.api.adapt import instant, json_body
        from meterline.services.plan_change import change_plan

        customer_id = request.path_params["customer_id"]
        body = await json_body(request, ctx, PlanChangeRequest, optional=False)
        at_us = instant("at", body.at)
        now_us = from_datetime(ctx.clock.now())
        result = await blocking(
            ctx,
            lambda: change_plan(ctx.handle.ready_store(), customer_id, body.to, at_us, now_us),
        )
        return json_response(result.to_dict())

    return api


class PlanChangeRequest(msgspec.Struct, forbid_unknown_fields=True):
    to: str
    at: str
