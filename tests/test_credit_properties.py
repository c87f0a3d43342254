"""Properties of credit consumption (billing/credits.py): an invoice never uses more
than is due or than a grant has left, and the totals always add up."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.billing.credits import (
    Grant,
    GrantKind,
    GrantState,
    consume,
    expiry_breakage,
    rollover_breakage,
    summarize,
)

DAY = 86_400_000_000
START, END = 30 * DAY, 61 * DAY  # the period [day 30, day 61)

cents = st.integers(min_value=0, max_value=100_000).map(lambda c: Decimal(c).scaleb(-2))


@st.composite
def states(draw: st.DrawFn) -> list[GrantState]:
    out = []
    for i in range(draw(st.integers(0, 8))):
        amount = draw(cents.filter(lambda d: d > 0))
        used = draw(cents) % (amount + Decimal("0.01"))
        expired = draw(cents) % (amount - used + Decimal("0.01"))
        voided = amount - used - expired if draw(st.booleans()) else Decimal(0)
        effective = draw(st.integers(0, 90)) * DAY
        days = draw(st.none() | st.integers(1, 120))
        expires = None if days is None else effective + days * DAY
        grant = Grant(
            f"g{i}",
            "acme",
            "USD",
            amount,
            effective,
            draw(st.integers(0, 3)),
            expires,
            draw(st.none() | cents),
            draw(st.sampled_from(list(GrantKind))),
        )
        out.append(GrantState(grant, used, expired, voided, "void" if voided else None))
    return out


@settings(max_examples=300, deadline=None)
@given(states(), cents, st.integers(0, 150).map(lambda d: d * DAY))
def test_consumption_never_exceeds_what_is_available_or_due(
    grants: list[GrantState], due: Decimal, now: int
) -> None:
    applied = consume(grants, due, START, END)
    by_id = {s.grant.id: s for s in grants}
    assert sum((a for _, a in applied), Decimal(0)) <= due
    assert len({g for g, _ in applied}) == len(applied)
    for gid, amount in applied:
        s = by_id[gid]
        assert 0 < amount <= s.remaining
        assert not s.is_void and s.grant.covers(START, END)
    # every grant but the last one used is used up: nothing is left on the table
    for gid, amount in applied[:-1]:
        assert amount == by_id[gid].remaining
    # order: priority, then earliest expiry, then oldest
    keys = [by_id[g].grant.order_key() for g, _ in applied]
    assert keys == sorted(keys)
    # applying the use keeps granted = used + expired + voided + available
    used = dict(applied)
    after = [
        GrantState(s.grant, s.used + used.get(s.grant.id, Decimal(0)), s.expired, s.voided,
                   s.void_reason)
        for s in grants
    ]  # fmt: skip
    total = summarize(after, now)
    assert total.granted == total.used + total.expired + total.voided + total.available
    assert total.available >= 0
    for s in after:
        assert expiry_breakage(s, now) <= max(s.remaining, Decimal(0))
        assert rollover_breakage(s) <= max(s.remaining, Decimal(0))
