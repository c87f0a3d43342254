"""period.closed for billing cycles other than the calendar month (issue 14): weekly and
anniversary periods end on any day, so the cheap per-advance test must not skip them."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from tests.billing_support import catalog, clock
from tests.support import event, ingest

from meterline.billing.customers import Customer, Subscription
from meterline.billing.periods import Anchor, BillingCycle
from meterline.domain.money import Currency
from meterline.domain.timestamps import US_PER_DAY, US_PER_HOUR, parse_rfc3339
from meterline.metering import Aggregation, Meter
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store
from meterline.webhooks import closing

START = parse_rfc3339("2023-11-01T00:00:00Z")


def test_weekly_and_anniversary_periods_close_mid_month(store: Store) -> None:
    """acme: weeks (Monday start), from Monday Jan 1; beta: anniversary weeks from
    Wednesday Jan 3. The watermark moves from Jan 3 to Jan 16: acme's 2024-W01 and
    2024-W02 and beta's week from Jan 3 have closed; a monthly-only shortcut would
    have announced none of them (no month ended)."""
    doc = catalog()
    doc["customers"] = [
        {
            "id": "acme",
            "name": "Acme",
            "currency": "USD",
            "subscriptions": [
                {"price_book": "standard", "start": "2024-01-01T00:00:00Z", "billing_cycle": "week"}
            ],
        },
        {
            "id": "beta",
            "name": "Beta",
            "currency": "USD",
            "subscriptions": [
                {
                    "price_book": "standard",
                    "start": "2024-01-03T00:00:00Z",
                    "billing_cycle": "week",
                    "anchor": "subscription",
                }
            ],
        },
    ]
    apply_catalog(store, doc, parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(store, clock("2024-01-03T12:00:00Z"), [event("a", time="2024-01-03T01:00:00Z")])
    assert closed(store) == []
    ingest(
        store,
        clock("2024-01-16T12:00:00Z"),
        [event("hb", customer="nobody", type_="ping", time="2024-01-16T11:00:00Z")],
    )
    assert closed(store) == [
        ("acme", "2024-W01"),
        ("acme", "2024-W02"),
        ("beta", "2024-01-03"),  # the week from Jan 10 ends on the 17th
    ]


def closed(store: Store) -> list[tuple[str, str]]:
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT customer_id, period_label FROM webhook_period_closings "
                "ORDER BY customer_id, period_label"
            )
        ).all()
    return [(str(c), str(p)) for c, p in rows]


CYCLES = st.sampled_from(list(BillingCycle))


@settings(max_examples=200, deadline=None)
@given(
    cycle=CYCLES,
    anniversary=st.booleans(),
    zone=st.sampled_from(["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati"]),
    start_offset=st.integers(0, 60 * US_PER_DAY),
    lateness=st.integers(0, 2 * US_PER_DAY),
    after=st.integers(START, START + 400 * US_PER_DAY),
    step=st.integers(1, 3 * US_PER_DAY),
)
def test_the_cheap_test_never_skips_a_closing_of_any_cycle(
    cycle: BillingCycle,
    anniversary: bool,
    zone: str,
    start_offset: int,
    lateness: int,
    after: int,
    step: int,
) -> None:
    anchor = Anchor.SUBSCRIPTION if anniversary else Anchor.CALENDAR
    sub = Subscription("standard", START + start_offset, None, cycle, anchor)
    customer = Customer("acme", "Acme", Currency("USD"), zone, Decimal(0), (sub,))
    meters = [Meter("m", "api_call", Aggregation.COUNT, None, (), US_PER_HOUR, lateness)]
    through = after + step
    any_day = cycle is BillingCycle.WEEK or anniversary
    found = list(closing.due([customer], meters, after, through))
    if found:
        assert closing.may_close(after, through, closing.max_extra_us(meters), any_day)
    for _, p, at in found:
        assert after < at <= through and at >= p.end
        assert customer.subscriptions_in(p.start, p.end)
