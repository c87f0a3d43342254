"""Features, entitlements and alerts (DESIGN §13) on both backends: entitlement
answers at the limit boundary, across a period boundary and with late events and
retractions; alerts recorded once per threshold per customer per period, with
their webhook delivered to a real receiver that verifies every signature."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from tests.billing_support import catalog, clock
from tests.conftest import reset
from tests.support import event, ingest, line
from tests.webhooks.receiver import Receiver

from meterline.domain.clock import SystemClock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import from_datetime, parse_rfc3339
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions, PreparedBatch, prepare
from meterline.services import alerts, entitlements, webhooks
from meterline.services.catalog import apply_catalog
from meterline.services.reconcile import reconcile
from meterline.services.retraction import retract_event
from meterline.store import outbox, webhook_facts
from meterline.store.database import Store
from meterline.store.event_log import BatchHeader, append_batch
from meterline.webhooks.signing import new_secret
from meterline.wiring import ingestor_for

JAN_20 = "2024-01-20T00:00:00Z"
APPLIED_US = parse_rfc3339("2024-01-01T00:00:00Z")


def world() -> dict[str, Any]:
    doc = catalog(
        customers=[
            {
                "id": "acme",
                "name": "Acme Corp",
                "currency": "USD",
                "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
                "entitlements": [
                    {"feature": "api", "limit": 10},
                    {"feature": "burst", "limit": "10", "enforcement": "soft"},
                    {"feature": "sso", "has_access": True},
                ],
                "alerts": [
                    {"code": "half", "meter": "api_calls", "threshold": 5},
                    {"code": "ten_cents", "spend": "0.10"},
                ],
            },
            {
                "id": "beta",
                "name": "Beta",
                "currency": "USD",
                "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
                "entitlements": [{"feature": "sso", "has_access": False}],
            },
        ]
    )
    doc["features"] = [
        {"code": "api", "name": "API calls", "meter": "api_calls"},
        {"code": "burst", "name": "Burst", "meter": "api_calls"},
        {"code": "sso", "name": "Single sign-on"},
    ]
    doc["alerts"] = [{"code": "eight", "meter": "api_calls", "threshold": "8"}]
    return doc


def setup(store: Store) -> None:
    apply_catalog(store, world(), APPLIED_US)


def jan(n: int, prefix: str, customer: str = "acme", day: int = 10) -> list[dict[str, Any]]:
    return [
        event(f"{prefix}{i}", customer=customer, time=f"2024-01-{day:02d}T{i % 24:02d}:00:00Z")
        for i in range(n)
    ]


def check(store: Store, customer: str, feature: str, at: str = JAN_20) -> dict[str, Any]:
    with store.read() as conn:
        return entitlements.check(conn, customer, feature, parse_rfc3339(at))


def recorded(store: Store) -> list[tuple[str, str, str, str, str]]:
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT customer_id, kind, code, period_label, observed FROM alerts ORDER BY seq")
        )
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]


def message_types(store: Store) -> list[str]:
    with store.read() as conn:
        rows = conn.execute(text("SELECT type FROM webhook_messages ORDER BY created_at, id"))
        return [str(r[0]) for r in rows]


def test_entitlements_at_the_limit_boundary(store: Store) -> None:
    setup(store)
    ingest(store, clock(JAN_20), jan(9, "a"))
    api, burst = check(store, "acme", "api"), check(store, "acme", "burst")
    assert (api["has_access"], api["usage"], api["limit"], api["balance"], api["overage"]) == (
        True,
        "9",
        "10",
        "1",
        "0",
    )
    assert api["period"]["label"] == "2024-01" and api["enforcement"] == "hard"
    assert burst["has_access"] and burst["balance"] == "1"

    ingest(store, clock(JAN_20), jan(1, "b"))  # usage reaches the limit exactly
    api, burst = check(store, "acme", "api"), check(store, "acme", "burst")
    assert (api["has_access"], api["usage"], api["balance"], api["overage"]) == (
        False,
        "10",
        "0",
        "0",
    )
    assert api["reason"] == "limit reached"
    assert (burst["has_access"], burst["overage"]) == (True, "0")

    ingest(store, clock(JAN_20), jan(2, "c"))
    api, burst = check(store, "acme", "api"), check(store, "acme", "burst")
    assert (api["has_access"], api["overage"], api["balance"]) == (False, "2", "0")
    assert (burst["has_access"], burst["overage"], burst["reason"]) == (
        True,
        "2",
        "over soft limit",
    )
    with store.read() as conn:
        assert api["as_of_seq"] == int(conn.execute(text("SELECT seq FROM knowledge")).scalar_one())


def test_boolean_missing_and_unknown(store: Store) -> None:
    setup(store)
    sso = check(store, "acme", "sso")
    assert (sso["has_access"], sso["usage"], sso["limit"], sso["reason"]) == (
        True,
        None,
        None,
        "granted",
    )
    assert check(store, "beta", "sso")["has_access"] is False
    none = check(store, "beta", "api")  # no entitlement to a feature: no access
    assert (none["has_access"], none["reason"]) == (False, "no entitlement")
    with pytest.raises(MeterlineError) as err:
        check(store, "acme", "nope")
    assert err.value.code == ErrorCode.UNKNOWN_FEATURE
    with pytest.raises(MeterlineError) as err:
        check(store, "nobody", "api")
    assert err.value.code == ErrorCode.UNKNOWN_CUSTOMER
    with store.read() as conn:
        every = entitlements.check_all(conn, "acme", parse_rfc3339(JAN_20))
    assert [a["feature"] for a in every["entitlements"]] == ["api", "burst", "sso"]


def test_period_boundary_late_events_and_retractions(store: Store) -> None:
    setup(store)
    ingest(store, clock(JAN_20), jan(12, "a"))
    feb = "2024-02-05T00:00:00Z"
    api = check(store, "acme", "api", at=feb)  # a new period: the limit is fresh
    assert (api["has_access"], api["usage"], api["period"]["label"]) == (True, "0", "2024-02")
    feb_events = [event(f"f{i}", time=f"2024-02-0{1 + i % 3}T10:00:00Z") for i in range(4)]
    ingest(store, clock(feb), feb_events)
    assert check(store, "acme", "api", at=feb)["usage"] == "4"
    # A late January event counts for January (its event time), not February.
    ingest(store, clock(feb), [event("late1", time="2024-01-31T23:59:00Z")])
    assert check(store, "acme", "api", at=feb)["usage"] == "4"
    assert check(store, "acme", "api", at="2024-01-31T23:59:59Z")["usage"] == "13"
    # A retraction gives the units back: a hard limit opens again.
    for i in range(4):
        retract_event(store, "default", f"a{i}", "sent twice", parse_rfc3339(feb))
    jan_end = check(store, "acme", "api", at="2024-01-31T23:59:59Z")
    assert (jan_end["usage"], jan_end["has_access"], jan_end["balance"]) == ("9", True, "1")


def test_alerts_fire_once_per_threshold_per_period_and_are_delivered(store: Store) -> None:
    receiver = Receiver(new_secret()).start()
    try:
        webhooks.add_endpoint(store, receiver.url, [], APPLIED_US, receiver.secret)
        setup(store)
        ingest(store, clock(JAN_20), jan(4, "a"))
        assert recorded(store) == []
        crossing = jan(2, "b")  # 6: crosses `half` (5) and 0.10 spend (6 x 0.02 = 0.12)
        ingest(store, clock(JAN_20), crossing)
        assert recorded(store) == [
            ("acme", "threshold_crossed", "half", "2024-01", "6"),
            ("acme", "threshold_crossed", "ten_cents", "2024-01", "0.12"),
        ]
        ingest(store, clock(JAN_20), crossing)  # the crossing batch retried: duplicates
        ingest(store, clock(JAN_20), jan(1, "c"))  # crosses nothing new
        assert len(recorded(store)) == 2
        ingest(store, clock(JAN_20), jan(3, "d"))  # 10: `eight` (catalog-wide), both limits
        got = recorded(store)
        assert got[2:] == [
            ("acme", "threshold_crossed", "eight", "2024-01", "10"),
            ("acme", "entitlement_exhausted", "api", "2024-01", "10"),
            ("acme", "entitlement_exhausted", "burst", "2024-01", "10"),
        ]
        ingest(store, clock(JAN_20), jan(5, "e"))  # crossing them all again: nothing new
        # Retractions bring usage back under; an alert recorded stays recorded, and
        # crossing again in the same period records nothing.
        for event_id in ["e0", "e1", "e2", "e3", "e4", "d0", "d1", "d2"]:
            retract_event(store, "default", event_id, "sent twice", parse_rfc3339(JAN_20))
        assert check(store, "acme", "api")["usage"] == "7"
        ingest(store, clock(JAN_20), jan(6, "g"))
        assert recorded(store) == got
        # beta has only a catalog-wide alert: it fires for beta on its own.
        ingest(store, clock(JAN_20), jan(8, "h", customer="beta"))
        assert recorded(store)[-1] == ("beta", "threshold_crossed", "eight", "2024-01", "8")
        # A new period: each threshold fires again, once.
        feb = "2024-02-03T00:00:00Z"
        ingest(store, clock(feb), [event(f"f{i}", time=feb) for i in range(10)])
        feb_alerts = [r for r in recorded(store) if r[3] == "2024-02"]
        assert sorted(r[2] for r in feb_alerts) == ["api", "burst", "eight", "half", "ten_cents"]

        types = message_types(store)
        assert types.count("usage.threshold_crossed") == 4 + 3
        assert types.count("entitlement.exhausted") == 2 + 2
        webhooks_sent = len(types)
        d = webhooks.Dispatcher(store, SystemClock())
        for _ in range(50):
            if d.run_once() == 0:
                break
        verified = receiver.verified()
        assert len(verified) == len(receiver.received) == webhooks_sent
        crossed = [
            r.payload["data"] for r in verified if r.payload["type"] == "usage.threshold_crossed"
        ]
        half = next(
            c for c in crossed if c["alert"]["code"] == "half" and c["period"]["label"] == "2024-01"
        )
        assert half["customer_id"] == "acme" and half["observed"] == "6"
        assert half["alert"] == {
            "code": "half",
            "scope": "customer",
            "metric": "quantity",
            "meter": "api_calls",
            "threshold": "5",
        }
        assert half["period"]["label"] == "2024-01"
        spend = next(  # January's (February crosses it too; deliveries need not be in order)
            c
            for c in crossed
            if c["alert"]["code"] == "ten_cents" and c["period"]["label"] == "2024-01"
        )
        assert spend["alert"]["metric"] == "spend" and spend["observed"] == "0.12"
        exhausted = [
            r.payload["data"] for r in verified if r.payload["type"] == "entitlement.exhausted"
        ]
        api = next(
            e for e in exhausted if e["feature"] == "api" and e["period"]["label"] == "2024-01"
        )
        assert (api["limit"], api["usage"], api["has_access"], api["enforcement"]) == (
            "10",
            "10",
            False,
            "hard",
        )
        with store.read() as conn:
            assert outbox.deliveries(conn, status="pending") == []
            listed = alerts.list_alerts(conn, "beta")["alerts"]
        assert [(a["code"], a["period"]["label"], a["observed"]) for a in listed] == [
            ("eight", "2024-01", "8")
        ]
        assert reconcile(store).ok  # alert facts are in the Merkle log and tie out
    finally:
        receiver.stop()


def test_a_rolled_back_batch_records_no_alert(store: Store) -> None:
    setup(store)
    ingest(store, clock(JAN_20), jan(4, "a"))
    ingestor = ingestor_for(store, clock(JAN_20))
    now_us = from_datetime(clock(JAN_20).now())
    options = IngestOptions(origin="test")
    items = [(i, Item(line(e), i + 1)) for i, e in enumerate(jan(3, "b"))]
    batch: PreparedBatch = prepare(items, now_us, options)
    header = BatchHeader(now_us, "test", "default", False)
    assert ingestor.index is not None
    with store.read() as conn:
        ingestor.index.catalog.refresh(conn)
    with pytest.raises(RuntimeError), store.write() as conn:
        result = append_batch(conn, header, batch.candidates, batch.rejects, 0)
        ingestor.index(conn, header, result)
        webhook_facts.ingest_batch(conn, header, result, batch.rejects, now_us)
        assert alerts.on_ingest(conn, result, now_us) == 2  # half and ten_cents, in here...
        raise RuntimeError("the batch failed after its alerts were evaluated")
    assert recorded(store) == []  # ...and rolled back with it
    assert "usage.threshold_crossed" not in message_types(store)
    ingest(store, clock(JAN_20), jan(3, "b"))  # the batch sent again: now they fire
    assert [r[2] for r in recorded(store)] == ["half", "ten_cents"]


def test_parallel_ingestor_records_alerts(store: Store) -> None:
    from meterline.ingest.parallel import ParallelIngestor

    setup(store)
    items = [Item(line(e), i + 1) for i, e in enumerate(jan(40, "p"))]
    options = IngestOptions(origin="test", batch_size=5)
    report = ParallelIngestor(ingestor_for(store, clock(JAN_20)), 2).ingest(items, options)
    assert report.accepted == 40
    codes = sorted(r[2] for r in recorded(store))
    assert codes == ["api", "burst", "eight", "half", "ten_cents"]


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda d: d["features"][0].update(meter="nope"), "features[0].meter", "no meter"),
        (lambda d: d["features"][1].pop("name"), "features[1]", "missing field 'name'"),
        (lambda d: d["features"].append(dict(d["features"][0])), "features[3].code", "duplicate"),
        (
            lambda d: d["customers"][0]["entitlements"][0].update(feature="nope"),
            "customers[0].entitlements[0].feature",
            "no feature 'nope'",
        ),
        (
            lambda d: d["customers"][0]["entitlements"][2].update(limit=5),
            "customers[0].entitlements[2].has_access",
            "metered",
        ),
        (
            lambda d: d["customers"][1]["entitlements"].append({"feature": "sso", "limit": 3}),
            "customers[1].entitlements[1].feature",
            "duplicate",
        ),
        (
            lambda d: d["customers"][1]["entitlements"].__setitem__(
                0, {"feature": "sso", "limit": 3}
            ),
            "customers[1].entitlements[0].limit",
            "has no meter",
        ),
        (
            lambda d: d["customers"][0]["entitlements"][0].update(enforcement="strict"),
            "customers[0].entitlements[0].enforcement",
            "unknown enforcement",
        ),
        (
            lambda d: d["customers"][0]["entitlements"][0].update(limit=-1),
            "customers[0].entitlements[0].limit",
            "negative",
        ),
        (lambda d: d["alerts"][0].pop("threshold"), "alerts[0]", "missing field 'threshold'"),
        (lambda d: d["alerts"][0].update(threshold=1.5), "alerts[0].threshold", "float"),
        (lambda d: d["alerts"][0].update(spend="3"), "alerts[0].meter", "not both"),
        (lambda d: d["alerts"][0].update(meter="nope"), "alerts[0].meter", "no meter"),
        (
            lambda d: d["customers"][0]["alerts"][0].update(thresold=3),
            "customers[0].alerts[0].thresold",
            "unknown field",
        ),
        (
            lambda d: d["customers"][0]["alerts"][1].update(spend="0"),
            "customers[0].alerts[1].spend",
            "must be positive",
        ),
    ],
)
def test_catalog_errors_name_their_path(store: Store, change: Any, path: str, words: str) -> None:
    doc = copy.deepcopy(world())
    change(doc)
    with pytest.raises(MeterlineError) as info:
        apply_catalog(store, doc, APPLIED_US, dry_run=True)
    err = info.value
    assert err.code == ErrorCode.INVALID_CATALOG
    assert err.details["path"] == path, err.message
    assert err.message.startswith(f"{path}: ") and words in err.message, err.message


def test_catalog_reapply_is_a_no_op_and_changes_are_versions(store: Store) -> None:
    setup(store)
    report = apply_catalog(store, world(), APPLIED_US)
    assert "feature api" in report.unchanged and "alert eight" in report.unchanged
    doc = world()
    doc["alerts"][0]["threshold"] = "3"
    doc["customers"][0]["entitlements"][0]["limit"] = 2
    report = apply_catalog(store, doc, APPLIED_US)
    assert "alert eight" in report.added and "customer acme" in report.added
    ingest(store, clock(JAN_20), jan(3, "a"))
    assert check(store, "acme", "api")["has_access"] is False
    assert [r[2] for r in recorded(store)] == ["eight", "api"]
    assert Decimal(check(store, "acme", "api")["overage"]) == 1


def test_catalog_show_reads_features_and_alerts_back(store: Store) -> None:
    from meterline.services.catalog_view import catalog_as_known

    setup(store)
    shown = catalog_as_known(store)
    assert shown["features"] == [
        {"code": "api", "name": "API calls", "meter": "api_calls"},
        {"code": "burst", "name": "Burst", "meter": "api_calls"},
        {"code": "sso", "name": "Single sign-on"},
    ]
    assert shown["alerts"] == [{"code": "eight", "meter": "api_calls", "threshold": "8"}]
    acme = next(c for c in shown["customers"] if c["id"] == "acme")
    assert [e["feature"] for e in acme["entitlements"]] == ["api", "burst", "sso"]
    assert apply_catalog(store, shown, APPLIED_US).added == []  # reads back as applied


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_batches_any_order_any_resends_record_each_alert_once(
    store: Store, data: st.DataObject
) -> None:
    """Whatever the split into batches, the order and the resends, the alerts
    recorded are exactly the thresholds the final usage reaches, once each."""
    reset(store)
    setup(store)
    n = data.draw(st.integers(0, 14), label="events")
    evs = data.draw(st.permutations(jan(n, "p")), label="order")
    resends = data.draw(st.lists(st.sampled_from(evs), max_size=6), label="resends") if evs else []
    size = data.draw(st.integers(1, 6), label="batch size")
    ingest(store, clock(JAN_20), [*evs, *resends], batch_size=size)
    got = recorded(store)
    expected = {"half": 5, "ten_cents": 5, "eight": 8, "api": 10, "burst": 10}
    assert sorted(r[2] for r in got) == sorted(c for c, at in expected.items() if n >= at)
    for _, _kind, code, _, observed in got:
        floor = Decimal(expected[code]) * (Decimal("0.02") if code == "ten_cents" else 1)
        assert Decimal(observed) >= floor
    assert message_types(store).count("usage.threshold_crossed") == sum(
        1 for r in got if r[1] == "threshold_crossed"
    )
