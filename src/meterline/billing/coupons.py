"""Coupons on a customer (DESIGN §7): a discount line after minimum and maximum, before tax.

A coupon takes `percent_off` (a percentage, 10 = 10%, as Lago and Stripe write it) or
`amount_off` (money in the customer's currency) off either all usage (every usage
line plus the minimum true-up and the cap, i.e. what usage finally costs) or the
lines of the listed `charges`, for `once` (the billing period holding its `start`),
`repeating` (that period and the next `periods` - 1) or `forever` (every period
from that one on). It is shown as a negative line, "coupon:<code>", whose
explanation gives the base and the formula in words. Coupons apply in catalog
order, each to what earlier coupons left of its base, so an invoice's discounts
never exceed what they discount (an amount_off larger than its base takes the
base). Corrections recompute them like any line: a late event that raises usage
raises a percent_off discount too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from msgspec import UNSET

from meterline.billing import body as typed
from meterline.billing.periods import Cycle, Period
from meterline.domain import catalog_input as ci
from meterline.domain.decimals import exact_sum, fmt
from meterline.domain.money import Currency, Rounding, round_money
from meterline.domain.timestamps import format_us
from meterline.pricing.explanation import grouped, money_text, price_text

COUPON_MODEL = "coupon"


class Duration(StrEnum):
    ONCE = "once"
    REPEATING = "repeating"
    FOREVER = "forever"


@dataclass(frozen=True)
class Coupon:
    code: str
    start: int
    duration: Duration
    percent_off: Decimal | None = None
    amount_off: Decimal | None = None
    periods: int | None = None  # for repeating
    charges: tuple[str, ...] = ()  # empty: all usage

    @property
    def line_code(self) -> str:
        return f"coupon:{self.code}"

    def definition(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "start": format_us(self.start),
            "duration": self.duration.value,
        }
        if self.percent_off is not None:
            data["percent_off"] = fmt(self.percent_off)
        if self.amount_off is not None:
            data["amount_off"] = fmt(self.amount_off)
        if self.periods is not None:
            data["periods"] = self.periods
        if self.charges:
            data["charges"] = list(self.charges)
        return data

    def applies(self, cycle: Cycle, period: Period) -> bool:
        """Whether this coupon discounts `period` of a subscription billed in `cycle`."""
        if period.end <= self.start:
            return False
        first = cycle.index_of(self.start)
        k = cycle.index_of(period.start)
        match self.duration:
            case Duration.ONCE:
                return k == first
            case Duration.REPEATING:
                return 0 <= k - first < (self.periods or 0)
            case Duration.FOREVER:
                return k >= first

    def in_scope(self, line: typed.Line, usage_models: frozenset[str]) -> bool:
        if self.charges:
            return line.charge in self.charges
        return line.meter is not None or line.model in usage_models


_FIELDS = {"code", "start", "duration"}, {"percent_off", "amount_off", "periods", "charges"}


def parse_coupon(raw: object, path: str, currency: Currency) -> Coupon:
    data = ci.fields(raw, path, *_FIELDS)
    code = ci.text(data["code"], f"{path}.code", max_length=64)
    durations = [d.value for d in Duration]
    duration = Duration(ci.choice(data["duration"], f"{path}.duration", durations, "duration"))
    if ("percent_off" in data) == ("amount_off" in data):
        ci.fail(path, "a coupon needs exactly one of percent_off or amount_off")
    percent = amount = None
    if "percent_off" in data:
        percent = ci.decimal(data["percent_off"], f"{path}.percent_off")
        if not 0 < percent <= 100:
            ci.fail(f"{path}.percent_off", f"must be a percentage in (0, 100], got {fmt(percent)}")
    else:
        amount = ci.positive(data["amount_off"], f"{path}.amount_off")
        if amount != amount.quantize(currency.quantum):
            ci.fail(f"{path}.amount_off", f"has more digits than {currency.code} allows")
    periods = None
    if duration is Duration.REPEATING:
        if "periods" not in data:
            ci.fail(path, "missing field 'periods' (a repeating coupon lasts N periods)")
        periods = ci.count(data["periods"], f"{path}.periods", 1)
    elif "periods" in data:
        ci.fail(f"{path}.periods", f"only a repeating coupon has periods, not {duration.value}")
    charges = tuple(
        ci.text(c, f"{path}.charges[{i}]", max_length=64)
        for i, c in enumerate(ci.items(data.get("charges") or [], f"{path}.charges"))
    )
    return Coupon(
        code,
        ci.instant(data["start"], f"{path}.start"),
        duration,
        percent,
        amount,
        periods,
        charges,
    )


@dataclass(frozen=True)
class Discount:
    """A coupon line: base, exact and rounded (negative) amount, and the words for it."""

    coupon: Coupon
    base: Decimal
    exact_amount: Decimal
    amount: Decimal
    formula: str

    def explanation(self, currency: Currency, rounding: Rounding) -> typed.Explanation:
        c = self.coupon
        return typed.Explanation(
            charge=c.line_code,
            model=COUPON_MODEL,
            coupon=typed.CouponTerms(
                code=c.code,
                start=format_us(c.start),
                duration=c.duration.value,
                percent_off=UNSET if c.percent_off is None else c.percent_off,
                amount_off=UNSET if c.amount_off is None else c.amount_off,
                periods=UNSET if c.periods is None else c.periods,
                charges=c.charges if c.charges else UNSET,
            ),
            currency=currency.code,
            rounding=rounding.value,
            basis="coupon",
            base=self.base,
            exact_amount=self.exact_amount,
            amount=self.amount,
            formula=self.formula,
            notes=(
                "applied after minimum and maximum spend, before tax; "
                + ("on charges " + ", ".join(c.charges) if c.charges else "on all usage"),
            ),
        )


def discount(
    coupon: Coupon, base: Decimal, currency: Currency, rounding: Rounding
) -> Discount | None:
    """The coupon's line for a base (what is left of its scope's amount), or None."""
    if base <= 0:
        return None
    base_text = money_text(base, currency)
    if coupon.percent_off is not None:
        exact = -(base * coupon.percent_off / 100)
        words = f"-({grouped(coupon.percent_off)}% x {base_text})"
    else:
        off = coupon.amount_off or Decimal(0)
        exact = -min(off, base)
        words = f"-({price_text(off, currency)} off"
        words += f", at most the {base_text} discounted)" if off > base else ")"
    amount = round_money(exact, currency, rounding)
    if amount == 0:
        return None
    return Discount(coupon, base, exact, amount, f"{words} = {money_text(amount, currency)}")


def apply_coupons(
    coupons: Sequence[Coupon],
    lines: Sequence[typed.Line],
    usage_models: frozenset[str],
    currency: Currency,
    rounding: Rounding,
) -> list[Discount]:
    """Discounts, in coupon order, of the coupons that apply to these lines.

    A coupon's base is its scope's amount less the discounts of earlier coupons
    whose scope shares a charge with it (exact, so nothing is discounted twice).
    """
    out: list[tuple[Discount, frozenset[str]]] = []
    for coupon in coupons:
        scope = [line for line in lines if coupon.in_scope(line, usage_models)]
        charges = frozenset(line.charge for line in scope)
        gross = exact_sum([line.amount for line in scope])
        used = exact_sum([-d.amount for d, other in out if other & charges])
        d = discount(coupon, gross - used, currency, rounding)
        if d is not None:
            out.append((d, charges))
    return [d for d, _ in out]
