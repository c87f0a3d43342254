"""Usage queries and event retraction (admin).

`GET /v1/usage` takes the parameters of `meterline usage` and answers with
the same JSON; `POST /v1/retractions` is `meterline retract --json`.
"""

from __future__ import annotations

from typing import Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import (
    Param,
    bad,
    blocking,
    instant,
    json_body,
    json_response,
    parameters,
    required_text,
    text_param,
)
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext
from meterline.domain.events import DEFAULT_SOURCE, MAX_ID_LENGTH
from meterline.domain.timestamps import format_us, from_datetime, parse_duration
from meterline.services.retraction import retract_event
from meterline.services.usage import query_usage

_USAGE_PARAMS = parameters(
    Param("customer", "Customer id.", required=True),
    Param("meter", "Meter code.", required=True),
    Param(
        "from",
        "Start, inclusive (RFC 3339, on a window boundary).",
        {"type": "string", "format": "date-time"},
        required=True,
    ),
    Param(
        "to",
        "End, exclusive (RFC 3339, on a window boundary).",
        {"type": "string", "format": "date-time"},
        required=True,
    ),
    Param("window", "Roll windows up to this size (a multiple of the meter's): 1m, 1h, 1d."),
)


class RetractRequest(msgspec.Struct, forbid_unknown_fields=True):
    event_id: str
    reason: str
    source: str = DEFAULT_SOURCE


_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
_RETRACT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["event_id", "reason"],
                "properties": {
                    "event_id": _ID,
                    "source": {**_ID, "default": DEFAULT_SOURCE},
                    "reason": {"type": "string", "minLength": 1},
                },
                "additionalProperties": False,
                # The key of the native Event example: retracting what was sent.
                "example": {
                    "event_id": "evt_001",
                    "source": "gateway",
                    "reason": "sent twice by the gateway",
                },
            }
        }
    },
}


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["usage"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    @api.get(
        "/v1/usage",
        operation_id="queryUsage",
        summary="Usage per event-time window and the range total (admin)",
        description="Same parameters and JSON as `meterline usage --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={**_USAGE_PARAMS, **oa.SECURED},
        responses={
            200: {"description": "Windows, groups and total.", **oa.json_body(oa.ref("Usage"))},
            **oa.errors(
                {
                    400: "A missing or invalid parameter (e.g. not on a window boundary).",
                    404: "No such meter (UNKNOWN_METER).",
                }
            ),
        },
    )
    async def usage(request: Request) -> Response:
        customer = required_text(request, "customer")
        meter = required_text(request, "meter")
        from_us = instant("from", required_text(request, "from"))
        to_us = instant("to", required_text(request, "to"))
        window = text_param(request, "window")
        try:
            window_us = parse_duration(window) if window else None
        except ValueError as exc:
            raise bad(f"window: {exc}", parameter="window") from None

        def work() -> dict[str, Any]:
            with ctx.handle.ready_store().read() as conn:
                return query_usage(
                    conn,
                    customer=customer,
                    meter_code=meter,
                    from_us=from_us,
                    to_us=to_us,
                    now_us=from_datetime(ctx.clock.now()),
                    window_us=window_us,
                )

        return json_response(await blocking(ctx, work))

    @api.post(
        "/v1/retractions",
        operation_id="retractEvent",
        summary="Retract an event by key, with a reason (admin)",
        description=(
            "Same as `meterline retract --json`. The event stays in the store and stops "
            "counting from the retraction's seq; retracting twice keeps the first record."
        ),
        dependencies=admin,
        response_class=Response,
        openapi_extra={"requestBody": _RETRACT_BODY, **oa.SECURED},
        responses={
            200: {"description": "The retraction.", **oa.json_body(oa.ref("Retraction"))},
            **oa.errors(
                {
                    400: "An invalid body.",
                    404: "No such event (EVENT_NOT_FOUND).",
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                }
            ),
        },
    )
    async def retract(request: Request) -> Response:
        body = await json_body(request, ctx, RetractRequest, optional=False)
        for name, value in (("event_id", body.event_id), ("source", body.source)):
            if not value or len(value) > MAX_ID_LENGTH:
                raise bad(f"{name} must be 1 to {MAX_ID_LENGTH} characters", parameter=name)
        if not body.reason.strip():
            raise bad("a retraction needs a reason", parameter="reason")

        def work() -> dict[str, Any]:
            now_us = from_datetime(ctx.clock.now())
            r = retract_event(
                ctx.handle.ready_store(), body.source, body.event_id, body.reason, now_us
            )
            return {
                "source": r.source,
                "event_id": r.event_id,
                "seq": r.seq,
                "event_seq": r.event_seq,
                "reason": r.reason,
                "retracted_at": format_us(r.retracted_at),
                "already_retracted": r.already,
            }

        return json_response(await blocking(ctx, work))

    return api
