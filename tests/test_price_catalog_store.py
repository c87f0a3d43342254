"""Price books as stored facts (DESIGN §5) on both backends."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.rating import SegmentUsage, rate_additive
from meterline.services.catalog import apply_catalog, load_file
from meterline.store import sequence
from meterline.store.database import Store
from meterline.store.price_catalog import load_price_book

NOW_US = parse_rfc3339("2024-02-10T00:00:00Z")
TIERS = [
    {"up_to": 1000, "unit_price": "0.02"},
    {"up_to": 10000, "unit_price": "0.015"},
    {"up_to": None, "unit_price": "0.01"},
]


def catalog(*versions: dict[str, Any]) -> dict[str, Any]:
    return {
        "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "price_books": [{"code": "standard", "currency": "USD", "versions": list(versions)}],
    }


V1 = {
    "version": "v1",
    "effective_from": "2024-01-01T00:00:00Z",
    "charges": [{"code": "api", "meter": "api_calls", "model": "graduated", "tiers": TIERS}],
}


def t(s: str) -> int:
    return parse_rfc3339(s)


def test_apply_is_idempotent_and_versions_are_immutable(store: Store) -> None:
    first = apply_catalog(store, catalog(V1), NOW_US)
    assert "price standard v1" in first.added
    again = apply_catalog(store, catalog(V1), NOW_US)
    assert again.added == [] and "price standard v1" in again.unchanged
    changed = copy.deepcopy(V1)
    changed["charges"][0]["tiers"][0]["unit_price"] = "0.03"
    with pytest.raises(MeterlineError) as info:
        apply_catalog(store, catalog(changed), NOW_US)
    assert info.value.code == ErrorCode.PRICE_VERSION_IMMUTABLE


def test_equal_decimals_are_the_same_version(store: Store) -> None:
    apply_catalog(store, catalog(V1), NOW_US)
    spelled = copy.deepcopy(V1)
    spelled["charges"][0]["tiers"][0]["unit_price"] = "0.020"
    assert apply_catalog(store, catalog(spelled), NOW_US).added == []


def test_currency_cannot_change(store: Store) -> None:
    apply_catalog(store, catalog(V1), NOW_US)
    doc = catalog(V1)
    doc["price_books"][0]["currency"] = "EUR"
    with pytest.raises(MeterlineError, match="currency"):
        apply_catalog(store, doc, NOW_US)


def test_superseding_version_wins_only_as_known_after_it(store: Store) -> None:
    apply_catalog(store, catalog(V1), NOW_US)
    with store.read() as conn:
        before = sequence.current(conn)
    fix = copy.deepcopy(V1)
    fix.update(version="v1b", supersedes="v1", reason="tier 2 price was mistyped")
    fix["charges"][0]["tiers"][1]["unit_price"] = "0.012"
    apply_catalog(store, catalog(V1, fix), NOW_US)
    with store.read() as conn:
        old = load_price_book(conn, "standard", known_at=before)
        new = load_price_book(conn, "standard")
    jan = t("2024-01-15T00:00:00Z")
    assert old.version_at(jan, before).label == "v1"
    assert new.version_at(jan, sequence_of(store)).label == "v1b"
    segment = new.segments(t("2024-01-01T00:00:00Z"), t("2024-02-01T00:00:00Z"), sequence_of(store))
    rated = rate_additive(new, "api", [SegmentUsage(segment[0], Decimal(12500))])
    assert str(rated.amount) == "153.00"  # 20.00 + 9,000 x 0.012 + 25.00


def sequence_of(store: Store) -> int:
    with store.read() as conn:
        return sequence.current(conn)


def test_no_price_before_the_first_version(store: Store) -> None:
    apply_catalog(store, catalog(V1), NOW_US)
    with store.read() as conn:
        book = load_price_book(conn, "standard")
    with pytest.raises(MeterlineError) as info:
        book.version_at(t("2023-12-31T23:59:59Z"), sequence_of(store))
    assert info.value.code == ErrorCode.NO_PRICE_FOR_DATE


def test_unknown_meter_is_refused(store: Store) -> None:
    bad = copy.deepcopy(V1)
    bad["charges"][0]["meter"] = "nope"
    with pytest.raises(MeterlineError) as info:
        apply_catalog(store, catalog(bad), NOW_US)
    assert info.value.code == ErrorCode.INVALID_CATALOG
    assert "nope" in info.value.message


def test_yaml_and_json_files_keep_prices_exact(store: Store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        "meters: [{code: api_calls, event_type: api_call, aggregation: count}]\n"
        "price_books:\n- code: standard\n  currency: USD\n  versions:\n"
        "  - {version: v1, effective_from: '2024-01-01T00:00:00Z', charges: ["
        "{code: api, meter: api_calls, model: per_unit, unit_price: 0.015}]}\n"
    )
    json_path = tmp_path / "c.json"
    json_path.write_text(
        '{"meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],'
        '"price_books": [{"code": "standard", "currency": "USD", "versions": [{"version": "v1",'
        '"effective_from": "2024-01-01T00:00:00Z", "charges": [{"code": "api", "meter": "api_calls",'
        '"model": "per_unit", "unit_price": 0.015}]}]}]}'
    )
    apply_catalog(store, load_file(str(yaml_path)), NOW_US)
    # The same catalog as JSON is recognised as the same facts: exact either way.
    assert apply_catalog(store, load_file(str(json_path)), NOW_US).added == []
    with store.read() as conn:
        charge = load_price_book(conn, "standard").version("v1").charge("api")
    assert charge is not None and str(charge.unit_price) == "0.015"  # type: ignore[attr-defined]


def test_bad_catalog_file_is_one_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text("meters: [\n")
    with pytest.raises(MeterlineError) as info:
        load_file(str(path))
    assert info.value.code == ErrorCode.INVALID_CATALOG
    path.write_text("prices: []\n")
    with pytest.raises(MeterlineError, match="unknown catalog section"):
        load_file(str(path))
