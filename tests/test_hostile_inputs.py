"""Issue 11, one test per reported failure, on both backends: a bad event is
quarantined with a stable code and never takes its batch with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from tests.billing_support import setup
from tests.support import event, ingest, stored

from meterline.domain.clock import FixedClock
from meterline.domain.errors import ErrorCode
from meterline.services.reconcile import reconcile
from meterline.store.database import Store


def quarantined(store: Store) -> list[tuple[int, str, bytes]]:
    with store.read() as conn:
        rows = conn.execute(text("SELECT position, code, raw FROM quarantine ORDER BY id")).all()
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]


def _deep(depth: int) -> str:
    return '{"n":' * depth + "1" + "}" * depth


def test_event_time_beyond_year_9999_is_quarantined_and_the_batch_stored(
    store: Store, clock: FixedClock
) -> None:
    bad = event("late", time="9999-12-31T23:59:59-01:00")
    report = ingest(store, clock, [event("e1"), bad, event("e2")], backfill=True)
    assert (report.accepted, report.rejected) == (2, 1)
    assert report.rejects[0].code == ErrorCode.INVALID_EVENT_TIME
    assert "supported range" in report.rejects[0].message
    assert [(p, c) for p, c, _ in quarantined(store)] == [(1, "INVALID_EVENT_TIME")]


def test_properties_nested_1000_deep_are_quarantined_with_their_raw_input(
    store: Store, clock: FixedClock
) -> None:
    deep = (
        '{"event_id":"d","customer_id":"acme","event_type":"api_call",'
        '"event_time":"2024-02-01T10:00:00Z","properties":' + _deep(1000) + "}"
    )
    report = ingest(store, clock, [event("e1"), deep, event("e2")])
    assert (report.accepted, report.rejected) == (2, 1)
    assert report.rejects[0].code == ErrorCode.NESTING_TOO_DEEP
    assert quarantined(store)[0][2] == deep.encode()


@pytest.mark.parametrize("field", ["event_id", "customer_id", "event_type", "source"])
def test_nul_in_an_id_is_refused_the_same_on_both_stores(
    store: Store, clock: FixedClock, field: str
) -> None:
    bad = event("e0") | {field: "x\x00y"}
    report = ingest(store, clock, [event("e1"), bad, event("e2")])
    assert (report.accepted, report.rejected) == (2, 1)
    assert report.rejects[0].code == ErrorCode.INVALID_TEXT
    assert [e[2] for e in stored(store)] == ["e1", "e2"]
    assert quarantined(store)[0][2] == json.dumps(bad, separators=(",", ":")).encode()


def test_backfill_at_year_one_is_refused_and_reconcile_stays_clean(
    store: Store, clock: FixedClock
) -> None:
    setup(store)
    report = ingest(
        store, clock, [event("old", time="0001-01-01T00:00:00+01:00"), event("e1")], backfill=True
    )
    assert (report.accepted, report.rejected) == (1, 1)
    assert report.rejects[0].code == ErrorCode.INVALID_EVENT_TIME
    result = reconcile(store)
    assert result.ok, result.to_json()


def test_misspelt_source_is_an_unknown_field_not_source_default(
    store: Store, clock: FixedClock
) -> None:
    report = ingest(store, clock, [event("e1") | {"sorce": "gateway"}])
    assert (report.accepted, report.rejected) == (0, 1)
    assert report.rejects[0].code == ErrorCode.UNKNOWN_FIELD
    assert "sorce" in report.rejects[0].message


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_duplicate_or_conflict_is_decided_by_content_whatever_the_batching(
    store: Store, clock: FixedClock, batch_size: int
) -> None:
    ingest(store, clock, [event("e1", props={"n": 1})])
    report = ingest(
        store,
        clock,
        [event("e1", props={"n": 2}), event("e1", props={"n": 1})],
        batch_size=batch_size,
    )
    assert (report.accepted, report.duplicates, report.rejected) == (0, 1, 1)
    assert report.rejects[0].index == 0
    assert report.rejects[0].code == ErrorCode.EVENT_ID_CONFLICT
    assert "the event stored at seq 1 is kept" in report.rejects[0].message


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_within_a_batch_the_first_occurrence_wins(
    store: Store, clock: FixedClock, batch_size: int
) -> None:
    report = ingest(
        store,
        clock,
        [
            event("e1", props={"v": 1}),
            event("e1", props={"v": 2}),
            event("e1", props={"v": 1}),
            event("e1", props={"v": 2}),
        ],
        batch_size=batch_size,
    )
    assert (report.accepted, report.duplicates, report.rejected) == (1, 1, 2)
    assert [r.index for r in report.rejects] == [1, 3]
    assert all("the event stored at seq 1 is kept" in r.message for r in report.rejects)


def _poison(store: Store) -> None:
    """A store-side rule the validator does not know: stands for any value
    that slips through validation and makes the database raise."""
    with store.write() as conn:
        if store.is_postgres:
            conn.execute(
                text(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.event_id = 'poison' THEN RAISE EXCEPTION 'poisoned value'; END IF; "
                    "RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW "
                    "EXECUTE FUNCTION poison()"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE TRIGGER poison BEFORE INSERT ON events "
                    "WHEN NEW.event_id = 'poison' BEGIN SELECT RAISE(ABORT, 'poisoned value'); END"
                )
            )


def test_an_event_the_database_refuses_is_isolated_and_the_rest_stored(
    store: Store, clock: FixedClock
) -> None:
    _poison(store)
    events = [event(f"e{i}") for i in range(7)]
    events.insert(4, event("poison"))
    report = ingest(store, clock, events)
    assert (report.accepted, report.rejected) == (7, 1)
    assert report.rejects[0].index == 4
    assert report.rejects[0].code == ErrorCode.STORE_REJECTED
    assert "poisoned value" in report.rejects[0].message
    assert sorted(e[2] for e in stored(store)) == sorted(f"e{i}" for i in range(7))
    assert [e[0] for e in stored(store)] == list(range(1, 8))  # the seq stays gapless
    q = quarantined(store)
    assert [(p, c) for p, c, _ in q] == [(4, "STORE_REJECTED")]
    assert b'"poison"' in q[0][2]
    again = ingest(store, clock, events)  # rerunning never sticks on the same line
    assert (again.accepted, again.duplicates, again.rejected) == (0, 7, 1)


# -- catalog bounds and the month-end run ---------------------------------------


def _book(code: str, price: str) -> dict[str, object]:
    return {
        "code": code,
        "currency": "USD",
        "versions": [
            {
                "version": "v1",
                "effective_from": "2024-01-01T00:00:00Z",
                "charges": [
                    {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": price}
                ],
            }
        ],
    }


def _two_customers(price: str = "0.02") -> dict[str, object]:
    return {
        "meters": [{"code": "api_calls", "event_type": "api_call", "aggregation": "count"}],
        "price_books": [_book("standard", "0.02"), _book("premium", price)],
        "customers": [
            {
                "id": cid,
                "name": cid,
                "currency": "USD",
                "subscriptions": [{"price_book": book, "start": "2024-01-01T00:00:00Z"}],
            }
            for cid, book in (("acme", "standard"), ("beta", "premium"), ("gamma", "standard"))
        ],
    }


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("1e400", "out of range"),
        ("1000000000000000", "out of range"),
        ("0.0000000000001", "digits after the decimal point"),
        ("NaN", "not a decimal"),
        ("Infinity", "not a decimal"),
    ],
)
def test_catalog_refuses_a_price_like_1e400_naming_its_path(
    store: Store, value: str, why: str
) -> None:
    from meterline.domain.errors import MeterlineError
    from meterline.domain.timestamps import parse_rfc3339
    from meterline.services.catalog import apply_catalog

    with pytest.raises(MeterlineError) as caught:
        apply_catalog(store, _two_customers(value), parse_rfc3339("2024-01-01T00:00:00Z"))
    assert caught.value.code == ErrorCode.INVALID_CATALOG
    assert "price_books[1].versions[0].charges[0].unit_price" in caught.value.message
    assert why in caught.value.message
    with store.read() as conn:  # nothing of the catalog was applied
        assert conn.execute(text("SELECT COUNT(*) FROM price_books")).scalar_one() == 0


def test_month_end_run_isolates_a_customer_that_cannot_be_invoiced(store: Store) -> None:
    from tests.billing_support import FEB, FEB_US, calls, clock, close_january

    from meterline.domain.timestamps import parse_rfc3339
    from meterline.services import invoicing
    from meterline.services.catalog import apply_catalog

    apply_catalog(store, _two_customers(), parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(
        store,
        clock(FEB),
        calls(10) + calls(10, "b", "beta") + calls(10, "g", "gamma"),
    )
    close_january(store)
    # A price recorded before the bounds existed (or edited in the database).
    with store.write() as conn:
        conn.execute(
            text(
                "UPDATE price_versions SET definition = replace(definition, '0.02', '1e400') "
                "WHERE book_code = 'premium'"
            )
        )
    result = invoicing.issue(store, "2024-01", FEB_US)
    assert sorted(d.body.customer_id for d in result.issued) == ["acme", "gamma"]
    assert [(c, code) for c, code, _ in result.failed] == [("beta", "INVALID_CATALOG")]
    again = invoicing.issue(store, "2024-01", FEB_US)  # the others are not issued twice
    assert not again.issued and len(again.already) == 2 and len(again.failed) == 1


# -- durability -----------------------------------------------------------------


def test_sqlite_is_synchronous_full_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acknowledged batch survives power loss: each commit syncs the WAL."""
    from meterline.domain.errors import MeterlineError
    from meterline.store.database import open_store

    monkeypatch.delenv("METERLINE_SQLITE_SYNC", raising=False)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    modes = {}
    for env, expected in ((None, 2), ("NORMAL", 1), ("full", 2)):
        if env is not None:
            monkeypatch.setenv("METERLINE_SQLITE_SYNC", env)
        store = open_store(url)
        with store.read() as conn:
            modes[env] = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        store.dispose()
        assert modes[env] == expected, env
    monkeypatch.setenv("METERLINE_SQLITE_SYNC", "SOMETIMES")
    with pytest.raises(MeterlineError) as caught:
        open_store(url)
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
