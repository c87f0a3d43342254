"""Prices as people read them, shared by the text and PDF renderings.

"$0.50 per 1,000" for a package, the tier ranges of a graduated or volume line
("1 – 1,000 at $0.02"), and "$0.0004 each" for a unit price. Computed from the
line's explanation (the prices in effect per segment), never recomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from meterline.pricing.explanation import grouped

Money = Callable[[Any], str]  # an exact price -> "$0.0125" in the document's currency

LOCALE = "en_US"


def exact_money(value: Any, code: str) -> str:
    """An exact price, every digit kept ("$0.0125", "¥60", "€0.012")."""
    from decimal import localcontext

    from babel.numbers import format_currency

    number = _dec(value)
    if number is None:
        return "" if value is None else str(value)
    with localcontext() as ctx:
        ctx.prec = max(100, len(number.as_tuple().digits) + 20)
        return str(format_currency(number, code, locale=LOCALE, decimal_quantization=False))


def money_for(code: str) -> Money:
    return lambda value: exact_money(value, code)


def _dec(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


def _qty(value: Any) -> str:
    number = _dec(value)
    return "" if number is None else grouped(number)


def _tier_range(tier: Mapping[str, Any], model: str) -> str:
    low = _dec(tier.get("from")) or Decimal(0)
    up = tier.get("up_to")
    first = grouped(low + 1) if low == low.to_integral_value() else f"above {grouped(low)}"
    if up is None:
        return f"over {grouped(low)}" if low else "any quantity"
    return f"{first} – {_qty(up)}"


def _days(seg: Mapping[str, Any], timezone: str) -> str:
    """A segment's local days: "Jan 1–15", "Jan 16 – Feb 2"."""
    from zoneinfo import ZoneInfo

    from meterline.domain.timestamps import parse_rfc3339, to_datetime

    try:
        tz = ZoneInfo(timezone)
        first = to_datetime(parse_rfc3339(str(seg["start"]))).astimezone(tz).date()
        last = to_datetime(parse_rfc3339(str(seg["end"])) - 1).astimezone(tz).date()
    except (KeyError, ValueError, Exception):
        return ""
    if first == last:
        return f"{first:%b} {first.day}"
    if (first.year, first.month) == (last.year, last.month):
        return f"{first:%b} {first.day}–{last.day}"
    return f"{first:%b} {first.day} – {last:%b} {last.day}"


def segment_prices(
    line: Mapping[str, Any], money: Money, timezone: str = "UTC"
) -> list[tuple[str, list[str]]]:
    """(version and its local days, price parts) per priced segment of a metered
    line; neighbouring segments with the same price are merged. Parts are short
    phrases ("1 – 10 at $0.02", "$0.50 per 1,000") a rendering may put on lines."""
    x: Mapping[str, Any] = line.get("explanation") or {}
    model = str(line.get("model") or x.get("model") or "")
    out: list[tuple[str, list[str]]] = []
    for seg in x.get("segments") or []:
        days = _days(seg, timezone)
        version = f"{seg.get('version') or ''} ({days})" if days else str(seg.get("version") or "")
        pricing: Mapping[str, Any] = seg.get("pricing") or {}
        parts: list[str]
        if model == "package" and pricing.get("package_size") is not None:
            parts = [f"{money(pricing.get('package_price'))} per {_qty(pricing['package_size'])}"]
        elif model == "volume" and seg.get("tiers"):
            t = seg["tiers"][-1]  # one tier prices every unit
            fee = "" if not _dec(t.get("flat_fee")) else f" + {money(t.get('flat_fee'))}"
            parts = [
                f"{money(t.get('unit_price'))} each{fee}",
                f"all units (tier {_tier_range(t, model)})",
            ]
        elif model == "graduated" and seg.get("tiers"):
            parts = [
                f"{_tier_range(t, model)} at {money(t.get('unit_price'))}"
                + ("" if not _dec(t.get("flat_fee")) else f" + {money(t.get('flat_fee'))}")
                for t in seg["tiers"]
            ]
        elif model == "per_unit" and pricing.get("unit_price") is not None:
            parts = [f"{money(pricing['unit_price'])} each"]
        else:
            continue
        if not out or out[-1][1] != parts:
            out.append((version, parts))
    return out


def unit_price_lines(line: Mapping[str, Any], money: Money, timezone: str = "UTC") -> list[str]:
    """The unit-price cell of a line: one entry per distinct price, with its version
    and days when the price changed within the period. A graduated line lists the
    tiers each version actually priced (tier position carries across versions)."""
    prices = segment_prices(line, money, timezone)
    if not prices:
        price = line.get("unit_price")
        if price is None or not line.get("meter"):
            return []
        if line.get("model") == "package":
            return [f"{money(price)} per package"]
        return [f"{money(price)} each"]
    if len(prices) == 1:
        return ["; ".join(prices[0][1])]
    return [f"{version}: {'; '.join(parts)}" for version, parts in prices]
