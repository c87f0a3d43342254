"""Invoice runs split across processes on PostgreSQL (issue 13), one of them SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january, setup
from tests.support import ingest

from meterline.billing.document import Issued
from meterline.services import invoice_run
from meterline.services.reconcile import reconcile
from meterline.store import sequence
from meterline.store.database import Store

CUSTOMERS = 60
PERIOD = "2024-01"


def _world(store: Store) -> None:
    customers = [
        {
            "id": f"c{i:03d}",
            "name": f"C{i}",
            "currency": "USD",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        }
        for i in range(CUSTOMERS)
    ]
    setup(store, catalog(customers=customers))
    ingest(
        store,
        clock(FEB),
        [e for i in range(CUSTOMERS) for e in calls(4, prefix=f"k{i}-", customer=f"c{i:03d}")],
    )
    close_january(store)


def _meterline(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "meterline", "--db", url, "--now", FEB, *args]


def _issued(store: Store) -> int:
    with store.read() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM documents")).scalar_one())


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_three_runs_one_killed_then_rerun(store: Store) -> None:
    _world(store)
    cmd = _meterline(store.url, "invoice", "issue", "--period", PERIOD, "--json")
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)
    ]
    victim = procs[0]
    deadline = time.monotonic() + 60
    while _issued(store) < 6 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert victim.poll() is None, "the run finished before it could be killed; grow CUSTOMERS"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    at_kill = _issued(store)
    assert at_kill < CUSTOMERS
    for p in procs[1:]:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    # The survivors took over whatever the victim held; a rerun finds nothing left.
    rerun = subprocess.run(cmd, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert invoice_run.pending(store, PERIOD) == []
    with store.read() as conn:
        rows = conn.execute(text("SELECT number, customer_id FROM documents ORDER BY seq")).all()
        claims = conn.execute(
            text("SELECT customer_id, number FROM invoice_claims WHERE state = 'done'")
        ).all()
    assert [str(r[0]) for r in rows] == [f"INV-{i:06d}" for i in range(1, CUSTOMERS + 1)]
    assert sorted(str(r[1]) for r in rows) == [f"c{i:03d}" for i in range(CUSTOMERS)]
    assert {(str(c), str(n)) for c, n in claims} == {(str(r[1]), str(r[0])) for r in rows}
    reconcile = subprocess.run(_meterline(store.url, "reconcile"), capture_output=True, timeout=120)
    assert reconcile.returncode == 0, reconcile.stdout.decode() + reconcile.stderr.decode()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_a_killed_claim_is_claimable_again(store: Store) -> None:
    """A claim held by a dead process (its connection gone) is pending and free."""
    _world(store)
    invoice_run.seed_claims(store, PERIOD)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, psycopg\n"
            "c = psycopg.connect(sys.argv[1])\n"
            "c.execute(\"SELECT 1 FROM invoice_claims WHERE customer_id = 'c000' FOR UPDATE\")\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n",
            store.url,
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with store.engine.connect() as conn, conn.begin():
            assert invoice_run._claim(conn, PERIOD, set()) == "c001"  # c000 is skipped
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    result = invoice_run.run(store, PERIOD, FEB_US)
    assert len(result.issued) == CUSTOMERS
    assert invoice_run.pending(store, PERIOD) == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_body_from_a_snapshot_is_issued_when_only_others_changed(store: Store) -> None:
    """Computed at k0 outside the lock; other customers' events arrive before the
    append: issued with cutoff k0, and it reproduces at k0 (reconcile is clean)."""
    _world(store)
    snap = invoice_run.compute_at_snapshot(store, "c000", PERIOD, FEB_US, False)
    assert isinstance(snap, invoice_run.Snapshot)
    ingest(store, clock(FEB), calls(3, prefix="late-", customer="c001"))  # another customer
    issued = invoice_run.append_if_unchanged(store, snap, FEB_US, False)
    assert isinstance(issued, Issued)
    assert issued.body.cutoff_seq == snap.k0
    with store.read() as conn:
        assert sequence.current(conn) > snap.k0 + 3  # three events and the document since k0

    # This customer's own late event in between: not issued from the snapshot.
    snap = invoice_run.compute_at_snapshot(store, "c002", PERIOD, FEB_US, False)
    assert isinstance(snap, invoice_run.Snapshot)
    ingest(store, clock(FEB), calls(1, prefix="own-", customer="c002"))
    assert invoice_run.append_if_unchanged(store, snap, FEB_US, False) is None
    # A catalog change in between (a new customer): not issued from the snapshot either.
    snap = invoice_run.compute_at_snapshot(store, "c003", PERIOD, FEB_US, False)
    assert isinstance(snap, invoice_run.Snapshot)
    setup(store, catalog(customers=[{"id": "zz", "name": "Z", "currency": "USD"}]))
    assert invoice_run.append_if_unchanged(store, snap, FEB_US, False) is None

    result = invoice_run.run(store, PERIOD, FEB_US)
    assert len(result.issued) == CUSTOMERS - 1 and len(result.already) == 1
    with store.read() as conn:
        cutoffs = {
            str(c): int(k)
            for c, k in conn.execute(text("SELECT customer_id, cutoff_seq FROM documents"))
        }
        late = conn.execute(
            text("SELECT seq FROM events WHERE customer_id = 'c002' ORDER BY seq DESC LIMIT 1")
        ).scalar_one()
    assert cutoffs["c002"] >= late  # recomputed: the late event is billed
    report = reconcile(store)
    assert report.ok, report.to_json()
