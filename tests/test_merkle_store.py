"""The Merkle log in the store: every fact is a leaf in seq order, nodes grow in
the facts' own transactions, and the tree head at any K is the RFC 6962 root."""

from __future__ import annotations

from sqlalchemy import text
from tests.billing_support import clock
from tests.support import event, ingest
from tests.test_reconcile import LATER, LATER_US, workload

from meterline.domain import merkle as tree
from meterline.services import credits
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.store import merkle, sequence
from meterline.store.database import Store


def _leaves(store: Store) -> list[bytes]:
    with store.read() as conn:
        k = sequence.current(conn)
        facts = merkle.facts_in(conn, 0, k)
    assert not facts.problems
    assert sorted(facts.hashes) == list(range(1, k + 1)), "every seq holds exactly one fact"
    return [tree.leaf_hash(facts.hashes[s]) for s in range(1, k + 1)]


def test_every_fact_is_a_leaf_and_the_head_is_the_root_at_every_k(store: Store) -> None:
    workload(store)
    rerate(store, LATER_US, "acme", "2024-01", reason="operator asked")  # a manual mark
    apply_catalog(store, {"seller": {"name": "Example GmbH", "address": ["Berlin"]}}, LATER_US)
    credits.grant(store, "acme", "5.00", LATER_US)  # a credit fact (issue 15)
    # a feature, a catalog-wide alert and its recorded crossing (DESIGN §13)
    alerting = {
        "features": [{"code": "api", "name": "API", "meter": "api_calls"}],
        "alerts": [{"code": "busy", "meter": "api_calls", "threshold": 1}],
    }
    apply_catalog(store, alerting, LATER_US)
    ingest(store, clock(LATER), [event("alerting", time="2024-02-02T00:00:00Z")])
    leaves = _leaves(store)
    with store.read() as conn:
        k = sequence.current(conn)
        assert merkle.size(conn) == k
        nodes = merkle.Nodes(conn)
        for size in [1, 2, 3, k // 3, k // 2, k - 1, k]:
            assert merkle.head(conn, size, nodes).root == tree.root_of(leaves[:size])
        audit = merkle.audit_range(conn, 0, k, chunk=97)
        assert audit.problems == [] and audit.leaves_checked == k
        kinds = merkle.facts_in(conn, 0, k).counts
    # The workload wrote every kind of fact.
    assert all(kinds[name] > 0 for name in kinds), kinds


def test_building_the_tree_of_an_existing_store_gives_the_same_nodes(store: Store) -> None:
    workload(store)
    with store.write() as conn:
        before = conn.execute(text("SELECT level, idx, hash FROM merkle_nodes")).all()
        conn.execute(text("DELETE FROM merkle_nodes"))
        merkle.build(conn, sequence.current(conn), chunk=50)
        after = conn.execute(text("SELECT level, idx, hash FROM merkle_nodes")).all()
    assert sorted((a, b, bytes(c)) for a, b, c in before) == sorted(
        (a, b, bytes(c)) for a, b, c in after
    )


def test_a_proof_from_stored_nodes_verifies(store: Store) -> None:
    workload(store)
    leaves = _leaves(store)
    with store.read() as conn:
        k = sequence.current(conn)
        facts = merkle.facts_in(conn, 0, k)
        for seq in (1, k // 2, k):
            proof = merkle.prove(conn, seq, k, facts.hashes[seq])
            assert proof.leaf_hash == leaves[seq - 1]
            assert tree.verify_inclusion(
                proof.leaf_index, proof.tree_size, proof.leaf_hash, proof.path, proof.root
            )


def test_concurrent_writers_grow_one_tree_in_seq_order(store: Store) -> None:
    """Ingestion, catalog changes and retractions from several threads at once: the
    tree is grown under the sequence lock, so it ends equal to the facts."""
    import threading

    from tests.billing_support import FEB, calls, clock, setup
    from tests.support import ingest

    from meterline.services.retraction import retract_event

    setup(store)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(5):
                ingest(store, clock(FEB), calls(20, prefix=f"w{i}-{j}-"), batch_size=7)
            retract_event(store, "default", f"w{i}-0-1", "test", LATER_US)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    with store.read() as conn:
        k = sequence.current(conn)
        assert merkle.size(conn) == k
        assert merkle.audit_range(conn, 0, k).problems == []
