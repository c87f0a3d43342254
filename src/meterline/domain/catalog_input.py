"""One vocabulary for catalog validation: every section (meters, price books,
customers) reports a bad value the same way.

An error is INVALID_CATALOG with the path of the offending value first and
in `details["path"]`: "price_books[0].versions[1].charges[2].rate: must be a
decimal between 0 and 1". A missing field is reported at its parent ("missing
field 'rate'"), an unknown one at itself ("unknown field 'rte'; expected ...").
Numbers are exact: a decimal string, an integer or a Decimal (JSON catalogs),
never a float or a boolean; `decimal` is the one place that parses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import NoReturn

from meterline.domain.decimals import catalog_decimal_problem, fmt, parse_decimal
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import InvalidTimestamp, from_datetime, parse_rfc3339


def catalog_error(path: str, message: str) -> MeterlineError:
    return MeterlineError(ErrorCode.INVALID_CATALOG, f"{path}: {message}", path=path)


def fail(path: str, message: str) -> NoReturn:
    raise catalog_error(path, message)


def kind(raw: object) -> str:
    """What a value is, for messages: "the text 'x'", "the number 1.5", "null"."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return f"the boolean {str(raw).lower()}"
    if isinstance(raw, str):
        return f"the text {raw!r}"
    if isinstance(raw, int | float | Decimal):
        return f"the number {raw!r}"
    return type(raw).__name__


def mapping(raw: object, path: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        fail(path, f"expected a mapping, got {kind(raw)}")
    for key in raw:
        if not isinstance(key, str):
            fail(path, f"field names must be strings, got {key!r}")
    return raw


def fields(
    raw: object,
    path: str,
    required: set[str],
    optional: set[str],
    hints: Mapping[str, str] | None = None,
) -> Mapping[str, object]:
    """A mapping with exactly these fields: unknown ones are refused, a typo must not
    silently change what is billed."""
    data = mapping(raw, path)
    for name in sorted(required - data.keys()):
        fail(path, f"missing field {name!r}{(hints or {}).get(name, '')}")
    for name in sorted(data.keys() - required - optional):
        expected = ", ".join(sorted(required | optional))
        fail(f"{path}.{name}", f"unknown field {name!r}; expected {expected}")
    return data


def items(raw: object, path: str) -> list[object]:
    if not isinstance(raw, list | tuple):
        fail(path, f"expected a list, got {kind(raw)}")
    return list(raw)


def text(raw: object, path: str, max_length: int = 256) -> str:
    if not isinstance(raw, str) or not raw.strip():
        fail(path, f"expected non-empty text, got {kind(raw)}")
    if len(raw) > max_length:
        fail(path, f"text longer than {max_length} characters")
    return raw


def boolean(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        fail(path, f"expected true or false, got {kind(raw)}")
    return raw


def decimal(raw: object, path: str) -> Decimal:
    """An exact number within the catalog bounds (decimals.catalog_decimal_problem):
    a price like 1e400 is refused here, at `catalog apply`, not at month end."""
    value = _exact_number(raw, path)
    problem = catalog_decimal_problem(value)
    if problem is not None:
        fail(path, problem)
    return value


def _exact_number(raw: object, path: str) -> Decimal:
    """A decimal string, an integer or a Decimal; never a float or a boolean."""
    if isinstance(raw, bool):
        fail(path, f"expected a number, got {kind(raw)}")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, Decimal):  # JSON catalogs: decoded exactly, never via float
        if not raw.is_finite():
            fail(path, f"{raw} is not a finite number")
        return raw
    if isinstance(raw, float):
        fail(
            path,
            f"{raw!r} is a float, which is not exact; write it as a decimal string "
            f'("{raw!r}") or an integer',
        )
    if isinstance(raw, str):
        value = parse_decimal(raw)
        if value is not None:
            return value
        fail(path, f"{raw!r} is not a decimal number")
    fail(path, f"expected a decimal string or an integer, got {kind(raw)}")


def price(raw: object, path: str) -> Decimal:
    value = decimal(raw, path)
    if value < 0:
        fail(path, f"price {fmt(value)} must not be negative")
    return value


def positive(raw: object, path: str) -> Decimal:
    value = decimal(raw, path)
    if value <= 0:
        fail(path, f"{fmt(value)} must be positive")
    return value


def fraction(raw: object, path: str) -> Decimal:
    """A rate: 0.029 is 2.9%."""
    value = decimal(raw, path)
    if not 0 <= value <= 1:
        fail(path, f"must be a decimal between 0 and 1 (0.029 is 2.9%), got {fmt(value)}")
    return value


def count(raw: object, path: str, low: int = 0, high: int | None = None) -> int:
    """A whole number in [low, high]."""
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
        fail(path, f"expected a whole number, got {kind(raw)}")
    value = decimal(raw, path)
    if value != value.to_integral_value() or value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        fail(path, f"must be a whole number {bound}, got {fmt(value)}")
    return int(value)


def choice(raw: object, path: str, options: list[str], what: str) -> str:
    if not isinstance(raw, str) or raw not in options:
        fail(path, f"unknown {what} {raw!r}; expected one of {', '.join(options)}")
    return raw


def instant(raw: object, path: str) -> int:
    """An RFC 3339 instant with a UTC offset (YAML may hand over a datetime already)."""
    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            fail(path, f"{raw.isoformat()} has no UTC offset; write e.g. 2024-01-01T00:00:00Z")
        return from_datetime(raw)
    if isinstance(raw, date):
        fail(path, f"{raw.isoformat()} is a date; write an instant, e.g. {raw}T00:00:00Z")
    try:
        return parse_rfc3339(text(raw, path))
    except InvalidTimestamp as exc:
        fail(path, str(exc))
