"""Usage events: validation rules and canonical content (DESIGN §3).

An event arrives as raw bytes or an already-decoded JSON object and leaves as
either an `Event` (valid, with its canonical content hash) or a `Rejection`
with a stable code. The canonical content is what decides `duplicate` versus
`EVENT_ID_CONFLICT`: two payloads are the same event iff their canonical JSON
is byte-identical, so key order, whitespace and number spelling (1200 vs
1200.0) do not matter, but any change of value does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Context, Decimal
from typing import Annotated, Any

import msgspec

from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode
from meterline.domain.json_errors import describe_decode_error, describe_validation_error
from meterline.domain.timestamps import (
    US_PER_DAY,
    US_PER_MINUTE,
    US_PER_SECOND,
    InvalidTimestamp,
    format_us,
    parse_rfc3339,
)

DEFAULT_SOURCE = "default"
MAX_ID_LENGTH = 256
FIELDS = frozenset(("event_id", "customer_id", "event_type", "event_time", "source", "properties"))
# Numbers anywhere in properties: at most this many significant digits and a
# magnitude between 10^-60 and 10^61. That is the precision every decimal
# operation runs at (decimals.PRECISION), so a stored number is always exact;
# a 10^400 "quantity" is a bug upstream, and accepting it would let one event
# blow up every aggregate. Metered properties have tighter bounds
# (metering.values).
MAX_DECIMAL_EXPONENT = 60
MAX_NUMBER_DIGITS = 60
_MAX_INT = 10 ** (MAX_DECIMAL_EXPONENT + 1)
# Nesting of `properties` (the object itself is depth 1). Deep enough for any
# real payload, shallow enough that no recursive reader can overflow its stack.
MAX_DEPTH = 32
# The event_time range: [1970-01-01T00:00:00Z, 9000-01-01T00:00:00Z). Every
# computation downstream (windows, local days and periods in any IANA zone,
# month and year arithmetic, PostgreSQL month partitions) stays inside
# years 1..9999 with centuries to spare, and instants stay non-negative.
MIN_EVENT_TIME_US = 0
MAX_EVENT_TIME_US = 221845392000 * US_PER_SECOND  # 9000-01-01T00:00:00Z


class _OutOfRange(ValueError):
    pass


def _number_problem(value: Decimal | int) -> str | None:
    """Why a number is outside the documented bounds, or None."""
    if isinstance(value, int):
        return None if -_MAX_INT < value < _MAX_INT else "is out of range (at most 10^61)"
    if not value.is_finite():
        return "is not a finite number"
    if value.is_zero():
        return None
    if abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        return f"is out of range (magnitude 10^-{MAX_DECIMAL_EXPONENT} to 10^{MAX_DECIMAL_EXPONENT + 1})"
    if len(value.normalize(_WIDE).as_tuple().digits) > MAX_NUMBER_DIGITS:
        return f"has more than {MAX_NUMBER_DIGITS} significant digits"
    return None


_WIDE = Context(prec=100_000)


def _canonical_number(literal: str) -> Decimal:
    """float_hook: every non-integer JSON number becomes its canonical Decimal
    while decoding, so 1200.0 and 1.2e3 are stored (and hashed) as 1200."""
    if len(literal) > 2 * MAX_NUMBER_DIGITS + 10:
        raise _OutOfRange("number out of range (too many digits)")
    value = Decimal(literal)
    problem = _number_problem(value)
    if problem is not None:
        raise _OutOfRange(f"number {problem}")
    return Decimal(fmt(value))


class NestingTooDeep(msgspec.DecodeError):
    """A JSON document nested deeper than any decoder stack can follow."""


_decoder = msgspec.json.Decoder(float_hook=_canonical_number)
_encoder = msgspec.json.Encoder(order="sorted", decimal_format="number")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class _WellFormed(msgspec.Struct, forbid_unknown_fields=True):
    """The shape of a valid event, checked in C. Anything that does not fit
    takes the slow path, which finds the precise error code."""

    event_id: _Id
    customer_id: _Id
    event_type: _Id
    event_time: str
    source: _Id | None = None
    properties: dict[str, Any] | None = None


_fast_decoder = msgspec.json.Decoder(_WellFormed, float_hook=_canonical_number)


def unicode_problem(value: str) -> str | None:
    """Why a text is not valid Unicode (a lone surrogate, possible from CSV
    decoded with surrogateescape), or None. Property strings only need this:
    they are stored inside canonical JSON, where a NUL is the escape \\u0000."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate or invalid UTF-8)"
    return None


def text_problem(value: str) -> str | None:
    """Why a text cannot be stored identically on SQLite and PostgreSQL, or None.

    PostgreSQL text holds no NUL and only valid UTF-8, so a lone surrogate
    (possible from CSV decoded with surrogateescape) is refused on both.
    """
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (lone surrogate or invalid UTF-8)"
    return None


def _check_properties(value: Any, path: str, depth: int) -> None:
    """Depth, Unicode and number bounds of a decoded `properties` value.

    Hot path: leaves are checked inline and a path is only formatted for an
    error, so a flat object of a few keys costs about a microsecond."""
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise _Invalid(
                ErrorCode.NESTING_TOO_DEEP, f"{path} is nested more than {MAX_DEPTH} levels deep"
            )
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Invalid(ErrorCode.INVALID_FIELD, f"{path}: keys must be strings")
            if not key.isascii():
                problem = unicode_problem(key)
                if problem is not None:
                    raise _Invalid(ErrorCode.INVALID_TEXT, f"{path}: a key {problem}")
            _check_item(item, path, key, depth)
    elif isinstance(value, list):
        if depth > MAX_DEPTH:
            raise _Invalid(
                ErrorCode.NESTING_TOO_DEEP, f"{path} is nested more than {MAX_DEPTH} levels deep"
            )
        for i, item in enumerate(value):
            _check_item(item, path, i, depth)
    else:
        _check_item(value, path, None, depth - 1)


def _check_item(item: Any, parent: str, at: str | int | None, depth: int) -> None:
    kind = type(item)
    if kind is str:
        if item.isascii():
            return
        problem = unicode_problem(item)
        if problem is not None:
            raise _Invalid(ErrorCode.INVALID_TEXT, f"{_path(parent, at)} {problem}")
    elif kind is int:
        if -_MAX_INT < item < _MAX_INT:
            return
        raise _Invalid(
            ErrorCode.INVALID_FIELD, f"{_path(parent, at)} is out of range (at most 10^61)"
        )
    elif kind is bool or item is None:
        return
    elif kind is dict or kind is list:
        _check_properties(item, _path(parent, at), depth + 1)
    elif isinstance(item, int | Decimal):
        problem = _number_problem(item)
        if problem is not None:
            raise _Invalid(ErrorCode.INVALID_FIELD, f"{_path(parent, at)} {problem}")
    elif isinstance(item, dict | list):  # subclasses: the slow, general path
        _check_properties(item, _path(parent, at), depth + 1)
    elif isinstance(item, str):
        problem = unicode_problem(item)
        if problem is not None:
            raise _Invalid(ErrorCode.INVALID_TEXT, f"{_path(parent, at)} {problem}")
    else:
        raise _Invalid(
            ErrorCode.INVALID_FIELD,
            f"{_path(parent, at)} holds a {type(item).__name__}, not a JSON value",
        )


def _path(parent: str, at: str | int | None) -> str:
    if at is None:
        return parent
    return f"{parent}[{at}]" if isinstance(at, int) else f"{parent}.{at[:40]}"


@dataclass(frozen=True)
class Limits:
    """Acceptance bounds, relative to the receiving clock (configurable)."""

    max_future_us: int = 5 * US_PER_MINUTE
    max_age_us: int = 35 * US_PER_DAY
    max_event_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    source: str
    event_id: str
    customer_id: str
    event_type: str
    event_time: int
    properties: str  # canonical JSON object text
    content_hash: str
    # The decoded properties validation already read (canonical numbers), carried
    # to the catalog check and the usage index fold so that the hot path parses
    # them once. None for an event read back from the store; not part of its
    # identity (`properties` is).
    parsed: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def key(self) -> tuple[str, str]:
        return (self.source, self.event_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "event_id": self.event_id,
            "customer_id": self.customer_id,
            "event_type": self.event_type,
            "event_time": format_us(self.event_time),
            "properties": decode_json(self.properties.encode()),
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    code: ErrorCode
    message: str


class _Invalid(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message


def properties_of(event: Event) -> dict[str, Any]:
    """The event's decoded properties: the ones validation read, else decoded from
    the stored canonical text (an event read back from the store)."""
    parsed = event.parsed
    return decode_json(event.properties) if parsed is None else parsed


def decode_json(data: bytes | str) -> Any:
    """Decode JSON with every non-integer number as an exact, canonical Decimal.

    Raises msgspec.DecodeError (NestingTooDeep, or ValidationError for a
    number out of range) for anything it cannot hold; never RecursionError."""
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise NestingTooDeep("JSON nested too deep") from None


def _canonical_value(value: Any, path: str) -> Any:
    if isinstance(value, Decimal):
        problem = _number_problem(value)
        if problem is not None:
            raise _Invalid(ErrorCode.INVALID_FIELD, f"{path}: number {problem}")
        return Decimal(fmt(value))
    if isinstance(value, dict):
        return {k: _canonical_value(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _needs_canonicalising(value: Any) -> bool:
    if isinstance(value, Decimal):
        return True
    if isinstance(value, dict):
        return any(_needs_canonicalising(v) for v in value.values())
    if isinstance(value, list):
        return any(_needs_canonicalising(v) for v in value)
    return False


def _required_str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise _Invalid(ErrorCode.MISSING_FIELD, f"missing required field {name!r}")
    if not isinstance(value, str):
        raise _Invalid(
            ErrorCode.INVALID_FIELD, f"{name!r} must be a string, got {_json_type(value)}"
        )
    if not value or len(value) > MAX_ID_LENGTH:
        raise _Invalid(ErrorCode.INVALID_FIELD, f"{name!r} must be 1 to {MAX_ID_LENGTH} characters")
    _check_text(name, value)
    return value


def _check_text(name: str, value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise _Invalid(ErrorCode.INVALID_TEXT, f"{name!r} {problem}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _event_time(obj: dict[str, Any]) -> int:
    value = obj.get("event_time")
    if value is None:
        raise _Invalid(ErrorCode.MISSING_FIELD, "missing required field 'event_time'")
    if not isinstance(value, str):
        raise _Invalid(
            ErrorCode.INVALID_EVENT_TIME,
            f"'event_time' must be an RFC 3339 string with an offset, got {_json_type(value)}",
        )
    return _parse_time(value)


def _parse_time(value: str) -> int:
    """An RFC 3339 instant inside [MIN_EVENT_TIME_US, MAX_EVENT_TIME_US)."""
    try:
        us = parse_rfc3339(value)
    except InvalidTimestamp as exc:
        raise _Invalid(ErrorCode.INVALID_EVENT_TIME, str(exc)[:300]) from None
    if not MIN_EVENT_TIME_US <= us < MAX_EVENT_TIME_US:
        raise _Invalid(
            ErrorCode.INVALID_EVENT_TIME,
            f"event_time {value[:64]!r} is outside the supported range "
            "1970-01-01T00:00:00Z to 9000-01-01T00:00:00Z (exclusive)",
        )
    return us


def _validate(obj: Any, default_source: str, now_us: int, limits: Limits, backfill: bool) -> Event:
    if not isinstance(obj, dict):
        raise _Invalid(
            ErrorCode.INVALID_JSON, f"an event must be a JSON object, got {_json_type(obj)}"
        )
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        name = str(unknown[0])
        shown = name[:64] if text_problem(name) is None else ascii(name[:64])
        raise _Invalid(
            ErrorCode.UNKNOWN_FIELD,
            f"unknown field {shown!r}; an event has only {', '.join(sorted(FIELDS))}",
        )
    event_id = _required_str(obj, "event_id")
    customer_id = _required_str(obj, "customer_id")
    event_type = _required_str(obj, "event_type")
    event_time = _event_time(obj)
    source = obj.get("source")
    if source is None:
        source = default_source
    elif not isinstance(source, str) or not source or len(source) > MAX_ID_LENGTH:
        raise _Invalid(
            ErrorCode.INVALID_FIELD, f"'source' must be a string of 1 to {MAX_ID_LENGTH} characters"
        )
    props = obj.get("properties")
    if props is None:
        props = {}
    elif not isinstance(props, dict):
        raise _Invalid(
            ErrorCode.INVALID_FIELD, f"'properties' must be a JSON object, got {_json_type(props)}"
        )
    else:
        _check_properties(props, "properties", 1)
        if _needs_canonicalising(props):
            props = _canonical_value(props, "properties")
    return _finish(
        source, event_id, customer_id, event_type, event_time, props, now_us, limits, backfill
    )


def _finish(
    source: str,
    event_id: str,
    customer_id: str,
    event_type: str,
    event_time: int,
    props: dict[str, Any],
    now_us: int,
    limits: Limits,
    backfill: bool,
) -> Event:
    if event_time > now_us + limits.max_future_us:
        raise _Invalid(
            ErrorCode.EVENT_IN_FUTURE,
            f"event_time {format_us(event_time)} is more than "
            f"{limits.max_future_us // US_PER_MINUTE} minutes ahead of the receiving clock "
            f"({format_us(now_us)})",
        )
    if not backfill and event_time < now_us - limits.max_age_us:
        raise _Invalid(
            ErrorCode.EVENT_TOO_OLD,
            f"event_time {format_us(event_time)} is older than "
            f"{limits.max_age_us // US_PER_DAY} days; ingest it as a backfill to bill it",
        )
    _check_text("source", source)  # also the default (--source, ?source=) when absent
    properties = _encoder.encode(props).decode()
    return Event(
        source=source,
        event_id=event_id,
        customer_id=customer_id,
        event_type=event_type,
        event_time=event_time,
        properties=properties,
        content_hash=content_hash_of(
            source, event_id, customer_id, event_type, event_time, properties
        ),
        parsed=props,
    )


def content_hash_of(
    source: str, event_id: str, customer_id: str, event_type: str, event_time: int, properties: str
) -> str:
    """The event's canonical content hash, from its stored fields (`properties` is the
    stored canonical JSON text, hashed as is): what dedup compares, what the Merkle
    log's leaf commits to, and what the auditor recomputes from a row."""
    canonical = _encoder.encode(
        {
            "customer_id": customer_id,
            "event_id": event_id,
            "event_time": event_time,
            "event_type": event_type,
            "properties": msgspec.Raw(properties.encode()),
            "source": source,
        }
    )
    return hashlib.sha256(canonical).hexdigest()


def validate_object(
    obj: Any,
    *,
    now_us: int,
    default_source: str = DEFAULT_SOURCE,
    limits: Limits = Limits(),
    backfill: bool = False,
) -> Event | Rejection:
    """Validate an already-decoded JSON value (numbers must be int/Decimal, never float)."""
    try:
        return _validate(obj, default_source, now_us, limits, backfill)
    except _Invalid as exc:
        return Rejection(exc.code, exc.message)


def validate_bytes(
    raw: bytes,
    *,
    now_us: int,
    default_source: str = DEFAULT_SOURCE,
    limits: Limits = Limits(),
    backfill: bool = False,
) -> Event | Rejection:
    """Validate one raw JSON document (one NDJSON line, one HTTP body item)."""
    if len(raw) > limits.max_event_bytes:
        return Rejection(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"event is {len(raw)} bytes; the limit is {limits.max_event_bytes}",
        )
    try:
        fast = _fast_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return _validate_slowly(raw, default_source, now_us, limits, backfill)
    try:
        _check_text("event_id", fast.event_id)
        _check_text("customer_id", fast.customer_id)
        _check_text("event_type", fast.event_type)
        event_time = _parse_time(fast.event_time)
        if fast.properties:
            _check_properties(fast.properties, "properties", 1)
        return _finish(
            fast.source or default_source,
            fast.event_id,
            fast.customer_id,
            fast.event_type,
            event_time,
            fast.properties or {},
            now_us,
            limits,
            backfill,
        )
    except _Invalid as exc:
        return Rejection(exc.code, exc.message)


def _validate_slowly(
    raw: bytes, default_source: str, now_us: int, limits: Limits, backfill: bool
) -> Event | Rejection:
    try:
        obj = decode_json(raw)
    except NestingTooDeep:
        return Rejection(ErrorCode.NESTING_TOO_DEEP, f"nested more than {MAX_DEPTH} levels deep")
    except msgspec.ValidationError as exc:  # raised by _canonical_number
        return Rejection(ErrorCode.INVALID_FIELD, f"properties: {describe_validation_error(exc)}")
    except msgspec.DecodeError as exc:
        return Rejection(ErrorCode.INVALID_JSON, describe_decode_error(exc))
    try:
        return _validate(obj, default_source, now_us, limits, backfill)
    except _Invalid as exc:
        return Rejection(exc.code, exc.message)


def encode_json(value: Any) -> bytes:
    """Canonical JSON of a decoded value (sorted keys, exact numbers)."""
    return _encoder.encode(_canonical_value(value, "$") if _needs_canonicalising(value) else value)
