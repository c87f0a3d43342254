"""Shared fixtures: a fresh store on each backend, a pinned clock.

PostgreSQL tests need the local server (127.0.0.1:5432, user postgres). They
clone a migrated template database per test and drop it afterwards. Without a
server they skip locally; with CI=true a missing server is an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.store.database import Store, open_store

PG_ADMIN = os.environ.get("METERLINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NOW = "2024-02-10T00:00:00Z"


def at(text: str) -> datetime:
    return to_datetime(parse_rfc3339(text))


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(at(NOW))


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _pg_url(dbname: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{dbname}"


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_template(worker_id: str) -> Iterator[str]:
    if not _pg_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI but {PG_ADMIN} is unreachable")
        pytest.skip("PostgreSQL not reachable at " + PG_ADMIN)
    name = f"meterline_tpl_{worker_id}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    store = open_store(_pg_url(name))
    store.upgrade()
    store.dispose()
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def worker_id(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


def make_pg_store(template: str) -> tuple[Store, str]:
    name = f"meterline_t_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return open_store(_pg_url(name)), name


def drop_pg(store: Store, name: str) -> None:
    store.dispose()
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Store]:
    """A fresh, migrated, empty store on each backend."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "meterline.db"
        s = open_store(f"sqlite:///{path}")
        s.upgrade()
        yield s
        s.dispose()
    else:
        template = request.getfixturevalue("pg_template")
        s, name = make_pg_store(template)
        yield s
        drop_pg(s, name)


@pytest.fixture
def store_url(store: Store) -> str:
    return store.url


def reset(store: Store) -> None:
    """Empty every table of a store (for property tests that reuse one store)."""
    from sqlalchemy import text

    from meterline.store.schema import metadata

    with store.write() as conn:
        names = [t.name for t in metadata.sorted_tables if t.name != "knowledge"]
        if store.is_postgres:
            conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
        else:
            for n in names:
                if n != "event_keys":
                    conn.execute(text(f"DELETE FROM {n}"))
        conn.execute(text("UPDATE knowledge SET seq = 0 WHERE id = 1"))
        conn.execute(text("INSERT INTO global_watermark (id, watermark) VALUES (1, NULL)"))
        conn.execute(
            text(
                "INSERT INTO document_numbers (kind, last) VALUES "
                "('invoice', 0), ('credit_note', 0), ('debit_note', 0)"
            )
        )
