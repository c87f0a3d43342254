"""The contract of the store read port (store/facts.py), one suite for both
backends: "facts as known at K" and "changes in (K1, K2]"."""

from __future__ import annotations

from tests.billing_support import FEB, FEB_US, V1, catalog, clock, setup
from tests.support import event, ingest

from meterline.domain.timestamps import parse_rfc3339
from meterline.metering.bitemporal import Grain
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.retraction import retract_event
from meterline.store import sequence
from meterline.store.database import Store
from meterline.store.facts import Facts, facts

JAN = (parse_rfc3339("2024-01-01T00:00:00Z"), parse_rfc3339("2024-02-01T00:00:00Z"))


def _now(store: Store) -> int:
    with store.read() as conn:
        return sequence.current(conn)


def _ids(port: Facts, k: int, **kw: object) -> list[str]:
    return sorted(ev.event_id for _, ev in port.events(k, **kw))  # type: ignore[arg-type]


def _history(store: Store) -> tuple[int, int, int]:
    setup(store)
    k0 = _now(store)
    ingest(
        store,
        clock(FEB),
        [event(f"a{i}", time=f"2024-01-1{i}T10:00:00Z") for i in range(3)]
        + [event("other", customer="beta", time="2024-01-12T10:00:00Z")],
    )
    k1 = _now(store)
    retract_event(store, "default", "a1", "dispute", FEB_US)
    ingest(store, clock(FEB), [event("b0", time="2024-01-20T10:00:00Z")], backfill=True)
    return k0, k1, _now(store)


def test_events_as_known_at_k(store: Store) -> None:
    k0, k1, k2 = _history(store)
    with store.read() as conn:
        port = facts(conn)
        assert port.dialect == conn.dialect.name
        assert _ids(port, k0) == []
        assert _ids(port, k1, customer="acme") == ["a0", "a1", "a2"]
        assert _ids(port, k2, customer="acme") == ["a0", "a2", "b0"]  # a1 retracted at K <= k2
        assert _ids(port, k2, customer="acme", event_types=["ping"]) == []
        assert _ids(port, k2, event_types=["api_call"], lo=JAN[0], hi=JAN[1]) == [
            "a0",
            "a2",
            "b0",
            "other",
        ]
        ordered = [ev.event_time for _, ev in port.events(k2, customer="acme", ordered=True)]
        assert ordered == sorted(ordered)
        rows = port.measure_rows("acme", ["api_call"], *JAN, k2)
        assert sorted(r[1] for r in rows) == ["a0", "a2", "b0"]
        assert [r[1] for r in port.measure_rows("acme", ["api_call"], *JAN, k2, after=k1)] == ["b0"]
        assert port.measure_rows("acme", [], *JAN, k2) == []


def test_changes_between_cutoffs(store: Store) -> None:
    _, k1, k2 = _history(store)
    with store.read() as conn:
        port = facts(conn)
        changed = port.changes("acme", *JAN, k1, k2)
        assert (changed.events, changed.backfilled, changed.retracted) == (1, 1, 1)
        assert changed.price_versions == [] and changed.customer_versions == 0
        assert port.retracted_between("acme", k1, k2) == 1
        assert port.retracted_between("beta", k1, k2) == 0
        assert port.pending("acme", *JAN, k1)  # the backfill and the retraction marked it
        assert not port.pending("acme", *JAN, k2)
        nothing = port.changes("acme", *JAN, k2, k2)
        assert (nothing.events, nothing.retracted, nothing.manual_marks) == (0, 0, [])


def test_catalog_versions_and_manual_marks(store: Store) -> None:
    _, _, k2 = _history(store)
    v2 = dict(V1, version="v2", effective_from="2024-01-15T00:00:00Z")
    apply_catalog(store, catalog(V1, v2), FEB_US)
    k3 = _now(store)
    with store.read() as conn:
        port = facts(conn)
        assert len(port.price_version_hashes("standard", k2)) == 1
        assert len(port.price_version_hashes("standard", k3)) == 2
        assert port.price_book_header("standard") == ("USD", "half_up")
        assert port.price_book_header("nope") is None
        assert len(port.meter_definitions(k3)) == 1 and port.meter_definitions(0) == []
        changed = port.changes("acme", *JAN, k2, k3)
        assert [(b, label) for b, label, _ in changed.price_versions] == [("standard", "v2")]


def test_index_as_known_at_k(store: Store) -> None:
    k0, k1, k2 = _history(store)
    with store.read() as conn:
        port = facts(conn)
        ranges = [(Grain.DAY, *JAN)]
        kinds = {"api_calls": port_kind()}
        at_k1 = port.index("acme", ["api_calls"], ranges, k1).folded(kinds)
        at_k2 = port.index("acme", ["api_calls"], ranges, k2).folded(kinds)
        assert port.index("acme", ["api_calls"], ranges, k0).rows == {}
    assert sum(f.events for f in at_k1.values()) == 3
    assert sum(f.events for f in at_k2.values()) == 3  # one retracted, one backfilled


def port_kind():  # type: ignore[no-untyped-def]
    from meterline.metering import Aggregation

    return Aggregation.COUNT


def test_rerate_reads_changes_through_the_port(store: Store) -> None:
    """The services' use of the port: a correction names what changed in words."""
    from tests.billing_support import close_january

    from meterline.services import invoicing

    setup(store)
    ingest(store, clock(FEB), [event(f"a{i}", time="2024-01-10T10:00:00Z") for i in range(3)])
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    retract_event(store, "default", "a1", "dispute", FEB_US)
    ingest(store, clock(FEB), [event(f"late{i}", time="2024-01-20T10:00:00Z") for i in range(2)])
    (note,) = rerate(store, FEB_US).issued
    assert list(note.body.reasons) == [
        "2 events received after INV-000001 was issued",
        "1 event retracted",
    ]
