"""The ledger: chart of accounts and pure posting rules (DESIGN §9).

No I/O here: a posting is computed from a document body or a status fact, so
reconciliation can recompute every journal entry and compare it with what was
stored. The store layer (store/journal.py) persists them.
"""

from __future__ import annotations

from meterline.ledger.accounts import (
    CASH,
    TAX_PAYABLE,
    AccountType,
    account_type,
    customer_credit,
    customer_of,
    discounts,
    receivable,
    revenue,
)
from meterline.ledger.postings import (
    Entry,
    EntryKind,
    Line,
    from_minor,
    issue_entry,
    payment_entry,
    status_entry,
    to_minor,
    void_entry,
)

__all__ = [
    "CASH",
    "TAX_PAYABLE",
    "AccountType",
    "Entry",
    "EntryKind",
    "Line",
    "account_type",
    "customer_credit",
    "customer_of",
    "discounts",
    "from_minor",
    "issue_entry",
    "payment_entry",
    "receivable",
    "revenue",
    "status_entry",
    "to_minor",
    "void_entry",
]
