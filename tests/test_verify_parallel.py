"""`verify --jobs N`: invoices recomputed in worker processes give the report one
process gives, check for check, on both backends: clean, after index rows were
deleted behind the system's back (an invoice no longer reproduces), and with a
task that fails in its worker (the caller recomputes its invoices)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from tests.billing_support import FEB_US
from tests.test_invoice_batch import LABEL, _world

from meterline.services import invoicing, rollups, verification
from meterline.store.database import Store


@pytest.fixture
def issued(store: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    _world(store)
    rollups.roll_up(store, FEB_US)
    invoicing.issue(store, LABEL, FEB_US)
    monkeypatch.setattr(verification, "PARALLEL_MIN", 1)
    monkeypatch.setattr(invoicing, "RECOMPUTE_CHUNK", 2)  # several tasks
    return store


def _both(store: Store) -> tuple[dict[str, object], dict[str, object]]:
    return verification.verify(store, jobs=1).to_dict(), verification.verify(
        store, jobs=2
    ).to_dict()


def test_workers_report_what_one_process_reports(issued: Store) -> None:
    one, two = _both(issued)
    assert one == two and one["ok"]
    assert sum(1 for c in two["checks"] if c["name"].endswith("reproduces")) >= 5  # type: ignore[union-attr]


def test_an_altered_index_fails_the_same_invoices(issued: Store) -> None:
    with issued.write() as conn:  # behind the system's back: a02's API calls vanish
        conn.execute(
            text("DELETE FROM usage_index WHERE customer_id = 'a02' AND meter_code = 'api_calls'")
        )
    one, two = _both(issued)
    assert one == two and not one["ok"]
    failed = [c for c in two["checks"] if not c["ok"]]  # type: ignore[union-attr]
    assert len(failed) == 1 and failed[0]["name"].endswith("reproduces")
    assert "the content hash is" in failed[0]["details"]


def test_a_failing_worker_task_is_recomputed_by_the_caller(
    issued: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def results(self: verification._Workers) -> dict[str, object]:
        calls.append(len(self.futures))
        self.close()
        return {}  # as if every task had raised

    monkeypatch.setattr(verification._Workers, "results", results)
    report = verification.verify(issued, jobs=2)
    assert calls and calls[0] > 1 and report.ok
    assert report.to_dict() == verification.verify(issued, jobs=1).to_dict()


@given(st.integers(0, 30_000), st.integers(1, 1_000), st.integers(1, 8))
def test_guided_ranges_tile_the_documents_and_shrink_towards_the_end(
    n: int, most: int, jobs: int
) -> None:
    got = verification.guided(n, most, jobs)
    assert [i for i, _ in got] == [0, *[j for _, j in got[:-1]]][: len(got)]  # contiguous
    assert (got[-1][1] if got else 0) == n
    sizes = [j - i for i, j in got]
    assert all(0 < s <= most for s in sizes)
    assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # shrinking; the last is the rest


@pytest.mark.parametrize(
    ("alter", "ok"),
    [
        # other bytes, the same JSON: its canonical form still hashes to the content hash
        ("replace(body, '\"total\":', '\"total\": ')", True),
        ("replace(body, '\"currency\":', '\"currencyx\":')", False),  # cannot be read
        ('replace(body, \'"customer_name":"\', \'"customer_name":"X\')', False),  # altered
    ],
)
def test_altered_bodies_are_reported_the_same_with_workers(
    issued: Store, alter: str, ok: bool
) -> None:
    """Workers leave the caller the documents whose bytes no longer hash to their
    content hash; it decodes those and reports exactly what one process reports."""
    with issued.write() as conn:
        number = conn.execute(
            text(
                "SELECT number FROM documents WHERE kind = 'invoice' ORDER BY seq LIMIT 1 OFFSET 2"
            )
        ).scalar_one()
        conn.execute(text(f"UPDATE documents SET body = {alter} WHERE number = :n"), {"n": number})
    one, two = _both(issued)
    assert one == two and one["ok"] is ok
    failed = {c["name"] for c in two["checks"] if not c["ok"]}  # type: ignore[union-attr]
    assert all(name.startswith(number) for name in failed) and bool(failed) is not ok, failed
