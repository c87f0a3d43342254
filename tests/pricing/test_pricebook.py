"""Price book resolution as known at a seq (DESIGN §2, §5)."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from itertools import pairwise
from typing import Any

import pytest

from meterline.domain.canonical import content_hash
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import Flat, PerUnit
from meterline.pricing.pricebook import PriceBook, PriceVersion, VersionSpec

USD = Currency("USD")


def T(text: str) -> int:
    return parse_rfc3339(f"2024-{text}Z")


def version(
    label: str,
    at: str,
    seq: int,
    price: str = "0.02",
    supersedes: str | None = None,
    reason: str | None = None,
    retroactive: bool = False,
) -> PriceVersion:
    spec = VersionSpec(
        label=label,
        effective_from=T(at),
        charges=(PerUnit("api", "api_calls", Decimal(price)),),
        supersedes=supersedes,
        reason=reason,
        retroactive=retroactive,
    )
    return spec.recorded(seq)


# v1 from Jan 1 (seq 1); v2 from Jan 15 (seq 2); v1b corrects v1 (seq 5);
# v3 from Jan 10 recorded late, retroactively (seq 7).
V1 = version("v1", "01-01T00:00:00", 1)
V2 = version("v2", "01-15T00:00:00", 2, "0.03")
V1B = version("v1b", "01-01T00:00:00", 5, "0.019", supersedes="v1", reason="typo in v1")
V3 = version("v3", "01-10T00:00:00", 7, "0.025", retroactive=True, reason="price fix")
BOOK = PriceBook("standard", USD, Rounding.HALF_UP, (V1, V2, V1B, V3))


@pytest.mark.parametrize(
    ("at", "known_at", "expected"),
    [
        ("01-01T00:00:00", 1, "v1"),  # exactly at effective_from: in effect
        ("01-14T23:59:59", 4, "v1"),
        ("01-15T00:00:00", 4, "v2"),  # half-open: the new version starts at its instant
        ("01-31T00:00:00", 1, "v1"),  # v2 not yet known at seq 1
        ("01-10T00:00:00", 4, "v1"),  # the correction is not known before seq 5
        ("01-10T00:00:00", 5, "v1b"),  # same effective_from, later seq: supersedes
        ("01-10T00:00:00", 6, "v1b"),
        ("01-10T00:00:00", 7, "v3"),  # retroactive version known from seq 7
        ("01-09T23:59:59", 100, "v1b"),
        ("01-20T00:00:00", 100, "v2"),
    ],
)
def test_version_at(at: str, known_at: int, expected: str) -> None:
    assert BOOK.version_at(T(at), known_at).label == expected


@pytest.mark.parametrize(
    ("at", "known_at"), [("2023-12-31T23:59:59Z", 100), ("2024-01-10T00:00:00Z", 0)]
)
def test_no_price_for_date(at: str, known_at: int) -> None:
    with pytest.raises(MeterlineError) as info:
        BOOK.version_at(parse_rfc3339(at), known_at)
    assert info.value.code is ErrorCode.NO_PRICE_FOR_DATE
    assert "standard" in info.value.message
    assert info.value.details["known_at"] == known_at


def labels_and_bounds(start: str, end: str, known_at: int) -> list[tuple[str, int, int]]:
    return [(s.version.label, s.start, s.end) for s in BOOK.segments(T(start), T(end), known_at)]


def test_segments_across_two_changes() -> None:
    assert labels_and_bounds("01-01T00:00:00", "02-01T00:00:00", 100) == [
        ("v1b", T("01-01T00:00:00"), T("01-10T00:00:00")),
        ("v3", T("01-10T00:00:00"), T("01-15T00:00:00")),
        ("v2", T("01-15T00:00:00"), T("02-01T00:00:00")),
    ]


@pytest.mark.parametrize(
    ("start", "end", "known_at", "expected"),
    [
        ("01-01T00:00:00", "02-01T00:00:00", 4, [("v1", "01-01T00:00:00", "01-15T00:00:00"),
                                                 ("v2", "01-15T00:00:00", "02-01T00:00:00")]),
        ("01-01T00:00:00", "02-01T00:00:00", 1, [("v1", "01-01T00:00:00", "02-01T00:00:00")]),
        ("01-05T12:00:00", "01-12T00:00:00", 100, [("v1b", "01-05T12:00:00", "01-10T00:00:00"),
                                                   ("v3", "01-10T00:00:00", "01-12T00:00:00")]),
        # a boundary exactly at the interval's start or end makes no empty piece
        ("01-15T00:00:00", "02-01T00:00:00", 100, [("v2", "01-15T00:00:00", "02-01T00:00:00")]),
        ("01-10T00:00:00", "01-15T00:00:00", 100, [("v3", "01-10T00:00:00", "01-15T00:00:00")]),
    ],
)  # fmt: skip
def test_segments(
    start: str, end: str, known_at: int, expected: list[tuple[str, str, str]]
) -> None:
    assert labels_and_bounds(start, end, known_at) == [(v, T(s), T(e)) for v, s, e in expected]


def test_segments_tile_the_interval() -> None:
    pieces = BOOK.segments(T("01-03T00:00:00"), T("01-29T00:00:00"), 100)
    assert pieces[0].start == T("01-03T00:00:00") and pieces[-1].end == T("01-29T00:00:00")
    assert all(a.end == b.start for a, b in pairwise(pieces))
    assert sum(p.duration for p in pieces) == T("01-29T00:00:00") - T("01-03T00:00:00")


def test_empty_interval_has_no_segments() -> None:
    assert BOOK.segments(T("01-03T00:00:00"), T("01-03T00:00:00"), 100) == ()


def test_inverted_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="after end"):
        BOOK.segments(T("01-04T00:00:00"), T("01-03T00:00:00"), 100)


def test_segments_starting_before_the_first_version() -> None:
    with pytest.raises(MeterlineError) as info:
        BOOK.segments(parse_rfc3339("2023-12-15T00:00:00Z"), T("01-15T00:00:00"), 100)
    assert info.value.code is ErrorCode.NO_PRICE_FOR_DATE


def test_content_hash_covers_the_definition_not_the_seq() -> None:
    spec = VersionSpec(
        label="v1", effective_from=T("01-01T00:00:00"), charges=(Flat("platform", Decimal(49)),)
    )
    assert spec.recorded(1).content_hash == spec.recorded(99).content_hash == spec.content_hash
    same_value = VersionSpec(
        label="v1",
        effective_from=T("01-01T00:00:00"),
        charges=(Flat("platform", Decimal("49.00")),),
    )
    assert same_value.content_hash == spec.content_hash  # value, not spelling
    assert len(spec.content_hash) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"label": "v1x"},
        {"effective_from": T("01-02T00:00:00")},
        {"charges": (Flat("platform", Decimal(50)),)},
        {"charges": (Flat("platform", Decimal(49), prorate=False),)},
        {"minimum_spend": Decimal(100)},
        {"reason": "because"},
        {"retroactive": True, "reason": "because"},
        {"supersedes": "v0", "reason": "because"},
    ],
)
def test_any_change_to_the_definition_changes_the_hash(change: dict[str, Any]) -> None:
    before = VersionSpec(
        label="v1", effective_from=T("01-01T00:00:00"), charges=(Flat("platform", Decimal(49)),)
    )
    after = replace(before, **change)
    assert after.content_hash == content_hash(after.definition())  # recomputed, not copied
    assert before.content_hash != after.content_hash


def test_definition_is_plain_canonical_data() -> None:
    assert V1B.definition() == {
        "version": "v1b",
        "effective_from": "2024-01-01T00:00:00Z",
        "supersedes": "v1",
        "reason": "typo in v1",
        "retroactive": False,
        "minimum_spend": None,
        "charges": [
            {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": "0.019"}
        ],
    }


def test_duplicate_charge_codes_and_labels_are_refused() -> None:
    charge = Flat("platform", Decimal(49))
    with pytest.raises(ValueError, match="charge codes must be unique"):
        VersionSpec(label="v1", effective_from=0, charges=(charge, charge))
    with pytest.raises(ValueError, match="labels must be unique"):
        PriceBook("b", USD, Rounding.HALF_UP, (V1, V1))


def test_version_lookup_by_label() -> None:
    assert BOOK.version("v3") is V3
    with pytest.raises(KeyError):
        BOOK.version("nope")
