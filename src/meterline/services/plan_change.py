"""A plan change in one operation (DESIGN §7): the subscription in effect at TIME ends at
TIME and the next one, on the new price book, starts at TIME.

Customers are versioned catalog facts, so the change is a new customer version
recorded exactly as `catalog apply` records one (store/customer_catalog.py
`apply_customer`), in one transaction holding the knowledge lock, with an audit
record. Nothing else is special: invoicing sees two subscriptions in the period,
the ended one's unused in-advance fee comes back as "unused time on <plan>" on the
invoice of the period holding TIME (billing/advance.py), and the new one is billed
from TIME. The new subscription keeps the old one's billing cycle, anchor, end and
threshold; a trial is not given again. An anniversary subscription changes only at
one of its period starts: the next one's anniversary is its own start, so a change
mid-period would make two overlapping periods and bill the overlap twice. A change inside a period already invoiced
is a catalog change like any other: re-rating corrects that period
("customer's terms changed").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import text

from meterline.billing.customers import Customer, Subscription
from meterline.billing.periods import Anchor
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us
from meterline.store import audit, sequence
from meterline.store.customer_catalog import apply_customer, load_customer
from meterline.store.database import Store


@dataclass(frozen=True)
class PlanChange:
    customer: Customer
    ended: Subscription
    started: Subscription
    recorded: bool  # False: the very same change was already recorded (a retry)

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer.id,
            "ended": self.ended.to_dict(),
            "started": self.started.to_dict(),
            "recorded": self.recorded,
        }


def changed(
    customer: Customer, to_book: str, at_us: int
) -> tuple[Customer, Subscription, Subscription]:
    """The customer with the subscription in effect at `at_us` ended there and the next
    one on `to_book` started there (pure)."""
    current = next(
        (
            s
            for s in customer.subscriptions
            if s.start <= at_us and (s.end is None or at_us < s.end)
        ),
        None,
    )
    if current is None:
        raise MeterlineError(
            ErrorCode.NO_SUBSCRIPTION,
            f"customer {customer.id} has no subscription in effect at {format_us(at_us)}",
        )
    if current.price_book == to_book:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"customer {customer.id} is already on {to_book} at {format_us(at_us)}",
        )
    if at_us == current.start:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"the subscription to {current.price_book} starts at {format_us(at_us)}: change "
            "the catalog instead of ending it before it began",
        )
    if current.anchor is Anchor.SUBSCRIPTION:
        # The next subscription's anniversary is its own start: mid-period its periods
        # would overlap the old one's, and the overlap would be billed twice.
        period = current.cycle(customer.timezone).period_of(at_us)
        if period.start != at_us:
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT,
                f"the subscription to {current.price_book} has anniversary periods: it can "
                f"change plan at a period start ({format_us(period.start)} or "
                f"{format_us(period.end)}), not at {format_us(at_us)}",
            )
    ended = replace(current, end=at_us)
    started = replace(current, price_book=to_book, start=at_us, trial_days=0)
    if current.anchor is Anchor.SUBSCRIPTION:
        _same_grid(current, started, customer.timezone, at_us)
    subs = [ended if s is current else s for s in customer.subscriptions] + [started]
    return replace(customer, subscriptions=tuple(subs)), ended, started


def change_plan(
    store: Store, customer_id: str, to_book: str, at_us: int, now_us: int
) -> PlanChange:
    """Record the plan change as a new customer version (idempotent for a retry)."""
    with store.write() as conn:
        sequence.lock(conn)
        customer = load_customer(conn, customer_id)
        row = conn.execute(
            text("SELECT currency FROM price_books WHERE code = :c"), {"c": to_book}
        ).first()
        if row is None:
            raise MeterlineError(
                ErrorCode.INVALID_CATALOG, f"to: no price book {to_book!r}", path="to"
            )
        if str(row[0]) != customer.currency.code:
            raise MeterlineError(
                ErrorCode.INVALID_CATALOG,
                f"to: price book {to_book} is in {row[0]} but customer {customer_id} is billed "
                f"in {customer.currency.code}",
                path="to",
            )
        retry = next(
            (
                (s, n)
                for s in customer.subscriptions
                for n in customer.subscriptions
                if s.end == at_us and n.start == at_us and n.price_book == to_book
            ),
            None,
        )
        if retry is not None:
            return PlanChange(customer, retry[0], retry[1], False)
        new, ended, started = changed(customer, to_book, at_us)
        apply_customer(conn, new, now_us)
        audit.record(
            conn,
            "subscription.change",
            {
                "customer_id": customer_id,
                "from": ended.price_book,
                "to": to_book,
                "at": format_us(at_us),
            },
            now_us,
        )
        return PlanChange(new, ended, started, True)


# Enough anniversary periods ahead to meet every clamped month of a leap-year cycle.
_GRID_AHEAD = 60


def _same_grid(current: Subscription, started: Subscription, timezone: str, at_us: int) -> None:
    """The next subscription's anniversary is its own start: where the old anchor day
    was clamped (a 31st anchor starting Feb 29), the new grid would drift from the old
    one and name the same label for two overlapping periods. Refused."""
    old, new = current.cycle(timezone), started.cycle(timezone)
    first = old.index_of(at_us)
    for k in range(_GRID_AHEAD):
        ahead = new.period(new.index_of(at_us) + k)
        if ahead != old.period(first + k):
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT,
                f"a change at {format_us(at_us)} would move the anniversary of "
                f"{current.price_book}'s periods (its period starting {format_us(ahead.start)} "
                f"would differ from the current one's): {format_us(at_us)} is a period "
                "start shortened to the month's last day; change at a period start on the "
                "anniversary's own day",
            )
