"""Ingestion endpoints: native (`/v1/events`) and OpenMeter-compatible
CloudEvents (`/api/v1/events`).

Both answer per event and are never all-or-nothing: good events are stored
even when others in the same request are rejected (and quarantined). The
native endpoint says so with a 200 summary; the CloudEvents one answers as
OpenMeter does, 204 when every event was taken and 400 problem details
listing the rejected ones otherwise (the good ones are stored all the same).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.auth import Scope, require
from meterline.api.body import media_type, read_body, unsupported
from meterline.api.context import AppContext, context_of
from meterline.api.errors import EVENTS_REJECTED, PROBLEM_JSON, ApiError, problem
from meterline.api.ingesting import ingest_cloudevents, ingest_native
from meterline.api.native import ACCEPTED_TYPES, NDJSON_TYPES
from meterline.domain.errors import ErrorCode
from meterline.domain.events import DEFAULT_SOURCE, MAX_ID_LENGTH, text_problem
from meterline.ingest.service import IngestOptions, IngestReport

CE_SINGLE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
CE_TYPES = (CE_SINGLE, CE_BATCH, "application/json")

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")

_NATIVE_PARAMETERS = [
    {
        "name": "source",
        "in": "query",
        "required": False,
        "description": "Source for events that name none (default `default`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
    },
    {
        "name": "backfill",
        "in": "query",
        "required": False,
        "description": "Accept events older than the age bound; recorded on the events.",
        "schema": {"type": "boolean", "default": False},
    },
]

_NATIVE_BODY = {
    "required": True,
    "description": "One event, a JSON array of events, or NDJSON (one event per line).",
    "content": {
        "application/json": {
            "schema": {"oneOf": [oa.ref("Event"), {"type": "array", "items": oa.ref("Event")}]}
        },
        **{
            kind: {"schema": {"type": "string", "description": "One JSON event per line."}}
            for kind in NDJSON_TYPES
        },
    },
}

_CE_BODY = {
    "required": True,
    "content": {
        CE_SINGLE: {"schema": oa.ref("CloudEvent")},
        CE_BATCH: {"schema": {"type": "array", "items": oa.ref("CloudEvent")}},
        "application/json": {
            "schema": {
                "oneOf": [oa.ref("CloudEvent"), {"type": "array", "items": oa.ref("CloudEvent")}]
            }
        },
    },
}


def _query_options(request: Request, origin: str) -> IngestOptions:
    params = request.query_params
    source = params.get("source", DEFAULT_SOURCE)
    if not source or len(source) > MAX_ID_LENGTH or text_problem(source) is not None:
        raise ApiError(
            400,
            str(ErrorCode.INVALID_ARGUMENT),
            f"source must be 1 to {MAX_ID_LENGTH} characters, with no NUL",
        )
    flag = params.get("backfill", "false").lower()
    if flag not in _TRUE + _FALSE:
        raise ApiError(400, str(ErrorCode.INVALID_ARGUMENT), "backfill must be true or false")
    ctx = context_of(request)
    return IngestOptions(source=source, backfill=flag in _TRUE, origin=origin, limits=ctx.limits)


async def _run(ctx: AppContext, endpoint: str, work: Callable[[], IngestReport]) -> IngestReport:
    started = time.perf_counter()
    report = await anyio.to_thread.run_sync(work, limiter=ctx.limiter)
    ctx.metrics.record(endpoint, report, time.perf_counter() - started)
    return report


def rejected_message(accepted: int, duplicates: int, rejected: int) -> str:
    """What a partly (or wholly) rejected batch did, without claiming what did not happen."""
    total = accepted + duplicates + rejected
    if rejected == total:
        if total == 1:
            return "the event was rejected; nothing was stored"
        return f"all {total} events were rejected; nothing was stored"
    kept = accepted + duplicates
    were = "was" if kept == 1 else "were"
    return (
        f"{rejected} of {total} events {'was' if rejected == 1 else 'were'} rejected; "
        f"the other {kept} {were} stored (or already stored)"
    )


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["ingestion"])
    can_ingest = [Depends(require(Scope.INGEST, ctx.keys))]

    @api.post(
        "/v1/events",
        operation_id="ingestEventsNative",
        summary="Ingest events (native format)",
        dependencies=can_ingest,
        response_class=Response,
        openapi_extra={
            "requestBody": _NATIVE_BODY,
            "parameters": _NATIVE_PARAMETERS,
            **oa.SECURED,
        },
        responses={
            200: {
                "description": "Per-event outcome; rejected events are quarantined.",
                **oa.json_body(oa.ref("IngestSummary")),
            },
            **oa.errors(
                {
                    400: "The body is not valid JSON, or a query parameter is invalid.",
                    413: "The body exceeds the configured limit.",
                    415: "Unsupported Content-Type.",
                }
            ),
        },
    )
    async def ingest_events(request: Request) -> Response:
        kind = media_type(request)
        if kind not in ACCEPTED_TYPES:
            raise unsupported(kind, ACCEPTED_TYPES)
        options = _query_options(request, "http")
        body = await read_body(request, ctx.max_body_bytes)
        report = await _run(ctx, "native", lambda: ingest_native(ctx.handle, body, kind, options))
        return Response(msgspec.json.encode(report.to_dict()), media_type="application/json")

    @api.post(
        "/api/v1/events",
        operation_id="ingestEvents",
        summary="Ingest CloudEvents (OpenMeter-compatible)",
        dependencies=can_ingest,
        response_class=Response,
        status_code=204,
        openapi_extra={"requestBody": _CE_BODY, **oa.SECURED},
        responses={
            204: {"description": "Every event was stored or was already stored."},
            **oa.errors(
                {
                    400: (
                        "Some events were rejected (`errors` lists them; the others were "
                        "stored), the body is not valid JSON, or the Content-Type is wrong."
                    ),
                    413: "The body exceeds the configured limit.",
                },
                problems=True,
            ),
        },
    )
    async def ingest_cloud_events(request: Request) -> Response:
        kind = media_type(request)
        if kind not in CE_TYPES:
            raise unsupported(kind, CE_TYPES, status=400)  # OpenMeter answers 400 here
        batch = {CE_SINGLE: False, CE_BATCH: True}.get(kind)
        options = IngestOptions(origin="http-cloudevents", limits=ctx.limits)
        body = await read_body(request, ctx.max_body_bytes)
        report = await _run(
            ctx, "cloudevents", lambda: ingest_cloudevents(ctx.handle, body, batch, options)
        )
        if not report.rejected:
            return Response(status_code=204)
        summary = report.to_dict()
        message = rejected_message(report.accepted, report.duplicates, report.rejected)
        extra: dict[str, Any] = {"errors": summary["rejects"]}
        body_out = problem(400, EVENTS_REJECTED, message, summary, extra)
        return Response(msgspec.json.encode(body_out), 400, media_type=PROBLEM_JSON)

    return api
