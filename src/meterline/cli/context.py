"""What every command needs: the store URL, the clock, and error handling."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, TypeVar

import msgspec
import typer

from meterline.domain.clock import Clock, FixedClock, SystemClock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import MAX_EVENT_TIME_US, MIN_EVENT_TIME_US
from meterline.domain.timestamps import InvalidTimestamp, parse_rfc3339, to_datetime
from meterline.store.database import DEFAULT_URL, Store, is_transient, open_store

EXIT_OK = 0
EXIT_DISCREPANCY = 1
EXIT_BAD_INPUT = 2


@dataclass
class Settings:
    db: str = DEFAULT_URL
    now: str | None = None

    def clock(self) -> Clock:
        if self.now is None:
            return SystemClock()
        try:
            now_us = parse_rfc3339(self.now)
        except InvalidTimestamp as exc:
            raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"--now: {exc}") from None
        if not MIN_EVENT_TIME_US <= now_us < MAX_EVENT_TIME_US:
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT,
                f"--now: {self.now!r} is outside the supported range "
                "1970-01-01T00:00:00Z to 9000-01-01T00:00:00Z",
            )
        return FixedClock(to_datetime(now_us))

    def store(self, *, initialised: bool = True) -> Store:
        if initialised:
            require_existing_file(self.db)
        store = open_store(self.db)
        if initialised:
            store.require_initialised()
        return store


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings)
    return obj


def require_existing_file(url: str) -> None:
    """Only `init` creates a store: any other command on a SQLite file that does
    not exist says so instead of leaving an empty database file behind."""
    from sqlalchemy.engine import make_url

    from meterline.store.database import engine_url, safe_url

    try:
        parsed = make_url(engine_url(url))
    except Exception:
        return  # open_store reports the bad URL with its code
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    if str(parsed.database).startswith("file:"):
        return
    if not os.path.exists(str(parsed.database)):
        raise MeterlineError(
            ErrorCode.STORE_NOT_INITIALISED,
            f"no store at {safe_url(url)}; run `meterline init` to create it",
        )


def error_line(text: str) -> None:
    """The one error style: `meterline: CODE: message` on one line of stderr."""
    one = " ".join(text.split())
    sys.stderr.write(f"meterline: {one}\n")
    sys.stderr.flush()


def fail(
    message: str,
    code: int = EXIT_BAD_INPUT,
    error: ErrorCode | str = ErrorCode.INVALID_ARGUMENT,
) -> NoReturn:
    """One clear line on stderr with a stable code, never a traceback."""
    error_line(f"{error}: {message}")
    raise typer.Exit(code)


P = ParamSpec("P")
R = TypeVar("R")


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except MeterlineError as exc:
            error_line(str(exc))
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            fail("committed batches are kept, re-run to resume", 130, "INTERRUPTED")
        except BrokenPipeError:
            raise typer.Exit(EXIT_OK) from None
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The store went away mid-command: committed batches are kept and
            # a re-run resumes (deduplicated); not an internal error.
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            fail(f"{ErrorCode.STORE_UNAVAILABLE}: the store is unavailable ({reason}); re-run")

    return wrapper


def print_json(value: Any) -> None:
    sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")
    sys.stdout.flush()


def env_default(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None
