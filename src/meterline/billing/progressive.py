"""Progressive (threshold) billing, the pure rule (DESIGN §7).

A subscription with a `threshold` is billed during its open period: whenever the
usage of its period as known now, less what interim invoices of that period have
billed already, reaches the threshold, an **interim invoice** bills that unbilled
usage (thresholds repeat: the count starts again after each interim, as in
Flexprice's `auto_invoice_threshold` and Lago's recurring threshold). The
period's **final** invoice bills the rest: the line-by-line difference between the
whole period and what the interims billed, by the correction arithmetic of §8
(billing/credit_note.py `diff`), so interims + final == the whole period, line by
line, and a later correction diffs against interims + final + notes.

What an interim bills: the usage lines of the progressive subscriptions and their
maximum spend cap (a cap bills nothing above it, mid-period too). Flat fees,
in-advance fees, the minimum spend true-up and coupons wait for the final invoice
(a minimum is owed for the whole period only; a coupon's period is the period).
Tax on an interim is tax(cumulative interim subtotal) - tax already billed by
interims; on the final, tax(period subtotal) - tax billed by interims: no
rounding drift. The threshold is compared with the pre-tax amount an interim
would bill now.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterline.billing.credit_note import BilledSoFar, Diff, diff, line_key
from meterline.billing.document import money
from meterline.domain.decimals import exact_sum
from meterline.domain.money import Currency, Rounding, round_money
from meterline.pricing.maximum import MAXIMUM_SPEND_CODE

INTERIM = "interim"
FINAL = "final"

Credit = Callable[[Decimal], list[tuple[str, Decimal]]]
"""What prepaid credit pays of an amount due: [(grant id, amount)], oldest first."""

ZERO = Decimal(0)


def thresholds(body: Mapping[str, Any]) -> dict[str, Decimal]:
    """Threshold per price book of the period's progressive subscriptions."""
    out: dict[str, Decimal] = {}
    for s in body.get("subscriptions", []):
        if s.get("threshold") is not None:
            book = str(s["price_book"])
            found = Decimal(str(s["threshold"]))
            out[book] = min(found, out.get(book, found))
    return out


def interim_lines(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The lines of a whole-period body that interim invoices bill."""
    books = thresholds(body)
    return [
        line
        for line in body["lines"]
        if line["price_book"] in books
        and (line.get("meter") is not None or line["charge"] == MAXIMUM_SPEND_CODE)
    ]


@dataclass(frozen=True)
class Pending:
    """What an interim invoice would bill now."""

    diff: Diff | None
    unbilled: dict[str, Decimal]  # pre-tax amount not yet billed, per progressive price book

    def due(self, limits: Mapping[str, Decimal]) -> bool:
        """Whether some progressive subscription's unbilled usage reached its threshold."""
        return self.diff is not None and any(
            self.unbilled.get(book, ZERO) >= limit for book, limit in limits.items()
        )


def pending(
    body: Mapping[str, Any], interims: Sequence[Mapping[str, Any]], rounding: Rounding
) -> Pending:
    """The interim lines not yet billed by `interims` (the earlier interims of the period)."""
    currency = Currency(str(body["currency"]))
    fresh = interim_lines(body)
    billed = BilledSoFar.of(interims)
    cumulative = exact_sum([Decimal(line["amount"]) for line in fresh])
    tax = round_money(cumulative * Decimal(str(body["tax_rate"])), currency, rounding)
    found = diff(billed, fresh, tax, currency)
    unbilled: dict[str, Decimal] = {}
    for line in found.lines if found else []:
        book = str(line["price_book"])
        unbilled[book] = unbilled.get(book, ZERO) + Decimal(line["amount"])
    return Pending(found, unbilled)


def _finish(
    body: Mapping[str, Any], found: Diff | None, credit: Credit, extra: dict[str, Any]
) -> dict[str, Any]:
    currency = Currency(str(body["currency"]))
    lines = found.lines if found else []
    # A line without a quantity (a flat fee, a spend limit, a coupon) keeps none.
    unquantified = {line_key(x) for x in body["lines"] if x.get("quantity") is None}
    for line in lines:
        if line_key(line) in unquantified:
            line.update(quantity=None, billed_quantity=None, new_quantity=None)
    subtotal = found.subtotal if found else ZERO
    tax = found.tax if found else ZERO
    credits = credit(subtotal + tax) if subtotal + tax > 0 else []
    credited = exact_sum([a for _, a in credits])
    out = {
        **body,
        "lines": lines,
        "subtotal": money(subtotal, currency),
        "tax": money(tax, currency),
        "credits": [{"grant": g, "amount": money(a, currency)} for g, a in credits],
        "credits_applied": money(credited, currency),
        "total": money(subtotal + tax - credited, currency),
        **extra,
    }
    return out


def interim_body(
    body: Mapping[str, Any],
    interims: Sequence[Mapping[str, Any]],
    rounding: Rounding,
    credit: Credit,
) -> dict[str, Any]:
    """Interim invoice number len(interims) + 1 of the period of the whole-period `body`."""
    found = pending(body, interims, rounding).diff
    return _finish(
        body,
        found,
        credit,
        {
            "role": INTERIM,
            "interim": len(interims) + 1,
            "thresholds": {
                b: money(t, Currency(str(body["currency"])))
                for b, t in sorted(thresholds(body).items())
            },
        },
    )


def final_body(
    body: Mapping[str, Any],
    interims: Sequence[tuple[str, Mapping[str, Any]]],
    credit: Credit,
) -> dict[str, Any]:
    """The final invoice of a period with interim invoices [(number, body)]: the whole
    period `body` less what the interims billed, line by line (same arithmetic as §8)."""
    currency = Currency(str(body["currency"]))
    billed = BilledSoFar.of([b for _, b in interims])
    found = diff(billed, body["lines"], Decimal(str(body["tax"])), currency)
    return _finish(
        body,
        found,
        credit,
        {
            "role": FINAL,
            "interims": [n for n, _ in interims],
            "period_subtotal": body["subtotal"],
            "period_tax": body["tax"],
        },
    )


def describe(body: Mapping[str, Any]) -> str | None:
    """The sentence renderings print for an interim or final invoice (None otherwise)."""
    role = body.get("role")
    if role not in (INTERIM, FINAL):
        return None
    label = body["period"]["label"]
    if role == INTERIM:
        limits = ", ".join(f"{b} {t}" for b, t in sorted(body.get("thresholds", {}).items()))
        return (
            f"Interim invoice {body.get('interim')} for {label} (progressive billing): it bills "
            f"usage of the open period not billed before, because it reached the threshold "
            f"({limits} {body['currency']}). The period's final invoice bills the rest."
        )
    if role == FINAL:
        numbers = ", ".join(body.get("interims", [])) or "none"
        return (
            f"Final invoice for {label}: the whole period (subtotal {body.get('period_subtotal')}"
            f" {body['currency']}) less what interim invoices {numbers} billed, line by line."
        )
    return None
