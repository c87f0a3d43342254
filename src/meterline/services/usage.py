"""Usage queries over the usage index (DESIGN §4, §12 `usage`).

Per-window values are the index folded to the present; the range total follows
§4: count and sum add, min and max take the extreme, unique_count and latest
merge whole states over the range rather than adding window values.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from meterline.domain.decimals import fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us
from meterline.metering import (
    Meter,
    decode_dimensions,
    dimensions_dict,
    is_aligned,
    is_final,
    merge_all,
    result,
    window_start,
)
from meterline.metering.bitemporal import Grain
from meterline.store import usage_index
from meterline.store.meter_catalog import load_meters
from meterline.store.window_index import current_watermark


def _value(v: Any) -> str | None:
    return None if v is None else fmt(v)


def query_usage(
    conn: Connection,
    *,
    customer: str,
    meter_code: str,
    from_us: int,
    to_us: int,
    now_us: int,
    window_us: int | None = None,
) -> dict[str, Any]:
    meters = {m.code: m for m in load_meters(conn)}
    meter = meters.get(meter_code)
    if meter is None:
        known = ", ".join(sorted(meters)) or "none defined"
        raise MeterlineError(ErrorCode.UNKNOWN_METER, f"no meter {meter_code!r} (meters: {known})")
    size = window_us or meter.window_us
    if size < meter.window_us or size % meter.window_us:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"window must be a multiple of meter {meter.code}'s window",
        )
    if to_us <= from_us:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, "'to' must be after 'from'")
    for name, t in (("'from'", from_us), ("'to'", to_us)):
        if not is_aligned(t, size):
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT,
                f"{name} {format_us(t)} is not on a window boundary of the {size // 60_000_000}-minute windows",
            )
    watermark = current_watermark(conn, now_us)
    got = usage_index.read(
        conn, customer, [meter.code], [(Grain.WINDOW, from_us, to_us)], None, whole=True
    )
    # Roll windows up to the requested size, per dimension group.
    rolled: dict[tuple[int, str], tuple[list[Any], int]] = {}
    for (_, _, _, dims, start), folded in sorted(
        got.folded({meter.code: meter.aggregation}).items()
    ):
        key = (window_start(start, size), dims)
        states, v = rolled.get(key, ([], 0))
        states.append(folded.state)
        rolled[key] = (states, max(v, folded.version))
    windows = []
    groups: dict[str, list[Any]] = {}
    for (start, dims), (states, version) in sorted(rolled.items()):
        merged = merge_all(meter.aggregation, states)
        windows.append(
            {
                "start": format_us(start),
                "end": format_us(start + size),
                "value": _value(result(merged)),
                "final": is_final(start + size, meter.allowed_lateness_us, watermark),
                "version": version,
                "dimensions": _dims(meter, dims),
            }
        )
        groups.setdefault(dims, []).append(merged)
    total = merge_all(meter.aggregation, [s for states in groups.values() for s in states])
    return {
        "customer_id": customer,
        "meter": meter.code,
        "aggregation": str(meter.aggregation),
        "from": format_us(from_us),
        "to": format_us(to_us),
        "total": _value(result(total))
        if groups
        else _value(result(merge_all(meter.aggregation, []))),
        "watermark": None if watermark is None else format_us(watermark),
        "windows": windows,
        "groups": [
            {
                "dimensions": _dims(meter, dims),
                "total": _value(result(merge_all(meter.aggregation, states))),
            }
            for dims, states in sorted(groups.items())
        ],
    }


def _dims(meter: Meter, text_: str) -> dict[str, str | None]:
    return dimensions_dict(meter, decode_dimensions(text_))
