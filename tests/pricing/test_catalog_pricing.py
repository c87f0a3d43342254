"""The `price_books` part of a catalog: parsing and precise INVALID_CATALOG errors (DESIGN §12)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import yaml

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Rounding
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.catalog import parse_price_books, parse_version
from meterline.pricing.charges import Flat, Graduated, Package, PerUnit, Tier, Volume

METERS = frozenset({"api_calls", "tokens", "storage"})

CATALOG_YAML = """
meters:
  - {code: api_calls, event_type: api_call, aggregation: count, window: 1h, allowed_lateness: 3h}
  - {code: tokens, event_type: llm_call, aggregation: sum, property: tokens, group_by: [model]}
price_books:
  - code: standard
    currency: USD
    rounding: half_up
    versions:
      - version: v1
        effective_from: "2024-01-01T00:00:00Z"
        minimum_spend: "100.00"
        charges:
          - {code: api, meter: api_calls, model: graduated, tiers: [
              {up_to: 1000, unit_price: "0.02"}, {up_to: 10000, unit_price: "0.015"},
              {up_to: null, unit_price: "0.01"}]}
          - {code: platform, model: flat, amount: "49.00"}
          - {code: tok, meter: tokens, model: package, package_size: 1000, package_price: "0.50"}
      - version: v2
        effective_from: 2024-01-15T00:00:00Z
        charges:
          - {code: api, meter: api_calls, model: per_unit, unit_price: "0.015"}
      - version: v1b
        effective_from: "2024-01-01T00:00:00Z"
        supersedes: v1
        reason: "v1 had the wrong minimum"
        retroactive: true
        charges:
          - {code: platform, model: flat, amount: 49, prorate: false}
  - code: volume-jpy
    currency: JPY
    rounding: half_even
    versions:
      - version: "2024-01"
        effective_from: "2024-01-01T09:00:00+09:00"
        charges:
          - {code: storage, meter: storage, model: volume, tiers: [
              {up_to: 100, unit_price: 3, flat_fee: "100"}, {up_to: null, unit_price: "2.5"}]}
"""


def catalog() -> dict[str, Any]:
    loaded = yaml.safe_load(CATALOG_YAML)
    assert isinstance(loaded, dict)
    return loaded


def test_the_design_example_parses_into_domain_objects() -> None:
    standard, jpy = parse_price_books(catalog()["price_books"], METERS)
    assert (standard.code, standard.currency.code, standard.rounding) == (
        "standard",
        "USD",
        Rounding.HALF_UP,
    )
    v1, v2, v1b = standard.versions
    assert v1.effective_from == parse_rfc3339("2024-01-01T00:00:00Z")
    assert v2.effective_from == parse_rfc3339("2024-01-15T00:00:00Z")  # unquoted YAML timestamp
    assert v1.minimum_spend == Decimal("100.00")
    assert v1.charges == (
        Graduated(
            "api",
            "api_calls",
            (
                Tier(Decimal(1000), Decimal("0.02")),
                Tier(Decimal(10000), Decimal("0.015")),
                Tier(None, Decimal("0.01")),
            ),
        ),
        Flat("platform", Decimal("49.00")),
        Package("tok", "tokens", Decimal(1000), Decimal("0.50")),
    )
    assert v2.charges == (PerUnit("api", "api_calls", Decimal("0.015")),)
    assert (v1b.supersedes, v1b.reason, v1b.retroactive) == ("v1", "v1 had the wrong minimum", True)
    assert v1b.charges == (Flat("platform", Decimal(49), prorate=False),)
    assert jpy.currency.minor_digits == 0 and jpy.rounding is Rounding.HALF_EVEN
    assert jpy.versions[0].effective_from == parse_rfc3339("2024-01-01T00:00:00Z")
    assert jpy.versions[0].charges == (
        Volume(
            "storage",
            "storage",
            (Tier(Decimal(100), Decimal(3), Decimal(100)), Tier(None, Decimal("2.5"))),
        ),
    )


def test_rounding_defaults_to_half_up_and_missing_price_books_is_empty() -> None:
    raw = catalog()["price_books"]
    del raw[0]["rounding"]
    assert parse_price_books(raw, METERS)[0].rounding is Rounding.HALF_UP
    assert parse_price_books(None, METERS) == ()


def test_definition_round_trips_through_the_parser() -> None:
    for book in parse_price_books(catalog()["price_books"], METERS):
        for version in book.versions:
            again = parse_version(version.definition(), METERS)
            assert again == version
            assert again.content_hash == version.content_hash


def test_parsing_the_same_catalog_twice_gives_the_same_hashes() -> None:
    first = parse_price_books(catalog()["price_books"], METERS)
    second = parse_price_books(catalog()["price_books"], METERS)
    assert [v.content_hash for b in first for v in b.versions] == [
        v.content_hash for b in second for v in b.versions
    ]


Mutation = Callable[[dict[str, Any]], None]
B0 = "price_books[0]"
V0 = f"{B0}.versions[0]"
C0 = f"{V0}.charges[0]"


def _book(c: dict[str, Any]) -> dict[str, Any]:
    book: dict[str, Any] = c["price_books"][0]
    return book


def _version(c: dict[str, Any], i: int = 0) -> dict[str, Any]:
    version: dict[str, Any] = _book(c)["versions"][i]
    return version


def _charge(c: dict[str, Any], i: int = 0) -> dict[str, Any]:
    charge: dict[str, Any] = _version(c)["charges"][i]
    return charge


def _tier(c: dict[str, Any], i: int) -> dict[str, Any]:
    tier: dict[str, Any] = _charge(c)["tiers"][i]
    return tier


ERRORS: list[tuple[str, Mutation, str, str]] = [
    ("tiers not increasing", lambda c: _tier(c, 1).update(up_to=500),
     f"{C0}.tiers[1]", "up_to 500 must be greater than the previous up_to 1000"),
    ("equal up_to", lambda c: _tier(c, 1).update(up_to=1000),
     f"{C0}.tiers[1]", "strictly increasing"),
    ("null up_to before the last tier", lambda c: _tier(c, 0).update(up_to=None),
     f"{C0}.tiers[0]", "only the last tier may have up_to: null"),
    ("last tier bounded", lambda c: _tier(c, 2).update(up_to=20000),
     f"{C0}.tiers[2]", "the last tier must have up_to: null"),
    ("zero up_to", lambda c: _tier(c, 0).update(up_to=0), f"{C0}.tiers[0]", "must be positive"),
    ("no tiers", lambda c: _charge(c).update(tiers=[]), f"{C0}.tiers", "at least one tier"),
    ("negative price", lambda c: _tier(c, 1).update(unit_price="-0.015"),
     f"{C0}.tiers[1].unit_price", "price -0.015 must not be negative"),
    ("negative flat fee", lambda c: _tier(c, 1).update(flat_fee=-1),
     f"{C0}.tiers[1].flat_fee", "must not be negative"),
    ("negative minimum", lambda c: _version(c).update(minimum_spend="-1"),
     f"{V0}.minimum_spend", "must not be negative"),
    ("price as YAML float", lambda c: _tier(c, 1).update(unit_price=0.015),
     f"{C0}.tiers[1].unit_price", "0.015 is a float, which is not exact"),
    ("up_to as float", lambda c: _tier(c, 0).update(up_to=1000.0),
     f"{C0}.tiers[0].up_to", "is a float"),
    ("flat amount as float", lambda c: _charge(c, 1).update(amount=49.0),
     f"{V0}.charges[1].amount", "is a float"),
    ("price as boolean", lambda c: _tier(c, 0).update(unit_price=True),
     f"{C0}.tiers[0].unit_price", "expected a number, got the boolean true"),
    ("price not a number", lambda c: _tier(c, 0).update(unit_price="two cents"),
     f"{C0}.tiers[0].unit_price", "'two cents' is not a decimal number"),
    ("unknown meter", lambda c: _charge(c).update(meter="api_call"),
     f"{C0}.meter", "unknown meter 'api_call'"),
    ("unknown model", lambda c: _charge(c).update(model="tiered"),
     f"{C0}.model", "unknown model 'tiered'; expected one of dynamic, flat, graduated, graduated_percentage, package, per_unit, percentage, volume"),
    ("missing model", lambda c: _charge(c).pop("model"), C0, "missing field 'model'"),
    ("missing unit_price", lambda c: _tier(c, 0).pop("unit_price"),
     f"{C0}.tiers[0]", "missing field 'unit_price'"),
    ("missing up_to", lambda c: _tier(c, 0).pop("up_to"),
     f"{C0}.tiers[0]", "missing field 'up_to' (use null for no limit)"),
    ("missing meter", lambda c: _charge(c).pop("meter"), C0, "missing field 'meter'"),
    ("missing package_size", lambda c: _charge(c, 2).pop("package_size"),
     f"{V0}.charges[2]", "missing field 'package_size'"),
    ("zero package_size", lambda c: _charge(c, 2).update(package_size=0),
     f"{V0}.charges[2].package_size", "must be positive"),
    ("missing effective_from", lambda c: _version(c).pop("effective_from"),
     V0, "missing field 'effective_from'"),
    ("missing currency", lambda c: _book(c).pop("currency"), B0, "missing field 'currency'"),
    ("unknown field", lambda c: _version(c).update(minimum_spent="100"),
     f"{V0}.minimum_spent", "unknown field 'minimum_spent'"),
    ("non-ISO currency", lambda c: _book(c).update(currency="USX"),
     f"{B0}.currency", "'USX' is not an ISO 4217 currency code"),
    ("lower-case currency", lambda c: _book(c).update(currency="usd"),
     f"{B0}.currency", "upper case"),
    ("unknown rounding", lambda c: _book(c).update(rounding="bankers"),
     f"{B0}.rounding", "unknown rounding 'bankers'"),
    ("flat charge with a meter", lambda c: _charge(c, 1).update(meter="api_calls"),
     f"{V0}.charges[1].meter", "a flat charge is not tied to a meter"),
    ("prorate not a boolean", lambda c: _charge(c, 1).update(prorate="no"),
     f"{V0}.charges[1].prorate", "expected true or false"),
    ("duplicate charge code", lambda c: _charge(c, 1).update(code="api"),
     f"{V0}.charges[1].code", "duplicate charge code 'api' (also price_books[0].versions[0].charges[0])"),
    ("reserved charge code", lambda c: _charge(c, 1).update(code="minimum_spend"),
     f"{V0}.charges[1].code", "reserved"),
    ("bad code", lambda c: _charge(c).update(code="my api"), f"{C0}.code", "not a valid code"),
    ("naive timestamp", lambda c: _version(c).update(effective_from="2024-01-01T00:00:00"),
     f"{V0}.effective_from", "explicit offset"),
    ("date, not an instant", lambda c: _version(c).update(effective_from=yaml.safe_load("2024-01-01")),
     f"{V0}.effective_from", "is a date"),
    ("no versions", lambda c: _book(c).update(versions=[]),
     f"{B0}.versions", "at least one version"),
    ("versions not a list", lambda c: _book(c).update(versions={"v1": {}}),
     f"{B0}.versions", "expected a list, got dict"),
    ("duplicate version label", lambda c: _version(c, 1).update(version="v1"),
     f"{B0}.versions[1].version", "duplicate version label 'v1'"),
    ("same effective_from without supersedes", lambda c: _version(c, 2).pop("supersedes"),
     f"{B0}.versions[2].effective_from", "a correction needs supersedes: v1 and a reason"),
    ("supersedes an unknown version", lambda c: _version(c, 2).update(supersedes="v0"),
     f"{B0}.versions[2].supersedes", "supersedes 'v0', which is not a version of this price book"),
    ("supersedes a later version", lambda c: _version(c, 0).update(supersedes="v1b", reason="x"),
     f"{V0}.supersedes", "which is listed after this version"),
    ("supersedes from another date", lambda c: _version(c, 2).update(supersedes="v2"),
     f"{B0}.versions[2].effective_from", "must keep its effective_from 2024-01-15T00:00:00Z"),
    ("supersedes without a reason", lambda c: _version(c, 2).update(reason=None, retroactive=False),
     f"{B0}.versions[2].reason", "a version that supersedes v1 needs a reason"),
    ("retroactive without a reason", lambda c: _version(c, 1).update(retroactive=True),
     f"{B0}.versions[1].reason", "a retroactive version needs a reason"),
    ("blank reason", lambda c: _version(c, 2).update(reason="  "),
     f"{B0}.versions[2].reason", "expected non-empty text"),
    ("charge changes meter", lambda c: _version(c, 1)["charges"][0].update(meter="tokens"),
     f"{B0}.versions[1].charges[0]", "reads meter 'tokens' but in version v1 it reads meter 'api_calls'"),
    ("charge becomes flat", lambda c: _version(c, 2)["charges"].append(
        {"code": "tok", "model": "flat", "amount": "1"}),
     f"{B0}.versions[2].charges[1]", "reads no meter (flat)"),
    ("duplicate book code", lambda c: c["price_books"][1].update(code="standard"),
     "price_books[1].code", "duplicate price book code 'standard' (also price_books[0])"),
    ("book not a mapping", lambda c: c["price_books"].append("premium"),
     "price_books[2]", "expected a mapping, got the text 'premium'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "path", "fragment"),
    [pytest.param(m, p, f, id=name) for name, m, p, f in ERRORS],
)
def test_invalid_catalog(mutate: Mutation, path: str, fragment: str) -> None:
    raw = copy.deepcopy(catalog())
    mutate(raw)
    with pytest.raises(MeterlineError) as info:
        parse_price_books(raw["price_books"], METERS)
    assert info.value.code is ErrorCode.INVALID_CATALOG
    assert info.value.details["path"] == path
    assert info.value.message.startswith(f"{path}: ")
    assert fragment in info.value.message


def test_a_correction_chain_must_supersede_the_latest() -> None:
    raw = catalog()["price_books"]
    raw[0]["versions"].append(
        {
            "version": "v1c",
            "effective_from": "2024-01-01T00:00:00Z",
            "supersedes": "v1",
            "reason": "again",
            "charges": [],
        }
    )
    with pytest.raises(MeterlineError) as info:
        parse_price_books(raw, METERS)
    assert info.value.details["path"] == "price_books[0].versions[3].supersedes"
    assert "v1 is already superseded by v1b; supersede v1b" in info.value.message
    raw[0]["versions"][3]["supersedes"] = "v1b"
    assert parse_price_books(raw, METERS)[0].versions[3].supersedes == "v1b"


def test_yaml_floats_are_refused_but_integers_and_strings_are_exact() -> None:
    text = CATALOG_YAML.replace('unit_price: "0.015"}', "unit_price: 0.015}")
    with pytest.raises(MeterlineError, match=r"tiers\[1\]\.unit_price: 0\.015 is a float"):
        parse_price_books(yaml.safe_load(text)["price_books"], METERS)
