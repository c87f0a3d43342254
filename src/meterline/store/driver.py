"""Statements through the database driver's own cursor, on either backend.

SQLAlchemy builds a parameter dict per row and compiles per execution; on paths
that touch every event (auditing, ingestion's per-event rows) that overhead is
of the order of the database's own work. SQL here uses `?` placeholders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy.engine import Connection


def _pg(sql: str) -> bytes:
    return sql.replace("?", "%s").encode()


def raw_rows(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Every row of one query."""
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        assert isinstance(driver, psycopg.Connection)
        with driver.cursor() as cur:
            cur.execute(_pg(sql), params)
            return list(cur.fetchall())
    cur = driver.cursor()  # type: ignore[union-attr]
    try:
        return list(cur.execute(sql, params).fetchall())
    finally:
        cur.close()


def execute_many(conn: Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """One statement for each row of `rows` (plain tuples)."""
    if not rows:
        return
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        assert isinstance(driver, psycopg.Connection)
        with driver.cursor() as cur:
            cur.executemany(_pg(sql), rows)
        return
    cur = driver.cursor()  # type: ignore[union-attr]
    try:
        cur.executemany(sql, rows)
    finally:
        cur.close()
