"""percentage: rate x the meter's sum + fixed fee per event, with free amount and events."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import USD, amount, rate

from meterline.pricing.charges import Percentage
from meterline.pricing.percentage import PercentagePosition, price_percentage


def pct(rate_: str, fee: str = "0", free: str = "0", free_events: int = 0) -> Percentage:
    return Percentage("fees", "payments", Decimal(rate_), Decimal(fee), Decimal(free), free_events)


@pytest.mark.parametrize(
    ("charge", "total", "events", "expected", "formula"),
    [
        pytest.param(
            pct("0.012"), "5000", None, "60.00", "1.2% x 5,000 = 60.00",
            id="1.2% of 5,000.00 = 60.00",
        ),
        pytest.param(
            pct("0.029", "0.30"), "12000", 400, "468.00",
            "2.9% x 12,000 + 0.30 x 400 events = 468.00",
            id="2.9% of 12,000.00 + 0.30 x 400 events = 348.00 + 120.00 = 468.00",
        ),
        pytest.param(
            pct("0.012", free="500"), "5000", None, "54.00",
            "1.2% x 4,500 (500 free) = 54.00",
            id="1.2% of 5,000.00 with 500.00 free = 54.00",
        ),
        pytest.param(
            pct("0.01", "0.10", free_events=3), "1000", 10, "10.70",
            "1% x 1,000 + 0.10 x 7 events (3 free) = 10.70",
            id="1% of 1,000.00 + 0.10 x (10 - 3 free) events = 10.70",
        ),
        pytest.param(
            pct("0.01", "0.10", "500", 3), "400", 2, "0.00",
            "1% x 0 (400 free) + 0.10 x 0 events (2 free) = 0.00",
            id="all free: 400.00 of 500.00 free and 2 of 3 free events = 0.00",
        ),
        pytest.param(
            pct("0.015"), "0.50", None, "0.01", "1.5% x 0.5 = 0.01",
            id="1.5% of 0.50 = 0.0075, rounded once = 0.01",
        ),
        pytest.param(
            pct("0.02"), "0", 0, "0.00", "2% x 0 = 0.00", id="zero payments = 0.00",
        ),
        pytest.param(
            pct("0.02"), "-250", None, "-5.00", "2% x -250 = -5.00",
            id="refunds above payments: 2% of -250.00 = -5.00",
        ),
    ],
)  # fmt: skip
def test_percentage_one_segment(
    charge: Percentage, total: str, events: int | None, expected: str, formula: str
) -> None:
    rated = rate("fees", (charge,), usage=((total, events),))
    assert amount(rated) == expected
    assert rated.explanation.formula == formula


def test_free_amount_and_free_events_carry_across_a_price_change_1_pct_then_2_pct() -> None:
    """v1 1% + 0.10, v2 2% + 0.20; 1,000.00 free, 5 free events.
    v1: 600.00 and 4 events, all free = 0; v2: 900.00 (400 free) and 6 events (1 free):
    2% x 500 + 0.20 x 5 = 11.00."""
    v1 = Percentage("fees", "payments", Decimal("0.01"), Decimal("0.10"), Decimal(1000), 5)
    v2 = Percentage("fees", "payments", Decimal("0.02"), Decimal("0.20"), Decimal(1000), 5)
    rated = rate("fees", (v1,), (v2,), usage=(("600", 4), ("900", 6)))
    assert amount(rated) == "11.00"
    assert rated.explanation.formula == (
        "v1: 1% x 0 (600 free) + 0.10 x 0 events (4 free) + "
        "v2: 2% x 500 (400 free) + 0.20 x 5 events (1 free) = 11.00"
    )


def test_a_fixed_fee_without_the_event_count_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the event count"):
        price_percentage(pct("0.01", "0.10"), Decimal(100), None, USD)


def test_free_amount_on_a_negative_sum_is_refused() -> None:
    with pytest.raises(ValueError, match="negative sum"):
        price_percentage(pct("0.01", free="10"), Decimal(-5), None, USD, PercentagePosition())


def test_rate_outside_0_to_1_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        pct("1.5")
