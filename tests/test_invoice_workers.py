"""An invoice run with worker processes (services/invoice_workers.py), on both
backends: the same outcome per customer as the serial run, the same numbers in
the same order, bodies equal but for the cutoff (the worker's snapshot) and the
tree head at it; every document verifies and the ledger reconciles. A fact
learnt between a chunk's snapshot and its append sends the customer it concerns
(an event or a document of its own), or the whole chunk (any other fact),
through the serial path."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import structs
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, clock
from tests.support import event, ingest
from tests.test_invoice_batch import LABEL, _world, twin  # noqa: F401  (fixture)

from meterline.billing import body as typed
from meterline.services import invoice_workers, invoicing
from meterline.services.reconcile import reconcile
from meterline.services.retraction import retract_event
from meterline.services.verification import verify
from meterline.store.database import Store


def _outcomes(result: invoicing.IssueResult) -> dict[str, Any]:
    out: dict[str, Any] = {d.body.customer_id: ("issued", d.number) for d in result.issued}
    out |= {c: ("already", n) for c, n in result.already}
    out |= {c: ("refused", m) for c, m in result.refused}
    out |= {c: ("failed", code) for c, code, _ in result.failed}
    return out


def _comparable(b: typed.Body) -> typed.Body:
    return structs.replace(b, cutoff_seq=0, tree_head=typed.UNSET)


def test_workers_issue_what_the_serial_run_issues(
    store: Store,
    twin: Store,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(invoice_workers, "PARALLEL_MIN", 1)
    monkeypatch.setattr(invoicing, "CHUNK", 3)  # several chunks, several in flight
    _world(store)
    _world(twin)
    serial = invoicing.issue(twin, LABEL, FEB_US)
    parallel = invoicing.issue(store, LABEL, FEB_US, jobs=2)
    assert _outcomes(parallel) == _outcomes(serial)
    assert len(parallel.issued) >= 4 and parallel.failed  # a06's price book fails alone
    by_number = {d.number: d for d in serial.issued}
    for d in parallel.issued:
        assert _comparable(d.body) == _comparable(by_number[d.number].body)
        assert d.finance is not None
        # a snapshot is taken before the documents of the chunks appended before it
        assert d.body.cutoff_seq <= by_number[d.number].body.cutoff_seq
    assert verify(store).ok
    report = reconcile(store, full=True)  # the world altered a price book behind its back
    assert [c.name for c in report.checks if not c.ok] == ["merkle_log"]
    # The caller decodes the worker's bytes: what it writes from the body is the same.
    written = _written(store)
    assert written == _written(twin) and all(written.values())


_VOLATILE = {"cutoff_seq", "tree_head", "content_hash", "document_hash", "previous_hash"}


def _plain_of(value: Any) -> Any:
    """JSON data without what differs by the snapshot (cutoff, tree head, hashes)."""
    if isinstance(value, dict):
        return {k: _plain_of(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_plain_of(v) for v in value]
    return value


def _written(store: Store) -> dict[str, Any]:
    """Journal lines, audit details and webhook messages of the issued documents."""
    import json

    with store.read() as conn:
        journal = conn.execute(
            text(
                "SELECT e.document, e.kind, e.memo, l.line_no, l.account, l.currency, "
                "l.debit_minor, l.credit_minor FROM journal_entries e JOIN journal_lines l "
                "ON l.entry_seq = e.seq ORDER BY e.document, l.line_no"
            )
        ).all()
        audit = conn.execute(
            text("SELECT action, details FROM audit_log WHERE action = 'issue' ORDER BY seq")
        ).all()
        hooks = conn.execute(text("SELECT type, body FROM webhook_messages ORDER BY id")).all()
    return {
        "journal": [tuple(r) for r in journal],
        "audit": [(a, _plain_of(json.loads(d))) for a, d in audit],
        "webhooks": [(t, _plain_of(json.loads(b))) for t, b in hooks],
    }


def test_an_event_since_the_snapshot_sends_its_customer_to_the_serial_path(
    store: Store,
) -> None:
    _world(store)
    chunk = ["a00", "a01", "a02"]
    with store.read() as conn:
        k0, prepared = invoice_workers.prepare(conn, chunk, LABEL, FEB_US, False)
    assert all(isinstance(prepared[c], invoice_workers.Ready) for c in chunk)
    late = event("late-a01", customer="a01", time="2024-01-20T10:00:00Z")
    ingest(store, clock(FEB), [late], backfill=True)
    with store.write() as conn:
        out = invoice_workers.append_prepared(conn, chunk, LABEL, k0, prepared, FEB_US, False)
    assert out is not None
    assert out["a01"] is invoicing.DEFERRED
    assert {out["a00"].body.cutoff_seq, out["a02"].body.cutoff_seq} == {k0}  # type: ignore[union-attr]
    assert verify(store).ok


def test_any_other_fact_since_the_snapshot_sends_the_chunk_to_the_serial_path(
    store: Store,
) -> None:
    _world(store)
    chunk = ["a00", "a02"]
    with store.read() as conn:
        k0, prepared = invoice_workers.prepare(conn, chunk, LABEL, FEB_US, False)
    retract_event(store, "default", "a04-a2", "duplicate", FEB_US)  # another customer's
    with store.write() as conn:
        assert (
            invoice_workers.append_prepared(conn, chunk, LABEL, k0, prepared, FEB_US, False) is None
        )
        assert conn.execute(text("SELECT COUNT(*) FROM documents")).scalar_one() == 1  # a05's
