"""Meter definitions and validation of the catalog ``meters`` list (DESIGN §4, §12).

Validation is strict (unknown fields are refused) because a typo such as
``group-by`` would otherwise silently bill unsplit usage. Every error names the
exact path (``meters[2].window``) so an operator can fix the file at once.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meterline.domain.canonical import content_hash as _content_hash
from meterline.domain.catalog_input import catalog_error, fields, items
from meterline.domain.timestamps import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_MINUTE,
    US_PER_SECOND,
    parse_duration,
)
from meterline.metering.aggregation import Aggregation
from meterline.metering.windows import Window, window_of

WINDOW_SIZES: Mapping[str, int] = {"1m": US_PER_MINUTE, "1h": US_PER_HOUR, "1d": US_PER_DAY}
DEFAULT_WINDOW = "1h"
DEFAULT_WINDOW_US = WINDOW_SIZES[DEFAULT_WINDOW]
DEFAULT_ALLOWED_LATENESS = "3h"
DEFAULT_ALLOWED_LATENESS_US = 3 * US_PER_HOUR

MAX_CODE_LENGTH = 64
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*", re.ASCII)
_FIELDS = (
    "code",
    "event_type",
    "aggregation",
    "property",
    "group_by",
    "window",
    "allowed_lateness",
)
_DURATION_UNITS = (
    ("d", US_PER_DAY),
    ("h", US_PER_HOUR),
    ("m", US_PER_MINUTE),
    ("s", US_PER_SECOND),
    ("ms", 1000),
    ("us", 1),
)


def format_duration(us: int) -> str:
    """Canonical duration text: the largest unit that divides exactly ("3h", "90m")."""
    if us < 0:
        raise ValueError(f"negative duration {us}")
    if us == 0:
        return "0s"
    for unit, size in _DURATION_UNITS:
        if us % size == 0:
            return f"{us // size}{unit}"
    raise AssertionError("unreachable: 1us divides everything")


def window_name(size_us: int) -> str:
    """Catalog name ("1m", "1h", "1d") of a supported window size."""
    for name, size in WINDOW_SIZES.items():
        if size == size_us:
            return name
    raise ValueError(f"unsupported window size {size_us}us")


@dataclass(frozen=True)
class Meter:
    """A validated meter: which events it reads and how it turns them into a quantity."""

    code: str
    event_type: str
    aggregation: Aggregation
    property: str | None
    group_by: tuple[str, ...] = ()
    window_us: int = DEFAULT_WINDOW_US
    allowed_lateness_us: int = DEFAULT_ALLOWED_LATENESS_US

    def __post_init__(self) -> None:
        # Invariants for programmatic construction; parse_meters gives the user-facing errors.
        if (self.aggregation is Aggregation.COUNT) != (self.property is None):
            raise ValueError("property is required for every aggregation except count")
        window_name(self.window_us)
        if self.allowed_lateness_us < 0:
            raise ValueError("allowed lateness cannot be negative")

    def to_catalog(self) -> dict[str, Any]:
        """The canonical catalog form: parse_meters() of it gives this meter back.

        Durations are printed canonically, so "180m" and "3h" define (and hash)
        the same meter.
        """
        return {
            "code": self.code,
            "event_type": self.event_type,
            "aggregation": self.aggregation.value,
            "property": self.property,
            "group_by": list(self.group_by),
            "window": window_name(self.window_us),
            "allowed_lateness": format_duration(self.allowed_lateness_us),
        }

    @builtins.property  # the field named ``property`` shadows the builtin here
    def content_hash(self) -> str:
        """sha256 of the canonical definition: tells meter versions apart in the store."""
        return _content_hash(self.to_catalog())

    def window_of(self, t_us: int) -> Window:
        return window_of(t_us, self.window_us)


_fail = catalog_error  # the one catalog vocabulary (domain/catalog_input.py)


def _name(raw: Any, path: str, what: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise _fail(path, f"{what} must be a non-empty string (got {raw!r})")
    if raw != raw.strip():
        raise _fail(path, f"{what} must not have leading or trailing spaces (got {raw!r})")
    return raw


def _parse_one(raw: Any, path: str) -> Meter:
    raw = fields(raw, path, {"code", "event_type", "aggregation"}, set(_FIELDS))

    code = _name(raw["code"], f"{path}.code", "code")
    if len(code) > MAX_CODE_LENGTH or not _CODE.fullmatch(code):
        raise _fail(
            f"{path}.code",
            f"code {code!r} must be at most {MAX_CODE_LENGTH} characters of letters, "
            "digits, '_', '.' or '-', starting with a letter or digit",
        )
    event_type = _name(raw["event_type"], f"{path}.event_type", "event_type")

    kinds = ", ".join(k.value for k in Aggregation)
    agg_raw = raw["aggregation"]
    if not isinstance(agg_raw, str) or agg_raw not in {k.value for k in Aggregation}:
        raise _fail(f"{path}.aggregation", f"must be one of {kinds} (got {agg_raw!r})")
    aggregation = Aggregation(agg_raw)

    prop_raw = raw.get("property")
    prop: str | None = None
    if aggregation is Aggregation.COUNT:
        if prop_raw is not None:
            raise _fail(f"{path}.property", "count reads no property; remove it")
    elif prop_raw is None:
        raise _fail(f"{path}.property", f"is required for aggregation {aggregation.value}")
    else:
        prop = _name(prop_raw, f"{path}.property", "property")

    group_raw = raw.get("group_by", [])
    if group_raw is None:
        group_raw = []
    if not isinstance(group_raw, list | tuple):
        raise _fail(f"{path}.group_by", f"must be a list of property names (got {group_raw!r})")
    group_by: list[str] = []
    for i, item in enumerate(group_raw):
        item_path = f"{path}.group_by[{i}]"
        name = _name(item, item_path, "a group_by entry")
        if name in group_by:
            raise _fail(item_path, f"duplicate property {name!r}")
        group_by.append(name)

    window_raw = raw.get("window", DEFAULT_WINDOW)
    if not isinstance(window_raw, str) or window_raw not in WINDOW_SIZES:
        raise _fail(
            f"{path}.window", f"must be one of {', '.join(WINDOW_SIZES)} (got {window_raw!r})"
        )

    lateness_raw = raw.get("allowed_lateness", DEFAULT_ALLOWED_LATENESS)
    lateness_path = f"{path}.allowed_lateness"
    if not isinstance(lateness_raw, str):
        raise _fail(lateness_path, f"must be a duration such as 3h or 90m (got {lateness_raw!r})")
    try:
        lateness_us = parse_duration(lateness_raw)
    except ValueError:
        raise _fail(
            lateness_path, f"must be a duration such as 3h or 90m (got {lateness_raw!r})"
        ) from None

    return Meter(
        code=code,
        event_type=event_type,
        aggregation=aggregation,
        property=prop,
        group_by=tuple(group_by),
        window_us=WINDOW_SIZES[window_raw],
        allowed_lateness_us=lateness_us,
    )


def parse_meters(raw: Any) -> list[Meter]:
    """Validate the catalog's ``meters`` list; raises MeterlineError(INVALID_CATALOG).

    The first error found is raised, with its path in the message and in
    ``details["path"]``. Meter codes must be unique within the list.
    """
    meters: list[Meter] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items(raw, "meters")):
        meter = _parse_one(item, f"meters[{i}]")
        if meter.code in seen:
            first = seen[meter.code]
            raise _fail(
                f"meters[{i}].code",
                f"duplicate meter code {meter.code!r} (already defined at meters[{first}])",
            )
        seen[meter.code] = i
        meters.append(meter)
    return meters
