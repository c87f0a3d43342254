"""Opening a store: URL handling, connection setup, migrations, transactions."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.store import merkle

DEFAULT_URL = "sqlite:///meterline.db"
# Seconds a PostgreSQL connection attempt may take, including the server's first
# answer, before it fails with STORE_UNAVAILABLE; `?connect_timeout=N` in the URL
# overrides it. Without it a server that accepts TCP but never answers hangs forever.
DEFAULT_CONNECT_TIMEOUT_S = 10
_MIGRATIONS = Path(__file__).parent / "migrations"


def engine_url(url: str) -> str:
    """Accept the plain URLs users type and pick our drivers (psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


# The newest migration's revision. Alembic is imported only to migrate (~0.1 s of
# every process start, and of every worker process); a test holds this constant
# equal to the migration scripts' head.
SCHEMA_HEAD = "0023"


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


@dataclass
class Store:
    """A handle on one database. Cheap to create; holds the engine's pool."""

    url: str
    engine: Engine
    # SQLite: the engine of write transactions, whose pool keeps one connection.
    # A connection's page cache is dropped whenever another connection has written
    # the file, so writes that rotate through a pool shared with readers start
    # cold (in a server, each request's batch re-read the B-tree pages it touched).
    writer: Engine | None = None

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def upgrade(self) -> str:
        """Create or upgrade the schema to the newest migration; returns its revision."""
        from alembic import command

        cfg = _alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return self.head_revision()

    def head_revision(self) -> str:
        return SCHEMA_HEAD

    def current_revision(self) -> str | None:
        """The revision the store's schema is at (None: never migrated)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
        return str(rows[0][0]) if len(rows) == 1 else None

    def require_initialised(self) -> None:
        if self.current_revision() != self.head_revision():
            raise MeterlineError(
                ErrorCode.STORE_NOT_INITIALISED,
                f"the store at {safe_url(self.url)} is not initialised or is out of date; "
                "run `meterline init`",
            )

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction. On SQLite it takes the write lock up front
        (BEGIN IMMEDIATE) so a transaction never fails half-way on a lock upgrade."""
        with (self.writer or self.engine).connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(meterline_write=True)
            with conn.begin():
                conn.info.pop(merkle.LOCKED, None)
                conn.info.pop(merkle.PENDING, None)
                yield conn
                if conn.info.pop(merkle.LOCKED, False):
                    merkle.seal(conn)

    @contextlib.contextmanager
    def savepoint(self, conn: Connection) -> Iterator[Connection]:
        """A part of a write transaction that can fail alone (group commit).

        Undoing it also undoes what it handed to the end of the transaction: the
        content hashes given to the Merkle seal and the mark that the sequence
        was locked (on PostgreSQL a rollback to a savepoint releases a row lock
        taken after it, so the seal must not think it still holds one)."""
        locked = conn.info.get(merkle.LOCKED)
        pending = conn.info.get(merkle.PENDING)
        kept = len(pending) if pending else 0
        try:
            with conn.begin_nested():
                yield conn
        except BaseException:
            if locked is None:
                conn.info.pop(merkle.LOCKED, None)
            else:
                conn.info[merkle.LOCKED] = locked
            pending = conn.info.get(merkle.PENDING)
            if pending:
                for seq in list(islice(pending, kept, None)):
                    del pending[seq]
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if self.writer is not None:
            self.writer.dispose()


def is_transient(exc: BaseException) -> bool:
    """A failure of the store rather than of the data: retry later, never quarantine."""
    if isinstance(exc, MeterlineError):
        return exc.code == ErrorCode.STORE_UNAVAILABLE
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    transient = (
        sa_exc.OperationalError,
        sa_exc.InterfaceError,
        sa_exc.DisconnectionError,
        sa_exc.TimeoutError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        OSError,
    )
    return isinstance(exc, transient)


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid url>"


SQLITE_SYNC_MODES = ("FULL", "EXTRA", "NORMAL", "OFF")


def sqlite_sync() -> str:
    """The SQLite synchronous mode: FULL unless METERLINE_SQLITE_SYNC says otherwise."""
    mode = os.environ.get("METERLINE_SQLITE_SYNC", "FULL").strip().upper()
    if mode not in SQLITE_SYNC_MODES:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"METERLINE_SQLITE_SYNC must be one of {', '.join(SQLITE_SYNC_MODES)}, got {mode!r}",
        )
    return mode


def _sqlite_setup(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event decide how transactions start.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL: readers never block the writer. synchronous=FULL syncs the WAL
        # on every commit, so an acknowledged batch survives power loss, not
        # only a process crash (docs/DURABILITY.md; the cost is measured in
        # docs/PERFORMANCE.md). METERLINE_SQLITE_SYNC=NORMAL trades that away.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={sqlite_sync()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("meterline_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def open_store(url: str = DEFAULT_URL) -> Store:
    try:
        full = engine_url(url)
        parsed = sa.make_url(full)
    except Exception:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"invalid database URL {url!r}") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///FILE or postgresql://...",
        )
    writer: Engine | None = None
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            full, poolclass=sa.pool.NullPool if parsed.database in (None, "", ":memory:") else None
        )
        _sqlite_setup(engine)
        if parsed.database not in (None, "", ":memory:"):
            # One pooled connection; a concurrent writer gets an extra one (closed
            # after use) and then waits for the file's lock as before.
            writer = sa.create_engine(full, pool_size=1, max_overflow=-1)
            _sqlite_setup(writer)
    else:
        connect_args = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = DEFAULT_CONNECT_TIMEOUT_S
        engine = sa.create_engine(full, pool_pre_ping=True, connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "failed"
        if "timeout" in reason.lower():
            limit = parsed.query.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
            reason = (
                f"no answer within {limit} s (connection timeout; "
                "set ?connect_timeout=N in the URL to wait longer)"
            )
        raise MeterlineError(
            ErrorCode.STORE_UNAVAILABLE, f"cannot open {safe_url(url)}: {reason}"
        ) from None
    return Store(url=url, engine=engine, writer=writer)
