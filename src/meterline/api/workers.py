"""`serve --workers N`: the app factory each uvicorn worker process calls.

uvicorn starts N processes (spawn) that share the listening socket; each one
imports this module and builds its own app, so each opens its own store and
connection pool. Settings travel in the environment (inherited by the
children), never in module state of the parent.

On PostgreSQL several writer processes are safe: each ingest transaction takes
the knowledge-sequence row lock as its last step (DESIGN §2). SQLite has one
writer per file, so N > 1 buys no write throughput and would queue requests on
the file lock (busy timeout 60 s); `serve` refuses it (`check_workers`).
"""

from __future__ import annotations

import os
import secrets

from fastapi import FastAPI

from meterline.api.app import create_app
from meterline.api.auth import KeyRing
from meterline.domain.clock import Clock, FixedClock, SystemClock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.store.database import engine_url

ENV_DB = "METERLINE_SERVE_DB"
ENV_NOW = "METERLINE_SERVE_NOW"
ENV_MAX_BODY = "METERLINE_SERVE_MAX_BODY_BYTES"
ENV_WEBHOOKS = "METERLINE_SERVE_WEBHOOKS"


def check_workers(db_url: str, workers: int) -> None:
    """Refuse several server processes on SQLite (one writer per file)."""
    if workers > 1 and not engine_url(db_url).startswith("postgresql"):
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"--workers {workers} needs PostgreSQL: SQLite has one writer per file, "
            "so serve it with --workers 1",
        )


def export_settings(db_url: str, now: str | None, max_body_bytes: int, webhooks: bool) -> None:
    """Put the settings where the worker processes will find them."""
    os.environ[ENV_DB] = db_url
    os.environ[ENV_WEBHOOKS] = "1" if webhooks else "0"
    os.environ[ENV_MAX_BODY] = str(max_body_bytes)
    from meterline.console.share import MIN_SECRET_BYTES, SECRET_ENV

    if len(os.environ.get(SECRET_ENV, "").encode()) < MIN_SECRET_BYTES:
        # One random console secret for all the workers (a share link signed by one
        # must open on any); like a single process's, it ends when the server stops.
        os.environ[SECRET_ENV] = secrets.token_urlsafe(32)
    if now is None:
        os.environ.pop(ENV_NOW, None)
    else:
        os.environ[ENV_NOW] = now


def app_from_env() -> FastAPI:
    """The factory uvicorn calls in each worker (`--factory`)."""
    now = os.environ.get(ENV_NOW)
    clock: Clock = SystemClock() if not now else FixedClock(to_datetime(parse_rfc3339(now)))
    return create_app(
        os.environ[ENV_DB],
        clock,
        KeyRing.from_env(),
        max_body_bytes=int(os.environ[ENV_MAX_BODY]),
        # Every worker may dispatch: deliveries are claimed with leases (SKIP LOCKED).
        dispatch_webhooks=os.environ.get(ENV_WEBHOOKS, "0") == "1",
    )
