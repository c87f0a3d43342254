"""Coupons (DESIGN §7): percent_off or amount_off, on all usage or listed charges, for
once, repeating N or forever; after minimum and maximum, before tax; a negative line."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterline.billing import body as typed
from meterline.billing.coupons import Coupon, Duration, apply_coupons, parse_coupon
from meterline.billing.periods import Anchor, BillingCycle, Cycle
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import parse_rfc3339

USD = Currency("USD")
USAGE = frozenset({"minimum_spend", "maximum_spend"})
JAN = parse_rfc3339("2024-01-01T00:00:00Z")


def line(charge: str, amount: str, meter: str | None = "m", model: str = "per_unit") -> Any:
    return typed.Line(
        line=1, charge=charge, description=charge, price_book="b", model=model, meter=meter,
        dimensions={}, quantity=None, unit_price=None, amount=Decimal(amount), formula="",
        explanation=None, usage=None,
    )  # fmt: skip


INVOICE = [
    line("api", "80.00"),
    line("storage", "40.00"),
    line("platform", "49.00", meter=None, model="flat"),
]


def coupon(**kw: Any) -> Coupon:
    base: dict[str, Any] = {"code": "C", "start": JAN, "duration": Duration.FOREVER}
    return Coupon(**{**base, **kw})


@pytest.mark.parametrize(
    ("coupons", "lines", "expected"),
    [
        pytest.param(
            [coupon(percent_off=Decimal(10))], INVOICE, [("-12.00", "-(10% x 120.00) = -12.00")],
            id="10% off all usage 80 + 40 (not the 49 flat fee) = -12.00",
        ),
        pytest.param(
            [coupon(amount_off=Decimal(25))], INVOICE, [("-25.00", "-(25.00 off) = -25.00")],
            id="25.00 off all usage = -25.00",
        ),
        pytest.param(
            [coupon(amount_off=Decimal(500))], INVOICE,
            [("-120.00", "-(500.00 off, at most the 120.00 discounted) = -120.00")],
            id="500.00 off 120.00 of usage takes the whole 120.00, never more",
        ),
        pytest.param(
            [coupon(percent_off=Decimal(50), charges=("platform",))], INVOICE,
            [("-24.50", "-(50% x 49.00) = -24.50")],
            id="50% off the listed flat charge platform 49.00 = -24.50",
        ),
        pytest.param(
            [coupon(percent_off=Decimal("12.5"))],
            [line("api", "600.00"), line("maximum_spend", "-100.00", None, "maximum_spend")],
            [("-62.50", "-(12.5% x 500.00) = -62.50")],
            id="12.5% after the cap: usage 600 capped at 500 = -62.50",
        ),
        pytest.param(
            [coupon(code="A", amount_off=Decimal(100)), coupon(code="B", percent_off=Decimal(10))],
            INVOICE, [("-100.00", "-(100.00 off) = -100.00"), ("-2.00", "-(10% x 20.00) = -2.00")],
            id="100.00 off then 10% of what is left 20.00 = -2.00",
        ),
        pytest.param(
            [coupon(percent_off=Decimal(10))], [line("api", "0.00")], [],
            id="nothing to discount: no line",
        ),
        pytest.param(
            [coupon(percent_off=Decimal("0.1"))], [line("api", "1.00")], [],
            id="0.1% of 1.00 = 0.001 rounds to 0.00: no line",
        ),
    ],
)  # fmt: skip
def test_discounts(
    coupons: list[Coupon], lines: list[Any], expected: list[tuple[str, str]]
) -> None:
    out = apply_coupons(coupons, lines, USAGE, USD, Rounding.HALF_UP)
    assert [(str(d.amount), d.formula) for d in out] == expected


MONTHS = Cycle()


@pytest.mark.parametrize(
    ("duration", "periods", "applies"),
    [
        pytest.param(Duration.ONCE, None, [False, True, False, False], id="once: February only"),
        pytest.param(
            Duration.REPEATING, 2, [False, True, True, False], id="repeating 2: Feb and Mar",
        ),
        pytest.param(Duration.FOREVER, None, [False, True, True, True], id="forever from Feb"),
    ],
)  # fmt: skip
def test_durations_count_billing_periods(
    duration: Duration, periods: int | None, applies: list[bool]
) -> None:
    c = coupon(
        start=parse_rfc3339("2024-02-10T00:00:00Z"), duration=duration, periods=periods,
        percent_off=Decimal(5),
    )  # fmt: skip
    months = [MONTHS.period(MONTHS.index_of(JAN) + k) for k in range(4)]
    assert [c.applies(MONTHS, p) for p in months] == applies


def test_repeating_counts_anniversary_periods() -> None:
    cycle = Cycle(
        BillingCycle.MONTH, Anchor.SUBSCRIPTION, anchor_us=parse_rfc3339("2024-01-15T00:00:00Z")
    )
    c = coupon(duration=Duration.REPEATING, periods=2, percent_off=Decimal(5))
    first = cycle.index_of(JAN)  # the period from Dec 15 holds the coupon's start
    assert [c.applies(cycle, cycle.period(first + k)) for k in range(3)] == [True, True, False]


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({"code": "X", "start": "2024-01-01T00:00:00Z", "duration": "once"}, "coupons[0]",
         "exactly one of percent_off or amount_off"),
        ({"code": "X", "start": "2024-01-01T00:00:00Z", "duration": "once", "percent_off": 150},
         "coupons[0].percent_off", "a percentage in (0, 100]"),
        ({"code": "X", "start": "2024-01-01T00:00:00Z", "duration": "once", "amount_off": "1.001"},
         "coupons[0].amount_off", "more digits than USD allows"),
        ({"code": "X", "start": "2024-01-01T00:00:00Z", "duration": "repeating", "amount_off": 1},
         "coupons[0]", "missing field 'periods'"),
        ({"code": "X", "start": "2024-01-01T00:00:00Z", "duration": "once", "amount_off": 1,
          "periods": 2}, "coupons[0].periods", "only a repeating coupon"),
        ({"code": "X", "start": "2024-01-01T00:00:00Z", "duration": "always", "amount_off": 1},
         "coupons[0].duration", "unknown duration 'always'"),
    ],
)  # fmt: skip
def test_invalid_coupons_name_their_path(raw: dict[str, Any], path: str, fragment: str) -> None:
    with pytest.raises(MeterlineError) as info:
        parse_coupon(raw, "coupons[0]", USD)
    assert info.value.code is ErrorCode.INVALID_CATALOG
    assert info.value.details["path"] == path and fragment in info.value.message
