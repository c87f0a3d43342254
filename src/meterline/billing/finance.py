"""What a finance team needs on a document beyond its arithmetic (DESIGN §7).

Seller and bill-to details, issue and due dates, payment terms, the tax rate
as a percentage, the period as local dates, and for corrections a sentence on
the tax delta. Computed from the catalog facts as known at the document's
cutoff plus its issue time, and kept *outside* the hashed body: the body is
what verification reproduces, and these details are presentation of facts
that are themselves versioned in the store. Pure: the store feeds it.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from meterline.billing.body import Body
from meterline.billing.customers import Customer
from meterline.billing.periods import zone
from meterline.billing.seller import Seller
from meterline.domain.timestamps import parse_rfc3339, to_datetime

DEFAULT_PAYMENT_TERMS_DAYS = 30


def percent(rate: Any) -> str:
    """ "0.19" -> "19%", "0.075" -> "7.5%", "0" -> "0%" (exact, no float)."""
    try:
        value = Decimal(str(rate)) * 100
    except InvalidOperation:
        return str(rate)
    text = format(value.normalize(), "f") if value else "0"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}%"


def local_date(instant: str, timezone: str) -> date:
    return to_datetime(parse_rfc3339(instant)).astimezone(zone(timezone)).date()


def _period_local(body: Body, timezone: str) -> dict[str, str]:
    period = body.period
    first = local_date(period.start, timezone)
    end = to_datetime(parse_rfc3339(period.end) - 1).astimezone(zone(timezone)).date()
    return {"first_day": first.isoformat(), "last_day": end.isoformat(), "timezone": timezone}


def tax_note(body: Body) -> str | None:
    """For a credit or debit note: why its tax is what it is, in one sentence."""
    if body.corrects is None:
        return None
    rate = percent(body.tax_rate)
    if body.tax_rate == 0:
        return f"No tax applies to this customer (rate {rate}), so the tax delta is zero."
    naive = body.subtotal * body.tax_rate
    return (
        f"The tax on this note ({body.text(body.tax)}) is the tax on the whole period as now "
        f"recomputed ({rate} of its new subtotal, rounded) minus the tax already billed for "
        f"it on {body.corrects} and its earlier notes; because each document's tax is "
        f"rounded separately, it can differ by a minor unit from {rate} of this note's "
        f"subtotal ({format(naive.normalize(), 'f')})."
    )


def finance_details(
    body: Body,
    issued_at: str | None,
    seller: Seller | None,
    customer: Customer | None,
) -> dict[str, Any]:
    """The finance block of a document's public JSON (not hashed; see module doc)."""
    timezone = body.timezone or (customer.timezone if customer else "UTC")
    terms = DEFAULT_PAYMENT_TERMS_DAYS
    if customer is not None and customer.payment_terms_days is not None:
        terms = customer.payment_terms_days
    issue_day = None if issued_at is None else local_date(issued_at, timezone)
    # A credit note is owed to the customer, not by them: it has no due date.
    payable = body.kind != "credit_note"
    due_day = None if issue_day is None or not payable else issue_day + timedelta(days=terms)
    return {
        "seller": None if seller is None else seller.definition(),
        "bill_to": {
            "name": body.customer_name or (customer.name if customer else None),
            "customer_id": body.customer_id,
            "address": list(customer.billing_address) if customer else [],
        },
        "issue_date": None if issue_day is None else issue_day.isoformat(),
        "due_date": None if due_day is None else due_day.isoformat(),
        "payment_terms": f"net {terms}",
        "payment_terms_days": terms,
        "tax_percent": percent(body.tax_rate),
        "period_local": _period_local(body, timezone),
        "tax_note": tax_note(body),
    }
