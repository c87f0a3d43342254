"""Group commit (store/group_commit.py), on both backends, through the Ingestor a
server shares between its requests.

Batches that queue while the store is busy are written in one transaction and
store exactly what the same batches store one transaction each, in the same
order (every table compared); a batch the database refuses fails alone, and the
rest of its group commits; a group whose commit fails is written again member
by member, so only the guilty event is quarantined.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from tests.billing_support import FEB, clock, setup
from tests.conftest import drop_pg, make_pg_store
from tests.support import event, line

from meterline.domain.errors import ErrorCode
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions, Ingestor, IngestReport
from meterline.store import merkle, sequence
from meterline.store.database import Store, open_store
from meterline.store.schema import metadata
from meterline.wiring import ingestor_for


@pytest.fixture
def twin(store: Store, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A second fresh store on the same backend, for the serial reference."""
    if store.is_postgres:
        s, name = make_pg_store(request.getfixturevalue("pg_template"))
        yield s
        drop_pg(s, name)
    else:
        s = open_store(f"sqlite:///{tmp_path / 'twin.db'}")
        s.upgrade()
        yield s
        s.dispose()


def _batch(
    source: str, n: int, customer: str, extra: list[dict[str, Any]] | None = None
) -> list[Item]:
    events = [
        event(
            f"{source}-{i}",
            customer=customer if i % 3 else "shared",  # some index buckets are shared
            time=f"2024-01-{10 + i % 5:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
        )
        for i in range(n)
    ]
    events[1:1] = extra or []
    # A key another batch of the group also sends: the first in seq order keeps it.
    events.append(event("everyone", customer="shared"))
    return [Item(line(e), i + 1) for i, e in enumerate(events)]


def _options(source: str) -> IngestOptions:
    return IngestOptions(source="default", origin=source, batch_size=1000)


def _grouped(ingestor: Ingestor, batches: dict[str, list[Item]]) -> dict[str, IngestReport]:
    """Ingest each batch from its own thread while the writer is held, so that all
    of them queue and are taken as one group; return each thread's report."""
    entered, release = threading.Event(), threading.Event()

    def hold(_conn: Any) -> None:
        entered.set()
        assert release.wait(30)

    holder = threading.Thread(target=ingestor.writer.run, args=(hold,))
    holder.start()
    assert entered.wait(30)
    reports: dict[str, IngestReport] = {}
    errors: list[BaseException] = []

    def send(name: str) -> None:
        try:
            reports[name] = ingestor.ingest(batches[name], _options(name))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(name,)) for name in batches]
    for t in threads:
        t.start()
    deadline = threading.Event()
    while ingestor.writer.queued() < len(batches):
        deadline.wait(0.01)
    release.set()
    holder.join()
    for t in threads:
        t.join()
    assert not errors, errors
    return reports


def _dump(store: Store) -> dict[str, list[str]]:
    """Every row of every table, as text, sorted."""
    out: dict[str, list[str]] = {}
    with store.read() as conn:
        present = set(inspect(conn).get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in present:
                continue
            rows = conn.execute(table.select()).all()
            out[table.name] = sorted(repr(tuple(r)) for r in rows)
    return out


def _sound(store: Store) -> int:
    """Event seqs without holes after the catalog's facts, the Merkle log equal
    to the facts; returns the number of events."""
    with store.read() as conn:
        k = sequence.current(conn)
        seqs = [int(s) for (s,) in conn.execute(text("SELECT seq FROM events ORDER BY seq"))]
        assert seqs == list(range(k - len(seqs) + 1, k + 1))
        assert merkle.size(conn) == k
        assert merkle.audit_range(conn, 0, k).problems == []
    return len(seqs)


def test_queued_batches_share_one_transaction_and_store_what_serial_batches_store(
    store: Store, twin: Store
) -> None:
    for s in (store, twin):
        setup(s)
    batches = {f"req{k}": _batch(f"req{k}", 40 + 7 * k, f"cust{k % 2}") for k in range(4)}
    ingestor = ingestor_for(store, clock(FEB))
    reports = _grouped(ingestor, batches)
    assert ingestor.writer.transactions == 2  # the holder's, then one for all four

    # The group's order is the queue's; replay the batches serially in that order.
    with store.read() as conn:
        order = [
            str(o) for (o,) in conn.execute(text("SELECT origin FROM ingest_batches ORDER BY id"))
        ]
    assert sorted(order) == sorted(batches)
    serial = ingestor_for(twin, clock(FEB))
    serial_reports = {name: serial.ingest(batches[name], _options(name)) for name in order}
    assert serial.writer.transactions == 4

    assert {n: r.to_dict() for n, r in reports.items()} == {
        n: r.to_dict() for n, r in serial_reports.items()
    }
    assert [reports[n].first_seq for n in order] == [serial_reports[n].first_seq for n in order]
    assert sum(r.accepted for r in reports.values()) == sum(len(b) for b in batches.values()) - (
        len(batches) - 1
    )  # "everyone" is kept once; the later ones are duplicates
    assert _dump(store) == _dump(twin)
    assert _sound(store) == sum(r.accepted for r in reports.values())


def _poison(store: Store, event_id: str, deferred: bool = False) -> None:
    """A store-side rule the validator does not know: the database raises on one
    event_id, at the insert or (PostgreSQL, deferred) only at commit."""
    with store.write() as conn:
        if store.is_postgres:
            conn.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.event_id = '{event_id}' THEN RAISE EXCEPTION 'poisoned value'; "
                    "END IF; RETURN NEW; END $$"
                )
            )
            timing = "DEFERRABLE INITIALLY DEFERRED" if deferred else ""
            kind = "CONSTRAINT TRIGGER" if deferred else "TRIGGER"
            when = "AFTER" if deferred else "BEFORE"
            conn.execute(
                text(
                    f"CREATE {kind} poison {when} INSERT ON event_keys {timing} "
                    "FOR EACH ROW EXECUTE FUNCTION poison()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON events "
                    f"WHEN NEW.event_id = '{event_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned value'); END"
                )
            )


@pytest.mark.parametrize("guilty", [0, 2])  # first and last in the group
def test_a_batch_the_database_refuses_fails_alone(store: Store, guilty: int) -> None:
    setup(store)
    _poison(store, "poison")
    extra = {f"req{guilty}": [event("poison", customer="shared")]}
    batches = {
        f"req{k}": _batch(f"req{k}", 30, f"cust{k}", extra.get(f"req{k}", [])) for k in range(3)
    }
    ingestor = ingestor_for(store, clock(FEB))
    reports = _grouped(ingestor, batches)
    guilty_report = reports[f"req{guilty}"]
    assert [(r.code, r.line) for r in guilty_report.rejects] == [(ErrorCode.STORE_REJECTED, 2)]
    assert sum(r.accepted for r in reports.values()) == 3 * 30 + 1
    assert all(not r.rejects for n, r in reports.items() if n != f"req{guilty}")
    assert _sound(store) == 3 * 30 + 1
    with store.read() as conn:
        q = conn.execute(text("SELECT code, message FROM quarantine")).all()
    assert [c for c, _ in q] == ["STORE_REJECTED"]
    assert "poisoned value" in q[0][1]


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite checks nothing at commit
def test_a_group_whose_commit_fails_is_written_again_member_by_member(store: Store) -> None:
    setup(store)
    _poison(store, "late-poison", deferred=True)
    batches = {
        f"req{k}": _batch(f"req{k}", 25, f"cust{k}", [event("late-poison")] if k == 1 else [])
        for k in range(3)
    }
    ingestor = ingestor_for(store, clock(FEB))
    reports = _grouped(ingestor, batches)
    # holder, the group (fails at commit), each member alone, then req1 split in halves
    # down to its one guilty event
    assert ingestor.writer.transactions > 5
    assert [(r.code, r.line) for r in reports["req1"].rejects] == [(ErrorCode.STORE_REJECTED, 2)]
    assert sum(r.accepted for r in reports.values()) == 3 * 25 + 1
    assert _sound(store) == 76
    with store.read() as conn:
        codes = [c for (c,) in conn.execute(text("SELECT code FROM quarantine"))]
    assert codes == ["STORE_REJECTED"]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_writes_keep_one_warm_connection(store: Store) -> None:
    """SQLite drops a connection's page cache when another connection wrote the
    file; writes rotating through the readers' pool started cold. Every write goes
    through the writer's one connection, however many readers are open."""
    used = set()
    for readers in range(1, 5):
        held = [store.read() for _ in range(readers)]
        for r in held:
            r.__enter__()
        with store.write() as conn:
            used.add(id(conn.connection.driver_connection))
            conn.execute(text("UPDATE knowledge SET seq = seq WHERE id = 1"))
        for r in reversed(held):
            r.__exit__(None, None, None)
    assert len(used) == 1
