"""The operator console served at /console (DESIGN §15): see docs/CONSOLE.md."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from meterline.api.context import AppContext

log = logging.getLogger("meterline.console")


def install(app: FastAPI, ctx: AppContext, secret: bytes | None = None) -> None:
    """Mount the console on `app`, sharing its store, keys and clock.

    `secret` signs share links; by default METERLINE_CONSOLE_SECRET, else a
    random per-process secret (links then end when the server restarts).
    """
    from meterline.console.routes import router
    from meterline.console.sessions import Sessions
    from meterline.console.share import secret_from_env
    from meterline.store.console_sessions import StoredSessions

    if secret is None:
        secret, configured = secret_from_env()
        if not configured:
            log.warning(
                "METERLINE_CONSOLE_SECRET is not set (16+ bytes): share links end on restart"
            )
    app.include_router(
        router(ctx, Sessions(ctx.keys, StoredSessions(ctx.handle.ready_store)), secret)
    )
