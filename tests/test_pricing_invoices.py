"""The new charge models, spend limits and billing cycles end to end: catalog, stored
events, invoice, ledger posting and renderings, on both store backends."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
from tests.billing_support import FEB, FEB_US, clock, close_january
from tests.support import event, ingest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.ledger import issue_entry, receivable, revenue
from meterline.ledger.accounts import discounts
from meterline.render.pdf import render_html
from meterline.render.text import render_text
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store

CATALOG: dict[str, Any] = {
    "meters": [
        {"code": "payments", "event_type": "payment", "aggregation": "sum", "property": "amount"},
        {"code": "gpu_cost", "event_type": "gpu", "aggregation": "sum", "property": "price"},
        {"code": "storage", "event_type": "store", "aggregation": "sum", "property": "bytes"},
        {"code": "api_calls", "event_type": "api_call", "aggregation": "count"},
    ],
    "price_books": [
        {
            "code": "fintech",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "maximum_spend": "30.00",
                    "charges": [
                        {"code": "card", "meter": "payments", "model": "percentage",
                         "rate": "0.029", "fixed_fee": "0.30", "free_events": 2},
                        {"code": "gpu", "meter": "gpu_cost", "model": "dynamic",
                         "multiplier": "1.2"},
                        {"code": "disk", "meter": "storage", "model": "per_unit",
                         "unit_price": "0.10",
                         "conversion": {"divide_by": "1000000000", "round": "up"}},
                    ],
                }
            ],
        },
        {
            "code": "ahead",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "charges": [
                        {"code": "seat", "model": "flat", "amount": "31.00", "in_advance": True},
                    ],
                }
            ],
        },
        {
            "code": "saas",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "charges": [
                        {"code": "platform", "model": "flat", "amount": "31.00"},
                        {"code": "api", "meter": "api_calls", "model": "per_unit",
                         "unit_price": "0.10"},
                    ],
                }
            ],
        },
        {
            "code": "basic",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "minimum_spend": "10.00",
                    "charges": [
                        {"code": "api", "meter": "api_calls", "model": "per_unit",
                         "unit_price": "0.02", "free_units": 100},
                    ],
                }
            ],
        },
    ],
    "customers": [
        {"id": "eta", "name": "Eta", "currency": "USD",
         "subscriptions": [
             {"price_book": "ahead", "start": "2024-01-01T00:00:00Z",
              "end": "2024-02-15T00:00:00Z"},
             {"price_book": "saas", "start": "2024-02-15T00:00:00Z"}]},
        {"id": "zeta", "name": "Zeta", "currency": "USD",
         "subscriptions": [{"price_book": "ahead", "start": "2024-01-17T00:00:00Z",
                            "end": "2024-03-10T00:00:00Z"}]},
        {"id": "delta", "name": "Delta", "currency": "USD",
         "subscriptions": [{"price_book": "saas", "start": "2024-01-01T00:00:00Z",
                            "trial_days": 14, "trial_usage": "free"}]},
        {"id": "epsilon", "name": "Epsilon", "currency": "USD",
         "subscriptions": [{"price_book": "saas", "start": "2024-01-01T00:00:00Z",
                            "trial_days": 14}]},
        {"id": "acme", "name": "Acme", "currency": "USD",
         "subscriptions": [{"price_book": "fintech", "start": "2024-01-01T00:00:00Z"}],
         "coupons": [{"code": "WELCOME", "percent_off": 10, "duration": "repeating",
                      "periods": 2, "start": "2024-01-01T00:00:00Z"}]},
        {"id": "beta", "name": "Beta", "currency": "USD",
         "subscriptions": [{"price_book": "basic", "start": "2024-01-15T09:00:00Z",
                            "anchor": "subscription"}]},
        {"id": "gamma", "name": "Gamma", "currency": "USD",
         "subscriptions": [{"price_book": "basic", "start": "2024-02-16T00:00:00Z",
                            "billing_cycle": "quarter"}]},
    ],
}  # fmt: skip


def _events() -> list[dict[str, Any]]:
    out = [
        event(f"p{i}", type_="payment", time=f"2024-01-1{i}T10:00:00Z", props={"amount": a})
        for i, a in enumerate(["100.00", "200.00", "700.00"])
    ]
    out += [
        event("g1", type_="gpu", time="2024-01-12T10:00:00Z", props={"price": "2.00"}),
        event("g2", type_="gpu", time="2024-01-20T10:00:00Z", props={"price": "1.45"}),
        event("s1", type_="store", time="2024-01-21T10:00:00Z", props={"bytes": 2500000001}),
    ]
    out += [
        event(f"b{i}", customer="beta", time=f"2024-01-2{i % 10}T{i % 24:02d}:00:00Z")
        for i in range(150)
    ]
    for who in ("delta", "epsilon"):
        out += [event(f"{who}-t{i}", customer=who, time="2024-01-10T10:00:00Z") for i in range(5)]
        out += [event(f"{who}-p{i}", customer=who, time="2024-01-20T10:00:00Z") for i in range(3)]
    return out


def _setup(store: Store) -> None:
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(store, clock(FEB), _events())


def amounts(body: dict[str, Any]) -> dict[str, str]:
    return {line["charge"]: line["amount"] for line in body["lines"]}


def test_percentage_dynamic_conversion_a_cap_and_a_coupon_on_one_invoice(store: Store) -> None:
    """card 2.9% x 1,000 + 0.30 x (3 - 2 free) = 29.30; gpu 3.45 x 1.2 = 4.14;
    disk 2,500,000,001 bytes -> 3 GB x 0.10 = 0.30; usage 33.74 capped at 30.00: -3.74;
    then the coupon, 10% of the capped 30.00 = -3.00: total 27.00."""
    _setup(store)
    body = invoicing.preview(store, "acme", "2024-01")
    assert amounts(body) == {
        "card": "29.30", "gpu": "4.14", "disk": "0.30", "maximum_spend": "-3.74",
        "coupon:WELCOME": "-3.00",
    }  # fmt: skip
    assert body["subtotal"] == body["total"] == "27.00"
    assert body["lines"][-1]["formula"] == "-(10% x 30.00) = -3.00"
    cap = body["lines"][-2]
    assert cap["formula"] == "30.00 maximum spend - 33.74 usage = -3.74"
    disk = next(line for line in body["lines"] if line["charge"] == "disk")
    assert disk["quantity"] == "3"
    text = render_text(body)
    assert "maximum spend cap" in text and "coupon WELCOME" in text
    assert "2,500,000,001 metered / 1,000,000,000, rounded up = 3 billed" in text
    html = render_html(body)
    assert "2.9%" in html and "adjustment" in html

    close_january(store)
    result = invoicing.issue(store, "2024-01", FEB_US, "acme")
    (issued,) = result.issued
    entry = issue_entry(issued.number, issued.body)
    assert entry.balanced
    sides = {ln.account: ln.signed for ln in entry.lines}
    assert sides[discounts("maximum_spend")] == Decimal("3.74")
    assert sides[revenue("card")] == Decimal("-29.30")
    assert sides[discounts("coupon:WELCOME")] == Decimal("3.00")
    assert sides[receivable("acme")] == Decimal("27.00")


def test_anniversary_period_free_units_and_a_full_minimum(store: Store) -> None:
    """beta: anniversary month from Jan 15 09:00, period "2024-01-15"; 150 calls, 100 free:
    50 x 0.02 = 1.00; the whole period is active, so minimum 10.00 - 1.00 = 9.00."""
    _setup(store)
    body = invoicing.preview(store, "beta", "2024-01-15")
    assert body["period"] == {
        "start": "2024-01-15T09:00:00Z", "end": "2024-02-15T09:00:00Z", "label": "2024-01-15",
    }  # fmt: skip
    assert amounts(body) == {"api": "1.00", "minimum_spend": "9.00"}
    assert body["lines"][0]["formula"] == "50 x 0.02 (100 free) = 1.00"


def test_quarterly_period_prorates_the_minimum_45_of_91_days(store: Store) -> None:
    """gamma: calendar quarters, started Feb 16: 2024-Q1 has 91 days, 45 active;
    10.00 x 45/91 = 4.945... - 0 usage = 4.95."""
    _setup(store)
    body = invoicing.preview(store, "gamma", "2024-Q1")
    assert body["period"]["label"] == "2024-Q1"
    assert amounts(body) == {"api": "0.00", "minimum_spend": "4.95"}
    assert body["lines"][-1]["formula"] == (
        "10.00 minimum spend x 45 days / 91 days - 0.00 usage = 4.95"
    )


def test_a_label_of_another_cycle_is_a_clear_error(store: Store) -> None:
    _setup(store)
    with pytest.raises(MeterlineError) as info:
        invoicing.preview(store, "gamma", "2024-01")
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "billing cycles: quarter/calendar" in info.value.message


def test_a_trial_bills_no_flat_fee_and_free_trial_usage(store: Store) -> None:
    """14 trial days from Jan 1: the flat fee is billed for 17 of 31 days = 17.00;
    trial_usage free: 5 calls on Jan 10 are free, 3 on Jan 20 x 0.10 = 0.30;
    trial_usage billed (the default): all 8 calls = 0.80."""
    _setup(store)
    free = invoicing.preview(store, "delta", "2024-01")
    assert amounts(free) == {"api": "0.30", "platform": "17.00"}
    api = free["lines"][0]
    assert api["formula"] == "v1: 0 x 0.10 + v1: 3 x 0.10 = 0.30"
    assert "trial until 2024-01-15T00:00:00Z: usage in it is free" in api["explanation"]["notes"]
    assert free["lines"][1]["formula"] == "31.00 x 17 days / 31 days = 17.00"
    billed = invoicing.preview(store, "epsilon", "2024-01")
    assert amounts(billed) == {"api": "0.80", "platform": "17.00"}
    feb = invoicing.preview(store, "delta", "2024-02")  # after the trial: everything billed
    assert amounts(feb) == {"api": "0.00", "platform": "31.00"}


def test_in_advance_fees_bill_the_next_period_and_credit_unused_time(store: Store) -> None:
    """seat 31.00 in advance; subscription Jan 17 to Mar 10.
    January (first period): 31.00 x 15/31 = 15.00 for January + 31.00 ahead for February;
    February: 31.00 ahead for March (the end is credited when it comes);
    March: unused time from Mar 10 = -(31.00 x 22/31) = -22.00, nothing ahead for April."""
    _setup(store)

    def seat_lines(label: str) -> list[tuple[str, str]]:
        body = invoicing.preview(store, "zeta", label)
        return [(line["description"], line["amount"]) for line in body["lines"]]

    assert seat_lines("2024-01") == [
        ("seat (in advance, 2024-01)", "15.00"), ("seat (in advance, 2024-02)", "31.00"),
    ]  # fmt: skip
    assert seat_lines("2024-02") == [("seat (in advance, 2024-03)", "31.00")]
    assert seat_lines("2024-03") == [("unused time on ahead (seat)", "-22.00")]
    march = invoicing.preview(store, "zeta", "2024-03")
    assert march["lines"][0]["formula"] == "-(31.00 x 22 days / 31 days) = -22.00"


def test_a_plan_change_mid_period_credits_the_unused_in_advance_fee(store: Store) -> None:
    """ahead (31.00 in advance) until Feb 15, then saas (31.00 in arrears).
    January: 31.00 for January + 31.00 ahead for February.
    February (29 days): unused time on ahead from Feb 15 = -(31.00 x 15/29) = -16.03, and
    saas's platform fee for the same 15 days = 31.00 x 15/29 = 16.03."""
    _setup(store)
    jan = invoicing.preview(store, "eta", "2024-01")
    assert [(x["description"], x["amount"]) for x in jan["lines"]] == [
        ("seat (in advance, 2024-01)", "31.00"), ("seat (in advance, 2024-02)", "31.00"),
    ]  # fmt: skip
    feb = invoicing.preview(store, "eta", "2024-02")
    assert amounts(feb) == {"seat": "-16.03", "api": "0.00", "platform": "16.03"}
    assert feb["lines"][0]["description"] == "unused time on ahead (seat)"


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "meterline", "--db", url, "--now", "2024-04-02T12:00:00Z"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_the_cli_takes_every_kind_of_period_label(store: Store) -> None:
    """`--period` accepts a quarter and an anniversary date; a bad label is one clear line."""
    _setup(store)
    quarter = _cli(store.url, "invoice", "preview", "--customer", "gamma", "--period", "2024-Q1")
    assert quarter.returncode == 0, quarter.stderr
    assert "2024-Q1" in quarter.stdout and "4.95" in quarter.stdout
    anniversary = _cli(
        store.url, "invoice", "preview", "--customer", "beta", "--period", "2024-01-15"
    )
    assert anniversary.returncode == 0 and "9.00" in anniversary.stdout
    bad = _cli(store.url, "invoice", "preview", "--customer", "gamma", "--period", "2024-Q5")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "INVALID_ARGUMENT" in bad.stderr + bad.stdout
