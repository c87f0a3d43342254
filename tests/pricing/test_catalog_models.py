"""The new charge models and modifiers in a catalog: parsed, round-tripped, and refused with
path-named errors in the one catalog vocabulary (domain/catalog_input.py)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
import yaml

from meterline.domain.canonical import dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.pricing.catalog import parse_price_books, parse_version
from meterline.pricing.charges import (
    Conversion,
    ConversionRounding,
    Dynamic,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    RateTier,
)

METERS = frozenset({"payments", "calls", "bytes", "gpu_cost"})
SUMS = frozenset({"payments", "bytes", "gpu_cost"})

BOOK = """
- code: fintech
  currency: USD
  versions:
    - version: v1
      effective_from: "2024-01-01T00:00:00Z"
      minimum_spend: {amount: "100.00", prorate: false}
      maximum_spend: "5000"
      charges:
        - {code: card, meter: payments, model: percentage, rate: "0.029", fixed_fee: "0.30",
           free_units: "1000", free_events: 10}
        - {code: share, meter: payments, model: graduated_percentage, tiers: [
            {up_to: 10000, rate: "0.03", flat_fee: "5"}, {up_to: null, rate: "0.01"}]}
        - {code: gpu, meter: gpu_cost, model: dynamic, multiplier: "1.2"}
        - {code: api, meter: calls, model: per_unit, unit_price: "0.02", free_units: 1000}
        - {code: storage, meter: bytes, model: package, package_size: 10, package_price: "1",
           free_units: 5, conversion: {divide_by: 1000000000, round: up}}
"""


def books() -> list[Any]:
    loaded = yaml.safe_load(BOOK)
    assert isinstance(loaded, list)
    return loaded


def test_new_models_and_modifiers_parse_into_domain_objects() -> None:
    (book,) = parse_price_books(books(), METERS, sums=SUMS)
    (v1,) = book.versions
    assert (v1.minimum_spend, v1.minimum_prorate) == (Decimal("100.00"), False)
    assert (v1.maximum_spend, v1.maximum_prorate) == (Decimal(5000), True)
    assert v1.charges == (
        Percentage("card", "payments", Decimal("0.029"), Decimal("0.30"), Decimal(1000), 10),
        GraduatedPercentage(
            "share",
            "payments",
            (
                RateTier(Decimal(10000), Decimal("0.03"), Decimal(5)),
                RateTier(None, Decimal("0.01")),
            ),
        ),
        Dynamic("gpu", "gpu_cost", Decimal("1.2")),
        PerUnit("api", "calls", Decimal("0.02"), Decimal(1000)),
        Package(
            "storage", "bytes", Decimal(10), Decimal(1), Decimal(5),
            Conversion(divide_by=Decimal(1_000_000_000), rounding=ConversionRounding.UP),
        ),
    )  # fmt: skip


def test_stored_definitions_round_trip_with_the_same_content_hash() -> None:
    (book,) = parse_price_books(books(), METERS, sums=SUMS)
    (v1,) = book.versions
    again = parse_version(decode_json(dumps(v1.definition())), METERS)
    assert again == v1 and again.content_hash == v1.content_hash


def test_a_version_without_new_fields_keeps_its_old_definition_keys() -> None:
    raw = {"version": "v1", "effective_from": "2024-01-01T00:00:00Z", "minimum_spend": "10",
           "charges": [{"code": "api", "meter": "calls", "model": "per_unit", "unit_price": "1"}]}  # fmt: skip
    definition = parse_version(raw, METERS).definition()
    assert "maximum_spend" not in definition and definition["minimum_spend"] == "10"
    assert definition["charges"][0] == {
        "code": "api", "meter": "calls", "model": "per_unit", "unit_price": "1",
    }  # fmt: skip


V = "price_books[0].versions[0]"
C = f"{V}.charges"


def _set(path: list[Any], value: Any) -> Any:
    def mutate(raw: list[Any]) -> None:
        node: Any = raw
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


VC = [0, "versions", 0, "charges"]
ERRORS = [
    ("rate above 1", _set([*VC, 0, "rate"], "1.5"), f"{C}[0].rate",
     "must be a decimal between 0 and 1"),
    ("rate negative", _set([*VC, 0, "rate"], "-0.1"), f"{C}[0].rate",
     "must be a decimal between 0 and 1"),
    ("rate as float", _set([*VC, 0, "rate"], 0.029), f"{C}[0].rate", "is a float"),
    ("rate missing", _set([*VC, 0, "rate"], KeyError), f"{C}[0]", "missing field 'rate'"),
    ("free_events fractional", _set([*VC, 0, "free_events"], "1.5"), f"{C}[0].free_events",
     "must be a whole number at least 0"),
    ("fixed_fee negative", _set([*VC, 0, "fixed_fee"], "-1"), f"{C}[0].fixed_fee",
     "must not be negative"),
    ("tier rate above 1", _set([*VC, 1, "tiers", 1, "rate"], "2"), f"{C}[1].tiers[1].rate",
     "must be a decimal between 0 and 1"),
    ("tier unit_price in a rate tier", _set([*VC, 1, "tiers", 0, "unit_price"], "1"),
     f"{C}[1].tiers[0].unit_price", "unknown field 'unit_price'"),
    ("multiplier negative", _set([*VC, 2, "multiplier"], "-1"), f"{C}[2].multiplier",
     "must not be negative"),
    ("free_units on graduated_percentage", _set([*VC, 1, "free_units"], "1"),
     f"{C}[1].free_units", "unknown field 'free_units'"),
    ("free_units negative", _set([*VC, 3, "free_units"], "-1"), f"{C}[3].free_units",
     "must not be negative"),
    ("conversion round", _set([*VC, 4, "conversion", "round"], "sideways"),
     f"{C}[4].conversion.round", "unknown round 'sideways'; expected one of up, down, half_up"),
    ("conversion divide_by 0", _set([*VC, 4, "conversion", "divide_by"], 0),
     f"{C}[4].conversion.divide_by", "must be positive"),
    ("conversion precision", _set([*VC, 4, "conversion", "precision"], 13),
     f"{C}[4].conversion.precision", "between 0 and 12"),
    ("conversion empty", _set([*VC, 4, "conversion"], {}), f"{C}[4].conversion",
     "needs multiply_by or divide_by"),
    ("maximum below minimum", _set([0, "versions", 0, "maximum_spend"], "50"),
     f"{V}.minimum_spend", "is above the maximum spend 50"),
    ("spend prorate not bool", _set([0, "versions", 0, "minimum_spend", "prorate"], "no"),
     f"{V}.minimum_spend.prorate", "expected true or false"),
    ("reserved cap code", _set([*VC, 2, "code"], "maximum_spend"), f"{C}[2].code",
     "reserved for the cap line"),
    ("percentage of a count", _set([*VC, 0, "meter"], "calls"), f"{C}[0].meter",
     "model percentage prices a sum: meter 'calls' must have aggregation sum"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"), [pytest.param(m, p, f, id=n) for n, m, p, f in ERRORS]
)
def test_invalid_new_fields_name_their_path(mutate: Any, path: str, fragment: str) -> None:
    raw = copy.deepcopy(books())
    mutate(raw)
    with pytest.raises(MeterlineError) as info:
        parse_price_books(raw, METERS, sums=SUMS)
    assert info.value.code is ErrorCode.INVALID_CATALOG
    assert info.value.details["path"] == path
    assert info.value.message.startswith(f"{path}: ")
    assert fragment in info.value.message
