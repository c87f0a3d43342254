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

from msgspec import structs

from meterline.billing.body import UNSET, Body, CreditApplied, Line
from meterline.billing.credit_note import BilledSoFar, Diff, diff, line_key
from meterline.domain.decimals import exact_sum
from meterline.domain.money import Rounding, round_money
from meterline.pricing.maximum import MAXIMUM_SPEND_CODE

INTERIM = "interim"
FINAL = "final"

Credit = Callable[[Decimal], list[tuple[str, Decimal]]]
"""What prepaid credit pays of an amount due: [(grant id, amount)], oldest first."""

ZERO = Decimal(0)


def thresholds(body: Body) -> dict[str, Decimal]:
    """Threshold per price book of the period's progressive subscriptions."""
    out: dict[str, Decimal] = {}
    for s in body.subscriptions:
        if s.threshold is not UNSET:
            book = s.price_book
            found = s.threshold
            out[book] = min(found, out.get(book, found))
    return out


def interim_lines(body: Body) -> list[Line]:
    """The lines of a whole-period body that interim invoices bill."""
    books = thresholds(body)
    return [
        line
        for line in body.lines
        if line.price_book in books
        and (line.meter is not None or line.charge == MAXIMUM_SPEND_CODE)
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


def pending(body: Body, interims: Sequence[Body], rounding: Rounding) -> Pending:
    """The interim lines not yet billed by `interims` (the earlier interims of the period)."""
    fresh = interim_lines(body)
    billed = BilledSoFar.of(interims)
    cumulative = exact_sum([line.amount for line in fresh])
    tax = round_money(cumulative * body.tax_rate, body.money_currency, rounding)
    found = diff(billed, fresh, tax)
    unbilled: dict[str, Decimal] = {}
    for line in found.lines if found else ():
        unbilled[line.price_book] = unbilled.get(line.price_book, ZERO) + line.amount
    return Pending(found, unbilled)


def _finish(body: Body, found: Diff | None, credit: Credit, **extra: Any) -> Body:
    lines = found.lines if found else ()
    # A line without a quantity (a flat fee, a spend limit, a coupon) keeps none.
    unquantified = {line_key(x) for x in body.lines if x.quantity is None}
    lines = tuple(
        structs.replace(line, quantity=None, billed_quantity=None, new_quantity=None)
        if line_key(line) in unquantified
        else line
        for line in lines
    )
    subtotal = found.subtotal if found else ZERO
    tax = found.tax if found else ZERO
    credits = credit(subtotal + tax) if subtotal + tax > 0 else []
    credited = exact_sum([a for _, a in credits])
    return structs.replace(
        body,
        lines=lines,
        subtotal=subtotal,
        tax=tax,
        credits=tuple(CreditApplied(grant=g, amount=a) for g, a in credits),
        credits_applied=credited,
        total=subtotal + tax - credited,
        **extra,
    )


def interim_body(
    body: Body,
    interims: Sequence[Body],
    rounding: Rounding,
    credit: Credit,
) -> Body:
    """Interim invoice number len(interims) + 1 of the period of the whole-period `body`."""
    found = pending(body, interims, rounding).diff
    return _finish(
        body,
        found,
        credit,
        role=INTERIM,
        interim=len(interims) + 1,
        thresholds=dict(sorted(thresholds(body).items())),
    )


def final_body(body: Body, interims: Sequence[tuple[str, Body]], credit: Credit) -> Body:
    """The final invoice of a period with interim invoices [(number, body)]: the whole
    period `body` less what the interims billed, line by line (same arithmetic as §8)."""
    billed = BilledSoFar.of([b for _, b in interims])
    found = diff(billed, body.lines, body.tax)
    return _finish(
        body,
        found,
        credit,
        role=FINAL,
        interims=tuple(n for n, _ in interims),
        period_subtotal=body.subtotal,
        period_tax=body.tax,
    )


def describe(body: Mapping[str, Any]) -> str | None:
    """The sentence renderings print for an interim or final invoice (None otherwise);
    `body` is the public JSON (renderings take the document as JSON)."""
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
