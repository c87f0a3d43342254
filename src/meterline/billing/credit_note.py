"""The correction diff (DESIGN §8), a pure function on typed lines: what was billed
for a customer-period (the invoice plus its corrections) against the invoice as
known now -> the lines of a credit or debit note, or nothing.

- Line identity = price book + charge code + dimension values (`Line.identity`).
- Each line carries signed deltas of quantity and amount (Decimal), with what was
  billed and what is due now.
- Tax delta = tax(new subtotal) - tax billed so far: no rounding drift.
- Kind: a debit note if the total delta is positive, else a credit note; a
  zero total with changed lines is a credit note of 0.00 (docs/SEMANTICS.md);
  no changed line and no tax delta -> no document (re-rating is idempotent).
- Credits applied stay on the original invoice: a note moves no credits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from meterline.billing.body import Body, Line
from meterline.billing.document import Kind
from meterline.domain.decimals import exact_sum

LineKey = tuple[str, str, tuple[tuple[str, str | None], ...]]
ZERO = Decimal(0)


def line_key(line: Line) -> LineKey:
    return line.identity


def _q(value: Decimal | None) -> Decimal:
    return ZERO if value is None else value


@dataclass
class BilledSoFar:
    """Sums per line identity over the invoice and its corrections, in issue order."""

    quantity: dict[LineKey, Decimal] = field(default_factory=dict)
    amount: dict[LineKey, Decimal] = field(default_factory=dict)
    templates: dict[LineKey, Line] = field(default_factory=dict)
    tax: Decimal = ZERO
    cutoff: int = 0

    @classmethod
    def of(cls, bodies: Sequence[Body]) -> BilledSoFar:
        b = cls()
        for body in bodies:
            for line in body.lines:
                k = line.identity
                b.quantity[k] = b.quantity.get(k, ZERO) + _q(line.quantity)
                b.amount[k] = b.amount.get(k, ZERO) + line.amount
                b.templates.setdefault(k, line)
            b.tax += body.tax
            b.cutoff = max(b.cutoff, body.cutoff_seq)
        return b


@dataclass(frozen=True)
class Diff:
    kind: Kind
    lines: tuple[Line, ...]
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def diff(billed: BilledSoFar, new_lines: Sequence[Line], new_tax: Decimal) -> Diff | None:
    """The correction of what was billed by the lines and tax due now, or None."""
    fresh = {line.identity: line for line in new_lines}
    keys = list(fresh) + [k for k in billed.amount if k not in fresh]
    lines: list[Line] = []
    for k in keys:
        new = fresh.get(k)
        nq, na = (_q(new.quantity), new.amount) if new else (ZERO, ZERO)
        bq, ba = billed.quantity.get(k, ZERO), billed.amount.get(k, ZERO)
        if nq == bq and na == ba:
            continue
        template = new or billed.templates[k]
        lines.append(
            Line(
                line=len(lines) + 1,
                charge=template.charge,
                description=template.description,
                price_book=template.price_book,
                model=template.model,
                meter=template.meter,
                dimensions=template.dimensions,
                quantity=nq - bq,
                unit_price=template.unit_price,
                amount=na - ba,
                billed_quantity=bq,
                billed_amount=ba,
                new_quantity=nq,
                new_amount=na,
                formula=new.formula if new else "no longer billed",
                explanation=new.explanation if new else None,
                usage=new.usage if new else None,
            )
        )
    tax_delta = new_tax - billed.tax
    if not lines and tax_delta == 0:
        return None
    subtotal = exact_sum([line.amount for line in lines])
    total = subtotal + tax_delta
    kind = Kind.DEBIT_NOTE if total > 0 else Kind.CREDIT_NOTE
    return Diff(kind, tuple(lines), subtotal, tax_delta, total)
