"""Posting rules for credit grant facts (DESIGN §13; docs/LEDGER.md).

    grant, paid (a top-up)
        Dr cash                         amount
        Cr customer_credit:<customer>   amount
    grant, promotional
        Dr promotions                   amount   (contra-revenue)
        Cr customer_credit:<customer>   amount
    void (what was left of the grant)
        the grant's rule with debits and credits swapped, for the amount released
    expiry, rollover (breakage)
        Dr customer_credit:<customer>   amount
        Cr credit_breakage              amount

Using credit is not a credit fact: the invoice's issue entry debits
customer_credit by `credits_applied` (ledger/postings.py). Pure, so reconcile
recomputes every entry from the fact rows.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.billing.credits import GrantKind
from meterline.ledger.accounts import CASH, CREDIT_BREAKAGE, PROMOTIONS, customer_credit
from meterline.ledger.postings import Entry, EntryKind, Line, _checked

GRANT = "grant"
VOID = "void"
EXPIRY = "expiry"
ROLLOVER = "rollover"
ACTIONS = (GRANT, VOID, EXPIRY, ROLLOVER)


def credit_entry(
    action: str, grant_id: str, customer: str, currency: str, amount: Decimal, kind: GrantKind
) -> Entry | None:
    """The entry one credit fact posts (None when it moves no money: a zero amount)."""
    if amount == 0:
        return None
    liability = customer_credit(customer)
    source = CASH if kind is GrantKind.PAID else PROMOTIONS
    if action == GRANT:
        lines = (Line(source, debit=amount), Line(liability, credit=amount))
        entry_kind, memo = EntryKind.CREDIT_GRANT, f"{kind} credit grant {grant_id} to {customer}"
    elif action == VOID:
        lines = (Line(liability, debit=amount), Line(source, credit=amount))
        entry_kind, memo = EntryKind.CREDIT_VOID, f"credit grant {grant_id} voided"
    elif action in (EXPIRY, ROLLOVER):
        lines = (Line(liability, debit=amount), Line(CREDIT_BREAKAGE, credit=amount))
        entry_kind, memo = EntryKind.BREAKAGE, f"credit grant {grant_id}: {action} breakage"
    else:
        raise ValueError(f"unknown credit action {action!r}")
    return _checked(Entry(entry_kind, grant_id, customer, currency, lines, memo))
