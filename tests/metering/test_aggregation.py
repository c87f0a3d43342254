"""Partial aggregates: results, merging, storage form, period totals (table-driven)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from functools import reduce

import pytest

from meterline.metering.aggregation import (
    Aggregation,
    CorruptState,
    CountState,
    LatestEntry,
    LatestState,
    MaxState,
    MinState,
    State,
    SumState,
    UniqueState,
    Value,
    add,
    aggregate,
    empty,
    from_json,
    kind_of,
    merge,
    merge_all,
    period_total,
    result,
    to_json,
)

D = Decimal
Entry = tuple[int, str, Value]

NUMBERS: list[Entry] = [
    (30, "e1", D("2.5")),
    (10, "e2", D("-1")),
    (20, "e3", D("0.10")),
    (30, "e0", D("7")),
]
IDENTITIES: list[Entry] = [
    (1, "a", '"alice"'),
    (2, "b", '"bob"'),
    (3, "c", '"alice"'),
    (4, "d", "1"),
]

# kind, entries, result, canonical storage text
TABLE: list[tuple[Aggregation, list[Entry], Decimal | None, str]] = [
    (Aggregation.COUNT, NUMBERS, D(4), '{"count":4,"kind":"count"}'),
    (Aggregation.SUM, NUMBERS, D("8.6"), '{"kind":"sum","sum":"8.6"}'),
    (Aggregation.MIN, NUMBERS, D(-1), '{"kind":"min","min":"-1"}'),
    (Aggregation.MAX, NUMBERS, D(7), '{"kind":"max","max":"7"}'),
    (
        Aggregation.UNIQUE_COUNT,
        IDENTITIES,
        D(3),
        '{"kind":"unique_count","values":["\\"alice\\"","\\"bob\\"","1"]}',
    ),
    # Two events at t=30: "e1" > "e0", so 2.5 wins although 7 is larger.
    (
        Aggregation.LATEST,
        NUMBERS,
        D("2.5"),
        '{"kind":"latest","latest":{"event_id":"e1","event_time":30,"value":"2.5"}}',
    ),
]
EMPTY_RESULTS = {
    Aggregation.COUNT: (D(0), '{"count":0,"kind":"count"}'),
    Aggregation.SUM: (D(0), '{"kind":"sum","sum":"0"}'),
    Aggregation.MIN: (None, '{"kind":"min","min":null}'),
    Aggregation.MAX: (None, '{"kind":"max","max":null}'),
    Aggregation.UNIQUE_COUNT: (D(0), '{"kind":"unique_count","values":[]}'),
    Aggregation.LATEST: (None, '{"kind":"latest","latest":null}'),
}
IDS = [row[0].value for row in TABLE]


def fold(kind: Aggregation, entries: Iterable[Entry]) -> State:
    return reduce(lambda s, e: add(s, *e), entries, empty(kind))


@pytest.mark.parametrize(("kind", "entries", "expected", "text"), TABLE, ids=IDS)
def test_result_and_storage(
    kind: Aggregation, entries: list[Entry], expected: Decimal, text: str
) -> None:
    state = aggregate(kind, entries)
    assert state == fold(kind, entries)
    assert kind_of(state) is kind
    assert result(state) == expected
    assert str(result(state)) == str(expected)  # canonical: no trailing zeros
    assert to_json(state) == text
    assert from_json(text) == state
    assert from_json(text.encode(), kind) == state


@pytest.mark.parametrize(("kind", "entries", "expected", "text"), TABLE, ids=IDS)
def test_split_and_reversed_merges_agree(
    kind: Aggregation, entries: list[Entry], expected: Decimal, text: str
) -> None:
    left, right = aggregate(kind, entries[:2]), aggregate(kind, entries[2:])
    assert to_json(merge(left, right)) == text
    assert to_json(merge(right, left)) == text
    assert to_json(fold(kind, entries[::-1])) == text
    assert to_json(merge_all(kind, [aggregate(kind, [e]) for e in entries])) == text
    assert merge(empty(kind), left) == left == merge(left, empty(kind))


@pytest.mark.parametrize("kind", list(Aggregation), ids=[k.value for k in Aggregation])
def test_empty_states(kind: Aggregation) -> None:
    expected, text = EMPTY_RESULTS[kind]
    assert result(empty(kind)) == expected
    assert aggregate(kind, []) == empty(kind) == empty(kind.value)
    assert to_json(empty(kind)) == text
    assert from_json(text) == empty(kind)
    assert period_total(kind, []) == expected


def test_latest_tie_on_time_goes_to_greater_event_id() -> None:
    a = (100, "evt_a", D(1))
    b = (100, "evt_b", D(2))
    for order in ([a, b], [b, a]):
        assert result(aggregate(Aggregation.LATEST, order)) == D(2)
        assert result(fold(Aggregation.LATEST, order)) == D(2)
    older_but_greater_id = (99, "zzz", D(3))
    assert result(aggregate(Aggregation.LATEST, [a, b, older_but_greater_id])) == D(2)


def test_latest_full_tie_goes_to_greater_value() -> None:
    # Same event_id from two sources at the same instant: still order-independent.
    x, y = (5, "dup", D(1)), (5, "dup", D(9))
    assert aggregate(Aggregation.LATEST, [x, y]) == aggregate(Aggregation.LATEST, [y, x])
    assert result(fold(Aggregation.LATEST, [y, x])) == D(9)


def test_equal_values_different_spelling_store_identically() -> None:
    a = aggregate(Aggregation.MIN, [(1, "a", D("1.0")), (2, "b", D("1"))])
    b = aggregate(Aggregation.MIN, [(2, "b", D("1")), (1, "a", D("1.0"))])
    assert to_json(a) == to_json(b) == '{"kind":"min","min":"1"}'


def test_sum_is_exact_beyond_default_precision() -> None:
    big = D("123456789012345678901234567890")  # 30 digits
    tiny = D("0.000000000000000001")
    total = result(aggregate(Aggregation.SUM, [(1, "a", big), (2, "b", tiny)]))
    assert str(total) == "123456789012345678901234567890.000000000000000001"


def test_period_total_follows_design() -> None:
    # Window 1 and window 2 of a period.
    w1 = [(1, "a", '"alice"'), (2, "b", '"bob"')]
    w2 = [(3, "c", '"alice"')]
    states = [aggregate(Aggregation.UNIQUE_COUNT, w) for w in (w1, w2)]
    # alice used the product in both windows: she counts once over the period, not twice.
    assert sum(result(s) or 0 for s in states) == 3
    assert period_total(Aggregation.UNIQUE_COUNT, states) == D(2)

    n1 = [(1, "a", D("5")), (2, "b", D("1.5"))]
    n2 = [(3, "c", D("-2")), (4, "d", D("4"))]
    for kind, expected in [
        (Aggregation.COUNT, D(4)),
        (Aggregation.SUM, D("8.5")),
        (Aggregation.MIN, D(-2)),
        (Aggregation.MAX, D(5)),
        (Aggregation.LATEST, D(4)),
    ]:
        assert period_total(kind, [aggregate(kind, n1), aggregate(kind, n2)]) == expected


def test_merging_different_kinds_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot merge a min state with a max state"):
        merge(MinState(D(1)), MaxState(D(2)))
    with pytest.raises(TypeError, match="into a sum total"):
        merge_all(Aggregation.SUM, [SumState(D(1)), CountState(1)])
    with pytest.raises(TypeError, match="into a unique_count total"):
        period_total(Aggregation.UNIQUE_COUNT, [CountState(1)])


@pytest.mark.parametrize(
    ("state", "value"),
    [
        (SumState(), "1"),
        (MinState(), None),
        (MaxState(), 1.5),
        (LatestState(), D("NaN")),
        (UniqueState(), D(1)),
    ],
)
def test_add_refuses_values_of_the_wrong_type(state: State, value: object) -> None:
    with pytest.raises(TypeError, match="expected"):
        add(state, 1, "e", value)  # type: ignore[arg-type]


def test_count_ignores_the_value() -> None:
    assert add(CountState(2), 1, "e", D(99)) == CountState(3)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        empty("avg")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"kind":"avg","avg":1}',
        '{"kind":["count"],"count":1}',
        '{"count":1}',
        '{"kind":"count","count":-1}',
        '{"kind":"count","count":1.0}',
        '{"kind":"count","count":true}',
        '{"kind":"count","count":1,"extra":2}',
        '{"kind":"sum","sum":1.5}',
        '{"kind":"sum","sum":"1.50"}',
        '{"kind":"sum","sum":"NaN"}',
        '{"kind":"sum","sum":"x"}',
        '{"kind":"sum","sum":null}',
        '{"kind":"min"}',
        '{"kind":"unique_count","values":[1]}',
        '{"kind":"unique_count","values":"a"}',
        '{"kind":"latest","latest":{"event_time":1,"event_id":"a"}}',
        '{"kind":"latest","latest":{"event_time":"1","event_id":"a","value":"1"}}',
        '{"kind":"latest","latest":[1,"a","1"]}',
    ],
)
def test_from_json_rejects_corrupt_state(text: str) -> None:
    with pytest.raises(CorruptState, match="corrupt aggregate state"):
        from_json(text)


def test_from_json_checks_expected_kind() -> None:
    with pytest.raises(CorruptState, match="expected kind max"):
        from_json('{"kind":"min","min":"1"}', Aggregation.MAX)


def test_latest_entry_ordering() -> None:
    assert LatestEntry(2, "a", D(0)) > LatestEntry(1, "z", D(9))
    assert LatestEntry(1, "b", D(0)) > LatestEntry(1, "a", D(9))
