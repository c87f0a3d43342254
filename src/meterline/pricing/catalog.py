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
from datetime import date, datetime
from decimal import Decimal
from typing import NoReturn

from meterline.domain.decimals import catalog_decimal_problem, fmt, parse_decimal
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import InvalidTimestamp, format_us, from_datetime, parse_rfc3339
from meterline.pricing.charges import (
    Charge,
    ChargeModel,
    Flat,
    Graduated,
    Package,
    PerUnit,
    Tier,
    Volume,
    tier_problem,
)
from meterline.pricing.minimum import MINIMUM_SPEND_CODE
from meterline.pricing.pricebook import PriceBookSpec, VersionSpec

_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

_MODEL_FIELDS: dict[ChargeModel, tuple[set[str], set[str]]] = {
    ChargeModel.PER_UNIT: ({"code", "model", "meter", "unit_price"}, set()),
    ChargeModel.GRADUATED: ({"code", "model", "meter", "tiers"}, set()),
    ChargeModel.VOLUME: ({"code", "model", "meter", "tiers"}, set()),
    ChargeModel.PACKAGE: ({"code", "model", "meter", "package_size", "package_price"}, set()),
    ChargeModel.FLAT: ({"code", "model", "amount"}, {"prorate"}),
}


def parse_price_books(
    raw: object, meters: AbstractSet[str], path: str = "price_books"
) -> tuple[PriceBookSpec, ...]:
    """Parse the `price_books` list; `meters` are the meter codes a charge may read."""
    if raw is None:
        return ()
    books = [
        parse_price_book(item, meters, f"{path}[{i}]") for i, item in enumerate(_list(raw, path))
    ]
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
        {"minimum_spend", "supersedes", "reason", "retroactive"},
    )
    label = _code(data["version"], f"{path}.version")
    charges = _charges(data["charges"], meters, f"{path}.charges")
    minimum = data.get("minimum_spend")
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
        minimum_spend=None if minimum is None else _price(minimum, f"{path}.minimum_spend"),
        supersedes=supersedes,
        reason=reason,
        retroactive=retroactive,
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
    if code == MINIMUM_SPEND_CODE:
        _fail(f"{path}.code", f"{MINIMUM_SPEND_CODE!r} is reserved for the minimum-spend line")
    if model is ChargeModel.FLAT:
        prorate = _bool(data.get("prorate", True), f"{path}.prorate")
        return Flat(code, _price(data["amount"], f"{path}.amount"), prorate)
    meter = _meter(data["meter"], meters, f"{path}.meter")
    match model:
        case ChargeModel.PER_UNIT:
            return PerUnit(code, meter, _price(data["unit_price"], f"{path}.unit_price"))
        case ChargeModel.GRADUATED:
            return Graduated(code, meter, _tiers(data["tiers"], f"{path}.tiers"))
        case ChargeModel.VOLUME:
            return Volume(code, meter, _tiers(data["tiers"], f"{path}.tiers"))
        case _:
            size = _positive(data["package_size"], f"{path}.package_size")
            return Package(
                code, meter, size, _price(data["package_price"], f"{path}.package_price")
            )


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


# --- scalar fields -------------------------------------------------------------------------


def _fail(path: str, message: str) -> NoReturn:
    raise MeterlineError(ErrorCode.INVALID_CATALOG, f"{path}: {message}", path=path)


def _mapping(raw: object, path: str) -> Mapping[str, object]:
    if not isinstance(raw, Mapping):
        _fail(path, f"expected a mapping, got {_kind(raw)}")
    for key in raw:
        if not isinstance(key, str):
            _fail(path, f"field names must be strings, got {key!r}")
    return raw


def _fields(raw: object, path: str, required: set[str], optional: set[str]) -> Mapping[str, object]:
    data = _mapping(raw, path)
    for name in sorted(required - data.keys()):
        hint = " (use null for no limit)" if name == "up_to" else ""
        _fail(path, f"missing field {name!r}{hint}")
    for name in sorted(data.keys() - required - optional):
        expected = ", ".join(sorted(required | optional))
        _fail(f"{path}.{name}", f"unknown field {name!r}; expected {expected}")
    return data


def _list(raw: object, path: str) -> list[object]:
    if not isinstance(raw, list):
        _fail(path, f"expected a list, got {_kind(raw)}")
    return raw


def _text(raw: object, path: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        _fail(path, f"expected non-empty text, got {_kind(raw)}")
    return raw


def _code(raw: object, path: str) -> str:
    text = _text(raw, path)
    if not _CODE.fullmatch(text):
        _fail(
            path,
            f"{text!r} is not a valid code (letters, digits, '_', '.', ':', '-'; "
            "at most 64, starting with a letter or digit)",
        )
    return text


def _bool(raw: object, path: str) -> bool:
    if not isinstance(raw, bool):
        _fail(path, f"expected true or false, got {_kind(raw)}")
    return raw


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


def _instant(raw: object, path: str) -> int:
    if isinstance(raw, datetime):  # YAML parses unquoted timestamps itself
        if raw.tzinfo is None:
            _fail(path, f"{raw.isoformat()} has no UTC offset; write e.g. 2024-01-01T00:00:00Z")
        return from_datetime(raw)
    if isinstance(raw, date):
        _fail(path, f"{raw.isoformat()} is a date; write an instant, e.g. {raw}T00:00:00Z")
    try:
        return parse_rfc3339(_text(raw, path))
    except InvalidTimestamp as exc:
        _fail(path, str(exc))


def _decimal(raw: object, path: str) -> Decimal:
    """An exact number within the catalog bounds (decimals.catalog_decimal_problem)."""
    value = _exact_number(raw, path)
    problem = catalog_decimal_problem(value)
    if problem is not None:
        _fail(path, problem)
    return value


def _exact_number(raw: object, path: str) -> Decimal:
    """An exact number: a decimal string or an integer; never a float or a boolean."""
    if isinstance(raw, bool):
        _fail(path, f"expected a number, got {_kind(raw)}")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, Decimal):  # JSON catalogs: decoded exactly, never via float
        if not raw.is_finite():
            _fail(path, f"{raw} is not a finite number")
        return raw
    if isinstance(raw, float):
        _fail(
            path,
            f"{raw!r} is a float, which is not exact; write it as a decimal string "
            f'("{raw!r}") or an integer',
        )
    if isinstance(raw, str):
        value = parse_decimal(raw)
        if value is not None:
            return value
        _fail(path, f"{raw!r} is not a decimal number")
    _fail(path, f"expected a decimal string or an integer, got {_kind(raw)}")


def _price(raw: object, path: str) -> Decimal:
    value = _decimal(raw, path)
    if value < 0:
        _fail(path, f"price {fmt(value)} must not be negative")
    return value


def _positive(raw: object, path: str) -> Decimal:
    value = _decimal(raw, path)
    if value <= 0:
        _fail(path, f"{fmt(value)} must be positive")
    return value


def _kind(raw: object) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return f"the boolean {str(raw).lower()}"
    if isinstance(raw, str):
        return f"the text {raw!r}"
    if isinstance(raw, int | float | Decimal):
        return f"the number {raw!r}"
    return type(raw).__name__
