"""Customers, subscriptions and prepaid credit grants, parsed from the catalog.

A customer is a versioned fact: applying a changed definition records a new
version, and every document is computed from the version known at its cutoff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterline.billing.periods import zone
from meterline.domain.canonical import content_hash
from meterline.domain.decimals import catalog_decimal_problem, fmt, parse_decimal
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency
from meterline.domain.timestamps import InvalidTimestamp, format_us, parse_rfc3339

_ID = re.compile(r"[^\s].{0,255}", re.S)


@dataclass(frozen=True)
class Subscription:
    price_book: str
    start: int
    end: int | None = None

    def active(self, lo: int, hi: int) -> tuple[int, int] | None:
        """The part of [lo, hi) this subscription covers, if any."""
        a = max(lo, self.start)
        b = hi if self.end is None else min(hi, self.end)
        return (a, b) if a < b else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "price_book": self.price_book,
            "start": format_us(self.start),
            "end": None if self.end is None else format_us(self.end),
        }


@dataclass(frozen=True)
class CreditGrant:
    """Prepaid credit in the customer's currency; spent oldest-first."""

    id: str
    amount: Decimal
    granted_at: int
    expires_at: int | None = None

    def usable_for(self, period_start: int) -> bool:
        return self.expires_at is None or self.expires_at > period_start

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "amount": fmt(self.amount),
            "granted_at": format_us(self.granted_at),
            "expires_at": None if self.expires_at is None else format_us(self.expires_at),
        }


@dataclass(frozen=True)
class Customer:
    id: str
    name: str
    currency: Currency
    timezone: str = "UTC"
    tax_rate: Decimal = Decimal(0)
    subscriptions: tuple[Subscription, ...] = ()
    credits: tuple[CreditGrant, ...] = ()

    def definition(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "currency": self.currency.code,
            "timezone": self.timezone,
            "tax_rate": fmt(self.tax_rate),
            "subscriptions": [s.to_dict() for s in self.subscriptions],
            "credits": [c.to_dict() for c in self.credits],
        }

    @property
    def content_hash(self) -> str:
        return content_hash(self.definition())

    def subscriptions_in(self, lo: int, hi: int) -> list[tuple[Subscription, tuple[int, int]]]:
        out = []
        for s in self.subscriptions:
            span = s.active(lo, hi)
            if span is not None:
                out.append((s, span))
        return sorted(out, key=lambda p: (p[1][0], p[0].price_book))


def _fail(path: str, message: str) -> MeterlineError:
    return MeterlineError(ErrorCode.INVALID_CATALOG, f"{path}: {message}", path=path)


def _str(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 256:
        raise _fail(path, "expected a non-empty string")
    return raw


def _instant(raw: Any, path: str) -> int:
    from datetime import datetime

    from meterline.domain.timestamps import from_datetime

    if isinstance(raw, datetime):
        if raw.tzinfo is None:
            raise _fail(path, "an instant needs a UTC offset, e.g. 2024-01-01T00:00:00Z")
        return from_datetime(raw)
    try:
        return parse_rfc3339(_str(raw, path))
    except InvalidTimestamp as exc:
        raise _fail(path, str(exc)) from None


def _decimal(raw: Any, path: str) -> Decimal:
    value = _exact_number(raw, path)
    problem = catalog_decimal_problem(value)
    if problem is not None:
        raise _fail(path, problem)
    return value


def _exact_number(raw: Any, path: str) -> Decimal:
    if isinstance(raw, bool) or raw is None:
        raise _fail(path, "expected a decimal string")
    if isinstance(raw, int | Decimal):
        return Decimal(raw)
    if isinstance(raw, float):
        raise _fail(path, f"{raw!r} is a float; write it as a decimal string")
    value = parse_decimal(str(raw))
    if value is None:
        raise _fail(path, f"{raw!r} is not a decimal number")
    return value


_FIELDS = {"id", "name", "currency", "timezone", "tax_rate", "subscriptions", "credits"}


def parse_customer(raw: Any, path: str) -> Customer:
    if not isinstance(raw, dict):
        raise _fail(path, "a customer is a mapping")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise _fail(path, f"unknown field(s) {', '.join(unknown)}")
    for required in ("id", "name", "currency"):
        if required not in raw:
            raise _fail(f"{path}.{required}", "missing")
    cid = _str(raw["id"], f"{path}.id")
    try:
        currency = Currency(_str(raw["currency"], f"{path}.currency"))
    except MeterlineError as exc:
        raise _fail(f"{path}.currency", exc.message) from None
    timezone = _str(raw.get("timezone", "UTC"), f"{path}.timezone")
    try:
        zone(timezone)
    except MeterlineError as exc:
        raise _fail(f"{path}.timezone", exc.message) from None
    tax = _decimal(raw.get("tax_rate", "0"), f"{path}.tax_rate")
    if not Decimal(0) <= tax < Decimal(1):
        raise _fail(f"{path}.tax_rate", 'must be in [0, 1), e.g. "0.20" for 20%')
    subs = []
    for i, s in enumerate(raw.get("subscriptions") or []):
        p = f"{path}.subscriptions[{i}]"
        if not isinstance(s, dict) or set(s) - {"price_book", "start", "end"}:
            raise _fail(p, "expected {price_book, start, end?}")
        start = _instant(s.get("start"), f"{p}.start")
        end = None if s.get("end") is None else _instant(s["end"], f"{p}.end")
        if end is not None and end <= start:
            raise _fail(f"{p}.end", "must be after start")
        subs.append(Subscription(_str(s.get("price_book"), f"{p}.price_book"), start, end))
    credits = []
    for i, c in enumerate(raw.get("credits") or []):
        p = f"{path}.credits[{i}]"
        if not isinstance(c, dict) or set(c) - {"id", "amount", "granted_at", "expires_at"}:
            raise _fail(p, "expected {id, amount, granted_at, expires_at?}")
        amount = _decimal(c.get("amount"), f"{p}.amount")
        if amount <= 0:
            raise _fail(f"{p}.amount", "must be positive")
        if amount != amount.quantize(currency.quantum):
            raise _fail(f"{p}.amount", f"has more digits than {currency.code} allows")
        expires = (
            None if c.get("expires_at") is None else _instant(c["expires_at"], f"{p}.expires_at")
        )
        credits.append(
            CreditGrant(
                _str(c.get("id"), f"{p}.id"),
                amount,
                _instant(c.get("granted_at"), f"{p}.granted_at"),
                expires,
            )
        )
    if len({c.id for c in credits}) != len(credits):
        raise _fail(f"{path}.credits", "credit grant ids must be unique")
    return Customer(
        cid,
        _str(raw["name"], f"{path}.name"),
        currency,
        timezone,
        tax,
        tuple(subs),
        tuple(sorted(credits, key=lambda c: (c.granted_at, c.id))),
    )


def parse_customers(raw: Any) -> list[Customer]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail("customers", "expected a list")
    customers = [parse_customer(c, f"customers[{i}]") for i, c in enumerate(raw)]
    seen: set[str] = set()
    for i, c in enumerate(customers):
        if c.id in seen:
            raise _fail(f"customers[{i}].id", f"duplicate customer {c.id!r}")
        seen.add(c.id)
    return customers
