"""Reading a meter's input from an event's properties, exactly (DESIGN §3, §4).

Properties arrive already decoded with numbers as ``int`` or ``Decimal`` (never
float). Numbers are read as Decimal without any rounding. Numeric strings are
accepted in plain decimal notation only (``"12.5"``, ``"-3"``): no spaces,
exponents, NaN or infinities, since a meter silently reading ``" 1e9 "`` would
be a billing surprise. Booleans are not numbers.

Quantities are bounded (at most ``MAX_INTEGER_DIGITS`` digits before the point
and ``MAX_FRACTION_DIGITS`` after) so that sums over any realistic number of
events stay exact within the decimal precision the aggregates use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec

from meterline.domain.canonical import dumps
from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.metering.aggregation import Aggregation, Value
from meterline.metering.meter import Meter

MAX_INTEGER_DIGITS = 30
MAX_FRACTION_DIGITS = 18
_INT_BOUND = 10**MAX_INTEGER_DIGITS
_PLAIN_DECIMAL = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_MAX_TEXT = 100

Dimensions = tuple[str | None, ...]
"""Group key of an event for a meter: one text (or None when missing) per group_by name."""


def _invalid(meter: Meter, prop: str, message: str) -> MeterlineError:
    return MeterlineError(
        ErrorCode.INVALID_PROPERTY,
        f"meter {meter.code!r}: property {prop!r} {message}",
        meter=meter.code,
        property=prop,
    )


def _in_range(value: Decimal) -> bool:
    """Digit bounds, checked on the tuple so huge exponents cost nothing."""
    if value.is_zero():
        return True
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    fraction_digits = max(0, -(exponent + trailing))
    return value.adjusted() < MAX_INTEGER_DIGITS and fraction_digits <= MAX_FRACTION_DIGITS


def _property(meter: Meter, properties: Mapping[str, Any]) -> tuple[str, Any]:
    prop = meter.property
    if prop is None:
        raise ValueError(f"meter {meter.code!r} ({meter.aggregation.value}) reads no property")
    if prop not in properties:
        raise _invalid(meter, prop, "is missing from the event")
    raw = properties[prop]
    if raw is None:
        raise _invalid(meter, prop, "is null")
    return prop, raw


def number_of(meter: Meter, properties: Mapping[str, Any]) -> Decimal:
    """The exact numeric value of the meter's property (sum, min, max, latest)."""
    prop, raw = _property(meter, properties)
    if type(raw) is int and -_INT_BOUND < raw < _INT_BOUND:
        return Decimal(raw)  # the common case: already canonical (exponent 0) and in range
    if isinstance(raw, bool):
        raise _invalid(meter, prop, f"is a boolean ({str(raw).lower()}), not a number")
    if isinstance(raw, int):
        value = Decimal(raw)
    elif isinstance(raw, Decimal):
        if not raw.is_finite():
            raise _invalid(meter, prop, f"is not a finite number ({raw})")
        value = raw
    elif isinstance(raw, str):
        if len(raw) > _MAX_TEXT or not _PLAIN_DECIMAL.fullmatch(raw):
            raise _invalid(meter, prop, f"is not a plain decimal number (got {raw[:_MAX_TEXT]!r})")
        value = Decimal(raw)
    else:
        raise _invalid(meter, prop, f"must be a number (got {type(raw).__name__})")
    if not _in_range(value):
        raise _invalid(
            meter,
            prop,
            f"is out of range (at most {MAX_INTEGER_DIGITS} integer and "
            f"{MAX_FRACTION_DIGITS} fraction digits)",
        )
    return Decimal(fmt(value))


def identity_of(meter: Meter, properties: Mapping[str, Any]) -> str:
    """Identity of the property's value for unique_count: its canonical JSON text.

    Equal numbers are one identity (1 and 1.0), a number and a string are two
    (1 and "1"), matching how the values compare in JSON.
    """
    prop, raw = _property(meter, properties)
    if isinstance(raw, bool):
        raise _invalid(meter, prop, "is a boolean; unique_count needs a string or a number")
    if isinstance(raw, str | int):
        return dumps(raw).decode()
    if isinstance(raw, Decimal):
        if not raw.is_finite() or not _in_range(raw):
            raise _invalid(meter, prop, f"is not a usable number ({raw})")
        return fmt(raw)
    raise _invalid(
        meter, prop, f"must be a string or a number for unique_count (got {type(raw).__name__})"
    )


def value_of(meter: Meter, properties: Mapping[str, Any]) -> Value:
    """What ``aggregation.add`` takes for this meter: None for count (nothing is read)."""
    match meter.aggregation:
        case Aggregation.COUNT:
            return None
        case Aggregation.UNIQUE_COUNT:
            return identity_of(meter, properties)
        case _:
            return number_of(meter, properties)


def _dimension_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | Decimal):
        return fmt(raw)
    return dumps(raw).decode()


def dimensions(meter: Meter, properties: Mapping[str, Any]) -> Dimensions:
    """The event's group key for ``meter``, in ``group_by`` order.

    Scalars become their canonical text (strings as-is, numbers canonical,
    booleans "true"/"false"); lists and objects their canonical JSON; a missing
    or null property is ``None``, its own group (DESIGN §4). Grouping is on the
    text, so 1 and "1" share a group: a type wobble in telemetry should not
    split an invoice line.
    """
    return tuple(_dimension_text(properties.get(name)) for name in meter.group_by)


def dimensions_dict(meter: Meter, key: Dimensions) -> dict[str, str | None]:
    """Name -> value view of a group key, for display and JSON output."""
    if len(key) != len(meter.group_by):
        raise ValueError(
            f"meter {meter.code!r} groups by {len(meter.group_by)} properties, "
            f"key has {len(key)} values"
        )
    return dict(zip(meter.group_by, key, strict=True))


@lru_cache(maxsize=65536)
def encode_dimensions(key: Dimensions) -> str:
    """Canonical text of a group key, for a storage key column (``[]`` when ungrouped).

    Cached: a meter sees few distinct groups, and this runs per event at ingestion."""
    return dumps(list(key)).decode()


def decode_dimensions(text: str | bytes) -> Dimensions:
    """Inverse of ``encode_dimensions``."""
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise ValueError(f"not an encoded group key: {text!r}") from None
    if not isinstance(data, list) or not all(v is None or isinstance(v, str) for v in data):
        raise ValueError(f"not an encoded group key: {text!r}")
    return tuple(data)
