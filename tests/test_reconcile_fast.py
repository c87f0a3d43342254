"""Check 2's bulk paths: count and integer-sum series compared in SQL
(`_fast_windows`), the other meters folded in batches of customers
(`_batch_windows`). They may only confirm equality: on every store, clean or
tampered, the report must be the one the reference path (every series read,
folded and compared one by one) gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from tests.billing_support import clock
from tests.support import event, ingest

from meterline.domain.timestamps import parse_rfc3339
from meterline.services import reconcile as module
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.store.database import Store

SUB = [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}]
CATALOG: dict[str, Any] = {
    "meters": [
        {"code": "api_calls", "event_type": "api_call", "aggregation": "count"},
        {
            "code": "calls_by_region",
            "event_type": "api_call",
            "aggregation": "count",
            "group_by": ["region"],
        },
        {
            "code": "tokens",
            "event_type": "llm_call",
            "aggregation": "sum",
            "property": "tokens",
            "group_by": ["model"],
        },
        {
            "code": "peak_tokens",
            "event_type": "llm_call",
            "aggregation": "max",
            "property": "tokens",
            "group_by": ["model"],
        },
        {
            "code": "daily_tokens",
            "event_type": "llm_call",
            "aggregation": "sum",
            "property": "tokens",
            "window": "1d",
        },
    ],
    "price_books": [
        {
            "code": "standard",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "charges": [{"code": "platform", "model": "flat", "amount": "49.00"}],
                }
            ],
        }
    ],
    "customers": [
        {"id": c, "name": c.title(), "currency": "USD", "subscriptions": SUB}
        for c in ("acme", "beta", "gamma")
    ],
}


def _llm(
    i: int, customer: str, tokens: Any, model: Any = "small", hour: int = 10
) -> dict[str, Any]:
    props: dict[str, Any] = {"tokens": tokens}
    if model is not None:
        props["model"] = model
    return event(
        f"{customer}-l{i}",
        customer=customer,
        type_="llm_call",
        time=f"2024-01-2{i % 3}T{hour:02d}:{i % 60:02d}:00Z",
        props=props,
    )


def workload(store: Store) -> None:
    """acme: integer tokens only (the bulk path takes it); beta: a decimal and a
    numeric string (the reference path must fold them); gamma: a number as group
    value. Plus a retraction and events in two batches (index rows to merge)."""
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    events = [_llm(i, "acme", 100 + i, "large" if i % 2 else "small") for i in range(30)]
    events += [_llm(30, "acme", 5, None)]  # no model: its own group
    events += [_llm(i, "beta", 10 + i) for i in range(10)]
    events += [_llm(10, "beta", "1.5"), _llm(11, "beta", "7")]
    events += [_llm(i, "gamma", 3 + i, 3) for i in range(5)]
    events += [
        event(
            f"{c}-c{i}",
            customer=c,
            time=f"2024-01-2{i % 3}T0{i % 9}:00:00Z",
            props={"region": "eu"},
        )
        for i in range(40)
        for c in ("acme", "beta")
    ]
    ingest(store, clock("2024-02-01T00:00:00Z"), events[: len(events) // 2], batch_size=25)
    ingest(store, clock("2024-02-01T00:00:00Z"), events[len(events) // 2 :], batch_size=25)
    retract_event(store, "default", "beta-l3", "test", parse_rfc3339("2024-02-01T00:00:00Z"))


def reference(store: Store, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The report with every series recomputed and compared one by one."""
    with monkeypatch.context() as m:
        m.setattr(module, "_bulk_windows", lambda *args: {})
        return module.reconcile(store, full=True, record=False).to_json()


def test_bulk_path_takes_integer_series_and_leaves_the_rest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload(store)
    fast_taken: set[tuple[str, str]] = set()
    batch_taken: set[tuple[str, str]] = set()
    fast, batch = module._fast_windows, module._batch_windows

    def spy(conn: Any, m: Any, customers: Any, lo: Any, hi: Any) -> dict[str, int]:
        got = fast(conn, m, customers, lo, hi)
        fast_taken.update((m.code, c) for c in got)
        return got

    def batch_spy(conn: Any, m: Any, customers: Any, lo: Any, hi: Any) -> dict[str, int]:
        got = batch(conn, m, customers, lo, hi)
        batch_taken.update((m.code, c) for c in got)
        return got

    monkeypatch.setattr(module, "_fast_windows", spy)
    monkeypatch.setattr(module, "_batch_windows", batch_spy)
    report = module.reconcile(store, full=True, record=False)
    assert report.ok, report.to_json()
    assert ("tokens", "acme") in fast_taken and ("api_calls", "beta") in fast_taken
    assert ("calls_by_region", "acme") in fast_taken and ("daily_tokens", "acme") in fast_taken
    assert ("daily_tokens", "gamma") in fast_taken
    # A decimal, a numeric string, a retraction, a number as group value: not summed by
    # the database, folded in Python in a batch instead (exactly).
    for series in [("tokens", "beta"), ("daily_tokens", "beta"), ("tokens", "gamma")]:
        assert series not in fast_taken and series in batch_taken, series
    # max is always compared in batches of customers, in Python (decimals included).
    assert {("peak_tokens", c) for c in ("acme", "beta", "gamma")} <= batch_taken
    monkeypatch.setattr(module, "_fast_windows", fast)
    monkeypatch.setattr(module, "_batch_windows", batch)
    assert report.to_json() == reference(store, monkeypatch)


def _sql(statement: str, **params: Any) -> Callable[[Any], None]:
    return lambda conn: conn.execute(text(statement), params)


_ACME_TOKENS = "UPDATE events SET properties = :p WHERE event_id = 'acme-l4'"  # an integer changed
TAMPERS: dict[str, Callable[[Any], None]] = {
    "event value changed": _sql(_ACME_TOKENS, p='{"model":"small","tokens":999}'),
    "event value made a decimal": _sql(_ACME_TOKENS, p='{"model":"small","tokens":104.0}'),
    "event value made a string": _sql(_ACME_TOKENS, p='{"model":"small","tokens":"104"}'),
    "event properties unreadable": _sql(_ACME_TOKENS, p='{"model":"small","tokens":'),
    "event value given twice": _sql(_ACME_TOKENS, p='{"model":"small","tokens":104,"tokens":9}'),
    "event group given twice": _sql(
        _ACME_TOKENS, p='{"model":"small","model":"huge","tokens":104}'
    ),
    "event group changed": _sql(_ACME_TOKENS, p='{"model":"huge","tokens":104}'),
    "event group made a number": _sql(_ACME_TOKENS, p='{"model":7,"tokens":104}'),
    "event time made text": _sql(
        "UPDATE events SET event_time = 'x' || event_time WHERE event_id = 'acme-c5'"
    ),
    "event deleted": _sql("DELETE FROM events WHERE event_id = 'acme-l4'"),
    "sum state non-canonical": _sql(
        "UPDATE usage_index SET state = :s WHERE customer_id = 'acme' AND meter_code = 'tokens' "
        "AND grain = 'w' AND dimensions = '[\"small\"]' AND bucket_start = "
        "(SELECT MIN(bucket_start) FROM usage_index WHERE customer_id = 'acme' "
        "AND meter_code = 'tokens' AND grain = 'w' AND dimensions = '[\"small\"]')",
        s='{"kind":"sum","sum":"100.0"}',
    ),
    "sum state changed": _sql(
        "UPDATE usage_index SET state = :s WHERE customer_id = 'acme' AND meter_code = 'tokens' "
        "AND grain = 'd'",
        s='{"kind":"sum","sum":"1"}',
    ),
    "count events changed": _sql(
        "UPDATE usage_index SET events = events + 1 WHERE customer_id = 'beta' "
        "AND meter_code = 'api_calls' AND grain = 'd'"
    ),
    "index row of an unknown kind": _sql(
        "UPDATE usage_index SET kind = 'xyz' WHERE customer_id = 'acme' "
        "AND meter_code = 'calls_by_region' AND grain = 'w'"
    ),
    "index row added": _sql(
        "INSERT INTO usage_index (customer_id, meter_code, grain, bucket_start, dimensions, "
        "seq, first_seq, kind, state, events) VALUES ('acme', 'tokens', 'w', 0, '[\"small\"]', "
        "1, 1, 'add', :s, 1)",
        s='{"kind":"sum","sum":"3"}',
    ),
    "retraction row added behind the index's back": _sql(
        "INSERT INTO retractions (seq, source, event_id, event_seq, reason, retracted_at) "
        "SELECT 100000, source, event_id, seq, 'forged', 0 FROM events WHERE event_id = 'acme-l5'"
    ),
    "empty index row added": _sql(
        "INSERT INTO usage_index (customer_id, meter_code, grain, bucket_start, dimensions, "
        "seq, first_seq, kind, state, events) VALUES ('beta', 'api_calls', 'w', 0, '[]', "
        "1, 1, 'add', :s, 0)",
        s='{"count":0,"kind":"count"}',
    ),
}


# SQLite alone lets a text into the integer event_time column (PostgreSQL's bigint
# refuses it), so that tamper has its own SQLite-only test instead of a skip.
SQLITE_ONLY = ("event time made text",)


@pytest.mark.parametrize("name", [n for n in TAMPERS if n not in SQLITE_ONLY])
def test_a_tampered_store_gets_the_reference_report(
    store: Store, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _tampered_gets_the_reference_report(store, monkeypatch, name)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("name", SQLITE_ONLY)
def test_a_tamper_only_sqlite_can_hold_gets_the_reference_report(
    store: Store, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _tampered_gets_the_reference_report(store, monkeypatch, name)


def _tampered_gets_the_reference_report(
    store: Store, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    workload(store)
    assert module.reconcile(store, full=True, record=False).ok
    with store.write() as conn:
        TAMPERS[name](conn)
    got = module.reconcile(store, full=True, record=False).to_json()
    assert got == reference(store, monkeypatch)
    if name not in ("sum state non-canonical", "empty index row added"):
        failing = {c["name"] for c in got["checks"] if not c["ok"]}
        assert "window_aggregates" in failing or "merkle_log" in failing, got
    if name == "event value changed":
        [windows] = [c for c in got["checks"] if c["name"] == "window_aggregates"]
        assert not windows["ok"] and "window tokens/acme/" in windows["details"]
