"""The `price_books` part of a catalog (DESIGN §12): parse and validate into domain objects.

Input is plain data as loaded from YAML or JSON. Every problem raises
INVALID_CATALOG with the path of the offending value, e.g.
"price_books[0].versions[1].charges[2].tiers[1]: up_to 500 must be greater
than the previous up_to 1000 (strictly increasing)", so a user can fix the file
without guessing. Unknown fields are refused: a misspelt `minimum_spend`
silently ignored would be a billing bug.

Prices and quantities must be decimal strings or integers. A YAML float
(`unit_price: 0.02`) is refused: it has already passed through binary floating
point, and the contract is that 0.015 stays 0.015 (DESIGN §5, §6).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from decimal import Decimal

from meterline.domain import catalog_input as ci
from meterline.domain.decimals import fmt
from meterline.domain.errors import MeterlineError
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import format_us
from meterline.pricing.charges import (
    Charge,
    ChargeModel,
    Conversion,
    ConversionRounding,
    Dynamic,
    Flat,
    Graduated,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    RateTier,
    Tier,
    Volume,
    tier_problem,
)
from meterline.pricing.maximum import MAXIMUM_SPEND_CODE
from meterline.pricing.minimum import MINIMUM_SPEND_CODE
from meterline.pricing.pricebook import PriceBookSpec, VersionSpec

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

_MODEL_FIELDS: dict[ChargeModel, tuple[set[str], set[str]]] = {
    ChargeModel.PER_UNIT: ({"code", "model", "meter", "unit_price"}, {"free_units", "conversion"}),
    ChargeModel.GRADUATED: ({"code", "model", "meter", "tiers"}, {"conversion"}),
    ChargeModel.VOLUME: ({"code", "model", "meter", "tiers"}, {"conversion"}),
    ChargeModel.PACKAGE: (
        {"code", "model", "meter", "package_size", "package_price"},
        {"free_units", "conversion"},
    ),
    ChargeModel.FLAT: ({"code", "model", "amount"}, {"prorate", "in_advance"}),
    ChargeModel.PERCENTAGE: (
        {"code", "model", "meter", "rate"},
        {"fixed_fee", "free_units", "free_events", "conversion"},
    ),
    ChargeModel.GRADUATED_PERCENTAGE: ({"code", "model", "meter", "tiers"}, {"conversion"}),
    ChargeModel.DYNAMIC: ({"code", "model", "meter"}, {"multiplier", "conversion"}),
}

# Models that read a meter's sum: a rate of a count or of a maximum means nothing.
_SUM_MODELS = {ChargeModel.PERCENTAGE, ChargeModel.GRADUATED_PERCENTAGE, ChargeModel.DYNAMIC}

# The reserved line identities of spend limits.
_RESERVED = {MINIMUM_SPEND_CODE: "the minimum-spend line", MAXIMUM_SPEND_CODE: "the cap line"}


def parse_price_books(
    raw: object,
    meters: AbstractSet[str],
    path: str = "price_books",
    sums: AbstractSet[str] | None = None,
) -> tuple[PriceBookSpec, ...]:
    """Parse the `price_books` list; `meters` are the meter codes a charge may read.

    `sums`, when given, are the codes of the meters that aggregate a sum: the
    models that need one (percentage, graduated_percentage, dynamic) may only
    read those.
    """
    if raw is None:
        return ()
    books = [
        parse_price_book(item, meters, f"{path}[{i}]") for i, item in enumerate(_list(raw, path))
    ]
    if sums is not None:
        _check_sum_meters(books, sums, path)
    seen: dict[str, int] = {}
    for index, book in enumerate(books):
        if book.code in seen:
            _fail(
                f"{path}[{index}].code",
                f"duplicate price book code {book.code!r} (also {path}[{seen[book.code]}])",
            )
        seen[book.code] = index
    return tuple(books)


def parse_price_book(raw: object, meters: AbstractSet[str], path: str) -> PriceBookSpec:
    data = _fields(raw, path, {"code", "currency", "versions"}, {"rounding"})
    code = _code(data["code"], f"{path}.code")
    currency = _currency(data["currency"], f"{path}.currency")
    rounding = _rounding(data.get("rounding", Rounding.HALF_UP.value), f"{path}.rounding")
    raw_versions = _list(data["versions"], f"{path}.versions")
    if not raw_versions:
        _fail(f"{path}.versions", "a price book needs at least one version")
    versions = [
        parse_version(item, meters, f"{path}.versions[{i}]") for i, item in enumerate(raw_versions)
    ]
    _check_history(versions, f"{path}.versions")
    _check_charge_meters(versions, f"{path}.versions")
    return PriceBookSpec(code, currency, rounding, tuple(versions))


def parse_version(raw: object, meters: AbstractSet[str], path: str = "version") -> VersionSpec:
    """One version; also rebuilds a stored `VersionSpec.definition()` exactly."""
    data = _fields(
        raw,
        path,
        {"version", "effective_from", "charges"},
        {"minimum_spend", "maximum_spend", "supersedes", "reason", "retroactive"},
    )
    label = _code(data["version"], f"{path}.version")
    charges = _charges(data["charges"], meters, f"{path}.charges")
    minimum, minimum_prorate = _spend(data.get("minimum_spend"), f"{path}.minimum_spend")
    maximum, maximum_prorate = _spend(data.get("maximum_spend"), f"{path}.maximum_spend")
    if minimum is not None and maximum is not None and minimum > maximum:
        _fail(
            f"{path}.minimum_spend",
            f"minimum spend {fmt(minimum)} is above the maximum spend {fmt(maximum)}",
        )
    supersedes = data.get("supersedes")
    reason = data.get("reason")
    retroactive = _bool(data.get("retroactive", False), f"{path}.retroactive")
    if reason is not None:
        reason = _text(reason, f"{path}.reason")
    if supersedes is not None:
        supersedes = _code(supersedes, f"{path}.supersedes")
        if reason is None:
            _fail(f"{path}.reason", f"a version that supersedes {supersedes} needs a reason")
    if retroactive and reason is None:
        _fail(f"{path}.reason", "a retroactive version needs a reason")
    return VersionSpec(
        label=label,
        effective_from=_instant(data["effective_from"], f"{path}.effective_from"),
        charges=charges,
        minimum_spend=minimum,
        minimum_prorate=minimum_prorate,
        maximum_spend=maximum,
        maximum_prorate=maximum_prorate,
        supersedes=supersedes,
        reason=reason,
        retroactive=retroactive,
    )


def _spend(raw: object, path: str) -> tuple[Decimal | None, bool]:
    """A spend limit: an amount, or {amount, prorate} to turn proration off."""
    if raw is None:
        return None, True
    if isinstance(raw, Mapping):
        data = _fields(raw, path, {"amount"}, {"prorate"})
        return _price(data["amount"], f"{path}.amount"), _bool(
            data.get("prorate", True), f"{path}.prorate"
        )
    return _price(raw, path), True


def _check_sum_meters(books: Sequence[PriceBookSpec], sums: AbstractSet[str], path: str) -> None:
    for b_index, book in enumerate(books):
        for v_index, version in enumerate(book.versions):
            for c_index, charge in enumerate(version.charges):
                if charge.model in _SUM_MODELS and charge.meter not in sums:
                    _fail(
                        f"{path}[{b_index}].versions[{v_index}].charges[{c_index}].meter",
                        f"model {charge.model.value} prices a sum: meter {charge.meter!r} "
                        "must have aggregation sum",
                    )


def _check_history(versions: Sequence[VersionSpec], path: str) -> None:
    """Labels are unique; same effective_from only as an explicit, reasoned correction.

    A correction must name the version it replaces, listed before it (the store
    records versions in file order and the later record wins), and that must
    be the latest one for that effective_from, so the history is a chain.
    """
    latest: dict[int, int] = {}  # effective_from -> index of the latest version for it
    labels: dict[str, int] = {}
    for index, version in enumerate(versions):
        here = f"{path}[{index}]"
        if version.label in labels:
            _fail(
                f"{here}.version",
                f"duplicate version label {version.label!r} (also {path}[{labels[version.label]}])",
            )
        if version.supersedes is not None:
            _check_supersedes(versions, labels, latest, index, here)
        elif version.effective_from in latest:
            other = versions[latest[version.effective_from]]
            _fail(
                f"{here}.effective_from",
                f"{format_us(version.effective_from)} is already the "
                f"effective_from of version {other.label}; a correction needs "
                f"supersedes: {other.label} and a reason",
            )
        labels[version.label] = index
        latest[version.effective_from] = index


def _check_supersedes(
    versions: Sequence[VersionSpec],
    labels: Mapping[str, int],
    latest: Mapping[int, int],
    index: int,
    here: str,
) -> None:
    version = versions[index]
    target = version.supersedes or ""
    if target not in labels:
        later = any(v.label == target for v in versions[index + 1 :])
        problem = (
            "which is listed after this version; a correction must follow what it corrects"
            if later
            else "which is not a version of this price book"
        )
        _fail(f"{here}.supersedes", f"supersedes {target!r}, {problem}")
    superseded = versions[labels[target]]
    if superseded.effective_from != version.effective_from:
        _fail(
            f"{here}.effective_from",
            f"a correction of {target} must keep its effective_from "
            f"{format_us(superseded.effective_from)}; a new price from another date is a "
            "new version, not a correction",
        )
    current = versions[latest[version.effective_from]]
    if current.label != target:
        _fail(
            f"{here}.supersedes",
            f"{target} is already superseded by {current.label}; supersede {current.label}",
        )


def _check_charge_meters(versions: Sequence[VersionSpec], path: str) -> None:
    """A charge code keeps its meter across versions: it is the line identity (DESIGN §8)."""
    meters: dict[str, tuple[str | None, str]] = {}
    for v_index, version in enumerate(versions):
        for c_index, charge in enumerate(version.charges):
            first = meters.setdefault(charge.code, (charge.meter, version.label))
            if first[0] != charge.meter:
                _fail(
                    f"{path}[{v_index}].charges[{c_index}]",
                    f"charge {charge.code!r} reads {_meter_text(charge.meter)} but in version "
                    f"{first[1]} it reads {_meter_text(first[0])}; a charge code is a line "
                    "identity and keeps its meter: use a new code",
                )


def _meter_text(meter: str | None) -> str:
    return "no meter (flat)" if meter is None else f"meter {meter!r}"


def _charges(raw: object, meters: AbstractSet[str], path: str) -> tuple[Charge, ...]:
    charges: list[Charge] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(_list(raw, path)):
        charge = _charge(item, meters, f"{path}[{index}]")
        if charge.code in seen:
            _fail(
                f"{path}[{index}].code",
                f"duplicate charge code {charge.code!r} (also {path}[{seen[charge.code]}])",
            )
        seen[charge.code] = index
        charges.append(charge)
    return tuple(charges)


def _charge(raw: object, meters: AbstractSet[str], path: str) -> Charge:
    data = _mapping(raw, path)
    if "model" not in data:
        _fail(path, "missing field 'model'")
    model = _model(data["model"], f"{path}.model")
    if model is ChargeModel.FLAT and "meter" in data:
        _fail(f"{path}.meter", "a flat charge is not tied to a meter")
    required, optional = _MODEL_FIELDS[model]
    data = _fields(raw, path, required, optional)
    code = _code(data["code"], f"{path}.code")
    if code in _RESERVED:
        _fail(f"{path}.code", f"{code!r} is reserved for {_RESERVED[code]}")
    if model is ChargeModel.FLAT:
        prorate = _bool(data.get("prorate", True), f"{path}.prorate")
        in_advance = _bool(data.get("in_advance", False), f"{path}.in_advance")
        return Flat(code, _price(data["amount"], f"{path}.amount"), prorate, in_advance)
    meter = _meter(data["meter"], meters, f"{path}.meter")
    conversion = _conversion(data.get("conversion"), f"{path}.conversion")
    free = _price(data.get("free_units", 0), f"{path}.free_units")
    match model:
        case ChargeModel.PER_UNIT:
            price = _price(data["unit_price"], f"{path}.unit_price")
            return PerUnit(code, meter, price, free, conversion)
        case ChargeModel.GRADUATED:
            return Graduated(code, meter, _tiers(data["tiers"], f"{path}.tiers"), conversion)
        case ChargeModel.VOLUME:
            return Volume(code, meter, _tiers(data["tiers"], f"{path}.tiers"), conversion)
        case ChargeModel.PACKAGE:
            size = _positive(data["package_size"], f"{path}.package_size")
            price = _price(data["package_price"], f"{path}.package_price")
            return Package(code, meter, size, price, free, conversion)
        case ChargeModel.PERCENTAGE:
            return Percentage(
                code,
                meter,
                ci.fraction(data["rate"], f"{path}.rate"),
                _price(data.get("fixed_fee", 0), f"{path}.fixed_fee"),
                free,
                ci.count(data.get("free_events", 0), f"{path}.free_events"),
                conversion,
            )
        case ChargeModel.GRADUATED_PERCENTAGE:
            tiers = _rate_tiers(data["tiers"], f"{path}.tiers")
            return GraduatedPercentage(code, meter, tiers, conversion)
        case _:
            multiplier = _price(data.get("multiplier", 1), f"{path}.multiplier")
            return Dynamic(code, meter, multiplier, conversion)


def _conversion(raw: object, path: str) -> Conversion | None:
    """{multiply_by?, divide_by?, round?, precision?}: meter value to billed quantity."""
    if raw is None:
        return None
    data = _fields(raw, path, set(), {"multiply_by", "divide_by", "round", "precision"})
    if not data:
        _fail(path, "a conversion needs multiply_by or divide_by")
    rounding = ci.choice(
        data.get("round", "half_up"),
        f"{path}.round",
        [r.value for r in ConversionRounding],
        "round",
    )
    return Conversion(
        _positive(data.get("multiply_by", 1), f"{path}.multiply_by"),
        _positive(data.get("divide_by", 1), f"{path}.divide_by"),
        ConversionRounding(rounding),
        ci.count(data.get("precision", 0), f"{path}.precision", 0, 12),
    )


def _rate_tiers(raw: object, path: str) -> tuple[RateTier, ...]:
    tiers = []
    for index, item in enumerate(_list(raw, path)):
        here = f"{path}[{index}]"
        data = _fields(item, here, {"up_to", "rate"}, {"flat_fee"})
        up_to = data["up_to"]
        tiers.append(
            RateTier(
                up_to=None if up_to is None else _decimal(up_to, f"{here}.up_to"),
                rate=ci.fraction(data["rate"], f"{here}.rate"),
                flat_fee=_price(data.get("flat_fee", 0), f"{here}.flat_fee"),
            )
        )
    problem = tier_problem([tier.as_tier() for tier in tiers])
    if problem is not None:
        _fail(f"{path}[{problem[0]}]" if tiers else path, problem[1])
    return tuple(tiers)


def _tiers(raw: object, path: str) -> tuple[Tier, ...]:
    tiers = []
    for index, item in enumerate(_list(raw, path)):
        here = f"{path}[{index}]"
        data = _fields(item, here, {"up_to", "unit_price"}, {"flat_fee"})
        up_to = data["up_to"]
        tiers.append(
            Tier(
                up_to=None if up_to is None else _decimal(up_to, f"{here}.up_to"),
                unit_price=_price(data["unit_price"], f"{here}.unit_price"),
                flat_fee=_price(data.get("flat_fee", 0), f"{here}.flat_fee"),
            )
        )
    problem = tier_problem(tiers)
    if problem is not None:
        _fail(f"{path}[{problem[0]}]" if tiers else path, problem[1])
    return tuple(tiers)


# --- scalar fields: the shared catalog vocabulary (domain/catalog_input.py) ----------------

_fail = ci.fail
_mapping = ci.mapping
_list = ci.items
_bool = ci.boolean
_decimal = ci.decimal
_price = ci.price
_positive = ci.positive
_instant = ci.instant
_kind = ci.kind


def _fields(raw: object, path: str, required: set[str], optional: set[str]) -> Mapping[str, object]:
    return ci.fields(raw, path, required, optional, {"up_to": " (use null for no limit)"})


def _text(raw: object, path: str) -> str:
    return ci.text(raw, path, max_length=10_000)


def _code(raw: object, path: str) -> str:
    text = _text(raw, path)
    if not _CODE.fullmatch(text):
        _fail(
            path,
            f"{text!r} is not a valid code (letters, digits, '_', '.', ':', '-'; "
            "at most 64, starting with a letter or digit)",
        )
    return text


def _model(raw: object, path: str) -> ChargeModel:
    models = ", ".join(sorted(m.value for m in ChargeModel))
    if not isinstance(raw, str) or raw not in {m.value for m in ChargeModel}:
        _fail(path, f"unknown model {raw!r}; expected one of {models}")
    return ChargeModel(raw)


def _meter(raw: object, meters: AbstractSet[str], path: str) -> str:
    code = _text(raw, path)
    if code not in meters:
        known = ", ".join(sorted(meters)) or "none defined"
        _fail(path, f"unknown meter {code!r} (known meters: {known})")
    return code


def _currency(raw: object, path: str) -> Currency:
    code = _text(raw, path)
    try:
        return Currency(code)
    except MeterlineError as exc:
        _fail(path, exc.message)


def _rounding(raw: object, path: str) -> Rounding:
    if raw not in {r.value for r in Rounding}:
        _fail(path, f"unknown rounding {raw!r}; expected half_up or half_even")
    return Rounding(str(raw))
