"""Webhook endpoints and deliveries over HTTP (admin), and the dispatcher that
`meterline serve` runs in a background thread (DESIGN §14).

The routes call the service functions the `meterline webhooks` commands call
and answer with the same JSON. Adding an endpoint and replaying a message are
written to the audit trail with the API key's name as the actor.
"""

from __future__ import annotations

import logging
import threading

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.adapt import (
    Param,
    bad,
    blocking,
    bool_param,
    int_param,
    json_body,
    json_response,
    parameters,
    path_param,
    text_param,
)
from meterline.api.auth import Scope, require
from meterline.api.context import AppContext, StoreHandle
from meterline.domain.clock import SystemClock
from meterline.domain.timestamps import from_datetime
from meterline.services import webhooks
from meterline.webhooks.events import EventType

log = logging.getLogger("meterline.webhooks")

STR: oa.Schema = {"type": "string"}
NSTR: oa.Schema = {"type": ["string", "null"]}
INT: oa.Schema = {"type": "integer"}
_TYPES: oa.Schema = {
    "type": "array",
    "items": {"type": "string", "enum": [t.value for t in EventType]},
}


def _obj(props: dict[str, oa.Schema], required: list[str] | None = None) -> oa.Schema:
    return {
        "type": "object",
        "required": required if required is not None else list(props),
        "properties": props,
    }


_ENDPOINT_PROPS: dict[str, oa.Schema] = {
    "id": INT,
    "url": STR,
    "event_types": _TYPES,
    "enabled": {"type": "boolean"},
    "description": STR,
    "created_at": {"type": "string", "format": "date-time"},
}
_ATTEMPT = _obj(
    {
        "attempt": INT,
        "started_at": STR,
        "latency_us": INT,
        "status_code": {"type": ["integer", "null"]},
        "response_excerpt": STR,
        "error": NSTR,
        "outcome": {"type": "string", "enum": ["success", "failure"]},
        "dispatcher": STR,
    }
)
_DELIVERY_PROPS: dict[str, oa.Schema] = {
    "id": INT,
    "message_id": STR,
    "type": STR,
    "endpoint_id": INT,
    "status": {"type": "string", "enum": ["pending", "delivered", "failed"]},
    "attempts": INT,
    "next_attempt_at": NSTR,
    "created_at": STR,
    "finished_at": NSTR,
}

WEBHOOK_SCHEMAS: dict[str, oa.Schema] = {
    "WebhookEndpoint": _obj(_ENDPOINT_PROPS),
    "WebhookEndpointCreated": _obj(
        {**_ENDPOINT_PROPS, "secret": {**STR, "description": "whsec_...; shown only here."}}
    ),
    "WebhookDelivery": _obj(
        {**_DELIVERY_PROPS, "attempts_log": {"type": "array", "items": _ATTEMPT}},
        list(_DELIVERY_PROPS),
    ),
    "WebhookReplay": _obj({"message_id": STR, "deliveries": {"type": "array", "items": INT}}),
}


class EndpointRequest(msgspec.Struct, forbid_unknown_fields=True):
    url: str
    event_types: list[str] = []
    secret: str | None = None
    description: str = ""


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    endpoint: int | None = None


_ENDPOINT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["url"],
                "additionalProperties": False,
                "properties": {
                    "url": {"type": "string", "minLength": 1, "description": "http(s) URL."},
                    "event_types": {**_TYPES, "description": "Empty or absent: every type."},
                    "secret": {"type": "string", "description": "whsec_<base64>; default: new."},
                    "description": {"type": "string"},
                },
            }
        }
    },
}
_REPLAY_BODY = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"endpoint": {"type": "integer", "description": "Only this one."}},
            }
        }
    },
}
_BODY_ERRORS = {
    400: "An invalid body.",
    413: "The body exceeds the configured limit.",
    415: "Unsupported Content-Type.",
}


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["webhooks"])
    admin = [Depends(require(Scope.ADMIN, ctx.keys))]

    def now_us() -> int:
        return from_datetime(ctx.clock.now())

    @api.post(
        "/v1/webhooks/endpoints",
        operation_id="addWebhookEndpoint",
        summary="Register a webhook endpoint (admin)",
        description="Same as `meterline webhooks add --json`. The secret is answered only here.",
        dependencies=admin,
        response_class=Response,
        status_code=201,
        openapi_extra={"requestBody": _ENDPOINT_BODY, **oa.SECURED},
        responses={
            201: {"description": "The endpoint.", **oa.json_body(oa.ref("WebhookEndpointCreated"))},
            **oa.errors(_BODY_ERRORS),
        },
    )
    async def add(request: Request) -> Response:
        body = await json_body(request, ctx, EndpointRequest, optional=False)
        ep = await blocking(
            ctx,
            lambda: webhooks.add_endpoint(
                ctx.handle.ready_store(),
                body.url,
                body.event_types,
                now_us(),
                body.secret,
                body.description,
            ),
        )
        return json_response(ep.to_dict(reveal_secret=True), 201)

    @api.get(
        "/v1/webhooks/endpoints",
        operation_id="listWebhookEndpoints",
        summary="Registered webhook endpoints (admin)",
        description="Same as `meterline webhooks list --json` (secrets are not shown).",
        dependencies=admin,
        response_class=Response,
        openapi_extra=oa.SECURED,
        responses={
            200: {
                "description": "The endpoints.",
                **oa.json_body({"type": "array", "items": oa.ref("WebhookEndpoint")}),
            },
            **oa.errors({}),
        },
    )
    async def list_endpoints() -> Response:
        eps = await blocking(ctx, lambda: webhooks.list_endpoints(ctx.handle.ready_store()))
        return json_response([e.to_dict() for e in eps])

    def toggle_route(verb: str, enabled: bool) -> None:
        @api.post(
            f"/v1/webhooks/endpoints/{{endpoint_id}}/{verb}",
            operation_id=f"{verb}WebhookEndpoint",
            summary=f"{verb.title()} a webhook endpoint (admin)",
            description=f"Same as `meterline webhooks {verb} ID --json`; audited.",
            dependencies=admin,
            response_class=Response,
            openapi_extra={
                "parameters": [
                    {
                        **path_param("endpoint_id", "The endpoint id."),
                        "schema": {"type": "integer", "minimum": 1},
                    }
                ],
                **oa.SECURED,
            },
            responses={
                200: {"description": "The endpoint.", **oa.json_body(oa.ref("WebhookEndpoint"))},
                **oa.errors(
                    {400: "Not an endpoint id.", 404: "No such endpoint (WEBHOOK_NOT_FOUND)."}
                ),
            },
        )
        async def toggle(request: Request) -> Response:
            raw = request.path_params["endpoint_id"]
            if not (raw.isascii() and raw.isdigit() and len(raw) <= 18 and int(raw) >= 1):
                raise bad("endpoint_id must be a positive integer", parameter="endpoint_id")
            ep = await blocking(
                ctx,
                lambda: webhooks.set_enabled(ctx.handle.ready_store(), int(raw), enabled, now_us()),
            )
            return json_response(ep.to_dict())

    toggle_route("disable", False)
    toggle_route("enable", True)

    @api.get(
        "/v1/webhooks/deliveries",
        operation_id="listWebhookDeliveries",
        summary="Webhook deliveries, newest first (admin)",
        description="Same as `meterline webhooks deliveries --json`.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            **parameters(
                Param("message", "Only this message id."),
                Param(
                    "status",
                    "Only this status.",
                    {"type": "string", "enum": ["pending", "delivered", "failed"]},
                ),
                Param(
                    "limit",
                    "At most this many.",
                    {"type": "integer", "minimum": 1, "maximum": 10000},
                ),
                Param("attempts", "Include the attempt log.", {"type": "boolean"}),
            ),
            **oa.SECURED,
        },
        responses={
            200: {
                "description": "The deliveries.",
                **oa.json_body({"type": "array", "items": oa.ref("WebhookDelivery")}),
            },
            **oa.errors({400: "An invalid parameter."}),
        },
    )
    async def list_deliveries(request: Request) -> Response:
        message = text_param(request, "message")
        status = text_param(request, "status")
        limit = int_param(request, "limit", 50, 1, 10_000) or 50
        with_attempts = bool_param(request, "attempts")
        rows = await blocking(
            ctx,
            lambda: webhooks.deliveries(
                ctx.handle.ready_store(), message, status, limit, with_attempts
            ),
        )
        return json_response(rows)

    @api.post(
        "/v1/webhooks/messages/{message_id}/replay",
        operation_id="replayWebhookMessage",
        summary="Send a recorded webhook message again (admin)",
        description="Same as `meterline webhooks replay --json`: new deliveries, audited.",
        dependencies=admin,
        response_class=Response,
        openapi_extra={
            "requestBody": _REPLAY_BODY,
            "parameters": [path_param("message_id", "The message (webhook-id).")],
            **oa.SECURED,
        },
        responses={
            200: {"description": "The new deliveries.", **oa.json_body(oa.ref("WebhookReplay"))},
            **oa.errors({**_BODY_ERRORS, 404: "No such message or endpoint (WEBHOOK_NOT_FOUND)."}),
        },
    )
    async def replay(request: Request) -> Response:
        message_id = request.path_params["message_id"]
        body = await json_body(request, ctx, ReplayRequest, optional=True)
        ids = await blocking(
            ctx,
            lambda: webhooks.replay(ctx.handle.ready_store(), message_id, now_us(), body.endpoint),
        )
        return json_response({"message_id": message_id, "deliveries": ids})

    return api


class BackgroundDispatcher:
    """The dispatcher thread of `meterline serve` (off with --no-webhooks). It
    waits for the store to be ready, then delivers until the app shuts down."""

    def __init__(self, handle: StoreHandle, idle_s: float = 1.0) -> None:
        self.handle = handle
        self.idle_s = idle_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                store = self.handle.ready_store()
            except Exception:  # not ready yet: /readyz says so; try again shortly
                self.stop.wait(self.idle_s)
                continue
            log.info("webhook dispatcher started")
            # The wall clock, even when --now pins the receiving clock: receivers
            # check webhook-timestamp against theirs (Standard Webhooks).
            webhooks.Dispatcher(store, SystemClock()).run(self.stop, self.idle_s)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
