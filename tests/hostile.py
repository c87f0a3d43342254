"""Hypothesis strategies for hostile input (issue 11): any bytes, any JSON,
extreme numbers, depths, lengths, unicode, NUL, lone surrogates, times at the
edges of the calendar. Shared by the CLI, HTTP and Kafka suites."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import strategies as st

CATALOG = {
    "meters": [
        {"code": "tokens", "event_type": "llm_call", "aggregation": "sum", "property": "tokens"},
        {"code": "calls", "event_type": "api_call", "aggregation": "count", "window": "1h"},
    ]
}

EDGE_TIMES = [
    "0001-01-01T00:00:00+01:00",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999999Z",
    "8999-12-31T23:59:59Z",
    "2024-02-29T23:59:60Z",
    "2024-02-01T10:00:00+23:59",
    "2024-02-01T10:00:00-23:59",
    "2024-02-01T10:00:00",
    "2024-13-01T00:00:00Z",
    "٢٠٢٤-02-01T00:00:00Z",
    "",
]

# JSON literals a generic encoder would never write.
NUMBER_LITERALS = [
    "1e400",
    "-1e400",
    "1e-400",
    "1" + "0" * 5000,
    "-" + "9" * 70,
    "0." + "0" * 80 + "1",
    "1." + "3" * 200,
    "NaN",
    "Infinity",
    "-0.0",
    "1E+60",
    "123456789012345678901234567890.123456789012345678",
    "true",
    "null",
]

TEXT_LITERALS = [
    '"\\u0000"',
    '"a\\u0000b"',
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"' + "x" * 300 + '"',
    '"' + "é" * 20000 + '"',
    '"\\n\\t\\r"',
    '"😀"',
    '"\\u202e"',
    "1",
    "[]",
    "{}",
]


def good_event(prefix: str = "v", time: str = "2024-02-01T10:00:00Z") -> dict[str, Any]:
    """A valid event with a unique id: it must be stored whatever surrounds it."""
    return {
        "event_id": f"{prefix}-{uuid.uuid4().hex}",
        "customer_id": "acme",
        "event_type": "llm_call",
        "event_time": time,
        "properties": {"tokens": 7, "model": "m"},
    }


def _deep(depth: int) -> str:
    return '{"n":' * depth + "1" + "}" * depth


def _event_text(fields: dict[str, str]) -> bytes:
    """An event object written from raw JSON texts (so any literal fits)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode(
        "utf-8", "surrogatepass"
    )


@st.composite
def hostile_event(draw: st.DrawFn) -> bytes:
    """A JSON event with one or more fields replaced by something hostile."""
    fields = {k: json.dumps(v) for k, v in good_event("h").items()}
    fields["properties"] = '{"tokens": 1}'
    for _ in range(draw(st.integers(1, 3))):
        target = draw(
            st.sampled_from(
                [
                    "event_id",
                    "customer_id",
                    "event_type",
                    "event_time",
                    "source",
                    "properties",
                    "sorce",
                    "extra",
                ]
            )
        )
        if target == "event_time":
            value = draw(
                st.one_of(
                    st.sampled_from(EDGE_TIMES).map(json.dumps),
                    st.sampled_from(NUMBER_LITERALS + TEXT_LITERALS),
                )
            )
        elif target == "properties":
            value = draw(
                st.one_of(
                    st.sampled_from([30, 33, 200, 1000, 5000]).map(_deep),
                    st.sampled_from(NUMBER_LITERALS + TEXT_LITERALS).map(
                        lambda v: '{"tokens":' + v + "}"
                    ),
                    st.sampled_from(TEXT_LITERALS)
                    .map(lambda v: "{" + v + ":1}")
                    .filter(lambda v: v.startswith('{"')),
                    st.sampled_from(NUMBER_LITERALS + TEXT_LITERALS),
                    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)).map(
                        json.dumps
                    ),
                )
            )
        else:
            value = draw(
                st.one_of(
                    st.sampled_from(TEXT_LITERALS + NUMBER_LITERALS),
                    st.text(max_size=20).map(json.dumps),
                )
            )
        fields[target] = value
    return _event_text(fields)


def any_json_value() -> st.SearchStrategy[bytes]:
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    )
    values = st.recursive(
        leaves,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids),
        max_leaves=10,
    )
    return values.map(lambda v: json.dumps(v).encode())


def hostile_line() -> st.SearchStrategy[bytes]:
    """One NDJSON line: any bytes, any JSON value, or a hostile event (no newline)."""
    return st.one_of(
        st.binary(max_size=64),
        any_json_value(),
        hostile_event(),
        hostile_event(),
    ).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
