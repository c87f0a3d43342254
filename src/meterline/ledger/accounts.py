"""The chart of accounts (docs/LEDGER.md).

Account names are text, "<class>" or "<class>:<qualifier>":

    receivable:<customer>       asset      what the customer owes us
    cash                        asset      money received (or refunded)
    customer_credit:<customer>  liability  prepaid credit; debited as credit is used
    revenue:<charge>            revenue    billed usage and fees, per charge code
    discounts:<code>            revenue    contra-revenue: caps (maximum_spend) and coupons,
                                           a debit balance that reduces revenue
    tax_payable                 liability  tax billed, owed to the tax authority
    promotions                  revenue    contra-revenue: promotional credit grants given
                                           away (a debit balance, like discounts)
    credit_breakage             revenue    the unused rest of expired credit grants

Balances are kept per account *and currency*: an entry is always in its
document's currency, so two currencies are never added together.
"""

from __future__ import annotations

from enum import StrEnum

CASH = "cash"
TAX_PAYABLE = "tax_payable"
RECEIVABLE = "receivable"
CUSTOMER_CREDIT = "customer_credit"
REVENUE = "revenue"
DISCOUNTS = "discounts"
PROMOTIONS = "promotions"
CREDIT_BREAKAGE = "credit_breakage"


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"

    @property
    def debit_normal(self) -> bool:
        """Assets grow with debits; liabilities and revenue with credits."""
        return self is AccountType.ASSET


_TYPES = {
    RECEIVABLE: AccountType.ASSET,
    CASH: AccountType.ASSET,
    CUSTOMER_CREDIT: AccountType.LIABILITY,
    REVENUE: AccountType.REVENUE,
    DISCOUNTS: AccountType.REVENUE,
    TAX_PAYABLE: AccountType.LIABILITY,
    PROMOTIONS: AccountType.REVENUE,
    CREDIT_BREAKAGE: AccountType.REVENUE,
}


def receivable(customer: str) -> str:
    return f"{RECEIVABLE}:{customer}"


def customer_credit(customer: str) -> str:
    return f"{CUSTOMER_CREDIT}:{customer}"


def revenue(charge: str) -> str:
    return f"{REVENUE}:{charge}"


def discounts(code: str) -> str:
    return f"{DISCOUNTS}:{code}"


def account_class(account: str) -> str:
    return account.split(":", 1)[0]


def account_type(account: str) -> AccountType:
    try:
        return _TYPES[account_class(account)]
    except KeyError:
        raise ValueError(f"{account!r} is not in the chart of accounts") from None


def customer_of(account: str) -> str | None:
    """The customer a per-customer account belongs to (None for shared accounts)."""
    cls, _, rest = account.partition(":")
    return rest if cls in (RECEIVABLE, CUSTOMER_CREDIT) else None
