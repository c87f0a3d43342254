"""Incremental reconciliation (DESIGN §9): a clean run records a chained
checkpoint; the next run checks what came after it; `--full` checks everything;
both report the same checks in the same shape."""

from __future__ import annotations

import json

from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january
from tests.support import ingest
from tests.test_corruption import LATER, LATER_US, world
from typer.testing import CliRunner

from meterline.billing.document import Status
from meterline.cli.app import app
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.reconcile import reconcile
from meterline.store import checkpoints, sequence
from meterline.store.database import Store


def test_checkpoints_chain_and_runs_keep_their_shape(store: Store) -> None:
    world(store)
    first = reconcile(store)
    assert first.ok and first.mode == "full", first.to_json()
    k1 = first.cutoff_seq
    assert first.checkpoint["from_seq"] == 0 and first.checkpoint["previous"] is None
    nothing = reconcile(store)
    assert nothing.ok and nothing.mode == "incremental"
    assert nothing.checkpoint["from_seq"] == k1 == nothing.cutoff_seq
    assert nothing.checkpoint["previous"] == first.checkpoint["recorded"]
    ingest(store, clock(LATER), calls(25, prefix="more", day=20))
    grown = reconcile(store)
    assert grown.ok and grown.mode == "incremental"
    assert (grown.checkpoint["from_seq"], grown.cutoff_seq) == (k1, k1 + 25)
    assert f"seq {k1 + 1}..{k1 + 25}" in grown.check("merkle_log").details
    full = reconcile(store, full=True)
    assert full.ok and full.mode == "full"
    shape = lambda r: (  # noqa: E731
        sorted(r.to_json()),
        [c["name"] for c in r.to_json()["checks"]],
        sorted(r.to_json()["checkpoint"]),
    )
    assert shape(grown) == shape(full) == shape(first)
    with store.read() as conn:
        chain = checkpoints.all_checkpoints(conn)
        assert [c.seq for c in chain] == [k1, k1, k1 + 25, k1 + 25]
        assert [c.mode for c in chain] == ["full", "incremental", "incremental", "full"]
        assert checkpoints.chain_problems(conn) == []
        assert chain[-1].fact_count == sequence.current(conn)  # every seq holds one fact
    # A failing run records nothing; the CLI says which mode it ran.
    with store.write() as conn:
        conn.execute(
            text("UPDATE events SET properties = :p WHERE event_id = 'more3'"), {"p": '{"n":1}'}
        )
    runner = CliRunner()
    bad = runner.invoke(app, ["--db", store.url, "reconcile", "--json"])
    out = json.loads(bad.stdout)
    assert (
        bad.exit_code == 1 and out["mode"] == "incremental" and "recorded" not in out["checkpoint"]
    )
    with store.read() as conn:
        assert len(checkpoints.all_checkpoints(conn)) == 4
    human = runner.invoke(app, ["--db", store.url, "reconcile", "--full"])
    assert human.exit_code == 1 and "reconcile (full)" in human.stdout


def test_incremental_rechecks_the_windows_new_events_touch(store: Store) -> None:
    world(store)
    assert reconcile(store).ok
    ingest(store, clock(LATER), calls(4, prefix="fresh", day=21))
    with store.write() as conn:
        conn.execute(
            text(
                "UPDATE usage_index SET events = events + 5 WHERE customer_id = 'acme' "
                "AND grain = 'w' AND bucket_start = (SELECT MAX(bucket_start) FROM usage_index "
                "WHERE customer_id = 'acme' AND grain = 'w')"
            )
        )
    report = reconcile(store)
    assert report.mode == "incremental"
    assert {c.name for c in report.checks if not c.ok} == {"window_aggregates"}
    assert "window api_calls/acme/" in report.check("window_aggregates").details


def _books_after_the_checkpoint(store: Store) -> int:
    """A checkpoint after January's invoice; then a late event and its correction (a new
    document), a payment of the old invoice (a status change of a document from before
    the checkpoint) and a re-rating mark. Returns the checkpoint's seq."""
    apply_catalog(store, catalog(), parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(store, clock(FEB), calls(40))
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    first = reconcile(store)
    assert first.ok and first.mode == "full", first.to_json()
    ingest(store, clock(LATER), calls(3, prefix="late"))
    rerate(store, LATER_US, "acme", "2024-01")
    invoicing.set_status(store, "INV-000001", Status.PAID, "wire", LATER_US)
    rerate(store, LATER_US, "acme", "2024-01", reason="customer dispute")
    return first.cutoff_seq


def test_incremental_carries_the_books_forward_as_full_computes_them(store: Store) -> None:
    """What an incremental run carries (chain tip, counters, what each account must
    hold) equals what `--full` computes from the whole store, and both report the same
    checks in the same shape."""
    k0 = _books_after_the_checkpoint(store)
    with store.read() as conn:
        assert int(conn.execute(text("SELECT COUNT(*) FROM documents")).scalar_one()) == 2
    grown = reconcile(store)
    assert grown.ok and grown.mode == "incremental", grown.to_json()
    assert grown.checkpoint["from_seq"] == k0
    assert grown.check("hash_chain").details.startswith("2 documents chained")
    full = reconcile(store, full=True)
    assert full.ok and full.mode == "full"
    with store.read() as conn:
        chain = checkpoints.all_checkpoints(conn)
    assert [c.mode for c in chain] == ["full", "incremental", "full"]
    assert chain[1].seq == chain[2].seq
    assert chain[1].state["carry"] == chain[2].state["carry"]
    assert chain[1].fact_count == chain[2].fact_count
    assert [(c.name, c.ok) for c in grown.checks] == [(c.name, c.ok) for c in full.checks]
    for name in ("ledger_balanced", "ledger_postings", "ledger_receivable", "hash_chain"):
        assert grown.check(name).details == full.check(name).details, name
    assert sorted(grown.to_json()) == sorted(full.to_json())
    assert sorted(grown.to_json()["checkpoint"]) == sorted(full.to_json()["checkpoint"])


def test_a_tamper_after_the_checkpoint_is_caught_by_the_next_incremental_run(
    store: Store,
) -> None:
    _books_after_the_checkpoint(store)
    with store.write() as conn:
        note = str(
            conn.execute(
                text("SELECT number FROM documents ORDER BY seq DESC LIMIT 1")
            ).scalar_one()
        )
        conn.execute(
            text("UPDATE documents SET document_hash = :h WHERE number = :n"),
            {"h": "0" * 64, "n": note},
        )
    report = reconcile(store)
    assert report.mode == "incremental"
    assert {c.name for c in report.checks if not c.ok} == {"hash_chain", "merkle_log"}
    assert note in report.check("hash_chain").details


def test_an_old_document_tampered_is_caught_by_full(store: Store) -> None:
    """A document from before the checkpoint is not read again by an incremental run
    (its totals are carried): `--full` names it at once, the sweep over the facts
    before the checkpoint in turn (this store fits one slice)."""
    _books_after_the_checkpoint(store)
    assert reconcile(store).ok
    with store.write() as conn:
        conn.execute(text("UPDATE documents SET total = '1' WHERE number = 'INV-000001'"))
    full = reconcile(store, full=True)
    assert {"document_arithmetic", "merkle_log"} <= {c.name for c in full.checks if not c.ok}
    incremental = reconcile(store)
    assert incremental.mode == "incremental"
    assert {c.name for c in incremental.checks if not c.ok} == {"merkle_log"}
    assert "documents seq" in incremental.check("merkle_log").details


def test_the_checkpoint_an_incremental_run_resumes_from_must_hash_to_its_content(
    store: Store,
) -> None:
    """Its carried state is trusted only under its chained hash."""
    _books_after_the_checkpoint(store)
    with store.write() as conn:
        state = json.loads(
            str(conn.execute(text("SELECT state FROM reconcile_checkpoints")).scalar_one())
        )
        state["carry"]["receivable"] = []
        conn.execute(text("UPDATE reconcile_checkpoints SET state = :s"), {"s": json.dumps(state)})
    report = reconcile(store)
    assert report.mode == "incremental" and not report.ok
    assert "checkpoint 1: its hash does not match" in report.check("merkle_log").details
