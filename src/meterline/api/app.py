"""The HTTP API application factory.

`create_app` builds a self-contained FastAPI app: no module-level state, so
tests and benchmarks can run several against different stores in one process.
The interactive docs pages are disabled because FastAPI loads their assets
from a CDN; the OpenAPI document itself is served at /openapi.json.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from meterline import __version__, console
from meterline.api import (
    billing_routes,
    catalog_routes,
    credit_routes,
    docs_routes,
    entitlements,
    export_routes,
    health,
    ingest_routes,
    ledger_routes,
    metrics,
    openapi,
    proof_routes,
    quarantine_routes,
    usage_routes,
    webhook_routes,
)
from meterline.api.auth import KeyRing
from meterline.api.billing_schemas import BILLING_SCHEMAS
from meterline.api.body import DEFAULT_MAX_BODY_BYTES
from meterline.api.context import AppContext, StoreHandle
from meterline.api.errors import install_error_handlers
from meterline.api.metrics import Metrics
from meterline.domain.clock import Clock
from meterline.domain.events import Limits
from meterline.store.database import safe_url

log = logging.getLogger("meterline.api")

DEFAULT_INGEST_CONCURRENCY = 4

_DESCRIPTION = """\
Usage ingestion and billing for meterline. `/v1/events` takes native events
(JSON object, array or NDJSON) and answers with a per-event summary;
`/api/v1/events` is compatible with OpenMeter's CloudEvents ingest API. The
billing operations (catalog, usage, invoices, explain, rerate, verify) need an
admin key and answer with the same JSON as the CLI's `--json`. Errors use the envelope
`{"error": {"code", "message", "details"}}` (as RFC 7807 problem details
under `/api/`). Authenticate with `Authorization: Bearer KEY`.
"""


def create_app(
    store_url: str,
    clock: Clock,
    api_keys: KeyRing | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    limits: Limits | None = None,
    ingest_concurrency: int = DEFAULT_INGEST_CONCURRENCY,
    dispatch_webhooks: bool = False,
) -> FastAPI:
    """An app serving the store at `store_url`.

    With no `api_keys` every endpoint is open; only bind such an app to
    loopback (`auth.check_bind` enforces that for `meterline serve`).
    """
    if max_body_bytes < 1 or ingest_concurrency < 1:
        raise ValueError("max_body_bytes and ingest_concurrency must be positive")
    keys = api_keys if api_keys is not None else KeyRing()
    handle = StoreHandle(store_url, clock)
    ctx = AppContext(
        handle=handle,
        keys=keys,
        clock=clock,
        limits=limits or Limits(),
        max_body_bytes=max_body_bytes,
        ingest_concurrency=ingest_concurrency,
        metrics=Metrics(handle.readings),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not keys:
            log.warning("no API keys configured: every endpoint is open (loopback only)")
        log.info("serving store %s", safe_url(store_url))
        dispatcher = webhook_routes.BackgroundDispatcher(handle) if dispatch_webhooks else None
        if dispatcher is not None:
            dispatcher.start()
        yield
        if dispatcher is not None:
            dispatcher.close()
        ctx.handle.close()

    app = FastAPI(
        title="meterline",
        version=__version__,
        description=_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.meterline = ctx
    install_error_handlers(app)
    app.include_router(ingest_routes.router(ctx))
    app.include_router(quarantine_routes.router(ctx))
    app.include_router(catalog_routes.router(ctx))
    app.include_router(usage_routes.router(ctx))
    app.include_router(billing_routes.router(ctx))
    app.include_router(ledger_routes.router(ctx))
    app.include_router(webhook_routes.router(ctx))
    app.include_router(export_routes.router(ctx))
    app.include_router(proof_routes.router(ctx))
    app.include_router(credit_routes.router(ctx))  # credit grants and balances (issue 15)
    app.include_router(health.router(ctx))
    app.include_router(entitlements.router(ctx))
    app.include_router(metrics.router(ctx.metrics))
    app.include_router(docs_routes.router("/openapi.json", "meterline"))
    openapi.install(
        app,
        BILLING_SCHEMAS,
        ledger_routes.LEDGER_SCHEMAS,
        webhook_routes.WEBHOOK_SCHEMAS,
        proof_routes.PROOF_SCHEMAS,
    )
    console.install(app, ctx)
    return app
