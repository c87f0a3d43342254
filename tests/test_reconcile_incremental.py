"""Incremental reconciliation (DESIGN §9): a clean run records a chained
checkpoint; the next run checks what came after it; `--full` checks everything;
both report the same checks in the same shape."""

from __future__ import annotations

import json

from sqlalchemy import text
from tests.billing_support import calls, clock
from tests.support import ingest
from tests.test_corruption import LATER, world
from typer.testing import CliRunner

from meterline.cli.app import app
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
