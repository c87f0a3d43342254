"""The period.closed rule (webhooks/closing.py) as pure functions: never earlier
than invoicing accepts the period, and the cheap per-advance test never skips a
closing the full scan would find."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.billing.customers import Customer, Subscription
from meterline.billing.periods import month
from meterline.domain.money import Currency
from meterline.domain.timestamps import US_PER_DAY, US_PER_HOUR, US_PER_MINUTE, parse_rfc3339
from meterline.metering import Aggregation, Meter
from meterline.webhooks import closing

ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
WINDOWS = [US_PER_MINUTE, US_PER_HOUR, US_PER_DAY]
START = parse_rfc3339("2023-11-01T00:00:00Z")


def meter(code: str, window: int, lateness: int) -> Meter:
    return Meter(code, "api_call", Aggregation.COUNT, None, (), window, lateness)


def customer(zone: str) -> Customer:
    return Customer(
        "acme", "Acme", Currency("USD"), zone, Decimal(0), (Subscription("standard", START),)
    )


def test_tokyo_january_closes_after_its_local_end_plus_lateness() -> None:
    jan = month("2024-01", "Asia/Tokyo")
    assert jan.end == parse_rfc3339("2024-01-31T15:00:00Z")
    day = meter("api", US_PER_DAY, US_PER_HOUR)
    # the UTC day window holding 14:59:59Z ends at 2024-02-01T00:00Z, then one hour
    assert closing.closes_at(jan, [day]) == parse_rfc3339("2024-02-01T01:00:00Z")
    assert closing.closes_at(jan, []) == jan.end
    found = list(
        closing.due(
            [customer("Asia/Tokyo")],
            [day],
            parse_rfc3339("2024-02-01T00:59:59Z"),
            parse_rfc3339("2024-02-01T01:00:00Z"),
        )
    )
    assert [(c.id, p.label, at) for c, p, at in found] == [
        ("acme", "2024-01", parse_rfc3339("2024-02-01T01:00:00Z"))
    ]


def test_first_watermark_announces_every_closed_period_of_the_subscription() -> None:
    found = list(closing.due([customer("UTC")], [], None, parse_rfc3339("2024-02-15T00:00:00Z")))
    assert [p.label for _, p, _ in found] == ["2023-11", "2023-12", "2024-01"]


@settings(max_examples=300, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    window=st.sampled_from(WINDOWS),
    lateness=st.integers(0, 3 * US_PER_DAY),
    after=st.integers(START, START + 200 * US_PER_DAY),
    step=st.integers(1, 3 * US_PER_DAY),
)
def test_the_cheap_test_never_skips_a_closing(
    zone: str, window: int, lateness: int, after: int, step: int
) -> None:
    meters = [meter("m", window, lateness)]
    through = after + step
    found = list(closing.due([customer(zone)], meters, after, through))
    if found:
        assert closing.may_close(after, through, closing.max_extra_us(meters))
    for _, p, at in found:
        assert after < at <= through and at >= p.end
