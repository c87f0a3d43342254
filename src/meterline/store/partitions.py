"""Monthly partitions of `events` on PostgreSQL, created on demand.

Created in their own short transaction before the batch that needs them, so the
ingest transaction never takes DDL locks. Idempotent and safe under races.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import psycopg
from sqlalchemy.engine import Engine

from meterline.domain.timestamps import from_datetime, to_datetime


def month_of(us: int) -> tuple[int, int]:
    dt = to_datetime(us)
    return dt.year, dt.month


def _bounds(year: int, month: int) -> tuple[int, int]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return from_datetime(start), from_datetime(end)


class Partitions:
    def __init__(self) -> None:
        self._known: set[tuple[int, int]] = set()

    def ensure(self, engine: Engine, months: set[tuple[int, int]]) -> None:
        missing = months - self._known
        if not missing:
            return
        raw = engine.raw_connection()
        try:
            pg = raw.driver_connection
            assert isinstance(pg, psycopg.Connection)
            pg.autocommit = True
            for year, month in sorted(missing):
                lo, hi = _bounds(year, month)
                name = f"events_p{year:04d}_{month:02d}"
                # A concurrent writer may create it between our check and our DDL.
                with contextlib.suppress(
                    psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation
                ):
                    pg.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF events "
                        f"FOR VALUES FROM ({lo}) TO ({hi})"
                    )
                self._known.add((year, month))
            pg.autocommit = False
        finally:
            raw.close()
