"""Ledger read models for the CLI and the HTTP API: balances and the journal.

Both are projections of the append-only journal; nothing here writes. Money
is returned as strings with the currency's minor digits (DESIGN §6).
"""

from __future__ import annotations

from typing import Any

from meterline.domain.money import Currency, money_str
from meterline.domain.timestamps import format_us
from meterline.ledger.accounts import account_type, customer_of
from meterline.ledger.postings import from_minor
from meterline.store import journal as journal_store
from meterline.store.database import Store


def balances(store: Store, customer: str | None = None) -> list[dict[str, Any]]:
    """Balance per account and currency.

    `balance` is signed in the account's normal direction (positive = what an
    asset holds, or what a liability/revenue account owes or earned); `debit`
    and `credit` are the totals posted. With `customer`, only the entries of
    that customer's documents count.
    """
    with store.read() as conn:
        rows = journal_store.balances(conn, customer)
    out = []
    for account, code, debit, credit in rows:
        cur = Currency(code)
        kind = account_type(account)
        net = debit - credit if kind.debit_normal else credit - debit
        out.append(
            {
                "account": account,
                "type": str(kind),
                "customer_id": customer_of(account),
                "currency": code,
                "debit": money_str(from_minor(debit, cur), cur),
                "credit": money_str(from_minor(credit, cur), cur),
                "balance": money_str(from_minor(net, cur), cur),
            }
        )
    return out


def journal(
    store: Store, limit: int | None = None, customer: str | None = None
) -> list[dict[str, Any]]:
    """Journal entries oldest first (the newest `limit` of them when given)."""
    with store.read() as conn:
        stored = list(journal_store.entries(conn, limit, customer))
    out = []
    for s in stored:
        e = s.entry
        cur = Currency(e.currency)
        out.append(
            {
                "seq": s.seq,
                "kind": str(e.kind),
                "document": e.document,
                "customer_id": e.customer_id,
                "currency": e.currency,
                "memo": e.memo,
                "posted_at": format_us(s.posted_at),
                "balanced": e.balanced,
                "lines": [
                    {
                        "account": ln.account,
                        "debit": money_str(ln.debit, cur),
                        "credit": money_str(ln.credit, cur),
                    }
                    for ln in e.lines
                ],
            }
        )
    return out
