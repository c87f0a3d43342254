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
    PERCENTAGE = "percentage"
    GRADUATED_PERCENTAGE = "graduated_percentage"
    DYNAMIC = "dynamic"


class ConversionRounding(StrEnum):
    UP = "up"
    DOWN = "down"
    HALF_UP = "half_up"


ZERO = Decimal(0)
ONE = Decimal(1)


@dataclass(frozen=True)
class Conversion:
    """quantity = meter value x multiply_by / divide_by, rounded to `precision` decimals.

    Bytes to GB (divide_by 1000000000, round up), seconds to hours. Applied
    before pricing; the explanation shows both numbers.
    """

    multiply_by: Decimal = ONE
    divide_by: Decimal = ONE
    rounding: ConversionRounding = ConversionRounding.HALF_UP
    precision: int = 0

    def __post_init__(self) -> None:
        if self.multiply_by <= 0 or self.divide_by <= 0:
            raise ValueError("conversion factors must be positive")
        if not 0 <= self.precision <= 12:
            raise ValueError("conversion precision must be between 0 and 12")

    def definition(self) -> dict[str, Any]:
        return {
            "multiply_by": fmt(self.multiply_by),
            "divide_by": fmt(self.divide_by),
            "round": self.rounding.value,
            "precision": self.precision,
        }


def _modifiers(
    data: dict[str, Any], conversion: Conversion | None, free_units: Decimal = ZERO
) -> dict[str, Any]:
    """Optional modifiers join a definition only when set, so the content hash of a
    version written before they existed does not change."""
    if free_units:
        data["free_units"] = fmt(free_units)
    if conversion is not None:
        data["conversion"] = conversion.definition()
    return data


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
    free_units: Decimal = ZERO
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        _check_non_negative(unit_price=self.unit_price, free_units=self.free_units)

    def definition(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "unit_price": fmt(self.unit_price),
        }
        return _modifiers(data, self.conversion, self.free_units)


@dataclass(frozen=True)
class Graduated:
    """Each tier prices the units that fall in its own range, plus its flat fee."""

    model: ClassVar[ChargeModel] = ChargeModel.GRADUATED
    code: str
    meter: str
    tiers: tuple[Tier, ...]
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        _check_tiers(self.tiers)

    def definition(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "tiers": [tier.definition() for tier in self.tiers],
        }
        return _modifiers(data, self.conversion)


@dataclass(frozen=True)
class Volume:
    """The one tier holding the whole period quantity prices every unit."""

    model: ClassVar[ChargeModel] = ChargeModel.VOLUME
    code: str
    meter: str
    tiers: tuple[Tier, ...]
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        _check_tiers(self.tiers)

    def definition(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "tiers": [tier.definition() for tier in self.tiers],
        }
        return _modifiers(data, self.conversion)


@dataclass(frozen=True)
class Package:
    """ceil(quantity / package_size) x package_price: started packages are paid in full."""

    model: ClassVar[ChargeModel] = ChargeModel.PACKAGE
    code: str
    meter: str
    package_size: Decimal
    package_price: Decimal
    free_units: Decimal = ZERO
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        if self.package_size <= 0:
            raise ValueError(f"package_size must be positive, got {fmt(self.package_size)}")
        _check_non_negative(package_price=self.package_price, free_units=self.free_units)

    def definition(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "package_size": fmt(self.package_size),
            "package_price": fmt(self.package_price),
        }
        return _modifiers(data, self.conversion, self.free_units)


@dataclass(frozen=True)
class Flat:
    """A fixed fee per billing period, not tied to a meter, prorated by time unless told not to."""

    model: ClassVar[ChargeModel] = ChargeModel.FLAT
    code: str
    amount: Decimal
    prorate: bool = True
    in_advance: bool = False  # billed on the invoice that opens the period it covers

    meter: ClassVar[None] = None

    def __post_init__(self) -> None:
        _check_non_negative(amount=self.amount)

    def definition(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "model": self.model.value,
            "amount": fmt(self.amount),
            "prorate": self.prorate,
        }
        if self.in_advance:  # only when set: older definitions hash the same
            data["in_advance"] = True
        return data


@dataclass(frozen=True)
class Percentage:
    """rate x the meter's sum + fixed_fee per event, with free amount and free events.

    The first `free_units` of the period's sum are exempt from the rate and the
    first `free_events` events from the fixed fee; both positions carry across
    price segments, as graduated tiers do.
    """

    model: ClassVar[ChargeModel] = ChargeModel.PERCENTAGE
    code: str
    meter: str
    rate: Decimal
    fixed_fee: Decimal = ZERO
    free_units: Decimal = ZERO
    free_events: int = 0
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        if not ZERO <= self.rate <= ONE:
            raise ValueError(f"rate must be between 0 and 1, got {fmt(self.rate)}")
        _check_non_negative(fixed_fee=self.fixed_fee, free_units=self.free_units)
        if self.free_events < 0:
            raise ValueError("free_events must not be negative")

    def definition(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "rate": fmt(self.rate),
        }
        if self.fixed_fee:
            data["fixed_fee"] = fmt(self.fixed_fee)
        if self.free_events:
            data["free_events"] = self.free_events
        return _modifiers(data, self.conversion, self.free_units)


@dataclass(frozen=True)
class RateTier:
    """A graduated_percentage tier: the sum in (previous up_to, up_to] pays `rate`."""

    up_to: Decimal | None
    rate: Decimal
    flat_fee: Decimal = ZERO

    def definition(self) -> dict[str, Any]:
        return {
            "up_to": None if self.up_to is None else fmt(self.up_to),
            "rate": fmt(self.rate),
            "flat_fee": fmt(self.flat_fee),
        }

    def as_tier(self) -> Tier:
        """The same range with the rate as a price per unit of the sum."""
        return Tier(self.up_to, self.rate, self.flat_fee)


@dataclass(frozen=True)
class GraduatedPercentage:
    """Graduated tiers over the meter's sum, each tier a rate (and optional flat fee)."""

    model: ClassVar[ChargeModel] = ChargeModel.GRADUATED_PERCENTAGE
    code: str
    meter: str
    tiers: tuple[RateTier, ...]
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        _check_tiers(tuple(tier.as_tier() for tier in self.tiers))
        for index, tier in enumerate(self.tiers):
            if tier.rate > ONE:
                raise ValueError(f"tiers[{index}]: rate must be between 0 and 1")

    def definition(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "tiers": [tier.definition() for tier in self.tiers],
        }
        return _modifiers(data, self.conversion)


@dataclass(frozen=True)
class Dynamic:
    """Each event carries its own price: amount = the meter's sum x multiplier."""

    model: ClassVar[ChargeModel] = ChargeModel.DYNAMIC
    code: str
    meter: str
    multiplier: Decimal = ONE
    conversion: Conversion | None = None

    def __post_init__(self) -> None:
        _check_non_negative(multiplier=self.multiplier)

    def definition(self) -> dict[str, Any]:
        data = {
            "code": self.code,
            "meter": self.meter,
            "model": self.model.value,
            "multiplier": fmt(self.multiplier),
        }
        return _modifiers(data, self.conversion)


UsageCharge = PerUnit | Graduated | Volume | Package | Percentage | GraduatedPercentage | Dynamic
Charge = UsageCharge | Flat
