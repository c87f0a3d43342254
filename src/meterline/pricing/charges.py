"""Charge definitions: what a price book version says a charge costs (DESIGN §5).

Immutable values. Each has a `definition()` in catalog form with canonical
decimal text, which is what a version's content hash covers, so "0.020" and
"0.02" are the same price and hash the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar

from meterline.domain.decimals import fmt


class ChargeModel(StrEnum):
    PER_UNIT = "per_unit"
    GRADUATED = "graduated"
    VOLUME = "volume"
    PACKAGE = "package"
    FLAT = "flat"


ZERO = Decimal(0)


@dataclass(frozen=True)
class Tier:
    """Holds the units in (previous up_to, up_to]; up_to None means no limit."""

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = ZERO

    def definition(self) -> dict[str, Any]:
        return {
            "up_to": None if self.up_to is None else fmt(self.up_to),
            "unit_price": fmt(self.unit_price),
            "flat_fee": fmt(self.flat_fee),
        }


def tier_problem(tiers: Sequence[Tier]) -> tuple[int, str] | None:
    """The first structural problem of a tier list as (tier index, message), or None.

    The last tier must be unbounded: otherwise usage above it would have no
    price, and the choice between failing an invoice and billing nothing is
    better made when the catalog is applied.
    """
    if not tiers:
        return 0, "at least one tier is required"
    previous = ZERO
    for index, tier in enumerate(tiers):
        last = index == len(tiers) - 1
        if tier.unit_price < 0 or tier.flat_fee < 0:
            return index, "prices must not be negative"
        if tier.up_to is None:
            if not last:
                return index, "only the last tier may have up_to: null (no limit)"
            continue
        if tier.up_to <= previous:
            what = "positive" if index == 0 else f"greater than the previous up_to {fmt(previous)}"
            return index, f"up_to {fmt(tier.up_to)} must be {what} (strictly increasing)"
        if last:
            return index, "the last tier must have up_to: null so every quantity has a price"
        previous = tier.up_to
    return None


def _check_tiers(tiers: tuple[Tier, ...]) -> None:
    problem = tier_problem(tiers)
    if problem is not None:
        raise ValueError(f"tiers[{problem[0]}]: {problem[1]}")


def _check_non_negative(**prices: Decimal) -> None:
    for name, value in prices.items():
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {fmt(value)}")


@dataclass(frozen=True)
class PerUnit:
    """quantity x unit_price."""

    model: ClassVar[ChargeModel] = ChargeModel.PER_UNIT
    code: str
    meter: str
    unit_price: Decimal

    def __post_init__(self) -> None:
        _check_non_negative(unit_price=self.unit_price)

    def definition(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "unit_price": fmt(self.unit_price),
        }


@dataclass(frozen=True)
class Graduated:
    """Each tier prices the units that fall in its own range, plus its flat fee."""

    model: ClassVar[ChargeModel] = ChargeModel.GRADUATED
    code: str
    meter: str
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        _check_tiers(self.tiers)

    def definition(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "tiers": [tier.definition() for tier in self.tiers],
        }


@dataclass(frozen=True)
class Volume:
    """The one tier holding the whole period quantity prices every unit."""

    model: ClassVar[ChargeModel] = ChargeModel.VOLUME
    code: str
    meter: str
    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        _check_tiers(self.tiers)

    def definition(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "tiers": [tier.definition() for tier in self.tiers],
        }


@dataclass(frozen=True)
class Package:
    """ceil(quantity / package_size) x package_price: started packages are paid in full."""

    model: ClassVar[ChargeModel] = ChargeModel.PACKAGE
    code: str
    meter: str
    package_size: Decimal
    package_price: Decimal

    def __post_init__(self) -> None:
        if self.package_size <= 0:
            raise ValueError(f"package_size must be positive, got {fmt(self.package_size)}")
        _check_non_negative(package_price=self.package_price)

    def definition(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "package_size": fmt(self.package_size),
            "package_price": fmt(self.package_price),
        }


@dataclass(frozen=True)
class Flat:
    """A fixed fee per billing period, not tied to a meter, prorated by time unless told not to."""

    model: ClassVar[ChargeModel] = ChargeModel.FLAT
    code: str
    amount: Decimal
    prorate: bool = True

    meter: ClassVar[None] = None

    def __post_init__(self) -> None:
        _check_non_negative(amount=self.amount)

    def definition(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "model": self.model.value,
            "amount": fmt(self.amount),
            "prorate": self.prorate,
        }


UsageCharge = PerUnit | Graduated | Volume | Package
Charge = UsageCharge | Flat
