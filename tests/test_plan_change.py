"""A plan change as one operation (DESIGN §7): `subscription change CUSTOMER --to BOOK
--at TIME` ends the subscription in effect at TIME and starts the next one there; the
unused part of an in-advance fee comes back on the next invoice.

Worked numbers: basic = seat 29.00 in advance a month; pro = seat 58.00 in advance.
Basic from Jan 1; the January invoice bills January and February ahead (29.00 + 29.00).
Change to pro at Feb 16 (February 2024 has 29 days, 14 of them from Feb 16):
the February invoice credits -(29.00 x 14/29) = -14.00 unused time on basic, bills pro's
first period 58.00 x 14/29 = 28.00, and pro for March ahead, 58.00.
"""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from tests.billing_support import FEB_US, clock, close_january
from tests.support import event, ingest

from meterline.billing.customers import Subscription, parse_customer
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us, parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.plan_change import change_plan, changed
from meterline.services.reconcile import reconcile
from meterline.services.verification import verify
from meterline.store.customer_catalog import load_customer
from meterline.store.database import Store

JAN1 = parse_rfc3339("2024-01-01T00:00:00Z")
FEB16 = parse_rfc3339("2024-02-16T00:00:00Z")
MAR1_NOON = parse_rfc3339("2024-03-01T12:00:00Z")


def _book(code: str, amount: str, currency: str = "USD") -> dict[str, Any]:
    return {
        "code": code,
        "currency": currency,
        "versions": [
            {
                "version": "v1",
                "effective_from": "2024-01-01T00:00:00Z",
                "charges": [
                    {"code": "seat", "model": "flat", "amount": amount, "in_advance": True},
                    {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": "1"},
                ],
            }
        ],
    }


CATALOG: dict[str, Any] = {
    "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
    "price_books": [_book("basic", "29.00"), _book("pro", "58.00"), _book("euro", "10.00", "EUR")],
    "customers": [
        {
            "id": "acme",
            "name": "Acme Corp",
            "currency": "USD",
            "subscriptions": [
                {"price_book": "basic", "start": "2024-01-01T00:00:00Z", "threshold": "500"}
            ],
        }
    ],
}


def _setup(store: Store) -> None:
    apply_catalog(store, CATALOG, JAN1)


def lines(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(x["description"], x["amount"]) for x in body["lines"] if x["charge"] == "seat"]


def close_february(store: Store) -> None:
    ingest(
        store,
        clock("2024-03-01T12:00:00Z"),
        [event("hb-mar", customer="nobody", type_="ping", time="2024-03-01T11:00:00Z")],
    )


def test_plan_change_basic_29_to_pro_58_on_feb_16_credits_14_unused_and_bills_28_then_58(
    store: Store,
) -> None:
    _setup(store)
    close_january(store)
    [jan] = invoicing.issue(store, "2024-01", FEB_US).issued
    assert lines(jan.to_dict()) == [
        ("seat (in advance, 2024-01)", "29.00"),
        ("seat (in advance, 2024-02)", "29.00"),
    ]
    result = change_plan(store, "acme", "pro", FEB16, FEB_US)
    assert result.recorded
    assert (result.ended.price_book, result.ended.end) == ("basic", FEB16)
    assert (result.started.price_book, result.started.start, result.started.end) == (
        "pro",
        FEB16,
        None,
    )
    assert result.started.threshold == Decimal(500)  # kept from the old subscription
    close_february(store)
    [feb] = invoicing.issue(store, "2024-02", MAR1_NOON).issued
    assert lines(feb.to_dict()) == [
        ("unused time on basic (seat)", "-14.00"),
        ("seat (in advance, 2024-02)", "28.00"),
        ("seat (in advance, 2024-03)", "58.00"),
    ]
    assert feb.to_dict()["total"] == "72.00"
    assert [s["price_book"] for s in feb.to_dict()["subscriptions"]] == ["basic", "pro"]
    assert verify(store).ok
    assert reconcile(store, full=True).ok


def test_plan_change_is_a_new_customer_version_and_a_retry_is_a_no_op(store: Store) -> None:
    _setup(store)
    change_plan(store, "acme", "pro", FEB16, FEB_US)
    again = change_plan(store, "acme", "pro", FEB16, FEB_US)
    assert not again.recorded
    with store.read() as conn:
        subs = load_customer(conn, "acme").subscriptions
        versions = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM customers WHERE customer_id = 'acme'"
        ).scalar_one()
    assert [(s.price_book, s.start, s.end) for s in subs] == [
        ("basic", JAN1, FEB16),
        ("pro", FEB16, None),
    ]
    assert versions == 2
    # the catalog apply of the same customer as a file would record is unchanged too
    assert apply_catalog(store, {"customers": [_definition(store)]}, FEB_US).unchanged == [
        "customer acme"
    ]


def _definition(store: Store) -> dict[str, Any]:
    with store.read() as conn:
        return load_customer(conn, "acme").definition()


@pytest.mark.parametrize(
    ("to", "at", "code", "fragment"),
    [
        ("nope", "2024-02-16T00:00:00Z", ErrorCode.INVALID_CATALOG, "no price book 'nope'"),
        ("euro", "2024-02-16T00:00:00Z", ErrorCode.INVALID_CATALOG, "is in EUR"),
        ("basic", "2024-02-16T00:00:00Z", ErrorCode.INVALID_ARGUMENT, "already on basic"),
        ("pro", "2023-12-01T00:00:00Z", ErrorCode.NO_SUBSCRIPTION, "no subscription in effect"),
        ("pro", "2024-01-01T00:00:00Z", ErrorCode.INVALID_ARGUMENT, "starts at"),
    ],
)
def test_plan_change_refuses_with_a_clear_code(
    store: Store, to: str, at: str, code: ErrorCode, fragment: str
) -> None:
    _setup(store)
    with pytest.raises(MeterlineError) as info:
        change_plan(store, "acme", to, parse_rfc3339(at), FEB_US)
    assert info.value.code is code and fragment in info.value.message


def test_plan_change_of_an_unknown_customer_is_unknown_customer(store: Store) -> None:
    _setup(store)
    with pytest.raises(MeterlineError) as info:
        change_plan(store, "ghost", "pro", FEB16, FEB_US)
    assert info.value.code is ErrorCode.UNKNOWN_CUSTOMER


def test_changed_ends_the_subscription_in_effect_and_keeps_the_others() -> None:
    customer = parse_customer(
        {
            "id": "c",
            "name": "C",
            "currency": "USD",
            "subscriptions": [
                {
                    "price_book": "old",
                    "start": "2023-01-01T00:00:00Z",
                    "end": "2024-01-01T00:00:00Z",
                    "billing_cycle": "quarter",
                },
                {
                    "price_book": "basic",
                    "start": "2024-01-01T00:00:00Z",
                    "end": "2024-12-01T00:00:00Z",
                    "billing_cycle": "quarter",
                    "trial_days": 10,
                },
            ],
        },
        "c",
    )
    new, ended, started = changed(customer, "pro", FEB16)
    assert new.subscriptions[0] == customer.subscriptions[0]
    assert ended.end == FEB16 and ended.trial_days == 10
    end = parse_rfc3339("2024-12-01T00:00:00Z")
    assert started == Subscription(
        "pro", FEB16, end, ended.billing_cycle, ended.anchor, 0, ended.trial_usage, None
    )


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "meterline", "--db", url, "--now", "2024-02-10T00:00:00Z"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_cli_subscription_change(store: Store) -> None:
    _setup(store)
    out = _cli(
        store.url, "subscription", "change", "acme", "--to", "pro", "--at", "2024-02-16T00:00:00Z"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "changed: acme from basic to pro at 2024-02-16T00:00:00Z"
    again = _cli(
        store.url,
        "subscription", "change", "acme", "--to", "pro", "--at", "2024-02-16T00:00:00Z", "--json",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["recorded"] is False
    bad = _cli(store.url, "subscription", "change", "acme", "--to", "pro", "--at", "yesterday")
    assert bad.returncode not in (0, 70) and "Traceback" not in bad.stderr


def test_an_anniversary_subscription_changes_plan_only_at_a_period_start() -> None:
    customer = parse_customer(
        {
            "id": "c",
            "name": "C",
            "currency": "USD",
            "subscriptions": [
                {"price_book": "basic", "start": "2024-01-20T00:00:00Z", "anchor": "subscription"}
            ],
        },
        "c",
    )
    with pytest.raises(MeterlineError) as info:
        changed(customer, "pro", FEB16)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "2024-01-20T00:00:00Z or 2024-02-20T00:00:00Z" in info.value.message
    at = parse_rfc3339("2024-02-20T00:00:00Z")
    _, ended, started = changed(customer, "pro", at)
    assert (ended.end, started.start, started.anchor) == (at, at, ended.anchor)


def test_an_anniversary_on_the_31st_changes_on_mar_31_but_not_on_the_clamped_feb_29() -> None:
    """Feb 29 starts a period of a Jan 31 anniversary, but a subscription starting there
    would have its anniversary on the 29th: its period `2024-03-29` would overlap the
    old grid's `2024-02-29` .. `2024-03-31`. Refused; Mar 31 keeps the grid."""
    customer = parse_customer(
        {
            "id": "c",
            "name": "C",
            "currency": "USD",
            "subscriptions": [
                {"price_book": "basic", "start": "2024-01-31T00:00:00Z", "anchor": "subscription"}
            ],
        },
        "c",
    )
    with pytest.raises(MeterlineError) as info:
        changed(customer, "pro", parse_rfc3339("2024-02-29T00:00:00Z"))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "would move the anniversary" in info.value.message
    at = parse_rfc3339("2024-03-31T00:00:00Z")
    new, _, started = changed(customer, "pro", at)
    ahead = started.cycle(new.timezone).period_of(parse_rfc3339("2024-04-30T12:00:00Z"))
    assert (format_us(ahead.start), format_us(ahead.end)) == (
        "2024-04-30T00:00:00Z",
        "2024-05-31T00:00:00Z",
    )
