"""Progressive (threshold) billing (DESIGN §7): interim invoices while a period is open,
a final invoice that nets them line by line, corrections against all of them.

Worked numbers: api calls at 1.00 each, threshold 100.00 unless a test says otherwise.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from tests.billing_support import FEB_US, clock, close_january
from tests.support import event, ingest

from meterline.billing.document import Issued, Status
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.progressive import issue_interims
from meterline.services.reconcile import reconcile
from meterline.services.verification import verify
from meterline.store import sequence
from meterline.store.database import Store

MID = "2024-01-20T00:00:00Z"
MID_US = parse_rfc3339(MID)
LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")


def book(**version: Any) -> dict[str, Any]:
    charges = [{"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": "1.00"}]
    charges += version.pop("extra_charges", [])
    return {
        "code": "usage",
        "currency": "USD",
        "versions": [
            {
                "version": "v1",
                "effective_from": "2024-01-01T00:00:00Z",
                "charges": charges,
                **version,
            }
        ],
    }


def world(
    store: Store,
    threshold: str = "100",
    tax_rate: str = "0",
    terms: dict[str, Any] | None = None,
    **version: Any,
) -> None:
    sub: dict[str, Any] = {"price_book": "usage", "start": "2024-01-01T00:00:00Z"}
    if threshold:
        sub["threshold"] = threshold
    apply_catalog(
        store,
        {
            "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
            "price_books": [book(**version)],
            "customers": [
                {
                    "id": "acme",
                    "name": "Acme Corp",
                    "currency": "USD",
                    "tax_rate": tax_rate,
                    "subscriptions": [sub],
                    **(terms or {}),
                }
            ],
        },
        parse_rfc3339("2024-01-01T00:00:00Z"),
    )


_sent = 0


def use(store: Store, n: int, at: str = MID, day: int = 10) -> None:
    """n api calls on January `day`, received at `at`."""
    global _sent
    evs = [
        event(f"e{_sent + i}", time=f"2024-01-{day:02d}T{i % 24:02d}:{i % 60:02d}:{i % 59:02d}Z")
        for i in range(n)
    ]
    _sent += n
    ingest(store, clock(at), evs)


def interims(store: Store, at: int = MID_US) -> list[Issued]:
    return issue_interims(store, at).issued


def final(store: Store) -> Issued:
    close_january(store)
    [doc] = invoicing.issue(store, "2024-01", FEB_US).issued
    return doc


def amounts(doc: Issued) -> dict[str, str]:
    return {line["charge"]: line["amount"] for line in doc.to_dict()["lines"]}


def recomputed_total(store: Store) -> Decimal:
    """The whole period computed from scratch as known now."""
    with store.read() as conn:
        body = invoicing.compute_body(conn, "acme", "2024-01", sequence.current(conn))
    return Decimal(body["total"])


def test_progressive_threshold_100_usage_250_issues_two_interims_then_final_nets_50(
    store: Store,
) -> None:
    world(store)
    use(store, 100)
    [first] = interims(store)
    use(store, 100)
    [second] = interims(store)
    use(store, 50)
    assert interims(store) == []  # 50.00 unbilled < 100.00
    last = final(store)
    assert [first.to_dict()["total"], second.to_dict()["total"], last.to_dict()["total"]] == [
        "100.00",
        "100.00",
        "50.00",
    ]
    assert (first.to_dict()["role"], first.to_dict()["interim"]) == ("interim", 1)
    assert (second.to_dict()["role"], second.to_dict()["interim"]) == ("interim", 2)
    assert [first.number, second.number, last.number] == ["INV-000001", "INV-000002", "INV-000003"]
    assert last.to_dict()["role"] == "final"
    assert last.to_dict()["interims"] == ["INV-000001", "INV-000002"]
    assert last.to_dict()["period_subtotal"] == "250.00"
    [line] = last.to_dict()["lines"]
    assert (line["quantity"], line["billed_amount"], line["new_amount"]) == (
        "50",
        "200.00",
        "250.00",
    )
    assert verify(store).ok
    assert reconcile(store, full=True).ok


def test_progressive_preview_after_an_interim_of_120_shows_the_final_to_be_30(
    store: Store,
) -> None:
    world(store)
    use(store, 120)
    [first] = interims(store)
    use(store, 30)
    draft = invoicing.preview(store, "acme", "2024-01")
    assert (draft["number"], draft["role"], draft["interims"]) == (None, "final", [first.number])
    assert (draft["total"], draft["period_subtotal"]) == ("30.00", "150.00")
    assert final(store).to_dict()["total"] == "30.00"


def test_progressive_threshold_100_usage_99_issues_no_interim_and_a_plain_final_of_99(
    store: Store,
) -> None:
    world(store)
    use(store, 99)
    assert interims(store) == []
    last = final(store)
    assert last.to_dict()["total"] == "99.00" and "role" not in last.to_dict()


def test_progressive_threshold_100_usage_340_at_once_issues_one_interim_of_340(
    store: Store,
) -> None:
    world(store)
    use(store, 340)
    [only] = interims(store)
    assert only.to_dict()["total"] == "340.00"  # the usage so far, not a multiple of the threshold
    assert interims(store) == []  # idempotent: nothing unbilled right after an interim
    last = final(store)
    assert last.to_dict()["total"] == "0.00" and last.to_dict()["lines"] == []
    assert last.to_dict()["interims"] == [only.number]
    assert verify(store).ok


def test_progressive_tax_20pct_interim_120_then_final_tax_delta_keeps_no_drift(
    store: Store,
) -> None:
    world(store, threshold="100", tax_rate="0.2")
    use(store, 101)
    [first] = interims(store)
    assert (first.to_dict()["subtotal"], first.to_dict()["tax"], first.to_dict()["total"]) == (
        "101.00",
        "20.20",
        "121.20",
    )
    use(store, 2)
    last = final(store)
    # whole period 103.00 + tax 20.60; the final bills 2.00 + (20.60 - 20.20)
    assert (last.to_dict()["subtotal"], last.to_dict()["tax"], last.to_dict()["total"]) == (
        "2.00",
        "0.40",
        "2.40",
    )
    assert reconcile(store, full=True).ok


def test_progressive_flat_49_and_minimum_300_wait_for_the_final_interim_bills_usage_150_only(
    store: Store,
) -> None:
    world(
        store,
        minimum_spend="300.00",
        extra_charges=[{"code": "platform", "model": "flat", "amount": "49.00"}],
    )
    use(store, 150)
    [first] = interims(store)
    assert amounts(first) == {"api": "150.00"}
    use(store, 50)
    last = final(store)
    # whole: api 200 + platform 49 + minimum true-up 100 = 349; the interim billed 150
    assert amounts(last) == {"api": "50.00", "platform": "49.00", "minimum_spend": "100.00"}
    assert last.to_dict()["total"] == "199.00"
    assert verify(store).ok


def test_progressive_cap_150_usage_120_then_250_interim_120_no_second_final_30(
    store: Store,
) -> None:
    world(store, maximum_spend="150.00")
    use(store, 120)
    [first] = interims(store)
    assert first.to_dict()["total"] == "120.00"
    use(store, 130)
    assert interims(store) == []  # usage +130, cap -100: 30.00 unbilled < 100.00
    last = final(store)
    assert amounts(last) == {"api": "130.00", "maximum_spend": "-100.00"}
    assert last.to_dict()["total"] == "30.00"  # 120 + 30 = the cap
    assert reconcile(store, full=True).ok


def test_progressive_late_event_after_the_final_corrects_interims_plus_final_exactly(
    store: Store,
) -> None:
    world(store)
    use(store, 150)
    [first] = interims(store)
    use(store, 20)
    last = final(store)
    assert (first.to_dict()["total"], last.to_dict()["total"]) == ("150.00", "20.00")
    use(store, 7, at="2024-02-02T00:00:00Z")
    [note] = rerate(store, LATER_US).issued
    assert note.to_dict()["corrects"] == last.number and note.to_dict()["total"] == "7.00"
    [line] = note.to_dict()["lines"]
    assert (line["billed_amount"], line["new_amount"]) == ("170.00", "177.00")
    billed = sum(Decimal(d.to_dict()["total"]) for d in (first, last, note))
    assert billed == recomputed_total(store) == Decimal("177.00")
    assert rerate(store, LATER_US).issued == []  # idempotent
    assert verify(store).ok
    assert reconcile(store, full=True).ok


def test_progressive_interims_are_never_corrected_on_their_own(store: Store) -> None:
    world(store)
    use(store, 120)
    interims(store)
    use(store, 5, at="2024-01-25T00:00:00Z")  # in the open period: the final nets it
    assert rerate(store, parse_rfc3339("2024-01-25T00:00:00Z")).issued == []
    assert final(store).to_dict()["total"] == "5.00"


def test_progressive_customer_filter_and_finished_periods(store: Store) -> None:
    world(store)
    use(store, 100)
    result = issue_interims(store, MID_US, customer="acme")
    assert len(result.issued) == 1 and result.checked == [("acme", "2024-01")]
    final(store)
    use(store, 500, at="2024-02-02T00:00:00Z")
    # January has its final invoice: late usage is for corrections, never another interim
    assert issue_interims(store, LATER_US).issued == []


def test_no_threshold_means_no_interim(store: Store) -> None:
    world(store, threshold="")
    use(store, 1000)
    assert issue_interims(store, MID_US).checked == []


@pytest.mark.parametrize(
    ("threshold", "message"),
    [("-5", "must be a positive amount"), ("10.001", "has more digits than USD allows")],
)
def test_threshold_must_be_a_positive_amount_in_the_currency(
    store: Store, threshold: str, message: str
) -> None:
    with pytest.raises(MeterlineError) as exc:
        world(store, threshold=threshold)
    assert exc.value.code == ErrorCode.INVALID_CATALOG
    assert "customers[0].subscriptions[0].threshold" in exc.value.message
    assert message in exc.value.message


def test_unbilled_usage_names_the_customers_own_billing_periods(store: Store) -> None:
    """A weekly customer from Wednesday Jan 10: 3 calls on Monday Jan 8 fall outside its
    subscription, in its week 2024-W02 (not the calendar month 2024-01)."""
    apply_catalog(
        store,
        {
            "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
            "price_books": [book()],
            "customers": [
                {
                    "id": "acme",
                    "name": "Acme Corp",
                    "currency": "USD",
                    "subscriptions": [
                        {
                            "price_book": "usage",
                            "start": "2024-01-10T00:00:00Z",
                            "billing_cycle": "week",
                        }
                    ],
                }
            ],
        },
        parse_rfc3339("2024-01-01T00:00:00Z"),
    )
    use(store, 3, day=8)
    use(store, 2, day=11)
    warnings = {w.name: w for w in reconcile(store, full=True).warnings}
    assert warnings["no_subscription"].count == 3
    assert "acme 2024-W02 (3 events)" in warnings["no_subscription"].details


def test_renderings_say_what_interim_and_final_invoices_are(store: Store) -> None:
    from pypdf import PdfReader

    from meterline.render.pdf import render_pdf
    from meterline.render.text import render_text

    world(store, extra_charges=[{"code": "platform", "model": "flat", "amount": "49.00"}])
    use(store, 100)
    [first] = interims(store)
    last = final(store)
    interim_text = render_text(invoicing.show(store, first.number).to_dict())
    assert (
        "Interim invoice 1 for 2024-01 (progressive billing): it bills usage of the open "
        "period not billed before, because it reached the threshold (usage 100.00 USD)."
    ) in " ".join(interim_text.split())
    final_text = render_text(invoicing.show(store, last.number).to_dict())
    assert (
        "Final invoice for 2024-01: the whole period (subtotal 149.00 USD) less what interim "
        "invoices INV-000001 billed, line by line."
    ) in " ".join(final_text.split())
    assert "platform: billed 0.00, now 49.00" in final_text  # a flat fee has no quantity
    pdf = render_pdf(invoicing.show(store, last.number).to_dict())
    words = " ".join(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages).split())
    assert "Final invoice (progressive billing)" in words
    assert "less what interim invoices INV-000001 billed" in words


def test_an_anniversary_and_a_weekly_period_issue_on_every_backend(store: Store) -> None:
    """Labels longer than a month's (2023-12-20, 2024-W02) fit the documents table."""
    apply_catalog(
        store,
        {
            "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
            "price_books": [book()],
            "customers": [
                {
                    "id": cid,
                    "name": cid,
                    "currency": "USD",
                    "subscriptions": [{"price_book": "usage", "start": start, **cycle}],
                }
                for cid, start, cycle in (
                    ("acme", "2024-01-01T00:00:00Z", {"billing_cycle": "week"}),
                    ("beta", "2024-01-03T00:00:00Z", {"anchor": "subscription"}),
                )
            ],
        },
        parse_rfc3339("2024-01-01T00:00:00Z"),
    )
    use(store, 4, day=9)
    close_january(store)
    [week] = invoicing.issue(store, "2024-W02", FEB_US).issued
    assert (week.to_dict()["period"]["label"], week.to_dict()["total"]) == ("2024-W02", "4.00")
    [month] = invoicing.issue(store, "2024-01-03", FEB_US, "beta", force=True).issued
    assert month.to_dict()["period"]["end"] == "2024-02-03T00:00:00Z"
    assert verify(store).ok


def test_progressive_credit_50_pays_the_interim_of_120_then_coupon_10pct_on_the_final(
    store: Store,
) -> None:
    """Credit 50.00 pays part of interim 1 (120.00 -> 70.00 due); the 10% coupon is on
    the whole period's usage 150.00 = -15.00, so the final bills 30.00 - 15.00 = 15.00."""
    world(
        store,
        terms={
            "credits": [{"id": "g1", "amount": "50.00", "granted_at": "2023-12-01T00:00:00Z"}],
            "coupons": [
                {
                    "code": "TEN",
                    "percent_off": "10",
                    "duration": "forever",
                    "start": "2024-01-01T00:00:00Z",
                }
            ],
        },
    )
    use(store, 120)
    [first] = interims(store)
    assert (
        first.to_dict()["subtotal"],
        first.to_dict()["credits_applied"],
        first.to_dict()["total"],
    ) == (
        "120.00",
        "50.00",
        "70.00",
    )
    use(store, 30)
    last = final(store)
    assert amounts(last) == {"api": "30.00", "coupon:TEN": "-15.00"}
    assert (last.to_dict()["credits_applied"], last.to_dict()["total"]) == ("0.00", "15.00")
    assert verify(store).ok
    assert reconcile(store, full=True).ok


def test_progressive_a_void_interim_is_billed_by_the_final_again(store: Store) -> None:
    world(store)
    use(store, 130)
    [first] = interims(store)
    invoicing.set_status(store, first.number, Status.VOID, "sent to the wrong address", MID_US)
    last = final(store)
    assert last.to_dict()["total"] == "130.00" and "role" not in last.to_dict()  # no interim left
    assert verify(store).ok
    assert reconcile(store, full=True).ok
