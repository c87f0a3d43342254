"""Credit grants (DESIGN §13): which grants an invoice may use, in which order, and
what is left of each. Pure: the store hands over the grants and their history as
known at a cutoff K, so the consumption is reproducible at K (docs/SEMANTICS.md,
"Credit grants").

Two sources feed one model: grants recorded as facts (`meterline credits grant`)
and the legacy `credits` list of a customer in the catalog (billing/customers.py),
which keeps its old availability rule so documents issued before still verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterline.domain.decimals import fmt
from meterline.domain.timestamps import format_us

ZERO = Decimal(0)
DEFAULT_PRIORITY = 10  # lower is used first; the catalog's credits default to it too


class GrantKind(StrEnum):
    """Paid: a top-up (cash in, credit liability up). Promotional: given away
    (contra-revenue `promotions` debited, credit liability up)."""

    PAID = "paid"
    PROMOTIONAL = "promotional"


class Source(StrEnum):
    GRANT = "grant"  # a fact of the credit_facts table
    CATALOG = "catalog"  # a customer's `credits` list in the catalog (legacy)


@dataclass(frozen=True)
class Grant:
    id: str
    customer_id: str
    currency: str
    amount: Decimal
    effective_at: int
    priority: int = DEFAULT_PRIORITY
    expires_at: int | None = None
    rollover: Decimal | None = None  # cap kept at each period end; the rest expires
    kind: GrantKind = GrantKind.PAID
    source: Source = Source.GRANT

    def definition(self) -> dict[str, Any]:
        """What a grant fact records (canonical JSON is hashed)."""
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "currency": self.currency,
            "amount": fmt(self.amount),
            "priority": self.priority,
            "effective_at": format_us(self.effective_at),
            "expires_at": None if self.expires_at is None else format_us(self.expires_at),
            "rollover": None if self.rollover is None else fmt(self.rollover),
            "kind": self.kind.value,
        }

    def covers(self, period_start: int, period_end: int) -> bool:
        """May this grant pay an invoice of [period_start, period_end)?

        A fact grant: in effect at the period's end (effective before it, not
        expired before it). A catalog grant keeps its legacy rule: not expired
        by the period's start."""
        if self.source is Source.CATALOG:
            return self.expires_at is None or self.expires_at > period_start
        return self.effective_at < period_end and (
            self.expires_at is None or self.expires_at >= period_end
        )

    def expired_by(self, now_us: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now_us

    def order_key(self) -> tuple[int, bool, int, int, str]:
        """Priority (lower first), then earliest expiry (none last), then oldest.

        Catalog credits are ordered among themselves as they were before grant facts
        existed, oldest first whatever their expiry, so invoices issued then still
        reproduce (their expiry only decides whether they are usable)."""
        if self.source is Source.CATALOG:
            return (self.priority, True, 0, self.effective_at, self.id)
        return (
            self.priority,
            self.expires_at is None,
            self.expires_at or 0,
            self.effective_at,
            self.id,
        )


@dataclass(frozen=True)
class GrantState:
    """A grant and what happened to it, as known at some K."""

    grant: Grant
    used: Decimal = ZERO  # by issued, non-void documents
    expired: Decimal = ZERO  # breakage posted (expiry and rollover)
    voided: Decimal = ZERO  # released by a void fact
    void_reason: str | None = None

    @property
    def is_void(self) -> bool:
        return self.void_reason is not None

    @property
    def remaining(self) -> Decimal:
        """Neither used, expired nor voided: still on the credit liability."""
        return self.grant.amount - self.used - self.expired - self.voided


def consume(
    states: Iterable[GrantState], due: Decimal, period_start: int, period_end: int
) -> list[tuple[str, Decimal]]:
    """The grants an invoice uses, in consumption order, never more than is due
    nor than a grant has left. Voided grants and grants not covering the period
    are skipped."""
    usable = sorted(
        (
            s
            for s in states
            if not s.is_void and s.grant.covers(period_start, period_end) and s.remaining > 0
        ),
        key=lambda s: s.grant.order_key(),
    )
    applied: list[tuple[str, Decimal]] = []
    for s in usable:
        if due <= 0:
            break
        take = min(s.remaining, due)
        applied.append((s.grant.id, take))
        due -= take
    return applied


def expiry_breakage(state: GrantState, now_us: int) -> Decimal:
    """What expiry releases as breakage at `now_us`: the rest of an expired grant."""
    if state.is_void or not state.grant.expired_by(now_us):
        return ZERO
    return max(state.remaining, ZERO)


def rollover_breakage(state: GrantState) -> Decimal:
    """At a period end: what is left above the grant's rollover cap expires."""
    cap = state.grant.rollover
    if cap is None or state.is_void:
        return ZERO
    return max(state.remaining - cap, ZERO)


@dataclass(frozen=True)
class Summary:
    """A customer's credit totals: granted = used + expired + voided + available."""

    granted: Decimal
    used: Decimal
    expired: Decimal
    voided: Decimal
    available: Decimal


def view(state: GrantState, now_us: int) -> tuple[Decimal, Decimal]:
    """(expired, available) as a reader sees them at `now_us`: a grant past its
    expiry has nothing available, even before its breakage is posted."""
    if not state.is_void and state.grant.expired_by(now_us):
        return state.expired + max(state.remaining, ZERO), ZERO
    return state.expired, max(state.remaining, ZERO)


def summarize(states: Sequence[GrantState], now_us: int) -> Summary:
    granted = used = expired = voided = available = ZERO
    for s in states:
        e, a = view(s, now_us)
        granted += s.grant.amount
        used += s.used
        voided += s.voided
        expired += e
        available += a
    return Summary(granted, used, expired, voided, available)
