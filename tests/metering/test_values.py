"""Reading quantities, identities and group keys from event properties."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.metering.aggregation import Aggregation, aggregate, result
from meterline.metering.meter import Meter
from meterline.metering.values import (
    decode_dimensions,
    dimensions,
    dimensions_dict,
    encode_dimensions,
    identity_of,
    number_of,
    value_of,
)

TOKENS = Meter("tokens", "llm_call", Aggregation.SUM, "tokens", ("model", "region"))
USERS = Meter("users", "login", Aggregation.UNIQUE_COUNT, "user")
CALLS = Meter("calls", "api_call", Aggregation.COUNT, None)


def test_decimal_point_one_stays_exact() -> None:
    value = number_of(TOKENS, {"tokens": Decimal("0.1")})
    assert value == Decimal("0.1")
    assert str(value) == "0.1"
    state = aggregate(Aggregation.SUM, [(i, f"e{i}", value) for i in range(10)])
    assert result(state) == Decimal(1)
    assert str(result(state)) == "1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1200, "1200"),
        (-3, "-3"),
        (Decimal("12.500"), "12.5"),
        (Decimal("1E+2"), "100"),
        ("12.5", "12.5"),
        ("-3", "-3"),
        ("+4.25", "4.25"),
        ("007", "7"),
        ("0.000000000000000001", "0.000000000000000001"),
        (10**30 - 1, "9" * 30),
    ],
)
def test_numbers_read_exactly_and_canonically(raw: Any, expected: str) -> None:
    value = number_of(TOKENS, {"tokens": raw})
    assert isinstance(value, Decimal)
    assert fmt(value) == expected
    assert value.as_tuple() == Decimal(expected).as_tuple()  # canonical representation


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (True, "is a boolean (true), not a number"),
        (False, "is a boolean (false), not a number"),
        (None, "is null"),
        (" 3 ", "not a plain decimal number"),
        ("1e3", "not a plain decimal number"),
        ("NaN", "not a plain decimal number"),
        ("Infinity", "not a plain decimal number"),
        ("", "not a plain decimal number"),
        ("abc", "not a plain decimal number"),
        ("1.", "not a plain decimal number"),
        (".5", "not a plain decimal number"),
        ("1,5", "not a plain decimal number"),
        ("١٢", "not a plain decimal number"),  # Arabic-Indic digits: Decimal() would take them
        ("1" * 101, "not a plain decimal number"),
        (Decimal("NaN"), "not a finite number"),
        (Decimal("-Infinity"), "not a finite number"),
        ([1], "must be a number (got list)"),
        ({"v": 1}, "must be a number (got dict)"),
        (10**30, "out of range"),
        (Decimal("1E+30"), "out of range"),
        (Decimal("1E-19"), "out of range"),
        ("0.0000000000000000001", "out of range"),
    ],
)
def test_bad_numbers_are_rejected(raw: Any, fragment: str) -> None:
    with pytest.raises(MeterlineError) as excinfo:
        number_of(TOKENS, {"tokens": raw})
    error = excinfo.value
    assert error.code is ErrorCode.INVALID_PROPERTY
    assert error.message.startswith("meter 'tokens': property 'tokens' ")
    assert fragment in error.message
    assert error.details == {"meter": "tokens", "property": "tokens"}


def test_trailing_zeros_beyond_fraction_bound_are_fine() -> None:
    # Only significant fraction digits count against the bound.
    assert number_of(TOKENS, {"tokens": Decimal("1.50000000000000000000000")}) == Decimal("1.5")


def test_missing_property_is_rejected() -> None:
    with pytest.raises(MeterlineError, match="'tokens' is missing") as excinfo:
        number_of(TOKENS, {"toknes": 5})
    assert excinfo.value.code is ErrorCode.INVALID_PROPERTY


def test_identity_numbers_by_value_strings_apart() -> None:
    one = identity_of(USERS, {"user": 1})
    assert identity_of(USERS, {"user": Decimal("1.0")}) == one
    assert identity_of(USERS, {"user": "1"}) != one
    assert identity_of(USERS, {"user": "alice"}) == '"alice"'
    assert identity_of(USERS, {"user": 2**70}) == str(2**70)


@pytest.mark.parametrize(
    ("properties", "fragment"),
    [
        ({}, "is missing"),
        ({"user": None}, "is null"),
        ({"user": True}, "is a boolean"),
        ({"user": ["a"]}, "got list"),
        ({"user": {"id": 1}}, "got dict"),
        ({"user": Decimal("NaN")}, "not a usable number"),
    ],
)
def test_bad_identities_are_rejected(properties: dict[str, Any], fragment: str) -> None:
    with pytest.raises(MeterlineError, match=fragment) as excinfo:
        identity_of(USERS, properties)
    assert excinfo.value.code is ErrorCode.INVALID_PROPERTY


def test_value_of_dispatches_on_aggregation() -> None:
    assert value_of(CALLS, {}) is None
    assert value_of(USERS, {"user": "bob"}) == '"bob"'
    assert value_of(TOKENS, {"tokens": "2.50"}) == Decimal("2.5")
    latest = Meter("seats", "seat_count", Aggregation.LATEST, "seats")
    assert value_of(latest, {"seats": 7}) == Decimal(7)
    with pytest.raises(ValueError, match="reads no property"):
        number_of(CALLS, {})


def test_dimensions() -> None:
    assert dimensions(TOKENS, {"model": "gpt", "region": "eu", "tokens": 1}) == ("gpt", "eu")
    assert dimensions(TOKENS, {"tokens": 1}) == (None, None)
    assert dimensions(TOKENS, {"model": None, "region": "eu"}) == (None, "eu")
    assert dimensions(TOKENS, {"model": Decimal("4.0"), "region": True}) == ("4", "true")
    assert dimensions(TOKENS, {"model": 4, "region": False}) == ("4", "false")
    assert dimensions(TOKENS, {"model": {"b": 1, "a": [Decimal("0.10")]}, "region": ["x"]}) == (
        '{"a":[0.1],"b":1}',
        '["x"]',
    )
    assert dimensions(CALLS, {"model": "gpt"}) == ()


def test_dimensions_dict_and_encoding() -> None:
    key = dimensions(TOKENS, {"model": "gpt"})
    assert dimensions_dict(TOKENS, key) == {"model": "gpt", "region": None}
    assert encode_dimensions(key) == '["gpt",null]'
    assert decode_dimensions(encode_dimensions(key)) == key
    assert encode_dimensions(()) == "[]"
    assert decode_dimensions(b"[]") == ()
    with pytest.raises(ValueError, match="groups by 2"):
        dimensions_dict(TOKENS, ("gpt",))


@pytest.mark.parametrize("text", ["", "{}", "[1]", '["a", true]', "not json"])
def test_decode_dimensions_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not an encoded group key"):
        decode_dimensions(text)
