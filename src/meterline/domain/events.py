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
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode
from meterline.domain.json_errors import describe_decode_error, describe_validation_error
from meterline.domain.timestamps import (
    US_PER_DAY,
    US_PER_MINUTE,
    InvalidTimestamp,
    format_us,
    parse_rfc3339,
)

DEFAULT_SOURCE = "default"
MAX_ID_LENGTH = 256
# Decimals beyond this magnitude are refused: a 10^400 "quantity" is a bug
# upstream, and accepting it would let one event blow up every aggregate.
MAX_DECIMAL_EXPONENT = 60


def _canonical_number(literal: str) -> Decimal:
    """float_hook: every non-integer JSON number becomes its canonical Decimal
    while decoding, so 1200.0 and 1.2e3 are stored (and hashed) as 1200."""
    value = Decimal(literal)
    if abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
        raise ValueError("number out of range")
    return Decimal(fmt(value))


_decoder = msgspec.json.Decoder(float_hook=_canonical_number)
_encoder = msgspec.json.Encoder(order="sorted", decimal_format="number")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]


class _WellFormed(msgspec.Struct):
    """The shape of a valid event, checked in C. Anything that does not fit
    takes the slow path, which finds the precise error code."""

    event_id: _Id
    customer_id: _Id
    event_type: _Id
    event_time: str
    source: _Id | None = None
    properties: dict[str, Any] | None = None


_fast_decoder = msgspec.json.Decoder(_WellFormed, float_hook=_canonical_number)


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


def decode_json(data: bytes | str) -> Any:
    """Decode JSON with every non-integer number as an exact, canonical Decimal."""
    return _decoder.decode(data)


def _canonical_value(value: Any, path: str) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite() or abs(value.adjusted()) > MAX_DECIMAL_EXPONENT:
            raise _Invalid(ErrorCode.INVALID_FIELD, f"{path}: number out of range")
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
    return value


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
    try:
        return parse_rfc3339(value)
    except InvalidTimestamp as exc:
        raise _Invalid(ErrorCode.INVALID_EVENT_TIME, str(exc)) from None


def _validate(obj: Any, default_source: str, now_us: int, limits: Limits, backfill: bool) -> Event:
    if not isinstance(obj, dict):
        raise _Invalid(
            ErrorCode.INVALID_JSON, f"an event must be a JSON object, got {_json_type(obj)}"
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
    elif _needs_canonicalising(props):
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
    except msgspec.DecodeError:
        return _validate_slowly(raw, default_source, now_us, limits, backfill)
    try:
        try:
            event_time = parse_rfc3339(fast.event_time)
        except InvalidTimestamp as exc:
            raise _Invalid(ErrorCode.INVALID_EVENT_TIME, str(exc)) from None
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
        obj = _decoder.decode(raw)
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
