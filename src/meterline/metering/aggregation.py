"""Mergeable partial aggregates, one shape per aggregation kind (DESIGN §4).

A window's usage is stored as a *state*, not a number, because only states
merge: ``merge`` is associative and commutative with ``empty(kind)`` as its
identity, so folding events in any order and any batch split gives the same
state. That is what lets ingestion upsert windows incrementally and still
agree with a recomputation from the raw event log.

Values fed to ``add`` are what ``values.value_of`` returns: ``Decimal`` for
sum/min/max/latest, an identity string for unique_count, anything (ignored)
for count.

Results (``result``) are canonical Decimals. Count and sum of nothing are 0;
min, max and latest of nothing are ``None`` ("no value"), not 0, because 0
would be a wrong answer for a meter that can read negative values; rating
treats ``None`` as zero quantity and usage output shows it as null.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from enum import StrEnum
from functools import reduce
from typing import Any, NamedTuple, assert_never

import msgspec

from meterline.domain.canonical import dumps
from meterline.domain.decimals import PRECISION, fmt, normalize


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"


Value = Decimal | str | None
"""An event's contribution: Decimal (numeric kinds), identity text (unique_count), None (count)."""

# Sums must never round silently: with the magnitude bounds of ``values`` a sum
# stays far below PRECISION digits, and if it ever did not, Inexact raises.
_EXACT = Context(prec=PRECISION, traps=[Inexact, InvalidOperation, Overflow])


class LatestEntry(NamedTuple):
    """Ordered by (event_time, event_id, value): the greatest entry is the latest.

    The value as last tie-break keeps the result order-independent even when two
    sources send the same event_id at the same instant.
    """

    event_time: int
    event_id: str
    value: Decimal


@dataclass(frozen=True, slots=True)
class CountState:
    count: int = 0


@dataclass(frozen=True, slots=True)
class SumState:
    total: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class MinState:
    value: Decimal | None = None


@dataclass(frozen=True, slots=True)
class MaxState:
    value: Decimal | None = None


@dataclass(frozen=True, slots=True)
class UniqueState:
    identities: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LatestState:
    entry: LatestEntry | None = None


State = CountState | SumState | MinState | MaxState | UniqueState | LatestState

_KIND_OF: dict[type[State], Aggregation] = {
    CountState: Aggregation.COUNT,
    SumState: Aggregation.SUM,
    MinState: Aggregation.MIN,
    MaxState: Aggregation.MAX,
    UniqueState: Aggregation.UNIQUE_COUNT,
    LatestState: Aggregation.LATEST,
}
_EMPTY: dict[Aggregation, State] = {kind: cls() for cls, kind in _KIND_OF.items()}


def kind_of(state: State) -> Aggregation:
    return _KIND_OF[type(state)]


def empty(kind: Aggregation | str) -> State:
    """The identity of ``merge`` for ``kind``: the state of a window with no events."""
    return _EMPTY[Aggregation(kind)]


def _number(value: Value) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise TypeError(f"expected a finite Decimal, got {value!r}")
    return value


def _identity(value: Value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected an identity string, got {value!r}")
    return value


def _exact_sum(values: Iterable[Decimal]) -> Decimal:
    return reduce(_EXACT.add, values, Decimal(0))


def add(state: State, event_time: int, event_id: str, value: Value) -> State:
    """Fold one event into ``state`` (for a whole batch prefer ``aggregate``)."""
    match state:
        case CountState(count):
            return CountState(count + 1)
        case SumState(total):
            return SumState(_EXACT.add(total, _number(value)))
        case MinState(current):
            number = _number(value)
            return state if current is not None and current <= number else MinState(number)
        case MaxState(current):
            number = _number(value)
            return state if current is not None and current >= number else MaxState(number)
        case UniqueState(identities):
            identity = _identity(value)
            return state if identity in identities else UniqueState(identities | {identity})
        case LatestState(entry):
            candidate = LatestEntry(event_time, event_id, _number(value))
            return state if entry is not None and entry >= candidate else LatestState(candidate)
        case _:
            assert_never(state)


def aggregate(kind: Aggregation | str, entries: Iterable[tuple[int, str, Value]]) -> State:
    """The state of a set of ``(event_time, event_id, value)`` in one pass.

    Same result as folding ``add`` over ``empty(kind)``, but linear for
    unique_count (``add`` copies the set on each new identity).
    """
    match Aggregation(kind):
        case Aggregation.COUNT:
            return CountState(sum(1 for _ in entries))
        case Aggregation.SUM:
            return SumState(_exact_sum(_number(v) for _, _, v in entries))
        case Aggregation.MIN:
            return MinState(min((_number(v) for _, _, v in entries), default=None))
        case Aggregation.MAX:
            return MaxState(max((_number(v) for _, _, v in entries), default=None))
        case Aggregation.UNIQUE_COUNT:
            return UniqueState(frozenset(_identity(v) for _, _, v in entries))
        case Aggregation.LATEST:
            latest = max((LatestEntry(t, i, _number(v)) for t, i, v in entries), default=None)
            return LatestState(latest)
        case unknown:
            assert_never(unknown)


def _opt(pick: Any, a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return pick(a, b)


def merge(a: State, b: State) -> State:
    """Combine two partial states of the same kind (associative, commutative)."""
    match a, b:
        case CountState(x), CountState(y):
            return CountState(x + y)
        case SumState(x), SumState(y):
            return SumState(_EXACT.add(x, y))
        case MinState(x), MinState(y):
            return MinState(_opt(min, x, y))
        case MaxState(x), MaxState(y):
            return MaxState(_opt(max, x, y))
        case UniqueState(x), UniqueState(y):
            return UniqueState(x | y)
        case LatestState(x), LatestState(y):
            return LatestState(_opt(max, x, y))
        case _:
            raise TypeError(f"cannot merge a {kind_of(a)} state with a {kind_of(b)} state")


def merge_all(kind: Aggregation | str, states: Iterable[State]) -> State:
    """Merge many states of ``kind`` (linear, even for unique_count)."""
    kind = Aggregation(kind)
    items = list(states)
    for s in items:
        if kind_of(s) is not kind:
            raise TypeError(f"cannot merge a {kind_of(s)} state into a {kind} total")
    if kind is Aggregation.UNIQUE_COUNT:
        sets = [s.identities for s in items if isinstance(s, UniqueState)]
        return UniqueState(frozenset().union(*sets))
    return reduce(merge, items, empty(kind))


def result(state: State) -> Decimal | None:
    """The canonical quantity of a state (see the module docstring for empties)."""
    match state:
        case CountState(count):
            return Decimal(count)
        case SumState(total):
            return normalize(total)
        case MinState(value) | MaxState(value):
            return None if value is None else normalize(value)
        case UniqueState(identities):
            return Decimal(len(identities))
        case LatestState(entry):
            return None if entry is None else normalize(entry.value)
        case _:
            assert_never(state)


def period_total(kind: Aggregation | str, window_states: Iterable[State]) -> Decimal | None:
    """Quantity over a billing period from the states of its windows (DESIGN §4).

    Merging is exactly what §4 prescribes: count and sum add the window values,
    min and max take the min / max of window values, and unique_count and latest
    are computed over the whole period by merging states. Summing per-window
    distinct counts would count a value once per window it appears in.
    The windows passed must lie inside the period (see ``windows.is_aligned``).
    """
    return result(merge_all(kind, window_states))


# --- storage ---------------------------------------------------------------

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_KIND_NAMES = tuple(k.value for k in Aggregation)


def _dec_text(value: Decimal | None) -> str | None:
    return None if value is None else fmt(value)


def to_json(state: State) -> str:
    """Canonical JSON text of a state; decimals are canonical strings, sets sorted."""
    body: dict[str, Any]
    match state:
        case CountState(count):
            body = {"count": count}
        case SumState(total):
            body = {"sum": fmt(total)}
        case MinState(value):
            body = {"min": _dec_text(value)}
        case MaxState(value):
            body = {"max": _dec_text(value)}
        case UniqueState(identities):
            body = {"values": sorted(identities)}
        case LatestState(entry):
            latest = None
            if entry is not None:
                latest = {
                    "event_time": entry.event_time,
                    "event_id": entry.event_id,
                    "value": fmt(entry.value),
                }
            body = {"latest": latest}
        case _:
            assert_never(state)
    body["kind"] = str(kind_of(state))
    return dumps(body).decode()


class CorruptState(ValueError):
    """Stored state text that ``to_json`` could not have produced."""


def _corrupt(text: str | bytes, why: str) -> CorruptState:
    return CorruptState(f"corrupt aggregate state ({why}): {text!r}")


def _load_dec(raw: Any, text: str | bytes, *, nullable: bool = False) -> Decimal | None:
    if raw is None and nullable:
        return None
    if not isinstance(raw, str):
        raise _corrupt(text, "decimal must be a string")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _corrupt(text, "bad decimal") from None
    if not value.is_finite() or fmt(value) != raw:
        raise _corrupt(text, "non-canonical decimal")
    return value


def _is_int(raw: Any) -> bool:
    return isinstance(raw, int) and not isinstance(raw, bool)


def from_json(text: str | bytes, kind: Aggregation | str | None = None) -> State:
    """Parse ``to_json`` output; with ``kind``, also check the state is of that kind."""
    try:
        data = _decoder.decode(text)
    except msgspec.DecodeError:
        raise _corrupt(text, "not JSON") from None
    if not isinstance(data, dict) or data.get("kind") not in _KIND_NAMES:
        raise _corrupt(text, "unknown kind")
    found = Aggregation(data.pop("kind"))
    if kind is not None and found is not Aggregation(kind):
        raise _corrupt(text, f"expected kind {Aggregation(kind)}")
    field = {
        Aggregation.COUNT: "count",
        Aggregation.SUM: "sum",
        Aggregation.MIN: "min",
        Aggregation.MAX: "max",
        Aggregation.UNIQUE_COUNT: "values",
        Aggregation.LATEST: "latest",
    }[found]
    if set(data) != {field}:
        raise _corrupt(text, f"expected exactly the field {field!r}")
    raw = data[field]
    match found:
        case Aggregation.COUNT:
            if not _is_int(raw) or raw < 0:
                raise _corrupt(text, "count must be a non-negative integer")
            return CountState(raw)
        case Aggregation.SUM:
            total = _load_dec(raw, text)
            assert total is not None
            return SumState(total)
        case Aggregation.MIN:
            return MinState(_load_dec(raw, text, nullable=True))
        case Aggregation.MAX:
            return MaxState(_load_dec(raw, text, nullable=True))
        case Aggregation.UNIQUE_COUNT:
            if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
                raise _corrupt(text, "values must be a list of strings")
            return UniqueState(frozenset(raw))
        case Aggregation.LATEST:
            if raw is None:
                return LatestState()
            if (
                not isinstance(raw, dict)
                or set(raw) != {"event_time", "event_id", "value"}
                or not _is_int(raw["event_time"])
                or not isinstance(raw["event_id"], str)
            ):
                raise _corrupt(text, "latest must hold event_time, event_id and value")
            value = _load_dec(raw["value"], text)
            assert value is not None
            return LatestState(LatestEntry(raw["event_time"], raw["event_id"], value))
        case unknown:
            assert_never(unknown)
