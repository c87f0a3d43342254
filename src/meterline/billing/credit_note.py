"""The correction diff (DESIGN §8), a pure function: what was billed for a
customer-period (the invoice plus its corrections) against the invoice as
known now -> the lines of a credit or debit note, or nothing.

- Line identity = price book + charge code + dimension values.
- Each line carries signed deltas of quantity and amount, with what was
  billed and what is due now.
- Tax delta = tax(new subtotal) - tax billed so far: no rounding drift.
- Kind: a debit note if the total delta is positive, else a credit note; a
  zero total with changed lines is a credit note of 0.00 (docs/SEMANTICS.md);
  no changed line and no tax delta -> no document (re-rating is idempotent).
- Credits applied stay on the original invoice: a note moves no credits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meterline.billing.document import Kind, money
from meterline.domain.canonical import dumps
from meterline.domain.decimals import exact_sum, fmt
from meterline.domain.money import Currency

LineKey = tuple[str, str, str]  # price book, charge, canonical dimensions
ZERO = Decimal(0)


def line_key(line: Mapping[str, Any]) -> LineKey:
    return (line["price_book"], line["charge"], dumps(line["dimensions"]).decode())


def _dec(text_: str | None) -> Decimal:
    return ZERO if text_ is None else Decimal(text_)


@dataclass
class BilledSoFar:
    """Sums per line identity over the invoice and its corrections, in issue order."""

    quantity: dict[LineKey, Decimal] = field(default_factory=dict)
    amount: dict[LineKey, Decimal] = field(default_factory=dict)
    templates: dict[LineKey, Mapping[str, Any]] = field(default_factory=dict)
    tax: Decimal = ZERO
    cutoff: int = 0

    @classmethod
    def of(cls, bodies: Sequence[Mapping[str, Any]]) -> BilledSoFar:
        b = cls()
        for body in bodies:
            for line in body["lines"]:
                k = line_key(line)
                b.quantity[k] = b.quantity.get(k, ZERO) + _dec(line.get("quantity"))
                b.amount[k] = b.amount.get(k, ZERO) + _dec(line["amount"])
                b.templates.setdefault(k, line)
            b.tax += _dec(body["tax"])
            b.cutoff = max(b.cutoff, int(body["cutoff_seq"]))
        return b


@dataclass(frozen=True)
class Diff:
    kind: Kind
    lines: list[dict[str, Any]]
    subtotal: Decimal
    tax: Decimal
    total: Decimal


def diff(
    billed: BilledSoFar,
    new_lines: Sequence[Mapping[str, Any]],
    new_tax: Decimal,
    currency: Currency,
) -> Diff | None:
    """The correction of what was billed by the lines and tax due now, or None."""
    fresh = {line_key(line): line for line in new_lines}
    keys = list(fresh) + [k for k in billed.amount if k not in fresh]
    lines: list[dict[str, Any]] = []
    for k in keys:
        new = fresh.get(k)
        nq, na = (_dec(new.get("quantity")), _dec(new["amount"])) if new else (ZERO, ZERO)
        bq, ba = billed.quantity.get(k, ZERO), billed.amount.get(k, ZERO)
        if nq == bq and na == ba:
            continue
        template = new or billed.templates[k]
        lines.append(
            {
                "charge": template["charge"],
                "description": template["description"],
                "price_book": template["price_book"],
                "model": template["model"],
                "meter": template.get("meter"),
                "dimensions": template["dimensions"],
                "quantity": fmt(nq - bq),
                "unit_price": template.get("unit_price"),
                "amount": money(na - ba, currency),
                "billed_quantity": fmt(bq),
                "billed_amount": money(ba, currency),
                "new_quantity": fmt(nq),
                "new_amount": money(na, currency),
                "formula": new["formula"] if new else "no longer billed",
                "explanation": new["explanation"] if new else None,
                "usage": new.get("usage") if new else None,
            }
        )
    tax_delta = new_tax - billed.tax
    if not lines and tax_delta == 0:
        return None
    for i, line in enumerate(lines, start=1):
        line["line"] = i
    subtotal = exact_sum([_dec(line["amount"]) for line in lines])
    total = subtotal + tax_delta
    kind = Kind.DEBIT_NOTE if total > 0 else Kind.CREDIT_NOTE
    return Diff(kind, lines, subtotal, tax_delta, total)
