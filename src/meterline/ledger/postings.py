"""Posting rules: which balanced journal entry each business fact produces.

Amounts are signed money from the document body; a positive amount on the
debit-side of a rule is a debit, a negative one becomes a credit of its
absolute value (credit notes carry negative totals). An entry is in one
currency only, the document's. Rules are pure, so reconciliation recomputes
every entry from the documents and compares it with the stored journal.

    issue (invoice, credit note, debit note)
        Dr receivable:<customer>        total
        Dr customer_credit:<customer>   credits_applied
        Cr revenue:<charge>             sum of that charge's line amounts
        Dr discounts:<code>             a cap or coupon line's amount (lines of the
                                        adjustment models below: contra-revenue)
        Cr tax_payable                  tax
    payment (status -> paid)
        Dr cash                         total
        Cr receivable:<customer>        total
    void (status -> issued document voided)
        the issue entry with debits and credits swapped

total = subtotal + tax - credits_applied, so each issue entry balances.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from meterline.billing.body import Body
from meterline.domain.decimals import exact_sum
from meterline.domain.money import Currency
from meterline.ledger.accounts import (
    CASH,
    TAX_PAYABLE,
    customer_credit,
    discounts,
    receivable,
    revenue,
)

ZERO = Decimal(0)


class EntryKind(StrEnum):
    ISSUE = "issue"
    PAYMENT = "payment"
    VOID = "void"
    # credit grant facts (ledger/credit_postings.py)
    CREDIT_GRANT = "credit_grant"
    CREDIT_VOID = "credit_void"
    BREAKAGE = "breakage"


@dataclass(frozen=True)
class Line:
    """One side of a posting: exactly one of debit/credit is positive."""

    account: str
    debit: Decimal = ZERO
    credit: Decimal = ZERO

    def __post_init__(self) -> None:
        if self.debit < 0 or self.credit < 0 or (self.debit and self.credit):
            raise ValueError(f"a line is a positive debit or a positive credit: {self}")

    @property
    def signed(self) -> Decimal:
        """Debit positive, credit negative."""
        return self.debit - self.credit

    def reversed(self) -> Line:
        return Line(self.account, self.credit, self.debit)


@dataclass(frozen=True)
class Entry:
    """A journal entry: what one fact (issue, payment, void) posts."""

    kind: EntryKind
    document: str
    customer_id: str
    currency: str
    lines: tuple[Line, ...]
    memo: str

    @property
    def debits(self) -> Decimal:
        return exact_sum([ln.debit for ln in self.lines])

    @property
    def credits(self) -> Decimal:
        return exact_sum([ln.credit for ln in self.lines])

    @property
    def balanced(self) -> bool:
        return self.debits == self.credits


def _debit(account: str, amount: Decimal) -> Line | None:
    """A signed amount on the debit side (negative -> credit); zero posts nothing."""
    if amount > 0:
        return Line(account, debit=amount)
    if amount < 0:
        return Line(account, credit=-amount)
    return None


def _credit(account: str, amount: Decimal) -> Line | None:
    return _debit(account, -amount)


def _lines(candidates: Iterable[Line | None]) -> tuple[Line, ...]:
    return tuple(ln for ln in candidates if ln is not None)


def _checked(entry: Entry) -> Entry:
    currency = Currency(entry.currency)
    for ln in entry.lines:
        for amount in (ln.debit, ln.credit):
            if amount != amount.quantize(currency.quantum):
                raise ValueError(f"{entry.document}: {amount} is not a {currency.code} amount")
    if not entry.balanced:
        raise ValueError(
            f"{entry.document}: {entry.kind} entry does not balance "
            f"(debits {entry.debits}, credits {entry.credits})"
        )
    return entry


# Lines that reduce what usage earned rather than earn anything themselves.
ADJUSTMENT_MODELS = frozenset({"maximum_spend", "coupon"})


def revenue_by_charge(body: Body) -> dict[str, Decimal]:
    """Line amounts per charge code, in charge order (deterministic); adjustments excluded."""
    out: dict[str, Decimal] = {}
    for line in body.lines:
        if line.model in ADJUSTMENT_MODELS:
            continue
        out[line.charge] = out.get(line.charge, ZERO) + line.amount
    return dict(sorted(out.items()))


def adjustments_by_code(body: Body) -> dict[str, Decimal]:
    """Cap and coupon line amounts (negative on an invoice) per code, in code order."""
    out: dict[str, Decimal] = {}
    for line in body.lines:
        if line.model in ADJUSTMENT_MODELS:
            out[line.charge] = out.get(line.charge, ZERO) + line.amount
    return dict(sorted(out.items()))


def revenue_accounts(body: Body) -> dict[str, Decimal]:
    """What a document adds to each revenue-type account: revenue:<charge> for usage and
    fees, discounts:<code> for caps and coupons (signed as on the document)."""
    out = {revenue(c): a for c, a in revenue_by_charge(body).items()}
    out.update({discounts(c): a for c, a in adjustments_by_code(body).items()})
    return out


def issue_entry(number: str, body: Body) -> Entry:
    """Issuing a document: receivable and credit used against revenue and tax."""
    customer = body.customer_id
    candidates: list[Line | None] = [
        _debit(receivable(customer), body.total),
        _debit(customer_credit(customer), body.credits_applied),
    ]
    candidates += [_credit(revenue(c), a) for c, a in revenue_by_charge(body).items()]
    candidates += [_credit(discounts(c), a) for c, a in adjustments_by_code(body).items()]
    candidates.append(_credit(TAX_PAYABLE, body.tax))
    kind = body.kind.replace("_", " ")
    return _checked(
        Entry(
            EntryKind.ISSUE,
            number,
            customer,
            body.currency,
            _lines(candidates),
            f"{number} issued to {customer} ({kind} for {body.period.label})",
        )
    )


def payment_entry(number: str, body: Body) -> Entry:
    """A document paid in full: cash in, receivable settled (a paid credit note is a refund)."""
    customer = body.customer_id
    total = body.total
    return _checked(
        Entry(
            EntryKind.PAYMENT,
            number,
            customer,
            body.currency,
            _lines([_debit(CASH, total), _credit(receivable(customer), total)]),
            f"{number} paid by {customer}",
        )
    )


def void_entry(number: str, body: Body) -> Entry:
    """Voiding an issued document: its issue entry, reversed line by line."""
    issued = issue_entry(number, body)
    return _checked(
        Entry(
            EntryKind.VOID,
            number,
            issued.customer_id,
            issued.currency,
            tuple(ln.reversed() for ln in issued.lines),
            f"{number} voided",
        )
    )


def status_entry(number: str, status: str, body: Body) -> Entry | None:
    """The entry a status fact posts (None for a status that moves no money)."""
    if status == "paid":
        return payment_entry(number, body)
    if status == "void":
        return void_entry(number, body)
    return None


def to_minor(amount: Decimal, currency: Currency) -> int:
    """Money as an integer count of minor units: exact, and summable in SQL."""
    scaled = amount.scaleb(currency.minor_digits)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} is not a {currency.code} amount")
    return int(scaled)


def from_minor(units: int, currency: Currency) -> Decimal:
    return Decimal(units).scaleb(-currency.minor_digits).quantize(currency.quantum)
