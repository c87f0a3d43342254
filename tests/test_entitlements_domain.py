"""The entitlement decision (billing/entitlements.py `decide`), property-based."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from meterline.billing.entitlements import Enforcement, Entitlement, decide, exhausted

amounts = st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False)


@given(limit=amounts, usage=amounts, soft=st.booleans())
def test_balance_and_overage_split_the_usage_at_the_limit(
    limit: Decimal, usage: Decimal, soft: bool
) -> None:
    enforcement = Enforcement.SOFT if soft else Enforcement.HARD
    a = decide(Entitlement("f", True, limit, enforcement), usage)
    assert a.balance is not None and a.overage is not None
    assert a.balance >= 0 and a.overage >= 0 and min(a.balance, a.overage) == 0
    assert usage + a.balance - a.overage == limit
    # hard: access exactly while below the limit; soft: always, excess is overage
    assert a.has_access is (soft or usage < limit)
    assert exhausted(Entitlement("f", True, limit, enforcement), usage) is (usage >= limit)


@given(granted=st.booleans(), usage=st.one_of(st.none(), amounts))
def test_boolean_entitlements_ignore_usage(granted: bool, usage: Decimal | None) -> None:
    a = decide(Entitlement("f", granted), usage)
    assert a.has_access is granted and (a.limit, a.balance, a.overage) == (None, None, None)
    assert decide(None, usage).has_access is False
