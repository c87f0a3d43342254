"""A fresh, migrated store for one benchmark case: a temporary SQLite file, or a
PostgreSQL database created for the case and dropped afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from meterline.store.database import Store, open_store

PG_ADMIN = os.environ.get("METERLINE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def pg_url(dbname: str) -> str:
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{dbname}"


@contextmanager
def _migrated(url: str) -> Iterator[Store]:
    store = open_store(url)
    try:
        store.upgrade()
        yield store
    finally:
        store.dispose()


@contextmanager
def fresh_store(backend: str) -> Iterator[Store]:
    if backend == "sqlite":
        with (
            tempfile.TemporaryDirectory(prefix="meterline-bench-", dir="/tmp") as tmp,
            _migrated(f"sqlite:///{tmp}/bench.db") as store,
        ):
            yield store
        return
    name = f"meterline_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with _migrated(pg_url(name)) as store:
            yield store
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def cached_copy(customers: int, per_customer: int) -> Iterator[Store]:
    """A working copy of bench/cached_store.py's SQLite store of C x E events
    (built first when missing), so read benchmarks run against a large store
    without loading it each time; the cached file itself is never written."""
    from cached_store import build

    cached = build(customers, per_customer)
    with tempfile.TemporaryDirectory(prefix="meterline-bench-", dir="/tmp") as tmp:
        db = f"{tmp}/bench.db"
        shutil.copyfile(cached, db)
        with _migrated(f"sqlite:///{db}") as store:
            yield store
