"""Customers, subscriptions and prepaid credit grants, parsed from the catalog.

A customer is a versioned fact: applying a changed definition records a new
version, and every document is computed from the version known at its cutoff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from msgspec import UNSET

from meterline.billing import body
from meterline.billing.coupons import Coupon, parse_coupon
from meterline.billing.credits import DEFAULT_PRIORITY
from meterline.billing.entitlements import (
    AlertRule,
    Entitlement,
    parse_alerts,
    parse_entitlements,
)
from meterline.billing.periods import Anchor, BillingCycle, Cycle, zone
from meterline.billing.seller import parse_address
from meterline.domain import catalog_input as ci
from meterline.domain.canonical import content_hash
from meterline.domain.decimals import fmt
from meterline.domain.errors import MeterlineError
from meterline.domain.money import Currency
from meterline.domain.timestamps import format_us, from_datetime, to_datetime

_ID = re.compile(r"[^\s].{0,255}", re.S)


class TrialUsage(StrEnum):
    BILLED = "billed"
    FREE = "free"


@dataclass(frozen=True)
class Subscription:
    price_book: str
    start: int
    end: int | None = None
    billing_cycle: BillingCycle = BillingCycle.MONTH
    anchor: Anchor = Anchor.CALENDAR
    trial_days: int = 0
    trial_usage: TrialUsage = TrialUsage.BILLED
    # Progressive billing (DESIGN §7): an interim invoice whenever the usage not yet
    # billed in an open period reaches this amount (billing/progressive.py).
    threshold: Decimal | None = None

    def trial_end(self, timezone: str) -> int | None:
        """The end of the trial: `trial_days` local days after the start (None: no trial)."""
        if not self.trial_days:
            return None
        local = to_datetime(self.start).astimezone(zone(timezone)).replace(tzinfo=None)
        return from_datetime(
            (local + timedelta(days=self.trial_days)).replace(tzinfo=zone(timezone))
        )

    def cycle(self, timezone: str) -> Cycle:
        """How this subscription's time is cut into billing periods (DESIGN §7)."""
        return Cycle(self.billing_cycle, self.anchor, timezone, self.start)

    def active(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The part of [lo, hi) this subscription covers, if any."""
        a = max(lo, self.start)
        b = hi if self.end is None else min(hi, self.end)
        return (a, b) if a < b else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "price_book": self.price_book,
            "start": format_us(self.start),
            "end": None if self.end is None else format_us(self.end),
        }
        # only when not the default: the content hash of older customers stays the same
        if self.billing_cycle is not BillingCycle.MONTH:
            data["billing_cycle"] = self.billing_cycle.value
        if self.anchor is not Anchor.CALENDAR:
            data["anchor"] = self.anchor.value
        if self.trial_days:
            data["trial_days"] = self.trial_days
        if self.trial_usage is not TrialUsage.BILLED:
            data["trial_usage"] = self.trial_usage.value
        if self.threshold is not None:
            data["threshold"] = fmt(self.threshold)
        return data

    def typed(self) -> body.SubscriptionRef:
        """The subscription as a document body records it (the same fields as `to_dict`)."""
        return body.SubscriptionRef(
            price_book=self.price_book,
            start=format_us(self.start),
            end=None if self.end is None else format_us(self.end),
            billing_cycle=UNSET
            if self.billing_cycle is BillingCycle.MONTH
            else self.billing_cycle.value,
            anchor=UNSET if self.anchor is Anchor.CALENDAR else self.anchor.value,
            trial_days=self.trial_days or UNSET,
            trial_usage=UNSET if self.trial_usage is TrialUsage.BILLED else self.trial_usage.value,
            threshold=UNSET if self.threshold is None else self.threshold,
        )


@dataclass(frozen=True)
class CreditGrant:
    """Prepaid credit in the customer's currency, declared in the catalog; used in the
    order of billing/credits.py with the credit grant facts. `kind` (paid by default)
    and `priority` say what a grant fact would; see docs/SEMANTICS.md "Credit grants"."""

    id: str
    amount: Decimal
    granted_at: int
    expires_at: int | None = None
    priority: int = DEFAULT_PRIORITY
    kind: str = "paid"

    def usable_for(self, period_start: int) -> bool:
        return self.expires_at is None or self.expires_at > period_start

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "amount": fmt(self.amount),
            "granted_at": format_us(self.granted_at),
            "expires_at": None if self.expires_at is None else format_us(self.expires_at),
        }
        # only when not the default: the content hash of older customers stays the same
        if self.priority != DEFAULT_PRIORITY:
            out["priority"] = self.priority
        if self.kind != "paid":
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    currency: Currency
    timezone: str = "UTC"
    tax_rate: Decimal = Decimal(0)
    subscriptions: tuple[Subscription, ...] = ()
    credits: tuple[CreditGrant, ...] = ()
    coupons: tuple[Coupon, ...] = ()
    billing_address: tuple[str, ...] = ()
    payment_terms_days: int | None = None  # None: the default, net 30
    entitlements: tuple[Entitlement, ...] = ()  # billing/entitlements.py (DESIGN §13)
    alerts: tuple[AlertRule, ...] = ()

    def definition(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "name": self.name,
            "currency": self.currency.code,
            "timezone": self.timezone,
            "tax_rate": fmt(self.tax_rate),
            "subscriptions": [s.to_dict() for s in self.subscriptions],
            "credits": [c.to_dict() for c in self.credits],
            # only when present: the content hash of customers without coupons stays the same
            **({"coupons": [c.definition() for c in self.coupons]} if self.coupons else {}),
        }
        # Optional finance details: only when set, so existing definitions hash as before.
        if self.billing_address:
            out["billing_address"] = list(self.billing_address)
        if self.payment_terms_days is not None:
            out["payment_terms"] = f"net {self.payment_terms_days}"
        if self.entitlements:
            out["entitlements"] = [e.definition() for e in self.entitlements]
        if self.alerts:
            out["alerts"] = [a.definition() for a in self.alerts]
        return out

    @property
    def content_hash(self) -> str:
        return content_hash(self.definition())

    def cycles(self) -> list[Cycle]:
        """The billing cycles of the subscriptions, in subscription order, without repeats."""
        return list(dict.fromkeys(s.cycle(self.timezone) for s in self.subscriptions)) or [
            Cycle(timezone=self.timezone)
        ]

    def subscriptions_in(self, lo: int, hi: int) -> list[tuple[Subscription, tuple[int, int]]]:
        out = []
        for s in self.subscriptions:
            span = s.active(lo, hi)
            if span is not None:
                out.append((s, span))
        return sorted(out, key=lambda p: (p[1][0], p[0].price_book))


_fail = ci.catalog_error  # the one catalog vocabulary (domain/catalog_input.py)

_FIELDS = {
    "id",
    "name",
    "currency",
    "timezone",
    "tax_rate",
    "subscriptions",
    "credits",
    "coupons",
    "billing_address",
    "payment_terms",
    "entitlements",
    "alerts",
}
_SUBSCRIPTION = (
    {"price_book", "start"},
    {
        "end",
        "billing_cycle",
        "anchor",
        "trial_days",
        "trial_usage",
        "threshold",
    },
)
_CREDIT = {"id", "amount", "granted_at"}, {"expires_at", "priority", "kind"}


def parse_payment_terms(raw: Any, path: str) -> int | None:
    """`net 30`, `net30` or a number of days (0..365); None when absent."""
    if raw is None:
        return None
    text_ = str(raw).strip().lower() if not isinstance(raw, bool) else ""
    if text_.startswith("net"):
        text_ = text_[3:].strip()
    if not text_.isdigit() or not 0 <= int(text_) <= 365:
        raise _fail(path, f'{raw!r}: expected "net N" or N days, N from 0 to 365')
    return int(text_)


def parse_customer(raw: Any, path: str) -> Customer:
    data = ci.fields(raw, path, {"id", "name", "currency"}, _FIELDS)
    cid = ci.text(data["id"], f"{path}.id")
    try:
        currency = Currency(ci.text(data["currency"], f"{path}.currency"))
    except MeterlineError as exc:
        raise _fail(f"{path}.currency", exc.message) from None
    timezone = ci.text(data.get("timezone", "UTC"), f"{path}.timezone")
    try:
        zone(timezone)
    except MeterlineError as exc:
        raise _fail(f"{path}.timezone", exc.message) from None
    tax = ci.decimal(data.get("tax_rate", "0"), f"{path}.tax_rate")
    if not Decimal(0) <= tax < Decimal(1):
        raise _fail(f"{path}.tax_rate", 'must be in [0, 1), e.g. "0.20" for 20%')
    subs = [
        _subscription(s, f"{path}.subscriptions[{i}]", currency)
        for i, s in enumerate(ci.items(data.get("subscriptions") or [], f"{path}.subscriptions"))
    ]
    # One grid of periods per customer: subscriptions on different cycles would
    # each be billed on the other's periods too (an overlap billed twice).
    for i, s in enumerate(subs[1:], start=1):
        if (s.billing_cycle, s.anchor) != (subs[0].billing_cycle, subs[0].anchor):
            raise _fail(
                f"{path}.subscriptions[{i}]",
                f"billing_cycle {s.billing_cycle.value} / anchor {s.anchor.value} differs from "
                f"the first subscription's ({subs[0].billing_cycle.value} / "
                f"{subs[0].anchor.value}): a customer's subscriptions share one billing cycle",
            )
    credits = [
        _credit(c, f"{path}.credits[{i}]", currency)
        for i, c in enumerate(ci.items(data.get("credits") or [], f"{path}.credits"))
    ]
    if len({c.id for c in credits}) != len(credits):
        raise _fail(f"{path}.credits", "credit grant ids must be unique")
    coupons = [
        parse_coupon(c, f"{path}.coupons[{i}]", currency)
        for i, c in enumerate(ci.items(data.get("coupons") or [], f"{path}.coupons"))
    ]
    if len({c.code for c in coupons}) != len(coupons):
        raise _fail(f"{path}.coupons", "coupon codes must be unique")
    return Customer(
        cid,
        ci.text(data["name"], f"{path}.name"),
        currency,
        timezone,
        tax,
        tuple(subs),
        tuple(sorted(credits, key=lambda c: (c.granted_at, c.id))),
        tuple(coupons),
        parse_address(data.get("billing_address"), f"{path}.billing_address"),
        parse_payment_terms(data.get("payment_terms"), f"{path}.payment_terms"),
        parse_entitlements(data.get("entitlements"), f"{path}.entitlements"),
        parse_alerts(data.get("alerts"), f"{path}.alerts"),
    )


def _threshold(raw: Any, p: str, currency: Currency) -> Decimal | None:
    """A positive amount in the customer's currency, at most its minor digits."""
    if raw is None:
        return None
    amount = ci.decimal(raw, p)
    if amount <= 0:
        raise _fail(p, "must be a positive amount")
    if amount != amount.quantize(currency.quantum):
        raise _fail(p, f"has more digits than {currency.code} allows")
    return amount


def _subscription(raw: Any, p: str, currency: Currency) -> Subscription:
    s = ci.fields(raw, p, *_SUBSCRIPTION)
    start = ci.instant(s["start"], f"{p}.start")
    end = None if s.get("end") is None else ci.instant(s["end"], f"{p}.end")
    if end is not None and end <= start:
        raise _fail(f"{p}.end", "must be after start")
    cycles = [c.value for c in BillingCycle]
    anchors = [a.value for a in Anchor]
    return Subscription(
        ci.text(s["price_book"], f"{p}.price_book"),
        start,
        end,
        BillingCycle(
            ci.choice(
                s.get("billing_cycle", "month"), f"{p}.billing_cycle", cycles, "billing_cycle"
            )
        ),
        Anchor(ci.choice(s.get("anchor", "calendar"), f"{p}.anchor", anchors, "anchor")),
        ci.count(s.get("trial_days", 0), f"{p}.trial_days", 0, 3660),
        TrialUsage(
            ci.choice(
                s.get("trial_usage", "billed"),
                f"{p}.trial_usage",
                ["billed", "free"],
                "trial_usage",
            )
        ),
        _threshold(s.get("threshold"), f"{p}.threshold", currency),
    )


def _credit(raw: Any, p: str, currency: Currency) -> CreditGrant:
    c = ci.fields(raw, p, *_CREDIT)
    amount = ci.decimal(c["amount"], f"{p}.amount")
    if amount <= 0:
        raise _fail(f"{p}.amount", "must be positive")
    if amount != amount.quantize(currency.quantum):
        raise _fail(f"{p}.amount", f"has more digits than {currency.code} allows")
    expires = (
        None if c.get("expires_at") is None else ci.instant(c["expires_at"], f"{p}.expires_at")
    )
    return CreditGrant(
        ci.text(c["id"], f"{p}.id"),
        amount,
        ci.instant(c["granted_at"], f"{p}.granted_at"),
        expires,
        ci.count(c.get("priority", DEFAULT_PRIORITY), f"{p}.priority", 0, 1_000_000),
        ci.choice(c.get("kind", "paid"), f"{p}.kind", ["paid", "promotional"], "credit kind"),
    )


def parse_customers(raw: Any) -> list[Customer]:
    if raw is None:
        return []
    customers = [
        parse_customer(c, f"customers[{i}]") for i, c in enumerate(ci.items(raw, "customers"))
    ]
    seen: set[str] = set()
    for i, c in enumerate(customers):
        if c.id in seen:
            raise _fail(f"customers[{i}].id", f"duplicate customer {c.id!r}")
        seen.add(c.id)
    return customers
