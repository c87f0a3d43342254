"""The chunked invoice run (services/invoicing.py `_issue_chunk`) writes exactly what
issuing the same customers one by one writes: the same documents byte for byte
(numbers, cutoffs, tree heads, chain), journal, audit rows, webhook messages,
Merkle nodes and index checkpoints; a customer that cannot be invoiced gets its
own error and the run goes on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, TIERS, clock, close_january
from tests.conftest import drop_pg, make_pg_store
from tests.support import event, ingest

from meterline.domain.errors import MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.reconcile import reconcile
from meterline.services.verification import verify
from meterline.store.database import Store, open_store

LABEL = "2024-01"

# Every path a chunk takes: UTC and +05:30 months (windows cut by the period
# start: raw pieces), a price change mid-hour (a window cut by a segment), a
# grouped sum, a max with day windows, tax, a customer without events, one
# already invoiced before the run, one whose price book cannot be read (fails
# alone), one whose subscription starts after January (not in the run).
CUSTOMERS = [
    ("a00", "UTC", "0"),
    ("a01", "Asia/Kolkata", "0.2"),
    ("a02", "UTC", "0.2"),
    ("a03", "UTC", "0"),  # no events
    ("a04", "Europe/Berlin", "0"),
    ("a05", "UTC", "0"),  # invoiced before the run
    ("a06", "UTC", "0"),
]


def _catalog() -> dict[str, Any]:
    def version(label: str, start: str, price: str) -> dict[str, Any]:
        return {
            "version": label,
            "effective_from": start,
            "charges": [
                {"code": "api", "meter": "api_calls", "model": "graduated", "tiers": TIERS},
                {"code": "tok", "meter": "tokens", "model": "per_unit", "unit_price": price},
                {"code": "disk", "meter": "storage", "model": "per_unit", "unit_price": "0.1"},
                {"code": "base", "model": "flat", "amount": "5.00"},
            ],
        }

    customers = [
        {
            "id": cid,
            "name": cid,
            "currency": "USD",
            "timezone": tz,
            "tax_rate": tax,
            "subscriptions": [
                {"price_book": "bad" if cid == "a06" else "std", "start": "2023-12-01T00:00:00Z"}
            ],
        }
        for cid, tz, tax in CUSTOMERS
    ]
    customers.append(
        {
            "id": "later",
            "name": "later",
            "currency": "USD",
            "subscriptions": [{"price_book": "std", "start": "2024-03-01T00:00:00Z"}],
        }
    )
    return {
        "meters": [
            {"code": "api_calls", "event_type": "api_call", "aggregation": "count"},
            {
                "code": "tokens",
                "event_type": "llm_call",
                "aggregation": "sum",
                "property": "tokens",
                "group_by": ["model"],
            },
            {
                "code": "storage",
                "event_type": "storage",
                "aggregation": "max",
                "property": "gb",
                "window": "1d",
            },
        ],
        "price_books": [
            {
                "code": code,
                "currency": "USD",
                "versions": [
                    version("v1", "2023-12-01T00:00:00Z", "0.001"),
                    version("v2", "2024-01-15T10:30:00Z", "0.002"),
                ],
            }
            for code in ("std", "bad")
        ],
        "customers": customers,
    }


def _world(store: Store) -> None:
    apply_catalog(store, _catalog(), parse_rfc3339("2023-12-01T00:00:00Z"))
    events = []
    for n, (cid, _, _) in enumerate(CUSTOMERS):
        if cid == "a03":
            continue
        for i in range(40 + 7 * n):
            day, hour, minute = 1 + (i * 3) % 31, (i * 5) % 24, (i * 7) % 60
            when = f"2024-01-{day:02d}T{hour:02d}:{minute:02d}:00Z"
            if i % 3 == 0:
                props = {"tokens": 100 + i, "model": "big" if i % 2 else "small"}
                events.append(
                    event(f"{cid}-l{i}", customer=cid, type_="llm_call", time=when, props=props)
                )
            elif i % 5 == 1:
                props = {"gb": f"{i}.5"}
                events.append(
                    event(f"{cid}-s{i}", customer=cid, type_="storage", time=when, props=props)
                )
            else:
                events.append(event(f"{cid}-a{i}", customer=cid, time=when))
    events.append(event("dec", customer="a00", time="2023-12-31T20:00:00Z"))  # +05:30 January
    ingest(store, clock(FEB), events)
    close_january(store)
    with store.write() as conn:  # a price the bounds reject (as in test_hostile_inputs)
        conn.execute(
            text(
                "UPDATE price_versions SET definition = replace(definition, '0.001', '1e400') "
                "WHERE book_code = 'bad'"
            )
        )
    invoicing.issue(store, LABEL, FEB_US, "a05")


@pytest.fixture
def twin(backend: str, tmp_path_factory: pytest.TempPathFactory, request: Any) -> Iterator[Store]:
    """A second fresh store on the same backend as `store`."""
    if backend == "sqlite":
        s = open_store(f"sqlite:///{tmp_path_factory.mktemp('twin') / 'twin.db'}")
        s.upgrade()
        yield s
        s.dispose()
    else:
        s, name = make_pg_store(request.getfixturevalue("pg_template"))
        yield s
        drop_pg(s, name)


_TABLES = {
    "documents": "SELECT * FROM documents ORDER BY seq",
    "document_numbers": "SELECT * FROM document_numbers ORDER BY kind",
    "knowledge": "SELECT * FROM knowledge",
    "journal_entries": "SELECT * FROM journal_entries ORDER BY seq",
    "journal_lines": "SELECT * FROM journal_lines ORDER BY entry_seq, line_no",
    "audit_log": "SELECT seq, at, actor, action, details FROM audit_log ORDER BY id",
    "webhook_messages": "SELECT * FROM webhook_messages ORDER BY created_at, id",
    "merkle_nodes": "SELECT level, idx, hash FROM merkle_nodes ORDER BY level, idx",
    "usage_index": "SELECT * FROM usage_index ORDER BY customer_id, meter_code, grain, "
    "bucket_start, dimensions, seq, kind",
}


def _dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    with store.read() as conn:
        return {name: [tuple(r) for r in conn.execute(text(sql))] for name, sql in _TABLES.items()}


def _one_by_one(store: Store) -> invoicing.IssueResult:
    """The reference: each customer of the run issued on its own, in run order."""
    out = invoicing.IssueResult()
    for cid in invoicing.customers_for(store, LABEL):
        try:
            got = invoicing.issue(store, LABEL, FEB_US, cid)
        except MeterlineError as exc:
            out.failed.append((cid, str(exc.code), exc.message))
            continue
        out.issued.extend(got.issued)
        out.already.extend(got.already)
    return out


@pytest.mark.parametrize("chunk", [3, 200])
def test_chunked_run_writes_what_one_by_one_writes(
    store: Store, twin: Store, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    _world(store)
    _world(twin)
    assert _dump(store) == _dump(twin)  # the same world, fact for fact
    monkeypatch.setattr(invoicing, "CHUNK", chunk)
    batched = invoicing.issue(store, LABEL, FEB_US)
    reference = _one_by_one(twin)
    assert [d.to_dict() for d in batched.issued] == [d.to_dict() for d in reference.issued]
    assert [d.to_dict()["customer_id"] for d in batched.issued] == [
        "a00",
        "a01",
        "a02",
        "a03",
        "a04",
    ]
    assert batched.already == reference.already == [("a05", "INV-000001")]
    assert [(c, code) for c, code, _ in batched.failed] == [("a06", "INVALID_CATALOG")]
    assert batched.failed == reference.failed
    assert not batched.refused
    ours, theirs = _dump(store), _dump(twin)
    for name in _TABLES:
        assert ours[name] == theirs[name], name
    assert verify(store).ok
    report = reconcile(store, full=True)
    failing = [c for c in report.checks if not c.ok]
    # Only the price edited behind the system's back (the world's failing customer).
    assert [c.name for c in failing] == ["merkle_log"], [c.to_json() for c in failing]
    assert "price_versions seq" in failing[0].details


def test_a_chunk_that_fails_as_a_whole_is_issued_customer_by_customer(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error the chunk cannot attribute to one customer (here: the tree check)
    rolls the chunk back; every customer is then issued on its own."""
    _world(store)

    def broken(self: Any) -> None:
        raise RuntimeError("tree head differs")

    from meterline.store import merkle

    monkeypatch.setattr(merkle.Grower, "check", broken)
    result = invoicing.issue(store, LABEL, FEB_US)
    assert [d.to_dict()["customer_id"] for d in result.issued] == [
        "a00",
        "a01",
        "a02",
        "a03",
        "a04",
    ]
    assert [(c, code) for c, code, _ in result.failed] == [("a06", "INVALID_CATALOG")]
    assert verify(store).ok
