"""What one app instance owns: its store handle, keys, clock, limits, metrics.

Kept on `app.state` rather than in module globals so several apps (tests,
benchmarks) can live in one process. The store is opened lazily: a server
whose database is down or not yet initialised still starts, answers
/healthz, and reports 503 on /readyz until the store is usable.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import anyio
import sqlalchemy.exc
from fastapi import Request
from sqlalchemy import func, select

from meterline.api.auth import KeyRing
from meterline.api.metrics import Metrics, StoreReadings
from meterline.domain.clock import Clock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Limits
from meterline.domain.timestamps import US_PER_SECOND, from_datetime
from meterline.ingest.service import Ingestor
from meterline.store.database import Store, open_store
from meterline.store.schema import late_arrivals
from meterline.store.window_index import current_watermark
from meterline.wiring import ingestor_for


class StoreHandle:
    """Opens the store on first use and keeps one Ingestor for it (thread-safe)."""

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._ready = False
        self._ingestor: Ingestor | None = None

    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.url)
            return self._store

    def ready_store(self) -> Store:
        """The store, once it is known to have the current schema (checked until it has)."""
        store = self.store()
        if not self._ready:
            store.require_initialised()
            self._ready = True
        return store

    def ingestor(self) -> Ingestor:
        if self._ingestor is not None:
            return self._ingestor
        store = self.ready_store()
        with self._lock:
            if self._ingestor is None:
                self._ingestor = ingestor_for(store, self.clock)
            return self._ingestor

    def probe(self) -> str:
        """Raise unless the store answers and has the current schema; return its revision."""
        try:
            store = self.store()
            store.require_initialised()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise MeterlineError(
                ErrorCode.STORE_UNAVAILABLE, f"store probe failed: {type(exc).__name__}"
            ) from None
        return store.head_revision()

    def readings(self) -> StoreReadings | None:
        """Watermark lag and late arrivals for /metrics; None while the store is not ready."""
        try:
            store = self.ready_store()
            now_us = from_datetime(self.clock.now())
            with store.read() as conn:
                watermark = current_watermark(conn, now_us)
                late = conn.execute(select(func.count()).select_from(late_arrivals)).scalar_one()
        except (MeterlineError, sqlalchemy.exc.SQLAlchemyError):
            return None
        lag = None if watermark is None else (now_us - watermark) / US_PER_SECOND
        return StoreReadings(lag, int(late))

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.dispose()
            self._store = None
            self._ready = False
            self._ingestor = None


@dataclass
class AppContext:
    handle: StoreHandle
    keys: KeyRing
    clock: Clock
    limits: Limits
    max_body_bytes: int
    ingest_concurrency: int
    metrics: Metrics
    admin_concurrency: int = 4
    _limiter: anyio.CapacityLimiter | None = None
    _admin_limiter: anyio.CapacityLimiter | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """Bounds concurrent ingest threads, so bursts queue in the event loop
        instead of exhausting the connection pool. Created lazily because a
        limiter belongs to the running event loop."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.ingest_concurrency)
        return self._limiter

    @property
    def admin_limiter(self) -> anyio.CapacityLimiter:
        """Bounds concurrent billing work (issue, render, verify...) separately,
        so month-end jobs cannot starve ingestion of threads or connections."""
        if self._admin_limiter is None:
            self._admin_limiter = anyio.CapacityLimiter(self.admin_concurrency)
        return self._admin_limiter


def context_of(request: Request) -> AppContext:
    ctx = request.app.state.meterline
    assert isinstance(ctx, AppContext)
    return ctx
