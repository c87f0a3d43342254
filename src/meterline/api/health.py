"""Probes, without auth: /healthz (the process answers) and /readyz (the store
answers and has the current schema, so requests can succeed).

Liveness never touches the database, so an orchestrator does not restart a
healthy server because PostgreSQL blinked; readiness does, to stop routing to
a server that cannot store anything.
"""

from __future__ import annotations

import anyio
import msgspec
from fastapi import APIRouter, Request
from fastapi.responses import Response

from meterline.api import openapi as oa
from meterline.api.context import AppContext


def router(ctx: AppContext) -> APIRouter:
    api = APIRouter(tags=["operations"])

    @api.get(
        "/healthz",
        operation_id="healthz",
        summary="Liveness (no auth)",
        response_class=Response,
        responses={200: {"description": "The server is up.", **oa.json_body(oa.ref("Health"))}},
    )
    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @api.get(
        "/readyz",
        operation_id="readyz",
        summary="Readiness: store reachable and initialised (no auth)",
        response_class=Response,
        responses={
            200: {"description": "Ready to serve.", **oa.json_body(oa.ref("Ready"))},
            503: oa.error("The store is unreachable or not initialised."),
        },
    )
    async def readyz(request: Request) -> Response:
        # Default thread pool, not the ingest limiter: a busy server still answers probes.
        revision = await anyio.to_thread.run_sync(ctx.handle.probe)
        body = msgspec.json.encode({"status": "ready", "schema": revision})
        return Response(body, media_type="application/json")

    return api
