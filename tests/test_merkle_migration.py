"""Migration 0013 builds the Merkle log of an existing store: the tree equals the
one the write path grows, documents issued before it (no tree head) keep
verifying, and documents issued after record a tree head."""

from __future__ import annotations

import pytest
from alembic import command
from msgspec.structs import replace
from sqlalchemy import Table, inspect, text
from tests.billing_support import calls, clock
from tests.support import ingest
from tests.test_corruption import LATER, LATER_US, world

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.services import invoicing
from meterline.services.corrections import rerate
from meterline.services.proofs import prove
from meterline.services.reconcile import reconcile
from meterline.services.verification import verify
from meterline.store import database, merkle, schema, sequence
from meterline.store.database import Store


def _to(store: Store, revision: str, down: bool = False) -> None:
    cfg = database._alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _before_merkle() -> str:
    """The revision just before the one that adds the Merkle log (the last migration)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(database._alembic_config())
    for rev in script.walk_revisions():
        if "merkle" in (rev.doc or "").lower():
            down = rev.down_revision
            assert isinstance(down, str)
            return down
    raise AssertionError("no Merkle log migration")


def _later_tables(store: Store) -> list[Table]:
    """Tables of migrations after the Merkle log's, which a downgraded store lacks."""
    present = set(inspect(store.engine).get_table_names())
    skip = {"merkle_nodes", "reconcile_checkpoints"}
    return [t for t in schema.metadata.sorted_tables if t.name not in present | skip]


def test_an_old_store_gets_its_tree_and_old_documents_keep_verifying(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _to(store, _before_merkle(), down=True)
    later = _later_tables(store)
    # The code before the Merkle log: no tree grown, no tree head in bodies. Today's
    # code also reads tables of later migrations (credit grants, alerts), which it is
    # given empty for the old store's life and which are dropped before upgrading.
    schema.metadata.create_all(store.engine, tables=later)
    with monkeypatch.context() as m:
        m.setattr(merkle, "seal", lambda conn: None)
        m.setattr(
            invoicing,
            "finish_body",
            lambda conn, body, k, fmt, nodes=None: body if fmt < 2 else replace(body, format=fmt),
        )
        world(store)
    schema.metadata.drop_all(store.engine, tables=later)
    with store.read() as conn:
        assert (
            "tree_head"
            not in conn.execute(
                text("SELECT body FROM documents WHERE number = 'INV-000001'")
            ).scalar_one()
        )
    _to(store, "head")
    with store.read() as conn:
        k = sequence.current(conn)
        assert merkle.size(conn) == k
        assert merkle.audit_range(conn, 0, k).problems == []
    assert verify(store).ok
    report = reconcile(store, full=True)
    assert report.ok, report.to_json()
    with pytest.raises(MeterlineError) as info:
        prove(store, "INV-000001", "c1")
    assert info.value.code == ErrorCode.NO_TREE_HEAD
    # New documents carry a tree head and prove against it.
    ingest(store, clock(LATER), calls(30, prefix="post"))
    [note] = rerate(store, LATER_US).issued
    assert note.to_dict()["tree_head"]["size"] == note.body.cutoff_seq
    assert prove(store, note.number, "post3")["verified"]
    assert verify(store).ok
    assert reconcile(store, full=True).ok


def test_the_schema_head_constant_is_the_migrations_head(store: Store) -> None:
    """`require_initialised` compares with `SCHEMA_HEAD` (no alembic import at start-up):
    it must name the newest migration, and a migrated store must be at it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(database._alembic_config()).get_current_head()
    assert head == database.SCHEMA_HEAD
    assert store.current_revision() == head
    store.require_initialised()
    _to(store, "0022", down=True)
    assert store.current_revision() == "0022"
    with pytest.raises(MeterlineError) as got:
        store.require_initialised()
    assert got.value.code == ErrorCode.STORE_NOT_INITIALISED
